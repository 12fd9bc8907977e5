//! Shipping's consumer: applies [`crate::domain::decide`] to a batch of events under the
//! orders' row locks, set-based. Deciding once per order, here, is what makes
//! `ShipmentScheduled` and a cancellation mutually exclusive.

use chrono::Utc;
use shared_events::contracts::Event;
use shared_events::{EventHandler, HandlerError};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{self, Carriers, OrderShipment};

shared_events::saga_state_table! {
    /// Shipping's saga state per order ([`OrderShipment`] as JSON).
    pub struct OrderShipments("order_shipments") holds OrderShipment;
}

pub struct ShippingHandler {
    pub carriers: Carriers,
}

impl EventHandler for ShippingHandler {
    const EVENT_TYPES: &'static [&'static str] =
        shared_events::contracts::topology::SHIPPING_SERVICE.receives;

    async fn handle(
        &self,
        events: &[&Event],
        tx: &mut PgConnection,
    ) -> Result<Vec<Event>, HandlerError> {
        let mut shipments = OrderShipments::lock_all(tx, events).await?;
        let answers = shipments.decide_each(events, crate::DEFAULTS.name, |current, event| {
            let decision = domain::decide(
                current,
                &event.metadata,
                &event.payload,
                &self.carriers,
                Utc::now(),
                Uuid::now_v7(),
            );
            *current = decision.next;
            Ok(decision.emit)
        })?;
        OrderShipments::save(tx, &shipments).await?;
        Ok(answers)
    }
}
