//! `POST /orders`: place an order, once per Idempotency-Key.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{SubsecRound, Utc};
use service_runtime::problem::kind;
use service_runtime::{Caller, Problem, ValidJson};
use sqlx::PgPool;
use uuid::Uuid;

use super::idempotency_key::IdempotencyKey;
use super::place_request::PlaceOrder;
use super::{Accepted, ApiState, accepted};
use crate::domain::new_order::{Catalog, CatalogPrice};
use crate::orders;
use crate::store;

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
#[tracing::instrument(name = "place_order", skip_all,
    fields(customer_id = %request.customer_id, order_id = tracing::field::Empty))]
pub(super) async fn place_order(
    caller: Caller,
    State(state): State<ApiState>,
    IdempotencyKey(key): IdempotencyKey,
    ValidJson(request): ValidJson<PlaceOrder>,
) -> Result<Response, Problem> {
    // A customer orders for themselves (the body repeats the token's subject); an admin may
    // order for anyone. So an idempotency key, whose replay needs the same body, never
    // answers one customer with another's order.
    if !caller.may_access(&request.customer_id) {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            kind::NOT_YOUR_CUSTOMER_ID,
            "Orders are placed for the token's subject",
        )
        .detail("customer_id must be the subject of the access token"));
    }
    let request_json = serde_json::to_value(&request).map_err(Problem::internal_caused_by)?;
    // The key is looked up only when it matters (claiming it failed, or the request is
    // invalid now though it may have been accepted before), not on every request.
    let product_ids: Vec<String> = request.items.iter().map(|i| i.product_id.clone()).collect();
    let catalog = Catalog(
        store::catalog_prices(&state.pool, &product_ids)
            .await?
            .into_iter()
            .map(|row| {
                let price = CatalogPrice {
                    unit_price_minor: row.unit_price_minor,
                    currency: row.currency,
                };
                (row.product_id, price)
            })
            .collect(),
    );
    let order = match request.parse(&catalog) {
        Ok(order) => order,
        Err(errors) => {
            return match replay(&state.pool, &request.customer_id, &key, &request_json).await? {
                Some(answer) => Ok(answer),
                None => Err(errors.into()),
            };
        }
    };
    let order_id = Uuid::now_v7();
    tracing::Span::current().record("order_id", tracing::field::display(order_id));
    let placed = order.placed((Utc::now() + state.saga_timeout).trunc_subsecs(3));
    let mut tx = state.pool.begin().await?;
    let claimed =
        store::claim_idempotency_key(&mut tx, &placed.customer_id, &key, &request_json, order_id)
            .await?;
    if !claimed {
        // The key was used before (or by a concurrent request): answer as it was answered.
        drop(tx);
        return replay(&state.pool, &placed.customer_id, &key, &request_json)
            .await?
            .ok_or_else(Problem::internal);
    }
    let published = orders::place(&mut tx, order_id, placed).await?;
    state.outbox.append(&mut tx, &[published]).await?;
    state.outbox.commit(tx).await?;
    tracing::info!("order placed");
    Ok(accepted(order_id, false))
}

/// The original answer for a key `customer_id` already used with this body; 422 if they
/// used it with another.
async fn replay(
    pool: &PgPool,
    customer_id: &str,
    key: &str,
    request: &serde_json::Value,
) -> Result<Option<Response>, Problem> {
    match store::idempotent_request(pool, customer_id, key).await? {
        None => Ok(None),
        Some((stored, order_id)) if &stored == request => Ok(Some(accepted(order_id, true))),
        Some(_) => Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            kind::IDEMPOTENCY_KEY_REUSED,
            "Idempotency-Key already used with a different body",
        )
        .detail("use a new Idempotency-Key for a different order")
        .with("field", "Idempotency-Key".into())),
    }
}
