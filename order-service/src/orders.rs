//! The order commands: place an order, record a fact another service reported, request a
//! cancellation, enforce the saga deadline. Each runs in one transaction: lock the order,
//! fold its history, let the domain decide, append the decided events to `order_events`,
//! publish the ones order-service owns through the outbox, update the projection.

use chrono::{DateTime, Utc};
use shared_events::{Event, EventMetadata, Outbox};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{CancelRefused, Order, OrderEvent, OrderStatus, Placed};
use crate::error::Error;
use crate::metrics::OrderMetrics;
use crate::store::{self, LoadedOrder};

/// What a cancellation request came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cancellation {
    Requested(OrderStatus),
    Refused(CancelRefused),
    UnknownOrder,
}

#[derive(Clone)]
pub struct Orders {
    outbox: Outbox,
    metrics: OrderMetrics,
}

const PRODUCER: &str = crate::DEFAULTS.name;

impl Orders {
    pub fn new(outbox: Outbox, metrics: OrderMetrics) -> Self {
        Self { outbox, metrics }
    }

    /// Records and publishes a new order.
    pub async fn place(
        &self,
        tx: &mut PgConnection,
        order_id: Uuid,
        placed: Placed,
    ) -> Result<(), Error> {
        let event = OrderEvent::OrderPlaced(placed.clone());
        let published = Event::first_of_order(
            order_id,
            PRODUCER,
            event
                .to_contract(&placed)
                .expect("OrderPlaced is published"),
        )
        .with_saga_deadline(placed.saga_deadline);
        self.outbox.append(tx, &published).await?;
        store::append(tx, order_id, 0, &published.metadata, &event).await?;
        let order = Order::from_history(order_id, [&event]).expect("starts with OrderPlaced");
        let at = published.metadata.occurred_at;
        store::project(tx, &order, 1, at, at).await
    }

    /// Records a fact another service reported and whatever it makes due.
    pub async fn record_fact(
        &self,
        tx: &mut PgConnection,
        order_id: Uuid,
        reported: &EventMetadata,
        fact: OrderEvent,
    ) -> Result<bool, Error> {
        let Some(loaded) = store::lock(tx, order_id).await? else {
            return Ok(false);
        };
        let decided = loaded.order.react(fact);
        self.commit(tx, loaded, reported, decided, true).await?;
        Ok(true)
    }

    /// Asks every service to stop and compensate, unless the order already shipped.
    pub async fn request_cancellation(
        &self,
        tx: &mut PgConnection,
        order_id: Uuid,
        reason: &str,
    ) -> Result<Cancellation, Error> {
        let Some(loaded) = store::lock(tx, order_id).await? else {
            return Ok(Cancellation::UnknownOrder);
        };
        match loaded.order.request_cancellation(reason) {
            Err(refused) => Ok(Cancellation::Refused(refused)),
            Ok(None) => Ok(Cancellation::Requested(loaded.order.status())),
            Ok(Some(event)) => {
                let cause = loaded.placed.clone();
                let order = self.commit(tx, loaded, &cause, vec![event], false).await?;
                Ok(Cancellation::Requested(order.status()))
            }
        }
    }

    /// Cancels the order if its saga deadline passed at `now`; `true` if it did.
    pub async fn enforce_deadline(
        &self,
        tx: &mut PgConnection,
        order_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<bool, Error> {
        let Some(loaded) = store::lock(tx, order_id).await? else {
            return Ok(false);
        };
        if !loaded.order.deadline_due(now) {
            return Ok(false);
        }
        let reason = format!(
            "the saga deadline ({}) passed",
            loaded.order.placed.saga_deadline.format("%H:%M:%S%.3f UTC")
        );
        let cause = loaded.placed.clone();
        let event = OrderEvent::OrderCancellationRequested { reason };
        self.commit(tx, loaded, &cause, vec![event], false).await?;
        Ok(true)
    }

    /// Appends `events` after the history. If `first_is_fact`, the first was reported by
    /// another service and keeps its metadata; the rest are order-service's own, caused by
    /// `cause`, and published if they have a contract.
    async fn commit(
        &self,
        tx: &mut PgConnection,
        loaded: LoadedOrder,
        cause: &EventMetadata,
        events: Vec<OrderEvent>,
        first_is_fact: bool,
    ) -> Result<Order, Error> {
        let LoadedOrder {
            mut order,
            next_sequence,
            placed,
        } = loaded;
        if events.is_empty() {
            return Ok(order);
        }
        let mut sequence = next_sequence;
        let mut last_at = placed.occurred_at;
        for (i, event) in events.into_iter().enumerate() {
            let metadata = if first_is_fact && i == 0 {
                cause.clone()
            } else if let Some(payload) = event.to_contract(&order.placed) {
                let published = Event::caused_by(cause, PRODUCER, payload);
                self.outbox.append(tx, &published).await?;
                published.metadata
            } else {
                EventMetadata::caused_by(cause, event.event_type(), PRODUCER)
            };
            store::append(tx, order.id, sequence, &metadata, &event).await?;
            let outcome = match event {
                OrderEvent::OrderCompleted => Some("completed"),
                OrderEvent::OrderCancelled { .. } => Some("cancelled"),
                _ => None,
            };
            if let Some(outcome) = outcome {
                let saga = metadata.occurred_at - placed.occurred_at;
                self.metrics
                    .finished(outcome, saga.num_milliseconds() as f64 / 1000.0);
            }
            order.apply(&event);
            sequence += 1;
            last_at = metadata.occurred_at;
        }
        store::project(tx, &order, sequence, placed.occurred_at, last_at).await?;
        Ok(order)
    }
}
