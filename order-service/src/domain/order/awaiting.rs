//! What an order in flight waits for, and from whom: what an operator asks of a stuck saga.
//! Derived from the facts alone, like the status, so it needs no I/O.

use shared_events::contracts::topology;

use super::Order;

/// A step the saga waits for: any one of `events` ends the wait, and one service sends
/// them all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AwaitedStep {
    pub events: &'static [&'static str],
}

impl AwaitedStep {
    pub const PAYMENT: Self = Self::of(&["PaymentAuthorized", "PaymentDeclined"]);
    pub const STOCK: Self = Self::of(&["StockReserved", "StockRejected"]);
    pub const SHIPMENT: Self = Self::of(&["ShipmentScheduled", "ShipmentFailed"]);
    pub const REFUND: Self = Self::of(&["PaymentRefunded"]);
    pub const RELEASE: Self = Self::of(&["StockReleased"]);
    pub const ALL: [Self; 5] = [
        Self::PAYMENT,
        Self::STOCK,
        Self::SHIPMENT,
        Self::REFUND,
        Self::RELEASE,
    ];

    const fn of(events: &'static [&'static str]) -> Self {
        Self { events }
    }

    /// The service that owes the step: the sender of its events in the saga's topology.
    pub fn owed_by(self) -> &'static topology::ServiceTopology {
        topology::sender_of(self.events[0]).expect("awaited events are contracts")
    }

    /// A short name for the step, for metrics and the console: its first event's.
    pub fn name(self) -> &'static str {
        self.events[0]
    }
}

impl Order {
    /// The steps the saga waits for now, each owed by one service: nothing once the order
    /// is over. On the way forward that is the one next step. Once the saga failed it is
    /// what each compensation still waits for: billing's refund and inventory's release come
    /// only after a failure they hear of (`StockRejected`, `ShipmentFailed`), and a
    /// cancellation becomes one only when shipping answers it.
    pub fn awaiting(&self) -> Vec<AwaitedStep> {
        if self.status().is_terminal() {
            return Vec::new();
        }
        let facts = &self.facts;
        let paid_or_declined = facts.charged || facts.declined.is_some();
        let stock_answered = facts.reserved || facts.stock_rejected.is_some();
        if self.failure().is_none() {
            let next = if !paid_or_declined {
                AwaitedStep::PAYMENT
            } else if !stock_answered {
                AwaitedStep::STOCK
            } else {
                AwaitedStep::SHIPMENT
            };
            return vec![next];
        }
        let failure_heard = facts.stock_rejected.is_some() || facts.shipment_failed.is_some();
        let billing = if facts.billing_settled() {
            None
        } else if !facts.charged {
            Some(AwaitedStep::PAYMENT)
        } else if failure_heard {
            Some(AwaitedStep::REFUND)
        } else {
            Some(AwaitedStep::SHIPMENT)
        };
        let inventory = if facts.inventory_settled() || !facts.charged {
            // Unpaid: inventory has nothing to act on, billing is owed first.
            None
        } else if !facts.reserved {
            Some(AwaitedStep::STOCK)
        } else if facts.shipment_failed.is_some() {
            Some(AwaitedStep::RELEASE)
        } else {
            Some(AwaitedStep::SHIPMENT)
        };
        let mut steps: Vec<AwaitedStep> = billing.into_iter().chain(inventory).collect();
        steps.dedup();
        steps
    }
}
