//! Kafka-level guarantees: headers on every record, and a re-published record has no second effect.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use orderflow_e2e::client::{self, order_body};
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;
use shared_events::contracts::Topic;
use shared_events::{KafkaConfig, RegistryCodec, RegistryConfig, TopicNames};

use super::{Ctx, Run, seed};

pub(super) fn republished_event_has_no_second_effect(ctx: &Ctx) -> Run<'_> {
    Box::pin(async move {
        let stack = &ctx.0;
        let (products, customers) = seed(stack, "replay", &[(100, 10)], &[10_000]).await;
        let order_id = client::place(
            stack,
            &order_body(&customers[0], &[(&products[0], 2)], "DE"),
        )
        .await;
        client::wait_for_status(stack, &order_id, "COMPLETED").await;
        // Every record of the order: keyed by the order, correlated to it, caused by another.
        let kafka = KafkaConfig::local(&orderflow_e2e::bootstrap_servers());
        let names = TopicNames::new(stack.prefix.clone());
        let expected = BTreeSet::from([
            "OrderPlaced",
            "PaymentAuthorized",
            "StockReserved",
            "ShipmentScheduled",
            "OrderCompleted",
        ]);
        let records = read_order_records(&kafka, &names, &order_id, &expected);
        let types: BTreeSet<&str> = records.iter().map(|r| r.event_type.as_str()).collect();
        assert!(types.is_superset(&expected), "{types:?}");
        // The ids travel in the Avro metadata; the headers carry what a consumer needs before
        // decoding: the event type (to skip what it does not handle) and the trace context.
        let registry = RegistryConfig::at(
            orderflow_e2e::env_or("SCHEMA_REGISTRY_URL", "http://127.0.0.1:8081"),
            false,
        );
        let codec = RegistryCodec::connect(&registry, &names).await.unwrap();
        for record in &records {
            let event = codec.decode(Some(&record.payload)).await.unwrap();
            assert_eq!(event.event_type(), record.event_type);
            assert_eq!(event.metadata.correlation_id.to_string(), order_id);
            assert_eq!(
                event.metadata.causation_id.is_some(),
                record.event_type != "OrderPlaced"
            );
            assert!(
                record.headers.contains_key("traceparent"),
                "{} has no trace context",
                record.event_type
            );
            for copied in ["event_id", "correlation_id", "causation_id"] {
                assert!(
                    !record.headers.contains_key(copied),
                    "{copied} is in the payload"
                );
            }
        }
        let placed = records
            .iter()
            .find(|r| r.event_type == "OrderPlaced")
            .unwrap();
        let duplicates = "orderflow_consumer_duplicates_skipped_total";
        let mut before = HashMap::new();
        for service in ["billing-service", "inventory-service", "shipping-service"] {
            before.insert(
                service,
                client::metric(stack.url(service), duplicates).await,
            );
        }
        // Publish the recorded OrderPlaced again, byte for byte.
        let producer: FutureProducer = kafka.idempotent_producer().create().unwrap();
        let mut headers = OwnedHeaders::new();
        for (key, value) in &placed.headers {
            headers = headers.insert(Header {
                key,
                value: Some(value.as_bytes()),
            });
        }
        producer
            .send(
                FutureRecord::to(&placed.topic)
                    .key(&order_id)
                    .payload(&placed.payload)
                    .headers(headers),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
        for service in ["billing-service", "inventory-service", "shipping-service"] {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while client::metric(stack.url(service), duplicates).await <= before[service] {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{service} never saw the duplicate"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        let account = client::account(stack, &customers[0]).await;
        assert_eq!(account["balance_minor"], 9_800);
        assert_eq!(account["payments"].as_array().unwrap().len(), 1);
        let product = client::product(stack, &products[0]).await;
        assert_eq!(
            (product["available"].clone(), product["reserved"].clone()),
            (json!(8), json!(2))
        );
        let order = client::order(stack, &order_id).await;
        assert_eq!(order["timeline"].as_array().unwrap().len(), 5, "{order:#}");
    })
}

struct RawRecord {
    topic: String,
    event_type: String,
    payload: Vec<u8>,
    headers: BTreeMap<String, String>,
}

/// The order's records on the saga topics, read from the beginning until every type in
/// `expected` has been seen (and a second more, for any others).
fn read_order_records(
    kafka: &KafkaConfig,
    names: &TopicNames,
    order_id: &str,
    expected: &BTreeSet<&str>,
) -> Vec<RawRecord> {
    let consumer: BaseConsumer = kafka
        .base()
        .set("group.id", format!("e2e-reader-{}", uuid::Uuid::new_v4()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let topics: Vec<String> = [
        Topic::Orders,
        Topic::Payments,
        Topic::Inventory,
        Topic::Shipments,
    ]
    .iter()
    .map(|t| names.name(*t))
    .collect();
    consumer
        .subscribe(&topics.iter().map(String::as_str).collect::<Vec<_>>())
        .unwrap();
    let mut records = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut complete_at: Option<std::time::Instant> = None;
    while std::time::Instant::now() < deadline
        && complete_at.is_none_or(|at| at.elapsed() < Duration::from_secs(1))
    {
        let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        if message.key() != Some(order_id.as_bytes()) {
            continue;
        }
        let headers: BTreeMap<String, String> = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        (
                            h.key.to_owned(),
                            String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        records.push(RawRecord {
            topic: message.topic().to_owned(),
            event_type: headers.get("event_type").cloned().unwrap_or_default(),
            payload: message.payload().unwrap_or_default().to_vec(),
            headers,
        });
        let seen: BTreeSet<&str> = records.iter().map(|r| r.event_type.as_str()).collect();
        if complete_at.is_none() && seen.is_superset(expected) {
            complete_at = Some(std::time::Instant::now());
        }
    }
    records
}
