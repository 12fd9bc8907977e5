//! An operator's actions on one order (admin only): nudge it (`POST
//! /sagas/{order_id}/nudge`) or cancel it (`POST /sagas/{order_id}/cancel`). Each names the
//! operator (the token's subject) and the reason in the order's history, is safe to repeat,
//! and answers 409 when the order's state makes it meaningless.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use service_runtime::{Admin, FieldErrors, Problem, ValidJson, ValidPath};
use utoipa::ToSchema;
use uuid::Uuid;

use super::OperateState;
use crate::domain::validation::MAX_NOTE;
use crate::domain::{OperatorRefused, OrderStatus};
use crate::orders::{self, Operated, OperatorRefusal};

/// Why the operator acts: kept in the order's history with their name.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OperatorRequest {
    /// 1 to 500 characters.
    #[schema(min_length = 1, max_length = 500)]
    pub reason: String,
}

/// What the action did.
#[derive(Debug, Serialize, ToSchema)]
pub struct OperatorAction {
    pub order_id: Uuid,
    /// The order's status after the action.
    pub status: OrderStatus,
    /// The event the action sent: the one republished by a nudge, the
    /// `OrderCancellationRequested` of a cancellation.
    pub event_id: Uuid,
    pub event_type: String,
}

/// Republishes the order's latest event under its own event id, so that a delivery that
/// was lost or skipped happens again; consumers that already have it ignore it.
#[utoipa::path(post, path = "/sagas/{order_id}/nudge", tag = "operate",
    security(("bearer" = ["admin"])),
    params(("order_id" = Uuid, Path)),
    request_body = OperatorRequest,
    responses(
        (status = 202, body = OperatorAction, description = "The event is queued again"),
        (status = 400, description = "The order id is not a UUID, or malformed JSON", content_type = "application/problem+json"),
        (status = 403, description = "Not an operator", content_type = "application/problem+json"),
        (status = 404, description = "No such order", content_type = "application/problem+json"),
        (status = 413, description = "Body over 64 KiB", content_type = "application/problem+json"),
        (status = 415, description = "Body not sent as application/json", content_type = "application/problem+json"),
        (status = 409, description = "The order is over, or its latest event is still queued", content_type = "application/problem+json"),
        (status = 422, description = "No reason, or one over 500 characters", content_type = "application/problem+json"),
    ))]
#[tracing::instrument(name = "nudge_saga", skip_all, fields(%order_id))]
pub(super) async fn nudge(
    Admin(operator): Admin,
    State(state): State<OperateState>,
    ValidPath(order_id): ValidPath<Uuid>,
    ValidJson(request): ValidJson<OperatorRequest>,
) -> Result<(StatusCode, Json<OperatorAction>), Problem> {
    let reason = checked_reason(request)?;
    let mut tx = state.pool.begin().await?;
    let outcome = orders::nudge(
        &mut tx,
        &state.outbox,
        order_id,
        operator.subject(),
        &reason,
    )
    .await?;
    let operated = outcome.map_err(|refusal| refused(order_id, refusal))?;
    state.outbox.commit(tx).await?;
    tracing::info!(%order_id, operator = operator.subject(), reason, event_id = %operated.event_id, "operator nudged the saga");
    Ok(accepted(order_id, operated))
}

/// Cancels a stuck order now, as its saga deadline would: every completed step is
/// compensated.
#[utoipa::path(post, path = "/sagas/{order_id}/cancel", tag = "operate",
    security(("bearer" = ["admin"])),
    params(("order_id" = Uuid, Path)),
    request_body = OperatorRequest,
    responses(
        (status = 202, body = OperatorAction, description = "Cancellation under way"),
        (status = 400, description = "The order id is not a UUID, or malformed JSON", content_type = "application/problem+json"),
        (status = 403, description = "Not an operator", content_type = "application/problem+json"),
        (status = 404, description = "No such order", content_type = "application/problem+json"),
        (status = 413, description = "Body over 64 KiB", content_type = "application/problem+json"),
        (status = 415, description = "Body not sent as application/json", content_type = "application/problem+json"),
        (status = 409, description = "Shipped, over, or already cancelling", content_type = "application/problem+json"),
        (status = 422, description = "No reason, or one over 500 characters", content_type = "application/problem+json"),
    ))]
#[tracing::instrument(name = "cancel_saga", skip_all, fields(%order_id))]
pub(super) async fn cancel(
    Admin(operator): Admin,
    State(state): State<OperateState>,
    ValidPath(order_id): ValidPath<Uuid>,
    ValidJson(request): ValidJson<OperatorRequest>,
) -> Result<(StatusCode, Json<OperatorAction>), Problem> {
    let reason = checked_reason(request)?;
    let mut tx = state.pool.begin().await?;
    let outcome =
        orders::cancel_by_operator(&mut tx, order_id, operator.subject(), &reason).await?;
    let (operated, published) = outcome.map_err(|refusal| refused(order_id, refusal))?;
    state.outbox.append(&mut tx, &published).await?;
    state.outbox.commit(tx).await?;
    tracing::info!(%order_id, operator = operator.subject(), reason, "operator cancelled the saga");
    Ok(accepted(order_id, operated))
}

fn checked_reason(request: OperatorRequest) -> Result<String, Problem> {
    let reason = request.reason.trim().to_owned();
    let mut errors = FieldErrors::default();
    errors.check(!reason.is_empty(), "reason", "must say why");
    errors.check(
        reason.chars().count() <= MAX_NOTE,
        "reason",
        format!("must be at most {MAX_NOTE} characters"),
    );
    errors.into_result()?;
    Ok(reason)
}

fn accepted(order_id: Uuid, operated: Operated) -> (StatusCode, Json<OperatorAction>) {
    let action = OperatorAction {
        order_id,
        status: operated.status,
        event_id: operated.event_id,
        event_type: operated.event_type,
    };
    (StatusCode::ACCEPTED, Json(action))
}

fn refused(order_id: Uuid, refusal: OperatorRefusal) -> Problem {
    let conflict =
        |kind: &'static str, title: &'static str| Problem::new(StatusCode::CONFLICT, kind, title);
    match refusal {
        OperatorRefusal::UnknownOrder => Problem::not_found(format!("no order {order_id}")),
        OperatorRefusal::Meaningless(OperatorRefused::Over) => {
            conflict("/problems/order-over", "The order is over")
                .detail("it is completed or cancelled: nothing waits")
        }
        OperatorRefusal::Meaningless(OperatorRefused::Shipped) => {
            conflict("/problems/order-shipped", "The order has shipped")
                .detail("a shipment was scheduled; the order can no longer be cancelled")
        }
        OperatorRefusal::Meaningless(OperatorRefused::AlreadyCancelling) => conflict(
            "/problems/order-cancelling",
            "The order is already being cancelled",
        )
        .detail(
            "compensations are under way; if one is stuck, nudge the order or redrive its \
             dead letters",
        ),
        OperatorRefusal::StillQueued { event_type } => conflict(
            "/problems/event-still-queued",
            "The latest event is still queued",
        )
        .detail(format!(
            "{event_type} has not left order-service's outbox yet; the relay will \
                     publish it (orderflow_outbox_oldest_age_seconds says if it cannot)"
        )),
    }
}
