//! order-service's consumer: facts from billing, inventory and shipping go into the order's
//! history (which may complete or cancel it); catalog changes go into the local catalog.

use shared_events::{Event, EventHandler, EventPayload, HandlerError};
use sqlx::PgConnection;

use crate::domain::OrderEvent;
use crate::metrics::OrderMetrics;
use crate::orders;
use crate::store;

pub struct OrderHandler {
    pub metrics: OrderMetrics,
}

impl EventHandler for OrderHandler {
    const EVENT_TYPES: &'static [&'static str] = &[
        "PaymentAuthorized",
        "PaymentDeclined",
        "PaymentRefunded",
        "StockReserved",
        "StockRejected",
        "StockReleased",
        "ShipmentScheduled",
        "ShipmentFailed",
        "ProductUpserted",
    ];

    async fn handle(
        &self,
        event: &Event,
        tx: &mut PgConnection,
    ) -> Result<Vec<Event>, HandlerError> {
        if let EventPayload::ProductUpserted(product) = &event.payload {
            store::upsert_catalog(tx, product, event.metadata.occurred_at).await?;
            return Ok(Vec::new());
        }
        let (Some(fact), Some(order_id)) = (
            OrderEvent::from_contract(&event.payload),
            event.metadata.order_id,
        ) else {
            return Ok(Vec::new());
        };
        orders::record_fact(tx, order_id, &event.metadata, fact)
            .await?
            .ok_or_else(|| {
                HandlerError::Rejected(format!(
                    "{} for order {order_id}, which order-service never took",
                    event.event_type()
                ))
            })
    }

    fn committed(&self, published: &[Event]) {
        self.metrics.observe_published(published);
    }
}
