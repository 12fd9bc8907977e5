//! Inventory's consumer: applies [`crate::domain::decide`] to each event of an order. The
//! order's row is locked first, then the products it touches in product-id order, so
//! concurrent reservations of the same products queue instead of deadlocking or overselling.

use std::collections::BTreeMap;

use shared_events::{Event, EventHandler, HandlerError, SagaStateTable};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{self, OrderStock, StockLevel};

pub const ORDER_RESERVATIONS: SagaStateTable = SagaStateTable::new("order_reservations");

pub struct InventoryHandler;

impl EventHandler for InventoryHandler {
    const EVENT_TYPES: &'static [&'static str] =
        &["OrderPlaced", "PaymentAuthorized", "ShipmentFailed"];

    async fn handle(
        &self,
        event: &Event,
        tx: &mut PgConnection,
    ) -> Result<Vec<Event>, HandlerError> {
        let Some(order_id) = event.metadata.order_id else {
            return Ok(Vec::new());
        };
        let current: OrderStock = ORDER_RESERVATIONS.lock(tx, order_id).await?;
        let levels = lock_levels(tx, current.products_needed(&event.payload)).await?;
        let decision = domain::decide(&current, &event.payload, &levels, Uuid::now_v7());
        for (product_id, level) in &decision.stock_updates {
            sqlx::query(
                "UPDATE products SET available = $2, reserved = $3, updated_at = now()
                 WHERE product_id = $1",
            )
            .bind(product_id)
            .bind(level.available)
            .bind(level.reserved)
            .execute(&mut *tx)
            .await?;
        }
        if decision.next != current {
            ORDER_RESERVATIONS
                .save(tx, order_id, &decision.next)
                .await?;
        }
        Ok(decision
            .emit
            .map(|payload| Event::caused_by(&event.metadata, crate::DEFAULTS.name, payload))
            .into_iter()
            .collect())
    }
}

/// Locks the products' rows in a fixed order and returns their stock levels.
async fn lock_levels(
    tx: &mut PgConnection,
    products: Vec<String>,
) -> Result<BTreeMap<String, StockLevel>, sqlx::Error> {
    if products.is_empty() {
        return Ok(BTreeMap::new());
    }
    let rows: Vec<(String, i32, i32)> = sqlx::query_as(
        "SELECT product_id, available, reserved FROM products
         WHERE product_id = ANY($1) ORDER BY product_id FOR UPDATE",
    )
    .bind(&products)
    .fetch_all(tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, available, reserved)| {
            (
                id,
                StockLevel {
                    available,
                    reserved,
                },
            )
        })
        .collect())
}
