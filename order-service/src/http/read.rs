//! `GET /orders/{order_id}` (an order with its saga timeline) and `GET /orders` (a page of
//! orders).

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use service_runtime::{Caller, FieldErrors, Problem, ValidPath, ValidQuery};
use shared_events::contracts::Address;
use sqlx::PgPool;
use sqlx::types::Json as SqlJson;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{ApiState, no_order};
use crate::domain::{Line, OrderStatus, StepKind};
use crate::error::Error;
use crate::store;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OrderView {
    pub order_id: Uuid,
    pub customer_id: String,
    pub status: OrderStatus,
    pub currency: String,
    pub total_minor: i64,
    pub lines: Vec<Line>,
    #[schema(value_type = Object)]
    pub shipping_address: Address,
    /// Why the order was cancelled, or why a cancellation was rejected.
    pub outcome_reason: Option<String>,
    pub placed_at: DateTime<Utc>,
    /// When the saga last moved (an operator's action does not count).
    pub updated_at: DateTime<Utc>,
    pub saga_deadline: DateTime<Utc>,
    /// Every step of the saga, oldest first.
    pub timeline: Vec<TimelineEntry>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TimelineEntry {
    pub at: DateTime<Utc>,
    /// The service that reported the step.
    pub service: String,
    pub event_type: String,
    /// Progress, failure, compensation (an earlier step undone) or outcome.
    pub kind: StepKind,
    pub event_id: Uuid,
    pub causation_id: Option<Uuid>,
    pub detail: String,
}

/// A row of `orders_view`.
struct OrderRow {
    order_id: Uuid,
    customer_id: String,
    status: String,
    currency: String,
    total_minor: i64,
    lines: SqlJson<Vec<Line>>,
    shipping_address: SqlJson<Address>,
    outcome_reason: Option<String>,
    placed_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    saga_deadline: DateTime<Utc>,
}

/// An order with its saga timeline: a customer's own (without operators' steps), or any for
/// an admin.
#[utoipa::path(get, path = "/orders/{order_id}", tag = "orders",
    security(("bearer" = ["orders"]), ("bearer" = ["admin"])),
    params(("order_id" = Uuid, Path)),
    responses(
        (status = 200, body = OrderView),
        (status = 400, description = "The order id is not a UUID", content_type = "application/problem+json"),
        (status = 404, description = "No such order", content_type = "application/problem+json"),
    ))]
#[tracing::instrument(name = "get_order", skip_all, fields(%order_id))]
pub(super) async fn get_order(
    caller: Caller,
    State(state): State<ApiState>,
    ValidPath(order_id): ValidPath<Uuid>,
) -> Result<Json<OrderView>, Problem> {
    let view = order_views(&state.pool, &[order_id]).await?.pop();
    // Another customer's order is as unknown as a missing one: ids do not leak.
    let mut view = view
        .filter(|view| caller.may_access(&view.customer_id))
        .ok_or_else(|| no_order(order_id))?;
    if !caller.is_admin() {
        // Operators' steps name them and carry their internal notes: admins only. What an
        // operator's cancellation tells the customer is in the cancellation request.
        view.timeline
            .retain(|step| step.kind != StepKind::Operation);
    }
    Ok(Json(view))
}

/// The orders among `order_ids` that exist, each with its timeline, in one query for the
/// rows and one for the histories.
pub(crate) async fn order_views(
    pool: &PgPool,
    order_ids: &[Uuid],
) -> Result<Vec<OrderView>, Error> {
    let rows = sqlx::query_as!(
        OrderRow,
        r#"SELECT order_id, customer_id, status, currency, total_minor,
                  lines AS "lines: SqlJson<Vec<Line>>",
                  shipping_address AS "shipping_address: SqlJson<Address>",
                  outcome_reason, placed_at, updated_at, saga_deadline
           FROM orders_view WHERE order_id = ANY($1)"#,
        order_ids,
    )
    .fetch_all(pool)
    .await?;
    let mut histories = store::histories(pool, order_ids).await?;
    rows.into_iter()
        .map(|row| {
            let mut history = histories.remove(&row.order_id).unwrap_or_default();
            // Facts arrive over different topics; the timeline shows them in the order they
            // happened.
            history.sort_by_key(|r| (r.occurred_at, r.sequence));
            let timeline = history
                .into_iter()
                .map(|r| TimelineEntry {
                    at: r.occurred_at,
                    service: r.producer,
                    kind: r.event.step_kind(),
                    event_type: r.event_type,
                    event_id: r.event_id,
                    causation_id: r.causation_id,
                    detail: r.event.detail(),
                })
                .collect();
            let status = OrderStatus::parse(&row.status).ok_or_else(|| Error::CorruptHistory {
                order_id: row.order_id,
                reason: format!("unknown status {} in orders_view", row.status),
            })?;
            Ok(OrderView {
                order_id: row.order_id,
                customer_id: row.customer_id,
                status,
                currency: row.currency,
                total_minor: row.total_minor,
                lines: row.lines.0,
                shipping_address: row.shipping_address.0,
                outcome_reason: row.outcome_reason,
                placed_at: row.placed_at,
                updated_at: row.updated_at,
                saga_deadline: row.saga_deadline,
                timeline,
            })
        })
        .collect()
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ListQuery {
    pub customer_id: Option<String>,
    /// One of PENDING, PAYMENT_AUTHORIZED, STOCK_RESERVED, CANCELLING, COMPLETED, CANCELLED.
    pub status: Option<String>,
    /// 1 to 100, default 20.
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<Uuid>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderSummary {
    pub order_id: Uuid,
    pub customer_id: String,
    pub status: String,
    pub currency: String,
    pub total_minor: i64,
    pub placed_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderPage {
    pub orders: Vec<OrderSummary>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<Uuid>,
}

/// Orders, newest first, filtered by customer and status; keyset-paginated. A customer sees
/// their own orders only; an admin sees everyone's.
#[utoipa::path(get, path = "/orders", tag = "orders", params(ListQuery),
    security(("bearer" = ["orders"]), ("bearer" = ["admin"])),
    responses(
        (status = 200, body = OrderPage),
        (status = 422, description = "Invalid filter", content_type = "application/problem+json"),
    ))]
pub(super) async fn list_orders(
    caller: Caller,
    State(state): State<ApiState>,
    ValidQuery(query): ValidQuery<ListQuery>,
) -> Result<Json<OrderPage>, Problem> {
    let limit = query.limit.unwrap_or(20);
    let mut errors = FieldErrors::default();
    errors.check((1..=100).contains(&limit), "limit", "must be 1 to 100");
    errors.check(
        query
            .status
            .as_deref()
            .is_none_or(|s| OrderStatus::parse(s).is_some()),
        "status",
        format!(
            "unknown status; use one of {}",
            OrderStatus::ALL.map(OrderStatus::as_str).join(", ")
        ),
    );
    errors.into_result()?;
    let customer = match query.customer_id {
        _ if caller.is_admin() => query.customer_id,
        Some(other) if other != caller.subject() => {
            return Ok(Json(OrderPage {
                orders: Vec::new(),
                next_cursor: None,
            }));
        }
        _ => Some(caller.subject().to_owned()),
    };
    let mut orders = sqlx::query_as!(
        OrderSummary,
        "SELECT order_id, customer_id, status, currency, total_minor, placed_at, updated_at
             FROM orders_view
             WHERE ($1::text IS NULL OR customer_id = $1)
               AND ($2::text IS NULL OR status = $2)
               AND ($3::uuid IS NULL OR order_id < $3)
             ORDER BY order_id DESC LIMIT $4",
        customer.as_deref(),
        query.status.as_deref(),
        query.cursor,
        limit + 1,
    )
    .fetch_all(&state.pool)
    .await?;
    let more = orders.len() as i64 > limit;
    orders.truncate(limit as usize);
    let next_cursor = more.then(|| orders.last().map(|o| o.order_id)).flatten();
    Ok(Json(OrderPage {
        orders,
        next_cursor,
    }))
}
