//! Inventory's consumer: applies [`crate::domain::decide`] to a batch of events, set-based. It
//! locks the saga rows of every order in the batch, then every product the batch may touch
//! (each in key order, so concurrent reservations of the same products queue instead of
//! deadlocking or overselling), decides event by event in memory, and writes back what
//! changed.

use std::collections::{BTreeMap, BTreeSet};

use shared_events::contracts::Event;
use shared_events::{EventHandler, HandlerError};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{self, OrderStock, StockLevel};

shared_events::saga_state_table! {
    /// Inventory's saga state per order ([`OrderStock`] as JSON).
    pub struct OrderReservations("order_reservations") holds OrderStock;
}

pub struct InventoryHandler;

impl EventHandler for InventoryHandler {
    const EVENT_TYPES: &'static [&'static str] =
        shared_events::contracts::topology::INVENTORY_SERVICE.receives;

    async fn handle(
        &self,
        events: &[&Event],
        tx: &mut PgConnection,
    ) -> Result<Vec<Event>, HandlerError> {
        let mut orders = OrderReservations::lock_all(tx, events).await?;
        let products = domain::products_touched(orders.values(), events.iter().map(|e| &e.payload));
        let levels_before = lock_levels(tx, products).await?;
        let mut levels = levels_before.clone();
        let answers = orders.decide_each(events, crate::DEFAULTS.name, |current, event| {
            let decision = domain::decide(current, &event.payload, &levels, Uuid::now_v7());
            levels.extend(decision.stock_updates);
            *current = decision.next;
            Ok(decision.emit)
        })?;
        OrderReservations::save(tx, &orders).await?;
        save_levels(tx, &levels_before, &levels).await?;
        Ok(answers)
    }
}

/// Locks the products' rows in product-id order and returns their stock levels.
async fn lock_levels(
    tx: &mut PgConnection,
    products: BTreeSet<String>,
) -> Result<BTreeMap<String, StockLevel>, sqlx::Error> {
    if products.is_empty() {
        return Ok(BTreeMap::new());
    }
    let products: Vec<String> = products.into_iter().collect();
    let rows = sqlx::query!(
        "SELECT product_id, available, reserved FROM products
         WHERE product_id = ANY($1) ORDER BY product_id FOR UPDATE",
        &products,
    )
    .fetch_all(tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            (
                row.product_id,
                StockLevel {
                    available: row.available,
                    reserved: row.reserved,
                },
            )
        })
        .collect())
}

/// Writes the stock levels that changed (the rows are locked), in one statement.
async fn save_levels(
    tx: &mut PgConnection,
    before: &BTreeMap<String, StockLevel>,
    after: &BTreeMap<String, StockLevel>,
) -> Result<(), sqlx::Error> {
    let mut products = Vec::new();
    let mut available = Vec::new();
    let mut reserved = Vec::new();
    for (product_id, level) in after {
        if before.get(product_id) != Some(level) {
            products.push(product_id.as_str());
            available.push(level.available);
            reserved.push(level.reserved);
        }
    }
    if products.is_empty() {
        return Ok(());
    }
    sqlx::query!(
        "UPDATE products AS p SET available = v.available, reserved = v.reserved, updated_at = now()
         FROM UNNEST($1::text[], $2::int[], $3::int[]) AS v(product_id, available, reserved)
         WHERE p.product_id = v.product_id",
        &products as _,
        &available,
        &reserved,
    )
    .execute(tx)
    .await?;
    Ok(())
}
