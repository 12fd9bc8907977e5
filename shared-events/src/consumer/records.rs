//! What happens to a single record outside its batch's transaction: the dead-letter topic,
//! the span its handler runs in, the skip counter, and its event type as a metric label.

use rdkafka::Message;
use rdkafka::message::{Headers, OwnedMessage};
use tracing::{Span, info_span, warn};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::batch::Rejection;
use super::{EventHandler, IdempotentConsumer, Record};
use crate::contracts::{Contract, Event};
use crate::error::Error;
use crate::metrics::{DeadLetterLabels, TopicLabels};
use crate::trace_context;

impl<H: EventHandler> IdempotentConsumer<H> {
    pub(super) async fn dead_letter(
        &self,
        record: &Record,
        letter: &Rejection,
    ) -> Result<(), Error> {
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
    pub(super) fn record_span(&self, record: &Record, event: &Event) -> Span {
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

    pub(super) fn count_skipped(&self, record: &Record) {
        self.metrics
            .skipped
            .get_or_create(&TopicLabels {
                topic: record.partition.topic.clone(),
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
