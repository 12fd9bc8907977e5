//! Shipping's consumer: applies [`crate::domain::decide`] to a batch of events under the
//! orders' row locks, set-based. Deciding once per order, here, is what makes
//! `ShipmentScheduled` and a cancellation mutually exclusive.

use std::collections::BTreeMap;

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
    const EVENT_TYPES: &'static [&'static str] = shared_events::topology::SHIPPING_SERVICE.receives;

    async fn handle(
        &self,
        events: &[&Event],
        tx: &mut PgConnection,
    ) -> Result<Vec<Event>, HandlerError> {
        let order_ids = events.iter().filter_map(|e| e.metadata.order_id);
        let before: BTreeMap<Uuid, OrderShipment> = ORDER_SHIPMENTS.lock_all(tx, order_ids).await?;
        let mut shipments = before.clone();
        let mut published = Vec::new();
        for event in events {
            let Some(order_id) = event.metadata.order_id else {
                continue;
            };
            let current = shipments.entry(order_id).or_default();
            let decision = domain::decide(
                current,
                &event.metadata,
                &event.payload,
                &self.carriers,
                Utc::now(),
                Uuid::now_v7(),
            );
            *current = decision.next;
            if let Some(payload) = decision.emit {
                published.push(Event::caused_by(
                    &event.metadata,
                    crate::DEFAULTS.name,
                    payload,
                ));
            }
        }
        ORDER_SHIPMENTS
            .save_changed(tx, &before, &shipments)
            .await?;
        Ok(published)
    }
}
