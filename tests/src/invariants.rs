//! What must hold after any fault, once the system settles: the checker reads every
//! service's database and the dead-letter topics, and reports each invariant with its
//! numbers.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rdkafka::consumer::BaseConsumer;
use shared_events::consumer::stall::read_progress;
use shared_events::contracts::topology::{HEARD_BY_EVERY_SERVICE, SERVICES as TOPOLOGY};
use shared_events::contracts::{Topic, topics_of};
use shared_events::dead_letter::read_dead_letters;
use shared_events::{KafkaConfig, TopicNames};
use sqlx::Connection;

use crate::Stack;
use crate::workload::Workload;

/// The services whose consumers read `topic`: their saga consumer, or the redrive consumer
/// every service runs (`shared_events::redrive`).
pub fn consumers_of(topic: Topic) -> Vec<&'static str> {
    TOPOLOGY
        .iter()
        .filter(|service| {
            service.consumes().contains(&topic) || heard_by_every_service().contains(&topic)
        })
        .map(|service| service.name)
        .collect()
}

/// The topics every service's redrive consumer reads.
fn heard_by_every_service() -> Vec<Topic> {
    topics_of(HEARD_BY_EVERY_SERVICE).expect("contract event types")
}

/// Waits until every order is terminal, every outbox drained and every consumer group
/// caught up (an order is terminal before billing hears that it completed), at most `bound`.
/// `kafka` reaches the stack's broker without faults.
pub async fn settle(stack: &Stack, kafka: &KafkaConfig, bound: Duration) {
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        let in_flight = query_i64(
            &stack.services["order-service"].database_url,
            "SELECT count(*) FROM orders_view WHERE status NOT IN ('COMPLETED', 'CANCELLED')",
        )
        .await;
        let mut outboxes = 0;
        for service in stack.services.values() {
            outboxes += query_i64(&service.database_url, "SELECT count(*) FROM outbox").await;
        }
        let (kafka, prefix) = (kafka.clone(), stack.prefix.clone());
        let unconsumed = tokio::task::spawn_blocking(move || unconsumed_records(&kafka, &prefix))
            .await
            .unwrap();
        if in_flight == 0 && outboxes == 0 && matches!(unconsumed, Ok(0)) {
            return;
        }
        let unconsumed = match unconsumed {
            Ok(records) => format!("{records} records not yet consumed"),
            Err(error) => format!("the groups' progress unreadable ({error})"),
        };
        assert!(
            tokio::time::Instant::now() < deadline,
            "not settled within {bound:?}: {in_flight} orders in flight, {outboxes} outbox rows, {unconsumed}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Records the services' consumer groups have not committed yet, over every topic each
/// consumes (a group that never committed a partition counts all of it). An error is the
/// broker not answering yet (after its restart, a metadata request can meet a leader epoch
/// it has not caught up with): the caller asks again.
fn unconsumed_records(kafka: &KafkaConfig, prefix: &str) -> Result<i64, shared_events::Error> {
    let names = TopicNames::new(prefix.to_owned());
    let mut unconsumed = 0;
    let heard: Vec<String> = heard_by_every_service()
        .into_iter()
        .map(|t| names.name(t))
        .collect();
    for service in TOPOLOGY {
        let topics: Vec<String> = service
            .consumes()
            .into_iter()
            .map(|t| names.name(t))
            .collect();
        for (group, topics) in [
            (names.group_of(service.name), &topics),
            (names.redrive_group_of(service.name), &heard),
        ] {
            let group: BaseConsumer = kafka.reader().set("group.id", group).create().unwrap();
            unconsumed += read_progress(&group, topics)?
                .iter()
                .map(|(_, progress)| progress.lag().max(0))
                .sum::<i64>();
        }
    }
    Ok(unconsumed)
}

/// Each invariant with its numbers, and whether all hold.
#[derive(Debug, Default)]
pub struct Verdict {
    pub lines: Vec<String>,
    pub holds: bool,
}

impl Verdict {
    fn check(&mut self, name: &str, holds: bool, numbers: String) {
        let mark = if holds { "ok  " } else { "FAIL" };
        self.lines.push(format!("{mark} {name}: {numbers}"));
        self.holds &= holds;
    }

    pub fn report(&self) -> String {
        self.lines.join("\n")
    }
}

/// Every accepted order (`placed`) is terminal, none twice; money charged minus refunded
/// equals the totals of the completed orders, per customer; per product, stock plus reserved
/// equals the initial stock and reserved equals the units of completed orders; one captured
/// payment and one shipment per completed order, and none other, none on hold; every outbox
/// drained; every dead letter is an injected `poison` record, and every poison record was
/// dead-lettered by every consumer of its topic.
pub async fn check(
    stack: &Stack,
    kafka: &KafkaConfig,
    workload: &Workload,
    placed: &[String],
    poison: &BTreeMap<Topic, usize>,
) -> Verdict {
    let db = |name: &str| stack.services[name].database_url.clone();
    let mut verdict = Verdict {
        holds: true,
        ..Verdict::default()
    };
    let statuses = rows(
        &db("order-service"),
        "SELECT status, count(*) FROM orders_view GROUP BY status",
    )
    .await;
    let total: i64 = statuses.iter().map(|(_, n)| n).sum();
    let distinct: BTreeSet<&String> = placed.iter().collect();
    verdict.check(
        "every accepted order is terminal, none twice",
        total == placed.len() as i64 && distinct.len() == placed.len(),
        format!("{} accepted, {total} stored: {statuses:?}", placed.len()),
    );

    let completed_by_customer: BTreeMap<String, i64> = rows(
        &db("order-service"),
        "SELECT customer_id, sum(total_minor)::bigint FROM orders_view WHERE status = 'COMPLETED' GROUP BY 1",
    )
    .await
    .into_iter()
    .collect();
    let balances: BTreeMap<String, i64> = rows(
        &db("billing-service"),
        "SELECT customer_id, balance_minor FROM accounts",
    )
    .await
    .into_iter()
    .collect();
    for (customer, initial) in workload.customers() {
        let charged = initial - balances[&customer];
        let completed = completed_by_customer.get(&customer).copied().unwrap_or(0);
        verdict.check(
            "money charged - refunded = totals of COMPLETED orders",
            charged == completed,
            format!("{customer}: net charged {charged}, completed totals {completed}"),
        );
    }
    let payments: BTreeMap<String, i64> = rows(
        &db("billing-service"),
        "SELECT state->>'stage', count(*) FROM order_payments GROUP BY 1",
    )
    .await
    .into_iter()
    .collect();
    let completed = statuses
        .iter()
        .find(|(s, _)| s == "COMPLETED")
        .map_or(0, |(_, n)| *n);
    verdict.check(
        "a captured payment per completed order, none left on hold",
        payments.get("captured").copied().unwrap_or(0) == completed
            && !payments.contains_key("authorized"),
        format!("{payments:?}, {completed} completed"),
    );

    let completed_units: BTreeMap<String, i64> = rows(
        &db("order-service"),
        "SELECT l->>'product_id', sum((l->>'quantity')::int)::bigint FROM orders_view,
             jsonb_array_elements(lines) l WHERE status = 'COMPLETED' GROUP BY 1",
    )
    .await
    .into_iter()
    .collect();
    let mut inventory = sqlx::PgConnection::connect(&db("inventory-service"))
        .await
        .unwrap();
    for (product, initial) in workload.products() {
        let (available, reserved): (i32, i32) =
            sqlx::query_as("SELECT available, reserved FROM products WHERE product_id = $1")
                .bind(&product)
                .fetch_one(&mut inventory)
                .await
                .unwrap();
        let units = completed_units.get(&product).copied().unwrap_or(0);
        verdict.check(
            "stock + reserved = initial, reserved = completed units",
            available + reserved == initial && i64::from(reserved) == units,
            format!(
                "{product}: {available} + {reserved} (initial {initial}), completed units {units}"
            ),
        );
    }

    let shipped = query_i64(
        &db("shipping-service"),
        "SELECT count(*) FROM order_shipments WHERE state->>'stage' = 'scheduled'",
    )
    .await;
    verdict.check(
        "one shipment per completed order",
        shipped == completed,
        format!("{shipped} shipments, {completed} completed"),
    );

    let mut outboxes = Vec::new();
    for service in TOPOLOGY {
        let left = query_i64(
            &db(service.name),
            "SELECT (SELECT count(*) FROM outbox) + (SELECT count(*) FROM outbox_dead_letters)",
        )
        .await;
        outboxes.push((service.name, left));
    }
    verdict.check(
        "every outbox drained, nothing refused by the broker",
        outboxes.iter().all(|(_, left)| *left == 0),
        format!("{outboxes:?}"),
    );

    for topic in Topic::ALL {
        let dlq = format!("{}{}.dlq", stack.prefix, topic.base_name());
        let letters = read_dead_letters(kafka, &dlq).unwrap();
        // At least once: a consumer killed after dead-lettering, before committing, does it again.
        let distinct: BTreeSet<(Option<String>, Option<String>, Option<String>)> = letters
            .iter()
            .map(|l| {
                (
                    l.consumer_group.clone(),
                    l.original_partition.clone(),
                    l.original_offset.clone(),
                )
            })
            .collect();
        let classes: BTreeSet<String> = letters
            .iter()
            .filter_map(|l| l.error_class.clone())
            .collect();
        let expected = poison.get(&topic).copied().unwrap_or(0) * consumers_of(topic).len();
        verdict.check(
            "dead letters are exactly the injected poison, from every consumer",
            distinct.len() == expected
                && classes.iter().all(|c| {
                    ["not_wire_format", "unknown_schema_id", "invalid_event"].contains(&c.as_str())
                }),
            format!(
                "{dlq}: {} distinct ({} records), expected {expected}, classes {classes:?}",
                distinct.len(),
                letters.len()
            ),
        );
    }
    verdict
}

async fn query_i64(url: &str, sql: &str) -> i64 {
    let mut db = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql))
        .fetch_one(&mut db)
        .await
        .unwrap()
}

async fn rows(url: &str, sql: &str) -> Vec<(String, i64)> {
    let mut db = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .fetch_all(&mut db)
        .await
        .unwrap()
}
