//! Billing's REST API: read an account with its holds, payments and refunds; create an
//! account or set its credit.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use serde::{Deserialize, Serialize};
use service_runtime::precondition::{precondition_failed, tagged};
use service_runtime::{Admin, Caller, FieldErrors, IfMatch, PathId, Problem, ValidJson, ValidPath};
use shared_events::contracts::Currency;
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
    /// The account row's version, sent as the `ETag`.
    #[serde(skip)]
    pub version: String,
}

impl AccountView {
    fn with_etag(self, status: StatusCode) -> Response {
        tagged(status, &self.version.clone(), self)
    }
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
    #[schema(min_length = 3, max_length = 3)]
    pub currency: String,
    pub credit_limit_minor: i64,
    /// Sets the balance (opening balance or a top-up); kept as is when omitted.
    #[serde(default)]
    pub balance_minor: Option<i64>,
}

/// A customer id as a URL names it: bounded before it is looked up or echoed.
type CustomerKey = PathId<200>;

/// An account with its holds, payments and refunds; its `ETag` names the version for a
/// conditional PUT. A customer reads their own account only.
#[utoipa::path(get, path = "/accounts/{customer_id}", tag = "accounts",
    security(("bearer" = ["orders"]), ("bearer" = ["admin"])),
    params(("customer_id" = String, Path)),
    responses(
        (status = 200, body = AccountView, headers(("ETag" = String, description = "The account's version"))),
        (status = 400, description = "A customer id over 200 characters, or with a control character", content_type = "application/problem+json"),
        (status = 404, description = "No such account", content_type = "application/problem+json"),
    ))]
#[tracing::instrument(name = "get_account", skip_all, fields(%customer_id))]
async fn get_account(
    caller: Caller,
    State(pool): State<PgPool>,
    ValidPath(customer_id): ValidPath<CustomerKey>,
) -> Result<Response, Problem> {
    let customer_id = customer_id.into_inner();
    if !caller.may_access(&customer_id) {
        return Err(no_account(&customer_id));
    }
    Ok(read_account(&pool, customer_id)
        .await?
        .with_etag(StatusCode::OK))
}

fn no_account(customer_id: &str) -> Problem {
    Problem::not_found(format!("no account for {customer_id}"))
}

async fn read_account(pool: &PgPool, customer_id: String) -> Result<AccountView, Problem> {
    let account = sqlx::query!(
        r#"SELECT currency, balance_minor, credit_limit_minor, xmin::text AS "version!"
           FROM accounts WHERE customer_id = $1"#,
        customer_id,
    )
    .fetch_optional(pool)
    .await?;
    let Some(account) = account else {
        return Err(no_account(&customer_id));
    };
    let (currency, balance_minor, credit_limit_minor, version) = (
        account.currency,
        account.balance_minor,
        account.credit_limit_minor,
        account.version,
    );
    let orders = sqlx::query!(
        r#"SELECT order_id, state AS "state: SqlJson<OrderPayment>"
           FROM order_payments WHERE customer_id = $1 ORDER BY order_id"#,
        customer_id,
    )
    .fetch_all(pool)
    .await?;
    let (mut holds, mut payments, mut refunds) = (Vec::new(), Vec::new(), Vec::new());
    for row in orders {
        let (order_id, SqlJson(state)) = (row.order_id, row.state);
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
    Ok(AccountView {
        customer_id,
        currency,
        balance_minor,
        credit_limit_minor,
        available_minor: balance_minor.saturating_add(credit_limit_minor),
        holds,
        payments,
        refunds,
        version,
    })
}

/// Creates an account or sets its credit limit (and, if given, its balance). A balance
/// replaces the one stored: send `If-Match` with the `ETag` you read, so that a charge made
/// since is not overwritten (412 then: read again). Needs the `admin` scope.
#[utoipa::path(put, path = "/accounts/{customer_id}", tag = "accounts",
    security(("bearer" = ["admin"])),
    params(
        ("customer_id" = String, Path),
        ("If-Match" = Option<String>, Header, description = "The ETag the change is based on, or * (must exist)"),
    ),
    request_body = PutAccount,
    responses(
        (status = 200, description = "Updated", body = AccountView, headers(("ETag" = String))),
        (status = 201, description = "Created", body = AccountView, headers(("ETag" = String))),
        (status = 400, description = "Malformed JSON or If-Match, or a customer id over 200 characters or with a control character", content_type = "application/problem+json"),
        (status = 412, description = "Changed since the If-Match version, or missing", content_type = "application/problem+json"),
        (status = 422, description = "Invalid", content_type = "application/problem+json"),
    ))]
#[tracing::instrument(name = "put_account", skip_all, fields(%customer_id))]
async fn put_account(
    _: Admin,
    State(pool): State<PgPool>,
    ValidPath(customer_id): ValidPath<CustomerKey>,
    if_match: IfMatch,
    ValidJson(body): ValidJson<PutAccount>,
) -> Result<Response, Problem> {
    let customer_id = customer_id.into_inner();
    let mut errors = FieldErrors::default();
    errors.check(
        !customer_id.is_empty() && customer_id.len() <= 200,
        "customer_id",
        "must be 1 to 200 characters",
    );
    errors.parse("currency", Currency::parse(&body.currency));
    errors.check(
        body.credit_limit_minor >= 0,
        "credit_limit_minor",
        "must not be negative",
    );
    errors.into_result()?;
    // One statement, so concurrent first PUTs of an account cannot both insert.
    let mut tx = pool.begin().await?;
    let created = sqlx::query_scalar!(
        r#"INSERT INTO accounts (customer_id, currency, balance_minor, credit_limit_minor)
           VALUES ($1, $2, coalesce($3::bigint, 0), $4)
           ON CONFLICT (customer_id) DO UPDATE SET credit_limit_minor = $4,
               balance_minor = coalesce($3, accounts.balance_minor), updated_at = now()
           WHERE accounts.currency = $2 AND ($5::text IS NULL OR accounts.xmin::text = $5)
           RETURNING (xmax = 0) AS "created!""#,
        customer_id,
        body.currency,
        body.balance_minor,
        body.credit_limit_minor,
        if_match.version(),
    )
    .fetch_optional(&mut *tx)
    .await?;
    let status = match created {
        // Created although If-Match presumed it existed: rolled back on drop.
        Some(true) if !if_match.allows_creation() => {
            return Err(precondition_failed(&format!("account {customer_id}")));
        }
        Some(true) => StatusCode::CREATED,
        Some(false) => StatusCode::OK,
        None => {
            let kept_in = sqlx::query_scalar!(
                "SELECT currency FROM accounts WHERE customer_id = $1",
                customer_id
            )
            .fetch_optional(&mut *tx)
            .await?;
            return Err(match kept_in {
                Some(currency) if currency != body.currency => {
                    Problem::invalid_field("currency", format!("the account is kept in {currency}"))
                }
                _ => precondition_failed(&format!("account {customer_id}")),
            });
        }
    };
    tx.commit().await?;
    Ok(read_account(&pool, customer_id).await?.with_etag(status))
}
