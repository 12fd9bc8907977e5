//! Shipping's consumer: applies [`crate::domain::decide`] to each event of an order under the
//! order's row lock. Deciding once, here, is what makes `ShipmentScheduled` and a
//! cancellation mutually exclusive.

use chrono::Utc;
use shared_events::{Event, EventHandler, EventPayload, HandlerError, Outbox, SagaStateTable};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{self, Carriers, OrderShipment};

pub const ORDER_SHIPMENTS: SagaStateTable = SagaStateTable::new("order_shipments");

pub struct ShippingHandler {
    pub outbox: Outbox,
    pub carriers: Carriers,
}

impl EventHandler for ShippingHandler {
    async fn handle(&self, event: &Event, tx: &mut PgConnection) -> Result<(), HandlerError> {
        let relevant = matches!(
            event.payload,
            EventPayload::OrderPlaced(_)
                | EventPayload::StockReserved(_)
                | EventPayload::OrderCancellationRequested(_)
        );
        let (true, Some(order_id)) = (relevant, event.metadata.order_id) else {
            return Ok(());
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
        if let Some(payload) = decision.emit {
            let effect = Event::caused_by(&event.metadata, crate::DEFAULTS.name, payload);
            self.outbox.append(tx, &effect).await?;
        }
        Ok(())
    }
}
