//! Forged records on a saga topic, of schemas someone registered that are none of our
//! contracts, claiming far more items than their bytes hold.

use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};
use shared_events::contracts::Topic;
use shared_events::dead_letter::read_dead_letters;
use shared_events::{KafkaConfig, TopicNames};

use super::{Ctx, Run};

/// Items each forged array claims.
const CLAIMED_ITEMS: i64 = 9_000_000;

/// A schema of no contract's name, whose 15-byte record claims two arrays of nine million
/// nulls each.
pub(super) fn a_forged_schema_is_dead_lettered_unread(ctx: &Ctx) -> Run<'_> {
    Box::pin(async move {
        let schema = json!({
            "type": "record", "name": "Forged", "namespace": "evil",
            "fields": [
                {"name": "a", "type": {"type": "array", "items": "null"}},
                {"name": "b", "type": {"type": "array", "items": "null"}},
            ],
        });
        let mut body = Vec::new();
        for _ in 0..2 {
            // A block of CLAIMED_ITEMS nulls (which take no bytes), then the end of the array.
            body.extend(zigzag_varint(CLAIMED_ITEMS));
            body.push(0);
        }
        let reason = forge(ctx, "evil.Forged", &schema, &body).await;
        assert!(reason.contains("evil.Forged"), "{reason}");
    })
}

/// A schema registered under a subject of its own that borrows `OrderPlaced`'s record name:
/// one field of `array<array<null>>`, and an 808-byte record claiming 200 arrays of 50,000
/// nulls. Before, the name let it through and billing-service reached a 576 MB peak
/// decoding it; now the id is refused because the registry lists it under no contract's
/// subject, before its schema is read.
pub(super) fn a_schema_borrowing_a_contract_s_name_is_dead_lettered_unread(ctx: &Ctx) -> Run<'_> {
    Box::pin(async move {
        let schema = json!({
            "type": "record", "name": "OrderPlaced", "namespace": "orderflow.events",
            "fields": [{"name": "bomb", "type": {"type": "array",
                        "items": {"type": "array", "items": "null"}}}],
        });
        let mut body = zigzag_varint(200);
        for _ in 0..200 {
            body.extend(zigzag_varint(50_000));
            body.push(0);
        }
        body.push(0);
        let reason = forge(ctx, "evil.Borrowed", &schema, &body).await;
        assert!(
            reason.contains("no orderflow contract's subject"),
            "{reason}"
        );
    })
}

/// Registers `schema` under `<orders>-<subject>`, sends a record of it with `body` to the
/// orders topic, and checks that every consumer dead-letters it as a wrong schema without
/// decoding it (its peak resident memory stays put). Returns a dead letter's reason.
async fn forge(ctx: &Ctx, subject: &str, schema: &Value, body: &[u8]) -> String {
    let stack = &ctx.0;
    let names = TopicNames::new(stack.prefix.clone());
    let topic = names.name(Topic::Orders);
    let registry = orderflow_e2e::env_or("SCHEMA_REGISTRY_URL", "http://127.0.0.1:8081");
    let registered: Value = orderflow_e2e::http()
        .post(format!("{registry}/subjects/{topic}-{subject}/versions"))
        .json(&json!({ "schema": schema.to_string() }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = u32::try_from(registered["id"].as_u64().unwrap()).unwrap();
    let mut record = vec![0];
    record.extend(id.to_be_bytes());
    record.extend(body);

    let consumers = ["billing-service", "inventory-service", "shipping-service"];
    let peaks_before: Vec<u64> = consumers
        .iter()
        .map(|service| peak_rss(stack.services[service].pid().unwrap()))
        .collect();
    let kafka = KafkaConfig::local(&orderflow_e2e::bootstrap_servers());
    let producer: FutureProducer = kafka.idempotent_producer().create().unwrap();
    let delivered = producer
        .send(
            FutureRecord::to(&topic).key("forged").payload(&record),
            Duration::from_secs(10),
        )
        .await
        .unwrap();

    let (partition, offset) = (delivered.partition, delivered.offset);
    // Every consumer of the topic sets it aside, with the reason, and goes on.
    let dead_letter_topic = names.dead_letter(Topic::Orders);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut reason = String::new();
    for service in consumers {
        let group = format!("{}{service}", stack.prefix);
        let letter = loop {
            let letters = read_dead_letters(&kafka, &dead_letter_topic).unwrap();
            let found = letters.into_iter().find(|letter| {
                letter.consumer_group.as_deref() == Some(group.as_str())
                    && letter.original_partition == Some(partition.to_string())
                    && letter.original_offset == Some(offset.to_string())
            });
            if let Some(letter) = found {
                break letter;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{service} never dead-lettered the forged record"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        assert_eq!(
            letter.error_class.as_deref(),
            Some("wrong_schema"),
            "{letter:?}"
        );
        reason = letter.error_message.unwrap_or_default();
    }
    // Refused before decoding: no process reserved the arrays' hundreds of MB, even for a
    // moment (the peak resident size stayed put).
    for (service, before) in consumers.iter().zip(peaks_before) {
        let after = peak_rss(stack.services[service].pid().unwrap());
        let grown = after.saturating_sub(before);
        assert!(
            grown < 8 * 1024 * 1024,
            "{service}'s peak resident memory grew by {} MB",
            grown / 1024 / 1024
        );
    }
    reason
}

/// Avro's long encoding: zigzag, then base-128 varint.
fn zigzag_varint(value: i64) -> Vec<u8> {
    let mut n = ((value << 1) ^ (value >> 63)) as u64;
    let mut bytes = Vec::new();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            bytes.push(byte);
            return bytes;
        }
        bytes.push(byte | 0x80);
    }
}

/// The most resident memory the process has had (`VmHWM`), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}
