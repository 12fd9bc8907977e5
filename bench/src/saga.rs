//! The saga as it runs for real: the four services as processes of the build under test, on
//! databases and topics of the run's own, driven over REST by the load generator
//! (`orderflow-admin load --json`), with each process's CPU time measured around each run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::pgstats::PgCounters;
use crate::procstat::{self, CpuMeter};
use crate::scratch::Scratch;

/// How a service started.
#[derive(Debug, Clone, Serialize)]
pub struct Startup {
    pub service: &'static str,
    /// From spawning the process (database already migrated) to its first ready `/readyz`.
    pub ready_ms: u64,
    /// Resident memory once all four are ready and idle.
    pub idle_rss_bytes: u64,
}

/// One load run: what the load generator reported and what each process spent.
#[derive(Debug, Clone, Serialize)]
pub struct LoadRun {
    pub label: String,
    pub summary: LoadSummary,
    /// CPU seconds per 1,000 orders placed, per process (group).
    pub cpu_per_1000_orders: BTreeMap<String, f64>,
    pub postgres_per_order: PgCounters,
}

impl LoadRun {
    /// CPU seconds per 1,000 orders of every process but the broker's JVM.
    pub fn cpu_without_broker(&self) -> f64 {
        self.cpu_per_1000_orders
            .iter()
            .filter(|(process, _)| *process != "kafka")
            .map(|(_, seconds)| seconds)
            .sum()
    }
}

/// The parts of `orderflow-admin load --json` the report uses.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadSummary {
    pub placed: u64,
    pub terminal: u64,
    pub unfinished: u64,
    pub orders_per_second: f64,
    pub latency_ms: Latency,
    pub http_errors: BTreeMap<String, u64>,
    pub outcomes: BTreeMap<String, u64>,
    pub trend: Trend,
    pub cpu_seconds: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Latency {
    pub p50: u64,
    pub p95: u64,
    pub p99: u64,
    pub max: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Trend {
    pub in_flight_mid: u64,
    pub in_flight_end: u64,
    pub backlog_grows: bool,
}

struct ServiceProcess {
    name: &'static str,
    port: u16,
    child: Child,
}

/// The four services, running.
pub struct Saga {
    bin: PathBuf,
    services: Vec<ServiceProcess>,
    databases: Vec<String>,
    kafka_prefix: String,
    fetch_wait_ms: u32,
    postgres: String,
    registry_url: String,
    issuer_url: String,
}

const SERVICES: [&str; 4] = [
    "order-service",
    "billing-service",
    "inventory-service",
    "shipping-service",
];

impl Saga {
    /// Starts the services from `bin` on fresh, migrated databases and a fresh topic prefix
    /// of `partitions` per topic; `label` tells this saga's databases and topics apart.
    pub async fn start(
        scratch: &mut Scratch,
        label: &str,
        bin: &Path,
        partitions: i32,
    ) -> anyhow::Result<(Self, Vec<Startup>)> {
        let (kafka, _, _) = scratch.topics(label, partitions).await?;
        let mut urls = Vec::new();
        let mut databases = Vec::new();
        for name in SERVICES {
            let migrations = match name {
                "order-service" => &order_service::MIGRATIONS,
                "billing-service" => &billing_service::MIGRATIONS,
                "inventory-service" => &inventory_service::MIGRATIONS,
                _ => &shipping_service::MIGRATIONS,
            };
            let url = scratch
                .database(&format!("{label}_{name}"), Some(migrations))
                .await?;
            databases.push(shared_events::settings::database_of(&url).to_owned());
            urls.push(url);
        }
        let mut saga = Self {
            bin: bin.to_owned(),
            services: Vec::new(),
            databases,
            kafka_prefix: kafka.topic_prefix.clone(),
            fetch_wait_ms: scratch.stack.kafka.fetch_wait_max_ms,
            postgres: scratch.stack.postgres.clone(),
            registry_url: scratch.stack.registry_url.clone(),
            issuer_url: scratch.stack.issuer_url.clone(),
        };
        let mut ready_ms = Vec::new();
        for (name, database_url) in SERVICES.into_iter().zip(urls) {
            let started = Instant::now();
            let process = saga.spawn(name, &database_url, &kafka.bootstrap_servers)?;
            wait_ready(process.port, name).await?;
            ready_ms.push(started.elapsed().as_millis() as u64);
            saga.services.push(process);
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let startup = saga
            .services
            .iter()
            .zip(ready_ms)
            .map(|(process, ready_ms)| Startup {
                service: process.name,
                ready_ms,
                idle_rss_bytes: process
                    .child
                    .id()
                    .and_then(procstat::rss_bytes)
                    .unwrap_or_default(),
            })
            .collect();
        Ok((saga, startup))
    }

    fn spawn(
        &self,
        name: &'static str,
        database_url: &str,
        bootstrap: &str,
    ) -> anyhow::Result<ServiceProcess> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new(self.bin.join(name))
            .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("DATABASE_URL", database_url)
            .env("KAFKA_BOOTSTRAP_SERVERS", bootstrap)
            .env("KAFKA_TOPIC_PREFIX", &self.kafka_prefix)
            .env("KAFKA_FETCH_WAIT_MAX_MS", self.fetch_wait_ms.to_string())
            .env("KAFKA_SESSION_TIMEOUT_MS", "6000")
            .env("KAFKA_MAX_POLL_INTERVAL_MS", "10000")
            .env("SCHEMA_REGISTRY_URL", &self.registry_url)
            .env(
                "AUTH_JWKS_URL",
                format!("{}/.well-known/jwks.json", self.issuer_url),
            )
            .env("AUTH_ISSUER", &self.issuer_url)
            // An overloaded run must not turn slow orders into cancelled ones.
            .env("SAGA_DEADLINE_SECS", "600")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.join(name).display()))?;
        Ok(ServiceProcess { name, port, child })
    }

    fn url(&self, name: &str) -> String {
        let port = self
            .services
            .iter()
            .find(|s| s.name == name)
            .map_or(0, |s| s.port);
        format!("http://127.0.0.1:{port}")
    }

    /// An open loop: `rate` orders per second for `seconds`, the default outcome mix.
    pub async fn open(&self, rate: f64, seconds: f64) -> anyhow::Result<LoadRun> {
        eprintln!("==> open loop: {rate} orders/s for {seconds} s");
        let run = self
            .load(
                &format!("open {rate}/s"),
                &[
                    "--rate".into(),
                    rate.to_string(),
                    "--duration".into(),
                    seconds.to_string(),
                ],
            )
            .await?;
        eprintln!(
            "    {:.0} orders/s, p99 {} ms",
            run.summary.orders_per_second, run.summary.latency_ms.p99
        );
        Ok(run)
    }

    /// Open loops at each of `rates` for `seconds`, after a quarter as long at the first
    /// rate, unmeasured: the first orders after start meet cold caches and connection pools,
    /// which is start-up, not the rate's latency.
    pub async fn open_loops(
        &self,
        rates: &[f64],
        seconds: f64,
    ) -> anyhow::Result<Vec<(f64, LoadRun)>> {
        if let Some(first) = rates.first() {
            eprintln!("==> warming up (not measured)");
            self.open(*first, seconds / 4.0).await?;
        }
        let mut runs = Vec::new();
        for rate in rates {
            runs.push((*rate, self.open(*rate, seconds).await?));
        }
        Ok(runs)
    }

    /// A closed loop: `orders` orders, `concurrency` in flight, every one meant to complete.
    pub async fn closed(&self, orders: usize, concurrency: usize) -> anyhow::Result<LoadRun> {
        eprintln!(
            "==> closed loop: {orders} orders, {concurrency} in flight, all meant to complete"
        );
        let run = self
            .load(
                "closed",
                &[
                    "--orders".into(),
                    orders.to_string(),
                    "--concurrency".into(),
                    concurrency.to_string(),
                    "--mix".into(),
                    "completed=100".into(),
                ],
            )
            .await?;
        eprintln!("    {:.0} orders/s", run.summary.orders_per_second);
        Ok(run)
    }

    /// Cores each process group uses over `seconds` with no orders flowing.
    pub async fn idle(&self, seconds: f64) -> BTreeMap<String, f64> {
        let meter = self.meter();
        let before = meter.read();
        tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
        procstat::spent(&before, &meter.read())
            .into_iter()
            .map(|(label, spent)| (label, spent.as_secs_f64() / seconds))
            .collect()
    }

    /// The services, the broker and PostgreSQL, each a group of its own.
    fn meter(&self) -> CpuMeter {
        let mut meter = CpuMeter::default();
        for process in &self.services {
            if let Some(pid) = process.child.id() {
                meter.pid(process.name, pid);
            }
        }
        meter.pids("kafka", crate::procstat::kafka_broker_pids());
        meter.named("postgres", "postgres");
        meter
    }

    /// Runs the load generator with `args` and measures every process around it.
    async fn load(&self, label: &str, args: &[String]) -> anyhow::Result<LoadRun> {
        let meter = self.meter();
        let pg_before = PgCounters::read(&self.postgres, &self.databases).await?;
        let cpu_before = meter.read();
        let output = Command::new(self.bin.join("orderflow-admin"))
            .arg("--kafka-topic-prefix")
            .arg(&self.kafka_prefix)
            .arg("--kafka-fetch-wait-max-ms")
            .arg(self.fetch_wait_ms.to_string())
            .arg("load")
            .arg("--order-service")
            .arg(self.url("order-service"))
            .arg("--inventory-service")
            .arg(self.url("inventory-service"))
            .arg("--billing-service")
            .arg(self.url("billing-service"))
            .arg("--schema-registry-url")
            .arg(&self.registry_url)
            .arg("--dev-issuer-url")
            .arg(&self.issuer_url)
            .arg("--json")
            .args(args)
            .stderr(Stdio::inherit())
            .output()
            .await
            .context("running orderflow-admin load")?;
        let cpu = procstat::spent(&cpu_before, &meter.read());
        // Idle connections publish their commit counts within a second or so.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let pg_after = PgCounters::read(&self.postgres, &self.databases).await?;
        let summary: LoadSummary = serde_json::from_slice(&output.stdout).with_context(|| {
            format!(
                "orderflow-admin load {args:?} printed no summary (exit {})",
                output.status
            )
        })?;
        if !output.status.success() {
            bail!(
                "orderflow-admin load {args:?} failed: {} unfinished",
                summary.unfinished
            );
        }
        let per_1000 = |seconds: f64| seconds * 1000.0 / summary.placed.max(1) as f64;
        let mut cpu_per_1000_orders: BTreeMap<String, f64> = cpu
            .into_iter()
            .map(|(label, spent)| (label, per_1000(spent.as_secs_f64())))
            .collect();
        if let Some(seconds) = summary.cpu_seconds {
            cpu_per_1000_orders.insert("load generator".to_owned(), per_1000(seconds));
        }
        Ok(LoadRun {
            label: label.to_owned(),
            postgres_per_order: pg_after.since(&pg_before).per(summary.placed as usize),
            summary,
            cpu_per_1000_orders,
        })
    }

    /// SIGTERM to every service; each must exit cleanly.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        for process in &mut self.services {
            if let Some(pid) = process.child.id() {
                std::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status()?;
            }
            let status = tokio::time::timeout(Duration::from_secs(20), process.child.wait())
                .await
                .with_context(|| format!("{} did not stop within 20 s", process.name))??;
            if !status.success() {
                bail!("{} exited with {status}", process.name);
            }
        }
        Ok(())
    }
}

async fn wait_ready(port: u16, name: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = client
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{name} did not become ready within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
