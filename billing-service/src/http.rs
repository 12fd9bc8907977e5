//! Billing's REST API: read an account with its holds, payments and refunds; create an
//! account or set its credit.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use service_runtime::{FieldErrors, Problem, ValidJson};
use shared_events::contracts::CURRENCIES;
use sqlx::PgPool;
use sqlx::types::Json as SqlJson;
use utoipa::{OpenApi, ToSchema};
use uuid::Uuid;

use crate::domain::OrderPayment;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "billing-service",
        description = "Customer accounts and order payments."
    ),
    paths(get_account, put_account)
)]
pub struct ApiDoc;

pub fn routes(pool: PgPool) -> Router {
    Router::new()
        .route("/accounts/{customer_id}", get(get_account).put(put_account))
        .with_state(pool)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AccountView {
    pub customer_id: String,
    pub currency: String,
    pub balance_minor: i64,
    pub credit_limit_minor: i64,
    /// Balance plus credit: the largest order that can be charged now.
    pub available_minor: i64,
    /// Charges of orders still in flight (neither completed nor refunded).
    pub holds: Vec<PaymentView>,
    /// Every charge, whatever became of it.
    pub payments: Vec<PaymentView>,
    pub refunds: Vec<RefundView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentView {
    pub order_id: Uuid,
    pub payment_id: Uuid,
    pub amount_minor: i64,
    /// `authorized` (held), `captured` (order completed) or `refunded`.
    pub status: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RefundView {
    pub order_id: Uuid,
    pub payment_id: Uuid,
    pub amount_minor: i64,
    pub reason: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutAccount {
    /// ISO 4217 code; fixed once the account exists.
    pub currency: String,
    pub credit_limit_minor: i64,
    /// Sets the balance (opening balance or a top-up); kept as is when omitted.
    #[serde(default)]
    pub balance_minor: Option<i64>,
}

/// An account with its holds, payments and refunds.
#[utoipa::path(get, path = "/accounts/{customer_id}", tag = "accounts",
    params(("customer_id" = String, Path)),
    responses(
        (status = 200, body = AccountView),
        (status = 404, description = "No such account", content_type = "application/problem+json"),
    ))]
async fn get_account(
    State(pool): State<PgPool>,
    Path(customer_id): Path<String>,
) -> Result<Json<AccountView>, Problem> {
    let account: Option<(String, i64, i64)> = sqlx::query_as(
        "SELECT currency, balance_minor, credit_limit_minor FROM accounts WHERE customer_id = $1",
    )
    .bind(&customer_id)
    .fetch_optional(&pool)
    .await?;
    let Some((currency, balance_minor, credit_limit_minor)) = account else {
        return Err(Problem::not_found(format!("no account for {customer_id}")));
    };
    let orders: Vec<(Uuid, SqlJson<OrderPayment>)> = sqlx::query_as(
        "SELECT order_id, state FROM order_payments WHERE customer_id = $1 ORDER BY order_id",
    )
    .bind(&customer_id)
    .fetch_all(&pool)
    .await?;
    let (mut holds, mut payments, mut refunds) = (Vec::new(), Vec::new(), Vec::new());
    for (order_id, SqlJson(state)) in orders {
        let (payment, status) = match &state {
            OrderPayment::Authorized { payment } => (payment, "authorized"),
            OrderPayment::Captured { payment } => (payment, "captured"),
            OrderPayment::Refunded { payment, reason } => {
                refunds.push(RefundView {
                    order_id,
                    payment_id: payment.payment_id,
                    amount_minor: payment.amount.amount_minor,
                    reason: reason.clone(),
                });
                (payment, "refunded")
            }
            _ => continue,
        };
        let view = || PaymentView {
            order_id,
            payment_id: payment.payment_id,
            amount_minor: payment.amount.amount_minor,
            status,
        };
        if status == "authorized" {
            holds.push(view());
        }
        payments.push(view());
    }
    Ok(Json(AccountView {
        customer_id,
        currency,
        balance_minor,
        credit_limit_minor,
        available_minor: balance_minor.saturating_add(credit_limit_minor),
        holds,
        payments,
        refunds,
    }))
}

/// Creates an account or sets its credit limit (and, if given, its balance).
#[utoipa::path(put, path = "/accounts/{customer_id}", tag = "accounts",
    params(("customer_id" = String, Path)),
    request_body = PutAccount,
    responses(
        (status = 200, description = "Updated", body = AccountView),
        (status = 201, description = "Created", body = AccountView),
        (status = 422, description = "Invalid", content_type = "application/problem+json"),
    ))]
async fn put_account(
    State(pool): State<PgPool>,
    Path(customer_id): Path<String>,
    ValidJson(body): ValidJson<PutAccount>,
) -> Result<(StatusCode, Json<AccountView>), Problem> {
    let mut errors = FieldErrors::default();
    errors.check(
        !customer_id.is_empty() && customer_id.len() <= 200,
        "customer_id",
        "must be 1 to 200 characters",
    );
    errors.check(
        CURRENCIES.contains(&body.currency.as_str()),
        "currency",
        format!("unknown currency; use one of {}", CURRENCIES.join(", ")),
    );
    errors.check(
        body.credit_limit_minor >= 0,
        "credit_limit_minor",
        "must not be negative",
    );
    errors.into_result()?;
    let mut tx = pool.begin().await?;
    let existing: Option<(String,)> =
        sqlx::query_as("SELECT currency FROM accounts WHERE customer_id = $1 FOR UPDATE")
            .bind(&customer_id)
            .fetch_optional(&mut *tx)
            .await?;
    let status = match existing {
        Some((currency,)) if currency != body.currency => {
            return Err(Problem::invalid_field(
                "currency",
                format!("the account is kept in {currency}"),
            ));
        }
        Some(_) => {
            sqlx::query(
                "UPDATE accounts SET credit_limit_minor = $2,
                     balance_minor = coalesce($3, balance_minor), updated_at = now()
                 WHERE customer_id = $1",
            )
            .bind(&customer_id)
            .bind(body.credit_limit_minor)
            .bind(body.balance_minor)
            .execute(&mut *tx)
            .await?;
            StatusCode::OK
        }
        None => {
            sqlx::query(
                "INSERT INTO accounts (customer_id, currency, balance_minor, credit_limit_minor)
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(&customer_id)
            .bind(&body.currency)
            .bind(body.balance_minor.unwrap_or(0))
            .bind(body.credit_limit_minor)
            .execute(&mut *tx)
            .await?;
            StatusCode::CREATED
        }
    };
    tx.commit().await?;
    let Json(view) = get_account(State(pool), Path(customer_id)).await?;
    Ok((status, Json(view)))
}
