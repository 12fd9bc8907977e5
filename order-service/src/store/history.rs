//! The order's history (`order_events`, append-only): read back, upcast and folded. It is
//! written with its projection, by [`super::view::record`].

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use shared_events::contracts::EventMetadata;
use sqlx::types::Json;
use sqlx::{FromRow, PgExecutor};
use uuid::Uuid;

use super::upcaster;
use crate::domain::{Order, OrderEvent};
use crate::error::Error;

/// One event of an order's history, upcast to the current shape.
#[derive(Debug, Clone)]
pub struct RecordedEvent {
    pub sequence: i32,
    pub event_id: Uuid,
    pub event_type: String,
    pub producer: String,
    pub causation_id: Option<Uuid>,
    pub occurred_at: DateTime<Utc>,
    pub event: OrderEvent,
}

/// A row of `order_events` as stored, in whatever version wrote it.
#[derive(FromRow)]
struct StoredEvent {
    order_id: Uuid,
    sequence: i32,
    event_id: Uuid,
    event_type: String,
    event_version: i16,
    producer: String,
    causation_id: Option<Uuid>,
    occurred_at: DateTime<Utc>,
    data: Json<serde_json::Value>,
}

/// An order's history, oldest first.
pub async fn history<'e>(
    executor: impl PgExecutor<'e>,
    order_id: Uuid,
) -> Result<Vec<RecordedEvent>, Error> {
    let mut histories = histories(executor, &[order_id]).await?;
    Ok(histories.remove(&order_id).unwrap_or_default())
}

/// The histories of several orders in one query, each oldest first; an order without
/// events is absent.
pub async fn histories<'e>(
    executor: impl PgExecutor<'e>,
    order_ids: &[Uuid],
) -> Result<HashMap<Uuid, Vec<RecordedEvent>>, Error> {
    let rows = sqlx::query_as!(
        StoredEvent,
        r#"SELECT order_id, sequence, event_id, event_type, event_version, producer,
                  causation_id, occurred_at, data AS "data: Json<serde_json::Value>"
           FROM order_events WHERE order_id = ANY($1) ORDER BY order_id, sequence"#,
        order_ids,
    )
    .fetch_all(executor)
    .await?;
    let mut histories: HashMap<Uuid, Vec<RecordedEvent>> = HashMap::new();
    for row in rows {
        let event =
            upcaster::decode(&row.event_type, row.event_version, row.data.0).map_err(|e| {
                Error::CorruptHistory {
                    order_id: row.order_id,
                    reason: format!("event {} ({}): {e}", row.sequence, row.event_type),
                }
            })?;
        histories
            .entry(row.order_id)
            .or_default()
            .push(RecordedEvent {
                sequence: row.sequence,
                event_id: row.event_id,
                event_type: row.event_type,
                producer: row.producer,
                causation_id: row.causation_id,
                occurred_at: row.occurred_at,
                event,
            });
    }
    Ok(histories)
}

/// An order as a command works on it: folded from its history, with the events the command
/// appended in memory until [`super::view::record`] writes them.
#[derive(Debug, Clone)]
pub struct LoadedOrder {
    /// The order after its last event, stored or appended.
    pub order: Order,
    /// How many events the stored history holds.
    pub stored: i32,
    /// Metadata of the `OrderPlaced` event, the cause of commands that have no other.
    pub placed: EventMetadata,
    /// When the last saga event, stored or appended, happened: the last progress (an
    /// operator's action is not).
    pub updated_at: DateTime<Utc>,
    /// Appended and not yet written, each with the metadata it is recorded under.
    pub appended: Vec<(EventMetadata, OrderEvent)>,
}

impl LoadedOrder {
    /// Appends `event` (in memory) and applies it to the order.
    pub fn append(&mut self, metadata: EventMetadata, event: OrderEvent) {
        self.order.apply(&event);
        if event.is_saga_event() {
            self.updated_at = metadata.occurred_at;
        }
        self.appended.push((metadata, event));
    }
}

/// Folds the order's history without locking.
pub(super) async fn load<'e>(
    executor: impl PgExecutor<'e>,
    order_id: Uuid,
) -> Result<Option<LoadedOrder>, Error> {
    let history = history(executor, order_id).await?;
    fold(order_id, &history)
}

pub(super) fn fold(
    order_id: Uuid,
    history: &[RecordedEvent],
) -> Result<Option<LoadedOrder>, Error> {
    let (Some(first), Some(last)) = (history.first(), history.last()) else {
        return Ok(None);
    };
    let last_progress = history
        .iter()
        .rev()
        .find(|r| r.event.is_saga_event())
        .unwrap_or(first);
    let order =
        Order::from_history(order_id, history.iter().map(|r| &r.event)).ok_or_else(|| {
            Error::CorruptHistory {
                order_id,
                reason: "the first event is not OrderPlaced".to_owned(),
            }
        })?;
    let placed = placed_metadata(
        &order,
        first.event_id,
        first.occurred_at,
        first.producer.clone(),
    );
    Ok(Some(LoadedOrder {
        order,
        stored: last.sequence + 1,
        placed,
        updated_at: last_progress.occurred_at,
        appended: Vec::new(),
    }))
}

pub(super) fn placed_metadata(
    order: &Order,
    event_id: Uuid,
    occurred_at: DateTime<Utc>,
    producer: String,
) -> EventMetadata {
    EventMetadata {
        event_id,
        event_type: "OrderPlaced".to_owned(),
        occurred_at,
        order_id: Some(order.id),
        correlation_id: order.id,
        causation_id: None,
        producer,
        saga_deadline: Some(order.placed.saga_deadline),
    }
}
