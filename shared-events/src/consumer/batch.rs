//! The database side of the runner: a batch of decoded events applied in one transaction.
//!
//! The fast path records every event id in `processed_events` with one multi-row insert,
//! hands the new events to the handler in one call (handlers are set-based), appends
//! everything they cause to the outbox in one more statement and commits once. If the handler
//! fails, the transaction is rolled back and the batch replayed record by record under
//! savepoints, so one bad record costs only itself: a rejected one is rolled back with its
//! dedup row (the runner dead-letters it), a transiently failing one blocks the rest of its
//! partition for a retry, and every other record is kept. That replay, and what parked
//! orders ask of a batch, are `record_by_record.rs` and `parking.rs`.

use std::collections::{HashMap, HashSet};

use opentelemetry::trace::TraceContextExt;
use sqlx::{PgConnection, PgPool};
use tracing::{Instrument, Span, debug};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use uuid::Uuid;

use super::gate::TopicPartition;
use super::handler::{EventHandler, HandlerError};
use super::parking::{self, ParkedRecord};
use crate::contracts::{Event, topics_of};
use crate::database;
use crate::error::ErrorClass;
use crate::outbox::{Outbox, OutboxRecord};

/// A decoded record waiting to be applied.
pub struct Pending {
    pub partition: TopicPartition,
    pub offset: i64,
    pub event: Event,
    /// The record's span (a child of the producer's trace): what it causes continues it.
    pub span: Span,
    /// Read only for what it says of a parked order (the order's cancellation request,
    /// which this handler does not take): never applied nor recorded.
    pub releases_only: bool,
}

/// What became of one record of a batch: the runner's one outcome type, from the decode
/// phase through the transaction to the dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Handled and committed.
    Applied,
    /// Its event id was processed before: nothing done.
    Duplicate,
    /// Not for this handler: nothing to do, no transaction.
    Skipped,
    /// It can never be applied (undecodable, or the handler refused it): nothing of it was
    /// kept; it goes to the dead-letter topic.
    Rejected(Rejection),
    /// Failed in a way a retry may cure: nothing of it was kept.
    Failed(String),
    /// Not attempted: an earlier record of its partition failed.
    Blocked,
    /// Set aside behind its order's dead letter, to apply after the letter's redrive.
    Parked,
}

impl Verdict {
    /// Whether the record is done with, so its offset may move past it.
    pub fn is_settled(&self) -> bool {
        !matches!(self, Verdict::Failed(_) | Verdict::Blocked)
    }
}

/// Why a record goes to the dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// For the metric's label: one of the contracts' types, or `unknown`.
    pub event_type: String,
    pub class: ErrorClass,
    pub reason: String,
}

/// What a batch's transaction did.
#[derive(Debug, Default)]
pub struct Applied {
    /// One per record of the batch, in order.
    pub verdicts: Vec<Verdict>,
    /// Parked records the handler refused when their order's parking ended: for the
    /// dead-letter topic, as the batch's own rejected records are.
    pub rejected_parked: Vec<(ParkedRecord, Rejection)>,
}

/// How to apply a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// In one handler call, falling back to record by record if that fails.
    Together,
    /// Record by record under savepoints (a retry after a record failed).
    OneByOne,
}

/// Applies batches of one consumer group's events through `handler`.
pub struct Applier<H> {
    pub(super) pool: PgPool,
    pub(super) group_id: String,
    pub(super) handler: H,
    pub(super) outbox: Outbox,
    /// Whether the group parks an order behind its dead letter (`parking.rs`).
    pub(super) parks_orders: bool,
}

impl<H: EventHandler> Applier<H> {
    pub fn new(pool: PgPool, group_id: String, handler: H, outbox: Outbox) -> Self {
        Self {
            pool,
            group_id,
            handler,
            outbox,
            // An unknown event type fails the consumer's start before any batch.
            parks_orders: topics_of(H::EVENT_TYPES).is_ok_and(|t| parking::parks_orders(&t)),
        }
    }

    /// Whether the group parks an order behind its dead letter, and so reads the order's
    /// cancellation request even when its handler does not take it.
    pub fn parks_orders(&self) -> bool {
        self.parks_orders
    }

    /// The database the handler's transactions run on.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies `batch` (in offset order per partition) and returns a verdict per record.
    /// `Err` means no record was kept (the transaction itself failed, or the database did
    /// not answer within [`database::ANSWER_LIMIT`]).
    pub async fn apply(&self, batch: &[Pending], mode: Mode) -> Result<Applied, sqlx::Error> {
        if batch.is_empty() {
            return Ok(Applied::default());
        }
        // Within a bound: a connection that stopped answering fails the batch, which is
        // retried on another, instead of holding the consumer forever.
        database::bounded(async {
            if mode == Mode::Together
                && let Some(verdicts) = self.apply_together(batch).await?
            {
                return Ok(verdicts);
            }
            self.apply_one_by_one(batch).await
        })
        .await
    }

    /// The fast path: `None` if the handler failed, or an order of the batch is parked, and
    /// the batch must be replayed record by record.
    async fn apply_together(&self, batch: &[Pending]) -> Result<Option<Applied>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let Some(mut new) = self.record_processed(&mut tx, batch, true).await? else {
            return Ok(None);
        };
        let mut verdicts = Vec::with_capacity(batch.len());
        let mut fresh = Vec::with_capacity(batch.len());
        for pending in batch {
            if pending.releases_only {
                verdicts.push(Verdict::Skipped);
            } else if new.remove(&pending.event.metadata.event_id) {
                verdicts.push(Verdict::Applied);
                fresh.push(pending);
            } else {
                // A duplicate within the batch is recorded once and applied once.
                verdicts.push(Verdict::Duplicate);
            }
        }
        let published = match self.effects(&fresh, &mut tx).await {
            Ok(published) => published,
            Err(error) => {
                // Rolled back when `tx` drops.
                debug!(%error, records = batch.len(), "a batch failed; replaying it record by record");
                return Ok(None);
            }
        };
        tx.commit().await?;
        self.outbox.wake_relay();
        self.handler.committed(&published);
        Ok(Some(Applied {
            verdicts,
            rejected_parked: Vec::new(),
        }))
    }

    /// One record in the caller's savepoint: what it published, or `None` if a duplicate.
    pub(super) async fn apply_one(
        &self,
        pending: &Pending,
        tx: &mut PgConnection,
    ) -> Result<Option<Vec<Event>>, HandlerError> {
        let new = self
            .record_processed(tx, std::slice::from_ref(pending), false)
            .await?
            .unwrap_or_default();
        if new.is_empty() {
            return Ok(None);
        }
        self.effects(&[pending], tx).await.map(Some)
    }

    /// Runs the handler over `fresh` and appends what it publishes to the outbox. Each
    /// outgoing event is encoded in the span of the record that caused it, so it carries
    /// (and its consumers continue) that record's trace.
    async fn effects(
        &self,
        fresh: &[&Pending],
        tx: &mut PgConnection,
    ) -> Result<Vec<Event>, HandlerError> {
        if fresh.is_empty() {
            return Ok(Vec::new());
        }
        let events: Vec<&Event> = fresh.iter().map(|p| &p.event).collect();
        // One record runs in its own span; a batch in a span of its own that links every
        // record's (OpenTelemetry's model for work on many messages at once).
        let handling = match fresh {
            [only] => only.span.clone(),
            _ => {
                let span = tracing::info_span!("handle_batch", consumer_group = %self.group_id, records = fresh.len());
                for pending in fresh {
                    span.add_link(pending.span.context().span().span_context().clone());
                }
                span
            }
        };
        let published = self
            .handler
            .handle(&events, tx)
            .instrument(handling)
            .await?;
        let spans: HashMap<Uuid, &Span> = fresh
            .iter()
            .map(|p| (p.event.metadata.event_id, &p.span))
            .collect();
        let mut records: Vec<OutboxRecord> = Vec::with_capacity(published.len());
        for event in &published {
            let span = event
                .metadata
                .causation_id
                .and_then(|cause| spans.get(&cause))
                .map_or_else(Span::current, |span| (*span).clone());
            records.push(self.outbox.record(event).instrument(span).await?);
        }
        self.outbox.insert(tx, &records).await?;
        Ok(published)
    }

    /// Inserts the batch's `processed_events` rows; returns the event ids that were new.
    /// With `unless_parked`, and if the group parks orders, the same statement looks for a
    /// parked order among the batch's: `None`, and nothing inserted, when there is one.
    async fn record_processed(
        &self,
        tx: &mut PgConnection,
        batch: &[Pending],
        unless_parked: bool,
    ) -> Result<Option<HashSet<Uuid>>, sqlx::Error> {
        let mut event_ids = Vec::with_capacity(batch.len());
        let mut event_types = Vec::with_capacity(batch.len());
        let mut topics = Vec::with_capacity(batch.len());
        let mut partitions = Vec::with_capacity(batch.len());
        let mut offsets = Vec::with_capacity(batch.len());
        let mut keys = Vec::new();
        for pending in batch {
            if unless_parked && self.parks_orders {
                keys.push(pending.event.key());
            }
            if pending.releases_only {
                continue;
            }
            event_ids.push(pending.event.metadata.event_id);
            event_types.push(pending.event.event_type());
            topics.push(pending.partition.topic.as_str());
            partitions.push(pending.partition.partition);
            offsets.push(pending.offset);
        }
        // A parked order is found in the statement that would record its event, so the
        // fast path costs no extra round trip; a row with no event id says it was found.
        let inserted = sqlx::query_scalar!(
            r#"WITH parked AS (
                   SELECT 1 FROM parked_orders
                   WHERE consumer_group = $1 AND order_key = ANY($7::text[])
                   LIMIT 1
               ), inserted AS (
                   INSERT INTO processed_events
                       (consumer_group, event_id, event_type, topic, kafka_partition, kafka_offset)
                   SELECT $1, * FROM UNNEST($2::uuid[], $3::text[], $4::text[], $5::int[], $6::bigint[])
                   WHERE NOT EXISTS (SELECT FROM parked)
                   ON CONFLICT DO NOTHING
                   RETURNING event_id
               )
               SELECT event_id AS "event_id?" FROM inserted
               UNION ALL
               SELECT NULL FROM parked"#,
            self.group_id,
            &event_ids,
            &event_types as _,
            &topics as _,
            &partitions,
            &offsets,
            &keys,
        )
        .fetch_all(&mut *tx)
        .await?;
        Ok(inserted.into_iter().collect())
    }
}

/// How far each partition is settled (see [`Verdict::is_settled`]) from the front of a
/// batch: where its committed offset may move to.
pub fn settled_prefix<'a>(
    records: impl IntoIterator<Item = (&'a TopicPartition, i64, bool)>,
) -> HashMap<&'a TopicPartition, i64> {
    let mut stopped: HashSet<&TopicPartition> = HashSet::new();
    let mut last_settled = HashMap::new();
    for (partition, offset, settled) in records {
        if stopped.contains(partition) {
            continue;
        }
        if settled {
            last_settled.insert(partition, offset);
        } else {
            stopped.insert(partition);
        }
    }
    last_settled
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partitions_offset_stops_before_its_first_unsettled_record() {
        let (a, b, c) = (
            TopicPartition::new("orders", 0),
            TopicPartition::new("orders", 1),
            TopicPartition::new("payments", 0),
        );
        let records = [
            (&a, 10, true),
            (&b, 3, true),
            (&a, 11, false),
            (&b, 4, true),
            (&a, 12, true),
            (&c, 7, false),
        ];
        let prefix = settled_prefix(records);
        assert_eq!(
            prefix.get(&a),
            Some(&10),
            "11 failed, so 12 must come again"
        );
        assert_eq!(prefix.get(&b), Some(&4));
        assert_eq!(prefix.get(&c), None, "nothing settled");
    }
}
