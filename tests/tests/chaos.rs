//! Chaos with invariants: two replicas of every service take a mix of orders while a random
//! service process is killed with SIGKILL every few seconds and restarted, the broker is
//! killed and restarted once, PostgreSQL is stopped for a few seconds once, and poison records (garbage bytes, an unknown schema id; and
//! in `orders` a valid OrderPlaced with a negative quantity) are injected into every topic. Once the system settles, a checker reads every service's
//! database and the dead-letter topics and asserts, printing each with its numbers:
//! every accepted order is terminal; money charged minus refunded equals the totals of the
//! completed orders, per customer; per product, stock plus reserved equals the initial
//! stock and reserved equals the units of completed orders; one shipment per completed order
//! and none other; no payment left on hold; every outbox drained; every dead letter is an
//! injected poison record, and every poison record was dead-lettered by every consumer of its
//! topic.
//!
//! Short form (CI, about 2 minutes: 300 orders over 60 s):
//! `cargo test -p orderflow-e2e --test chaos -- --nocapture`.
//! Full form: `CHAOS_ORDERS=2000 CHAOS_SECONDS=300 cargo test -p orderflow-e2e --test chaos -- --nocapture`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use orderflow_e2e::client::order_body;
use orderflow_e2e::draw::Draw;
use orderflow_e2e::{SERVICES, ServiceProcess, Stack, put_account, put_product, wait_for_catalog};
use orderflow_e2e::{local_broker, local_postgres};
use rdkafka::consumer::BaseConsumer;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;
use shared_events::consumer::stall::read_progress;
use shared_events::contracts::{Address, OrderLine, OrderPlaced};
use shared_events::dead_letter::read_dead_letters;
use shared_events::{Event, KafkaConfig, Money, RegistryCodec, RegistryConfig, Topic, TopicNames};
use sqlx::Connection;
use tokio::sync::Mutex;

const RICH: i64 = 100_000_000;
const STOCK: i32 = 100_000;
const SCARCE_STOCK: i32 = 5;
/// How long PostgreSQL is away once, while orders flow.
const DATABASE_OUTAGE: Duration = Duration::from_secs(4);

fn setting(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

/// What kind of order the i-th one is: mostly completed, some declined, out of stock,
/// refused by shipping or cancelled by the customer.
fn order_of(i: usize, tag: &str) -> (serde_json::Value, bool) {
    let rich = format!("{tag}-rich");
    let (customer, product, country, cancel) = match i % 10 {
        7 => (format!("{tag}-poor"), format!("{tag}-p0"), "DE", false),
        8 => (rich, format!("{tag}-p1"), "AQ", false),
        9 => (rich, format!("{tag}-p1"), "DE", true),
        6 => (rich, format!("{tag}-scarce"), "DE", false),
        _ => (rich, format!("{tag}-p{}", i % 2), "DE", false),
    };
    (order_body(&customer, &[(&product, 1)], country), cancel)
}

/// Sends until some replica answers: a killed replica's requests fail, the client retries
/// with the same Idempotency-Key, as a real client would.
async fn place(urls: &[String], body: &Value) -> String {
    let http = orderflow_e2e::auth::operator_client()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let key = uuid::Uuid::new_v4().to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    for attempt in 0.. {
        let url = &urls[attempt % urls.len()];
        let sent = http
            .post(format!("{url}/orders"))
            .header("Idempotency-Key", &key)
            .json(body)
            .send()
            .await;
        if let Ok(response) = sent
            && response.status() == reqwest::StatusCode::ACCEPTED
        {
            let answer: Value = response.json().await.unwrap();
            return answer["order_id"].as_str().unwrap().to_owned();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "order never accepted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    unreachable!()
}

async fn cancel(urls: &[String], order_id: &str) {
    let http = orderflow_e2e::auth::operator_client()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    for attempt in 0..100 {
        let url = &urls[attempt % urls.len()];
        let sent = http
            .post(format!("{url}/orders/{order_id}/cancel"))
            .json(&serde_json::json!({"reason": "changed my mind"}))
            .send()
            .await;
        // 202 cancelling, 409 already shipped: either way the customer was answered.
        if let Ok(response) = sent
            && [202, 409].contains(&response.status().as_u16())
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("cancel of {order_id} never answered");
}

/// Into every topic: garbage bytes and an unknown schema id; into `orders` also a valid
/// OrderPlaced of an unknown order with a negative quantity. Returns how many per topic.
async fn inject_poison(prefix: &str) -> BTreeMap<Topic, usize> {
    let kafka = KafkaConfig::local(&orderflow_e2e::bootstrap_servers());
    let producer: FutureProducer = kafka.idempotent_producer().create().unwrap();
    let registry = RegistryConfig::at(
        orderflow_e2e::env_or("SCHEMA_REGISTRY_URL", "http://127.0.0.1:8081"),
        true,
    );
    let names = TopicNames::new(prefix.to_owned());
    let codec = RegistryCodec::connect(&registry, &names).await.unwrap();
    let impossible = Event::first_of_order(
        uuid::Uuid::now_v7(),
        "chaos-poison",
        OrderPlaced {
            customer_id: "nobody".into(),
            lines: vec![OrderLine {
                product_id: "anything".into(),
                quantity: -5,
                unit_price: Money::new(100, "EUR"),
            }],
            total: Money::new(-500, "EUR"),
            shipping_address: Address {
                recipient: "Nobody".into(),
                line1: "Nowhere 1".into(),
                line2: None,
                city: "Nowhere".into(),
                postal_code: "00000".into(),
                country: "DE".into(),
            },
            customer_note: None,
        },
    );
    let impossible = codec.encode(&impossible).await.unwrap();
    let mut counts = BTreeMap::new();
    for topic in Topic::ALL {
        let mut poison: Vec<&[u8]> = vec![
            b"not an event at all",
            &[0, 0x7f, 0xff, 0xff, 0xf0, 2, 4, 6],
        ];
        if topic == Topic::Orders {
            poison.push(&impossible);
        }
        for payload in &poison {
            let key = uuid::Uuid::new_v4().to_string();
            producer
                .send(
                    FutureRecord::to(&names.name(topic))
                        .key(&key)
                        .payload(*payload),
                    Duration::from_secs(30),
                )
                .await
                .unwrap();
        }
        counts.insert(topic, poison.len());
    }
    counts
}

fn consumers_of(topic: Topic) -> Vec<&'static str> {
    let consumes = [
        ("order-service", order_service::consumes()),
        ("billing-service", billing_service::consumes()),
        ("inventory-service", inventory_service::consumes()),
        ("shipping-service", shipping_service::consumes()),
    ];
    consumes
        .into_iter()
        .filter(|(_, topics)| topics.contains(&topic))
        .map(|(name, _)| name)
        .collect()
}

/// Records the services' consumer groups have not committed yet, over every topic each
/// consumes (a group that never committed a partition counts all of it). An error is the
/// broker not answering yet (after its restart, a metadata request can meet a leader epoch
/// it has not caught up with): the caller asks again.
fn unconsumed_records(prefix: &str) -> Result<i64, shared_events::Error> {
    let kafka = KafkaConfig::local(&orderflow_e2e::bootstrap_servers());
    let names = TopicNames::new(prefix.to_owned());
    let mut unconsumed = 0;
    for service in SERVICES {
        let topics: Vec<String> = Topic::ALL
            .into_iter()
            .filter(|topic| consumers_of(*topic).contains(&service))
            .map(|topic| names.name(topic))
            .collect();
        let group: BaseConsumer = kafka
            .reader()
            .set("group.id", format!("{prefix}{service}"))
            .create()
            .unwrap();
        unconsumed += read_progress(&group, &topics)?
            .iter()
            .map(|(_, progress)| progress.lag().max(0))
            .sum::<i64>();
    }
    Ok(unconsumed)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_invariant_holds_after_kill_9s_a_broker_restart_and_poison() {
    let orders = setting("CHAOS_ORDERS", 300);
    // The orders are spread over this long, and the chaos lasts as long.
    let duration = Duration::from_secs(setting("CHAOS_SECONDS", 60) as u64);
    let per_order = duration / orders as u32;
    // The schedule is the seed's: which process each SIGKILL hits, and when the broker is
    // restarted and the poison injected (both inside the load, so both must happen).
    let (seed, mut draw) = Draw::from_env("CHAOS_SEED");
    let seconds = duration.as_secs();
    let broker_at = Duration::from_secs(draw.between(seconds / 6, seconds * 3 / 4));
    let poison_at = Duration::from_secs(draw.between(seconds / 10, seconds * 3 / 4));
    let database_at = Duration::from_secs(draw.between(seconds / 6, seconds * 3 / 4));
    println!(
        "CHAOS_SEED={seed} (set it to replay this schedule): a SIGKILL every 2 s, the broker \
         restarted at {broker_at:?}, PostgreSQL down for {DATABASE_OUTAGE:?} at \
         {database_at:?}, poison injected at {poison_at:?}"
    );
    let stack = Stack::start("chaos", &[("SAGA_DEADLINE_SECS", "600".to_owned())]).await;
    let tag = format!("chaos{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
    for (product, stock) in [("p0", STOCK), ("p1", STOCK), ("scarce", SCARCE_STOCK)] {
        put_product(&stack, &format!("{tag}-{product}"), 100, stock).await;
    }
    put_account(&stack, &format!("{tag}-rich"), RICH).await;
    put_account(&stack, &format!("{tag}-poor"), 0).await;
    wait_for_catalog(
        &stack,
        &[
            &format!("{tag}-p0"),
            &format!("{tag}-p1"),
            &format!("{tag}-scarce"),
        ],
    )
    .await;
    let mut replicas = Vec::new();
    for name in SERVICES {
        replicas.push(stack.start_replica(name).await);
    }
    let order_urls = vec![
        stack.url("order-service").to_owned(),
        replicas[0].base_url.clone(),
    ];
    let stack = Arc::new(Mutex::new(stack));
    let replicas = Arc::new(Mutex::new(replicas));

    // The load: 16 clients, each retrying until accepted, the orders paced over the run.
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = tokio::time::Instant::now();
    let mut clients = Vec::new();
    for _ in 0..16 {
        let (next, urls, tag) = (next.clone(), order_urls.clone(), tag.clone());
        clients.push(tokio::spawn(async move {
            let mut placed = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= orders {
                    return placed;
                }
                tokio::time::sleep_until(start + per_order * i as u32).await;
                let (body, cancel_it) = order_of(i, &tag);
                let order_id = place(&urls, &body).await;
                if cancel_it {
                    cancel(&urls, &order_id).await;
                }
                placed.push(order_id);
            }
        }));
    }

    // The chaos, while the load runs.
    let load_done = Arc::new(AtomicBool::new(false));
    let chaos = {
        let (stack, replicas, load_done) = (stack.clone(), replicas.clone(), load_done.clone());
        let prefix = stack.lock().await.prefix.clone();
        tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            let (mut kills, mut broker_restarted, mut poisoned) =
                (Vec::new(), None, BTreeMap::new());
            let mut database_down = None;
            while !load_done.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_secs(2)).await;
                let pick = draw.below(8) as usize;
                let name = SERVICES[pick % 4];
                let (victim_label, mut stack, mut replicas) = (
                    format!("{name}#{}", pick / 4),
                    stack.lock().await,
                    replicas.lock().await,
                );
                let victim: &mut ServiceProcess = if pick < 4 {
                    stack.service(name)
                } else {
                    &mut replicas[pick % 4]
                };
                let killed = victim.pid();
                victim.kill().await;
                tokio::time::sleep(Duration::from_millis(500)).await;
                victim.start().await;
                // The fault happened: another process serves now (start waited for ready).
                assert_ne!(victim.pid(), killed, "{victim_label} was not replaced");
                kills.push(format!("{victim_label} at {:.0?}", start.elapsed()));
                drop((stack, replicas));
                if broker_restarted.is_none() && start.elapsed() >= broker_at {
                    let before = local_broker::pid().expect("the broker runs");
                    let began = start.elapsed();
                    local_broker::restart().await;
                    let after = local_broker::pid().expect("the restarted broker runs");
                    assert_ne!(before, after, "the broker was not restarted");
                    broker_restarted = Some(format!("at {began:.0?} (pid {before} -> {after})"));
                }
                if database_down.is_none() && start.elapsed() >= database_at {
                    // No SIGKILL meanwhile: a service started while the database is away
                    // cannot migrate, and that is not the fault under test.
                    let began = start.elapsed();
                    local_postgres::outage(DATABASE_OUTAGE).await;
                    database_down = Some(format!("at {began:.0?}"));
                }
                if poisoned.is_empty() && start.elapsed() >= poison_at {
                    poisoned = inject_poison(&prefix).await;
                }
            }
            (kills, broker_restarted, database_down, poisoned)
        })
    };
    let mut placed = Vec::new();
    for client in clients {
        placed.extend(client.await.unwrap());
    }
    load_done.store(true, Ordering::SeqCst);
    let (kills, broker_restarted, database_down, poison) = chaos.await.unwrap();
    let database_down = database_down.unwrap_or_else(|| {
        panic!("the schedule's database outage at {database_at:?} did not happen within the load")
    });
    // Every fault the schedule names happened while the load ran.
    let broker_restarted = broker_restarted.unwrap_or_else(|| {
        panic!("the schedule's broker restart at {broker_at:?} did not happen within the load")
    });
    assert!(
        !poison.is_empty(),
        "the schedule's poison at {poison_at:?} was not injected within the load"
    );
    println!(
        "load: {} orders accepted; chaos: {} SIGKILLs ({}), broker restarted {broker_restarted}, \
         PostgreSQL down for {DATABASE_OUTAGE:?} {database_down}, poison records per topic: {poison:?}",
        placed.len(),
        kills.len(),
        kills.join(", ")
    );

    // Settle: every order terminal, every outbox drained and every consumer group caught up
    // (an order is terminal before billing hears that it completed), within a generous bound.
    let mut stack = Arc::try_unwrap(stack)
        .ok()
        .expect("the chaos task has ended")
        .into_inner();
    let db = |name: &str| stack.services[name].database_url.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    loop {
        let in_flight = query_i64(
            &db("order-service"),
            "SELECT count(*) FROM orders_view WHERE status NOT IN ('COMPLETED', 'CANCELLED')",
        )
        .await;
        let mut outboxes = 0;
        for name in SERVICES {
            outboxes += query_i64(&db(name), "SELECT count(*) FROM outbox").await;
        }
        let prefix = stack.prefix.clone();
        let unconsumed = tokio::task::spawn_blocking(move || unconsumed_records(&prefix))
            .await
            .unwrap();
        if in_flight == 0 && outboxes == 0 && matches!(unconsumed, Ok(0)) {
            break;
        }
        let unconsumed = match unconsumed {
            Ok(records) => format!("{records} records not yet consumed"),
            Err(error) => format!("the groups' progress unreadable ({error})"),
        };
        assert!(
            tokio::time::Instant::now() < deadline,
            "not settled: {in_flight} orders in flight, {outboxes} outbox rows, {unconsumed}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    let mut report = Vec::new();
    let mut check = |name: &str, holds: bool, numbers: String| {
        report.push(format!(
            "{} {name}: {numbers}",
            if holds { "ok  " } else { "FAIL" }
        ));
        holds
    };
    let mut all = true;

    let statuses = rows(
        &db("order-service"),
        "SELECT status, count(*) FROM orders_view GROUP BY status",
    )
    .await;
    let total: i64 = statuses.iter().map(|(_, n)| n).sum();
    let distinct: BTreeSet<&String> = placed.iter().collect();
    all &= check(
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
    for (customer, initial) in [(format!("{tag}-rich"), RICH), (format!("{tag}-poor"), 0)] {
        let charged = initial - balances[&customer];
        let completed = completed_by_customer.get(&customer).copied().unwrap_or(0);
        all &= check(
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
    all &= check(
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
    for (product, initial) in [("p0", STOCK), ("p1", STOCK), ("scarce", SCARCE_STOCK)] {
        let product = format!("{tag}-{product}");
        let mut inventory = sqlx::PgConnection::connect(&db("inventory-service"))
            .await
            .unwrap();
        let (available, reserved): (i32, i32) =
            sqlx::query_as("SELECT available, reserved FROM products WHERE product_id = $1")
                .bind(&product)
                .fetch_one(&mut inventory)
                .await
                .unwrap();
        let units = completed_units.get(&product).copied().unwrap_or(0);
        all &= check(
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
    all &= check(
        "one shipment per completed order",
        shipped == completed,
        format!("{shipped} shipments, {completed} completed"),
    );

    let mut outboxes = Vec::new();
    for name in SERVICES {
        let left = query_i64(
            &db(name),
            "SELECT (SELECT count(*) FROM outbox) + (SELECT count(*) FROM outbox_dead_letters)",
        )
        .await;
        outboxes.push((name, left));
    }
    all &= check(
        "every outbox drained, nothing refused by the broker",
        outboxes.iter().all(|(_, left)| *left == 0),
        format!("{outboxes:?}"),
    );

    let kafka = KafkaConfig::local(&orderflow_e2e::bootstrap_servers());
    for topic in Topic::ALL {
        let dlq = format!("{}{}.dlq", stack.prefix, topic.base_name());
        let letters = read_dead_letters(&kafka, &dlq).unwrap();
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
        let expected = poison[&topic] * consumers_of(topic).len();
        all &= check(
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
    println!("{}", report.join("\n"));
    // The invariants are the verdict. How the processes take the final SIGTERM after a run
    // like this is reported, not judged: one exit in about ten runs has been a SIGSEGV
    // (an open defect, see the issue), and the SIGTERM tests judge clean exits.
    let mut unclean = Vec::new();
    for mut replica in Arc::try_unwrap(replicas).ok().unwrap().into_inner() {
        unclean.extend(replica.stop_and_report().await);
    }
    for service in stack.services.values_mut() {
        unclean.extend(service.stop_and_report().await);
    }
    if !unclean.is_empty() {
        println!("teardown (not judged): {}", unclean.join("; "));
    }
    stack.stop_all().await;
    assert!(all, "an invariant does not hold:\n{}", report.join("\n"));
}
