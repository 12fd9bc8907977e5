//! What a user gets: the configuration `scripts/demo` runs (the debug build, topics of the
//! partitions `orderflow-admin provision-topics` gives them), measured as the README's
//! figures are: the processes' CPU with no orders flowing, a closed loop and an open loop.
//! Beside it, the tuned build's open loops on as many partitions.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::saga::{LoadRun, Saga};
use crate::scratch::Scratch;

/// The demo's configuration, measured.
#[derive(Debug, Clone, Serialize)]
pub struct DemoFigures {
    pub profile: String,
    pub partitions: i32,
    pub idle_seconds: f64,
    /// Cores each process group used with the services running and no orders flowing.
    pub idle_cores: BTreeMap<String, f64>,
    pub closed_concurrency: usize,
    pub closed: LoadRun,
    pub open: (f64, LoadRun),
}

/// The tuned build's open loops on the demo's partitions.
#[derive(Debug, Clone, Serialize)]
pub struct Partitioned {
    pub profile: String,
    pub partitions: i32,
    pub open: Vec<(f64, LoadRun)>,
}

/// What the demo section runs.
pub struct DemoLoad {
    pub partitions: i32,
    pub idle_seconds: f64,
    pub closed_orders: usize,
    pub closed_concurrency: usize,
    pub rate: f64,
    pub seconds: f64,
}

/// Starts the services of `profile` (their binaries in `bin`) on the demo's partitions and
/// measures them idle, then under a closed and an open loop.
pub async fn run(
    scratch: &mut Scratch,
    bin: &Path,
    profile: &str,
    load: &DemoLoad,
) -> anyhow::Result<DemoFigures> {
    eprintln!(
        "==> the demo's configuration: the {profile} build, {} partitions per topic",
        load.partitions
    );
    let (saga, _) = Saga::start(scratch, "demo", bin, load.partitions).await?;
    // Joining the consumer groups and the first reads are start-up, not idling.
    tokio::time::sleep(std::time::Duration::from_secs_f64(load.idle_seconds / 2.0)).await;
    eprintln!("==> idle: {} s with no orders flowing", load.idle_seconds);
    let idle_cores = saga.idle(load.idle_seconds).await;
    eprintln!(
        "    broker {:.1}% of a core",
        idle_cores.get("kafka").copied().unwrap_or(0.0) * 100.0
    );
    let closed = saga
        .closed(load.closed_orders, load.closed_concurrency)
        .await?;
    let open = saga.open(load.rate, load.seconds).await?;
    saga.stop().await?;
    Ok(DemoFigures {
        profile: profile.to_owned(),
        partitions: load.partitions,
        idle_seconds: load.idle_seconds,
        idle_cores,
        closed_concurrency: load.closed_concurrency,
        closed,
        open: (load.rate, open),
    })
}

/// The tuned build (`bin`) on `partitions` per topic, at each of `rates` for `seconds`.
pub async fn partitioned(
    scratch: &mut Scratch,
    bin: &Path,
    profile: &str,
    partitions: i32,
    rates: &[f64],
    seconds: f64,
) -> anyhow::Result<Partitioned> {
    eprintln!("==> the saga on {partitions} partitions per topic");
    let (saga, _) = Saga::start(scratch, "partitioned", bin, partitions).await?;
    let open = saga.open_loops(rates, seconds).await?;
    saga.stop().await?;
    Ok(Partitioned {
        profile: profile.to_owned(),
        partitions,
        open,
    })
}

/// One row of the targets table: what, what was measured, whether it was met.
pub type TargetRow = (String, String, bool);

impl DemoFigures {
    pub fn broker_idle_cores(&self) -> f64 {
        self.idle_cores.get("kafka").copied().unwrap_or(0.0)
    }

    pub fn target_rows(&self) -> Vec<TargetRow> {
        let broker = self.broker_idle_cores();
        let closed = self.closed.summary.orders_per_second;
        let (rate, open) = &self.open;
        let p99 = open.summary.latency_ms.p99;
        vec![
            (
                "demo: broker CPU with no orders flowing <= 5% of a core".to_owned(),
                format!("{:.1}%", broker * 100.0),
                broker <= 0.05,
            ),
            (
                "demo: >= 200 orders/s closed loop".to_owned(),
                format!("{closed:.0} orders/s"),
                closed >= 200.0,
            ),
            (
                format!("demo: p99 POST -> terminal <= 150 ms at {rate:.0} orders/s"),
                format!("{p99} ms"),
                p99 <= 150,
            ),
        ]
    }

    pub fn markdown(&self, md: &mut String, partitioned: &Partitioned) {
        let _ = writeln!(md, "## What the demo gives a user\n");
        let _ = writeln!(
            md,
            "The configuration `scripts/demo` leaves running: the {} build, {} partitions per topic, the \
             demo's settings. Measured like the README's figures (`orderflow-admin load`).\n",
            self.profile, self.partitions
        );
        let idle: Vec<String> = self
            .idle_cores
            .iter()
            .map(|(process, cores)| format!("{process} {:.1}%", cores * 100.0))
            .collect();
        let _ = writeln!(
            md,
            "With no orders flowing, over {} s, each process's share of one core: {}.\n",
            self.idle_seconds,
            idle.join(", ")
        );
        let _ = writeln!(
            md,
            "| run | orders | achieved/s | p50 ms | p99 ms | max ms | CPU-s per 1,000 orders, all but the broker |\n\
             | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
        );
        let (rate, open) = &self.open;
        let closed_label = format!("closed loop, {} in flight", self.closed_concurrency);
        let open_label = format!("open loop, {rate:.0} orders/s");
        for (label, run) in [(closed_label, &self.closed), (open_label, open)] {
            row(md, &label, run);
        }
        let _ = writeln!(
            md,
            "\n### The {} build on {} partitions per topic\n",
            partitioned.profile, partitioned.partitions
        );
        let _ = writeln!(
            md,
            "| run | orders | achieved/s | p50 ms | p99 ms | max ms | CPU-s per 1,000 orders, all but the broker |\n\
             | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
        );
        for (rate, run) in &partitioned.open {
            row(md, &format!("open loop, {rate:.0} orders/s"), run);
        }
        let _ = writeln!(md);
    }
}

fn row(md: &mut String, label: &str, run: &LoadRun) {
    let l = &run.summary.latency_ms;
    let _ = writeln!(
        md,
        "| {label} | {} | {:.0} | {} | {} | {} | {:.2} |",
        run.summary.placed,
        run.summary.orders_per_second,
        l.p50,
        l.p99,
        l.max,
        run.cpu_without_broker()
    );
}
