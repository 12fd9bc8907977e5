//! The database side of the runner: a batch of decoded events applied in one transaction.
//!
//! The fast path records every event id in `processed_events` with one multi-row insert,
//! runs the handler for the new ones in offset order, appends everything they cause to the
//! outbox in one more statement and commits once. If any handler fails, the transaction is
//! rolled back and the batch replayed record by record under savepoints, so one bad record
//! costs only itself: a rejected one is rolled back with its dedup row (the runner
//! dead-letters it), a transiently failing one blocks the rest of its partition for a retry,
//! and every other record is kept.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use sqlx::{Acquire, PgConnection, PgPool};
use tracing::{Instrument, Span};
use uuid::Uuid;

use super::gate::TopicPartition;
use super::handler::{EventHandler, HandlerError};
use crate::contracts::Event;
use crate::outbox::{Outbox, OutboxRecord};

/// A decoded record waiting to be applied.
pub struct Pending {
    pub partition: TopicPartition,
    pub offset: i64,
    pub event: Event,
    /// The record's span (a child of the producer's trace); the handler runs in it.
    pub span: Span,
}

/// What became of one record of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Handled and committed, having taken `handler_time`.
    Applied { handler_time: Duration },
    /// Its event id was processed before: nothing done.
    Duplicate,
    /// The handler refused it for good: nothing of it was kept.
    Rejected(String),
    /// Failed in a way a retry may cure: nothing of it was kept.
    Failed(String),
    /// Not attempted: an earlier record of its partition failed.
    Blocked,
}

/// Applies batches of one consumer group's events through `handler`.
pub struct Applier<H> {
    pool: PgPool,
    group_id: String,
    handler: H,
    outbox: Outbox,
}

impl<H: EventHandler> Applier<H> {
    pub fn new(pool: PgPool, group_id: String, handler: H, outbox: Outbox) -> Self {
        Self {
            pool,
            group_id,
            handler,
            outbox,
        }
    }

    /// Applies `batch` (in offset order per partition) and returns a verdict per record.
    /// `Err` means no record was kept (the transaction itself failed).
    pub async fn apply(&self, batch: &[Pending]) -> Result<Vec<Verdict>, sqlx::Error> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        match self.apply_together(batch).await? {
            Together::Committed(verdicts) => Ok(verdicts),
            Together::RolledBack { failed } => self.apply_one_by_one(batch, failed).await,
        }
    }

    /// The fast path. If a handler fails, everything is rolled back, and the failed record's
    /// index and verdict are returned so the replay need not run its handler again.
    async fn apply_together(&self, batch: &[Pending]) -> Result<Together, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let mut new = self.record_processed(&mut tx, batch).await?;
        let mut verdicts = Vec::with_capacity(batch.len());
        let mut published = Vec::new();
        let mut outgoing = Vec::new();
        for (index, pending) in batch.iter().enumerate() {
            // A duplicate within the batch is recorded once and applied once.
            if !new.remove(&pending.event.metadata.event_id) {
                verdicts.push(Verdict::Duplicate);
                continue;
            }
            let started = Instant::now();
            match self.handle(pending, &mut tx).await {
                Ok((events, records)) => {
                    published.extend(events);
                    outgoing.extend(records);
                    verdicts.push(Verdict::Applied {
                        handler_time: started.elapsed(),
                    });
                }
                // Rolled back when `tx` drops.
                Err(error) => {
                    return Ok(Together::RolledBack {
                        failed: Some((index, refusal(error))),
                    });
                }
            }
        }
        if let Err(e) = self.outbox.insert(&mut tx, &outgoing).await {
            tracing::warn!(error = %e, "appending a batch's events failed; replaying it record by record");
            return Ok(Together::RolledBack { failed: None });
        }
        tx.commit().await?;
        self.outbox.wake_relay();
        self.handler.committed(&published);
        Ok(Together::Committed(verdicts))
    }

    /// The replay: each record under a savepoint of one transaction. `failed` is the record
    /// the fast path saw fail, with its verdict.
    async fn apply_one_by_one(
        &self,
        batch: &[Pending],
        failed: Option<(usize, Verdict)>,
    ) -> Result<Vec<Verdict>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let mut blocked: HashSet<&TopicPartition> = HashSet::new();
        let mut verdicts = Vec::with_capacity(batch.len());
        let mut published = Vec::new();
        for (index, pending) in batch.iter().enumerate() {
            if blocked.contains(&pending.partition) {
                verdicts.push(Verdict::Blocked);
                continue;
            }
            if let Some((_, verdict)) = failed.as_ref().filter(|(i, _)| *i == index) {
                if let Verdict::Failed(_) = verdict {
                    blocked.insert(&pending.partition);
                }
                verdicts.push(verdict.clone());
                continue;
            }
            let mut savepoint = tx.begin().await?;
            let verdict = self.apply_one(pending, &mut savepoint).await;
            match verdict {
                Ok((Verdict::Applied { .. }, ref events)) => {
                    savepoint.commit().await?;
                    published.extend(events.iter().cloned());
                }
                Ok((Verdict::Duplicate, _)) => savepoint.commit().await?,
                _ => savepoint.rollback().await?,
            }
            let verdict = verdict.map(|(verdict, _)| verdict);
            let verdict = verdict.unwrap_or_else(|e| refusal(e.into()));
            if let Verdict::Failed(_) = verdict {
                blocked.insert(&pending.partition);
            }
            verdicts.push(verdict);
        }
        tx.commit().await?;
        self.outbox.wake_relay();
        self.handler.committed(&published);
        Ok(verdicts)
    }

    /// One record in the caller's savepoint: its verdict, and what it published if applied.
    async fn apply_one(
        &self,
        pending: &Pending,
        tx: &mut PgConnection,
    ) -> Result<(Verdict, Vec<Event>), sqlx::Error> {
        let new = self
            .record_processed(tx, std::slice::from_ref(pending))
            .await?;
        if new.is_empty() {
            return Ok((Verdict::Duplicate, Vec::new()));
        }
        let started = Instant::now();
        let (events, records) = match self.handle(pending, tx).await {
            Ok(effects) => effects,
            Err(error) => return Ok((refusal(error), Vec::new())),
        };
        match self.outbox.insert(tx, &records).await {
            Ok(()) => {
                let handler_time = started.elapsed();
                Ok((Verdict::Applied { handler_time }, events))
            }
            Err(error) => Ok((refusal(error.into()), Vec::new())),
        }
    }

    /// Runs the handler in the record's span and encodes what it causes there, so each
    /// outgoing event continues the trace of the record that caused it.
    async fn handle(
        &self,
        pending: &Pending,
        tx: &mut PgConnection,
    ) -> Result<(Vec<Event>, Vec<OutboxRecord>), HandlerError> {
        async {
            let events = self.handler.handle(&pending.event, tx).await?;
            let mut records = Vec::with_capacity(events.len());
            for event in &events {
                records.push(self.outbox.record(event).await?);
            }
            Ok((events, records))
        }
        .instrument(pending.span.clone())
        .await
    }

    /// Inserts the batch's `processed_events` rows; returns the event ids that were new.
    async fn record_processed(
        &self,
        tx: &mut PgConnection,
        batch: &[Pending],
    ) -> Result<HashSet<Uuid>, sqlx::Error> {
        let mut event_ids = Vec::with_capacity(batch.len());
        let mut event_types = Vec::with_capacity(batch.len());
        let mut topics = Vec::with_capacity(batch.len());
        let mut partitions = Vec::with_capacity(batch.len());
        let mut offsets = Vec::with_capacity(batch.len());
        for pending in batch {
            event_ids.push(pending.event.metadata.event_id);
            event_types.push(pending.event.event_type());
            topics.push(pending.partition.topic.as_str());
            partitions.push(pending.partition.partition);
            offsets.push(pending.offset);
        }
        let inserted: Vec<Uuid> = sqlx::query_scalar(
            "INSERT INTO processed_events
                 (consumer_group, event_id, event_type, topic, kafka_partition, kafka_offset)
             SELECT $1, * FROM UNNEST($2::uuid[], $3::text[], $4::text[], $5::int[], $6::bigint[])
             ON CONFLICT DO NOTHING
             RETURNING event_id",
        )
        .bind(&self.group_id)
        .bind(event_ids)
        .bind(event_types)
        .bind(topics)
        .bind(partitions)
        .bind(offsets)
        .fetch_all(&mut *tx)
        .await?;
        Ok(inserted.into_iter().collect())
    }
}

/// How the fast path ended.
enum Together {
    Committed(Vec<Verdict>),
    /// Rolled back; `failed` is the record whose handler failed, if one did.
    RolledBack {
        failed: Option<(usize, Verdict)>,
    },
}

/// The verdict on a record whose handler (or outbox append) failed.
fn refusal(error: HandlerError) -> Verdict {
    match error {
        HandlerError::Rejected(reason) => Verdict::Rejected(reason),
        HandlerError::Transient(reason) => Verdict::Failed(reason),
    }
}

/// How many records of each partition are settled from the front of a batch: where the
/// committed offset of each partition may move to.
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
