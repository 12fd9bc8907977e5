//! The benchmark's figures, as ratios to their same-run baselines, against the project's
//! targets; written as Markdown (printed and saved) and JSON.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde::Serialize;

use crate::demo::{DemoFigures, Partitioned, TargetRow};
use crate::plumbing::Rates;
use crate::poison::PoisonFigures;
use crate::replay::ReplayFigures;
use crate::saga::{LoadRun, Startup};

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub date: String,
    pub cpu: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub postgres: String,
    pub broker: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub profile: String,
    pub events: usize,
    pub runs: usize,
    pub partitions: i32,
    pub fetch_wait_ms: u32,
    pub replay_orders: usize,
    pub closed_orders: usize,
    pub closed_concurrency: usize,
    pub open_seconds: f64,
    pub command: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub settings: Settings,
    pub startup: Vec<Startup>,
    pub plumbing_runs: Vec<Rates>,
    pub plumbing: Rates,
    pub poison: PoisonFigures,
    pub replay: ReplayFigures,
    pub closed: LoadRun,
    pub open: Vec<(f64, LoadRun)>,
    pub partitioned: Partitioned,
    pub demo: DemoFigures,
}

/// The median of each rate over the runs.
pub fn median(runs: &[Rates]) -> Rates {
    let median_of = |pick: fn(&Rates) -> f64| {
        let mut values: Vec<f64> = runs.iter().map(pick).collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    Rates {
        raw_producer_bare: median_of(|r| r.raw_producer_bare),
        raw_producer: median_of(|r| r.raw_producer),
        relay: median_of(|r| r.relay),
        raw_consumer: median_of(|r| r.raw_consumer),
        runner: median_of(|r| r.runner),
    }
}

fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "**missed**" }
}

impl Report {
    /// The saga's closed loop against the PostgreSQL-only replay of its SQL.
    fn replay_ratio(&self) -> f64 {
        self.closed.summary.orders_per_second / self.replay.orders_per_second
    }

    /// The tuned run's targets, then the demo's.
    fn target_rows(&self) -> Vec<TargetRow> {
        let p = &self.plumbing;
        let mut rows = Vec::new();
        if let Some((rate, run)) = self.open.iter().max_by(|a, b| a.0.total_cmp(&b.0)) {
            let achieved = run.summary.orders_per_second;
            rows.push((
                format!("saga >= 400 orders/s at {rate:.0} offered"),
                format!("{achieved:.0} orders/s"),
                achieved >= 400.0,
            ));
            let cpu = run.cpu_without_broker();
            rows.push((
                format!("<= 2.5 CPU-s per 1,000 orders, all but the broker, at {rate:.0}/s"),
                format!("{cpu:.2}"),
                cpu <= 2.5,
            ));
        }
        if let Some((_, at100)) = self.open.iter().find(|(rate, _)| *rate == 100.0) {
            let p99 = at100.summary.latency_ms.p99;
            rows.push((
                "p99 POST -> terminal <= 100 ms at 100 orders/s".to_owned(),
                format!("{p99} ms"),
                p99 <= 100,
            ));
        }
        let replay_ratio = self.replay_ratio();
        rows.push((
            "saga closed loop >= 60% of the PostgreSQL-only replay".to_owned(),
            format!("{:.0}%", replay_ratio * 100.0),
            replay_ratio >= 0.6,
        ));
        let relay_ratio = p.relay_ratio();
        rows.push((
            "relay >= 50% of the raw producer".to_owned(),
            format!(
                "{} events/s, {:.0}%",
                thousands(p.relay),
                relay_ratio * 100.0
            ),
            relay_ratio >= 0.5,
        ));
        let runner_ratio = p.runner_ratio();
        rows.push((
            "consumer runner >= 50% of raw consume".to_owned(),
            format!(
                "{} events/s, {:.0}%",
                thousands(p.runner),
                runner_ratio * 100.0
            ),
            runner_ratio >= 0.5,
        ));
        let max_rss = self.startup.iter().map(|s| s.idle_rss_bytes).max();
        let max_rss = max_rss.unwrap_or(0) as f64 / 1e6;
        rows.push((
            "idle RSS <= 30 MB per release service".to_owned(),
            format!("at most {max_rss:.1} MB"),
            max_rss <= 30.0,
        ));
        let max_ready = self.startup.iter().map(|s| s.ready_ms).max().unwrap_or(0);
        rows.push((
            "ready in < 1 s".to_owned(),
            format!("at most {max_ready} ms"),
            max_ready < 1000,
        ));
        rows.push(self.poison.target_row());
        rows.extend(self.demo.target_rows());
        rows
    }

    pub fn markdown(&self, plot_file: &str) -> String {
        let mut md = String::new();
        self.setting(&mut md);
        self.targets(&mut md);
        self.plumbing_section(&mut md);
        self.poison.markdown(&mut md);
        self.against_replay(&mut md);
        self.open_loop(&mut md, plot_file);
        self.cpu_per_order(&mut md);
        self.demo.markdown(&mut md, &self.partitioned);
        self.startup_and_memory(&mut md);
        md
    }

    /// The title, the machine and the run's settings.
    fn setting(&self, md: &mut String) {
        let (m, s) = (&self.machine, &self.settings);
        let _ = writeln!(md, "# Benchmarks\n");
        let _ = writeln!(
            md,
            "A run of `{}` on {}: {}, {} cores, {:.0} GiB; {}; {}. Everything on one machine: the four services \
             ({} build), the broker, PostgreSQL and the load generator. Topics of {} partition(s), consumers' \
             `fetch.wait.max.ms` {} ms (Kafka answers a waiting fetch as soon as records arrive).\n",
            s.command,
            m.date,
            m.cpu,
            m.cores,
            m.memory_gib,
            m.broker,
            m.postgres,
            s.profile,
            s.partitions,
            s.fetch_wait_ms
        );
    }

    /// Each target with what was measured, met or missed.
    fn targets(&self, md: &mut String) {
        let _ = writeln!(md, "## Targets\n");
        let _ = writeln!(md, "| target | measured | |\n| --- | --- | --- |");
        for (target, measured, met) in self.target_rows() {
            let _ = writeln!(md, "| {target} | {measured} | {} |", verdict(met));
        }
        let _ = writeln!(md);
    }

    /// The relay and the consumer runner against the raw client.
    fn plumbing_section(&self, md: &mut String) {
        let (p, s) = (&self.plumbing, &self.settings);
        let relay_ratio = p.relay_ratio();
        let runner_ratio = p.runner_ratio();
        let _ = writeln!(
            md,
            "## Plumbing: {} events, median of {} runs\n",
            thousands(s.events as f64),
            s.runs
        );
        let _ = writeln!(
            md,
            "| phase | events/s | vs its baseline |\n| --- | ---: | ---: |"
        );
        let _ = writeln!(
            md,
            "| raw idempotent producer: the same records without headers (reference) | {} | {:.2} |",
            thousands(p.raw_producer_bare),
            p.raw_producer_bare / p.raw_producer
        );
        let _ = writeln!(
            md,
            "| raw idempotent producer: the relay's records (same size, key, headers), pre-encoded | {} | 1.00 |",
            thousands(p.raw_producer)
        );
        let _ = writeln!(
            md,
            "| outbox relay: Postgres -> Kafka, acknowledged and deleted | {} | {:.2} |",
            thousands(p.relay),
            relay_ratio
        );
        let _ = writeln!(
            md,
            "| raw consumer: consume + decode + store offset | {} | 1.00 |",
            thousands(p.raw_consumer)
        );
        let _ = writeln!(
            md,
            "| consumer runner: decode + dedup + handler + commit, per batch | {} | {:.2} |\n",
            thousands(p.runner),
            runner_ratio
        );
        let runs: Vec<String> = self
            .plumbing_runs
            .iter()
            .map(|r| {
                format!(
                    "{} / {} / {} / {} / {}",
                    thousands(r.raw_producer_bare),
                    thousands(r.raw_producer),
                    thousands(r.relay),
                    thousands(r.raw_consumer),
                    thousands(r.runner)
                )
            })
            .collect();
        let _ = writeln!(
            md,
            "Each run (bare producer / raw producer / relay / raw consumer / runner): {}.\n",
            runs.join("; ")
        );
        let _ = writeln!(
            md,
            "The two producer rows differ by the headers: the relay's records carry the two a \
             consumer needs before decoding (`event_type`, `traceparent`).\n"
        );
    }

    /// The saga's closed loop against the PostgreSQL-only replay of its SQL.
    fn against_replay(&self, md: &mut String) {
        let s = &self.settings;
        let r = &self.replay;
        let c = &self.closed;
        let statements = |v: Option<f64>| {
            v.map_or("n/a (pg_stat_statements not loaded)".to_owned(), |v| {
                format!("{v:.1}")
            })
        };
        let _ = writeln!(md, "## The saga against its SQL alone\n");
        let _ = writeln!(
            md,
            "Every order meant to complete; the replay runs the services' own handlers through the consumer runner's \
            own transaction code and places orders through order-service's own router, with in-memory channels where Kafka would be.\n"
        );
        let _ = writeln!(
            md,
            "| run | orders | orders/s | statements per order | commits per order |\n| --- | ---: | ---: | ---: | ---: |"
        );
        let _ = writeln!(
            md,
            "| PostgreSQL-only replay ({} in flight) | {} | {:.0} | {} | {:.1} |",
            s.closed_concurrency,
            r.orders,
            r.orders_per_second,
            statements(r.per_order.statements),
            r.per_order.commits
        );
        let _ = writeln!(
            md,
            "| saga, closed loop ({} in flight) | {} | {:.0} ({:.0}% of the replay) | {} | {:.1} |\n",
            s.closed_concurrency,
            c.summary.placed,
            c.summary.orders_per_second,
            self.replay_ratio() * 100.0,
            statements(c.postgres_per_order.statements),
            c.postgres_per_order.commits
        );
        let _ = writeln!(
            md,
            "The saga's counts include what runs beside the orders: the relay's and the deadline sweeper's polling, \
            the load generator's setup.\n"
        );
    }

    /// Latency and throughput per offered rate.
    fn open_loop(&self, md: &mut String, plot_file: &str) {
        let s = &self.settings;
        let _ = writeln!(
            md,
            "## The saga under open-loop load ({} s per rate)\n",
            s.open_seconds
        );
        let _ = writeln!(
            md,
            "The load generator offers orders at a fixed rate whether or not the system keeps up (85% completed, \
            5% declined, 5% out of stock, 5% cancelled by the customer) and times each from sending its POST to the \
            publication of its terminal event.\n"
        );
        let _ = writeln!(md, "![latency against offered load]({plot_file})\n");
        let _ = writeln!(
            md,
            "| offered/s | achieved/s | p50 ms | p95 ms | p99 ms | max ms | in flight mid / end | backlog | HTTP errors |"
        );
        let _ = writeln!(
            md,
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |"
        );
        for (rate, run) in &self.open {
            let l = &run.summary.latency_ms;
            let t = &run.summary.trend;
            let errors: u64 = run.summary.http_errors.values().sum();
            let _ = writeln!(
                md,
                "| {rate:.0} | {:.0} | {} | {} | {} | {} | {} / {} | {} | {errors} |",
                run.summary.orders_per_second,
                l.p50,
                l.p95,
                l.p99,
                l.max,
                t.in_flight_mid,
                t.in_flight_end,
                if t.backlog_grows { "grows" } else { "steady" }
            );
        }
    }

    /// CPU seconds per 1,000 orders, per process, per offered rate.
    fn cpu_per_order(&self, md: &mut String) {
        let (m, s) = (&self.machine, &self.settings);
        let _ = writeln!(md, "\n## CPU seconds per 1,000 orders\n");
        let _ = writeln!(
            md,
            "Every process on the machine, the broker's JVM (`kafka`) included.\n"
        );
        let mut processes: BTreeSet<String> = BTreeSet::new();
        for (_, run) in &self.open {
            processes.extend(run.cpu_per_1000_orders.keys().cloned());
        }
        let _ = write!(md, "| offered/s |");
        for p in &processes {
            let _ = write!(md, " {p} |");
        }
        let _ = writeln!(
            md,
            " all but the broker | cores busy | orders/s these cores allow without the broker (projection) |"
        );
        let _ = writeln!(md, "|{}", " ---: |".repeat(processes.len() + 4));
        for (rate, run) in &self.open {
            let _ = write!(md, "| {rate:.0} |");
            let (mut all, mut without_broker) = (0.0, 0.0);
            for p in &processes {
                let v = run.cpu_per_1000_orders.get(p).copied().unwrap_or(0.0);
                all += v;
                if p != "kafka" {
                    without_broker += v;
                }
                let _ = write!(md, " {v:.2} |");
            }
            let cores_busy = all * run.summary.placed as f64 / 1000.0 / s.open_seconds.max(1.0);
            let projection = m.cores as f64 * 1000.0 / without_broker.max(f64::EPSILON);
            let _ = writeln!(
                md,
                " {without_broker:.2} | {cores_busy:.2} of {} | {projection:.0} |",
                m.cores
            );
        }
        let _ = writeln!(
            md,
            "\nCores busy: every process's CPU over the offered window. The projection divides the \
             cores by the CPU per order of everything but the broker, which a production cluster \
             runs on machines of its own."
        );
        let _ = writeln!(md);
    }

    /// Each release service's start-up time and idle memory.
    fn startup_and_memory(&self, md: &mut String) {
        let _ = writeln!(md, "## Start-up and memory\n");
        let _ = writeln!(
            md,
            "| service | ready after start (database migrated) | idle RSS |\n| --- | ---: | ---: |"
        );
        for s in &self.startup {
            let _ = writeln!(
                md,
                "| {} | {} ms | {:.1} MB |",
                s.service,
                s.ready_ms,
                s.idle_rss_bytes as f64 / 1e6
            );
        }
    }
}
