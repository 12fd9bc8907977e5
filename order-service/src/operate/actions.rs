//! An operator's actions on one order (admin only): redrive its dead letters (`POST
//! /sagas/{order_id}/redrive`), nudge it (`POST /sagas/{order_id}/nudge`) or cancel it
//! (`POST /sagas/{order_id}/cancel`). Each names the operator (the token's subject) and the
//! reason in the order's history, is safe to repeat, and answers 409 when the order's state
//! makes it meaningless.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use service_runtime::problem::kind;
use service_runtime::{Admin, FieldErrors, Problem, ValidJson, ValidPath};
use shared_events::TopicNames;
use shared_events::contracts::DeadLetterPosition;
use sqlx::PgConnection;
use utoipa::ToSchema;
use uuid::Uuid;

use super::OperateState;
use super::dead_letters::{DeadLetterId, DeadLetterView};
use crate::domain::new_order::Note;
use crate::domain::{OperatorRefused, OrderStatus};
use crate::orders::{self, Operated, Operation, OperatorRefusal};

/// Why the operator acts: kept in the order's history with their name.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OperatorRequest {
    /// 1 to 500 characters.
    #[schema(min_length = 1, max_length = 500)]
    pub reason: String,
}

/// Why, and what the customer is told.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    /// The operator's reason, for admins only. 1 to 500 characters.
    #[schema(min_length = 1, max_length = 500)]
    pub reason: String,
    /// What the customer reads: "cancelled by the shop: <this>". Without it, only
    /// "cancelled by the shop". 1 to 500 characters.
    #[schema(min_length = 1, max_length = 500)]
    pub customer_reason: Option<String>,
}

/// Why, and which dead letters: all of the order's when none are named.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedriveRequest {
    /// 1 to 500 characters.
    #[schema(min_length = 1, max_length = 500)]
    pub reason: String,
    /// The dead letters to redrive, as `GET /sagas/stuck` lists them.
    pub dead_letters: Option<Vec<DeadLetterId>>,
}

/// What the action did.
#[derive(Debug, Serialize, ToSchema)]
pub struct OperatorAction {
    pub order_id: Uuid,
    /// The order's status after the action.
    pub status: OrderStatus,
    /// The event the action sent: the `DeadLetterRedriveRequested` of a redrive, the event
    /// a nudge republished, the `OrderCancellationRequested` of a cancellation.
    pub event_id: Uuid,
    pub event_type: String,
    /// The dead letters a redrive sends back to their topics (none for the other actions).
    pub dead_letters: Vec<DeadLetterView>,
}

/// Sends dead letters of the order back to their topics, once their cause is fixed: each is
/// copied back by the service that publishes its topic, under its own event id, so the
/// consumers that already have it skip it.
#[utoipa::path(post, path = "/sagas/{order_id}/redrive", tag = "operate",
    security(("bearer" = ["admin"])),
    params(("order_id" = Uuid, Path)),
    request_body = RedriveRequest,
    responses(
        (status = 202, body = OperatorAction, description = "The redrive is requested"),
        (status = 400, description = "The order id is not a UUID, or malformed JSON", content_type = "application/problem+json"),
        (status = 403, description = "Not an operator", content_type = "application/problem+json"),
        (status = 404, description = "No such order", content_type = "application/problem+json"),
        (status = 409, description = "The order has no dead letters, they were redriven before, the ones left failed again after a redrive, or its history cannot be read", content_type = "application/problem+json"),
        (status = 413, description = "Body over 64 KiB", content_type = "application/problem+json"),
        (status = 415, description = "Body not sent as application/json", content_type = "application/problem+json"),
        (status = 422, description = "No reason, one over 500 characters or with a newline or control character, or a dead letter that is not the order's", content_type = "application/problem+json"),
        (status = 503, description = "The broker did not list the dead letters in time", content_type = "application/problem+json"),
    ))]
#[tracing::instrument(name = "redrive_saga", skip_all, fields(%order_id))]
pub(super) async fn redrive(
    Admin(operator): Admin,
    State(state): State<OperateState>,
    ValidPath(order_id): ValidPath<Uuid>,
    ValidJson(request): ValidJson<RedriveRequest>,
) -> Result<(StatusCode, Json<OperatorAction>), Problem> {
    let reason = checked_reason(&request.reason)?;
    {
        let mut tx = state.pool.begin().await?;
        let operable = orders::operable(&mut tx, order_id).await?;
        operable.map_err(|refusal| refused(order_id, refusal))?;
    }
    let letters = state.dead_letters_of(order_id).await?;
    let named = request.dead_letters.is_some();
    let chosen = choose(letters, request.dead_letters)?;
    let before = orders::redriven(&mut *state.pool.acquire().await?, order_id).await?;
    let chosen = not_redriven(&state.names, chosen, &before, named)?;
    let positions = chosen
        .iter()
        .filter_map(|letter| letter.position(&state.names))
        .collect();
    let operated = carry_out(&state, order_id, async |tx| {
        orders::request_redrive(tx, order_id, operator.subject(), &reason, positions).await
    })
    .await?;
    tracing::info!(%order_id, operator = operator.subject(), reason, redriven = chosen.len(), "operator asked for a redrive");
    Ok(accepted(order_id, operated, chosen))
}

/// The dead letters `wanted` names (all when `None`) among the order's `letters`: 409 if
/// the order has none, 422 for one that is not the order's.
fn choose(
    letters: Vec<DeadLetterView>,
    wanted: Option<Vec<DeadLetterId>>,
) -> Result<Vec<DeadLetterView>, Problem> {
    if letters.is_empty() {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            kind::NO_DEAD_LETTERS,
            "The order has no dead letters",
        )
        .detail("no record of this order is in a dead-letter topic: nothing to redrive"));
    }
    let Some(wanted) = wanted else {
        return Ok(letters);
    };
    let mut errors = FieldErrors::default();
    errors.check(
        !wanted.is_empty(),
        "dead_letters",
        "name at least one, or leave it out for all",
    );
    for (i, id) in wanted.iter().enumerate() {
        errors.check(
            letters.iter().any(|letter| letter.is(id)),
            &format!("dead_letters[{i}]"),
            "not a dead letter of this order",
        );
    }
    errors.into_result()?;
    Ok(letters
        .into_iter()
        .filter(|letter| wanted.iter().any(|id| letter.is(id)))
        .collect())
}

/// Of the `chosen` dead letters, those to redrive now: never one redriven `before` (409 when
/// it is named); and, unless `named`, no record that failed again after a redrive (409
/// when only those are left): each click would send them once more to fail again.
fn not_redriven(
    names: &TopicNames,
    chosen: Vec<DeadLetterView>,
    before: &[DeadLetterPosition],
    named: bool,
) -> Result<Vec<DeadLetterView>, Problem> {
    let was_redriven = |letter: &DeadLetterView| {
        letter
            .position(names)
            .is_some_and(|position| before.contains(&position))
    };
    let redriven = chosen.iter().filter(|letter| was_redriven(letter)).count();
    if named && redriven > 0 {
        return Err(already_redriven().detail(format!(
            "{redriven} of the dead letters named were redriven before"
        )));
    }
    let (failed_again, fresh): (Vec<_>, Vec<_>) = chosen
        .into_iter()
        .filter(|letter| !was_redriven(letter))
        .partition(|letter| !named && letter.failed_again_after.is_some());
    if !fresh.is_empty() {
        return Ok(fresh);
    }
    if failed_again.is_empty() {
        return Err(already_redriven()
            .detail("every dead letter of this order was redriven before; none is new"));
    }
    Err(Problem::new(
        StatusCode::CONFLICT,
        kind::FAILED_AGAIN,
        "The dead letters left failed again after a redrive",
    )
    .detail(format!(
        "{} record(s) were sent again and failed again: fix the cause first, then name \
         them in dead_letters to send them once more",
        failed_again.len()
    )))
}

fn already_redriven() -> Problem {
    Problem::new(
        StatusCode::CONFLICT,
        kind::ALREADY_REDRIVEN,
        "Already redriven",
    )
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
        (status = 409, description = "The order is over, its latest event is still queued, or its history cannot be read", content_type = "application/problem+json"),
        (status = 422, description = "No reason, one over 500 characters, or one with a newline or control character", content_type = "application/problem+json"),
    ))]
#[tracing::instrument(name = "nudge_saga", skip_all, fields(%order_id))]
pub(super) async fn nudge(
    Admin(operator): Admin,
    State(state): State<OperateState>,
    ValidPath(order_id): ValidPath<Uuid>,
    ValidJson(request): ValidJson<OperatorRequest>,
) -> Result<(StatusCode, Json<OperatorAction>), Problem> {
    let reason = checked_reason(&request.reason)?;
    let operated = carry_out(&state, order_id, async |tx| {
        orders::nudge(tx, &state.outbox, order_id, operator.subject(), &reason).await
    })
    .await?;
    tracing::info!(%order_id, operator = operator.subject(), reason, event_id = %operated.event_id, "operator nudged the saga");
    Ok(accepted(order_id, operated, Vec::new()))
}

/// Cancels a stuck order now, as its saga deadline would: every completed step is
/// compensated.
#[utoipa::path(post, path = "/sagas/{order_id}/cancel", tag = "operate",
    security(("bearer" = ["admin"])),
    params(("order_id" = Uuid, Path)),
    request_body = CancelRequest,
    responses(
        (status = 202, body = OperatorAction, description = "Cancellation under way"),
        (status = 400, description = "The order id is not a UUID, or malformed JSON", content_type = "application/problem+json"),
        (status = 403, description = "Not an operator", content_type = "application/problem+json"),
        (status = 404, description = "No such order", content_type = "application/problem+json"),
        (status = 413, description = "Body over 64 KiB", content_type = "application/problem+json"),
        (status = 415, description = "Body not sent as application/json", content_type = "application/problem+json"),
        (status = 409, description = "Shipped, over, already cancelling, or its history cannot be read", content_type = "application/problem+json"),
        (status = 422, description = "No reason, or a reason or customer_reason over 500 characters or with a newline or control character", content_type = "application/problem+json"),
    ))]
#[tracing::instrument(name = "cancel_saga", skip_all, fields(%order_id))]
pub(super) async fn cancel(
    Admin(operator): Admin,
    State(state): State<OperateState>,
    ValidPath(order_id): ValidPath<Uuid>,
    ValidJson(request): ValidJson<CancelRequest>,
) -> Result<(StatusCode, Json<OperatorAction>), Problem> {
    let reason = checked_reason(&request.reason)?;
    let customer_reason = request
        .customer_reason
        .as_deref()
        .map(|told| checked_text("customer_reason", told))
        .transpose()?;
    let operated = carry_out(&state, order_id, async |tx| {
        let told = customer_reason.as_deref();
        orders::cancel_by_operator(tx, order_id, operator.subject(), &reason, told).await
    })
    .await?;
    tracing::info!(%order_id, operator = operator.subject(), reason, "operator cancelled the saga");
    Ok(accepted(order_id, operated, Vec::new()))
}

/// Carries out one operator action in one transaction: the order's history and the events
/// the action publishes commit together, or the refusal becomes the answer.
async fn carry_out(
    state: &OperateState,
    order_id: Uuid,
    action: impl AsyncFnOnce(&mut PgConnection) -> Result<Operation, crate::Error>,
) -> Result<Operated, Problem> {
    let mut tx = state.pool.begin().await?;
    let (operated, published) = action(&mut tx)
        .await?
        .map_err(|refusal| refused(order_id, refusal))?;
    state.outbox.append(&mut tx, &published).await?;
    state.outbox.commit(tx).await?;
    Ok(operated)
}

pub(super) fn checked_reason(reason: &str) -> Result<String, Problem> {
    checked_text("reason", reason)
}

/// An operator's text in `field`, trimmed: 1 to 500 characters on one line. (Newlines and
/// control characters would forge lines in logs and timelines.)
fn checked_text(field: &str, text: &str) -> Result<String, Problem> {
    let text = text.trim().to_owned();
    let mut errors = FieldErrors::default();
    errors.check(!text.is_empty(), field, "must say why");
    errors.check(
        !text.chars().any(char::is_control),
        field,
        "must be one line without control characters",
    );
    errors.parse(field, Note::parse(&text));
    errors.into_result()?;
    Ok(text)
}

fn accepted(
    order_id: Uuid,
    operated: Operated,
    dead_letters: Vec<DeadLetterView>,
) -> (StatusCode, Json<OperatorAction>) {
    let action = OperatorAction {
        order_id,
        status: operated.status,
        event_id: operated.event_id,
        event_type: operated.event_type,
        dead_letters,
    };
    (StatusCode::ACCEPTED, Json(action))
}

fn refused(order_id: Uuid, refusal: OperatorRefusal) -> Problem {
    let conflict =
        |kind: &'static str, title: &'static str| Problem::new(StatusCode::CONFLICT, kind, title);
    match refusal {
        OperatorRefusal::UnknownOrder => Problem::not_found(format!("no order {order_id}")),
        OperatorRefusal::Meaningless(OperatorRefused::Over) => {
            conflict(kind::ORDER_OVER, "The order is over")
                .detail("it is completed or cancelled: nothing waits")
        }
        OperatorRefusal::Meaningless(OperatorRefused::Shipped) => {
            conflict(kind::ORDER_SHIPPED, "The order has shipped")
                .detail("a shipment was scheduled; the order can no longer be cancelled")
        }
        OperatorRefusal::Meaningless(OperatorRefused::AlreadyCancelling) => conflict(
            kind::ORDER_CANCELLING,
            "The order is already being cancelled",
        )
        .detail(
            "compensations are under way; if one is stuck, nudge the order or redrive its \
             dead letters",
        ),
        OperatorRefusal::AlreadyRedriven => already_redriven()
            .detail("another redrive of these dead letters was asked for meanwhile"),
        OperatorRefusal::Unreadable { reason } => conflict(
            kind::UNREADABLE_HISTORY,
            "The order's history cannot be read",
        )
        .detail(format!(
            "{reason}; repair it first (the order's dead letters would fail again)"
        )),
        OperatorRefusal::StillQueued { event_type } => {
            conflict(kind::EVENT_STILL_QUEUED, "The latest event is still queued").detail(format!(
                "{event_type} has not left order-service's outbox yet; the relay will \
                     publish it (orderflow_outbox_oldest_age_seconds says if it cannot)"
            ))
        }
    }
}
