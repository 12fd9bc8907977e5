//! Billing's consumer: applies [`crate::domain::decide`] to each event of an order, under the
//! order's row lock, in the runner's transaction.

use shared_events::{Event, EventHandler, HandlerError, SagaStateTable};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{self, Account, OrderPayment};

pub const ORDER_PAYMENTS: SagaStateTable = SagaStateTable::new("order_payments");

pub struct BillingHandler;

impl EventHandler for BillingHandler {
    const EVENT_TYPES: &'static [&'static str] = &[
        "OrderPlaced",
        "StockRejected",
        "ShipmentFailed",
        "OrderCompleted",
    ];

    async fn handle(
        &self,
        event: &Event,
        tx: &mut PgConnection,
    ) -> Result<Vec<Event>, HandlerError> {
        let Some(order_id) = event.metadata.order_id else {
            return Ok(Vec::new());
        };
        let current: OrderPayment = ORDER_PAYMENTS.lock(tx, order_id).await?;
        let account = match domain::account_needed(&event.payload) {
            Some(customer_id) => lock_account(tx, customer_id).await?,
            None => None,
        };
        let decision = domain::decide(&current, &event.payload, account.as_ref(), Uuid::now_v7());
        if decision.balance_change_minor != 0 {
            let customer_id = match &decision.next {
                OrderPayment::Authorized { payment } | OrderPayment::Refunded { payment, .. } => {
                    &payment.customer_id
                }
                other => {
                    return Err(HandlerError::Rejected(format!(
                        "a balance change must charge or refund, not lead to {other:?}"
                    )));
                }
            };
            sqlx::query(
                "UPDATE accounts SET balance_minor = balance_minor + $2, updated_at = now()
                 WHERE customer_id = $1",
            )
            .bind(customer_id)
            .bind(decision.balance_change_minor)
            .execute(&mut *tx)
            .await?;
        }
        if decision.next != current {
            ORDER_PAYMENTS.save(tx, order_id, &decision.next).await?;
        }
        Ok(decision
            .emit
            .map(|payload| Event::caused_by(&event.metadata, crate::DEFAULTS.name, payload))
            .into_iter()
            .collect())
    }
}

async fn lock_account(
    tx: &mut PgConnection,
    customer_id: &str,
) -> Result<Option<Account>, sqlx::Error> {
    let row: Option<(String, String, i64, i64)> = sqlx::query_as(
        "SELECT customer_id, currency, balance_minor, credit_limit_minor
         FROM accounts WHERE customer_id = $1 FOR UPDATE",
    )
    .bind(customer_id)
    .fetch_optional(tx)
    .await?;
    Ok(row.map(
        |(customer_id, currency, balance_minor, credit_limit_minor)| Account {
            customer_id,
            currency,
            balance_minor,
            credit_limit_minor,
        },
    ))
}
