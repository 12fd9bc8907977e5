//! Persistence: the append-only `order_events`, the `orders_view` projection, the catalog
//! copy and idempotency keys. Nothing here decides anything.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared_events::EventMetadata;
use sqlx::types::Json;
use sqlx::{FromRow, PgConnection, PgExecutor};
use uuid::Uuid;

use crate::domain::{Order, OrderEvent};
use crate::error::Error;

/// One row of `order_events`.
#[derive(Debug, Clone, FromRow)]
pub struct RecordedEvent {
    pub sequence: i32,
    pub event_id: Uuid,
    pub event_type: String,
    pub producer: String,
    pub causation_id: Option<Uuid>,
    pub occurred_at: DateTime<Utc>,
    pub data: Json<OrderEvent>,
}

/// An order's history, oldest first.
pub async fn history<'e>(
    executor: impl PgExecutor<'e>,
    order_id: Uuid,
) -> Result<Vec<RecordedEvent>, Error> {
    Ok(sqlx::query_as(
        "SELECT sequence, event_id, event_type, producer, causation_id, occurred_at, data
         FROM order_events WHERE order_id = $1 ORDER BY sequence",
    )
    .bind(order_id)
    .fetch_all(executor)
    .await?)
}

/// An order folded from its history, with what it takes to append after it.
pub struct LoadedOrder {
    pub order: Order,
    pub next_sequence: i32,
    /// Metadata of the `OrderPlaced` event, the cause of commands that have no other.
    pub placed: EventMetadata,
}

/// What `orders_view.snapshot` holds: the order after its last event, and what the
/// `OrderPlaced` metadata needs beside the row's columns.
#[derive(Serialize, Deserialize)]
struct Snapshot {
    format: u32,
    order: Order,
    placed_event_id: Uuid,
    placed_by: String,
}

/// Bumped whenever [`Order`]'s serialized shape changes: older snapshots are then ignored
/// and the history folded instead.
const SNAPSHOT_FORMAT: u32 = 1;

/// Locks the order (its `orders_view` row) and returns it from its snapshot, or folded from
/// its history when the snapshot is missing or stale; `None` if the order is unknown.
pub async fn lock(tx: &mut PgConnection, order_id: Uuid) -> Result<Option<LoadedOrder>, Error> {
    let row: Option<(Option<Json<serde_json::Value>>, i32, DateTime<Utc>)> = sqlx::query_as(
        "SELECT snapshot, version, placed_at FROM orders_view WHERE order_id = $1 FOR UPDATE",
    )
    .bind(order_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((snapshot, version, placed_at)) = row else {
        return Ok(None);
    };
    let snapshot = snapshot
        .and_then(|Json(value)| serde_json::from_value::<Snapshot>(value).ok())
        .filter(|s| s.format == SNAPSHOT_FORMAT);
    match snapshot {
        Some(snapshot) => Ok(Some(LoadedOrder {
            placed: placed_metadata(
                &snapshot.order,
                snapshot.placed_event_id,
                placed_at,
                snapshot.placed_by,
            ),
            order: snapshot.order,
            next_sequence: version,
        })),
        None => load(&mut *tx, order_id).await,
    }
}

/// Folds the order's history without locking.
pub async fn load<'e>(
    executor: impl PgExecutor<'e>,
    order_id: Uuid,
) -> Result<Option<LoadedOrder>, Error> {
    let history = history(executor, order_id).await?;
    fold(order_id, &history)
}

fn fold(order_id: Uuid, history: &[RecordedEvent]) -> Result<Option<LoadedOrder>, Error> {
    let (Some(first), Some(last)) = (history.first(), history.last()) else {
        return Ok(None);
    };
    let order =
        Order::from_history(order_id, history.iter().map(|r| &r.data.0)).ok_or_else(|| {
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
        next_sequence: last.sequence + 1,
        placed,
    }))
}

fn placed_metadata(
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

/// Events to append to an order's history, each with the metadata it is recorded under.
pub struct NewEvents<'a> {
    pub first_sequence: i32,
    pub events: Vec<(EventMetadata, &'a OrderEvent)>,
}

/// Appends `new` to the order's history and writes its `orders_view` row, in one statement.
/// The row is a function of the history alone (`version` is the number of events,
/// `updated_at` the time of the last, `snapshot` the order after it), so a rebuild yields
/// the same row.
pub async fn record(
    tx: &mut PgConnection,
    order: &Order,
    placed: &EventMetadata,
    new: NewEvents<'_>,
    updated_at: DateTime<Utc>,
) -> Result<(), Error> {
    let mut sequences = Vec::with_capacity(new.events.len());
    let mut event_ids = Vec::with_capacity(new.events.len());
    let mut event_types = Vec::with_capacity(new.events.len());
    let mut producers = Vec::with_capacity(new.events.len());
    let mut causation_ids = Vec::with_capacity(new.events.len());
    let mut occurred = Vec::with_capacity(new.events.len());
    let mut data = Vec::with_capacity(new.events.len());
    for (i, (metadata, event)) in new.events.iter().enumerate() {
        sequences.push(new.first_sequence + i as i32);
        event_ids.push(metadata.event_id);
        event_types.push(event.event_type());
        producers.push(metadata.producer.as_str());
        causation_ids.push(metadata.causation_id);
        occurred.push(metadata.occurred_at);
        data.push(Json(*event));
    }
    let version = new.first_sequence + new.events.len() as i32;
    let snapshot = Snapshot {
        format: SNAPSHOT_FORMAT,
        order: order.clone(),
        placed_event_id: placed.event_id,
        placed_by: placed.producer.clone(),
    };
    let placed_order = &order.placed;
    sqlx::query(
        "WITH appended AS (
             INSERT INTO order_events
                 (order_id, sequence, event_id, event_type, producer, causation_id, occurred_at, data)
             SELECT $1, * FROM UNNEST($2::int[], $3::uuid[], $4::text[], $5::text[], $6::uuid[],
                                      $7::timestamptz[], $8::jsonb[])
         )
         INSERT INTO orders_view (order_id, customer_id, status, currency, total_minor, lines,
             shipping_address, outcome_reason, saga_deadline, placed_at, updated_at, version,
             snapshot)
         VALUES ($1, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)
         ON CONFLICT (order_id) DO UPDATE SET status = $10, outcome_reason = $15,
             updated_at = $18, version = $19, snapshot = $20",
    )
    .bind(order.id)
    .bind(sequences)
    .bind(event_ids)
    .bind(event_types)
    .bind(producers)
    .bind(causation_ids)
    .bind(occurred)
    .bind(data)
    .bind(&placed_order.customer_id)
    .bind(order.status().as_str())
    .bind(&placed_order.currency)
    .bind(placed_order.total_minor)
    .bind(Json(&placed_order.lines))
    .bind(Json(&placed_order.shipping_address))
    .bind(order.outcome_reason())
    .bind(placed_order.saga_deadline)
    .bind(placed.occurred_at)
    .bind(updated_at)
    .bind(version)
    .bind(Json(snapshot))
    .execute(tx)
    .await?;
    Ok(())
}

/// Replaces the whole projection with one folded from `order_events`; returns the number
/// of orders. Runs in the caller's transaction, holding off writers meanwhile.
pub async fn rebuild_view(tx: &mut PgConnection) -> Result<u64, Error> {
    sqlx::query("LOCK TABLE orders_view IN EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM orders_view")
        .execute(&mut *tx)
        .await?;
    let ids: Vec<(Uuid,)> = sqlx::query_as("SELECT DISTINCT order_id FROM order_events")
        .fetch_all(&mut *tx)
        .await?;
    for (order_id,) in &ids {
        let history = history(&mut *tx, *order_id).await?;
        let corrupt = || Error::CorruptHistory {
            order_id: *order_id,
            reason: "no events".to_owned(),
        };
        let last_at = history.last().ok_or_else(corrupt)?.occurred_at;
        let loaded = fold(*order_id, &history)?.ok_or_else(corrupt)?;
        let new = NewEvents {
            first_sequence: loaded.next_sequence,
            events: Vec::new(),
        };
        record(tx, &loaded.order, &loaded.placed, new, last_at).await?;
    }
    Ok(ids.len() as u64)
}

/// A product's price as order-service's catalog copy has it.
#[derive(Debug, Clone, FromRow, Serialize)]
pub struct CatalogRow {
    pub product_id: String,
    pub unit_price_minor: i64,
    pub currency: String,
}

pub async fn catalog_prices<'e>(
    executor: impl PgExecutor<'e>,
    product_ids: &[String],
) -> Result<Vec<CatalogRow>, Error> {
    Ok(sqlx::query_as(
        "SELECT product_id, unit_price_minor, currency FROM catalog WHERE product_id = ANY($1)",
    )
    .bind(product_ids)
    .fetch_all(executor)
    .await?)
}

pub async fn upsert_catalog(
    tx: &mut PgConnection,
    product: &shared_events::contracts::ProductUpserted,
    occurred_at: DateTime<Utc>,
) -> Result<(), Error> {
    // Only a newer upsert wins, should one arrive out of order.
    sqlx::query(
        "INSERT INTO catalog (product_id, name, unit_price_minor, currency, available_quantity, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (product_id) DO UPDATE SET name = $2, unit_price_minor = $3, currency = $4,
             available_quantity = $5, updated_at = $6
         WHERE catalog.updated_at <= $6",
    )
    .bind(&product.product_id)
    .bind(&product.name)
    .bind(product.unit_price.amount_minor)
    .bind(&product.unit_price.currency)
    .bind(product.available_quantity)
    .bind(occurred_at)
    .execute(tx)
    .await?;
    Ok(())
}

/// A stored `POST /orders` request, by its Idempotency-Key.
pub async fn idempotent_request<'e>(
    executor: impl PgExecutor<'e>,
    key: &str,
) -> Result<Option<(serde_json::Value, Uuid)>, Error> {
    let row: Option<(Json<serde_json::Value>, Uuid)> =
        sqlx::query_as("SELECT request, order_id FROM idempotency_keys WHERE idempotency_key = $1")
            .bind(key)
            .fetch_optional(executor)
            .await?;
    Ok(row.map(|(request, order_id)| (request.0, order_id)))
}

/// Claims `key` for `order_id`; `false` if another request claimed it first.
pub async fn claim_idempotency_key(
    tx: &mut PgConnection,
    key: &str,
    request: &serde_json::Value,
    order_id: Uuid,
) -> Result<bool, Error> {
    let claimed = sqlx::query(
        "INSERT INTO idempotency_keys (idempotency_key, request, order_id) VALUES ($1, $2, $3)
         ON CONFLICT DO NOTHING",
    )
    .bind(key)
    .bind(Json(request))
    .bind(order_id)
    .execute(tx)
    .await?;
    Ok(claimed.rows_affected() == 1)
}
