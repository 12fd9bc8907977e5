//! Per-order saga state that billing, inventory and shipping keep as JSON, one row per order
//! in a table shaped `(order_id uuid PRIMARY KEY, state jsonb NOT NULL, updated_at timestamptz)`.
//!
//! A handler locks the order's row before deciding, so two events of one order (arriving on
//! different topics, possibly handled by different replicas) are decided one after the other.

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

    /// Locks the order's row (creating it) and returns its state, the default if new. One
    /// statement: the no-op update on conflict is what takes the row lock.
    pub async fn lock<T: DeserializeOwned + Default + Send + Unpin + 'static>(
        &self,
        tx: &mut PgConnection,
        order_id: Uuid,
    ) -> Result<T, HandlerError> {
        let table = self.table;
        let (state,): (Json<Option<T>>,) = sqlx::query_as(AssertSqlSafe(format!(
            "INSERT INTO {table} AS t (order_id, state) VALUES ($1, 'null')
             ON CONFLICT (order_id) DO UPDATE SET state = t.state
             RETURNING state"
        )))
        .bind(order_id)
        .fetch_one(&mut *tx)
        .await?;
        Ok(state.0.unwrap_or_default())
    }

    pub async fn save<T: Serialize + Sync>(
        &self,
        tx: &mut PgConnection,
        order_id: Uuid,
        state: &T,
    ) -> Result<(), HandlerError> {
        let table = self.table;
        sqlx::query(AssertSqlSafe(format!(
            "UPDATE {table} SET state = $2, updated_at = now() WHERE order_id = $1"
        )))
        .bind(order_id)
        .bind(Json(state))
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
