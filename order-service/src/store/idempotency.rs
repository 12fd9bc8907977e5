//! `POST /orders` requests by Idempotency-Key: a replay gets the original answer.

use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::error::Error;

/// A stored `POST /orders` request, by its Idempotency-Key.
pub async fn idempotent_request<'e>(
    executor: impl PgExecutor<'e>,
    key: &str,
) -> Result<Option<(serde_json::Value, Uuid)>, Error> {
    let row = sqlx::query!(
        "SELECT request, order_id FROM idempotency_keys WHERE idempotency_key = $1",
        key
    )
    .fetch_optional(executor)
    .await?;
    Ok(row.map(|row| (row.request, row.order_id)))
}

/// Claims `key` for `order_id`; `false` if another request claimed it first.
pub async fn claim_idempotency_key(
    tx: &mut PgConnection,
    key: &str,
    request: &serde_json::Value,
    order_id: Uuid,
) -> Result<bool, Error> {
    let claimed = sqlx::query!(
        "INSERT INTO idempotency_keys (idempotency_key, request, order_id) VALUES ($1, $2, $3)
         ON CONFLICT DO NOTHING",
        key,
        request,
        order_id,
    )
    .execute(tx)
    .await?;
    Ok(claimed.rows_affected() == 1)
}
