//! Shipping's consumer: applies [`crate::domain::decide`] to each event of an order under the
//! order's row lock. Deciding once, here, is what makes `ShipmentScheduled` and a
//! cancellation mutually exclusive.

use chrono::Utc;
use shared_events::{Event, EventHandler, HandlerError, SagaStateTable};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{self, Carriers, OrderShipment};

pub const ORDER_SHIPMENTS: SagaStateTable = SagaStateTable::new("order_shipments");

pub struct ShippingHandler {
    pub carriers: Carriers,
}

impl EventHandler for ShippingHandler {
    const EVENT_TYPES: &'static [&'static str] =
        &["OrderPlaced", "StockReserved", "OrderCancellationRequested"];

    async fn handle(
        &self,
        event: &Event,
        tx: &mut PgConnection,
    ) -> Result<Vec<Event>, HandlerError> {
        let Some(order_id) = event.metadata.order_id else {
            return Ok(Vec::new());
        };
        let current: OrderShipment = ORDER_SHIPMENTS.lock(tx, order_id).await?;
        let decision = domain::decide(
            &current,
            &event.metadata,
            &event.payload,
            &self.carriers,
            Utc::now(),
            Uuid::now_v7(),
        );
        if decision.next != current {
            ORDER_SHIPMENTS.save(tx, order_id, &decision.next).await?;
        }
        Ok(decision
            .emit
            .map(|payload| Event::caused_by(&event.metadata, crate::DEFAULTS.name, payload))
            .into_iter()
            .collect())
    }
}
