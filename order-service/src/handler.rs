//! order-service's consumer: facts from billing, inventory and shipping go into the orders'
//! histories (which may complete or cancel them); catalog changes go into the local catalog.
//! Set-based: one statement locks every order of the batch, one writes them all back.

use shared_events::contracts::{Event, EventPayload};
use shared_events::{EventHandler, HandlerError};
use sqlx::PgConnection;

use crate::domain::OrderEvent;
use crate::metrics::OrderMetrics;
use crate::{orders, store};

pub struct OrderHandler {
    pub metrics: OrderMetrics,
}

impl EventHandler for OrderHandler {
    const EVENT_TYPES: &'static [&'static str] =
        shared_events::contracts::topology::ORDER_SERVICE.receives;

    async fn handle(
        &self,
        events: &[&Event],
        tx: &mut PgConnection,
    ) -> Result<Vec<Event>, HandlerError> {
        let products: Vec<_> = events
            .iter()
            .filter_map(|e| match &e.payload {
                EventPayload::ProductUpserted(product) => Some((product, e.metadata.occurred_at)),
                _ => None,
            })
            .collect();
        store::upsert_catalog(tx, &products).await?;
        let facts: Vec<_> = events
            .iter()
            .filter_map(|e| {
                Some((
                    e,
                    e.metadata.order_id?,
                    OrderEvent::from_contract(&e.payload)?,
                ))
            })
            .collect();
        let mut orders =
            store::lock_all(tx, facts.iter().map(|(_, order_id, _)| *order_id)).await?;
        let mut published = Vec::new();
        for (event, order_id, fact) in facts {
            let order = orders.get_mut(&order_id).ok_or_else(|| {
                HandlerError::Rejected(format!(
                    "{} for order {order_id}, which order-service never took",
                    event.event_type()
                ))
            })?;
            published.extend(orders::record_fact(order, &event.metadata, fact));
        }
        store::record(tx, orders.values().filter(|o| !o.appended.is_empty())).await?;
        Ok(published)
    }

    fn committed(&self, published: &[Event]) {
        self.metrics.observe_published(published);
    }
}
