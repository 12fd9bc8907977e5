//! Chaos with invariants: two replicas of every service take a mix of orders on Kafka
//! brokers of the test's own (one, or a cluster of three), which the services reach, as
//! PostgreSQL, only through fault proxies, while a random service process is killed with
//! SIGKILL and restarted, the next 2 s after it serves again; once, a broker is SIGKILLed and restarted; once,
//! PostgreSQL is stopped for a few seconds; once, the network fails (latency, every
//! connection reset, every connection half-open); and poison records (garbage bytes, an
//! unknown schema id; and in `orders` a valid OrderPlaced with a negative quantity) are
//! injected into every topic. Once the system settles, the checker
//! (`orderflow_e2e::invariants`) asserts every invariant, printing each with its numbers, and
//! every process must exit 0 on SIGTERM.
//!
//! Short form (CI, about 2 minutes: one round of 300 orders over 60 s):
//! `cargo test -p orderflow-e2e --test chaos -- --nocapture`. The long run is `scripts/chaos`
//! (`CHAOS_ROUNDS`, `CHAOS_ORDERS`, `CHAOS_SECONDS`, `CHAOS_REPORT`; each round on a stack of
//! its own); `CHAOS_SEED` replays a run.

//!
//! The pieces, one at a time: the load is `orderflow_e2e::workload`, the fault schedule
//! `schedule.rs`, the invariant checker `orderflow_e2e::invariants`, the long run's report
//! `report.rs`; `round` below puts them together.

mod report;
mod schedule;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use orderflow_e2e::draw::Draw;
use orderflow_e2e::invariants::{Verdict, check, settle};
use orderflow_e2e::kafka_cluster::KafkaCluster;
use orderflow_e2e::workload::Workload;
use orderflow_e2e::{SERVICES, Stack, postgres_through};
use schedule::{DATABASE_OUTAGE, Schedule, Targets};
use tokio::sync::Mutex;

fn setting(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

/// What one round did and found.
struct Round {
    seed: u64,
    brokers: usize,
    network: String,
    accepted: usize,
    load_took: Duration,
    kills: usize,
    broker_restarted: String,
    database_down: String,
    poison: usize,
    settled_after: Duration,
    verdict: Verdict,
    unclean: Vec<String>,
}

impl Round {
    fn passed(&self) -> bool {
        self.verdict.holds && self.unclean.is_empty()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_invariant_holds_after_kill_9s_a_broker_restart_and_poison() {
    let rounds = setting("CHAOS_ROUNDS", 1);
    let orders = setting("CHAOS_ORDERS", 300);
    // The orders are spread over this long, and the chaos lasts as long.
    let duration = Duration::from_secs(setting("CHAOS_SECONDS", 60) as u64);
    // The first round's seed is the run's; the others are drawn from it, and each is printed.
    let (seed, mut seeds) = Draw::from_env("CHAOS_SEED");
    // Brokers per round, cycled: "1", "3" (a cluster), or "1,3".
    let brokers: Vec<usize> = std::env::var("CHAOS_BROKERS")
        .unwrap_or_else(|_| "1".to_owned())
        .split(',')
        .map(|n| n.trim().parse().expect("CHAOS_BROKERS: counts like 1,3"))
        .collect();
    let mut done = Vec::new();
    for number in 1..=rounds {
        let round_seed = if number == 1 { seed } else { seeds.seed() };
        let brokers = brokers[(number - 1) % brokers.len()];
        println!("== round {number} of {rounds}, {brokers} broker(s)");
        done.push(round(round_seed, orders, duration, brokers).await);
        if let Ok(path) = std::env::var("CHAOS_REPORT") {
            // After every round, so that a run cut short still reports what it did.
            std::fs::write(&path, report::report(&done, rounds, orders, duration)).unwrap();
        }
    }
    let failed: Vec<String> = done
        .iter()
        .filter(|round| !round.passed())
        .map(|round| {
            format!(
                "CHAOS_SEED={}:\n{}\n{}",
                round.seed,
                round.verdict.report(),
                round.unclean.join("\n")
            )
        })
        .collect();
    assert!(failed.is_empty(), "rounds failed:\n{}", failed.join("\n\n"));
}

/// One round: a stack of its own, `orders` orders paced over `duration`, the fault schedule
/// `seed` draws, then the settle and the checker.
async fn round(seed: u64, orders: usize, duration: Duration, brokers: usize) -> Round {
    // The schedule is the seed's: which process each SIGKILL hits, and when the broker is
    // restarted, the database stopped and the poison injected (all inside the load, so all
    // must happen).
    let schedule = Schedule::draw(seed, duration);
    println!(
        "CHAOS_SEED={seed} (set it to replay this round): {}",
        schedule.describe()
    );
    // The services reach the brokers and PostgreSQL through fault proxies; the test does not.
    let cluster = KafkaCluster::start("chaos", brokers).await;
    let kafka = cluster.kafka_config();
    let database = postgres_through().await;
    // The default saga deadline (15 min): no fault of the round is a reason to cancel.
    let stack = Stack::start_behind_proxies("chaos", &cluster, &database, &[]).await;
    let workload = Workload::prepare(&stack, "chaos").await;
    let mut replicas = Vec::new();
    for name in SERVICES {
        replicas.push(stack.start_replica(name).await);
    }
    let order_urls = vec![
        stack.url("order-service").to_owned(),
        replicas[0].base_url.clone(),
    ];
    let targets = Targets {
        prefix: stack.prefix.clone(),
        stack: Arc::new(Mutex::new(stack)),
        replicas: Arc::new(Mutex::new(replicas)),
        cluster,
        database,
        kafka: kafka.clone(),
    };

    // The load (16 clients, each retrying until accepted, the orders paced over the run)
    // and, while it runs, the chaos.
    let load = workload.place(order_urls, orders, duration);
    let began = tokio::time::Instant::now();
    let load_done = Arc::new(AtomicBool::new(false));
    let chaos = tokio::spawn(schedule.run(targets, load_done.clone()));
    let placed = load.await.unwrap();
    let load_took = began.elapsed();
    load_done.store(true, Ordering::SeqCst);
    let (faults, targets) = chaos.await.unwrap();
    println!(
        "load: {} orders accepted; chaos: {} SIGKILLs ({}), {}, PostgreSQL down for \
         {DATABASE_OUTAGE:?} {}, network: {}, poison records per topic: {:?}",
        placed.len(),
        faults.kills.len(),
        faults.kills.join(", "),
        faults.broker,
        faults.database_down,
        faults.network,
        faults.poison,
    );

    let Targets {
        stack,
        replicas,
        cluster,
        database,
        ..
    } = targets;
    let mut stack = Arc::try_unwrap(stack)
        .ok()
        .expect("the chaos task has ended")
        .into_inner();
    let settling = tokio::time::Instant::now();
    settle(&stack, &kafka, Duration::from_secs(600)).await;
    let settled_after = settling.elapsed();
    let verdict = check(&stack, &kafka, &workload, &placed, &faults.poison).await;
    println!("{}", verdict.report());
    // Teardown is judged too: every process must exit 0 on SIGTERM after a run like this
    // (a crash's report carries every thread's backtrace from its core).
    let mut unclean = Vec::new();
    for mut replica in Arc::try_unwrap(replicas).ok().unwrap().into_inner() {
        unclean.extend(replica.stop_and_report().await);
    }
    for service in stack.services.values_mut() {
        unclean.extend(service.stop_and_report().await);
    }
    println!(
        "teardown: {}",
        if unclean.is_empty() {
            "every process exited 0 on SIGTERM".to_owned()
        } else {
            unclean.join("; ")
        }
    );
    stack.stop_all().await;
    drop((cluster, database));
    Round {
        seed,
        brokers,
        network: faults.network,
        accepted: placed.len(),
        load_took,
        kills: faults.kills.len(),
        broker_restarted: faults.broker,
        database_down: faults.database_down,
        poison: faults.poison.values().sum(),
        settled_after,
        verdict,
        unclean,
    }
}
