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
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use shared_events::TopicNames;
use shared_events::contracts::Topic;
use shared_events::contracts::topology::SERVICES;
use shared_events::dead_letter::read_dead_letters;

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

    // A poison record on payments, dead-lettered by the two groups that hear payments, is
    // redriven: billing, which alone writes payments, reads its two dead letters back under
    // its own user and copies them back, where both groups dead-letter each again.
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
    wait_for_dead_letters(&broker, &names.dead_letter(Topic::Payments), &completed, 2).await;
    let (status, action) = operate(&stack, &completed, "redrive", "ACL check").await;
    assert_eq!(status, reqwest::StatusCode::ACCEPTED, "{action:#}");
    wait_for_dead_letters(
        &broker,
        &names.dead_letter(Topic::Payments),
        &completed,
        2 + 4,
    )
    .await;

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

/// Waits (30 s at most) until `dlq` holds `count` records of `order_id`.
async fn wait_for_dead_letters(broker: &SecureBroker, dlq: &str, order_id: &str, count: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let letters = read_dead_letters(&broker.kafka_config(ADMIN), dlq).unwrap();
        let of_order = letters
            .iter()
            .filter(|letter| letter.key.as_deref() == Some(order_id))
            .count();
        if of_order == count {
            return;
        }
        assert!(
            of_order < count && tokio::time::Instant::now() < deadline,
            "{of_order} dead letters of {order_id} in {dlq}, not {count}: {letters:#?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
