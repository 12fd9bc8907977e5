//! `POST /orders` requests by customer and Idempotency-Key: a replay gets the original
//! answer. A key is its customer's own, so no customer can see or take another's.

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use sqlx::{PgConnection, PgExecutor, PgPool};
use uuid::Uuid;

use crate::error::Error;

/// A stored `POST /orders` request of `customer_id`, by its Idempotency-Key.
pub async fn idempotent_request<'e>(
    executor: impl PgExecutor<'e>,
    customer_id: &str,
    key: &str,
) -> Result<Option<(serde_json::Value, Uuid)>, Error> {
    let row = sqlx::query!(
        "SELECT request, order_id FROM idempotency_keys
         WHERE customer_id = $1 AND idempotency_key = $2",
        customer_id,
        key
    )
    .fetch_optional(executor)
    .await?;
    Ok(row.map(|row| (row.request, row.order_id)))
}

/// Claims `customer_id`'s `key` for `order_id`; `false` if another request claimed it
/// first.
pub async fn claim_idempotency_key(
    tx: &mut PgConnection,
    customer_id: &str,
    key: &str,
    request: &serde_json::Value,
    order_id: Uuid,
) -> Result<bool, Error> {
    let claimed = sqlx::query!(
        "INSERT INTO idempotency_keys (customer_id, idempotency_key, request, order_id)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT DO NOTHING",
        customer_id,
        key,
        request,
        order_id,
    )
    .execute(tx)
    .await?;
    Ok(claimed.rows_affected() == 1)
}

/// Deletes at most `limit` keys claimed before `cutoff` (the service prunes them by age, in
/// chunks: `shared_events::retention`).
pub fn delete_idempotency_keys_older(
    pool: &PgPool,
    cutoff: DateTime<Utc>,
    limit: i64,
) -> BoxFuture<'_, Result<u64, sqlx::Error>> {
    Box::pin(async move {
        let deleted = sqlx::query!(
            "DELETE FROM idempotency_keys WHERE ctid = ANY(ARRAY(
                 SELECT ctid FROM idempotency_keys WHERE created_at < $1 LIMIT $2))",
            cutoff,
            limit,
        )
        .execute(pool)
        .await?;
        Ok(deleted.rows_affected())
    })
}
