//! Per-order saga state that billing, inventory and shipping keep as JSON, one row per order
//! in a table shaped `(order_id uuid PRIMARY KEY, state jsonb NOT NULL, updated_at timestamptz)`.
//!
//! A handler locks the rows of every order in its batch before deciding, so two events of one
//! order (arriving on different topics, possibly handled by different replicas) are decided
//! one after the other.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, PgConnection, PgExecutor};
use uuid::Uuid;

use crate::consumer::HandlerError;

/// One saga-state table. The name is a constant of the service, never user input.
#[derive(Debug, Clone, Copy)]
pub struct SagaStateTable {
    table: &'static str,
}

impl SagaStateTable {
    pub const fn new(table: &'static str) -> Self {
        Self { table }
    }

    /// Locks the rows of `order_ids` (creating missing ones) in order-id order, so that
    /// batches sharing orders queue instead of deadlocking, and returns each order's state,
    /// the default if new. One statement: the no-op update on conflict takes the lock.
    ///
    /// A stored state that no longer parses is a permanent failure: the batch is replayed
    /// record by record and only that order's events are dead-lettered.
    pub async fn lock_all<T: DeserializeOwned + Default>(
        &self,
        tx: &mut PgConnection,
        order_ids: impl IntoIterator<Item = Uuid>,
    ) -> Result<BTreeMap<Uuid, T>, HandlerError> {
        let ids: Vec<Uuid> = order_ids
            .into_iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let table = self.table;
        let rows: Vec<(Uuid, Json<serde_json::Value>)> = sqlx::query_as(AssertSqlSafe(format!(
            "INSERT INTO {table} AS t (order_id, state)
             SELECT id, 'null' FROM UNNEST($1::uuid[]) AS id ORDER BY id
             ON CONFLICT (order_id) DO UPDATE SET state = t.state
             RETURNING order_id, state"
        )))
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
        rows.into_iter()
            .map(|(order_id, Json(state))| {
                let state: Option<T> = serde_json::from_value(state).map_err(|e| {
                    HandlerError::Rejected(format!(
                        "the saga state of order {order_id} in {table} does not parse: {e}"
                    ))
                })?;
                Ok((order_id, state.unwrap_or_default()))
            })
            .collect()
    }

    /// Writes the states in `after` that differ from `before`, in one statement.
    pub async fn save_changed<T: Serialize + PartialEq>(
        &self,
        tx: &mut PgConnection,
        before: &BTreeMap<Uuid, T>,
        after: &BTreeMap<Uuid, T>,
    ) -> Result<(), HandlerError> {
        let mut ids = Vec::new();
        let mut states = Vec::new();
        for (order_id, state) in after {
            if before.get(order_id) != Some(state) {
                ids.push(*order_id);
                states.push(Json(state));
            }
        }
        if ids.is_empty() {
            return Ok(());
        }
        let table = self.table;
        sqlx::query(AssertSqlSafe(format!(
            "UPDATE {table} AS t SET state = v.state, updated_at = now()
             FROM UNNEST($1::uuid[], $2::jsonb[]) AS v(order_id, state)
             WHERE t.order_id = v.order_id"
        )))
        .bind(ids)
        .bind(states)
        .execute(tx)
        .await?;
        Ok(())
    }

    /// The order's state for reading (no lock); `None` if the service never heard of it.
    pub async fn get<'e, T: DeserializeOwned + Send + Unpin + 'static>(
        &self,
        executor: impl PgExecutor<'e>,
        order_id: Uuid,
    ) -> Result<Option<T>, sqlx::Error> {
        let table = self.table;
        let row: Option<(Json<Option<T>>,)> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT state FROM {table} WHERE order_id = $1"
        )))
        .bind(order_id)
        .fetch_optional(executor)
        .await?;
        Ok(row.and_then(|(state,)| state.0))
    }
}
