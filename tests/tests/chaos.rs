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

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use orderflow_e2e::draw::Draw;
use orderflow_e2e::fault_proxy::{FaultProxy, degrade};
use orderflow_e2e::invariants::{Verdict, check, settle};
use orderflow_e2e::kafka_cluster::KafkaCluster;
use orderflow_e2e::local_postgres;
use orderflow_e2e::workload::{Workload, inject_poison};
use orderflow_e2e::{SERVICES, ServiceProcess, Stack, postgres_through};
use tokio::sync::Mutex;

/// How long PostgreSQL is away once, while orders flow.
const DATABASE_OUTAGE: Duration = Duration::from_secs(4);
/// How long a cluster's killed broker stays down, while orders flow.
const CLUSTER_BROKER_DOWN: Duration = Duration::from_secs(10);
/// The network faults: this much latency for this long, every connection reset, then every
/// connection half-open for this long.
const NETWORK_LATENCY: Duration = Duration::from_millis(200);
const NETWORK_FAULT: Duration = Duration::from_secs(6);

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
            std::fs::write(&path, report(&done, rounds, orders, duration)).unwrap();
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

/// The long run's report (`docs/chaos.md`): the setting, a line per round, and each
/// round's invariants with their numbers.
fn report(done: &[Round], rounds: usize, orders: usize, duration: Duration) -> String {
    let passed = done.iter().filter(|round| round.passed()).count();
    let accepted: usize = done.iter().map(|round| round.accepted).sum();
    let kills: usize = done.iter().map(|round| round.kills).sum();
    let broken: usize = done
        .iter()
        .map(|round| {
            round
                .verdict
                .lines
                .iter()
                .filter(|l| l.starts_with("FAIL"))
                .count()
        })
        .sum();
    let mut out = format!(
        "# Chaos: the long run\n\n\
         Written by `scripts/chaos` (rounds {}/{rounds} done, {orders} orders per round over \
         {duration:?}, {} binaries) on {}, on this machine: {}.\n\n\
         Every round starts a stack of its own (two replicas of each of the four services) on \
         Kafka brokers of its own, one or a cluster of three (replication factor 3, \
         min.insync.replicas 2), which the services reach, as PostgreSQL, only through fault \
         proxies. It places a paced mix of orders (completed, declined, out of stock, refused by \
         shipping, cancelled by the customer) and runs the fault schedule its seed draws: a \
         SIGKILL to one of the eight service processes 2 s after the last one serves again (each \
         restarted); once, a \
         broker SIGKILLed (of three: one, drawn, restarted {CLUSTER_BROKER_DOWN:?} later while \
         the others lead its partitions; of one: restarted at once); once, PostgreSQL stopped for \
         {DATABASE_OUTAGE:?}; once, the network faults (+{NETWORK_LATENCY:?} on every link for \
         {NETWORK_FAULT:?}, every connection reset, every connection half-open for \
         {NETWORK_FAULT:?}); once, poison records into every topic. Then it waits until everything settles and checks every invariant \
         (`tests/src/invariants.rs`), and SIGTERMs every process, each of which must exit 0. \
         `CHAOS_SEED=<seed> scripts/chaos --rounds 1 --orders {orders} --seconds {} --brokers <brokers>` \
         replays a round's schedule.\n\n\
         **{passed} of {} rounds passed: {accepted} orders accepted, {kills} SIGKILLs, \
         {} broker faults, {} database outages and {} network fault runs, {broken} invariants \
         broken.**\n\n\
         | round | seed | brokers | orders accepted | load took | SIGKILLs | broker fault | PostgreSQL down | network faults | poison records | settled after | invariants | teardown |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        done.len(),
        orderflow_e2e::env_or("TEST_PROFILE", "debug"),
        chrono::Utc::now().format("%Y-%m-%d"),
        machine(),
        duration.as_secs(),
        done.len(),
        done.len(),
        done.len(),
        done.len(),
    );
    for (number, round) in done.iter().enumerate() {
        let held = round
            .verdict
            .lines
            .iter()
            .filter(|l| l.starts_with("ok"))
            .count();
        out.push_str(&format!(
            "| {} | {} | {} | {} | {:.0?} | {} | {} | {} | {} | {} | {:.0?} | {held}/{} hold | {} |\n",
            number + 1,
            round.seed,
            round.brokers,
            round.accepted,
            round.load_took,
            round.kills,
            round.broker_restarted,
            round.database_down,
            round.network,
            round.poison,
            round.settled_after,
            round.verdict.lines.len(),
            if round.unclean.is_empty() {
                "8 of 8 exit 0".to_owned()
            } else {
                round.unclean.join("; ").replace('\n', " ")
            }
        ));
    }
    for (number, round) in done.iter().enumerate() {
        out.push_str(&format!(
            "\n## Round {} (CHAOS_SEED={})\n\n```\n{}\n```\n",
            number + 1,
            round.seed,
            round.verdict.report()
        ));
    }
    out
}

/// Cores and memory, as the benchmark's report names them.
fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("MemTotal:"))
                .and_then(|line| line.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib / 1024 / 1024);
    format!("{cores} cores, {memory_gib} GiB")
}

/// The broker fault, checked (a new process serves): the only broker SIGKILLed and
/// restarted at once, or one of three, drawn, SIGKILLed and restarted after
/// [`CLUSTER_BROKER_DOWN`] while the other two lead its partitions.
async fn broker_fault(cluster: &mut KafkaCluster, draw: &mut Draw) -> String {
    let victim = draw.below(cluster.size() as u64) as usize;
    let before = cluster.kill(victim).await;
    if cluster.size() > 1 {
        tokio::time::sleep(CLUSTER_BROKER_DOWN).await;
    }
    let after = cluster.restart(victim).await;
    assert_ne!(before, after, "broker {} was not restarted", victim + 1);
    match cluster.size() {
        1 => format!("broker SIGKILLed and restarted (pid {before} -> {after})"),
        size => format!(
            "broker {} of {size} SIGKILLed, back after {CLUSTER_BROKER_DOWN:?} (pid {before} -> {after})",
            victim + 1
        ),
    }
}

/// One round: a stack of its own, `orders` orders paced over `duration`, the fault schedule
/// `seed` draws, then the settle and the checker.
async fn round(seed: u64, orders: usize, duration: Duration, brokers: usize) -> Round {
    // The schedule is the seed's: which process each SIGKILL hits, and when the broker is
    // restarted, the database stopped and the poison injected (all inside the load, so all
    // must happen).
    let mut draw = Draw::new(seed);
    let seconds = duration.as_secs();
    let broker_at = Duration::from_secs(draw.between(seconds / 6, seconds * 3 / 4));
    let poison_at = Duration::from_secs(draw.between(seconds / 10, seconds * 3 / 4));
    let database_at = Duration::from_secs(draw.between(seconds / 6, seconds * 3 / 4));
    let network_at = Duration::from_secs(draw.between(seconds / 6, seconds * 3 / 4));
    println!(
        "CHAOS_SEED={seed} (set it to replay this round): a SIGKILL 2 s after the last victim \
         serves again; from {broker_at:?} on the broker fault, from {database_at:?} PostgreSQL \
         down for {DATABASE_OUTAGE:?}, from {network_at:?} the network faults, from \
         {poison_at:?} poison (each at the first SIGKILL after)"
    );
    // The services reach the brokers and PostgreSQL through fault proxies; the test does not.
    let mut cluster = KafkaCluster::start("chaos", brokers).await;
    let kafka = cluster.kafka_config();
    let database = postgres_through().await;
    let stack = Stack::start_behind_proxies(
        "chaos",
        &cluster,
        &database,
        &[("SAGA_DEADLINE_SECS", "600".to_owned())],
    )
    .await;
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
    let began = tokio::time::Instant::now();

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
            let (mut database_down, mut network) = (None, None);
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
                    let began = start.elapsed();
                    let fault = broker_fault(&mut cluster, &mut draw).await;
                    broker_restarted = Some(format!("{fault} at {began:.0?}"));
                }
                if database_down.is_none() && start.elapsed() >= database_at {
                    // No SIGKILL meanwhile: a service started while the database is away
                    // cannot migrate, and that is not the fault under test.
                    let began = start.elapsed();
                    local_postgres::outage(DATABASE_OUTAGE).await;
                    database_down = Some(format!("at {began:.0?}"));
                }
                if network.is_none() && start.elapsed() >= network_at {
                    let began = start.elapsed();
                    let proxies: Vec<&FaultProxy> =
                        cluster.proxies().iter().chain([&database.proxy]).collect();
                    let faults = degrade(&proxies, NETWORK_LATENCY, NETWORK_FAULT).await;
                    network = Some(format!("{faults} at {began:.0?}"));
                }
                if poisoned.is_empty() && start.elapsed() >= poison_at {
                    poisoned = inject_poison(&kafka, &prefix).await;
                }
            }
            (
                kills,
                broker_restarted,
                database_down,
                network,
                poisoned,
                cluster,
                database,
            )
        })
    };
    let placed = load.await.unwrap();
    let load_took = began.elapsed();
    load_done.store(true, Ordering::SeqCst);
    let (kills, broker_restarted, database_down, network, poison, cluster, database) =
        chaos.await.unwrap();
    let network = network.unwrap_or_else(|| {
        panic!("the schedule's network faults at {network_at:?} did not happen within the load")
    });
    let database_down = database_down.unwrap_or_else(|| {
        panic!("the schedule's database outage at {database_at:?} did not happen within the load")
    });
    // Every fault the schedule names happened while the load ran.
    let broker_restarted = broker_restarted.unwrap_or_else(|| {
        panic!("the schedule's broker fault at {broker_at:?} did not happen within the load")
    });
    assert!(
        !poison.is_empty(),
        "the schedule's poison at {poison_at:?} was not injected within the load"
    );
    println!(
        "load: {} orders accepted; chaos: {} SIGKILLs ({}), {broker_restarted}, \
         PostgreSQL down for {DATABASE_OUTAGE:?} {database_down}, network: {network}, \
         poison records per topic: {poison:?}",
        placed.len(),
        kills.len(),
        kills.join(", ")
    );

    let mut stack = Arc::try_unwrap(stack)
        .ok()
        .expect("the chaos task has ended")
        .into_inner();
    let settling = tokio::time::Instant::now();
    settle(&stack, &kafka, Duration::from_secs(600)).await;
    let settled_after = settling.elapsed();
    let verdict = check(&stack, &kafka, &workload, &placed, &poison).await;
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
        network,
        accepted: placed.len(),
        load_took,
        kills: kills.len(),
        broker_restarted,
        database_down,
        poison: poison.values().sum(),
        settled_after,
        verdict,
        unclean,
    }
}
