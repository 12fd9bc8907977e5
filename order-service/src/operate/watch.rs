//! The stuck sagas as metrics, for alerts: how many orders in flight have gone without an
//! event for longer than the threshold, by the step they wait for, and how long the
//! longest idle one has waited.

use std::time::Duration;

use chrono::Utc;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::domain::AwaitedStep;
use crate::error::Error;
use crate::store;

/// How often the gauges are refreshed.
const REFRESH: Duration = Duration::from_secs(5);
/// Most stuck orders counted: past it, something big is down and the alert fires anyway.
const COUNTED: i64 = 1_000;

/// The `awaiting` of a stuck order whose history does not read back: nothing is known of
/// what it awaits, and it needs a repair, then a redrive.
const UNREADABLE: &str = "unreadable_history";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AwaitingLabels {
    /// The first event type of the awaited step, e.g. `StockReserved`, or
    /// `unreadable_history`.
    pub awaiting: &'static str,
}

#[derive(Clone, Default)]
pub struct StuckMetrics {
    stuck: Family<AwaitingLabels, Gauge>,
    oldest_idle: Gauge,
}

impl StuckMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "sagas_stuck",
            "Orders in flight without an event for longer than STUCK_AFTER_SECS, by the step they wait for (an order waiting for two counts in both; one whose history does not read back counts as unreadable_history; at most 1000 counted)",
            self.stuck.clone(),
        );
        registry.register(
            "sagas_stuck_oldest_idle_seconds",
            "How long the longest idle stuck order has gone without an event; 0 when none is stuck",
            self.oldest_idle.clone(),
        );
    }
}

pub struct StuckWatch {
    pub pool: PgPool,
    pub stuck_after: Duration,
    pub metrics: StuckMetrics,
}

impl StuckWatch {
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut interval = tokio::time::interval(REFRESH);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                _ = interval.tick() => {}
            }
            if let Err(e) = shared_events::database::bounded(self.refresh()).await {
                tracing::warn!(error = %e, "counting the stuck sagas failed; retrying");
            }
        }
    }

    async fn refresh(&self) -> Result<(), Error> {
        let now = Utc::now();
        let mut conn = self.pool.acquire().await?;
        let stuck = store::idle_since(&mut conn, now - self.stuck_after, COUNTED).await?;
        drop(conn);
        for step in AwaitedStep::ALL {
            let waiting = stuck
                .iter()
                .flatten()
                .filter(|loaded| loaded.order.awaiting().contains(&step))
                .count();
            self.set_stuck(step.name(), waiting);
        }
        let unreadable = stuck.iter().filter(|idle| idle.is_err()).count();
        self.set_stuck(UNREADABLE, unreadable);
        // The listing is oldest first.
        let oldest = stuck.first().map_or(0, |idle| {
            let updated_at = match idle {
                Ok(loaded) => loaded.updated_at,
                Err(unreadable) => unreadable.updated_at,
            };
            (now - updated_at).num_seconds().max(0)
        });
        self.metrics.oldest_idle.set(oldest);
        Ok(())
    }

    fn set_stuck(&self, awaiting: &'static str, count: usize) {
        self.metrics
            .stuck
            .get_or_create(&AwaitingLabels { awaiting })
            .set(count as i64);
    }
}
