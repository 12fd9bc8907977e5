//! The idempotent consumer runner. It takes records in batches (whatever has arrived, up to a
//! limit), skips the event types its handler does not take without a transaction, decodes
//! the rest, and applies them in one Postgres transaction that records each event id in
//! `processed_events` beside the handler's effects and outgoing events ([`batch`]). Offsets
//! are stored only after the commit. Handlers see each event's effect once, however often
//! Kafka delivers it, one order's events in order, and a batch's records of several
//! partitions in the order they were published (`publish_order.rs`).
//!
//! This file is the loop: join, fill a batch, settle it (retrying, pausing), rejoin when
//! stalled. One attempt at a batch (decode, apply, dead-letter) is `step.rs`, its
//! transaction [`batch`] (record by record when it must be, `record_by_record.rs`), and an
//! order held back behind its dead letter [`parking`]; the pauses are `pausing.rs`, membership and stalls `membership.rs`
//! and [`stall`], leaving the group `close.rs`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use rdkafka::Message;
use rdkafka::consumer::{Consumer, MessageStream, StreamConsumer};
use rdkafka::message::OwnedMessage;
use sqlx::PgPool;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::warn;

pub mod batch;
mod close;
pub mod gate;
mod handler;
pub mod held_back;
mod membership;
pub mod parking;
mod pausing;
mod publish_order;
mod rebalance;
mod record_by_record;
pub mod stall;
mod step;

use batch::{Applier, Mode, Verdict, settled_prefix};
pub use close::finish_abandoned_closes;
use close::{CLOSE_TIMEOUT, close_within};
use gate::{PartitionGate, TopicPartition};
pub use handler::{EventHandler, HandlerError};
use held_back::HeldBack;
use membership::{PROGRESS_READ_INTERVAL, STALLED_AFTER_SESSIONS, join};
use pausing::{DATABASE_PROBE_INTERVAL, DatabaseProbe};
use rebalance::{ReassignedPartitions, RebalanceTracker};
use stall::{ProgressRead, ProgressReader, Stall, StallJudge};
use step::{BatchStep, event_type_label};

use crate::codec::RegistryCodec;
use crate::contracts::topics_of;
use crate::dead_letter::DeadLetterPublisher;
use crate::error::Error;
use crate::kafka::KafkaConfig;
use crate::metrics::{EventMetrics, RecordLabels, TopicLabels};
use crate::outbox::Outbox;
use crate::retry::RetryConfig;
use crate::stopping::grace_over;
use crate::topics::TopicNames;

/// How long the batch in hand may go on after shutdown before it is dropped (its records
/// come again): a healthy batch takes milliseconds, one stuck on a database call that does
/// not answer would hold the exit for that call's bound (30 s).
const BATCH_GRACE: Duration = Duration::from_secs(3);

/// How the runner batches records.
#[derive(Debug, Clone, clap::Args)]
pub struct ConsumerConfig {
    /// Most records applied in one database transaction.
    #[arg(
        long = "consumer-batch-max-records",
        env = "CONSUMER_BATCH_MAX_RECORDS",
        default_value_t = 500
    )]
    pub batch_max_records: usize,
    /// How long a batch waits for more records after its first; 0 takes only what has
    /// already arrived (no added latency; under load, batches fill by themselves).
    #[arg(
        long = "consumer-batch-max-wait-ms",
        env = "CONSUMER_BATCH_MAX_WAIT_MS",
        default_value_t = 0
    )]
    pub batch_max_wait_ms: u64,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        crate::settings::defaults()
    }
}

/// Who the consumer is and how it runs; it reads the topics its handler's event types
/// travel on.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    pub kafka: KafkaConfig,
    pub group_id: String,
    pub retry: RetryConfig,
    pub batching: ConsumerConfig,
    pub pace: Pace,
}

/// How closely the runner follows its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pace {
    /// A step of the saga: fetches wait at most the configured `fetch.wait.max.ms`, the
    /// group's progress is read every few seconds, and its lag is the service's
    /// `consumer_lag` (admission control and the lag alert read it).
    #[default]
    Saga,
    /// Requests that are rare and may wait seconds (an operator's): idle fetches wait
    /// [`SELDOM_FETCH_WAIT_MS`] and the progress is read every [`SELDOM_PROGRESS_READ`],
    /// so an idle consumer costs the broker a fraction of a saga consumer; its lag is not
    /// the service's. Stalls are still judged, on fewer readings.
    Seldom,
}

/// A `Seldom` consumer's `fetch.wait.max.ms`: a record that arrives is still answered at
/// once; this bounds idle polling, and stays under the progress reads' timeout (5 s), which
/// wait behind the fetch on the member's connection.
pub const SELDOM_FETCH_WAIT_MS: u32 = 3_000;
/// How often a `Seldom` consumer reads its group's progress.
pub const SELDOM_PROGRESS_READ: Duration = Duration::from_secs(30);

/// Runs an [`EventHandler`] over a consumer group's records until shutdown.
pub struct IdempotentConsumer<H> {
    /// Shared with the reads of the group's progress, which use the member's own client.
    consumer: Arc<StreamConsumer<RebalanceTracker>>,
    reassigned: ReassignedPartitions,
    group_id: String,
    kafka: KafkaConfig,
    topics: Vec<String>,
    progress: ProgressReader,
    /// How often the group's progress is read, and how long a partition may lag with its
    /// commit frozen before it counts as stalled.
    stall_check: Duration,
    stall_after: Duration,
    pace: Pace,
    step: BatchStep<H>,
    retry: RetryConfig,
    batching: ConsumerConfig,
    metrics: EventMetrics,
}

/// A record in hand, with its partition.
struct Record {
    partition: TopicPartition,
    message: OwnedMessage,
}

/// Why consuming as this member ended.
enum Ended {
    Stopped,
    /// Partitions of the group nobody consumes, or no reading of them: rejoin as a new
    /// member with a new client.
    Stalled(Stall),
}

/// How a batch ended.
enum BatchEnd {
    /// Every record is settled (its offset may pass), or its partition is paused for a
    /// cool-down.
    Settled,
    /// Shutdown came during a retry delay: what is not done is delivered again.
    Interrupted,
}

impl<H: EventHandler> IdempotentConsumer<H> {
    /// A consumer in `settings.group_id` of the topics `H::EVENT_TYPES` travel on. Outgoing
    /// events go to `outbox`, whose relay each commit wakes.
    pub fn new(
        settings: ConsumerSettings,
        pool: PgPool,
        codec: RegistryCodec,
        outbox: Outbox,
        handler: H,
        metrics: EventMetrics,
    ) -> Result<Self, Error> {
        let topics = topics_of(H::EVENT_TYPES)?;
        let names = TopicNames::new(settings.kafka.topic_prefix.clone());
        let reassigned = Arc::new(Mutex::new(Vec::new()));
        let topic_names: Vec<String> = topics.iter().map(|t| names.name(*t)).collect();
        let session = Duration::from_millis(u64::from(settings.kafka.session_timeout_ms));
        let mut kafka = settings.kafka.clone();
        let stall_check = match settings.pace {
            Pace::Saga => session.min(PROGRESS_READ_INTERVAL),
            Pace::Seldom => {
                kafka.fetch_wait_max_ms = kafka.fetch_wait_max_ms.max(SELDOM_FETCH_WAIT_MS);
                SELDOM_PROGRESS_READ
            }
        };
        let consumer = join(&kafka, &settings.group_id, &topic_names, &reassigned)?;
        Ok(Self {
            consumer,
            reassigned,
            progress: ProgressReader::new(topic_names.clone()),
            topics: topic_names,
            kafka,
            pace: settings.pace,
            stall_check,
            stall_after: session * STALLED_AFTER_SESSIONS,
            step: BatchStep {
                group_id: settings.group_id.clone(),
                codec,
                applier: Applier::new(pool, settings.group_id.clone(), handler, outbox),
                dead_letters: DeadLetterPublisher::new(&settings.kafka),
                metrics: metrics.clone(),
            },
            group_id: settings.group_id,
            retry: settings.retry,
            batching: settings.batching,
            metrics,
        })
    }

    /// Consumes until `shutdown` is cancelled. The batch in hand is finished, or dropped
    /// for redelivery if it takes longer than [`BATCH_GRACE`]; the stored offsets are
    /// committed and the group left, within a bounded wait.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), Error> {
        let mut judge = StallJudge::new(self.stall_after);
        loop {
            let ended = tokio::select! {
                ended = self.consume(&shutdown, &mut judge) => ended,
                () = grace_over(&shutdown, BATCH_GRACE) => {
                    warn!(group = %self.group_id, grace = ?BATCH_GRACE,
                        "the batch in hand did not finish in its grace after shutdown; dropped, its records come again");
                    Ended::Stopped
                }
            };
            let Ended::Stalled(stall) = ended else { break };
            match stall {
                Stall::Partitions(partitions) => {
                    let names: Vec<String> = partitions.iter().map(ToString::to_string).collect();
                    warn!(group = %self.group_id, partitions = ?names,
                        "partitions of the group lag and nobody commits them; leaving and rejoining the group as a new member");
                    for partition in &partitions {
                        self.metrics
                            .partitions_stalled
                            .get_or_create(&TopicLabels {
                                topic: partition.topic.clone(),
                            })
                            .inc();
                        if let Some((committed, frozen_since)) = judge.frozen(partition) {
                            let since = chrono::Utc::now()
                                - chrono::TimeDelta::from_std(frozen_since.elapsed())
                                    .unwrap_or_default();
                            // Never committed reads from the start (`auto.offset.reset`
                            // is earliest): committing 0 says the same.
                            let at = committed.unwrap_or(0);
                            self.say_held_back(partition, at, &HeldBack::Stalled { since });
                        }
                    }
                }
                Stall::Unreadable(failing) => {
                    warn!(group = %self.group_id, seconds = failing.as_secs(),
                        "the group's progress has been unreadable; leaving and rejoining the group as a new member with a new client");
                }
            }
            self.metrics.rejoins.inc();
            let fresh = join(&self.kafka, &self.group_id, &self.topics, &self.reassigned)?;
            let stale = std::mem::replace(&mut self.consumer, fresh);
            close_within(stale, &self.group_id, CLOSE_TIMEOUT).await;
            self.reassigned
                .lock()
                .expect("rebalance list poisoned")
                .clear();
            judge.reset();
        }
        close_within(self.consumer, &self.group_id, CLOSE_TIMEOUT).await;
        Ok(())
    }

    /// Consumes as the current group member until shutdown, or until partitions of the
    /// group are found stalled.
    async fn consume(&self, shutdown: &CancellationToken, judge: &mut StallJudge) -> Ended {
        let mut gate = PartitionGate::new(self.retry.cool_down());
        // The handler's own database: the one a pause may have waited on.
        let mut database = DatabaseProbe::new(self.step.applier.pool().clone());
        let mut next_probe = Instant::now();
        let mut next_check = Instant::now() + self.stall_check;
        let mut progress: Option<ProgressRead> = None;
        let mut stream = self.consumer.stream();
        loop {
            let next_resume = gate.next_resume();
            if next_resume.is_none() {
                database.forget();
            }
            let first = tokio::select! {
                biased;
                () = shutdown.cancelled() => return Ended::Stopped,
                () = sleep_until(next_resume), if next_resume.is_some() => {
                    self.resume_due(&mut gate);
                    continue;
                }
                () = tokio::time::sleep_until(next_probe), if next_resume.is_some() => {
                    next_probe = Instant::now() + DATABASE_PROBE_INTERVAL;
                    if database.came_back().await {
                        tracing::info!("the database answers again: paused partitions retry now");
                        gate.end_pauses();
                        self.resume_due(&mut gate);
                    }
                    continue;
                }
                () = tokio::time::sleep_until(next_check), if progress.is_none() => {
                    progress = Some(self.progress.start(&self.consumer));
                    continue;
                }
                read = async { progress.as_mut().expect("a read is under way").await },
                    if progress.is_some() =>
                {
                    progress = None;
                    next_check = Instant::now() + self.stall_check;
                    if let Some(stall) = self.stall(read, judge, &gate) {
                        return Ended::Stalled(stall);
                    }
                    continue;
                }
                received = stream.next() => received,
            };
            let mut batch = Vec::new();
            self.take(first, &mut batch);
            self.fill(&mut stream, &mut batch).await;
            self.forget_reassigned(&mut gate);
            batch.retain(|record| gate.admit(&record.partition, record.message.offset()));
            if batch.is_empty() {
                continue;
            }
            let batch = publish_order::in_publish_order(batch, |record| {
                (
                    record.partition.clone(),
                    record.message.timestamp().to_millis(),
                )
            });
            self.metrics.batch_size.observe(batch.len() as f64);
            if let BatchEnd::Interrupted = self.settle(batch, &mut gate, shutdown).await {
                return Ended::Stopped;
            }
        }
    }

    /// Adds what has already arrived to `batch`, up to the batch limit, waiting at most the
    /// configured time for more.
    async fn fill(
        &self,
        stream: &mut MessageStream<'_, RebalanceTracker>,
        batch: &mut Vec<Record>,
    ) {
        let deadline = Instant::now() + Duration::from_millis(self.batching.batch_max_wait_ms);
        while batch.len() < self.batching.batch_max_records {
            let received = match stream.next().now_or_never() {
                Some(received) => received,
                None if Instant::now() < deadline => {
                    match tokio::time::timeout_at(deadline, stream.next()).await {
                        Ok(received) => received,
                        Err(_) => break,
                    }
                }
                None => break,
            };
            self.take(received, batch);
        }
    }

    fn take(
        &self,
        received: Option<Result<rdkafka::message::BorrowedMessage<'_>, rdkafka::error::KafkaError>>,
        batch: &mut Vec<Record>,
    ) {
        match received {
            Some(Ok(message)) => batch.push(Record {
                partition: TopicPartition::new(message.topic(), message.partition()),
                message: message.detach(),
            }),
            Some(Err(e)) => {
                warn!(error = %e, "kafka consumer error; librdkafka recovers by itself")
            }
            None => {}
        }
    }

    /// Applies `batch`, retrying what failed transiently with backoff; a partition whose
    /// record still fails is paused for a cool-down. Offsets move as records are done.
    async fn settle(
        &self,
        batch: Vec<Record>,
        gate: &mut PartitionGate,
        shutdown: &CancellationToken,
    ) -> BatchEnd {
        let mut remaining: Vec<&Record> = batch.iter().collect();
        let mut delays = self.retry.delays();
        // After a record failed, retries go record by record: the batch call would only
        // fail on it again.
        let mut mode = Mode::Together;
        loop {
            let verdicts = self.step.attempt(&remaining, mode).await;
            mode = Mode::OneByOne;
            let settled = remaining
                .iter()
                .zip(&verdicts)
                .map(|(r, verdict)| (&r.partition, r.message.offset(), verdict.is_settled()));
            for (partition, offset) in settled_prefix(settled) {
                if let Err(e) =
                    self.consumer
                        .store_offset(&partition.topic, partition.partition, offset)
                {
                    // The partition was revoked meanwhile; its new owner redelivers and
                    // processed_events turns that into a skipped duplicate.
                    warn!(error = %e, %partition, "could not store offset");
                }
            }
            if verdicts.iter().all(Verdict::is_settled) {
                return BatchEnd::Settled;
            }
            let mut failures: HashMap<&TopicPartition, &str> = HashMap::new();
            for (record, verdict) in remaining.iter().zip(&verdicts) {
                let Verdict::Failed(reason) = verdict else {
                    continue;
                };
                failures.insert(&record.partition, reason);
                let labels =
                    RecordLabels::new(record.message.topic(), &event_type_label(&record.message));
                self.metrics.retried.get_or_create(&labels).inc();
                warn!(partition = %record.partition, offset = record.message.offset(), %reason,
                    "transient failure");
            }
            let rest = from_first_unsettled(&remaining, &verdicts);
            let Some(delay) = delays.next() else {
                self.pause(&rest, &failures, gate);
                return BatchEnd::Settled;
            };
            remaining = rest;
            tokio::select! {
                () = shutdown.cancelled() => return BatchEnd::Interrupted,
                () = tokio::time::sleep(delay) => {}
            }
        }
    }
}

/// The records to retry: each partition's records from its first unsettled one on.
fn from_first_unsettled<'r>(records: &[&'r Record], verdicts: &[Verdict]) -> Vec<&'r Record> {
    let mut failed: HashSet<&TopicPartition> = HashSet::new();
    let mut retry = Vec::new();
    for (record, verdict) in records.iter().zip(verdicts) {
        if !verdict.is_settled() {
            failed.insert(&record.partition);
        }
        if failed.contains(&record.partition) {
            retry.push(*record);
        }
    }
    retry
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
