//! order-service's REST API, by route: place (`place.rs`, its body in `place_request.rs`),
//! read and list (`read.rs`), cancel (`cancel.rs`); the Idempotency-Key header is an
//! extractor of its own.

mod cancel;
mod idempotency_key;
mod place;
mod place_request;
mod read;

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use service_runtime::Problem;
use shared_events::Outbox;
use sqlx::PgPool;
use utoipa::{OpenApi, ToSchema};
use uuid::Uuid;

use crate::domain::OrderStatus;

pub use cancel::CancelRequest;
pub use idempotency_key::IdempotencyKey;
pub(crate) use read::order_views;
pub use read::{ListQuery, OrderPage, OrderSummary, OrderView, TimelineEntry};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "order-service",
        description = "Places orders and follows their saga."
    ),
    paths(
        place::place_order,
        read::get_order,
        read::list_orders,
        cancel::cancel_order
    )
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
        .route("/orders", post(place::place_order).get(read::list_orders))
        .route("/orders/{order_id}", get(read::get_order))
        .route("/orders/{order_id}/cancel", post(cancel::cancel_order))
        .with_state(state)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    pub order_id: Uuid,
    pub status: OrderStatus,
}

/// 202 with the order's id and `Location`; `Idempotent-Replayed` on a replay.
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

fn no_order(order_id: Uuid) -> Problem {
    Problem::not_found(format!("no order {order_id}"))
}
