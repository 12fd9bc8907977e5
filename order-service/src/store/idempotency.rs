//! `POST /orders` requests by Idempotency-Key: a replay gets the original answer.

use sqlx::types::Json;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::error::Error;

/// A stored `POST /orders` request, by its Idempotency-Key.
pub async fn idempotent_request<'e>(
    executor: impl PgExecutor<'e>,
    key: &str,
) -> Result<Option<(serde_json::Value, Uuid)>, Error> {
    let row: Option<(Json<serde_json::Value>, Uuid)> =
        sqlx::query_as("SELECT request, order_id FROM idempotency_keys WHERE idempotency_key = $1")
            .bind(key)
            .fetch_optional(executor)
            .await?;
    Ok(row.map(|(request, order_id)| (request.0, order_id)))
}

/// Claims `key` for `order_id`; `false` if another request claimed it first.
pub async fn claim_idempotency_key(
    tx: &mut PgConnection,
    key: &str,
    request: &serde_json::Value,
    order_id: Uuid,
) -> Result<bool, Error> {
    let claimed = sqlx::query(
        "INSERT INTO idempotency_keys (idempotency_key, request, order_id) VALUES ($1, $2, $3)
         ON CONFLICT DO NOTHING",
    )
    .bind(key)
    .bind(Json(request))
    .bind(order_id)
    .execute(tx)
    .await?;
    Ok(claimed.rows_affected() == 1)
}
