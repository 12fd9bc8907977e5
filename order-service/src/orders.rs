//! The order commands: place an order, record a fact another service reported, request a
//! cancellation, enforce the saga deadline. Each runs in the caller's transaction: lock the
//! order, let the domain decide, append the decided events to `order_events` and update the
//! projection; it returns the events order-service publishes, which the caller appends to
//! the outbox in the same transaction.

use chrono::{DateTime, Utc};
use shared_events::{Event, EventMetadata};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{CancelRefused, Order, OrderEvent, OrderStatus, Placed};
use crate::error::Error;
use crate::store::{self, LoadedOrder, NewEvents};

/// What a cancellation request came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cancellation {
    Requested(OrderStatus),
    Refused(CancelRefused),
    UnknownOrder,
}

const PRODUCER: &str = crate::DEFAULTS.name;

/// Records a new order; returns its `OrderPlaced` to publish.
pub async fn place(tx: &mut PgConnection, order_id: Uuid, placed: Placed) -> Result<Event, Error> {
    let event = OrderEvent::OrderPlaced(placed.clone());
    let published = Event::first_of_order(
        order_id,
        PRODUCER,
        event
            .to_contract(&placed)
            .expect("OrderPlaced is published"),
    )
    .with_saga_deadline(placed.saga_deadline);
    let order = Order::from_history(order_id, [&event]).expect("starts with OrderPlaced");
    let metadata = &published.metadata;
    let new = NewEvents {
        first_sequence: 0,
        events: vec![(metadata.clone(), &event)],
    };
    store::record(tx, &order, metadata, new, metadata.occurred_at).await?;
    Ok(published)
}

/// Records a fact another service reported and whatever it makes due; returns the
/// events to publish, or `None` if the order is unknown.
pub async fn record_fact(
    tx: &mut PgConnection,
    order_id: Uuid,
    reported: &EventMetadata,
    fact: OrderEvent,
) -> Result<Option<Vec<Event>>, Error> {
    let Some(loaded) = store::lock(tx, order_id).await? else {
        return Ok(None);
    };
    let decided = loaded.order.react(fact);
    let (_, published) = commit(tx, loaded, reported, decided, true).await?;
    Ok(Some(published))
}

/// Asks every service to stop and compensate, unless the order already shipped; returns
/// the events to publish with the answer.
pub async fn request_cancellation(
    tx: &mut PgConnection,
    order_id: Uuid,
    reason: &str,
) -> Result<(Cancellation, Vec<Event>), Error> {
    let Some(loaded) = store::lock(tx, order_id).await? else {
        return Ok((Cancellation::UnknownOrder, Vec::new()));
    };
    match loaded.order.request_cancellation(reason) {
        Err(refused) => Ok((Cancellation::Refused(refused), Vec::new())),
        Ok(None) => Ok((Cancellation::Requested(loaded.order.status()), Vec::new())),
        Ok(Some(event)) => {
            let cause = loaded.placed.clone();
            let (order, published) = commit(tx, loaded, &cause, vec![event], false).await?;
            Ok((Cancellation::Requested(order.status()), published))
        }
    }
}

/// Cancels the order if its saga deadline passed at `now`; returns the events to
/// publish, or `None` if nothing was due.
pub async fn enforce_deadline(
    tx: &mut PgConnection,
    order_id: Uuid,
    now: DateTime<Utc>,
) -> Result<Option<Vec<Event>>, Error> {
    let Some(loaded) = store::lock(tx, order_id).await? else {
        return Ok(None);
    };
    if !loaded.order.deadline_due(now) {
        return Ok(None);
    }
    let reason = format!(
        "the saga deadline ({}) passed",
        loaded.order.placed.saga_deadline.format("%H:%M:%S%.3f UTC")
    );
    let cause = loaded.placed.clone();
    let event = OrderEvent::OrderCancellationRequested { reason };
    let (_, published) = commit(tx, loaded, &cause, vec![event], false).await?;
    Ok(Some(published))
}

/// Appends `events` after the history. If `first_is_fact`, the first was reported by
/// another service and keeps its metadata; the rest are order-service's own, caused by
/// `cause`, and returned for publishing if they have a contract.
async fn commit(
    tx: &mut PgConnection,
    loaded: LoadedOrder,
    cause: &EventMetadata,
    events: Vec<OrderEvent>,
    first_is_fact: bool,
) -> Result<(Order, Vec<Event>), Error> {
    let LoadedOrder {
        mut order,
        next_sequence,
        placed,
    } = loaded;
    if events.is_empty() {
        return Ok((order, Vec::new()));
    }
    let mut published = Vec::new();
    let mut recorded = Vec::with_capacity(events.len());
    for (i, event) in events.iter().enumerate() {
        let metadata = if first_is_fact && i == 0 {
            cause.clone()
        } else if let Some(payload) = event.to_contract(&order.placed) {
            let event = Event::caused_by(cause, PRODUCER, payload);
            let metadata = event.metadata.clone();
            published.push(event);
            metadata
        } else {
            EventMetadata::caused_by(cause, event.event_type(), PRODUCER)
        };
        order.apply(event);
        recorded.push((metadata, event));
    }
    let last_at = recorded
        .last()
        .map_or(placed.occurred_at, |(metadata, _)| metadata.occurred_at);
    let new = NewEvents {
        first_sequence: next_sequence,
        events: recorded,
    };
    store::record(tx, &order, &placed, new, last_at).await?;
    Ok((order, published))
}
