//! The slow path of a batch: its records one by one, each under a savepoint of one
//! transaction, so one bad record costs only itself. A batch comes here when the handler
//! failed on it whole, on a retry, and when one of its orders is parked; what parked orders
//! ask of a record (set it aside, or end the parking) is decided here, in the batch's
//! transaction (`parking.rs` says what parking is).

use std::collections::{HashMap, HashSet};

use rdkafka::message::{OwnedMessage, Timestamp};
use sqlx::{Acquire, PgConnection};
use tracing::{Instrument, Span, info, info_span};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use uuid::Uuid;

use super::Record;
use super::batch::{Applied, Applier, Pending, Rejection, Verdict};
use super::gate::TopicPartition;
use super::handler::{EventHandler, HandlerError};
use super::parking::{self, ParkedRecord};
use crate::contracts::Event;
use crate::error::ErrorClass;
use crate::outbox::headers;
use crate::trace_context;

impl<H: EventHandler> Applier<H> {
    /// Applies `batch` record by record under savepoints of one transaction.
    pub(super) async fn apply_one_by_one(&self, batch: &[Pending]) -> Result<Applied, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let keys: Vec<String> = batch.iter().map(|p| p.event.key()).collect();
        let mut parked = if self.parks_orders {
            parking::lock(&mut tx, &self.group_id, &keys).await?
        } else {
            HashMap::new()
        };
        let mut blocked: HashSet<&TopicPartition> = HashSet::new();
        let mut applied = Applied::default();
        let mut published = Vec::new();
        for (pending, key) in batch.iter().zip(&keys) {
            if blocked.contains(&pending.partition) {
                applied.verdicts.push(Verdict::Blocked);
                continue;
            }
            let verdict = self
                .apply_record(
                    &mut tx,
                    pending,
                    key,
                    &mut parked,
                    &mut published,
                    &mut applied,
                )
                .await?;
            if let Verdict::Failed(_) = verdict {
                blocked.insert(&pending.partition);
            }
            applied.verdicts.push(verdict);
        }
        tx.commit().await?;
        self.outbox.wake_relay();
        self.handler.committed(&published);
        Ok(applied)
    }

    /// One record of order `key`, as its order's parking has it: set aside, ending the
    /// parking, or applied.
    async fn apply_record(
        &self,
        tx: &mut PgConnection,
        pending: &Pending,
        key: &str,
        parked: &mut HashMap<String, Uuid>,
        published: &mut Vec<Event>,
        applied: &mut Applied,
    ) -> Result<Verdict, sqlx::Error> {
        let Some(&letter) = parked.get(key) else {
            if pending.releases_only {
                return Ok(Verdict::Skipped);
            }
            let verdict = self.apply_in_savepoint(tx, pending, published).await?;
            if let Verdict::Rejected(rejection) = &verdict
                && self.parks_orders
            {
                parking::park_order(tx, &self.group_id, key, pending, &rejection.reason).await?;
                info!(order = key, consumer_group = %self.group_id, "order parked behind its dead letter: its later records wait for the redrive");
                parked.insert(key.to_owned(), pending.event.metadata.event_id);
            }
            return Ok(verdict);
        };
        let redrive = pending.event.metadata.event_id == letter;
        if !redrive && pending.event.event_type() != parking::RELEASED_BY {
            return self.park(tx, pending).await;
        }
        let ended = self.end_parking(tx, pending, key, redrive).await?;
        if ended.still_parked {
            // Behind the record it stopped at (or, for a failed redrive, the same one).
            if let Some(event_id) = ended.letter {
                parked.insert(key.to_owned(), event_id);
            }
        } else {
            parked.remove(key);
        }
        published.extend(ended.published);
        applied.rejected_parked.extend(ended.rejected_parked);
        Ok(ended.verdict)
    }

    /// Sets `pending` aside behind its order's dead letter.
    async fn park(&self, tx: &mut PgConnection, pending: &Pending) -> Result<Verdict, sqlx::Error> {
        let encoded = match self
            .outbox
            .record(&pending.event)
            .instrument(pending.span.clone())
            .await
        {
            Ok(encoded) => encoded,
            // The registry, out of reach: a retry may do.
            Err(e) => return Ok(Verdict::Failed(format!("encoding a record to park: {e}"))),
        };
        parking::park_record(tx, &self.group_id, pending, &encoded).await?;
        Ok(Verdict::Parked)
    }

    /// Ends the parking of `pending`'s order, in one savepoint: the redriven record first
    /// (`redrive`), then the parked ones in order, then the cancellation request that ended
    /// it (otherwise). A failure a retry may cure undoes all of it.
    async fn end_parking(
        &self,
        tx: &mut PgConnection,
        pending: &Pending,
        key: &str,
        redrive: bool,
    ) -> Result<EndOfParking, sqlx::Error> {
        let mut savepoint = tx.begin().await?;
        let mut ended = EndOfParking::new();
        if redrive {
            ended.verdict = self
                .apply_or_park_behind(&mut savepoint, pending, key, &mut ended)
                .await?;
            if matches!(ended.verdict, Verdict::Failed(_) | Verdict::Rejected(_)) {
                return ended.close(savepoint).await;
            }
        }
        self.apply_parked(&mut savepoint, key, redrive, &mut ended)
            .await?;
        if let Verdict::Failed(_) = ended.verdict {
            return ended.close(savepoint).await;
        }
        if !ended.still_parked {
            parking::release_order(&mut savepoint, &self.group_id, key).await?;
            info!(order = key, consumer_group = %self.group_id, redrive, "order no longer parked: its parked records are applied");
        }
        if !redrive && !pending.releases_only {
            // The cancellation request, after what came before it.
            ended.verdict = self
                .apply_or_park_behind(&mut savepoint, pending, key, &mut ended)
                .await?;
        }
        ended.close(savepoint).await
    }

    /// Applies the records parked behind `key`'s order, in order, removing each once
    /// applied or refused. After a redrive, a refused one parks the order behind it and the
    /// rest wait; after a cancellation request, nothing stops them. A failure a retry may
    /// cure becomes `ended`'s verdict.
    async fn apply_parked(
        &self,
        savepoint: &mut PgConnection,
        key: &str,
        redrive: bool,
        ended: &mut EndOfParking,
    ) -> Result<(), sqlx::Error> {
        for record in parking::parked_records(savepoint, &self.group_id, key).await? {
            let event = match self.outbox.codec().decode(Some(&record.payload)).await {
                Ok(event) => event,
                Err(e) if e.is_transient() => {
                    ended.verdict = Verdict::Failed(format!("decoding a parked record: {e}"));
                    return Ok(());
                }
                Err(e) => {
                    parking::remove_record(savepoint, record.seq).await?;
                    let rejection = Rejection {
                        event_type: record.event_type.clone(),
                        class: e.class(),
                        reason: e.to_string(),
                    };
                    ended.rejected_parked.push((record, rejection));
                    continue;
                }
            };
            let parked = Pending {
                partition: TopicPartition::new(&record.topic, record.partition),
                offset: record.offset,
                span: self.parked_span(&record, &event),
                event,
                releases_only: false,
            };
            let verdict = if redrive {
                self.apply_or_park_behind(savepoint, &parked, key, ended)
                    .await?
            } else {
                self.apply_in_savepoint(savepoint, &parked, &mut ended.published)
                    .await?
            };
            match verdict {
                Verdict::Failed(reason) => {
                    ended.verdict = Verdict::Failed(reason);
                    return Ok(());
                }
                Verdict::Rejected(rejection) => {
                    parking::remove_record(savepoint, record.seq).await?;
                    ended.rejected_parked.push((record, rejection));
                    if ended.still_parked {
                        break;
                    }
                }
                _ => parking::remove_record(savepoint, record.seq).await?,
            }
        }
        Ok(())
    }

    /// Applies `pending` (of order `key`) under a savepoint; refused, its order parks
    /// behind it.
    async fn apply_or_park_behind(
        &self,
        tx: &mut PgConnection,
        pending: &Pending,
        key: &str,
        ended: &mut EndOfParking,
    ) -> Result<Verdict, sqlx::Error> {
        let verdict = self
            .apply_in_savepoint(tx, pending, &mut ended.published)
            .await?;
        if let Verdict::Rejected(rejection) = &verdict {
            parking::park_order(tx, &self.group_id, key, pending, &rejection.reason).await?;
            ended.still_parked = true;
            ended.letter = Some(pending.event.metadata.event_id);
        }
        Ok(verdict)
    }

    /// One record under a savepoint of `tx`: applied, a duplicate, refused or failed; what
    /// it published joins `published`.
    async fn apply_in_savepoint(
        &self,
        tx: &mut PgConnection,
        pending: &Pending,
        published: &mut Vec<Event>,
    ) -> Result<Verdict, sqlx::Error> {
        let mut savepoint = tx.begin().await?;
        Ok(match self.apply_one(pending, &mut savepoint).await {
            Ok(Some(events)) => {
                savepoint.commit().await?;
                published.extend(events);
                Verdict::Applied
            }
            Ok(None) => {
                savepoint.commit().await?;
                Verdict::Duplicate
            }
            Err(error) => {
                savepoint.rollback().await?;
                match error {
                    HandlerError::Rejected(reason) => Verdict::Rejected(Rejection {
                        event_type: pending.event.event_type().to_owned(),
                        class: ErrorClass::HandlerRejected,
                        reason,
                    }),
                    HandlerError::Transient(reason) => Verdict::Failed(reason),
                }
            }
        })
    }

    /// A parked record's span: a child of the trace its producer started, as it would
    /// have been when it came.
    fn parked_span(&self, record: &ParkedRecord, event: &Event) -> Span {
        let span = info_span!(
            "handle_parked_event",
            otel.kind = "consumer",
            event_type = event.event_type(),
            event_id = %event.metadata.event_id,
            consumer_group = %self.group_id,
            topic = %record.topic,
            partition = record.partition,
            offset = record.offset,
        );
        let trace = [
            (headers::TRACEPARENT, &record.traceparent),
            (headers::TRACESTATE, &record.tracestate),
        ];
        let parent = trace_context::parent_context(
            trace
                .into_iter()
                .filter_map(|(key, value)| Some((key, value.as_deref()?))),
        );
        let _ = span.set_parent(parent);
        span
    }
}

/// What ending an order's parking did.
struct EndOfParking {
    /// The verdict of the record that ended it.
    verdict: Verdict,
    /// Parked again, behind `letter` (or, when none, as it was).
    still_parked: bool,
    letter: Option<Uuid>,
    published: Vec<Event>,
    rejected_parked: Vec<(ParkedRecord, Rejection)>,
}

impl EndOfParking {
    fn new() -> Self {
        Self {
            verdict: Verdict::Skipped,
            still_parked: false,
            letter: None,
            published: Vec::new(),
            rejected_parked: Vec::new(),
        }
    }

    /// Keeps what the attempt did; after a failure a retry may cure, undoes all of it: the
    /// order stays parked as it was, every parked record kept.
    async fn close(
        mut self,
        savepoint: sqlx::Transaction<'_, sqlx::Postgres>,
    ) -> Result<Self, sqlx::Error> {
        if let Verdict::Failed(_) = self.verdict {
            savepoint.rollback().await?;
            self.still_parked = true;
            self.letter = None;
            self.published.clear();
            self.rejected_parked.clear();
        } else {
            savepoint.commit().await?;
        }
        Ok(self)
    }
}

impl ParkedRecord {
    /// The record as it came, for its dead letter: the payload the outbox would have sent,
    /// with the headers the relay sets.
    pub(super) fn to_record(&self) -> Record {
        let record_headers = headers::of_record(
            &self.event_type,
            self.traceparent.as_deref(),
            self.tracestate.as_deref(),
        );
        Record {
            partition: TopicPartition::new(&self.topic, self.partition),
            message: OwnedMessage::new(
                Some(self.payload.clone()),
                Some(self.key.clone().into_bytes()),
                self.topic.clone(),
                Timestamp::NotAvailable,
                self.partition,
                self.offset,
                Some(record_headers),
            ),
        }
    }
}
