//! Chaos with invariants: two replicas of every service take a mix of orders while a random
//! service process is killed with SIGKILL every 2 s and restarted, the broker is killed and
//! restarted once, PostgreSQL is stopped for a few seconds once, and poison records (garbage
//! bytes, an unknown schema id; and in `orders` a valid OrderPlaced with a negative quantity)
//! are injected into every topic. Once the system settles, the checker
//! (`orderflow_e2e::invariants`) asserts every invariant, printing each with its numbers.
//!
//! Short form (CI, about 2 minutes: 300 orders over 60 s):
//! `cargo test -p orderflow-e2e --test chaos -- --nocapture`.
//! Full form: `CHAOS_ORDERS=2000 CHAOS_SECONDS=300 cargo test -p orderflow-e2e --test chaos -- --nocapture`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use orderflow_e2e::draw::Draw;
use orderflow_e2e::invariants::{check, settle};
use orderflow_e2e::workload::{Workload, inject_poison};
use orderflow_e2e::{SERVICES, ServiceProcess, Stack, bootstrap_servers};
use orderflow_e2e::{local_broker, local_postgres};
use shared_events::KafkaConfig;
use tokio::sync::Mutex;

/// How long PostgreSQL is away once, while orders flow.
const DATABASE_OUTAGE: Duration = Duration::from_secs(4);

fn setting(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_invariant_holds_after_kill_9s_a_broker_restart_and_poison() {
    let orders = setting("CHAOS_ORDERS", 300);
    // The orders are spread over this long, and the chaos lasts as long.
    let duration = Duration::from_secs(setting("CHAOS_SECONDS", 60) as u64);
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
    let kafka = KafkaConfig::local(&bootstrap_servers());
    let workload = Workload::prepare(&stack, "chaos").await;
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
    let load = workload.place(order_urls, orders, duration);

    // The chaos, while the load runs.
    let load_done = Arc::new(AtomicBool::new(false));
    let chaos = {
        let (stack, replicas, load_done) = (stack.clone(), replicas.clone(), load_done.clone());
        let kafka = kafka.clone();
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
                    poisoned = inject_poison(&kafka, &prefix).await;
                }
            }
            (kills, broker_restarted, database_down, poisoned)
        })
    };
    let placed = load.await.unwrap();
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

    let mut stack = Arc::try_unwrap(stack)
        .ok()
        .expect("the chaos task has ended")
        .into_inner();
    settle(&stack, &kafka, Duration::from_secs(600)).await;
    let verdict = check(&stack, &kafka, &workload, &placed, &poison).await;
    println!("{}", verdict.report());
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
    assert!(
        verdict.holds,
        "an invariant does not hold:\n{}",
        verdict.report()
    );
}
