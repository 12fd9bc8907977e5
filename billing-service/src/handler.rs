//! Billing's consumer: applies [`crate::domain::decide`] to a batch of events, set-based. It
//! locks the saga rows of every order in the batch, then every account the batch may touch
//! (each in key order), decides event by event in memory, and writes back what changed.

use std::collections::{BTreeMap, BTreeSet};

use shared_events::contracts::Event;
use shared_events::saga_state::LockedStates;
use shared_events::{EventHandler, HandlerError};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{self, Account, OrderPayment};

shared_events::saga_state_table! {
    /// Billing's saga state per order ([`OrderPayment`] as JSON).
    pub struct OrderPayments("order_payments") holds OrderPayment;
}

pub struct BillingHandler;

impl EventHandler for BillingHandler {
    const EVENT_TYPES: &'static [&'static str] =
        shared_events::contracts::topology::BILLING_SERVICE.receives;

    async fn handle(
        &self,
        events: &[&Event],
        tx: &mut PgConnection,
    ) -> Result<Vec<Event>, HandlerError> {
        let mut payments = OrderPayments::lock_all(tx, events).await?;
        let accounts_before = lock_accounts(tx, customers_touched(&payments, events)).await?;
        let mut accounts = accounts_before.clone();
        let answers = payments.decide_each(events, crate::DEFAULTS.name, |current, event| {
            let account = domain::account_needed(&event.payload).and_then(|c| accounts.get(c));
            let decision = domain::decide(current, &event.payload, account, Uuid::now_v7());
            decision
                .apply_balance(&mut accounts)
                .map_err(HandlerError::Rejected)?;
            *current = decision.next;
            Ok(decision.emit)
        })?;
        OrderPayments::save(tx, &payments).await?;
        save_balances(tx, &accounts_before, &accounts).await?;
        Ok(answers)
    }
}

/// Every customer whose balance the batch may change: those placing an order, and those
/// holding a charge on one of the batch's orders (a refund).
fn customers_touched(payments: &LockedStates<OrderPayment>, events: &[&Event]) -> BTreeSet<String> {
    let placing = events
        .iter()
        .filter_map(|e| domain::account_needed(&e.payload))
        .map(str::to_owned);
    let charged = payments
        .values()
        .filter_map(|state| state.charged_customer())
        .map(str::to_owned);
    placing.chain(charged).collect()
}

/// Locks the accounts in customer-id order and returns those that exist.
async fn lock_accounts(
    tx: &mut PgConnection,
    customers: BTreeSet<String>,
) -> Result<BTreeMap<String, Account>, sqlx::Error> {
    if customers.is_empty() {
        return Ok(BTreeMap::new());
    }
    let customers: Vec<String> = customers.into_iter().collect();
    let accounts = sqlx::query_as!(
        Account,
        "SELECT customer_id, currency, balance_minor, credit_limit_minor
         FROM accounts WHERE customer_id = ANY($1) ORDER BY customer_id FOR UPDATE",
        &customers,
    )
    .fetch_all(tx)
    .await?;
    Ok(accounts
        .into_iter()
        .map(|account| (account.customer_id.clone(), account))
        .collect())
}

/// Writes the balances that changed (the rows are locked), in one statement.
async fn save_balances(
    tx: &mut PgConnection,
    before: &BTreeMap<String, Account>,
    after: &BTreeMap<String, Account>,
) -> Result<(), sqlx::Error> {
    let (customers, balances): (Vec<&str>, Vec<i64>) = after
        .iter()
        .filter(|(id, account)| {
            before.get(*id).map(|a| a.balance_minor) != Some(account.balance_minor)
        })
        .map(|(id, account)| (id.as_str(), account.balance_minor))
        .unzip();
    if customers.is_empty() {
        return Ok(());
    }
    sqlx::query!(
        "UPDATE accounts AS a SET balance_minor = v.balance_minor, updated_at = now()
         FROM UNNEST($1::text[], $2::bigint[]) AS v(customer_id, balance_minor)
         WHERE a.customer_id = v.customer_id",
        &customers as _,
        &balances,
    )
    .execute(tx)
    .await?;
    Ok(())
}
