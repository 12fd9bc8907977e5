//! Payment rules and billing's part of the saga, as pure functions: no I/O, no clock.
//!
//! Billing charges an order when it hears `OrderPlaced` and refunds it when the saga fails
//! downstream (`StockRejected` or `ShipmentFailed`). Events of one order reach billing on
//! three topics, in any order and possibly more than once; every transition below is
//! idempotent and a refund needs a charge, so no interleaving can refund twice or refund
//! what was never charged.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use shared_events::contracts::{
    EventPayload, Money, OrderPlaced, PaymentAuthorized, PaymentDeclined, PaymentRefunded,
};
use uuid::Uuid;

/// A customer's account. `balance_minor` may go negative down to `-credit_limit_minor`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub customer_id: String,
    pub currency: String,
    pub balance_minor: i64,
    pub credit_limit_minor: i64,
}

impl Account {
    /// What the customer can still spend: balance plus the credit line.
    pub fn available_minor(&self) -> i64 {
        self.balance_minor.saturating_add(self.credit_limit_minor)
    }

    /// Whether `amount` may be charged, and if not, why.
    pub fn can_charge(&self, amount: &Money) -> Result<(), String> {
        if amount.currency != self.currency {
            return Err(format!(
                "account is kept in {}, the order is in {}",
                self.currency, amount.currency
            ));
        }
        if amount.amount_minor <= 0 {
            return Err("amount must be positive".to_owned());
        }
        if amount.amount_minor > self.available_minor() {
            return Err(format!(
                "insufficient funds: {} available, {} needed",
                self.available_minor(),
                amount.amount_minor
            ));
        }
        Ok(())
    }
}

/// Where one order stands with billing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "stage", rename_all = "snake_case")]
pub enum OrderPayment {
    /// Nothing heard yet, or only events that need no action.
    #[default]
    Open,
    /// The saga failed before billing saw the order: it will be declined, not charged.
    FailedBeforePayment {
        reason: String,
    },
    Declined {
        customer_id: String,
        reason: String,
    },
    /// Charged to the account and held until the order completes or fails.
    Authorized {
        payment: Payment,
    },
    /// The order completed: the charge is final.
    Captured {
        payment: Payment,
    },
    Refunded {
        payment: Payment,
        reason: String,
    },
}

/// A charge against an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    pub payment_id: Uuid,
    pub customer_id: String,
    pub amount: Money,
}

/// What billing does about one event: its next state, the change to the customer's balance
/// and the event to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub next: OrderPayment,
    pub balance_change_minor: i64,
    pub emit: Option<EventPayload>,
}

impl OrderPayment {
    /// The customer holding a charge on the order, if there is one.
    pub fn charged_customer(&self) -> Option<&str> {
        match self {
            OrderPayment::Authorized { payment }
            | OrderPayment::Captured { payment }
            | OrderPayment::Refunded { payment, .. } => Some(&payment.customer_id),
            _ => None,
        }
    }
}

impl Decision {
    /// Applies the balance change to the account it hits: that of the customer whose charge
    /// the decision makes or refunds. `Err` says why it cannot be applied (the record is
    /// then rejected, and nothing of it kept).
    pub fn apply_balance(&self, accounts: &mut BTreeMap<String, Account>) -> Result<(), String> {
        if self.balance_change_minor == 0 {
            return Ok(());
        }
        let customer_id = match &self.next {
            OrderPayment::Authorized { payment } | OrderPayment::Refunded { payment, .. } => {
                &payment.customer_id
            }
            other => {
                return Err(format!(
                    "a balance change must charge or refund, not lead to {other:?}"
                ));
            }
        };
        let account = accounts
            .get_mut(customer_id)
            .ok_or_else(|| format!("no account {customer_id} to charge or refund"))?;
        account.balance_minor = account
            .balance_minor
            .checked_add(self.balance_change_minor)
            .ok_or_else(|| format!("the balance of {customer_id} would overflow"))?;
        Ok(())
    }

    fn stay(current: &OrderPayment) -> Self {
        Self {
            next: current.clone(),
            balance_change_minor: 0,
            emit: None,
        }
    }
}

/// Which account an event needs loaded before [`decide`] can run (only `OrderPlaced` charges).
pub fn account_needed(payload: &EventPayload) -> Option<&str> {
    match payload {
        EventPayload::OrderPlaced(placed) => Some(&placed.customer_id),
        _ => None,
    }
}

/// Billing's reaction to `payload` for an order in state `current`. `account` is the
/// ordering customer's account (for `OrderPlaced`); `payment_id` names a new charge.
pub fn decide(
    current: &OrderPayment,
    payload: &EventPayload,
    account: Option<&Account>,
    payment_id: Uuid,
) -> Decision {
    match payload {
        EventPayload::OrderPlaced(placed) => on_order_placed(current, placed, account, payment_id),
        EventPayload::StockRejected(rejected) => {
            on_saga_failed(current, format!("stock rejected: {}", rejected.reason))
        }
        EventPayload::ShipmentFailed(failed) => {
            on_saga_failed(current, format!("shipment failed: {}", failed.reason))
        }
        EventPayload::OrderCompleted(_) => match current {
            OrderPayment::Authorized { payment } => Decision {
                next: OrderPayment::Captured {
                    payment: payment.clone(),
                },
                balance_change_minor: 0,
                emit: None,
            },
            _ => Decision::stay(current),
        },
        _ => Decision::stay(current),
    }
}

fn on_order_placed(
    current: &OrderPayment,
    placed: &OrderPlaced,
    account: Option<&Account>,
    payment_id: Uuid,
) -> Decision {
    let decline = |reason: String| Decision {
        next: OrderPayment::Declined {
            customer_id: placed.customer_id.clone(),
            reason: reason.clone(),
        },
        balance_change_minor: 0,
        emit: Some(EventPayload::PaymentDeclined(PaymentDeclined {
            customer_id: placed.customer_id.clone(),
            amount: placed.total.clone(),
            reason,
        })),
    };
    match current {
        OrderPayment::Open => {}
        OrderPayment::FailedBeforePayment { reason } => {
            return decline(format!("order failed before payment ({reason})"));
        }
        // Already decided: a redelivery changes nothing.
        _ => return Decision::stay(current),
    }
    let Some(account) = account else {
        return decline(format!("no account for customer {}", placed.customer_id));
    };
    if let Err(reason) = account.can_charge(&placed.total) {
        return decline(reason);
    }
    let payment = Payment {
        payment_id,
        customer_id: placed.customer_id.clone(),
        amount: placed.total.clone(),
    };
    Decision {
        next: OrderPayment::Authorized {
            payment: payment.clone(),
        },
        balance_change_minor: -placed.total.amount_minor,
        emit: Some(EventPayload::PaymentAuthorized(PaymentAuthorized {
            payment_id: payment.payment_id,
            customer_id: payment.customer_id,
            amount: payment.amount,
        })),
    }
}

fn on_saga_failed(current: &OrderPayment, reason: String) -> Decision {
    match current {
        OrderPayment::Open => Decision {
            next: OrderPayment::FailedBeforePayment { reason },
            balance_change_minor: 0,
            emit: None,
        },
        OrderPayment::Authorized { payment } => Decision {
            next: OrderPayment::Refunded {
                payment: payment.clone(),
                reason: reason.clone(),
            },
            balance_change_minor: payment.amount.amount_minor,
            emit: Some(EventPayload::PaymentRefunded(PaymentRefunded {
                payment_id: payment.payment_id,
                customer_id: payment.customer_id.clone(),
                amount: payment.amount.clone(),
                reason,
            })),
        },
        // Declined: nothing was charged. Refunded: already given back. Captured cannot meet
        // a failure (shipping decides once), and a completed order is never refunded.
        _ => Decision::stay(current),
    }
}

#[cfg(test)]
mod tests;
