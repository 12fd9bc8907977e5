//! The order's own history: what order-service records in `order_events`, one row per fact.
//!
//! These are domain events, not the Kafka contracts: they keep what the order needs and
//! nothing else, and two of them (`CancellationRejected`, and the terminal events' reasons)
//! exist only here. [`OrderEvent::from_contract`] and [`OrderEvent::to_contract`] translate.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared_events::contracts::{
    Address, DeadLetterPosition, DeadLetterRedriveRequested, EventPayload, Money,
    OrderCancellationRequested, OrderCancelled, OrderCompleted, OrderLine, OrderPlaced,
};
use uuid::Uuid;

/// One line of an order, priced from the catalog when the order was placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Line {
    pub product_id: String,
    pub quantity: i32,
    pub unit_price_minor: i64,
}

/// Everything fixed when the order is placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placed {
    pub customer_id: String,
    pub currency: String,
    pub lines: Vec<Line>,
    pub total_minor: i64,
    pub shipping_address: Address,
    pub note: Option<String>,
    pub saga_deadline: DateTime<Utc>,
}

/// One fact in an order's history, stored as JSON in `order_events.data`.
// OrderPlaced is big, but histories are short and events are handled one at a time.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum OrderEvent {
    OrderPlaced(Placed),
    PaymentAuthorized {
        payment_id: Uuid,
        amount_minor: i64,
    },
    PaymentDeclined {
        reason: String,
    },
    PaymentRefunded {
        amount_minor: i64,
        reason: String,
    },
    StockReserved {
        reservation_id: Uuid,
    },
    StockRejected {
        product_id: String,
        reason: String,
    },
    StockReleased {
        reservation_id: Uuid,
    },
    ShipmentScheduled {
        tracking_id: String,
        carrier: String,
    },
    ShipmentFailed {
        reason: String,
    },
    OrderCancellationRequested {
        reason: String,
    },
    /// A cancellation lost the race with the shipment: recorded, never published.
    CancellationRejected {
        reason: String,
    },
    OrderCompleted,
    OrderCancelled {
        reason: String,
    },
    /// An operator republished the order's latest published event (same event id) to heal a
    /// lost or skipped delivery. Recorded, never published.
    NudgedByOperator {
        operator: String,
        reason: String,
        event_id: Uuid,
        event_type: String,
    },
    /// An operator cancelled the stuck order; the `OrderCancellationRequested` that follows
    /// does the work. Recorded, never published.
    CancelledByOperator {
        operator: String,
        /// The operator's own reason: for admins only.
        reason: String,
        /// What the customer is told, if the operator chose to say more than that the shop
        /// cancelled it. (Absent in histories written before it existed.)
        #[serde(default, skip_serializing_if = "Option::is_none")]
        customer_reason: Option<String>,
    },
    /// An operator asked for dead letters of the order to be redriven: published for the
    /// services that own their topics to carry out.
    DeadLetterRedriveRequested {
        operator: String,
        reason: String,
        dead_letters: Vec<DeadLetterPosition>,
    },
}

/// What a step does in the saga, for whoever reads a timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    /// The saga moving forward: placed, charged, reserved, shipped.
    Progress,
    /// A service said no, or someone asked to stop: compensations follow.
    Failure,
    /// An earlier step undone: a refund, released stock.
    Compensation,
    /// How the order ended, or a cancellation that came too late.
    Outcome,
    /// An operator acted on the saga (nudged or cancelled it): not the saga's own progress.
    Operation,
}

impl OrderEvent {
    /// Whether it is the saga's own (a fact or a decision), not an operator's note about it:
    /// only those count as progress for finding stuck orders.
    pub fn is_saga_event(&self) -> bool {
        self.step_kind() != StepKind::Operation
    }

    pub fn step_kind(&self) -> StepKind {
        match self {
            OrderEvent::OrderPlaced(_)
            | OrderEvent::PaymentAuthorized { .. }
            | OrderEvent::StockReserved { .. }
            | OrderEvent::ShipmentScheduled { .. } => StepKind::Progress,
            OrderEvent::PaymentDeclined { .. }
            | OrderEvent::StockRejected { .. }
            | OrderEvent::ShipmentFailed { .. }
            | OrderEvent::OrderCancellationRequested { .. } => StepKind::Failure,
            OrderEvent::PaymentRefunded { .. } | OrderEvent::StockReleased { .. } => {
                StepKind::Compensation
            }
            OrderEvent::CancellationRejected { .. }
            | OrderEvent::OrderCompleted
            | OrderEvent::OrderCancelled { .. } => StepKind::Outcome,
            OrderEvent::NudgedByOperator { .. }
            | OrderEvent::CancelledByOperator { .. }
            | OrderEvent::DeadLetterRedriveRequested { .. } => StepKind::Operation,
        }
    }

    pub fn event_type(&self) -> &'static str {
        match self {
            OrderEvent::OrderPlaced(_) => "OrderPlaced",
            OrderEvent::PaymentAuthorized { .. } => "PaymentAuthorized",
            OrderEvent::PaymentDeclined { .. } => "PaymentDeclined",
            OrderEvent::PaymentRefunded { .. } => "PaymentRefunded",
            OrderEvent::StockReserved { .. } => "StockReserved",
            OrderEvent::StockRejected { .. } => "StockRejected",
            OrderEvent::StockReleased { .. } => "StockReleased",
            OrderEvent::ShipmentScheduled { .. } => "ShipmentScheduled",
            OrderEvent::ShipmentFailed { .. } => "ShipmentFailed",
            OrderEvent::OrderCancellationRequested { .. } => "OrderCancellationRequested",
            OrderEvent::CancellationRejected { .. } => "CancellationRejected",
            OrderEvent::OrderCompleted => "OrderCompleted",
            OrderEvent::OrderCancelled { .. } => "OrderCancelled",
            OrderEvent::NudgedByOperator { .. } => "NudgedByOperator",
            OrderEvent::CancelledByOperator { .. } => "CancelledByOperator",
            OrderEvent::DeadLetterRedriveRequested { .. } => "DeadLetterRedriveRequested",
        }
    }

    /// A one-line summary for timelines.
    pub fn detail(&self) -> String {
        match self {
            OrderEvent::OrderPlaced(p) => format!(
                "{} line(s), total {} {}",
                p.lines.len(),
                decimal(p.total_minor),
                p.currency
            ),
            OrderEvent::PaymentAuthorized { amount_minor, .. } => {
                format!("charged {}", decimal(*amount_minor))
            }
            OrderEvent::PaymentRefunded { amount_minor, .. } => {
                format!("refunded {}", decimal(*amount_minor))
            }
            OrderEvent::StockReserved { reservation_id } => format!("reservation {reservation_id}"),
            OrderEvent::StockReleased { reservation_id } => format!("released {reservation_id}"),
            OrderEvent::StockRejected { product_id, reason } => format!("{product_id}: {reason}"),
            OrderEvent::ShipmentScheduled {
                tracking_id,
                carrier,
            } => format!("{carrier} {tracking_id}"),
            OrderEvent::PaymentDeclined { reason }
            | OrderEvent::ShipmentFailed { reason }
            | OrderEvent::OrderCancellationRequested { reason }
            | OrderEvent::CancellationRejected { reason }
            | OrderEvent::OrderCancelled { reason } => reason.clone(),
            OrderEvent::OrderCompleted => String::new(),
            OrderEvent::NudgedByOperator {
                operator,
                reason,
                event_type,
                event_id,
            } => format!("{operator} republished {event_type} {event_id}: {reason}"),
            OrderEvent::CancelledByOperator {
                operator,
                reason,
                customer_reason,
            } => match customer_reason {
                Some(told) => {
                    format!("{operator} cancelled it: {reason} (the customer is told: {told})")
                }
                None => format!("{operator} cancelled it: {reason}"),
            },
            OrderEvent::DeadLetterRedriveRequested {
                operator,
                reason,
                dead_letters,
            } => {
                let letters: Vec<String> = dead_letters
                    .iter()
                    .map(|l| format!("{}.dlq {}:{}", l.topic, l.partition, l.offset))
                    .collect();
                format!("{operator} redrove {}: {reason}", letters.join(", "))
            }
        }
    }

    /// The fact another service reported, as this order records it; `None` for events
    /// order-service does not track.
    pub fn from_contract(payload: &EventPayload) -> Option<Self> {
        Some(match payload {
            EventPayload::PaymentAuthorized(p) => OrderEvent::PaymentAuthorized {
                payment_id: p.payment_id,
                amount_minor: p.amount.amount_minor,
            },
            EventPayload::PaymentDeclined(p) => OrderEvent::PaymentDeclined {
                reason: p.reason.clone(),
            },
            EventPayload::PaymentRefunded(p) => OrderEvent::PaymentRefunded {
                amount_minor: p.amount.amount_minor,
                reason: p.reason.clone(),
            },
            EventPayload::StockReserved(p) => OrderEvent::StockReserved {
                reservation_id: p.reservation_id,
            },
            EventPayload::StockRejected(p) => OrderEvent::StockRejected {
                product_id: p.product_id.clone(),
                reason: p.reason.clone(),
            },
            EventPayload::StockReleased(p) => OrderEvent::StockReleased {
                reservation_id: p.reservation_id,
            },
            EventPayload::ShipmentScheduled(p) => OrderEvent::ShipmentScheduled {
                tracking_id: p.tracking_id.clone(),
                carrier: p.carrier.clone(),
            },
            EventPayload::ShipmentFailed(p) => OrderEvent::ShipmentFailed {
                reason: p.reason.clone(),
            },
            _ => return None,
        })
    }

    /// The contract order-service publishes for this event, if it publishes one.
    pub fn to_contract(&self, placed: &Placed) -> Option<EventPayload> {
        let money = |amount_minor| Money::new(amount_minor, placed.currency.clone());
        Some(match self {
            OrderEvent::OrderPlaced(p) => EventPayload::OrderPlaced(OrderPlaced {
                customer_id: p.customer_id.clone(),
                lines: p
                    .lines
                    .iter()
                    .map(|l| OrderLine {
                        product_id: l.product_id.clone(),
                        quantity: l.quantity,
                        unit_price: money(l.unit_price_minor),
                    })
                    .collect(),
                total: money(p.total_minor),
                shipping_address: p.shipping_address.clone(),
                customer_note: p.note.clone(),
            }),
            OrderEvent::OrderCancellationRequested { reason } => {
                EventPayload::OrderCancellationRequested(OrderCancellationRequested {
                    reason: reason.clone(),
                })
            }
            OrderEvent::OrderCompleted => EventPayload::OrderCompleted(OrderCompleted {
                total: money(placed.total_minor),
            }),
            OrderEvent::OrderCancelled { reason } => EventPayload::OrderCancelled(OrderCancelled {
                reason: reason.clone(),
            }),
            OrderEvent::DeadLetterRedriveRequested {
                operator,
                reason,
                dead_letters,
            } => EventPayload::DeadLetterRedriveRequested(DeadLetterRedriveRequested {
                operator: operator.clone(),
                reason: reason.clone(),
                dead_letters: dead_letters.clone(),
            }),
            _ => return None,
        })
    }
}

/// Minor units as a decimal amount; every accepted currency has two decimals.
fn decimal(minor: i64) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", minor.abs() / 100, minor.abs() % 100)
}
