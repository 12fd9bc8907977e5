//! The saga deadline: orders still in flight when their deadline passes are cancelled as if
//! the customer had asked. Safe with several replicas: each order is re-checked under its
//! lock, and a cancellation is requested at most once.

use std::time::Duration;

use chrono::Utc;
use shared_events::Outbox;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::error::Error;
use crate::orders;

pub struct DeadlineWatcher {
    pub pool: PgPool,
    pub outbox: Outbox,
    pub poll_interval: Duration,
}

impl DeadlineWatcher {
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut interval = tokio::time::interval(self.poll_interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                _ = interval.tick() => {}
            }
            if let Err(e) = self.sweep().await {
                tracing::warn!(error = %e, "saga deadline sweep failed; retrying");
            }
        }
    }

    async fn sweep(&self) -> Result<(), Error> {
        let due: Vec<(Uuid,)> = sqlx::query_as(
            "SELECT order_id FROM orders_view
             WHERE status NOT IN ('COMPLETED', 'CANCELLED', 'CANCELLING') AND saga_deadline <= now()
             ORDER BY saga_deadline LIMIT 100",
        )
        .fetch_all(&self.pool)
        .await?;
        for (order_id,) in due {
            let mut tx = self.pool.begin().await?;
            if let Some(published) = orders::enforce_deadline(&mut tx, order_id, Utc::now()).await?
            {
                self.outbox.append(&mut tx, &published).await?;
                tracing::info!(%order_id, "saga deadline passed; cancelling the order");
            }
            self.outbox.commit(tx).await?;
        }
        Ok(())
    }
}
