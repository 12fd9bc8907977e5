//! order-service's consumer: facts from billing, inventory and shipping go into the order's
//! history (which may complete or cancel it); catalog changes go into the local catalog.

use shared_events::{Event, EventHandler, EventPayload, HandlerError};
use sqlx::PgConnection;

use crate::domain::OrderEvent;
use crate::orders::Orders;
use crate::store;

pub struct OrderHandler {
    pub orders: Orders,
}

impl EventHandler for OrderHandler {
    async fn handle(&self, event: &Event, tx: &mut PgConnection) -> Result<(), HandlerError> {
        if let EventPayload::ProductUpserted(product) = &event.payload {
            store::upsert_catalog(tx, product, event.metadata.occurred_at).await?;
            return Ok(());
        }
        let (Some(fact), Some(order_id)) = (
            OrderEvent::from_contract(&event.payload),
            event.metadata.order_id,
        ) else {
            return Ok(());
        };
        let known = self
            .orders
            .record_fact(tx, order_id, &event.metadata, fact)
            .await?;
        if known {
            Ok(())
        } else {
            Err(HandlerError::Rejected(format!(
                "{} for order {order_id}, which order-service never took",
                event.event_type()
            )))
        }
    }
}
