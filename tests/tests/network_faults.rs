//! Network faults between the services and what they depend on: every service reaches the
//! broker (a broker of the test's own, see `ProxiedBroker`) and PostgreSQL only through a
//! fault-injecting proxy. While a mix of orders flows, the links get slow (latency on every
//! chunk), then every connection is reset at once mid-batch, then every connection goes
//! half-open (it takes what is sent and never answers, and stays so after the fault ends, as
//! a half-open connection does). Then the faults end: the system must settle on its own,
//! nothing stuck, with every invariant exact (`orderflow_e2e::invariants`).
//!
//! `cargo test -p orderflow-e2e --test network_faults -- --nocapture` (about 2 minutes).

use std::collections::BTreeMap;
use std::time::Duration;

use orderflow_e2e::fault_proxy::FaultProxy;
use orderflow_e2e::invariants::{check, settle};
use orderflow_e2e::proxied_broker::ProxiedBroker;
use orderflow_e2e::workload::Workload;
use orderflow_e2e::{Stack, postgres_url};
use shared_events::settings::database_url;

/// How long each fault lasts.
const FAULT: Duration = Duration::from_secs(10);
/// What the slow link adds to every chunk, either way.
const LATENCY: Duration = Duration::from_millis(250);

/// The `host:port` of a PostgreSQL URL.
fn server_address(url: &str) -> &str {
    let after_user = url.rsplit_once('@').map_or(url, |(_, rest)| rest);
    after_user
        .split(['/', '?'])
        .next()
        .expect("a PostgreSQL URL names its server")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_invariant_holds_after_latency_resets_and_half_open_connections() {
    let broker = ProxiedBroker::start("network-faults").await;
    let postgres = postgres_url();
    let database = FaultProxy::start(server_address(&postgres)).await;
    let postgres_via_proxy = postgres.replacen(server_address(&postgres), &database.address, 1);
    let prefix = Stack::new_prefix("net");
    let mut stack = Stack::start_with(
        prefix.clone(),
        &broker.kafka_config(),
        &[("SAGA_DEADLINE_SECS", "600".to_owned())],
        |name| {
            vec![
                ("KAFKA_BOOTSTRAP_SERVERS", broker.proxy.address.clone()),
                (
                    "DATABASE_URL",
                    database_url(&postgres_via_proxy, &Stack::database_name(&prefix, name)),
                ),
            ]
        },
    )
    .await;
    let workload = Workload::prepare(&stack, "net").await;
    let (orders, duration) = (240, Duration::from_secs(60));
    let load = workload.place(
        vec![stack.url("order-service").to_owned()],
        orders,
        duration,
    );

    let proxies = [("broker", &broker.proxy), ("database", &database)];
    let start = tokio::time::Instant::now();
    let mut faults = Vec::new();
    tokio::time::sleep(Duration::from_secs(8)).await;
    for (_, proxy) in proxies {
        proxy.add_latency(LATENCY);
    }
    tokio::time::sleep(FAULT).await;
    for (name, proxy) in proxies {
        proxy.heal();
        let reset = proxy.reset_all();
        assert!(reset > 0, "no {name} connection was open to reset");
        faults.push(format!(
            "{name}: {reset} connections reset at {:.0?}",
            start.elapsed()
        ));
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    for (name, proxy) in proxies {
        let silenced = proxy.go_silent();
        assert!(silenced > 0, "no {name} connection was open to silence");
        faults.push(format!(
            "{name}: {silenced} connections half-open from {:.0?}",
            start.elapsed()
        ));
    }
    tokio::time::sleep(FAULT).await;
    for (_, proxy) in proxies {
        proxy.heal();
    }
    println!(
        "faults: {LATENCY:?} latency for {FAULT:?} from 8 s; {}; healed at {:.0?}",
        faults.join("; "),
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
