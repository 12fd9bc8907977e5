//! An outage of our own broker or database is not a business decision. Under an open loop of
//! orders, the local broker is SIGKILLed and kept down, then PostgreSQL is stopped, each for
//! longer than the 30 s the saga deadline used to be; with the default deadline (a business
//! figure, 15 min) no order is cancelled by it, every invariant holds (money and stock
//! exact), and every order that was meant to complete completes.
//!
//! `OUTAGE_SECS` (40) sets each outage, `OUTAGE_RATE` (40 orders/s) the load; the figures
//! docs/operations.md quotes come from `scripts/outage-drill`, which runs the same outages against
//! the demo. A test binary of its own: stopping the broker and the database must meet no
//! other test.

use std::collections::BTreeMap;
use std::time::Duration;

use orderflow_e2e::invariants::{check, settle};
use orderflow_e2e::workload::Workload;
use orderflow_e2e::{Stack, local_broker, local_postgres};
use shared_events::KafkaConfig;
use sqlx::Connection;

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test]
async fn a_broker_or_database_outage_cancels_no_order() {
    let outage = Duration::from_secs(env_or("OUTAGE_SECS", 40));
    let rate: u64 = env_or("OUTAGE_RATE", 40);
    // Orders before, between and after the two outages.
    let lead = Duration::from_secs(10);
    let load_for = lead * 3 + outage * 2;
    let orders = (rate * load_for.as_secs()) as usize;

    // No SAGA_DEADLINE_SECS: the default is what is on trial.
    let stack = Stack::start("outage", &[]).await;
    let kafka = KafkaConfig::local(&orderflow_e2e::bootstrap_servers());
    let workload = Workload::prepare(&stack, "outage").await;
    let load = workload.place(
        vec![stack.url("order-service").to_owned()],
        orders,
        load_for,
    );
    tokio::time::sleep(lead).await;
    println!("broker SIGKILLed, down for {outage:?}");
    local_broker::outage(outage).await;
    tokio::time::sleep(lead).await;
    println!("PostgreSQL stopped for {outage:?}");
    local_postgres::outage(outage).await;
    let placed = load.await.unwrap();
    println!("{} orders accepted over {load_for:?}", placed.len());

    settle(&stack, &kafka, Duration::from_secs(600)).await;
    let verdict = check(&stack, &kafka, &workload, &placed, &BTreeMap::new()).await;
    println!("{}", verdict.report());
    assert!(verdict.holds, "an invariant broke:\n{}", verdict.report());

    let mut orders_db = sqlx::PgConnection::connect(&stack.services["order-service"].database_url)
        .await
        .unwrap();
    let by_deadline: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM orders_view WHERE outcome_reason LIKE '%saga deadline%'",
    )
    .fetch_one(&mut orders_db)
    .await
    .unwrap();
    assert_eq!(by_deadline, 0, "orders cancelled by the saga deadline");
    let meant_to_complete: Vec<uuid::Uuid> = placed
        .iter()
        .enumerate()
        .filter(|(i, _)| Workload::meant_to_complete(*i))
        .map(|(_, order_id)| order_id.parse().unwrap())
        .collect();
    let not_completed: Vec<(uuid::Uuid, String, Option<String>)> = sqlx::query_as(
        "SELECT order_id, status, outcome_reason FROM orders_view
         WHERE order_id = ANY($1) AND status <> 'COMPLETED'",
    )
    .bind(&meant_to_complete)
    .fetch_all(&mut orders_db)
    .await
    .unwrap();
    assert!(
        not_completed.is_empty(),
        "of {} orders meant to complete, these did not: {not_completed:?}",
        meant_to_complete.len()
    );
}
