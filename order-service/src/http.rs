//! order-service's REST API: place, read, list and cancel orders.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use service_runtime::auth::Scope;
use service_runtime::{Caller, FieldErrors, Problem, ValidJson, ValidPath};
use shared_events::Outbox;
use shared_events::contracts::Address;
use sqlx::PgPool;
use sqlx::types::Json as SqlJson;
use utoipa::{IntoParams, OpenApi, ToSchema};
use uuid::Uuid;

use crate::domain::validation::{self, CatalogPrice, PlaceOrder};
use crate::domain::{CancelRefused, Line, OrderStatus, Placed};
use crate::orders::{self, Cancellation};
use crate::store;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "order-service",
        description = "Places orders and follows their saga."
    ),
    paths(place_order, get_order, list_orders, cancel_order)
)]
pub struct ApiDoc;

#[derive(Clone)]
pub struct ApiState {
    pub pool: PgPool,
    pub outbox: Outbox,
    pub saga_timeout: Duration,
}

pub fn routes(state: ApiState) -> Router {
    Router::new()
        .route("/orders", post(place_order).get(list_orders))
        .route("/orders/{order_id}", get(get_order))
        .route("/orders/{order_id}/cancel", post(cancel_order))
        .with_state(state)
}

const IDEMPOTENCY_KEY: &str = "idempotency-key";

#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    pub order_id: Uuid,
    pub status: OrderStatus,
}

/// Places an order for the token's subject (`customer_id` must be theirs; an admin may
/// order for anyone). Prices come from the local catalog copy; the saga runs asynchronously.
#[utoipa::path(post, path = "/orders", tag = "orders",
    security(("bearer" = ["orders"]), ("bearer" = ["admin"])),
    params(("Idempotency-Key" = String, Header, description = "Unique per order; a retry with the same key and body gets the original answer")),
    request_body = PlaceOrder,
    responses(
        (status = 202, body = Accepted, description = "Accepted; Location names the order"),
        (status = 400, description = "Missing Idempotency-Key or malformed JSON", content_type = "application/problem+json"),
        (status = 413, description = "Body over 64 KiB", content_type = "application/problem+json"),
        (status = 415, description = "Body not sent as application/json", content_type = "application/problem+json"),
        (status = 422, description = "Invalid order, or key reused with another body", content_type = "application/problem+json"),
    ))]
async fn place_order(
    caller: Caller,
    State(state): State<ApiState>,
    headers: HeaderMap,
    ValidJson(request): ValidJson<PlaceOrder>,
) -> Result<Response, Problem> {
    // A customer orders for themselves (the body repeats the token's subject); an admin may
    // order for anyone. So an idempotency key, whose replay needs the same body, never
    // answers one customer with another's order.
    if !caller.may_access(&request.customer_id) {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "/problems/not-your-customer-id",
            "Orders are placed for the token's subject",
        )
        .detail("customer_id must be the subject of the access token"));
    }
    let key = headers
        .get(IDEMPOTENCY_KEY)
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty() && k.len() <= 200)
        .ok_or_else(|| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "/problems/idempotency-key",
                "Idempotency-Key header required",
            )
            .detail("send a unique Idempotency-Key (1 to 200 characters) with every new order")
            .with("field", "Idempotency-Key".into())
        })?
        .to_owned();
    let request_json = serde_json::to_value(&request).map_err(|_| Problem::internal())?;
    // The key is looked up only when it matters (claiming it failed, or the request is
    // invalid now though it may have been accepted before), not on every request.
    let product_ids: Vec<String> = request.items.iter().map(|i| i.product_id.clone()).collect();
    let catalog: BTreeMap<String, CatalogPrice> = store::catalog_prices(&state.pool, &product_ids)
        .await?
        .into_iter()
        .map(|row| {
            (
                row.product_id,
                CatalogPrice {
                    unit_price_minor: row.unit_price_minor,
                    currency: row.currency,
                },
            )
        })
        .collect();
    let valid = match validation::validate(&request, &catalog) {
        Ok(valid) => valid,
        Err(errors) => {
            return match replay(&state.pool, &key, &request_json).await? {
                Some(answer) => Ok(answer),
                None => Err(Problem::validation(errors)),
            };
        }
    };
    let order_id = Uuid::now_v7();
    let placed = Placed {
        customer_id: valid.customer_id,
        currency: valid.currency,
        lines: valid.lines,
        total_minor: valid.total_minor,
        shipping_address: valid.shipping_address,
        note: valid.note,
        saga_deadline: (Utc::now() + state.saga_timeout).trunc_subsecs(3),
    };
    let mut tx = state.pool.begin().await?;
    if !store::claim_idempotency_key(&mut tx, &key, &request_json, order_id).await? {
        // The key was used before (or by a concurrent request): answer as it was answered.
        drop(tx);
        return replay(&state.pool, &key, &request_json)
            .await?
            .ok_or_else(Problem::internal);
    }
    let published = orders::place(&mut tx, order_id, placed).await?;
    state.outbox.append(&mut tx, &[published]).await?;
    state.outbox.commit(tx).await?;
    tracing::info!(%order_id, "order placed");
    Ok(accepted(order_id, false))
}

/// The original answer for a key already used with this body; 422 if used with another.
async fn replay(
    pool: &PgPool,
    key: &str,
    request: &serde_json::Value,
) -> Result<Option<Response>, Problem> {
    match store::idempotent_request(pool, key).await? {
        None => Ok(None),
        Some((stored, order_id)) if &stored == request => Ok(Some(accepted(order_id, true))),
        Some(_) => Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "/problems/idempotency-key-reused",
            "Idempotency-Key already used with a different body",
        )
        .detail("use a new Idempotency-Key for a different order")
        .with("field", "Idempotency-Key".into())),
    }
}

fn accepted(order_id: Uuid, replayed: bool) -> Response {
    let mut response = (
        StatusCode::ACCEPTED,
        Json(Accepted {
            order_id,
            status: OrderStatus::Pending,
        }),
    )
        .into_response();
    let location = HeaderValue::from_str(&format!("/orders/{order_id}")).expect("ascii");
    response.headers_mut().insert(header::LOCATION, location);
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

#[derive(Debug, Serialize, ToSchema)]
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
    pub updated_at: DateTime<Utc>,
    pub saga_deadline: DateTime<Utc>,
    /// Every step of the saga, oldest first.
    pub timeline: Vec<TimelineEntry>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TimelineEntry {
    pub at: DateTime<Utc>,
    /// The service that reported the step.
    pub service: String,
    pub event_type: String,
    pub event_id: Uuid,
    pub causation_id: Option<Uuid>,
    pub detail: String,
}

type ViewRow = (
    Uuid,
    String,
    String,
    String,
    i64,
    SqlJson<Vec<Line>>,
    SqlJson<Address>,
    Option<String>,
    DateTime<Utc>,
    DateTime<Utc>,
    DateTime<Utc>,
);

/// An order with its saga timeline: a customer's own, or any for an admin.
#[utoipa::path(get, path = "/orders/{order_id}", tag = "orders",
    security(("bearer" = ["orders"]), ("bearer" = ["admin"])),
    params(("order_id" = Uuid, Path)),
    responses(
        (status = 200, body = OrderView),
        (status = 400, description = "The order id is not a UUID", content_type = "application/problem+json"),
        (status = 404, description = "No such order", content_type = "application/problem+json"),
    ))]
async fn get_order(
    caller: Caller,
    State(state): State<ApiState>,
    ValidPath(order_id): ValidPath<Uuid>,
) -> Result<Json<OrderView>, Problem> {
    let row: Option<ViewRow> = sqlx::query_as(
        "SELECT order_id, customer_id, status, currency, total_minor, lines, shipping_address,
                outcome_reason, placed_at, updated_at, saga_deadline
         FROM orders_view WHERE order_id = $1",
    )
    .bind(order_id)
    .fetch_optional(&state.pool)
    .await?;
    // Another customer's order is as unknown as a missing one: ids do not leak.
    let Some(row) = row.filter(|row| caller.may_access(&row.1)) else {
        return Err(no_order(order_id));
    };
    let mut history = store::history(&state.pool, order_id).await?;
    // Facts arrive over different topics; the timeline shows them in the order they happened.
    history.sort_by_key(|r| (r.occurred_at, r.sequence));
    let timeline = history
        .into_iter()
        .map(|r| TimelineEntry {
            at: r.occurred_at,
            service: r.producer,
            event_type: r.event_type,
            event_id: r.event_id,
            causation_id: r.causation_id,
            detail: r.data.0.detail(),
        })
        .collect();
    let (
        id,
        customer_id,
        status,
        currency,
        total_minor,
        lines,
        address,
        reason,
        placed_at,
        updated_at,
        deadline,
    ) = row;
    Ok(Json(OrderView {
        order_id: id,
        customer_id,
        status: OrderStatus::parse(&status).ok_or_else(Problem::internal)?,
        currency,
        total_minor,
        lines: lines.0,
        shipping_address: address.0,
        outcome_reason: reason,
        placed_at,
        updated_at,
        saga_deadline: deadline,
        timeline,
    }))
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

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
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
async fn list_orders(
    caller: Caller,
    State(state): State<ApiState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<OrderPage>, Problem> {
    let Query(query) =
        query.map_err(|rejection| Problem::invalid_field("query", rejection.body_text()))?;
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
        _ if caller.has(Scope::Admin) => query.customer_id,
        Some(other) if other != caller.subject() => {
            return Ok(Json(OrderPage {
                orders: Vec::new(),
                next_cursor: None,
            }));
        }
        _ => Some(caller.subject().to_owned()),
    };
    let mut orders: Vec<OrderSummary> = sqlx::query_as(
        "SELECT order_id, customer_id, status, currency, total_minor, placed_at, updated_at
             FROM orders_view
             WHERE ($1::text IS NULL OR customer_id = $1)
               AND ($2::text IS NULL OR status = $2)
               AND ($3::uuid IS NULL OR order_id < $3)
             ORDER BY order_id DESC LIMIT $4",
    )
    .bind(&customer)
    .bind(&query.status)
    .bind(query.cursor)
    .bind(limit + 1)
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

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    pub reason: Option<String>,
}

/// Cancels an order that has not shipped: every completed step is compensated. A customer
/// cancels their own orders only; an admin any.
#[utoipa::path(post, path = "/orders/{order_id}/cancel", tag = "orders",
    security(("bearer" = ["orders"]), ("bearer" = ["admin"])),
    params(("order_id" = Uuid, Path)),
    request_body(content = Option<CancelRequest>, description = "Optional reason"),
    responses(
        (status = 202, body = Accepted, description = "Cancellation under way"),
        (status = 400, description = "The order id is not a UUID, or malformed JSON", content_type = "application/problem+json"),
        (status = 404, description = "No such order", content_type = "application/problem+json"),
        (status = 413, description = "Body over 64 KiB", content_type = "application/problem+json"),
        (status = 415, description = "Body not sent as application/json", content_type = "application/problem+json"),
        (status = 422, description = "Invalid body (e.g. a reason over 500 characters)", content_type = "application/problem+json"),
        (status = 409, description = "Already shipped or cancelled", content_type = "application/problem+json"),
    ))]
async fn cancel_order(
    caller: Caller,
    State(state): State<ApiState>,
    ValidPath(order_id): ValidPath<Uuid>,
    body: Bytes,
) -> Result<Response, Problem> {
    let reason = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        service_runtime::json::parse::<CancelRequest>(&body)?.reason
    };
    let reason = reason.unwrap_or_else(|| "cancelled by the customer".to_owned());
    let owner = store::customer_of(&state.pool, order_id).await?;
    if !owner.is_some_and(|owner| caller.may_access(&owner)) {
        return Err(no_order(order_id));
    }
    let mut tx = state.pool.begin().await?;
    let (outcome, published) = orders::request_cancellation(&mut tx, order_id, &reason).await?;
    state.outbox.append(&mut tx, &published).await?;
    state.outbox.commit(tx).await?;
    match outcome {
        Cancellation::Requested(status) => {
            Ok((StatusCode::ACCEPTED, Json(Accepted { order_id, status })).into_response())
        }
        Cancellation::UnknownOrder => Err(no_order(order_id)),
        Cancellation::Refused(CancelRefused::AlreadyShipped) => Err(Problem::new(
            StatusCode::CONFLICT,
            "/problems/order-shipped",
            "The order has shipped",
        )
        .detail("a shipment was scheduled; the order can no longer be cancelled")),
        Cancellation::Refused(CancelRefused::AlreadyCancelled) => Err(Problem::new(
            StatusCode::CONFLICT,
            "/problems/order-cancelled",
            "The order is already cancelled",
        )),
    }
}

fn no_order(order_id: Uuid) -> Problem {
    Problem::not_found(format!("no order {order_id}"))
}
