//! Schema evolution under BACKWARD compatibility, against the running registry.

mod support;

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use serde_json::{Value as Json, json};
use shared_events::contracts::Contract;
use shared_events::schema_resolution::resolve_onto_reader;
use support::{registry_url, sample_order_placed};
use uuid::Uuid;

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

async fn register(subject: &str, schema: &Json) -> (u16, Json) {
    let response = reqwest::Client::new()
        .post(format!("{}/subjects/{subject}/versions", registry_url()))
        .header("content-type", CONTENT_TYPE)
        .json(&json!({ "schema": schema.to_string() }))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

fn v1() -> Json {
    serde_json::from_str(Contract::by_event_type("OrderPlaced").unwrap().schema_json).unwrap()
}

/// v1 plus `gift_wrap` (with a default), and `customer_note` renamed through an alias.
fn v2() -> Json {
    let mut schema = v1();
    let fields = schema["fields"].as_array_mut().unwrap();
    let note = fields
        .iter_mut()
        .find(|f| f["name"] == "customer_note")
        .unwrap();
    note["name"] = json!("delivery_instructions");
    note["aliases"] = json!(["customer_note"]);
    fields.push(
        json!({"name": "gift_wrap", "type": "boolean", "default": false, "doc": "Wrap as a gift."}),
    );
    schema
}

fn encode(schema: &Schema, value: Value) -> Vec<u8> {
    let value = value.resolve(schema).unwrap();
    GenericDatumWriter::builder(schema)
        .build()
        .unwrap()
        .write_value_to_vec(value)
        .unwrap()
}

fn decode(writer: &Schema, reader: &Schema, bytes: &[u8]) -> Value {
    let written = GenericDatumReader::builder(writer)
        .build()
        .unwrap()
        .read_value(&mut &bytes[..])
        .unwrap();
    resolve_onto_reader(written, reader).unwrap()
}

fn field<'a>(record: &'a Value, name: &str) -> &'a Value {
    let Value::Record(fields) = record else {
        panic!("not a record")
    };
    &fields
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no field {name}"))
        .1
}

#[tokio::test]
async fn a_compatible_v2_is_accepted_and_an_incompatible_one_is_rejected_with_409() {
    let subject = format!(
        "evolution-{}-orders-orderflow.events.OrderPlaced",
        Uuid::new_v4().simple()
    );
    let (status, v1_id) = register(&subject, &v1()).await;
    assert_eq!(status, 200, "{v1_id}");

    let (status, v2_id) = register(&subject, &v2()).await;
    assert_eq!(status, 200, "{v2_id}");
    assert_ne!(v1_id["id"], v2_id["id"]);

    let mut breaking = v2();
    breaking["fields"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "loyalty_tier", "type": "string", "doc": "No default: old data cannot fill it."}));
    let (status, body) = register(&subject, &breaking).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error_code"], 409);

    let versions: Json = reqwest::get(format!("{}/subjects/{subject}/versions", registry_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(versions, json!([1, 2]));
}

#[test]
fn data_written_with_v1_reads_with_v2_and_data_written_with_v2_reads_with_v1() {
    let v1 = Schema::parse_str(&v1().to_string()).unwrap();
    let v2 = Schema::parse_str(&v2().to_string()).unwrap();
    let event = sample_order_placed(Uuid::now_v7());

    let old_bytes = encode(&v1, event.to_avro().unwrap());
    let as_v2 = decode(&v1, &v2, &old_bytes);
    assert_eq!(
        field(&as_v2, "delivery_instructions"),
        &Value::Union(1, Box::new(Value::String("leave at the door".into())))
    );
    assert_eq!(field(&as_v2, "gift_wrap"), &Value::Boolean(false));

    let Value::Record(mut fields) = as_v2 else {
        unreachable!()
    };
    fields.iter_mut().find(|(n, _)| n == "gift_wrap").unwrap().1 = Value::Boolean(true);
    let new_bytes = encode(&v2, Value::Record(fields));
    let as_v1 = decode(&v2, &v1, &new_bytes);
    // v1 does not know the renamed field, so it reads its own default; the rest is intact.
    assert_eq!(
        field(&as_v1, "customer_note"),
        &Value::Union(0, Box::new(Value::Null))
    );
    assert_eq!(
        field(&as_v1, "customer_id"),
        &Value::String("customer-1".into())
    );
    let back = shared_events::contracts::Event::from_avro("OrderPlaced", &as_v1).unwrap();
    assert_eq!(back.metadata, event.metadata);
}
