//! One poisoned order among many on one partition. The consumer runner dead-letters the
//! order's first record, parks the order's later records behind it, and keeps every other
//! order flowing; mid-run the benchmark mends the cause and redrives the letter, and the
//! parked records apply after it, in the order they came.
//!
//! Two open loops of the same rate run the whole path (outbox, relay, broker, runner): one
//! clean, one with the poisoned order. Each order is a few records a short gap apart, as a
//! saga's steps are; the figure is each record's latency from its outbox commit to its
//! effect's commit, over every order but the poisoned one.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use chrono::{DateTime, Utc};
use serde::Serialize;
use shared_events::contracts::{Event, OrderCancelled, Topic};
use shared_events::dead_letter::read_dead_letters;
use shared_events::redrive::redrive_dead_letters;
use shared_events::{
    ConsumerConfig, ConsumerSettings, EventHandler, EventMetrics, HandlerError, IdempotentConsumer,
    KafkaConfig, Outbox, OutboxRelay, Pace, RelayConfig, RetryConfig, TopicNames,
};
use sqlx::{PgConnection, PgPool};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::demo::TargetRow;
use crate::scratch::Scratch;

/// Records per order, and the gap between one order's records.
const STEPS: usize = 3;
const STEP_GAP: Duration = Duration::from_millis(100);
/// Where in the run the poisoned order starts, and where its letter is redriven.
const POISONED_AT: f64 = 0.25;
const REDRIVE_AT: f64 = 0.6;
/// Longest the records may take to apply (the warm-up's, or the rest once the last is
/// appended).
const DRAIN_LIMIT: Duration = Duration::from_secs(120);

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

/// The table the handler writes one row per record to, in the order it applies them.
const STEPS_TABLE: &str = "CREATE TABLE bench_steps (
    event_id uuid PRIMARY KEY,
    order_id uuid NOT NULL,
    step int NOT NULL,
    applied bigint GENERATED ALWAYS AS IDENTITY,
    applied_at timestamptz NOT NULL DEFAULT clock_timestamp()
)";

/// One open loop on topics and a database of its own.
async fn open_loop(
    scratch: &mut Scratch,
    label: &str,
    rate: f64,
    seconds: f64,
    poison: bool,
) -> anyhow::Result<LoopRun> {
    let (kafka, names, codec) = scratch.topics(&format!("poison-{label}"), 1).await?;
    let url = scratch.database(&format!("poison_{label}"), None).await?;
    let pool = Scratch::pool(&url, 10).await?;
    sqlx::query(STEPS_TABLE).execute(&pool).await?;
    let outbox = Outbox::new(codec.clone(), names.clone());
    let orders: Vec<Uuid> = (0..(rate * seconds) as usize)
        .map(|_| Uuid::now_v7())
        .collect();
    let poisoned = poison.then(|| orders[(orders.len() as f64 * POISONED_AT) as usize]);
    let fixed = Arc::new(AtomicBool::new(false));

    let shutdown = CancellationToken::new();
    let relay = OutboxRelay::new(
        pool.clone(),
        &outbox,
        &kafka,
        RelayConfig::default(),
        RetryConfig::default(),
        EventMetrics::unregistered(),
    )?;
    let relay = tokio::spawn(relay.run(shutdown.clone()));
    let consumer = IdempotentConsumer::new(
        ConsumerSettings {
            kafka: kafka.clone(),
            group_id: format!("{}steps", kafka.topic_prefix),
            retry: RetryConfig::default(),
            batching: ConsumerConfig::default(),
            pace: Pace::Saga,
        },
        pool.clone(),
        codec,
        outbox.clone(),
        StepHandler {
            poisoned,
            fixed: fixed.clone(),
        },
        EventMetrics::unregistered(),
    )?;
    let consumer = tokio::spawn(consumer.run(shutdown.clone()));
    // The timed window starts warm: group joined, relay and consumer through a record.
    let warm_up = Event::first_of_order(
        Uuid::now_v7(),
        "orderflow-bench",
        OrderCancelled {
            reason: "step 0".into(),
        },
    );
    let mut tx = pool.begin().await?;
    outbox.append(&mut tx, &[warm_up]).await?;
    outbox.commit(tx).await?;
    wait_until_applied(&pool, 1, label).await?;

    let started = Instant::now();
    let redrive = poisoned.map(|order| {
        let (pool, kafka, names, fixed) =
            (pool.clone(), kafka.clone(), names.clone(), fixed.clone());
        let at = started + Duration::from_secs_f64(seconds * REDRIVE_AT);
        tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            redrive_poisoned(&pool, &kafka, &names, order, &fixed).await
        })
    });
    let appended = append_on_schedule(&pool, &outbox, &orders, rate, started).await?;
    let redrive = match redrive {
        Some(task) => Some(task.await??),
        None => None,
    };
    wait_until_applied(&pool, 1 + (orders.len() * STEPS) as i64, label).await?;
    shutdown.cancel();
    relay.await??;
    consumer.await??;

    let applied: Vec<(Uuid, Uuid, i32, DateTime<Utc>)> = sqlx::query_as(
        "SELECT event_id, order_id, step, applied_at FROM bench_steps ORDER BY applied",
    )
    .fetch_all(&pool)
    .await?;
    let still_parked: i64 = sqlx::query_scalar("SELECT count(*) FROM parked_records")
        .fetch_one(&pool)
        .await?;
    ensure!(
        still_parked == 0,
        "{label}: {still_parked} records still parked"
    );
    pool.close().await;

    let mut others = Vec::with_capacity(applied.len());
    let mut poisoned_steps = Vec::new();
    let mut poisoned_last = None;
    for (event_id, order, step, applied_at) in applied {
        if Some(order) == poisoned {
            poisoned_steps.push(step);
            poisoned_last = Some(applied_at);
            continue;
        }
        // The warm-up record is not timed.
        if let Some(appended_at) = appended.get(&event_id) {
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
    Ok(LoopRun {
        others: RecordLatency::of(others),
        redriven,
    })
}

/// Appends each order's records at their times (order `i` at `i / rate` seconds, its
/// records [`STEP_GAP`] apart), one transaction each; returns when each was committed.
async fn append_on_schedule(
    pool: &PgPool,
    outbox: &Outbox,
    orders: &[Uuid],
    rate: f64,
    started: Instant,
) -> anyhow::Result<HashMap<Uuid, DateTime<Utc>>> {
    let mut schedule: Vec<(Duration, Uuid, usize)> = orders
        .iter()
        .enumerate()
        .flat_map(|(i, &order)| {
            let start = Duration::from_secs_f64(i as f64 / rate);
            (0..STEPS).map(move |step| (start + STEP_GAP * step as u32, order, step))
        })
        .collect();
    schedule.sort_by_key(|(at, _, _)| *at);
    let mut appended = HashMap::with_capacity(schedule.len());
    for (at, order, step) in schedule {
        tokio::time::sleep_until(started + at).await;
        let event = Event::first_of_order(
            order,
            "orderflow-bench",
            OrderCancelled {
                reason: format!("step {step}"),
            },
        );
        let record = outbox
            .record(&event)
            .instrument(tracing::info_span!("bench_append"))
            .await?;
        let mut tx = pool.begin().await?;
        outbox.insert(&mut tx, &[record]).await?;
        outbox.commit(tx).await?;
        appended.insert(event.metadata.event_id, Utc::now());
    }
    Ok(appended)
}

/// Waits for the poisoned order's letter, mends its cause and redrives it; returns when,
/// and how many records were parked behind it just before.
async fn redrive_poisoned(
    pool: &PgPool,
    kafka: &KafkaConfig,
    names: &TopicNames,
    order: Uuid,
    fixed: &AtomicBool,
) -> anyhow::Result<(DateTime<Utc>, i64)> {
    let dlq = names.dead_letter(Topic::Orders);
    let deadline = Instant::now() + DRAIN_LIMIT;
    let letter = loop {
        let (kafka, dlq) = (kafka.clone(), dlq.clone());
        let letters =
            tokio::task::spawn_blocking(move || read_dead_letters(&kafka, &dlq)).await??;
        if let Some(letter) = letters.into_iter().next() {
            break letter;
        }
        ensure!(
            Instant::now() < deadline,
            "the poisoned record was never dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let parked_before: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM parked_records r JOIN parked_orders o USING (consumer_group, order_key)
         WHERE o.order_key = $1",
    )
    .bind(order.to_string())
    .fetch_one(pool)
    .await?;
    fixed.store(true, Ordering::SeqCst);
    let redriven_at = Utc::now();
    let redriven = redrive_dead_letters(
        kafka,
        &names.name(Topic::Orders),
        Some(&[(letter.partition, letter.offset)]),
        None,
    )
    .await?;
    ensure!(
        redriven.sent == 1,
        "the redrive sent {} records",
        redriven.sent
    );
    Ok((redriven_at, parked_before))
}

/// Waits until `records` are applied, for at most [`DRAIN_LIMIT`].
async fn wait_until_applied(pool: &PgPool, records: i64, label: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + DRAIN_LIMIT;
    loop {
        let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM bench_steps")
            .fetch_one(pool)
            .await?;
        if applied >= records {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{label}: {applied} of {records} records applied after {DRAIN_LIMIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Writes one row per record, in one statement per batch. It refuses the poisoned order's
/// first record until the cause is `fixed`, as a handler refuses a record its state cannot
/// take until an operator mends the state.
struct StepHandler {
    poisoned: Option<Uuid>,
    fixed: Arc<AtomicBool>,
}

impl EventHandler for StepHandler {
    const EVENT_TYPES: &'static [&'static str] = &["OrderCancelled"];

    async fn handle(
        &self,
        events: &[&Event],
        tx: &mut PgConnection,
    ) -> Result<Vec<Event>, HandlerError> {
        let mut ids = Vec::with_capacity(events.len());
        let mut orders = Vec::with_capacity(events.len());
        let mut steps = Vec::with_capacity(events.len());
        for event in events {
            let step = step_of(event)?;
            let order = event.metadata.order_id;
            if order.is_some()
                && order == self.poisoned
                && step == 0
                && !self.fixed.load(Ordering::SeqCst)
            {
                return Err(HandlerError::Rejected(
                    "the benchmark's poisoned record: refused until its cause is mended".into(),
                ));
            }
            ids.push(event.metadata.event_id);
            orders.push(order.unwrap_or_default());
            steps.push(step);
        }
        sqlx::query(
            "INSERT INTO bench_steps (event_id, order_id, step)
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::int[])",
        )
        .bind(ids)
        .bind(orders)
        .bind(steps)
        .execute(tx)
        .await?;
        Ok(Vec::new())
    }
}

fn step_of(event: &Event) -> Result<i32, HandlerError> {
    let shared_events::contracts::EventPayload::OrderCancelled(cancelled) = &event.payload else {
        return Err(HandlerError::Rejected(format!(
            "not a step: {}",
            event.event_type()
        )));
    };
    cancelled
        .reason
        .strip_prefix("step ")
        .and_then(|step| step.parse().ok())
        .ok_or_else(|| HandlerError::Rejected(format!("not a step: {}", cancelled.reason)))
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
