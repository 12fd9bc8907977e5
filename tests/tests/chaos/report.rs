//! The long run's report (`docs/chaos.md`), one function per part: the setting, the
//! summary, a line per round, and each round's invariants with their numbers.

use std::time::Duration;

use crate::Round;
use crate::schedule::{CLUSTER_BROKER_DOWN, DATABASE_OUTAGE, NETWORK_FAULT, NETWORK_LATENCY};

/// The report of the rounds `done` of a run of `rounds`.
pub fn report(done: &[Round], rounds: usize, orders: usize, duration: Duration) -> String {
    let mut out = setting(done.len(), rounds, orders, duration);
    out.push_str(&summary(done));
    out.push_str(&round_table(done));
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

/// What every round does, and how to replay one.
fn setting(done: usize, rounds: usize, orders: usize, duration: Duration) -> String {
    format!(
        "# Chaos: the long run\n\n\
         Written by `scripts/chaos` (rounds {done}/{rounds} done, {orders} orders per round over \
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
         replays a round's schedule.\n\n",
        orderflow_e2e::env_or("TEST_PROFILE", "debug"),
        chrono::Utc::now().format("%Y-%m-%d"),
        machine(),
        duration.as_secs(),
    )
}

/// The run in one line: rounds passed, orders, faults, invariants broken.
fn summary(done: &[Round]) -> String {
    let passed = done.iter().filter(|round| round.passed()).count();
    let accepted: usize = done.iter().map(|round| round.accepted).sum();
    let kills: usize = done.iter().map(|round| round.kills).sum();
    let broken: usize = done
        .iter()
        .flat_map(|round| &round.verdict.lines)
        .filter(|line| line.starts_with("FAIL"))
        .count();
    let rounds = done.len();
    format!(
        "**{passed} of {rounds} rounds passed: {accepted} orders accepted, {kills} SIGKILLs, \
         {rounds} broker faults, {rounds} database outages and {rounds} network fault runs, \
         {broken} invariants broken.**\n\n"
    )
}

/// A line per round: its seed, load, faults, settle and verdict.
fn round_table(done: &[Round]) -> String {
    let mut out = "| round | seed | brokers | orders accepted | load took | SIGKILLs | broker fault | PostgreSQL down | network faults | poison records | settled after | invariants | teardown |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
        .to_owned();
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
