//! The order commands: place an order, record a fact another service reported, request a
//! cancellation, enforce the saga deadline, nudge or cancel as an operator. Each works on a
//! locked [`LoadedOrder`]: the domain decides, the decided events are appended to the
//! order's history, and the events order-service publishes are returned, for the caller to
//! append to the outbox in the same transaction.

use chrono::{DateTime, Utc};
use shared_events::Outbox;
use shared_events::contracts::{DeadLetterPosition, Event, EventMetadata};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{CancelRefused, OperatorRefused, Order, OrderEvent, OrderStatus, Placed};
use crate::error::Error;
use crate::store::{self, LoadedOrder, RecordedEvent};

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

/// What an operator's action did: the order's status after it, and the event it sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operated {
    pub status: OrderStatus,
    pub event_id: Uuid,
    pub event_type: String,
}

impl Operated {
    fn sent(loaded: &LoadedOrder, event: &Event) -> Self {
        Self {
            status: loaded.order.status(),
            event_id: event.metadata.event_id,
            event_type: event.metadata.event_type.clone(),
        }
    }
}

/// Why an operator's action did nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperatorRefusal {
    UnknownOrder,
    /// The order's state makes the action meaningless.
    Meaningless(OperatorRefused),
    /// The event to republish has not left the outbox yet: the relay will deliver it.
    StillQueued {
        event_type: String,
    },
    /// Every dead letter the redrive names was redriven before (by a request that came
    /// meanwhile): sent again, they would only fail again.
    AlreadyRedriven,
    /// order-service cannot read the order's history back: it must be repaired first.
    Unreadable {
        reason: String,
    },
}

/// What a customer reads of an operator's cancellation.
const CANCELLED_BY_THE_SHOP: &str = "cancelled by the shop";

/// The order locked for an operator's action, or why there is none to act on.
async fn lock_for_operator(
    tx: &mut PgConnection,
    order_id: Uuid,
) -> Result<Result<LoadedOrder, OperatorRefusal>, Error> {
    match store::lock(tx, order_id).await {
        Ok(Some(loaded)) => Ok(Ok(loaded)),
        Ok(None) => Ok(Err(OperatorRefusal::UnknownOrder)),
        Err(Error::CorruptHistory { reason, .. }) => {
            Ok(Err(OperatorRefusal::Unreadable { reason }))
        }
        Err(other) => Err(other),
    }
}

/// Whether an operator may act on the order at all: it exists and reads back. (A redrive
/// asks before it reads the dead letters, to hold no lock meanwhile.)
pub async fn operable(
    tx: &mut PgConnection,
    order_id: Uuid,
) -> Result<Result<(), OperatorRefusal>, Error> {
    Ok(lock_for_operator(tx, order_id).await?.map(drop))
}

/// What an operator's action hands back: what it did, and the events to publish with it.
pub type Operation = Result<(Operated, Vec<Event>), OperatorRefusal>;

/// An operator's cancellation of a stuck order: recorded with who and why, then the same
/// `OrderCancellationRequested` a deadline sends, which every service compensates.
pub async fn cancel_by_operator(
    tx: &mut PgConnection,
    order_id: Uuid,
    operator: &str,
    reason: &str,
    customer_reason: Option<&str>,
) -> Result<Operation, Error> {
    let mut loaded = match lock_for_operator(tx, order_id).await? {
        Ok(loaded) => loaded,
        Err(refusal) => return Ok(Err(refusal)),
    };
    if let Err(refused) = loaded.order.operator_may_cancel() {
        return Ok(Err(OperatorRefusal::Meaningless(refused)));
    }
    let noted = OrderEvent::CancelledByOperator {
        operator: operator.to_owned(),
        reason: reason.to_owned(),
        customer_reason: customer_reason.map(str::to_owned),
    };
    // What travels on and becomes the order's outcome is what the customer may read: never
    // the operator's name or internal note.
    let request = OrderEvent::OrderCancellationRequested {
        reason: match customer_reason {
            Some(told) => format!("{CANCELLED_BY_THE_SHOP}: {told}"),
            None => CANCELLED_BY_THE_SHOP.to_owned(),
        },
    };
    let published = record_operation(tx, &mut loaded, vec![noted, request]).await?;
    Ok(Ok((Operated::sent(&loaded, &published[0]), published)))
}

/// An operator's nudge: queues the latest event order-service published for the order
/// again, under its own event id, so that a delivery lost or skipped happens again without
/// side effects (every consumer dedupes it by that id); recorded with who and why. The
/// event goes to the outbox here: nothing more to publish.
pub async fn nudge(
    tx: &mut PgConnection,
    outbox: &Outbox,
    order_id: Uuid,
    operator: &str,
    reason: &str,
) -> Result<Operation, Error> {
    let mut loaded = match lock_for_operator(tx, order_id).await? {
        Ok(loaded) => loaded,
        Err(refusal) => return Ok(Err(refusal)),
    };
    if let Err(refused) = loaded.order.operator_may_nudge() {
        return Ok(Err(OperatorRefusal::Meaningless(refused)));
    }
    let history = store::history(&mut *tx, order_id).await?;
    let latest = history
        .iter()
        .rev()
        .find_map(|recorded| as_published(&loaded.order, recorded))
        .ok_or_else(|| Error::CorruptHistory {
            order_id,
            reason: "no event order-service published, not even OrderPlaced".to_owned(),
        })?;
    if !outbox.republish(tx, &latest).await? {
        let event_type = latest.event_type().to_owned();
        return Ok(Err(OperatorRefusal::StillQueued { event_type }));
    }
    let noted = OrderEvent::NudgedByOperator {
        operator: operator.to_owned(),
        reason: reason.to_owned(),
        event_id: latest.metadata.event_id,
        event_type: latest.event_type().to_owned(),
    };
    record_operation(tx, &mut loaded, vec![noted]).await?;
    Ok(Ok((Operated::sent(&loaded, &latest), Vec::new())))
}

/// An operator's redrive of dead letters of the order: recorded with who and why, and
/// published for the services that own their topics to carry out.
pub async fn request_redrive(
    tx: &mut PgConnection,
    order_id: Uuid,
    operator: &str,
    reason: &str,
    dead_letters: Vec<DeadLetterPosition>,
) -> Result<Operation, Error> {
    let mut loaded = match lock_for_operator(tx, order_id).await? {
        Ok(loaded) => loaded,
        Err(refusal) => return Ok(Err(refusal)),
    };
    // Under the order's lock: of two redrives asked at once, the second finds the first's.
    let before = redriven(&mut *tx, order_id).await?;
    if dead_letters.iter().any(|letter| before.contains(letter)) {
        return Ok(Err(OperatorRefusal::AlreadyRedriven));
    }
    let requested = OrderEvent::DeadLetterRedriveRequested {
        operator: operator.to_owned(),
        reason: reason.to_owned(),
        dead_letters,
    };
    let published = record_operation(tx, &mut loaded, vec![requested]).await?;
    Ok(Ok((Operated::sent(&loaded, &published[0]), published)))
}

/// The dead letters of the order that operators asked to redrive before: a dead letter is
/// redriven once (when its record fails again, that is a new dead letter).
pub async fn redriven(
    tx: &mut PgConnection,
    order_id: Uuid,
) -> Result<Vec<DeadLetterPosition>, Error> {
    Ok(store::history(tx, order_id)
        .await?
        .into_iter()
        .filter_map(|recorded| match recorded.event {
            OrderEvent::DeadLetterRedriveRequested { dead_letters, .. } => Some(dead_letters),
            _ => None,
        })
        .flatten()
        .collect())
}

/// Appends an operator's `events` to the order (caused by its placement, as no saga event
/// is) and saves it; returns those to publish.
async fn record_operation(
    tx: &mut PgConnection,
    loaded: &mut LoadedOrder,
    events: Vec<OrderEvent>,
) -> Result<Vec<Event>, Error> {
    let cause = loaded.placed.clone();
    let published = append(loaded, &cause, events, false);
    store::record(tx, [&*loaded]).await?;
    Ok(published)
}

/// The event as order-service published it, rebuilt from the history (metadata and
/// payload alike), if it published this one.
fn as_published(order: &Order, recorded: &RecordedEvent) -> Option<Event> {
    // An operator's request is no step of the saga a consumer could have missed.
    if recorded.producer != PRODUCER || !recorded.event.is_saga_event() {
        return None;
    }
    let payload = recorded.event.to_contract(&order.placed)?;
    let metadata = EventMetadata {
        event_id: recorded.event_id,
        event_type: recorded.event_type.clone(),
        occurred_at: recorded.occurred_at,
        order_id: Some(order.id),
        correlation_id: order.id,
        causation_id: recorded.causation_id,
        producer: recorded.producer.clone(),
        saga_deadline: Some(order.placed.saga_deadline),
    };
    Some(Event { metadata, payload })
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
