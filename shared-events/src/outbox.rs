//! The transactional outbox: events are appended in the caller's transaction, so the state
//! change and the event commit or roll back together. [`crate::relay`] publishes them.

use std::collections::HashMap;

use sqlx::PgConnection;
use sqlx::types::Json;

use crate::codec::RegistryCodec;
use crate::contracts::Event;
use crate::topics::TopicNames;
use crate::{Error, trace_context};

/// Kafka header names every published event carries.
pub mod headers {
    pub const EVENT_ID: &str = "event_id";
    pub const EVENT_TYPE: &str = "event_type";
    pub const CORRELATION_ID: &str = "correlation_id";
    pub const CAUSATION_ID: &str = "causation_id";
    pub const TRACEPARENT: &str = "traceparent";
}

/// Appends events to the `outbox` table. Cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    codec: RegistryCodec,
    names: TopicNames,
}

impl Outbox {
    pub fn new(codec: RegistryCodec, names: TopicNames) -> Self {
        Self { codec, names }
    }

    /// Appends `event` inside the caller's transaction (pass `&mut *tx`). The current span's
    /// trace context and the event's correlation id go with it as Kafka headers.
    pub async fn append(&self, tx: &mut PgConnection, event: &Event) -> Result<(), Error> {
        let payload = self.codec.encode(event).await?;
        let mut record_headers: HashMap<String, String> = trace_context::current_trace_headers();
        let metadata = &event.metadata;
        record_headers.insert(headers::EVENT_ID.into(), metadata.event_id.to_string());
        record_headers.insert(headers::EVENT_TYPE.into(), event.event_type().into());
        record_headers.insert(
            headers::CORRELATION_ID.into(),
            metadata.correlation_id.to_string(),
        );
        if let Some(causation_id) = metadata.causation_id {
            record_headers.insert(headers::CAUSATION_ID.into(), causation_id.to_string());
        }
        sqlx::query(
            "INSERT INTO outbox (event_id, event_type, topic, record_key, payload, headers)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(metadata.event_id)
        .bind(event.event_type())
        .bind(self.names.name(event.topic()))
        .bind(event.key())
        .bind(payload)
        .bind(Json(record_headers))
        .execute(tx)
        .await?;
        Ok(())
    }
}
