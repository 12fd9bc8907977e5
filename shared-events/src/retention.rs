//! Pruning of rows that only guard against repeats: the consumers' dedup record
//! (`processed_events`) and, in a service that has them, idempotency keys. Without it they
//! grow forever.
//!
//! A dedup row matters only while its record can still be delivered again: until the topic
//! drops the record (its `retention.ms`; Kafka's default is 7 days), or a group's offsets
//! are reset to the earliest. Keep the retention well above the topics', which is why the
//! default is twice Kafka's default.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::error::Error;

/// Most rows one DELETE removes, so that pruning a large backlog never holds a long
/// transaction or a long lock.
const CHUNK: i64 = 10_000;

#[derive(Debug, Clone, clap::Args)]
pub struct RetentionConfig {
    /// How long the record that an event was applied is kept (dedup). Keep it above the
    /// topics' retention (Kafka's default: 168 hours).
    #[arg(
        long = "processed-events-retention-hours",
        env = "PROCESSED_EVENTS_RETENTION_HOURS",
        default_value_t = 336,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub processed_events_hours: u64,
    /// How often old rows are pruned.
    #[arg(
        long = "prune-interval-secs",
        env = "PRUNE_INTERVAL_SECS",
        default_value_t = 3_600,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub interval_secs: u64,
}

/// Deletes at most `limit` rows of one table older than `cutoff` and returns how many: one
/// checked statement, written beside the table's other SQL (`DELETE ... WHERE ctid = ANY(ARRAY(
/// SELECT ctid ... WHERE <timestamp> < $1 LIMIT $2))`).
pub type DeleteOlder =
    for<'a> fn(&'a PgPool, DateTime<Utc>, i64) -> BoxFuture<'a, Result<u64, sqlx::Error>>;

/// A table whose rows may go once they are older than `retention`.
#[derive(Debug, Clone)]
pub struct PruneTarget {
    /// For the logs.
    pub table: &'static str,
    pub retention: Duration,
    pub delete_older: DeleteOlder,
}

impl PruneTarget {
    /// The consumers' dedup record.
    pub fn processed_events(config: &RetentionConfig) -> Self {
        Self {
            table: "processed_events",
            retention: Duration::from_secs(config.processed_events_hours * 3_600),
            delete_older: delete_processed_events,
        }
    }

    /// Deletes the rows older than the retention, as of `now`, a chunk at a time; returns
    /// how many.
    pub async fn prune(&self, pool: &PgPool, now: DateTime<Utc>) -> Result<u64, Error> {
        let cutoff = chrono::Duration::from_std(self.retention)
            .ok()
            .and_then(|retention| now.checked_sub_signed(retention));
        let Some(cutoff) = cutoff else {
            return Ok(0); // a retention longer than time itself
        };
        let mut pruned = 0;
        loop {
            let deleted = (self.delete_older)(pool, cutoff, CHUNK).await?;
            pruned += deleted;
            if deleted < CHUNK as u64 {
                return Ok(pruned);
            }
        }
    }
}

fn delete_processed_events(
    pool: &PgPool,
    cutoff: DateTime<Utc>,
    limit: i64,
) -> BoxFuture<'_, Result<u64, sqlx::Error>> {
    Box::pin(async move {
        let deleted = sqlx::query!(
            "DELETE FROM processed_events WHERE ctid = ANY(ARRAY(
                 SELECT ctid FROM processed_events WHERE processed_at < $1 LIMIT $2))",
            cutoff,
            limit,
        )
        .execute(pool)
        .await?;
        Ok(deleted.rows_affected())
    })
}

/// Prunes `targets` every `interval` until shutdown. A failed pass is logged and tried
/// again at the next interval: pruning late costs only disk.
pub async fn prune_until_stopped(
    pool: PgPool,
    targets: Vec<PruneTarget>,
    interval: Duration,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            _ = ticks.tick() => {}
        }
        for target in &targets {
            match crate::database::bounded(target.prune(&pool, Utc::now())).await {
                Ok(0) => {}
                Ok(pruned) => {
                    tracing::info!(table = target.table, pruned, "pruned rows past retention")
                }
                Err(e) => {
                    tracing::warn!(table = target.table, error = %e, "pruning failed; trying again later")
                }
            }
        }
    }
}
