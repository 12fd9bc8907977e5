//! One poisoned order among many on one partition. The consumer runner dead-letters the
//! order's first record, parks the order's later records behind it, and keeps every other
//! order flowing; mid-run the benchmark mends the cause and redrives the letter, and the
//! parked records apply after it, in the order they came.
//!
//! Two open loops of the same rate run the whole path (outbox, relay, broker, runner): one
//! clean, one with the poisoned order. Each order is a few records a short gap apart, as a
//! saga's steps are; the figure is each record's latency from its outbox commit to its
//! effect's commit, over every order but the poisoned one.

mod pipeline;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::time::Instant;
use uuid::Uuid;

use crate::demo::TargetRow;
use crate::scratch::Scratch;
use pipeline::{AppliedRecord, Pipeline};

/// Records per order, and the gap between one order's records.
const STEPS: usize = 3;
const STEP_GAP: Duration = Duration::from_millis(100);
/// Where in the run the poisoned order starts, and where its letter is redriven.
const POISONED_AT: f64 = 0.25;
const REDRIVE_AT: f64 = 0.6;

/// The two runs side by side.
#[derive(Debug, Clone, Serialize)]
pub struct PoisonFigures {
    pub orders_per_second: f64,
    pub records_per_order: usize,
    pub seconds: f64,
    pub clean: RecordLatency,
    /// The other orders' records, with one order poisoned.
    pub poisoned: RecordLatency,
    /// Records parked behind the poisoned order's letter just before the redrive.
    pub parked_before_redrive: i64,
    /// From the redrive to the poisoned order's last record applied.
    pub redrive_to_applied_ms: f64,
    /// The poisoned order's records applied in the order they were appended.
    pub applied_in_order: bool,
}

impl PoisonFigures {
    /// The other orders' p99 with the poison against the clean run's.
    pub fn p99_ratio(&self) -> f64 {
        self.poisoned.p99_ms / self.clean.p99_ms
    }
}

/// Latency of records, from the outbox commit to their effect's commit.
#[derive(Debug, Clone, Serialize)]
pub struct RecordLatency {
    pub records: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl RecordLatency {
    fn of(mut latencies: Vec<f64>) -> Self {
        latencies.sort_by(f64::total_cmp);
        let at = |q: f64| {
            let index = ((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1);
            latencies.get(index).copied().unwrap_or(0.0)
        };
        Self {
            records: latencies.len(),
            p50_ms: at(0.5),
            p99_ms: at(0.99),
            max_ms: latencies.last().copied().unwrap_or(0.0),
        }
    }
}

/// A clean run, then one with a poisoned order, at `rate` orders per second for `seconds`.
pub async fn run(scratch: &mut Scratch, rate: f64, seconds: f64) -> anyhow::Result<PoisonFigures> {
    eprintln!("    clean");
    let clean = open_loop(scratch, "clean", rate, seconds, false).await?;
    eprintln!("    one order poisoned");
    let poisoned = open_loop(scratch, "poisoned", rate, seconds, true).await?;
    let redriven = poisoned
        .redriven
        .context("the poisoned run redrove no letter")?;
    Ok(PoisonFigures {
        orders_per_second: rate,
        records_per_order: STEPS,
        seconds,
        clean: clean.others,
        poisoned: poisoned.others,
        parked_before_redrive: redriven.parked_before,
        redrive_to_applied_ms: redriven.to_applied_ms,
        applied_in_order: redriven.applied_in_order,
    })
}

struct LoopRun {
    others: RecordLatency,
    redriven: Option<Redriven>,
}

struct Redriven {
    parked_before: i64,
    to_applied_ms: f64,
    applied_in_order: bool,
}

/// One open loop on topics and a database of its own, `poison`ed or not.
async fn open_loop(
    scratch: &mut Scratch,
    label: &str,
    rate: f64,
    seconds: f64,
    poison: bool,
) -> anyhow::Result<LoopRun> {
    let orders: Vec<Uuid> = (0..(rate * seconds) as usize)
        .map(|_| Uuid::now_v7())
        .collect();
    let poisoned = poison.then(|| orders[(orders.len() as f64 * POISONED_AT) as usize]);
    let pipeline = Pipeline::start(scratch, label, poisoned).await?;
    let started = Instant::now();
    let redrive = poisoned.map(|order| {
        pipeline.redrive_at(
            started + Duration::from_secs_f64(seconds * REDRIVE_AT),
            order,
        )
    });
    let appended = pipeline.append_on_schedule(&orders, rate, started).await?;
    let redrive = match redrive {
        Some(task) => Some(task.await??),
        None => None,
    };
    let applied = pipeline.finish(1 + (orders.len() * STEPS) as i64).await?;
    Ok(LoopRun::of(&applied, &appended, poisoned, redrive))
}

impl LoopRun {
    /// The other orders' latencies, and what became of the `poisoned` order after its
    /// `redrive` (when, and how many records were parked before it).
    fn of(
        applied: &[AppliedRecord],
        appended: &HashMap<Uuid, DateTime<Utc>>,
        poisoned: Option<Uuid>,
        redrive: Option<(DateTime<Utc>, i64)>,
    ) -> Self {
        let mut others = Vec::with_capacity(applied.len());
        let mut poisoned_steps = Vec::new();
        let mut poisoned_last = None;
        for &(event_id, order, step, applied_at) in applied {
            if Some(order) == poisoned {
                poisoned_steps.push(step);
                poisoned_last = Some(applied_at);
            } else if let Some(appended_at) = appended.get(&event_id) {
                // (The warm-up record is not timed.)
                others.push((applied_at - *appended_at).as_seconds_f64() * 1000.0);
            }
        }
        let redriven = match (redrive, poisoned_last) {
            (Some((redriven_at, parked_before)), Some(last)) => Some(Redriven {
                parked_before,
                to_applied_ms: (last - redriven_at).as_seconds_f64() * 1000.0,
                applied_in_order: poisoned_steps == (0..STEPS as i32).collect::<Vec<_>>(),
            }),
            _ => None,
        };
        Self {
            others: RecordLatency::of(others),
            redriven,
        }
    }
}

impl PoisonFigures {
    /// The target: the other orders' p99 within a tenth of the clean run's.
    pub fn target_row(&self) -> TargetRow {
        let ratio = self.p99_ratio();
        (
            format!(
                "one poisoned order: other orders' p99 <= 110% of a clean run, at {:.0} orders/s",
                self.orders_per_second
            ),
            format!(
                "{:.0} ms against {:.0} ms, {:.0}%",
                self.poisoned.p99_ms,
                self.clean.p99_ms,
                ratio * 100.0
            ),
            ratio <= 1.1 && self.applied_in_order,
        )
    }

    pub fn markdown(&self, md: &mut String) {
        let _ = writeln!(
            md,
            "## One poisoned order on a partition ({:.0} orders/s, {} s)\n",
            self.orders_per_second, self.seconds
        );
        let _ = writeln!(
            md,
            "Each order is {} records {} ms apart on one partition, through outbox, relay, broker and consumer \
             runner. In the second run, one order's first record is refused (dead-lettered) until its cause is \
             mended, {:.0}% into the run; its order's later records park behind the letter while every other \
             order flows. The cause is mended and the letter redriven {:.0}% into the run. Latency is each \
             record's, from its outbox commit to its effect's commit, over every order but the poisoned one.\n",
            self.records_per_order,
            STEP_GAP.as_millis(),
            POISONED_AT * 100.0,
            REDRIVE_AT * 100.0
        );
        let _ = writeln!(
            md,
            "| run | records | p50 ms | p99 ms | max ms |\n| --- | ---: | ---: | ---: | ---: |"
        );
        for (run, latency) in [
            ("clean", &self.clean),
            ("one order poisoned", &self.poisoned),
        ] {
            let _ = writeln!(
                md,
                "| {run} | {} | {:.0} | {:.0} | {:.0} |",
                latency.records, latency.p50_ms, latency.p99_ms, latency.max_ms
            );
        }
        let _ = writeln!(
            md,
            "\nThe poisoned order: {} record(s) parked behind its letter before the redrive; after it, all {} \
             applied {} in {:.0} ms.\n",
            self.parked_before_redrive,
            self.records_per_order,
            if self.applied_in_order {
                "in the order they came"
            } else {
                "**out of order**"
            },
            self.redrive_to_applied_ms
        );
    }
}
