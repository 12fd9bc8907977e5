//! `POST /orders/{order_id}/cancel`: cancel an order that has not shipped.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use service_runtime::problem::kind;
use service_runtime::{Caller, FieldErrors, Problem, ValidPath};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Accepted, ApiState, no_order};
use crate::domain::CancelRefused;
use crate::domain::new_order::Note;
use crate::orders::{self, Cancellation};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    /// Copied into the order's history and the events: at most 500 characters.
    #[schema(max_length = 500)]
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
#[tracing::instrument(name = "cancel_order", skip_all, fields(%order_id))]
pub(super) async fn cancel_order(
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
    let mut errors = FieldErrors::default();
    let reason = errors.parse("reason", reason.as_deref().map(Note::parse).transpose());
    errors.into_result()?;
    let reason = reason
        .flatten()
        .map_or_else(|| "cancelled by the customer".to_owned(), Note::into_inner);
    let mut tx = state.pool.begin().await?;
    let (outcome, published) =
        orders::request_cancellation(&mut tx, order_id, &reason, |owner| caller.may_access(owner))
            .await?;
    state.outbox.append(&mut tx, &published).await?;
    state.outbox.commit(tx).await?;
    match outcome {
        Cancellation::Requested(status) => {
            Ok((StatusCode::ACCEPTED, Json(Accepted { order_id, status })).into_response())
        }
        Cancellation::UnknownOrder => Err(no_order(order_id)),
        Cancellation::Refused(CancelRefused::AlreadyShipped) => Err(Problem::new(
            StatusCode::CONFLICT,
            kind::ORDER_SHIPPED,
            "The order has shipped",
        )
        .detail("a shipment was scheduled; the order can no longer be cancelled")),
        Cancellation::Refused(CancelRefused::AlreadyCancelled) => Err(Problem::new(
            StatusCode::CONFLICT,
            kind::ORDER_CANCELLED,
            "The order is already cancelled",
        )),
    }
}
