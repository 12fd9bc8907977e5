//! The relay's reads of the outbox: new rows above the cursor, rows that filled a gap, the
//! sweep below the cursor, and the backlog the gauges show.

use chrono::{DateTime, Utc};
use tokio::time::Instant;
use tracing::debug;

use super::OutboxRelay;
use super::deliveries::{Held, Pipeline};
use crate::error::Error;

pub(super) struct OutboxRow {
    pub id: i64,
    pub topic: String,
    pub record_key: String,
    pub payload: Vec<u8>,
    pub event_type: String,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// Reads rows to publish `WHERE` the condition given, in id order. `headers` is read for
/// rows written by the previous release (see migration 0003). The query macros take only
/// literal SQL, so the select list is written once, here, and each read adds its condition.
macro_rules! select_rows {
    ($condition:literal, $($arg:expr),+ $(,)?) => {
        sqlx::query_as!(
            OutboxRow,
            "SELECT id, topic, record_key, payload, event_type,
                    coalesce(traceparent, headers->>'traceparent') AS traceparent,
                    coalesce(tracestate, headers->>'tracestate') AS tracestate,
                    created_at
             FROM outbox WHERE " + $condition,
            $($arg),+
        )
    };
}

impl OutboxRelay {
    /// Reads up to `limit` new rows (and any rows that filled a gap) and sends them;
    /// returns how many new rows the read found.
    pub(super) async fn read_and_send(
        &self,
        pipeline: &mut Pipeline,
        limit: i64,
    ) -> Result<usize, Error> {
        pipeline.gaps.expire(Instant::now());
        if !pipeline.gaps.is_empty() {
            let filled = select_rows!("id = ANY($1) ORDER BY id", &pipeline.gaps.ids())
                .fetch_all(&self.pool)
                .await?;
            for row in filled {
                pipeline.gaps.remove(row.id);
                debug!(id = row.id, "a row committed after higher ids were read");
                self.send(pipeline, row);
            }
        }
        let rows = select_rows!("id > $1 ORDER BY id LIMIT $2", pipeline.cursor, limit)
            .fetch_all(&self.pool)
            .await?;
        let read = rows.len();
        let now = Instant::now();
        for row in rows {
            pipeline.gaps.skipped(pipeline.cursor, row.id, now);
            pipeline.cursor = row.id;
            self.send(pipeline, row);
            if pipeline.failed {
                break;
            }
        }
        Ok(read)
    }

    /// Reads the rows below the cursor that the relay does not hold: ones whose transaction
    /// committed after they left the gap list, or that a failed start-over missed.
    pub(super) async fn sweep(&self, pipeline: &mut Pipeline) -> Result<(), Error> {
        let rows = select_rows!(
            "id <= $1 AND id <> ALL($2) ORDER BY id",
            pipeline.cursor,
            &pipeline.held(),
        )
        .fetch_all(&self.pool)
        .await?;
        for row in rows {
            pipeline.gaps.remove(row.id);
            self.send(pipeline, row);
        }
        Ok(())
    }

    /// Backlog without counting the table: rows above the cursor (an upper bound: ids of
    /// rolled-back inserts count too) plus the rows the relay holds or waits for.
    pub(super) async fn refresh_gauges(&self, held: Held) -> Result<(), Error> {
        let ends = sqlx::query!(
            "SELECT (SELECT max(id) FROM outbox) AS max_id,
                    (SELECT created_at FROM outbox ORDER BY id LIMIT 1) AS oldest"
        )
        .fetch_one(&self.pool)
        .await?;
        let (max_id, oldest) = (ends.max_id, ends.oldest);
        let unread = max_id.map_or(0, |max| (max - held.cursor).max(0));
        self.metrics.outbox_backlog.set(unread + held.rows as i64);
        let oldest = match (oldest, held.oldest_in_flight) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let age = oldest.map_or(0.0, |at| {
            (Utc::now() - at).num_milliseconds().max(0) as f64 / 1000.0
        });
        self.metrics.outbox_oldest_age_seconds.set(age);
        Ok(())
    }
}
