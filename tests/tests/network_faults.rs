//! Network faults between the services and what they depend on: every service reaches the
//! broker (one of the test's own, `KafkaCluster`) and PostgreSQL only through a
//! fault-injecting proxy. While a mix of orders flows, the links get slow (latency on every
//! chunk), then every connection is reset at once mid-batch, then every connection goes
//! half-open (it takes what is sent and never answers, and stays so after the fault ends, as
//! a half-open connection does). Then the faults end: the system must settle on its own,
//! nothing stuck, with every invariant exact (`orderflow_e2e::invariants`).
//!
//! A second test sends SIGTERM while the database connections are half-open: every service
//! must still exit 0 within its budget.
//!
//! `cargo test -p orderflow-e2e --test network_faults -- --nocapture` (about 2 minutes).

use std::collections::BTreeMap;
use std::time::Duration;

use orderflow_e2e::fault_proxy::{FaultProxy, degrade};
use orderflow_e2e::invariants::{check, settle};
use orderflow_e2e::kafka_cluster::KafkaCluster;
use orderflow_e2e::workload::Workload;
use orderflow_e2e::{Stack, postgres_through};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_invariant_holds_after_latency_resets_and_half_open_connections() {
    let broker = KafkaCluster::start("network-faults", 1).await;
    let database = postgres_through().await;
    let mut stack = Stack::start_behind_proxies(
        "net",
        &broker,
        &database,
        &[("SAGA_DEADLINE_SECS", "600".to_owned())],
    )
    .await;
    let workload = Workload::prepare(&stack, "net").await;
    let (orders, duration) = (240, Duration::from_secs(60));
    let load = workload.place(
        vec![stack.url("order-service").to_owned()],
        orders,
        duration,
    );

    let start = tokio::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let proxies: Vec<&FaultProxy> = broker.proxies().iter().chain([&database.proxy]).collect();
    let faults = degrade(
        &proxies,
        Duration::from_millis(250),
        Duration::from_secs(10),
    )
    .await;
    println!(
        "faults from 8 s: {faults}; healed at {:.0?}",
        start.elapsed()
    );

    let placed = load.await.unwrap();
    println!(
        "load: {} orders accepted in {:.0?}",
        placed.len(),
        start.elapsed()
    );
    let kafka = broker.kafka_config();
    let settling = tokio::time::Instant::now();
    settle(&stack, &kafka, Duration::from_secs(300)).await;
    println!("settled {:.0?} after the load", settling.elapsed());
    let verdict = check(&stack, &kafka, &workload, &placed, &BTreeMap::new()).await;
    println!("{}", verdict.report());
    let mut unclean = Vec::new();
    for service in stack.services.values_mut() {
        unclean.extend(service.stop_and_report().await);
    }
    stack.stop_all().await;
    assert!(
        verdict.holds,
        "an invariant does not hold:\n{}",
        verdict.report()
    );
    assert!(unclean.is_empty(), "unclean exits: {}", unclean.join("; "));
}

/// How long after SIGTERM a service exits at the latest (service-runtime's exit budget),
/// with a second for the test's own timing.
const EXIT_BUDGET: Duration = Duration::from_secs(16);

/// A service asked to stop while its database connections are half-open exits 0 within
/// its budget: the work stuck on a connection that never answers is dropped after its
/// grace (`shared_events::stopping`), not waited for until its 30 s bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sigterm_while_database_connections_are_half_open_exits_within_the_budget() {
    let broker = KafkaCluster::start("half-open-sigterm", 1).await;
    let database = postgres_through().await;
    let mut stack = Stack::start_behind_proxies("hos", &broker, &database, &[]).await;
    let workload = Workload::prepare(&stack, "hos").await;
    // A few orders, so that every service's pool holds connections to silence.
    let urls = vec![stack.url("order-service").to_owned()];
    let placed = workload
        .place(urls, 20, Duration::from_secs(4))
        .await
        .unwrap();
    assert!(!placed.is_empty(), "no order was accepted");
    let silenced = database.proxy.go_silent();
    assert!(silenced > 0, "no database connection to silence");
    // The services' next database calls (the relay's every second) hang on them.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let exits = futures::future::join_all(stack.services.values_mut().map(|service| async {
        let signalled = tokio::time::Instant::now();
        let outcome = service.stop_and_report().await;
        (service.name, outcome, signalled.elapsed())
    }))
    .await;
    database.proxy.heal();
    stack.stop_all().await;
    let mut late_or_unclean = Vec::new();
    for (name, outcome, took) in exits {
        println!(
            "{name}: {} after {took:.1?}",
            outcome.as_deref().unwrap_or("exit 0")
        );
        if let Some(outcome) = outcome {
            late_or_unclean.push(outcome);
        } else if took > EXIT_BUDGET {
            late_or_unclean.push(format!("{name} exited {took:.1?} after SIGTERM"));
        }
    }
    assert!(late_or_unclean.is_empty(), "{}", late_or_unclean.join("\n"));
}
