//! Persistence: the append-only `order_events`, the `orders_view` projection, the catalog
//! copy and idempotency keys. Nothing here decides anything.

use chrono::{DateTime, Utc};
use serde::Serialize;
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

/// Locks the order (its `orders_view` row) and folds its history; `None` if unknown.
pub async fn lock(tx: &mut PgConnection, order_id: Uuid) -> Result<Option<LoadedOrder>, Error> {
    let locked: Option<(Uuid,)> =
        sqlx::query_as("SELECT order_id FROM orders_view WHERE order_id = $1 FOR UPDATE")
            .bind(order_id)
            .fetch_optional(&mut *tx)
            .await?;
    if locked.is_none() {
        return Ok(None);
    }
    load(&mut *tx, order_id).await
}

/// Folds the order's history without locking (for the projection rebuild).
pub async fn load<'e>(
    executor: impl PgExecutor<'e>,
    order_id: Uuid,
) -> Result<Option<LoadedOrder>, Error> {
    let history = history(executor, order_id).await?;
    let Some(first) = history.first() else {
        return Ok(None);
    };
    let order =
        Order::from_history(order_id, history.iter().map(|r| &r.data.0)).ok_or_else(|| {
            Error::CorruptHistory {
                order_id,
                reason: "the first event is not OrderPlaced".to_owned(),
            }
        })?;
    let placed = EventMetadata {
        event_id: first.event_id,
        event_type: first.event_type.clone(),
        occurred_at: first.occurred_at,
        order_id: Some(order_id),
        correlation_id: order_id,
        causation_id: None,
        producer: first.producer.clone(),
        saga_deadline: Some(order.placed.saga_deadline),
    };
    let next_sequence = history.last().map_or(0, |r| r.sequence + 1);
    Ok(Some(LoadedOrder {
        order,
        next_sequence,
        placed,
    }))
}

pub async fn append(
    tx: &mut PgConnection,
    order_id: Uuid,
    sequence: i32,
    metadata: &EventMetadata,
    event: &OrderEvent,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO order_events
             (order_id, sequence, event_id, event_type, producer, causation_id, occurred_at, data)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(order_id)
    .bind(sequence)
    .bind(metadata.event_id)
    .bind(event.event_type())
    .bind(&metadata.producer)
    .bind(metadata.causation_id)
    .bind(metadata.occurred_at)
    .bind(Json(event))
    .execute(tx)
    .await?;
    Ok(())
}

/// Writes the order's `orders_view` row: a function of its history alone (`version` is the
/// number of events, `updated_at` the time of the last), so a rebuild yields the same row.
pub async fn project(
    tx: &mut PgConnection,
    order: &Order,
    version: i32,
    placed_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
) -> Result<(), Error> {
    let placed = &order.placed;
    sqlx::query(
        "INSERT INTO orders_view (order_id, customer_id, status, currency, total_minor, lines,
             shipping_address, outcome_reason, saga_deadline, placed_at, updated_at, version)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT (order_id) DO UPDATE SET status = $3, outcome_reason = $8,
             updated_at = $11, version = $12",
    )
    .bind(order.id)
    .bind(&placed.customer_id)
    .bind(order.status().as_str())
    .bind(&placed.currency)
    .bind(placed.total_minor)
    .bind(Json(&placed.lines))
    .bind(Json(&placed.shipping_address))
    .bind(order.outcome_reason())
    .bind(placed.saga_deadline)
    .bind(placed_at)
    .bind(updated_at)
    .bind(version)
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
        let loaded = load(&mut *tx, *order_id)
            .await?
            .ok_or_else(|| Error::CorruptHistory {
                order_id: *order_id,
                reason: "no events".to_owned(),
            })?;
        let (first, last) = (&history[0], &history[history.len() - 1]);
        project(
            tx,
            &loaded.order,
            loaded.next_sequence,
            first.occurred_at,
            last.occurred_at,
        )
        .await?;
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
