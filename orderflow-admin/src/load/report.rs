//! What a load run measured: orders to a terminal state per second, latency from the POST to
//! the terminal event (an HDR histogram), outcomes, HTTP errors, and the backlog's trend.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::mix::{Intent, Outcome};

/// Collects a run's measurements as they happen.
pub struct Recorder {
    latency_ms: Histogram<u64>,
    pub outcomes: BTreeMap<Outcome, u64>,
    /// Orders whose outcome is not what their intent asked for, by (intent, outcome).
    pub unexpected: BTreeMap<String, u64>,
    pub http_errors: BTreeMap<String, u64>,
    /// Requests sent again after a transport error, by the error.
    pub retried: BTreeMap<String, u64>,
    pub placed: u64,
    pub terminal: u64,
    first_sent_ms: Option<i64>,
    last_terminal_ms: Option<i64>,
    /// Each finished order's (sent at, latency), for the latency by the second it was placed.
    finished_at: Vec<(i64, u64)>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self {
            latency_ms: Histogram::new_with_bounds(1, 3_600_000, 3).expect("valid bounds"),
            outcomes: BTreeMap::new(),
            unexpected: BTreeMap::new(),
            http_errors: BTreeMap::new(),
            retried: BTreeMap::new(),
            placed: 0,
            terminal: 0,
            first_sent_ms: None,
            last_terminal_ms: None,
            finished_at: Vec::new(),
        }
    }
}

impl Recorder {
    pub fn placed(&mut self, sent_ms: i64) {
        self.placed += 1;
        self.first_sent_ms = Some(self.first_sent_ms.map_or(sent_ms, |f| f.min(sent_ms)));
    }

    pub fn http_error(&mut self, what: String) {
        *self.http_errors.entry(what).or_default() += 1;
    }

    pub fn retried(&mut self, after: &str) {
        *self.retried.entry(after.to_owned()).or_default() += 1;
    }

    pub fn finished(&mut self, intent: Intent, outcome: Outcome, sent_ms: i64, terminal_ms: i64) {
        self.terminal += 1;
        let latency = (terminal_ms - sent_ms).max(1) as u64;
        self.latency_ms.saturating_record(latency);
        self.finished_at.push((sent_ms, latency));
        *self.outcomes.entry(outcome).or_default() += 1;
        if !outcome.fulfils(intent) {
            *self
                .unexpected
                .entry(format!("{intent:?} -> {outcome:?}"))
                .or_default() += 1;
        }
        self.last_terminal_ms = Some(
            self.last_terminal_ms
                .map_or(terminal_ms, |l| l.max(terminal_ms)),
        );
    }

    pub fn summary(&self, trend: Trend, offered: Offered) -> Summary {
        let seconds = match (self.first_sent_ms, self.last_terminal_ms) {
            (Some(first), Some(last)) if last > first => (last - first) as f64 / 1000.0,
            _ => 0.0,
        };
        let percentile = |q: f64| self.latency_ms.value_at_quantile(q);
        Summary {
            offered,
            placed: self.placed,
            terminal: self.terminal,
            unfinished: self.placed - self.terminal,
            seconds_to_last_terminal: seconds,
            orders_per_second: if seconds > 0.0 {
                self.terminal as f64 / seconds
            } else {
                0.0
            },
            latency_ms: Latency {
                p50: percentile(0.50),
                p95: percentile(0.95),
                p99: percentile(0.99),
                max: self.latency_ms.max(),
                mean: self.latency_ms.mean(),
            },
            outcomes: self.outcomes.clone(),
            unexpected_outcomes: self.unexpected.clone(),
            http_errors: self.http_errors.clone(),
            retried: self.retried.clone(),
            first_placed_unix_ms: self.first_sent_ms,
            p99_ms_by_second_placed: self.p99_by_second_placed(),
            trend,
            cpu_seconds: own_cpu_seconds(),
        }
    }

    /// The p99 latency of the orders placed in each second of the run (0 where none
    /// finished): how an outage shows, and how soon after it new orders are fast again.
    fn p99_by_second_placed(&self) -> Vec<u64> {
        let Some(first) = self.first_sent_ms else {
            return Vec::new();
        };
        let mut seconds: BTreeMap<i64, Histogram<u64>> = BTreeMap::new();
        for &(sent_ms, latency) in &self.finished_at {
            seconds
                .entry((sent_ms - first) / 1000)
                .or_insert_with(|| {
                    Histogram::new_with_bounds(1, 3_600_000, 3).expect("valid bounds")
                })
                .saturating_record(latency);
        }
        let last = seconds.keys().next_back().copied().unwrap_or(0);
        (0..=last)
            .map(|second| {
                seconds
                    .get(&second)
                    .map_or(0, |latency| latency.value_at_quantile(0.99))
            })
            .collect()
    }
}

/// What was asked of the system.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Offered {
    Closed {
        orders: u64,
        concurrency: usize,
    },
    Open {
        rate_per_second: f64,
        seconds: f64,
        orders: u64,
        max_schedule_lag_ms: u64,
    },
}

/// Orders in flight (placed, not yet terminal) at the middle and the end of the offered
/// window, and how long the rest took after the last order was placed. A backlog that
/// grows means the system does not keep up with the offered rate.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Trend {
    pub in_flight_mid: u64,
    pub in_flight_end: u64,
    pub drain_seconds: f64,
    pub backlog_grows: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50: u64,
    pub p95: u64,
    pub p99: u64,
    pub max: u64,
    pub mean: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub offered: Offered,
    pub placed: u64,
    pub terminal: u64,
    pub unfinished: u64,
    pub seconds_to_last_terminal: f64,
    pub orders_per_second: f64,
    /// From sending `POST /orders` to the terminal event's publication.
    pub latency_ms: Latency,
    pub outcomes: BTreeMap<Outcome, u64>,
    pub unexpected_outcomes: BTreeMap<String, u64>,
    pub http_errors: BTreeMap<String, u64>,
    /// Requests sent again (same Idempotency-Key) after a transport error, by the error.
    pub retried: BTreeMap<String, u64>,
    /// When the first order was sent (Unix ms): second 0 of the series below.
    pub first_placed_unix_ms: Option<i64>,
    /// The p99 latency of the orders placed in each second of the run, in order.
    pub p99_ms_by_second_placed: Vec<u64>,
    pub trend: Trend,
    /// CPU time this load generator used (Linux), so a benchmark can count its share.
    pub cpu_seconds: Option<f64>,
}

impl Summary {
    pub fn print(&self) {
        match &self.offered {
            Offered::Closed {
                orders,
                concurrency,
            } => {
                println!("closed loop: {orders} orders, {concurrency} at a time");
            }
            Offered::Open {
                rate_per_second,
                seconds,
                orders,
                max_schedule_lag_ms,
            } => println!(
                "open loop: {rate_per_second} orders/s for {seconds} s ({orders} orders; the scheduler fell behind by at most {max_schedule_lag_ms} ms)"
            ),
        }
        println!(
            "placed {}  terminal {}  unfinished {}",
            self.placed, self.terminal, self.unfinished
        );
        println!(
            "throughput       {:.1} orders/s to a terminal state ({:.1} s from the first POST to the last outcome)",
            self.orders_per_second, self.seconds_to_last_terminal
        );
        let l = &self.latency_ms;
        println!(
            "latency (ms)     p50 {}  p95 {}  p99 {}  max {}  (POST sent -> terminal event published)",
            l.p50, l.p95, l.p99, l.max
        );
        let outcomes: Vec<String> = self
            .outcomes
            .iter()
            .map(|(o, n)| format!("{o:?} {n}"))
            .collect();
        println!("outcomes         {}", outcomes.join(", "));
        if !self.unexpected_outcomes.is_empty() {
            println!("unexpected       {:?}", self.unexpected_outcomes);
        }
        let errors: u64 = self.http_errors.values().sum();
        println!("HTTP errors      {errors} {:?}", self.http_errors);
        if !self.retried.is_empty() {
            println!("sent again       {:?} (same Idempotency-Key)", self.retried);
        }
        let t = &self.trend;
        println!(
            "backlog          {} in flight mid-window, {} at its end, drained in {:.1} s after the last POST{}",
            t.in_flight_mid,
            t.in_flight_end,
            t.drain_seconds,
            if t.backlog_grows {
                " (GROWING: the system is not keeping up)"
            } else {
                ""
            }
        );
    }
}

/// User plus system CPU time of this process so far, from `/proc/self/stat` (Linux).
fn own_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split(' ').collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // USER_HZ is 100 on Linux.
    Some(ticks / 100.0)
}
