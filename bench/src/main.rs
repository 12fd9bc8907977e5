//! `orderflow-bench` (run it with `scripts/bench`): the event plumbing against baselines
//! measured in the same run, the saga's SQL without Kafka, and the saga under open-loop
//! load with each process's CPU per order; written to `docs/benchmarks.md` with a plot.

mod compare;
mod demo;
mod pgstats;
mod plot;
mod plumbing;
mod poison;
mod procstat;
mod replay;
mod report;
mod saga;
mod scratch;

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use opentelemetry::trace::TracerProvider as _;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use report::{Machine, Report, Settings};
use scratch::{Scratch, Stack};
use shared_events::settings::database_url;

#[derive(Debug, Parser)]
#[command(
    about = "The orderflow benchmark: plumbing against same-run baselines, the saga's SQL alone, the saga under load."
)]
struct Args {
    /// A short run that only shows every phase completes (CI): a few hundred events and
    /// orders, one run; the report goes to target/bench-smoke.
    #[arg(long)]
    smoke: bool,
    /// Events per plumbing run.
    #[arg(long, default_value_t = 20_000)]
    events: usize,
    /// Plumbing runs; the report gives the median.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Orders of the PostgreSQL-only replay.
    #[arg(long, default_value_t = 3_000)]
    replay_orders: usize,
    /// Orders of the saga's closed-loop run, compared with the replay.
    #[arg(long, default_value_t = 3_000)]
    closed_orders: usize,
    /// Orders in flight in the closed-loop runs (replay and saga).
    #[arg(long, default_value_t = 128)]
    concurrency: usize,
    /// Open-loop rates, orders per second.
    #[arg(long, value_delimiter = ',', default_value = "100,200,400")]
    rates: Vec<f64>,
    /// Seconds of each open-loop rate.
    #[arg(long, default_value_t = 20.0)]
    seconds: f64,
    /// Partitions of the benchmark's topics.
    #[arg(long, default_value_t = 1)]
    partitions: i32,
    /// Partitions per topic of the demo's configuration (what `orderflow-admin
    /// provision-topics` gives the demo's topics), also used by the partitioned open loops.
    #[arg(long, default_value_t = 6)]
    demo_partitions: i32,
    /// Open-loop rates of the tuned build on the demo's partitions, orders per second.
    #[arg(long, value_delimiter = ',', default_value = "100,400")]
    partitioned_rates: Vec<f64>,
    /// Orders of the demo configuration's closed loop.
    #[arg(long, default_value_t = 2_000)]
    demo_orders: usize,
    /// Orders in flight in the demo configuration's closed loop.
    #[arg(long, default_value_t = 64)]
    demo_concurrency: usize,
    /// The demo configuration's open-loop rate, orders per second.
    #[arg(long, default_value_t = 50.0)]
    demo_rate: f64,
    /// Seconds the demo configuration's processes are watched with no orders flowing (after
    /// half as long again to settle).
    #[arg(long, default_value_t = 30.0)]
    idle_seconds: f64,
    /// The consumers' fetch.wait.max.ms (Kafka answers a waiting fetch when records arrive;
    /// this bounds only idle polling).
    #[arg(long, default_value_t = 500)]
    fetch_wait_ms: u32,
    /// The open-loop rate of the poisoned-order runs, orders per second (each order is a
    /// few records on one partition).
    #[arg(long, default_value_t = 100.0)]
    poison_rate: f64,
    /// Where benchmarks.md, benchmarks.json and benchmarks-latency.svg go.
    #[arg(long, default_value = "docs")]
    out: PathBuf,
    /// The build profile whose binaries run (target/<profile>/).
    #[arg(long, default_value = "release")]
    profile: String,
    /// Run only the plumbing phase (no report is written): for working on the plumbing.
    #[arg(long)]
    plumbing_only: bool,
    /// Run only the poisoned-order phase (no report is written): for working on parking.
    #[arg(long)]
    poison_only: bool,
    /// How the report names the command that produced it.
    #[arg(long, default_value = "scripts/bench")]
    command: String,
}

impl Args {
    fn smoke(mut self) -> Self {
        self.events = 300;
        self.runs = 1;
        self.replay_orders = 100;
        self.closed_orders = 100;
        self.concurrency = 16;
        self.rates = vec![20.0];
        self.seconds = 5.0;
        self.poison_rate = 20.0;
        self.partitioned_rates = vec![20.0];
        self.demo_orders = 100;
        self.demo_concurrency = 16;
        self.demo_rate = 20.0;
        self.idle_seconds = 2.0;
        self.out = PathBuf::from("target/bench-smoke");
        self
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.smoke {
        args = args.smoke();
    }
    // Spans get trace ids (as in the services), so outbox rows carry a traceparent and the
    // records have the services' headers; nothing is exported. Warnings go to stderr.
    let tracer = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(tracer.tracer("orderflow-bench")))
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "warn".into()),
                ),
        )
        .init();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let stack = Stack::from_env(args.partitions, args.fetch_wait_ms);
    let mut scratch = Scratch::new(stack);
    let result = run(&args, &mut scratch, &target, &root).await;
    scratch.cleanup().await?;
    result
}

async fn run(
    args: &Args,
    scratch: &mut Scratch,
    target: &std::path::Path,
    root: &std::path::Path,
) -> anyhow::Result<()> {
    let bin = target.join(&args.profile);
    if args.poison_only {
        println!("{:#?}", poisoned_order(args, scratch).await?);
        return Ok(());
    }
    eprintln!("==> plumbing: {} events, {} run(s)", args.events, args.runs);
    let plumbing_db = scratch.database("plumbing", None).await?;
    let pool = Scratch::pool(&plumbing_db, 10).await?;
    sqlx::query(plumbing::EFFECTS_TABLE).execute(&pool).await?;
    let mut plumbing_runs = Vec::new();
    for run in 0..args.runs {
        let rates = plumbing::run(scratch, &pool, run, args.events).await?;
        eprintln!("    run {}: {rates:?}", run + 1);
        plumbing_runs.push(rates);
    }
    pool.close().await;
    if args.plumbing_only {
        println!("{:#?}", report::median(&plumbing_runs));
        return Ok(());
    }

    let poison = poisoned_order(args, scratch).await?;

    eprintln!("==> the saga's SQL alone: {} orders", args.replay_orders);
    let replay = replay::run(scratch, args.replay_orders, args.concurrency).await?;
    eprintln!("    {:.0} orders/s", replay.orders_per_second);

    eprintln!("==> the saga: starting the services ({})", bin.display());
    let partitions = scratch.stack.partitions;
    let (saga, startup) = saga::Saga::start(scratch, "saga", &bin, partitions).await?;
    let open = saga.open_loops(&args.rates, args.seconds).await?;
    let closed = saga.closed(args.closed_orders, args.concurrency).await?;
    saga.stop().await?;

    let partitioned = demo::partitioned(
        scratch,
        &bin,
        &args.profile,
        args.demo_partitions,
        &args.partitioned_rates,
        args.seconds,
    )
    .await?;
    // The demo runs the debug build, whatever this run's profile.
    let demo = demo::run(
        scratch,
        &target.join("debug"),
        "debug",
        &demo::DemoLoad {
            partitions: args.demo_partitions,
            idle_seconds: args.idle_seconds,
            closed_orders: args.demo_orders,
            closed_concurrency: args.demo_concurrency,
            rate: args.demo_rate,
            seconds: args.seconds,
        },
    )
    .await?;

    let report = Report {
        machine: machine(scratch).await,
        settings: Settings {
            profile: args.profile.clone(),
            events: args.events,
            runs: args.runs,
            partitions: args.partitions,
            fetch_wait_ms: args.fetch_wait_ms,
            replay_orders: args.replay_orders,
            closed_orders: args.closed_orders,
            closed_concurrency: args.concurrency,
            open_seconds: args.seconds,
            command: args.command.clone(),
        },
        startup,
        plumbing: report::median(&plumbing_runs),
        plumbing_runs,
        poison,
        replay,
        closed,
        open,
        partitioned,
        demo,
    };
    // Read before this run may overwrite it.
    let committed = std::fs::read_to_string(root.join("docs/benchmarks.json"))
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or(serde_json::Value::Null);
    eprintln!(
        "==> against the committed docs/benchmarks.json (a fall of more than a quarter is flagged; nothing fails on it)"
    );
    for line in compare::against_committed(&serde_json::to_value(&report)?, &committed) {
        eprintln!("    {line}");
    }
    let out = root.join(&args.out);
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let plot_file = "benchmarks-latency.svg";
    plot::latency_against_load(&report.open, &out.join(plot_file))?;
    let markdown = report.markdown(plot_file);
    std::fs::write(out.join("benchmarks.md"), &markdown)?;
    std::fs::write(
        out.join("benchmarks.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    println!("{markdown}");
    eprintln!("==> written to {}", out.display());
    Ok(())
}

/// The poisoned-order phase ([`poison`]), its figures printed as it ends.
async fn poisoned_order(
    args: &Args,
    scratch: &mut Scratch,
) -> anyhow::Result<poison::PoisonFigures> {
    eprintln!(
        "==> one poisoned order on a partition: {} orders/s for {} s, clean and poisoned",
        args.poison_rate, args.seconds
    );
    let poison = poison::run(scratch, args.poison_rate, args.seconds).await?;
    eprintln!(
        "    other orders' p99 {:.0} ms clean, {:.0} ms poisoned ({:.2}x); redrive to applied {:.0} ms, in order: {}",
        poison.clean.p99_ms,
        poison.poisoned.p99_ms,
        poison.p99_ratio(),
        poison.redrive_to_applied_ms,
        poison.applied_in_order
    );
    Ok(poison)
}

async fn machine(scratch: &Scratch) -> Machine {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split(':').nth(1))
        .unwrap_or("unknown CPU")
        .trim()
        .to_owned();
    let memory_kib: f64 = read("/proc/meminfo")
        .lines()
        .find_map(|l| {
            l.strip_prefix("MemTotal:")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0.0);
    let postgres = async {
        let mut connection = <sqlx::PgConnection as sqlx::Connection>::connect(&database_url(
            &scratch.stack.postgres,
            "postgres",
        ))
        .await?;
        let version: String = sqlx::query_scalar("SHOW server_version")
            .fetch_one(&mut connection)
            .await?;
        anyhow::Ok(format!("PostgreSQL {version}"))
    }
    .await
    .unwrap_or_else(|_| "PostgreSQL".to_owned());
    // scripts/bench runs on the local stack, whose broker scripts/kafka/pom.xml pins.
    let kafka_version = include_str!("../../scripts/kafka/pom.xml")
        .split("<kafka.version>")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .unwrap_or("?");
    let broker = format!(
        "Apache Kafka {kafka_version} (single-node KRaft) at {}",
        scratch.stack.kafka.bootstrap_servers
    );
    Machine {
        date: chrono::Utc::now().format("%Y-%m-%d").to_string(),
        cpu,
        cores: std::thread::available_parallelism().map_or(0, usize::from),
        memory_gib: memory_kib / 1024.0 / 1024.0,
        postgres,
        broker,
    }
}
