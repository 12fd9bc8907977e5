//! The order's projection (`orders_view`): one row per order with its queryable columns and
//! the order folded up to its last event as a snapshot, written with the history it follows.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use shared_events::contracts::{Address, EventMetadata};
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::history::{LoadedOrder, fold, histories, load, placed_metadata};
use super::upcaster;
use crate::domain::{Line, Order, OrderEvent};
use crate::error::Error;

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

/// Locks the orders (their `orders_view` rows, in order-id order so that concurrent
/// batches queue instead of deadlocking) and returns them from their snapshots, or folded
/// from their histories where a snapshot is missing or stale. Unknown orders are absent.
pub async fn lock_all(
    tx: &mut PgConnection,
    order_ids: impl IntoIterator<Item = Uuid>,
) -> Result<BTreeMap<Uuid, LoadedOrder>, Error> {
    let ids: Vec<Uuid> = order_ids.into_iter().collect();
    let rows = sqlx::query_as!(
        SnapshotRow,
        r#"SELECT order_id, snapshot AS "snapshot: Json<serde_json::Value>", version,
                  placed_at, updated_at
           FROM orders_view WHERE order_id = ANY($1) ORDER BY order_id FOR UPDATE"#,
        &ids,
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut orders = BTreeMap::new();
    for row in rows {
        orders.insert(row.order_id, loaded(&mut *tx, row).await?);
    }
    Ok(orders)
}

/// Locks one order; `None` if unknown.
pub async fn lock(tx: &mut PgConnection, order_id: Uuid) -> Result<Option<LoadedOrder>, Error> {
    Ok(lock_all(tx, [order_id]).await?.remove(&order_id))
}

/// An order whose history does not read back (a bug or a manual edit): what its
/// projection row still says. Every fact reported for it is dead-lettered until it is
/// repaired, so it is stuck by definition.
#[derive(Debug, Clone)]
pub struct Unreadable {
    pub order_id: Uuid,
    pub status: String,
    pub updated_at: DateTime<Utc>,
    pub reason: String,
}

/// Orders in flight whose last saga event happened before `cutoff`, the longest idle first,
/// at most `limit`, without locking (the partial index `orders_view_in_flight_by_progress`
/// holds just the orders in flight). One whose history does not read back is listed too.
pub async fn idle_since(
    conn: &mut PgConnection,
    cutoff: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Result<LoadedOrder, Unreadable>>, Error> {
    let rows = sqlx::query!(
        r#"SELECT order_id, snapshot AS "snapshot: Json<serde_json::Value>", version,
                  placed_at, updated_at, status
           FROM orders_view
           WHERE status NOT IN ('COMPLETED', 'CANCELLED') AND updated_at < $1
           ORDER BY updated_at LIMIT $2"#,
        cutoff,
        limit,
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut orders = Vec::with_capacity(rows.len());
    for row in rows {
        let view = SnapshotRow {
            order_id: row.order_id,
            snapshot: row.snapshot,
            version: row.version,
            placed_at: row.placed_at,
            updated_at: row.updated_at,
        };
        orders.push(match loaded(&mut *conn, view).await {
            Ok(order) => Ok(order),
            Err(Error::CorruptHistory { order_id, reason }) => Err(Unreadable {
                order_id,
                status: row.status,
                updated_at: row.updated_at,
                reason,
            }),
            Err(other) => return Err(other),
        });
    }
    Ok(orders)
}

/// What a command needs of an `orders_view` row.
struct SnapshotRow {
    order_id: Uuid,
    snapshot: Option<Json<serde_json::Value>>,
    version: i32,
    placed_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// The order of a projection row: from its snapshot, or folded from its history where the
/// snapshot is missing or stale.
async fn loaded(conn: &mut PgConnection, row: SnapshotRow) -> Result<LoadedOrder, Error> {
    let snapshot = row
        .snapshot
        .and_then(|Json(value)| serde_json::from_value::<Snapshot>(value).ok())
        .filter(|s| s.format == SNAPSHOT_FORMAT);
    match snapshot {
        Some(snapshot) => Ok(LoadedOrder {
            placed: placed_metadata(
                &snapshot.order,
                snapshot.placed_event_id,
                row.placed_at,
                snapshot.placed_by,
            ),
            order: snapshot.order,
            stored: row.version,
            updated_at: row.updated_at,
            appended: Vec::new(),
        }),
        None => load(conn, row.order_id)
            .await?
            .ok_or_else(|| Error::CorruptHistory {
                order_id: row.order_id,
                reason: "a projection row without events".to_owned(),
            }),
    }
}

/// Writes `orders`: their appended events to the history and their `orders_view` rows, in
/// one statement (one round trip per batch, which order-service writes several times per
/// order). A row is a function of the history alone (`version` is the number of events,
/// `updated_at` the time of the last saga event, `snapshot` the order after it), so a
/// rebuild yields the same row.
pub async fn record<'a>(
    tx: &mut PgConnection,
    orders: impl IntoIterator<Item = &'a LoadedOrder>,
) -> Result<(), Error> {
    let mut events = Vec::new();
    let mut views = Vec::new();
    for loaded in orders {
        for (i, (metadata, event)) in loaded.appended.iter().enumerate() {
            events.push(EventRow::new(
                loaded,
                loaded.stored + i as i32,
                metadata,
                event,
            ));
        }
        views.push(ViewRow::new(loaded));
    }
    if views.is_empty() {
        return Ok(());
    }
    // The rows travel as two JSON arrays, each read back as its table's row type: two plain
    // INSERTs, one per table, in one statement.
    sqlx::query!(
        "WITH appended AS (
             INSERT INTO order_events (order_id, sequence, event_id, event_type, producer,
                 causation_id, occurred_at, data, event_version)
             SELECT order_id, sequence, event_id, event_type, producer, causation_id,
                 occurred_at, data, $3
             FROM jsonb_populate_recordset(NULL::order_events, $1)
         )
         INSERT INTO orders_view (order_id, customer_id, status, currency, total_minor, lines,
             shipping_address, outcome_reason, saga_deadline, placed_at, updated_at, version,
             snapshot)
         SELECT order_id, customer_id, status, currency, total_minor, lines, shipping_address,
             outcome_reason, saga_deadline, placed_at, updated_at, version, snapshot
         FROM jsonb_populate_recordset(NULL::orders_view, $2)
         ON CONFLICT (order_id) DO UPDATE SET status = excluded.status,
             outcome_reason = excluded.outcome_reason, updated_at = excluded.updated_at,
             version = excluded.version, snapshot = excluded.snapshot",
        Json(&events) as _,
        Json(&views) as _,
        upcaster::CURRENT_VERSION,
    )
    .execute(tx)
    .await?;
    Ok(())
}

/// An `order_events` row as [`record`] writes it.
#[derive(Serialize)]
struct EventRow<'a> {
    order_id: Uuid,
    sequence: i32,
    event_id: Uuid,
    event_type: &'static str,
    producer: &'a str,
    causation_id: Option<Uuid>,
    occurred_at: DateTime<Utc>,
    data: serde_json::Value,
}

impl<'a> EventRow<'a> {
    fn new(
        loaded: &LoadedOrder,
        sequence: i32,
        metadata: &'a EventMetadata,
        event: &OrderEvent,
    ) -> Self {
        Self {
            order_id: loaded.order.id,
            sequence,
            event_id: metadata.event_id,
            event_type: event.event_type(),
            producer: &metadata.producer,
            causation_id: metadata.causation_id,
            occurred_at: metadata.occurred_at,
            data: upcaster::encode(event),
        }
    }
}

/// An `orders_view` row as [`record`] writes it.
#[derive(Serialize)]
struct ViewRow<'a> {
    order_id: Uuid,
    customer_id: &'a str,
    status: &'static str,
    currency: &'a str,
    total_minor: i64,
    lines: &'a [Line],
    shipping_address: &'a Address,
    outcome_reason: Option<String>,
    saga_deadline: DateTime<Utc>,
    placed_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    version: i32,
    snapshot: Snapshot,
}

impl<'a> ViewRow<'a> {
    fn new(loaded: &'a LoadedOrder) -> Self {
        let order = &loaded.order;
        let placed = &order.placed;
        Self {
            order_id: order.id,
            customer_id: &placed.customer_id,
            status: order.status().as_str(),
            currency: &placed.currency,
            total_minor: placed.total_minor,
            lines: &placed.lines,
            shipping_address: &placed.shipping_address,
            outcome_reason: order.outcome_reason(),
            saga_deadline: placed.saga_deadline,
            placed_at: loaded.placed.occurred_at,
            updated_at: loaded.updated_at,
            version: loaded.stored + loaded.appended.len() as i32,
            snapshot: Snapshot {
                format: SNAPSHOT_FORMAT,
                order: order.clone(),
                placed_event_id: loaded.placed.event_id,
                placed_by: loaded.placed.producer.clone(),
            },
        }
    }
}

/// How many orders a rebuild folds per read of their histories.
const REBUILD_BATCH: usize = 500;

/// Replaces the whole projection with one folded from `order_events`; returns the number
/// of orders. Runs in the caller's transaction, holding off writers meanwhile.
pub async fn rebuild_view(tx: &mut PgConnection) -> Result<u64, Error> {
    // LOCK cannot be prepared, so it is the one statement here the macros cannot check (it
    // has no parameters and returns nothing).
    sqlx::query("LOCK TABLE orders_view IN EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await?;
    sqlx::query!("DELETE FROM orders_view")
        .execute(&mut *tx)
        .await?;
    let ids = sqlx::query_scalar!("SELECT DISTINCT order_id FROM order_events")
        .fetch_all(&mut *tx)
        .await?;
    for batch in ids.chunks(REBUILD_BATCH) {
        let histories = histories(&mut *tx, batch).await?;
        let mut orders = Vec::with_capacity(batch.len());
        for (order_id, history) in &histories {
            orders.extend(fold(*order_id, history)?);
        }
        record(tx, &orders).await?;
    }
    Ok(ids.len() as u64)
}

/// How many orders are in flight, counting no further than `limit` (admission control asks
/// every half second; the partial index `orders_view_in_flight` holds just those).
pub fn count_in_flight_up_to(pool: &PgPool, limit: i64) -> BoxFuture<'_, Result<i64, sqlx::Error>> {
    Box::pin(async move {
        let in_flight = sqlx::query_scalar!(
            r#"SELECT count(*) AS "in_flight!" FROM (
                   SELECT 1 FROM orders_view WHERE status NOT IN ('COMPLETED', 'CANCELLED')
                   LIMIT $1) AS in_flight"#,
            limit,
        )
        .fetch_one(pool)
        .await?;
        Ok(in_flight)
    })
}

/// Which of `order_ids` are orders this service took.
pub async fn existing_orders(pool: &PgPool, order_ids: &[Uuid]) -> Result<HashSet<Uuid>, Error> {
    let rows = sqlx::query_scalar!(
        "SELECT order_id FROM orders_view WHERE order_id = ANY($1)",
        order_ids
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().collect())
}
