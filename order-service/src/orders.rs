//! The order commands: place an order, record a fact another service reported, request a
//! cancellation, enforce the saga deadline. Each works on a locked [`LoadedOrder`]: the
//! domain decides, the decided events are appended to the order's history, and the events
//! order-service publishes are returned, for the caller to append to the outbox in the same
//! transaction.

use chrono::{DateTime, Utc};
use shared_events::{Event, EventMetadata};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{CancelRefused, Order, OrderEvent, OrderStatus, Placed};
use crate::error::Error;
use crate::store::{self, LoadedOrder};

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
    let metadata = published.metadata.clone();
    let order = Order::from_history(order_id, [&event]).expect("starts with OrderPlaced");
    let loaded = LoadedOrder {
        order,
        stored: 0,
        placed: metadata.clone(),
        updated_at: metadata.occurred_at,
        appended: vec![(metadata, event)],
    };
    store::record(tx, [&loaded]).await?;
    Ok(published)
}

/// Records a fact another service reported and whatever it makes due (in memory; the
/// caller writes the order); returns the events to publish.
pub fn record_fact(
    order: &mut LoadedOrder,
    reported: &EventMetadata,
    fact: OrderEvent,
) -> Vec<Event> {
    let decided = order.order.react(fact);
    append(order, reported, decided, true)
}

/// Asks every service to stop and compensate, unless the order already shipped or
/// `may_cancel` refuses its customer; returns the events to publish with the answer.
pub async fn request_cancellation(
    tx: &mut PgConnection,
    order_id: Uuid,
    reason: &str,
    may_cancel: impl FnOnce(&str) -> bool,
) -> Result<(Cancellation, Vec<Event>), Error> {
    let loaded = store::lock(tx, order_id).await?;
    // An order the caller may not cancel is as unknown to them as a missing one.
    let Some(mut loaded) = loaded.filter(|l| may_cancel(&l.order.placed.customer_id)) else {
        return Ok((Cancellation::UnknownOrder, Vec::new()));
    };
    match loaded.order.request_cancellation(reason) {
        Err(refused) => Ok((Cancellation::Refused(refused), Vec::new())),
        Ok(None) => Ok((Cancellation::Requested(loaded.order.status()), Vec::new())),
        Ok(Some(event)) => {
            let cause = loaded.placed.clone();
            let published = append(&mut loaded, &cause, vec![event], false);
            store::record(tx, [&loaded]).await?;
            Ok((Cancellation::Requested(loaded.order.status()), published))
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
    let Some(mut loaded) = store::lock(tx, order_id).await? else {
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
    let published = append(&mut loaded, &cause, vec![event], false);
    store::record(tx, [&loaded]).await?;
    Ok(Some(published))
}

/// Appends `events` to the order. If `first_is_fact`, the first was reported by another
/// service and keeps its metadata; the rest are order-service's own, caused by `cause`, and
/// returned for publishing if they have a contract.
fn append(
    order: &mut LoadedOrder,
    cause: &EventMetadata,
    events: Vec<OrderEvent>,
    first_is_fact: bool,
) -> Vec<Event> {
    let mut published = Vec::new();
    for (i, event) in events.into_iter().enumerate() {
        let metadata = if first_is_fact && i == 0 {
            cause.clone()
        } else if let Some(payload) = event.to_contract(&order.order.placed) {
            let event = Event::caused_by(cause, PRODUCER, payload);
            let metadata = event.metadata.clone();
            published.push(event);
            metadata
        } else {
            EventMetadata::caused_by(cause, event.event_type(), PRODUCER)
        };
        order.append(metadata, event);
    }
    published
}
