use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::writer::datum::GenericDatumWriter;
use serde_json::Value as Json;
use uuid::Uuid;

use super::*;

fn order() -> Uuid {
    Uuid::now_v7()
}

fn placed() -> OrderPlaced {
    OrderPlaced {
        customer_id: "customer-7".into(),
        lines: vec![
            OrderLine {
                product_id: "sku-1".into(),
                quantity: 2,
                unit_price: Money::new(1_999, "EUR"),
            },
            OrderLine {
                product_id: "sku-2".into(),
                quantity: 1,
                unit_price: Money::new(500, "EUR"),
            },
        ],
        total: Money::new(4_498, "EUR"),
        shipping_address: Address {
            recipient: "Grace Hopper".into(),
            line1: "1 Navy Way".into(),
            line2: Some("Floor 2".into()),
            city: "Arlington".into(),
            postal_code: "22202".into(),
            country: "US".into(),
        },
        customer_note: None,
    }
}

/// One sample of every event type, each caused by the order's first event.
fn samples() -> Vec<Event> {
    let first = Event::first_of_order(order(), "order-service", placed());
    let caused = |payload: EventPayload| Event::caused_by(&first.metadata, "some-service", payload);
    let lines = vec![StockLine {
        product_id: "sku-1".into(),
        quantity: 2,
    }];
    vec![
        first.clone(),
        caused(
            OrderCancellationRequested {
                reason: "customer_request".into(),
            }
            .into(),
        ),
        caused(
            OrderCompleted {
                total: Money::new(4_498, "EUR"),
            }
            .into(),
        ),
        caused(
            OrderCancelled {
                reason: "payment_declined".into(),
            }
            .into(),
        ),
        caused(
            PaymentAuthorized {
                payment_id: Uuid::now_v7(),
                customer_id: "customer-7".into(),
                amount: Money::new(4_498, "EUR"),
            }
            .into(),
        ),
        caused(
            PaymentDeclined {
                customer_id: "customer-7".into(),
                amount: Money::new(4_498, "EUR"),
                reason: "insufficient_funds".into(),
            }
            .into(),
        ),
        caused(
            PaymentRefunded {
                payment_id: Uuid::now_v7(),
                customer_id: "customer-7".into(),
                amount: Money::new(4_498, "EUR"),
                reason: "out_of_stock".into(),
            }
            .into(),
        ),
        caused(
            StockReserved {
                reservation_id: Uuid::now_v7(),
                lines: lines.clone(),
            }
            .into(),
        ),
        caused(
            StockRejected {
                product_id: "sku-2".into(),
                reason: "insufficient_stock".into(),
            }
            .into(),
        ),
        caused(
            StockReleased {
                reservation_id: Uuid::now_v7(),
                lines,
                reason: "shipment_failed".into(),
            }
            .into(),
        ),
        caused(
            ShipmentScheduled {
                shipment_id: Uuid::now_v7(),
                tracking_id: "TRK-1".into(),
                carrier: "DHL".into(),
            }
            .into(),
        ),
        caused(
            ShipmentFailed {
                reason: "unsupported_destination".into(),
            }
            .into(),
        ),
        Event::catalog(
            "inventory-service",
            ProductUpserted {
                product_id: "sku-1".into(),
                name: "Mechanical keyboard".into(),
                unit_price: Money::new(1_999, "EUR"),
                available_quantity: 12,
            },
        ),
        caused(
            DeadLetterRedriveRequested {
                operator: "ops-1".into(),
                reason: "the history was repaired".into(),
                dead_letters: vec![DeadLetterPosition {
                    topic: "payments".into(),
                    partition: 2,
                    offset: 41,
                }],
            }
            .into(),
        ),
    ]
}

fn schema_of(event_type: &str) -> Schema {
    Schema::parse_str(Contract::by_event_type(event_type).unwrap().schema_json).unwrap()
}

#[test]
fn every_contract_has_exactly_one_sample() {
    let covered: Vec<_> = samples().iter().map(Event::event_type).collect();
    let contracts: Vec<_> = CONTRACTS.iter().map(|c| c.event_type).collect();
    assert_eq!(covered, contracts);
}

/// Encodes the sample of `event_type` with its schema, decodes it, and compares.
fn assert_round_trips(event_type: &str) {
    let event = samples()
        .into_iter()
        .find(|e| e.event_type() == event_type)
        .unwrap();
    let schema = schema_of(event_type);
    let value = event.to_avro().unwrap().resolve(&schema).unwrap();
    let writer = GenericDatumWriter::builder(&schema).build().unwrap();
    let bytes = writer
        .write_value_to_vec(value)
        .unwrap_or_else(|e| panic!("{event_type}: {e}"));
    let reader = GenericDatumReader::builder(&schema).build().unwrap();
    let decoded = reader.read_value(&mut bytes.as_slice()).unwrap();
    assert_eq!(Event::from_avro(event_type, &decoded).unwrap(), event);
}

macro_rules! round_trip_tests {
    ($($test:ident => $event_type:literal),+ $(,)?) => {
        $(#[test]
        fn $test() {
            assert_round_trips($event_type);
        })+
    };
}

round_trip_tests! {
    order_placed_round_trips_through_avro => "OrderPlaced",
    order_cancellation_requested_round_trips_through_avro => "OrderCancellationRequested",
    order_completed_round_trips_through_avro => "OrderCompleted",
    order_cancelled_round_trips_through_avro => "OrderCancelled",
    payment_authorized_round_trips_through_avro => "PaymentAuthorized",
    payment_declined_round_trips_through_avro => "PaymentDeclined",
    payment_refunded_round_trips_through_avro => "PaymentRefunded",
    stock_reserved_round_trips_through_avro => "StockReserved",
    stock_rejected_round_trips_through_avro => "StockRejected",
    stock_released_round_trips_through_avro => "StockReleased",
    shipment_scheduled_round_trips_through_avro => "ShipmentScheduled",
    shipment_failed_round_trips_through_avro => "ShipmentFailed",
    product_upserted_round_trips_through_avro => "ProductUpserted",
    dead_letter_redrive_requested_round_trips_through_avro => "DeadLetterRedriveRequested",
}

#[test]
fn caused_events_inherit_the_order_and_correlation_and_name_their_cause() {
    let first = Event::first_of_order(order(), "order-service", placed());
    let next = Event::caused_by(
        &first.metadata,
        "billing-service",
        OrderCancelled { reason: "x".into() },
    );
    assert_eq!(
        first.metadata.correlation_id,
        first.metadata.order_id.unwrap()
    );
    assert_eq!(first.metadata.causation_id, None);
    assert_eq!(next.metadata.order_id, first.metadata.order_id);
    assert_eq!(next.metadata.correlation_id, first.metadata.correlation_id);
    assert_eq!(next.metadata.causation_id, Some(first.metadata.event_id));
    assert_eq!(next.metadata.event_type, "OrderCancelled");
}

#[test]
fn order_events_are_keyed_by_order_id_and_catalog_events_by_product_id() {
    for event in samples() {
        let expected = match &event.payload {
            EventPayload::ProductUpserted(p) => p.product_id.clone(),
            _ => event.metadata.order_id.unwrap().to_string(),
        };
        assert_eq!(event.key(), expected);
    }
}

#[test]
fn an_order_event_without_an_order_id_is_not_a_valid_event() {
    let mut event = Event::first_of_order(
        order(),
        "order-service",
        OrderCancelled { reason: "x".into() },
    );
    event.metadata.order_id = None;
    let error = Event::from_avro("OrderCancelled", &event.to_avro().unwrap()).unwrap_err();
    assert!(matches!(
        error,
        ContractError::MissingOrderId("OrderCancelled")
    ));
}

/// The reason `from_avro` refuses `payload` as impossible, or `None` if it takes it.
fn impossibility(payload: impl Into<EventPayload>) -> Option<String> {
    let event = Event::first_of_order(order(), "poison", payload);
    let value = event
        .to_avro()
        .unwrap()
        .resolve(&schema_of(event.event_type()))
        .unwrap();
    match Event::from_avro(event.event_type(), &value) {
        Ok(_) => None,
        Err(ContractError::Impossible { reason, .. }) => Some(reason),
        Err(other) => panic!("refused for another reason: {other}"),
    }
}

#[test]
fn content_no_producer_could_write_is_not_a_valid_event() {
    assert_eq!(impossibility(placed()), None);
    let mut negative = placed();
    negative.lines[1].quantity = -3;
    negative.total = Money::new(2 * 1_999 - 3 * 500, "EUR");
    assert_eq!(
        impossibility(negative).as_deref(),
        Some("lines[1].quantity is -3")
    );
    let mut wrong_total = placed();
    wrong_total.total = Money::new(1, "EUR");
    assert!(
        impossibility(wrong_total)
            .unwrap()
            .contains("add up to 4498")
    );
    let mut huge = placed();
    huge.lines[0].unit_price = Money::new(i64::MAX, "EUR");
    assert!(impossibility(huge).is_some());
    let refund = PaymentRefunded {
        payment_id: Uuid::now_v7(),
        customer_id: "c".into(),
        amount: Money::new(-100, "EUR"),
        reason: "x".into(),
    };
    assert_eq!(impossibility(refund).as_deref(), Some("amount is -100"));
}

fn walk_fields(schema: &Json, visit: &mut dyn FnMut(&Json)) {
    match schema {
        Json::Object(map) => {
            if let Some(Json::Array(fields)) = map.get("fields") {
                for field in fields {
                    visit(field);
                    walk_fields(&field["type"], visit);
                }
            }
            if let Some(items) = map.get("items") {
                walk_fields(items, visit);
            }
        }
        Json::Array(variants) => variants.iter().for_each(|v| walk_fields(v, visit)),
        _ => {}
    }
}

#[test]
fn every_field_of_every_schema_has_a_doc() {
    for contract in CONTRACTS {
        let schema: Json = serde_json::from_str(contract.schema_json).unwrap();
        assert!(
            schema["doc"].is_string(),
            "{} has no doc",
            contract.event_type
        );
        walk_fields(&schema, &mut |field| {
            assert!(
                field["doc"].as_str().is_some_and(|d| !d.is_empty()),
                "{}: field {} has no doc",
                contract.event_type,
                field["name"]
            );
        });
    }
}

#[test]
fn every_schema_carries_the_same_metadata_record_first() {
    let metadata_of = |contract: &Contract| {
        let schema: Json = serde_json::from_str(contract.schema_json).unwrap();
        let first = schema["fields"][0].clone();
        assert_eq!(first["name"], "metadata", "{}", contract.event_type);
        first["type"].clone()
    };
    let reference = metadata_of(&CONTRACTS[0]);
    for contract in CONTRACTS {
        assert_eq!(
            metadata_of(contract),
            reference,
            "{} metadata differs",
            contract.event_type
        );
    }
}

#[test]
fn money_is_never_a_float() {
    for contract in CONTRACTS {
        assert!(
            !contract.schema_json.contains("\"float\"")
                && !contract.schema_json.contains("\"double\"")
        );
    }
}

#[test]
fn a_consumer_subscribes_to_each_topic_its_event_types_travel_on_once() {
    let topics = topics_of(&[
        "ShipmentFailed",
        "OrderPlaced",
        "StockRejected",
        "OrderCompleted",
    ]);
    assert_eq!(
        topics.unwrap(),
        [Topic::Orders, Topic::Inventory, Topic::Shipments]
    );
    assert!(matches!(
        topics_of(&["OrderShipped"]),
        Err(ContractError::UnknownEventType(t)) if t == "OrderShipped"
    ));
}

#[test]
fn a_redrive_names_at_least_one_dead_letter_of_a_topic_of_ours() {
    let request = |dead_letters: Vec<DeadLetterPosition>| DeadLetterRedriveRequested {
        operator: "ops-1".into(),
        reason: "fixed".into(),
        dead_letters,
    };
    let at = |topic: &str, partition, offset| DeadLetterPosition {
        topic: topic.into(),
        partition,
        offset,
    };
    assert_eq!(impossibility(request(vec![at("payments", 0, 3)])), None);
    assert!(impossibility(request(Vec::new())).is_some());
    assert!(impossibility(request(vec![at("payments.dlq", 0, 3)])).is_some());
    assert!(impossibility(request(vec![at("orders", -1, 3)])).is_some());
}
