//! The transactional outbox: events are appended in the caller's transaction, so the state
//! change and the event commit or roll back together. [`crate::relay`] publishes them.
//!
//! The relay is woken in-process after a commit ([`Outbox::commit`], and the consumer
//! runner after each batch), not by a `NOTIFY` trigger: PostgreSQL serialises every
//! committing transaction that notified behind one cluster-wide lock held through its WAL
//! flush, which undoes group commit for every outbox-writing transaction on the server.

use std::sync::Arc;

use futures::future::BoxFuture;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::codec::RegistryCodec;
use crate::contracts::Event;
use crate::error::Error;
use crate::topics::TopicNames;
use crate::trace_context;

/// Kafka header names every published event carries: what a consumer needs before it
/// decodes the value (whether to decode it at all, and which trace it continues). The
/// ids (event, correlation, causation) travel in the Avro payload's metadata.
pub mod headers {
    use rdkafka::message::{Header, OwnedHeaders};

    pub const EVENT_TYPE: &str = "event_type";
    pub const TRACEPARENT: &str = "traceparent";
    pub const TRACESTATE: &str = "tracestate";

    /// The headers the relay sends an event's record with: its type, and the trace it
    /// continues when there is one.
    pub fn of_record(
        event_type: &str,
        traceparent: Option<&str>,
        tracestate: Option<&str>,
    ) -> OwnedHeaders {
        let mut headers = OwnedHeaders::new_with_capacity(3).insert(Header {
            key: EVENT_TYPE,
            value: Some(event_type),
        });
        for (key, value) in [(TRACEPARENT, traceparent), (TRACESTATE, tracestate)] {
            if let Some(value) = value {
                headers = headers.insert(Header {
                    key,
                    value: Some(value),
                });
            }
        }
        headers
    }
}

/// Appends events to the `outbox` table. Cheap to clone; clones wake the same relay.
#[derive(Clone)]
pub struct Outbox {
    codec: RegistryCodec,
    names: TopicNames,
    relay_wakeup: Arc<Notify>,
}

/// One event, encoded and ready to be an outbox row.
#[derive(Debug, Clone)]
pub struct OutboxRecord {
    pub event_id: Uuid,
    pub event_type: &'static str,
    pub topic: String,
    pub key: String,
    /// Confluent wire format: magic byte, schema id, Avro datum.
    pub payload: Vec<u8>,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

impl Outbox {
    pub fn new(codec: RegistryCodec, names: TopicNames) -> Self {
        Self {
            codec,
            names,
            relay_wakeup: Arc::new(Notify::new()),
        }
    }

    /// Encodes `event` with the current span's trace context, which the published record
    /// carries so that its consumers continue the trace.
    pub async fn record(&self, event: &Event) -> Result<OutboxRecord, Error> {
        let payload = self.codec.encode(event).await?;
        let mut trace = trace_context::current_trace_headers();
        Ok(OutboxRecord {
            event_id: event.metadata.event_id,
            event_type: event.event_type(),
            topic: self.names.name(event.topic()),
            key: event.key(),
            payload,
            traceparent: trace.remove(headers::TRACEPARENT),
            tracestate: trace.remove(headers::TRACESTATE),
        })
    }

    /// Inserts `records` in one statement, inside the caller's transaction. Their ids
    /// ascend in the given order, which is the order the relay publishes them in.
    pub async fn insert(
        &self,
        tx: &mut PgConnection,
        records: &[OutboxRecord],
    ) -> Result<(), Error> {
        if records.is_empty() {
            return Ok(());
        }
        let mut event_ids = Vec::with_capacity(records.len());
        let mut event_types = Vec::with_capacity(records.len());
        let mut topics = Vec::with_capacity(records.len());
        let mut keys = Vec::with_capacity(records.len());
        let mut payloads = Vec::with_capacity(records.len());
        let mut traceparents = Vec::with_capacity(records.len());
        let mut tracestates = Vec::with_capacity(records.len());
        for record in records {
            event_ids.push(record.event_id);
            event_types.push(record.event_type);
            topics.push(record.topic.as_str());
            keys.push(record.key.as_str());
            payloads.push(record.payload.as_slice());
            traceparents.push(record.traceparent.as_deref());
            tracestates.push(record.tracestate.as_deref());
        }
        // Arrays of borrowed or optional values are bound unchecked (`as _`): the macros'
        // parameter check knows only owned, non-null element types; the statement still is.
        sqlx::query!(
            "INSERT INTO outbox (event_id, event_type, topic, record_key, payload, traceparent, tracestate)
             SELECT event_id, event_type, topic, record_key, payload, traceparent, tracestate
             FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bytea[], $6::text[], $7::text[])
                  WITH ORDINALITY
                  AS r(event_id, event_type, topic, record_key, payload, traceparent, tracestate, position)
             ORDER BY position",
            &event_ids,
            &event_types as _,
            &topics as _,
            &keys as _,
            &payloads as _,
            &traceparents as _,
            &tracestates as _,
        )
        .execute(tx)
        .await?;
        Ok(())
    }

    /// Appends `events`, in order, inside the caller's transaction (pass `&mut *tx`); then
    /// commit with [`Outbox::commit`] so the relay hears of them at once.
    pub async fn append(&self, tx: &mut PgConnection, events: &[Event]) -> Result<(), Error> {
        let mut records = Vec::with_capacity(events.len());
        for event in events {
            records.push(self.record(event).await?);
        }
        self.insert(tx, &records).await
    }

    /// Queues an event that was published before, under its own event id, so that a
    /// delivery that was lost or skipped happens again (the consumers dedupe it by that id).
    /// Returns `false`, queuing nothing, while the event still waits in the outbox.
    pub async fn republish(&self, tx: &mut PgConnection, event: &Event) -> Result<bool, Error> {
        let record = self.record(event).await?;
        let queued = sqlx::query!(
            "INSERT INTO outbox (event_id, event_type, topic, record_key, payload, traceparent, tracestate)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (event_id) DO NOTHING",
            record.event_id,
            record.event_type,
            record.topic,
            record.key,
            record.payload,
            record.traceparent,
            record.tracestate,
        )
        .execute(tx)
        .await?;
        Ok(queued.rows_affected() == 1)
    }

    /// Commits `tx` and wakes this process's relay. (A relay in another replica finds the
    /// rows on its next poll.)
    pub async fn commit(&self, tx: Transaction<'_, Postgres>) -> Result<(), sqlx::Error> {
        tx.commit().await?;
        self.wake_relay();
        Ok(())
    }

    /// The registry codec it encodes with, which reads back what it wrote.
    pub(crate) fn codec(&self) -> &RegistryCodec {
        &self.codec
    }

    /// Tells this process's relay that outbox rows were committed.
    pub fn wake_relay(&self) {
        self.relay_wakeup.notify_one();
    }

    /// What the relay waits on between polls.
    pub(crate) fn relay_wakeup(&self) -> Arc<Notify> {
        self.relay_wakeup.clone()
    }
}

/// How many events wait in the outbox, counting no further than `limit` (admission control
/// asks this every half second, so it stops early instead of counting a large backlog).
pub fn count_up_to(pool: &PgPool, limit: i64) -> BoxFuture<'_, Result<i64, sqlx::Error>> {
    Box::pin(async move {
        let queued = sqlx::query_scalar!(
            r#"SELECT count(*) AS "queued!" FROM (SELECT 1 FROM outbox LIMIT $1) AS queued"#,
            limit,
        )
        .fetch_one(pool)
        .await?;
        Ok(queued)
    })
}
