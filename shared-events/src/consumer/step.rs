//! One step of a batch, apart from the loop that feeds it: each record decoded into one
//! [`Decoded`], those to apply applied in one transaction (the [`Applier`]), the rejected
//! ones dead-lettered; a verdict for each record, in order. What happens to a single record
//! outside the transaction is here too: its dead letter, the span its handler runs in, the
//! skip counter, its event type as a metric label.

use std::collections::HashSet;

use rdkafka::Message;
use rdkafka::message::{Headers, OwnedMessage};
use tokio::time::Instant;
use tracing::{Span, error, info_span, warn};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::batch::{Applied, Applier, Mode, Pending, Rejection, Verdict};
use super::gate::TopicPartition;
use super::parking;
use super::{EventHandler, Record};
use crate::codec::RegistryCodec;
use crate::contracts::{Contract, Event};
use crate::dead_letter::DeadLetterPublisher;
use crate::error::Error;
use crate::metrics::{DeadLetterLabels, EventMetrics, RecordLabels, TopicLabels};
use crate::trace_context;

/// What a batch step needs: the registry to decode with, the handler's transaction, the
/// dead-letter topics, the metrics.
pub(super) struct BatchStep<H> {
    pub(super) group_id: String,
    pub(super) codec: RegistryCodec,
    pub(super) applier: Applier<H>,
    pub(super) dead_letters: DeadLetterPublisher,
    pub(super) metrics: EventMetrics,
}

/// The decode phase's judgement of one record.
// Nearly every record is to apply: boxing it would cost an allocation per record for
// the few that are decided.
#[allow(clippy::large_enum_variant)]
enum Decoded {
    /// To apply in the batch's transaction.
    Apply(Pending),
    /// Decided without the database: skipped, rejected, to retry, or blocked.
    Decided(Verdict),
}

impl<H: EventHandler> BatchStep<H> {
    /// One attempt at `records`: a verdict for each, in order. Decoded first, then applied
    /// in one transaction, then the rejected ones dead-lettered.
    pub(super) async fn attempt(&self, records: &[&Record], mode: Mode) -> Vec<Verdict> {
        let decoded = self.decode(records).await;
        let Applied {
            mut verdicts,
            rejected_parked,
        } = self.apply(decoded, mode).await;
        for (record, verdict) in records.iter().zip(&mut verdicts) {
            if let Verdict::Rejected(rejection) = verdict
                && let Err(e) = self.dead_letter(record, rejection).await
            {
                *verdict = Verdict::Failed(format!("dead-letter publish failed: {e}"));
            }
        }
        // A parked record refused when its order's parking ended is no longer anywhere to
        // come again from: its letter is tried until the publisher's own timeout, and a
        // failure is logged with where the record sits (parked_orders has it too, when it
        // parked its order again).
        for (parked, rejection) in rejected_parked {
            let record = parked.to_record();
            if let Err(e) = self.dead_letter(&record, &rejection).await {
                error!(partition = %record.partition, offset = parked.offset, error = %e,
                    "could not dead-letter a parked record the handler refused");
            }
        }
        verdicts
    }

    /// Judges each record, in order: skipped, to apply, rejected, or to retry; after a
    /// record to retry, the rest of its partition is blocked.
    async fn decode(&self, records: &[&Record]) -> Vec<Decoded> {
        let mut blocked = HashSet::new();
        let mut decoded = Vec::with_capacity(records.len());
        for record in records {
            let judged = if blocked.contains(&record.partition) {
                Decoded::Decided(Verdict::Blocked)
            } else {
                self.decode_one(record).await
            };
            if let Decoded::Decided(Verdict::Failed(_)) = judged {
                blocked.insert(&record.partition);
            }
            decoded.push(judged);
        }
        decoded
    }

    async fn decode_one(&self, record: &Record) -> Decoded {
        // Skipped unread only when the header names one of our contracts that the handler
        // does not take; anything else (no header, an unknown type) is decoded, so that
        // garbage reaches the dead-letter topic instead of vanishing.
        let header = event_type_header(&record.message).and_then(Contract::by_event_type);
        if header.is_some_and(|contract| !self.reads(contract.event_type)) {
            self.count_skipped(&record.partition);
            return Decoded::Decided(Verdict::Skipped);
        }
        let message = &record.message;
        match self
            .codec
            .decode_from(message.topic(), message.payload())
            .await
        {
            Ok(event) if !self.reads(event.event_type()) => {
                self.count_skipped(&record.partition);
                Decoded::Decided(Verdict::Skipped)
            }
            Ok(event) => Decoded::Apply(Pending {
                span: self.record_span(record, &event),
                partition: record.partition.clone(),
                offset: message.offset(),
                releases_only: !H::EVENT_TYPES.contains(&event.event_type()),
                event,
            }),
            Err(e) if e.is_transient() => Decoded::Decided(Verdict::Failed(e.to_string())),
            Err(e) => Decoded::Decided(Verdict::Rejected(Rejection {
                event_type: event_type_label(message),
                class: e.class(),
                reason: e.to_string(),
            })),
        }
    }

    /// Whether a record of `event_type` is read: its handler takes it, or it may end a
    /// parked order's parking.
    fn reads(&self, event_type: &str) -> bool {
        H::EVENT_TYPES.contains(&event_type)
            || (event_type == parking::RELEASED_BY && self.applier.parks_orders())
    }

    /// Applies the decoded records in one transaction (the [`Applier`]); every record gets
    /// its verdict, in order.
    async fn apply(&self, decoded: Vec<Decoded>, mode: Mode) -> Applied {
        let mut batch = Vec::new();
        // The verdicts decided already; a hole where a record goes to the batch.
        let decided: Vec<Option<Verdict>> = decoded
            .into_iter()
            .map(|judged| match judged {
                Decoded::Apply(pending) => {
                    batch.push(pending);
                    None
                }
                Decoded::Decided(verdict) => Some(verdict),
            })
            .collect();
        let started = Instant::now();
        let Applied {
            verdicts: applied,
            rejected_parked,
        } = match self.applier.apply(&batch, mode).await {
            Ok(applied) => applied,
            Err(e) => Applied {
                verdicts: vec![Verdict::Failed(format!("database: {e}")); batch.len()],
                rejected_parked: Vec::new(),
            },
        };
        if !batch.is_empty() {
            self.metrics
                .batch_duration
                .observe(started.elapsed().as_secs_f64());
        }
        for (pending, verdict) in batch.iter().zip(&applied) {
            let counter = match verdict {
                Verdict::Applied => &self.metrics.handled,
                Verdict::Duplicate => &self.metrics.duplicates_skipped,
                Verdict::Parked => &self.metrics.parked,
                // A cancellation request read for a parking it found none of.
                Verdict::Skipped => {
                    self.count_skipped(&pending.partition);
                    continue;
                }
                _ => continue,
            };
            let labels = RecordLabels::new(&pending.partition.topic, pending.event.event_type());
            counter.get_or_create(&labels).inc();
        }
        let mut applied = applied.into_iter();
        let verdicts = decided
            .into_iter()
            .map(|verdict| {
                verdict.unwrap_or_else(|| applied.next().expect("a verdict per record applied"))
            })
            .collect();
        Applied {
            verdicts,
            rejected_parked,
        }
    }

    async fn dead_letter(&self, record: &Record, letter: &Rejection) -> Result<(), Error> {
        warn!(
            partition = %record.partition,
            offset = record.message.offset(),
            class = letter.class.as_str(),
            reason = letter.reason,
            "sending record to the dead-letter topic"
        );
        self.dead_letters
            .publish(
                &record.message,
                &self.group_id,
                letter.class,
                &letter.reason,
            )
            .await?;
        self.metrics
            .dead_lettered
            .get_or_create(&DeadLetterLabels {
                topic: record.message.topic().to_owned(),
                event_type: letter.event_type.clone(),
                error_class: letter.class.as_str().to_owned(),
            })
            .inc();
        Ok(())
    }

    /// The span the record's handler runs in: a child of the trace its producer started.
    fn record_span(&self, record: &Record, event: &Event) -> Span {
        let span = info_span!(
            "handle_event",
            otel.kind = "consumer",
            event_type = event.event_type(),
            event_id = %event.metadata.event_id,
            correlation_id = %event.metadata.correlation_id,
            consumer_group = %self.group_id,
            topic = %record.partition.topic,
            partition = record.partition.partition,
            offset = record.message.offset(),
        );
        let parent = trace_context::parent_context(
            record
                .message
                .headers()
                .into_iter()
                .flat_map(|h| h.iter())
                .filter_map(|h| Some((h.key, std::str::from_utf8(h.value?).ok()?))),
        );
        let _ = span.set_parent(parent);
        span
    }

    fn count_skipped(&self, partition: &TopicPartition) {
        self.metrics
            .skipped
            .get_or_create(&TopicLabels {
                topic: partition.topic.clone(),
            })
            .inc();
    }
}

pub(super) fn event_type_header(message: &OwnedMessage) -> Option<&str> {
    crate::dead_letter::header_value(message, crate::outbox::headers::EVENT_TYPE)
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// The record's event type for a metric label: one of ours, or `unknown` (the header is
/// untrusted input, and every distinct value would be a new time series).
pub(super) fn event_type_label(message: &OwnedMessage) -> String {
    event_type_header(message)
        .and_then(Contract::by_event_type)
        .map_or("unknown", |c| c.event_type)
        .to_owned()
}
