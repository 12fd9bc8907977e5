//! The saga deadline: orders still in flight when their deadline passes are cancelled as if
//! the customer had asked. Safe with several replicas: each order is re-checked under its
//! lock, and a cancellation is requested at most once.
//!
//! An order whose history cannot be read (a bug or a manual edit) is logged, counted and
//! skipped for the life of the process; it must not stop every other order's deadline.

use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;
use prometheus_client::metrics::counter::Counter;
use shared_events::{HandlerError, Outbox};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::error::Error;
use crate::orders;

pub struct DeadlineWatcher {
    pub pool: PgPool,
    pub outbox: Outbox,
    pub poll_interval: Duration,
    /// Orders skipped because their deadline can never be enforced.
    pub skipped: Counter,
}

impl DeadlineWatcher {
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut unenforceable = HashSet::new();
        let mut interval = tokio::time::interval(self.poll_interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                _ = interval.tick() => {}
            }
            if let Err(e) = shared_events::database::bounded(self.sweep(&mut unenforceable)).await {
                tracing::warn!(error = %e, "saga deadline sweep failed; retrying");
            }
        }
    }

    /// Enforces every due deadline except those of `unenforceable` orders, which it adds to.
    /// A transient failure ends the sweep; the next one starts over.
    async fn sweep(&self, unenforceable: &mut HashSet<Uuid>) -> Result<(), Error> {
        let skip: Vec<Uuid> = unenforceable.iter().copied().collect();
        let due = sqlx::query_scalar!(
            "SELECT order_id FROM orders_view
             WHERE status NOT IN ('COMPLETED', 'CANCELLED', 'CANCELLING') AND saga_deadline <= now()
               AND order_id <> ALL($1)
             ORDER BY saga_deadline LIMIT 100",
            &skip,
        )
        .fetch_all(&self.pool)
        .await?;
        for order_id in due {
            match self.enforce(order_id).await {
                Ok(()) => {}
                // The same classification the consumer applies: rejected is permanent.
                Err(e) => match HandlerError::from(e) {
                    HandlerError::Rejected(reason) => {
                        tracing::error!(%order_id, reason, "the saga deadline of this order cannot be enforced; skipping it");
                        self.skipped.inc();
                        unenforceable.insert(order_id);
                    }
                    HandlerError::Transient(reason) => {
                        tracing::warn!(%order_id, reason, "saga deadline sweep interrupted; retrying");
                        return Ok(());
                    }
                },
            }
        }
        Ok(())
    }

    async fn enforce(&self, order_id: Uuid) -> Result<(), Error> {
        let mut tx = self.pool.begin().await?;
        if let Some(published) = orders::enforce_deadline(&mut tx, order_id, Utc::now()).await? {
            self.outbox.append(&mut tx, &published).await?;
            tracing::info!(%order_id, "saga deadline passed; cancelling the order");
        }
        self.outbox.commit(tx).await?;
        Ok(())
    }
}
