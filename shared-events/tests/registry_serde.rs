//! Confluent wire format through the registry, checked independently of the codec.

mod support;

use std::time::Duration;

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::{Message, Offset, TopicPartitionList};
use shared_events::contracts::{Event, Money, ProductUpserted, Topic};
use support::{TestStack, registry_url, sample_order_placed};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[tokio::test]
async fn a_produced_record_decodes_with_the_writer_schema_fetched_by_id() {
    let stack = TestStack::new(1).await;
    let order = Uuid::now_v7();
    let event = sample_order_placed(order);
    let shutdown = CancellationToken::new();
    let relay = stack.publish(std::slice::from_ref(&event), &shutdown).await;

    let reader: BaseConsumer = stack.kafka.reader().create().unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(&stack.names.name(Topic::Orders), 0, Offset::Beginning)
        .unwrap();
    reader.assign(&assignment).unwrap();
    let message = loop {
        if let Some(result) = reader.poll(Duration::from_secs(1)) {
            break result.unwrap().detach();
        }
    };

    assert_eq!(message.key(), Some(order.to_string().as_bytes()));
    let event_type = message
        .headers()
        .unwrap()
        .iter()
        .find(|h| h.key == "event_type")
        .and_then(|h| h.value)
        .unwrap()
        .to_vec();
    assert_eq!(event_type, b"OrderPlaced");

    // Strip the 5-byte header, fetch the writer schema by id over HTTP, decode with apache-avro.
    let payload = message.payload().unwrap();
    assert_eq!(payload[0], 0, "magic byte");
    let id = u32::from_be_bytes(payload[1..5].try_into().unwrap());
    let body: serde_json::Value = reqwest::get(format!("{}/schemas/ids/{id}", registry_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let schema = Schema::parse_str(body["schema"].as_str().unwrap()).unwrap();
    let value = GenericDatumReader::builder(&schema)
        .build()
        .unwrap()
        .read_value(&mut &payload[5..])
        .unwrap();

    let Value::Record(fields) = value else {
        panic!("not a record")
    };
    let field = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    let Value::Record(metadata) = field("metadata") else {
        panic!("metadata is not a record")
    };
    assert!(metadata.contains(&("event_id".into(), Value::Uuid(event.metadata.event_id))));
    assert!(metadata.contains(&("event_type".into(), Value::String("OrderPlaced".into()))));
    assert!(metadata.contains(&("correlation_id".into(), Value::Uuid(order))));
    assert_eq!(field("customer_id"), Value::String("customer-1".into()));
    assert_eq!(
        field("total"),
        Value::Record(vec![
            ("amount_minor".into(), Value::Long(2_500)),
            ("currency".into(), Value::String("EUR".into())),
        ])
    );
    shutdown.cancel();
    relay.await.unwrap();
}

#[tokio::test]
async fn events_round_trip_through_the_registry_codec() {
    let stack = TestStack::new(1).await;
    let events = [
        sample_order_placed(Uuid::now_v7()),
        Event::catalog(
            "integration-test",
            ProductUpserted {
                product_id: "sku-9".into(),
                name: "Desk lamp".into(),
                unit_price: Money::new(3_900, "EUR"),
                available_quantity: 3,
            },
        ),
    ];
    for event in events {
        let bytes = stack.codec.encode(&event).await.unwrap();
        assert_eq!(stack.codec.decode(Some(&bytes)).await.unwrap(), event);
    }
}
