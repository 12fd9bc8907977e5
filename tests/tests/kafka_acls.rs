//! Each service is its own Kafka user with only the ACLs the topology gives it
//! (`shared_events::acl`), on a broker that authenticates (SASL/SCRAM-SHA-512) and
//! authorizes (KRaft's StandardAuthorizer, nothing allowed without an ACL): the saga runs
//! to each outcome, and a service's credentials cannot publish another's events. Before,
//! all four shared one identity, so a compromised billing-service could publish
//! `ShipmentScheduled`. order-service, which operates the saga, reads the other groups'
//! progress and the dead letters for `GET /sagas/stuck` with the grants it has for that,
//! and a redrive is carried out by the one service that may write the topic.

use std::time::Duration;

use orderflow_e2e::client::{
    operate, order_body, place, stuck_entry_in, wait_for_status, wait_until_stuck,
};
use orderflow_e2e::secure_broker::{ADMIN, SecureBroker};
use orderflow_e2e::{Stack, put_account, put_product, wait_for_catalog};
use rdkafka::Message;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use shared_events::contracts::topology::SERVICES;
use shared_events::contracts::{Event, Money, PaymentAuthorized, Topic};
use shared_events::dead_letter::headers as dlq;
use shared_events::dead_letter::read_dead_letters;
use shared_events::topic_reading::scan_topic;
use shared_events::{RegistryCodec, RegistryConfig, TopicNames};

#[tokio::test]
async fn each_service_is_its_own_kafka_user_with_only_the_acls_the_topology_gives_it() {
    let users: Vec<&str> = SERVICES.iter().map(|s| s.name).collect();
    let broker = SecureBroker::start("acls", &users).await;
    let prefix = Stack::new_prefix("acls");
    let names = TopicNames::new(prefix.clone());
    let grants: Vec<Vec<String>> = SERVICES
        .iter()
        .flat_map(|s| s.grants(&names))
        .map(|grant| grant.kafka_acls_arguments())
        .collect();
    futures::future::join_all(grants.iter().map(|arguments| broker.kafka_acls(arguments))).await;

    let stuck_after = [("STUCK_AFTER_SECS", "2".to_owned())];
    let mut stack = Stack::start_with(prefix, &broker.kafka_config(ADMIN), &stuck_after, |name| {
        broker.service_env(name)
    })
    .await;
    put_product(&stack, "acls-product", 500, 1).await;
    put_account(&stack, "acls-customer", 100_000).await;
    wait_for_catalog(&stack, &["acls-product"]).await;
    // The first order takes the only unit; the second is refunded and cancelled, so every
    // service publishes and every compensation runs under its own user.
    let body = order_body("acls-customer", &[("acls-product", 1)], "DE");
    let completed = place(&stack, &body).await;
    wait_for_status(&stack, &completed, "COMPLETED").await;
    let cancelled = place(&stack, &body).await;
    wait_for_status(&stack, &cancelled, "CANCELLED").await;

    // billing-service's credentials are refused on shipments, which only shipping writes.
    let billing: FutureProducer = broker
        .kafka_config("billing-service")
        .base()
        .set("message.timeout.ms", "10000")
        .create()
        .unwrap();
    let shipments = names.name(Topic::Shipments);
    let forged = billing
        .send(
            FutureRecord::to(&shipments)
                .key(&completed)
                .payload("ShipmentScheduled"),
            Duration::from_secs(10),
        )
        .await;
    assert!(
        matches!(
            forged,
            Err((
                KafkaError::MessageProduction(RDKafkaErrorCode::TopicAuthorizationFailed),
                _
            ))
        ),
        "billing-service could write {shipments}: {forged:?}"
    );

    // A poison record on payments, dead-lettered by the two groups that hear payments, and
    // two forged letters that inventory, which may write payments.dlq, puts beside them: a
    // `PaymentAuthorized` of the order that names no record of payments, and one that names
    // the cancelled order's authorization. A redrive of the order has billing, which alone
    // writes payments, read the poison record back from payments and send it once more
    // (both groups dead-letter it again); the forged letters' bytes are never published.
    let admin: FutureProducer = broker.kafka_config(ADMIN).base().create().unwrap();
    let payments = names.name(Topic::Payments);
    let poison = FutureRecord::to(&payments)
        .key(&completed)
        .payload("not Avro")
        .headers(OwnedHeaders::new().insert(Header {
            key: "event_type",
            value: Some("PaymentAuthorized"),
        }));
    admin.send(poison, Duration::from_secs(10)).await.unwrap();
    let payments_dlq = names.dead_letter(Topic::Payments);
    wait_for_dead_letters(&broker, &payments_dlq, &completed, 2).await;
    let forged = forge_letters(&broker, &names, &completed, &cancelled).await;
    wait_for_dead_letters(&broker, &payments_dlq, &completed, 2 + forged.len()).await;
    let cancelled_before = of_order(&read_topic(&broker, &payments), &cancelled);
    let (status, action) = operate(&stack, &completed, "redrive", "ACL check").await;
    assert_eq!(status, reqwest::StatusCode::ACCEPTED, "{action:#}");
    assert_eq!(
        action["dead_letters"].as_array().unwrap().len(),
        2 + forged.len(),
        "{action:#}"
    );
    let letters =
        wait_for_dead_letters(&broker, &payments_dlq, &completed, 2 + forged.len() + 2).await;
    let on_payments = read_topic(&broker, &payments);
    for payload in &forged {
        assert!(
            !on_payments.iter().any(|(_, value)| value == payload),
            "billing-service published a forged dead letter on {payments}"
        );
    }
    assert_eq!(
        of_order(&on_payments, &cancelled),
        cancelled_before,
        "the cancelled order's authorization was sent again"
    );
    assert_eq!(
        letters,
        2 + forged.len() + 2,
        "the poison record was sent more than once"
    );

    // order-service, the saga's operator, reads the evidence of a stuck order under its own
    // user: inventory's group progress on the order's partitions and the dead letters.
    stack.service("inventory-service").stop().await;
    let stuck = place(&stack, &body).await;
    wait_for_status(&stack, &stuck, "PAYMENT_AUTHORIZED").await;
    let listing = wait_until_stuck(&stack, &stuck).await;
    assert_eq!(
        listing["evidence_unavailable"],
        serde_json::json!([]),
        "{listing:#}"
    );
    let entry = stuck_entry_in(&listing, &stuck).unwrap();
    assert!(
        !entry["awaiting"][0]["partitions"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{entry:#}"
    );
    stack.stop_all().await;
}

/// Waits (30 s at most) until `dlq` holds at least `count` records of `order_id`; returns
/// how many it holds.
async fn wait_for_dead_letters(
    broker: &SecureBroker,
    dlq: &str,
    order_id: &str,
    count: usize,
) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let letters = read_dead_letters(&broker.kafka_config(ADMIN), dlq).unwrap();
        let of_order = letters
            .iter()
            .filter(|letter| letter.key.as_deref() == Some(order_id))
            .count();
        if of_order >= count {
            return of_order;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{of_order} dead letters of {order_id} in {dlq}, not {count}: {letters:#?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Writes to payments.dlq, with inventory-service's credentials, two letters claiming to be a
/// `PaymentAuthorized` of `victim` that failed: one naming a position of payments that holds
/// nothing, one naming the record of `other`'s authorization. Returns their values.
async fn forge_letters(
    broker: &SecureBroker,
    names: &TopicNames,
    victim: &str,
    other: &str,
) -> Vec<Vec<u8>> {
    let registry = RegistryConfig::at(
        orderflow_e2e::env_or("SCHEMA_REGISTRY_URL", "http://127.0.0.1:8081"),
        true,
    );
    let codec = RegistryCodec::connect(&registry, names).await.unwrap();
    let payments = names.name(Topic::Payments);
    let (other_partition, other_offset) = read_topic_positions(broker, &payments)
        .into_iter()
        .find(|(key, _, _)| key.as_deref() == Some(other))
        .map(|(_, partition, offset)| (partition, offset))
        .expect("the other order's authorization on payments");
    let inventory: FutureProducer = broker
        .kafka_config("inventory-service")
        .base()
        .set("message.timeout.ms", "10000")
        .create()
        .unwrap();
    let mut values = Vec::new();
    for (partition, offset) in [(0, 1_000_000), (other_partition, other_offset)] {
        let event = Event::first_of_order(
            victim.parse().unwrap(),
            "billing-service",
            PaymentAuthorized {
                payment_id: uuid::Uuid::new_v4(),
                customer_id: "acls-customer".into(),
                amount: Money::new(500, "EUR"),
            },
        );
        let value = codec.encode(&event).await.unwrap();
        let (partition, offset) = (partition.to_string(), offset.to_string());
        let letter_headers = [
            ("event_type", "PaymentAuthorized"),
            (dlq::ORIGINAL_TOPIC, payments.as_str()),
            (dlq::ORIGINAL_PARTITION, partition.as_str()),
            (dlq::ORIGINAL_OFFSET, offset.as_str()),
            (dlq::CONSUMER_GROUP, "order-service"),
            (dlq::ERROR_CLASS, "handler"),
            (dlq::ERROR_MESSAGE, "the database was away"),
        ]
        .into_iter()
        .fold(OwnedHeaders::new(), |headers, (key, value)| {
            headers.insert(Header {
                key,
                value: Some(value),
            })
        });
        inventory
            .send(
                FutureRecord::to(&names.dead_letter(Topic::Payments))
                    .key(victim)
                    .payload(&value)
                    .headers(letter_headers),
                Duration::from_secs(10),
            )
            .await
            .expect("inventory-service may write payments.dlq");
        values.push(value);
    }
    values
}

/// How many of `records` are keyed by `order`.
fn of_order(records: &[(Option<String>, Vec<u8>)], order: &str) -> usize {
    records
        .iter()
        .filter(|(key, _)| key.as_deref() == Some(order))
        .count()
}

/// Every record of `topic`: its key and value.
fn read_topic(broker: &SecureBroker, topic: &str) -> Vec<(Option<String>, Vec<u8>)> {
    let mut records = Vec::new();
    scan(broker, topic, |message| {
        records.push((
            key_of(message),
            message.payload().unwrap_or_default().to_vec(),
        ));
    });
    records
}

/// Every record of `topic`: its key, partition and offset.
fn read_topic_positions(broker: &SecureBroker, topic: &str) -> Vec<(Option<String>, i32, i64)> {
    let mut records = Vec::new();
    scan(broker, topic, |message| {
        records.push((key_of(message), message.partition(), message.offset()));
    });
    records
}

fn key_of(message: &BorrowedMessage<'_>) -> Option<String> {
    message
        .key()
        .map(|k| String::from_utf8_lossy(k).into_owned())
}

/// Reads `topic` to its end as the admin.
fn scan(broker: &SecureBroker, topic: &str, mut visit: impl FnMut(&BorrowedMessage<'_>)) {
    scan_topic(&broker.kafka_config(ADMIN), topic, |message| {
        visit(message);
        Ok(())
    })
    .unwrap();
}
