//! The idempotent consumer runner. For each record: decode; in one Postgres transaction
//! record `(consumer_group, event_id)` in `processed_events` and, only if that row is new,
//! run the handler (its state and outgoing outbox events share the transaction); commit;
//! then store the offset. Handlers see each event's effect once, however often Kafka
//! delivers it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::{Message, Offset, TopicPartitionList};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};
use tracing_opentelemetry::OpenTelemetrySpanExt;

mod close;
mod handler;
mod rebalance;

use close::{CLOSE_TIMEOUT, close_within};
pub use handler::{EventHandler, HandlerError};
use rebalance::{RebalanceTracker, RevokedPartitions};

use crate::codec::RegistryCodec;
use crate::contracts::Event;
use crate::dead_letter::DeadLetterPublisher;
use crate::kafka::KafkaConfig;
use crate::metrics::{DeadLetterLabels, EventMetrics, RecordLabels, TopicLabels};
use crate::retry::RetryConfig;
use crate::topics::{Topic, TopicNames};
use crate::{Error, ErrorClass, trace_context};

/// Who the consumer is and what it reads.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    pub kafka: KafkaConfig,
    pub group_id: String,
    pub topics: Vec<Topic>,
    pub retry: RetryConfig,
}

/// Runs an [`EventHandler`] over a consumer group's records until shutdown.
pub struct IdempotentConsumer<H> {
    consumer: StreamConsumer<RebalanceTracker>,
    revoked: RevokedPartitions,
    group_id: String,
    pool: PgPool,
    codec: RegistryCodec,
    handler: H,
    dead_letters: DeadLetterPublisher,
    retry: RetryConfig,
    metrics: EventMetrics,
}

/// How one record ended.
enum Outcome {
    /// Applied, skipped as a duplicate, or dead-lettered: the offset may be stored.
    Done,
    /// Transient failures outlasted the retries: pause the partition and try again later.
    Stalled,
    /// Shutdown came during a retry delay: leave the offset, the record is delivered again.
    Interrupted,
}

/// A transient failure, retried by the runner.
struct Transient(String);

struct PausedPartition {
    offset: i64,
    resume_at: tokio::time::Instant,
}

impl<H: EventHandler> IdempotentConsumer<H> {
    pub fn new(
        settings: ConsumerSettings,
        pool: PgPool,
        codec: RegistryCodec,
        handler: H,
        metrics: EventMetrics,
    ) -> Result<Self, Error> {
        let names = TopicNames::new(settings.kafka.topic_prefix.clone());
        let revoked = Arc::new(Mutex::new(Vec::new()));
        let context = RebalanceTracker {
            revoked: revoked.clone(),
        };
        let consumer: StreamConsumer<RebalanceTracker> = settings
            .kafka
            .at_least_once_consumer(&settings.group_id)
            .create_with_context(context)
            .map_err(Error::Kafka)?;
        let topic_names: Vec<String> = settings.topics.iter().map(|t| names.name(*t)).collect();
        let topic_refs: Vec<&str> = topic_names.iter().map(String::as_str).collect();
        consumer.subscribe(&topic_refs).map_err(Error::Kafka)?;
        Ok(Self {
            consumer,
            revoked,
            group_id: settings.group_id,
            pool,
            codec,
            handler,
            dead_letters: DeadLetterPublisher::new(&settings.kafka)?,
            retry: settings.retry,
            metrics,
        })
    }

    /// Consumes until `shutdown` is cancelled. The record in hand is always finished (or
    /// left for redelivery) before returning; the stored offsets are committed and the group
    /// left, within a bounded wait.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        let mut paused: HashMap<(String, i32), PausedPartition> = HashMap::new();
        // After a rewind, records already fetched past the rewind point may still arrive;
        // they are skipped until the rewound record itself comes back.
        let mut rewound_to: HashMap<(String, i32), i64> = HashMap::new();
        loop {
            let next_resume = paused.values().map(|p| p.resume_at).min();
            let received = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                () = sleep_until(next_resume), if next_resume.is_some() => {
                    self.resume_due(&mut paused, &mut rewound_to);
                    continue;
                }
                received = self.consumer.recv() => received,
            };
            self.forget_revoked(&mut paused, &mut rewound_to);
            let message = match received {
                Ok(message) => message,
                Err(e) => {
                    warn!(error = %e, "kafka consumer error; librdkafka recovers by itself");
                    continue;
                }
            };
            let partition = (message.topic().to_owned(), message.partition());
            if paused.contains_key(&partition) {
                continue;
            }
            if let Some(&offset) = rewound_to.get(&partition) {
                if message.offset() != offset {
                    continue;
                }
                rewound_to.remove(&partition);
            }
            match self.process_with_retries(&message, &shutdown).await {
                Outcome::Done => {
                    if let Err(e) = self.consumer.store_offset_from_message(&message) {
                        // The partition was revoked meanwhile; its new owner redelivers and
                        // the processed_events row turns that into a skipped duplicate.
                        warn!(error = %e, "could not store offset");
                    }
                }
                Outcome::Stalled => {
                    self.pause(&message, &mut paused);
                }
                Outcome::Interrupted => break,
            }
        }
        close_within(self.consumer, &self.group_id, CLOSE_TIMEOUT).await;
        Ok(())
    }

    async fn process_with_retries(
        &self,
        message: &BorrowedMessage<'_>,
        shutdown: &CancellationToken,
    ) -> Outcome {
        let mut delays = self.retry.delays();
        loop {
            let error = match self.process(message).await {
                Ok(()) => return Outcome::Done,
                Err(Transient(error)) => error,
            };
            let labels = RecordLabels::new(message.topic(), &event_type_header(message));
            self.metrics.retried.get_or_create(&labels).inc();
            let Some(delay) = delays.next() else {
                warn!(topic = message.topic(), partition = message.partition(), offset = message.offset(), %error,
                    "retries exhausted; pausing the partition for a cool-down");
                return Outcome::Stalled;
            };
            warn!(topic = message.topic(), offset = message.offset(), %error, ?delay, "transient failure; retrying");
            tokio::select! {
                () = shutdown.cancelled() => return Outcome::Interrupted,
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// One attempt: `Ok` when the record is finished (applied, duplicate or dead-lettered).
    async fn process(&self, message: &BorrowedMessage<'_>) -> Result<(), Transient> {
        let started = Instant::now();
        let event = match self.codec.decode(message.payload()).await {
            Ok(event) => event,
            Err(e) if e.is_transient() => return Err(Transient(e.to_string())),
            Err(e) => {
                return self
                    .dead_letter(
                        message,
                        &event_type_header(message),
                        e.class(),
                        &e.to_string(),
                    )
                    .await;
            }
        };
        let span = info_span!(
            "handle_event",
            otel.kind = "consumer",
            event_type = event.event_type(),
            event_id = %event.metadata.event_id,
            correlation_id = %event.metadata.correlation_id,
            consumer_group = %self.group_id,
            topic = message.topic(),
            partition = message.partition(),
            offset = message.offset(),
        );
        let headers = message.headers();
        let parent = trace_context::parent_context(
            headers
                .into_iter()
                .flat_map(|h| h.iter())
                .filter_map(|h| Some((h.key, std::str::from_utf8(h.value?).ok()?))),
        );
        let _ = span.set_parent(parent);
        let labels = RecordLabels::new(message.topic(), event.event_type());
        let result = self.apply_once(message, &event).instrument(span).await;
        match result {
            Ok(Applied::Handled) => {
                self.metrics.handled.get_or_create(&labels).inc();
                self.metrics
                    .handler_duration
                    .get_or_create(&labels)
                    .observe(started.elapsed().as_secs_f64());
                Ok(())
            }
            Ok(Applied::Duplicate) => {
                self.metrics.duplicates_skipped.get_or_create(&labels).inc();
                Ok(())
            }
            Ok(Applied::Rejected(reason)) => {
                self.dead_letter(
                    message,
                    event.event_type(),
                    ErrorClass::HandlerRejected,
                    &reason,
                )
                .await
            }
            Err(e) => Err(e),
        }
    }

    async fn apply_once(
        &self,
        message: &BorrowedMessage<'_>,
        event: &Event,
    ) -> Result<Applied, Transient> {
        let transient = |e: sqlx::Error| Transient(e.to_string());
        let mut tx = self.pool.begin().await.map_err(transient)?;
        let inserted = sqlx::query(
            "INSERT INTO processed_events
                 (consumer_group, event_id, event_type, topic, kafka_partition, kafka_offset)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT DO NOTHING",
        )
        .bind(&self.group_id)
        .bind(event.metadata.event_id)
        .bind(event.event_type())
        .bind(message.topic())
        .bind(message.partition())
        .bind(message.offset())
        .execute(&mut *tx)
        .await
        .map_err(transient)?
        .rows_affected();
        if inserted == 0 {
            return Ok(Applied::Duplicate);
        }
        match self.handler.handle(event, &mut tx).await {
            Ok(()) => {
                tx.commit().await.map_err(transient)?;
                Ok(Applied::Handled)
            }
            Err(HandlerError::Rejected(reason)) => Ok(Applied::Rejected(reason)),
            Err(HandlerError::Transient(reason)) => Err(Transient(reason)),
        }
    }

    async fn dead_letter(
        &self,
        message: &BorrowedMessage<'_>,
        event_type: &str,
        class: ErrorClass,
        reason: &str,
    ) -> Result<(), Transient> {
        warn!(
            topic = message.topic(),
            partition = message.partition(),
            offset = message.offset(),
            class = class.as_str(),
            reason,
            "sending record to the dead-letter topic"
        );
        self.dead_letters
            .publish(message, &self.group_id, class, reason)
            .await
            .map_err(|e| Transient(format!("dead-letter publish failed: {e}")))?;
        self.metrics
            .dead_lettered
            .get_or_create(&DeadLetterLabels {
                topic: message.topic().to_owned(),
                event_type: event_type.to_owned(),
                error_class: class.as_str().to_owned(),
            })
            .inc();
        Ok(())
    }

    /// Circuit breaker: stop fetching the partition, rewind it to the stalled record and
    /// try again after the cool-down. Polling goes on, so the group membership stays alive.
    fn pause(
        &self,
        message: &BorrowedMessage<'_>,
        paused: &mut HashMap<(String, i32), PausedPartition>,
    ) {
        let tpl = single_partition(message.topic(), message.partition());
        if let Err(e) = self.consumer.pause(&tpl) {
            warn!(error = %e, "could not pause partition");
        }
        self.metrics
            .partitions_paused
            .get_or_create(&TopicLabels {
                topic: message.topic().to_owned(),
            })
            .inc();
        paused.insert(
            (message.topic().to_owned(), message.partition()),
            PausedPartition {
                offset: message.offset(),
                resume_at: tokio::time::Instant::now() + self.retry.cool_down(),
            },
        );
    }

    fn resume_due(
        &self,
        paused: &mut HashMap<(String, i32), PausedPartition>,
        rewound_to: &mut HashMap<(String, i32), i64>,
    ) {
        let now = tokio::time::Instant::now();
        let due: Vec<_> = paused
            .iter()
            .filter(|(_, p)| p.resume_at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            let Some(state) = paused.remove(&key) else {
                continue;
            };
            let (topic, partition) = &key;
            if let Err(e) = self.consumer.seek(
                topic,
                *partition,
                Offset::Offset(state.offset),
                Duration::from_secs(5),
            ) {
                warn!(error = %e, topic, partition, "could not rewind partition; pausing again");
                paused.insert(
                    key,
                    PausedPartition {
                        offset: state.offset,
                        resume_at: now + self.retry.cool_down(),
                    },
                );
                continue;
            }
            if let Err(e) = self.consumer.resume(&single_partition(topic, *partition)) {
                warn!(error = %e, topic, partition, "could not resume partition");
            }
            info!(
                topic,
                partition,
                offset = state.offset,
                "cool-down over; retrying partition"
            );
            rewound_to.insert(key, state.offset);
        }
    }

    /// A revoked partition's pause is the old owner's business no more.
    fn forget_revoked(
        &self,
        paused: &mut HashMap<(String, i32), PausedPartition>,
        rewound_to: &mut HashMap<(String, i32), i64>,
    ) {
        let revoked = std::mem::take(&mut *self.revoked.lock().expect("revoked list poisoned"));
        for key in revoked {
            paused.remove(&key);
            rewound_to.remove(&key);
        }
    }
}

enum Applied {
    Handled,
    Duplicate,
    Rejected(String),
}

fn event_type_header(message: &BorrowedMessage<'_>) -> String {
    crate::dead_letter::header_value(message, crate::outbox::headers::EVENT_TYPE)
        .and_then(|v| std::str::from_utf8(v).ok())
        .unwrap_or("unknown")
        .to_owned()
}

fn single_partition(topic: &str, partition: i32) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    tpl
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
