//! The relay's sends and their outcomes: rows go to the idempotent producer and wait in the
//! [`Pipeline`] for the broker's answer; acknowledged rows are deleted in bulk, rows the
//! broker refuses for good are moved to `outbox_dead_letters`, and any other failure makes
//! the relay start over with a new producer session.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use futures::FutureExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureRecord, Producer, PurgeConfig};
use rdkafka::types::RDKafkaErrorCode;
use tracing::{debug, error, warn};

use super::OutboxRelay;
use super::gaps::Gaps;
use super::reads::OutboxRow;
use crate::error::Error;
use crate::metrics::TopicLabels;
use crate::outbox::headers;

/// What a delivery came to: the row id, its topic, and the outcome.
pub(super) type Outcome = (i64, String, Delivery);

pub(super) enum Delivery {
    /// The broker has the record.
    Acknowledged,
    /// Not delivered, but may be on a retry (the broker was away, a timeout).
    Failed,
    /// The broker will never take this record (too large for it, say); the reason.
    Refused(String),
}

/// Why the broker will never take a record, if `error` says it never will: retrying the
/// same bytes can only fail the same way.
fn refusal(error: &KafkaError) -> Option<String> {
    use RDKafkaErrorCode::{InvalidRecord, MessageBatchTooLarge, MessageSizeTooLarge};
    match error.rdkafka_error_code()? {
        MessageSizeTooLarge | MessageBatchTooLarge | InvalidRecord => Some(error.to_string()),
        _ => None,
    }
}

/// The rows between read and delete.
#[derive(Default)]
pub(super) struct Pipeline {
    /// Delivery reports still to come, one per record in flight.
    pub deliveries: FuturesUnordered<BoxFuture<'static, Outcome>>,
    /// Highest id read in id order; rows above it are new.
    pub cursor: i64,
    pub gaps: Gaps,
    /// Sent, waiting for the broker: id -> when the row was written (for the age gauge).
    pub in_flight: BTreeMap<i64, DateTime<Utc>>,
    /// Acknowledged, not yet deleted.
    pub acknowledged: Vec<i64>,
    /// Refused for good, not yet moved to the dead letters: id -> reason.
    pub refused: Vec<(i64, String)>,
    /// A delivery failed: read nothing more until every record in flight is resolved, then
    /// start over from the oldest row with a new producer session.
    pub failed: bool,
}

/// What the pipeline holds, for the backlog gauges.
#[derive(Debug, Clone, Copy)]
pub(super) struct Held {
    pub cursor: i64,
    /// Rows in flight, acknowledged and not deleted, or skipped and awaited.
    pub rows: usize,
    pub oldest_in_flight: Option<DateTime<Utc>>,
}

impl Pipeline {
    pub fn held_for_gauges(&self) -> Held {
        Held {
            cursor: self.cursor,
            rows: self.in_flight.len() + self.acknowledged.len() + self.gaps.len(),
            oldest_in_flight: self.in_flight.values().min().copied(),
        }
    }

    /// Ids the relay holds (in flight or acknowledged), which a sweep must not send again.
    pub fn held(&self) -> Vec<i64> {
        self.in_flight
            .keys()
            .copied()
            .chain(self.acknowledged.iter().copied())
            .chain(self.refused.iter().map(|(id, _)| *id))
            .collect()
    }
}

impl OutboxRelay {
    /// Hands `row` to the producer; its outcome joins the pipeline's deliveries.
    pub(super) fn send(&self, pipeline: &mut Pipeline, row: OutboxRow) {
        let record_headers = headers::of_record(
            &row.event_type,
            row.traceparent.as_deref(),
            row.tracestate.as_deref(),
        );
        let record = FutureRecord::to(&row.topic)
            .key(&row.record_key)
            .payload(&row.payload)
            .headers(record_headers);
        match self.producer.send_result(record) {
            Ok(delivery) => {
                pipeline.in_flight.insert(row.id, row.created_at);
                let (id, topic) = (row.id, row.topic);
                pipeline.deliveries.push(
                    delivery
                        .map(move |result| {
                            let outcome = match result {
                                Ok(Ok(_)) => Delivery::Acknowledged,
                                Ok(Err((e, _))) => refusal(&e).map_or_else(
                                    || {
                                        debug!(error = %e, id, "delivery failed; the row stays for a retry");
                                        Delivery::Failed
                                    },
                                    Delivery::Refused,
                                ),
                                Err(_) => Delivery::Failed,
                            };
                            (id, topic, outcome)
                        })
                        .boxed(),
                );
            }
            Err((e, _)) => match refusal(&e) {
                // Nothing was queued, so later rows may go on without overtaking anything.
                Some(reason) => pipeline.refused.push((row.id, reason)),
                None => {
                    // Stop here: sending later rows would let them overtake this one.
                    warn!(error = %e, "the producer refused a record; starting over once the records in flight are resolved");
                    pipeline.failed = true;
                }
            },
        }
    }

    /// Takes a delivery's outcome: its row is acknowledged, refused, or the pipeline failed.
    pub(super) fn resolve(&self, pipeline: &mut Pipeline, (id, topic, delivery): Outcome) {
        pipeline.in_flight.remove(&id);
        let labels = TopicLabels { topic };
        match delivery {
            Delivery::Acknowledged => {
                pipeline.acknowledged.push(id);
                self.metrics.published.get_or_create(&labels).inc();
                return;
            }
            // Moved aside, then the usual start-over: records behind it were in flight.
            Delivery::Refused(reason) => pipeline.refused.push((id, reason)),
            Delivery::Failed => {}
        }
        self.metrics.publish_failures.get_or_create(&labels).inc();
        if !pipeline.failed {
            pipeline.failed = true;
            // Abandon everything behind the failed record, so nothing is sent after it in
            // this producer session: after a timeout librdkafka bumps the idempotent
            // producer's epoch on its own and resends the rest under it (valid on Kafka,
            // fatal to some Kafka-compatible brokers), and those records could overtake the
            // failed one. Their rows stay; the start-over sends them again, in id order.
            self.producer
                .purge(PurgeConfig::default().queue().inflight().non_blocking());
        }
    }

    pub(super) async fn delete_acknowledged(&self, pipeline: &mut Pipeline) -> Result<(), Error> {
        if pipeline.acknowledged.is_empty() {
            return Ok(());
        }
        sqlx::query!(
            "DELETE FROM outbox WHERE id = ANY($1)",
            &pipeline.acknowledged
        )
        .execute(&self.pool)
        .await?;
        pipeline.acknowledged.clear();
        Ok(())
    }

    /// Moves the rows the broker refused for good out of the outbox, with the reason, so
    /// that the rows behind them go on.
    pub(super) async fn move_refused(&self, pipeline: &mut Pipeline) -> Result<(), Error> {
        if pipeline.refused.is_empty() {
            return Ok(());
        }
        let (ids, reasons): (Vec<i64>, Vec<String>) = pipeline.refused.iter().cloned().unzip();
        let moved = sqlx::query!(
            r#"WITH refused AS (
                 SELECT * FROM unnest($1::bigint[], $2::text[]) AS r(id, reason)
             ), moved AS (
                 DELETE FROM outbox o USING refused r WHERE o.id = r.id
                 RETURNING o.*, r.reason
             )
             INSERT INTO outbox_dead_letters (id, event_id, event_type, topic, record_key,
                 payload, traceparent, tracestate, created_at, reason)
             SELECT id, event_id, event_type, topic, record_key, payload,
                 coalesce(traceparent, headers->>'traceparent'),
                 coalesce(tracestate, headers->>'tracestate'), created_at, reason
             FROM moved
             RETURNING id, topic, reason"#,
            &ids,
            &reasons,
        )
        .fetch_all(&self.pool)
        .await?;
        for row in moved {
            let (id, topic, reason) = (row.id, row.topic, row.reason);
            error!(
                id,
                topic,
                reason,
                "the broker refuses this outbox row for good; moved to outbox_dead_letters"
            );
            self.metrics
                .outbox_dead_lettered
                .get_or_create(&TopicLabels { topic })
                .inc();
        }
        pipeline.refused.clear();
        Ok(())
    }

    /// A new producer session (a new producer id) for a start-over: after a timeout
    /// librdkafka bumps the idempotent producer's epoch on its own, which some
    /// Kafka-compatible brokers mishandle; a fresh session is valid anywhere.
    pub(super) fn renew_producer(&mut self) -> Result<(), Error> {
        self.producer = self
            .kafka
            .idempotent_producer()
            .create()
            .map_err(Error::Kafka)?;
        Ok(())
    }
}
