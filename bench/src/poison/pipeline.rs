//! The path one poisoned-order run drives: outbox, relay, broker and consumer runner on
//! topics and a database of their own, with a handler that writes one row per record and
//! refuses the poisoned order's first record until its cause is mended.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{bail, ensure};
use chrono::{DateTime, Utc};
use shared_events::contracts::{Event, EventPayload, OrderCancelled, Topic};
use shared_events::dead_letter::read_dead_letters;
use shared_events::redrive::redrive_dead_letters;
use shared_events::{
    ConsumerConfig, ConsumerSettings, EventHandler, EventMetrics, HandlerError, IdempotentConsumer,
    KafkaConfig, Outbox, OutboxRelay, Pace, RelayConfig, RetryConfig, TopicNames,
};
use sqlx::{PgConnection, PgPool};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use super::{STEP_GAP, STEPS};
use crate::scratch::Scratch;

/// Longest the records may take to apply (the warm-up's, or the rest once the last is
/// appended).
const DRAIN_LIMIT: Duration = Duration::from_secs(120);

/// The table the handler writes one row per record to, in the order it applies them.
const STEPS_TABLE: &str = "CREATE TABLE bench_steps (
    event_id uuid PRIMARY KEY,
    order_id uuid NOT NULL,
    step int NOT NULL,
    applied bigint GENERATED ALWAYS AS IDENTITY,
    applied_at timestamptz NOT NULL DEFAULT clock_timestamp()
)";

/// One applied record: its event id, its order, its step, when it applied.
pub type AppliedRecord = (Uuid, Uuid, i32, DateTime<Utc>);

/// A running path: relay and consumer started, and warm.
pub struct Pipeline {
    label: String,
    pool: PgPool,
    outbox: Outbox,
    kafka: KafkaConfig,
    names: TopicNames,
    fixed: Arc<AtomicBool>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<Result<(), shared_events::Error>>>,
}

impl Pipeline {
    /// Starts the relay and the consumer, whose handler refuses `poisoned`'s first record
    /// until mended, and returns once a warm-up record went through (group joined, relay and
    /// consumer past their first record): the timed window starts warm.
    pub async fn start(
        scratch: &mut Scratch,
        label: &str,
        poisoned: Option<Uuid>,
    ) -> anyhow::Result<Self> {
        let (kafka, names, codec) = scratch.topics(&format!("poison-{label}"), 1).await?;
        let url = scratch.database(&format!("poison_{label}"), None).await?;
        let pool = Scratch::pool(&url, 10).await?;
        sqlx::query(STEPS_TABLE).execute(&pool).await?;
        let outbox = Outbox::new(codec.clone(), names.clone());
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
        let tasks = vec![
            tokio::spawn(relay.run(shutdown.clone())),
            tokio::spawn(consumer.run(shutdown.clone())),
        ];
        let pipeline = Self {
            label: label.to_owned(),
            pool,
            outbox,
            kafka,
            names,
            fixed,
            shutdown,
            tasks,
        };
        pipeline.append(&step(Uuid::now_v7(), 0)).await?;
        pipeline.wait_until_applied(1).await?;
        Ok(pipeline)
    }

    /// At `at`, in a task: waits for the poisoned `order`'s letter, mends its cause and
    /// redrives it. The task returns when it redrove, and how many records were parked
    /// behind the letter just before.
    pub fn redrive_at(
        &self,
        at: Instant,
        order: Uuid,
    ) -> JoinHandle<anyhow::Result<(DateTime<Utc>, i64)>> {
        let (pool, kafka, names, fixed) = (
            self.pool.clone(),
            self.kafka.clone(),
            self.names.clone(),
            self.fixed.clone(),
        );
        tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            redrive_poisoned(&pool, &kafka, &names, order, &fixed).await
        })
    }

    /// Appends each order's records at their times (order `i` at `i / rate` seconds after
    /// `started`, its records [`STEP_GAP`] apart), one transaction each; returns when each
    /// was committed.
    pub async fn append_on_schedule(
        &self,
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
        for (at, order, number) in schedule {
            tokio::time::sleep_until(started + at).await;
            let event = step(order, number);
            self.append(&event).await?;
            appended.insert(event.metadata.event_id, Utc::now());
        }
        Ok(appended)
    }

    /// Waits until `records` are applied (the warm-up's included), stops the relay and the
    /// consumer, and returns every applied record in the order they applied.
    pub async fn finish(self, records: i64) -> anyhow::Result<Vec<AppliedRecord>> {
        self.wait_until_applied(records).await?;
        self.shutdown.cancel();
        for task in self.tasks {
            task.await??;
        }
        let applied = sqlx::query_as(
            "SELECT event_id, order_id, step, applied_at FROM bench_steps ORDER BY applied",
        )
        .fetch_all(&self.pool)
        .await?;
        let still_parked: i64 = sqlx::query_scalar("SELECT count(*) FROM parked_records")
            .fetch_one(&self.pool)
            .await?;
        ensure!(
            still_parked == 0,
            "{}: {still_parked} records still parked",
            self.label
        );
        self.pool.close().await;
        Ok(applied)
    }

    async fn append(&self, event: &Event) -> anyhow::Result<()> {
        let record = self
            .outbox
            .record(event)
            .instrument(tracing::info_span!("bench_append"))
            .await?;
        let mut tx = self.pool.begin().await?;
        self.outbox.insert(&mut tx, &[record]).await?;
        self.outbox.commit(tx).await?;
        Ok(())
    }

    /// Waits until `records` are applied, for at most [`DRAIN_LIMIT`].
    async fn wait_until_applied(&self, records: i64) -> anyhow::Result<()> {
        let deadline = Instant::now() + DRAIN_LIMIT;
        loop {
            let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM bench_steps")
                .fetch_one(&self.pool)
                .await?;
            if applied >= records {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{}: {applied} of {records} records applied after {DRAIN_LIMIT:?}",
                    self.label
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Step `number` of `order`: a record the [`StepHandler`] takes.
fn step(order: Uuid, number: usize) -> Event {
    Event::first_of_order(
        order,
        "orderflow-bench",
        OrderCancelled {
            reason: format!("step {number}"),
        },
    )
}

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
    let parked_before: i64 =
        sqlx::query_scalar("SELECT count(*) FROM parked_records WHERE order_key = $1")
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
    let EventPayload::OrderCancelled(cancelled) = &event.payload else {
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
