//! The order's history (`order_events`, append-only) and its projection (`orders_view`),
//! which also keeps the order folded up to its last event as a snapshot.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared_events::EventMetadata;
use sqlx::types::Json;
use sqlx::{FromRow, PgConnection, PgExecutor};
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
/// appended in memory until [`record`] writes them.
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
        ViewRow,
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
        let view = ViewRow {
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
struct ViewRow {
    order_id: Uuid,
    snapshot: Option<Json<serde_json::Value>>,
    version: i32,
    placed_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// The order of a projection row: from its snapshot, or folded from its history where the
/// snapshot is missing or stale.
async fn loaded(conn: &mut PgConnection, row: ViewRow) -> Result<LoadedOrder, Error> {
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

/// Locks one order; `None` if unknown.
pub async fn lock(tx: &mut PgConnection, order_id: Uuid) -> Result<Option<LoadedOrder>, Error> {
    Ok(lock_all(tx, [order_id]).await?.remove(&order_id))
}

/// Folds the order's history without locking.
async fn load<'e>(
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

/// Writes `orders`: their appended events to the history and their `orders_view` rows, all
/// in one statement. A row is a function of the history alone (`version` is the number of
/// events, `updated_at` the time of the last saga event, `snapshot` the order after it), so
/// a rebuild yields the same row.
pub async fn record<'a>(
    tx: &mut PgConnection,
    orders: impl IntoIterator<Item = &'a LoadedOrder>,
) -> Result<(), Error> {
    let mut events = EventColumns::default();
    let mut views = ViewColumns::default();
    for loaded in orders {
        for (i, (metadata, event)) in loaded.appended.iter().enumerate() {
            events.push(loaded.order.id, loaded.stored + i as i32, metadata, event);
        }
        views.push(loaded);
    }
    if views.order_ids.is_empty() {
        return Ok(());
    }
    // Arrays of optional or borrowed values are bound unchecked (`as _`): the macros'
    // parameter check knows only owned, non-null element types; the statement still is.
    sqlx::query!(
        "WITH appended AS (
             INSERT INTO order_events
                 (order_id, sequence, event_id, event_type, producer, causation_id, occurred_at,
                  event_version, data)
             SELECT order_id, sequence, event_id, event_type, producer, causation_id,
                    occurred_at, $22, data
             FROM UNNEST($1::uuid[], $2::int[], $3::uuid[], $4::text[], $5::text[],
                         $6::uuid[], $7::timestamptz[], $8::jsonb[])
                  AS e(order_id, sequence, event_id, event_type, producer, causation_id,
                       occurred_at, data)
         )
         INSERT INTO orders_view (order_id, customer_id, status, currency, total_minor, lines,
             shipping_address, outcome_reason, saga_deadline, placed_at, updated_at, version,
             snapshot)
         SELECT * FROM UNNEST($9::uuid[], $10::text[], $11::text[], $12::text[], $13::bigint[],
             $14::jsonb[], $15::jsonb[], $16::text[], $17::timestamptz[], $18::timestamptz[],
             $19::timestamptz[], $20::int[], $21::jsonb[])
         ON CONFLICT (order_id) DO UPDATE SET status = excluded.status,
             outcome_reason = excluded.outcome_reason, updated_at = excluded.updated_at,
             version = excluded.version, snapshot = excluded.snapshot",
        &events.order_ids,
        &events.sequences,
        &events.event_ids,
        &events.event_types as _,
        &events.producers,
        &events.causation_ids as _,
        &events.occurred_at,
        &events.data,
        &views.order_ids,
        &views.customer_ids,
        &views.statuses as _,
        &views.currencies,
        &views.totals,
        &views.lines,
        &views.addresses,
        &views.outcome_reasons as _,
        &views.saga_deadlines,
        &views.placed_at,
        &views.updated_at,
        &views.versions,
        &views.snapshots,
        upcaster::CURRENT_VERSION,
    )
    .execute(tx)
    .await?;
    Ok(())
}

/// `order_events` rows as the columns of one multi-row insert.
#[derive(Default)]
struct EventColumns {
    order_ids: Vec<Uuid>,
    sequences: Vec<i32>,
    event_ids: Vec<Uuid>,
    event_types: Vec<&'static str>,
    producers: Vec<String>,
    causation_ids: Vec<Option<Uuid>>,
    occurred_at: Vec<DateTime<Utc>>,
    data: Vec<serde_json::Value>,
}

impl EventColumns {
    fn push(
        &mut self,
        order_id: Uuid,
        sequence: i32,
        metadata: &EventMetadata,
        event: &OrderEvent,
    ) {
        self.order_ids.push(order_id);
        self.sequences.push(sequence);
        self.event_ids.push(metadata.event_id);
        self.event_types.push(event.event_type());
        self.producers.push(metadata.producer.clone());
        self.causation_ids.push(metadata.causation_id);
        self.occurred_at.push(metadata.occurred_at);
        self.data.push(upcaster::encode(event));
    }
}

/// `orders_view` rows as the columns of one multi-row upsert.
#[derive(Default)]
struct ViewColumns {
    order_ids: Vec<Uuid>,
    customer_ids: Vec<String>,
    statuses: Vec<&'static str>,
    currencies: Vec<String>,
    totals: Vec<i64>,
    lines: Vec<serde_json::Value>,
    addresses: Vec<serde_json::Value>,
    outcome_reasons: Vec<Option<String>>,
    saga_deadlines: Vec<DateTime<Utc>>,
    placed_at: Vec<DateTime<Utc>>,
    updated_at: Vec<DateTime<Utc>>,
    versions: Vec<i32>,
    snapshots: Vec<serde_json::Value>,
}

impl ViewColumns {
    fn push(&mut self, loaded: &LoadedOrder) {
        let order = &loaded.order;
        let placed = &order.placed;
        let snapshot = Snapshot {
            format: SNAPSHOT_FORMAT,
            order: order.clone(),
            placed_event_id: loaded.placed.event_id,
            placed_by: loaded.placed.producer.clone(),
        };
        let json = |value: serde_json::Result<serde_json::Value>| {
            value.expect("plain data always serializes")
        };
        self.order_ids.push(order.id);
        self.customer_ids.push(placed.customer_id.clone());
        self.statuses.push(order.status().as_str());
        self.currencies.push(placed.currency.clone());
        self.totals.push(placed.total_minor);
        self.lines.push(json(serde_json::to_value(&placed.lines)));
        self.addresses
            .push(json(serde_json::to_value(&placed.shipping_address)));
        self.outcome_reasons.push(order.outcome_reason());
        self.saga_deadlines.push(placed.saga_deadline);
        self.placed_at.push(loaded.placed.occurred_at);
        self.updated_at.push(loaded.updated_at);
        self.versions
            .push(loaded.stored + loaded.appended.len() as i32);
        self.snapshots.push(json(serde_json::to_value(&snapshot)));
    }
}

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
    for order_id in &ids {
        let loaded = load(&mut *tx, *order_id)
            .await?
            .ok_or_else(|| Error::CorruptHistory {
                order_id: *order_id,
                reason: "no events".to_owned(),
            })?;
        record(tx, [&loaded]).await?;
    }
    Ok(ids.len() as u64)
}
