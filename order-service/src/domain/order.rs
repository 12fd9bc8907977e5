//! The order aggregate: folded from its history, it says where the saga stands and what
//! order-service records next. Pure: no I/O, the clock is an argument.
//!
//! order-service decides nothing about money, stock or shipping; it listens. It completes the
//! order when shipping reports `ShipmentScheduled` (the point of no return, decided by
//! shipping alone) and cancels it once the saga failed and every service that acted has
//! reported its compensation.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::events::{OrderEvent, Placed};

mod awaiting;

pub use awaiting::AwaitedStep;

/// Where an order stands, as clients see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    /// Placed; billing has not charged it yet.
    Pending,
    PaymentAuthorized,
    StockReserved,
    /// The saga failed or was cancelled; compensations are under way.
    Cancelling,
    Completed,
    Cancelled,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 6] = [
        OrderStatus::Pending,
        OrderStatus::PaymentAuthorized,
        OrderStatus::StockReserved,
        OrderStatus::Cancelling,
        OrderStatus::Completed,
        OrderStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "PENDING",
            OrderStatus::PaymentAuthorized => "PAYMENT_AUTHORIZED",
            OrderStatus::StockReserved => "STOCK_RESERVED",
            OrderStatus::Cancelling => "CANCELLING",
            OrderStatus::Completed => "COMPLETED",
            OrderStatus::Cancelled => "CANCELLED",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, OrderStatus::Completed | OrderStatus::Cancelled)
    }
}

/// Why a cancellation request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelRefused {
    /// ShipmentScheduled came first: the order is (being) completed.
    AlreadyShipped,
    AlreadyCancelled,
}

/// Why an operator's action on the order would mean nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperatorRefused {
    /// Completed or cancelled: nothing waits.
    Over,
    /// The shipment was scheduled: too late to cancel.
    Shipped,
    /// The saga already failed or was cancelled; compensations are under way.
    AlreadyCancelling,
}

/// What the saga's facts say so far; each fact is reported once per order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Facts {
    charged: bool,
    declined: Option<String>,
    refunded: bool,
    reserved: bool,
    stock_rejected: Option<String>,
    released: bool,
    shipped: bool,
    shipment_failed: Option<String>,
}

impl Facts {
    /// Billing has nothing left to give back once it declined or refunded.
    fn billing_settled(&self) -> bool {
        self.declined.is_some() || self.refunded
    }

    /// Inventory holds nothing once it rejected or released, or when payment was declined
    /// (it reserves only paid orders).
    fn inventory_settled(&self) -> bool {
        self.declined.is_some() || self.stock_rejected.is_some() || self.released
    }
}

/// An order, as its history says it is. Serializable so that its state after the last event
/// can be kept as a snapshot beside the projection (a cache: the history stays the truth).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub id: Uuid,
    pub placed: Placed,
    facts: Facts,
    cancellation_requested: Option<String>,
    completed: bool,
    cancelled: Option<String>,
    /// Event types already recorded: a fact reported twice is recorded once.
    recorded: Vec<String>,
}

impl Order {
    /// Folds an order's history; `None` unless it starts with `OrderPlaced`.
    pub fn from_history<'a>(
        id: Uuid,
        history: impl IntoIterator<Item = &'a OrderEvent>,
    ) -> Option<Self> {
        let mut history = history.into_iter();
        let Some(OrderEvent::OrderPlaced(placed)) = history.next() else {
            return None;
        };
        let mut order = Order {
            id,
            placed: placed.clone(),
            facts: Facts::default(),
            cancellation_requested: None,
            completed: false,
            cancelled: None,
            recorded: vec!["OrderPlaced".to_owned()],
        };
        for event in history {
            order.apply(event);
        }
        Some(order)
    }

    /// Applies one recorded event to the state.
    pub fn apply(&mut self, event: &OrderEvent) {
        self.recorded.push(event.event_type().to_owned());
        let facts = &mut self.facts;
        match event {
            OrderEvent::OrderPlaced(_)
            | OrderEvent::CancellationRejected { .. }
            | OrderEvent::NudgedByOperator { .. }
            | OrderEvent::CancelledByOperator { .. }
            | OrderEvent::DeadLetterRedriveRequested { .. } => {}
            OrderEvent::PaymentAuthorized { .. } => facts.charged = true,
            OrderEvent::PaymentDeclined { reason } => facts.declined = Some(reason.clone()),
            OrderEvent::PaymentRefunded { .. } => facts.refunded = true,
            OrderEvent::StockReserved { .. } => facts.reserved = true,
            OrderEvent::StockRejected { product_id, reason } => {
                facts.stock_rejected = Some(format!("{product_id}: {reason}"));
            }
            OrderEvent::StockReleased { .. } => facts.released = true,
            OrderEvent::ShipmentScheduled { .. } => facts.shipped = true,
            OrderEvent::ShipmentFailed { reason } => facts.shipment_failed = Some(reason.clone()),
            OrderEvent::OrderCancellationRequested { reason } => {
                self.cancellation_requested = Some(reason.clone());
            }
            OrderEvent::OrderCompleted => self.completed = true,
            OrderEvent::OrderCancelled { reason } => self.cancelled = Some(reason.clone()),
        }
    }

    pub fn status(&self) -> OrderStatus {
        let facts = &self.facts;
        if self.completed {
            OrderStatus::Completed
        } else if self.cancelled.is_some() {
            OrderStatus::Cancelled
        } else if self.failure().is_some() {
            OrderStatus::Cancelling
        } else if facts.reserved {
            OrderStatus::StockReserved
        } else if facts.charged {
            OrderStatus::PaymentAuthorized
        } else {
            OrderStatus::Pending
        }
    }

    /// Why the order ended or is ending unsuccessfully, if it is.
    pub fn outcome_reason(&self) -> Option<String> {
        self.cancelled.clone().or_else(|| {
            self.completed
                .then(|| self.cancellation_requested.clone())
                .flatten()
                .map(|reason| format!("cancellation rejected, already shipped ({reason})"))
        })
    }

    /// Why the saga failed: a cancellation, else the first service that said no.
    fn failure(&self) -> Option<String> {
        let facts = &self.facts;
        if facts.shipped {
            return None;
        }
        if let Some(reason) = &self.cancellation_requested {
            return Some(format!("cancelled: {reason}"));
        }
        facts
            .declined
            .as_ref()
            .map(|r| format!("payment declined: {r}"))
            .or_else(|| {
                facts
                    .stock_rejected
                    .as_ref()
                    .map(|r| format!("out of stock: {r}"))
            })
            .or_else(|| {
                facts
                    .shipment_failed
                    .as_ref()
                    .map(|r| format!("shipment failed: {r}"))
            })
    }

    /// What order-service records after `fact` arrives: the fact itself (unless it was
    /// already recorded) and the consequences it makes due (none once the order is over).
    pub fn react(&self, fact: OrderEvent) -> Vec<OrderEvent> {
        if self.recorded.iter().any(|t| t == fact.event_type()) {
            return Vec::new();
        }
        if self.status().is_terminal() {
            // A fact that trails the outcome (e.g. StockReserved heard after the shipment
            // completed the order) still belongs in the timeline; it changes nothing.
            return vec![fact];
        }
        let mut after = self.clone();
        after.apply(&fact);
        let mut recorded = vec![fact];
        let facts = &after.facts;
        if facts.shipped {
            if let Some(reason) = &after.cancellation_requested {
                recorded.push(OrderEvent::CancellationRejected {
                    reason: format!("the shipment was already scheduled ({reason})"),
                });
            }
            recorded.push(OrderEvent::OrderCompleted);
        } else if let Some(reason) = after.failure()
            && facts.billing_settled()
            && facts.inventory_settled()
        {
            recorded.push(OrderEvent::OrderCancelled { reason });
        }
        recorded
    }

    /// The event a cancellation request records: `Ok(None)` if one is already under way.
    pub fn request_cancellation(&self, reason: &str) -> Result<Option<OrderEvent>, CancelRefused> {
        match self.status() {
            OrderStatus::Completed => return Err(CancelRefused::AlreadyShipped),
            OrderStatus::Cancelled => return Err(CancelRefused::AlreadyCancelled),
            _ if self.facts.shipped => return Err(CancelRefused::AlreadyShipped),
            _ => {}
        }
        if self.cancellation_requested.is_some() {
            return Ok(None);
        }
        Ok(Some(OrderEvent::OrderCancellationRequested {
            reason: reason.to_owned(),
        }))
    }

    /// Whether an operator's cancellation means anything: not once the order shipped or
    /// ended, nor while compensations are already under way (a stuck compensation needs a
    /// nudge or a redrive, not another cancellation).
    pub fn operator_may_cancel(&self) -> Result<(), OperatorRefused> {
        match self.request_cancellation("") {
            Err(CancelRefused::AlreadyShipped) => Err(OperatorRefused::Shipped),
            Err(CancelRefused::AlreadyCancelled) => Err(OperatorRefused::Over),
            Ok(_) if self.status() == OrderStatus::Cancelling => {
                Err(OperatorRefused::AlreadyCancelling)
            }
            Ok(_) => Ok(()),
        }
    }

    /// Whether a nudge means anything: only while the saga waits for someone.
    pub fn operator_may_nudge(&self) -> Result<(), OperatorRefused> {
        if self.status().is_terminal() {
            Err(OperatorRefused::Over)
        } else {
            Ok(())
        }
    }

    /// Whether the saga deadline has passed with the order still in flight and nobody yet
    /// undoing it.
    pub fn deadline_due(&self, now: DateTime<Utc>) -> bool {
        !self.status().is_terminal() && self.failure().is_none() && now >= self.placed.saga_deadline
    }
}

#[cfg(test)]
mod tests;
