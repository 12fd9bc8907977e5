//! Who this consumer is in its group: joining it, and judging whether partitions the
//! group holds are stalled (see [`super::stall`]), which makes the runner join again.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use tokio::task::JoinError;
use tokio::time::Instant;
use tracing::debug;

use super::gate::{PartitionGate, TopicPartition};
use super::rebalance::{ReassignedPartitions, RebalanceTracker};
use super::stall::{Progress, Stall, StallJudge};
use super::{EventHandler, IdempotentConsumer, Pace};
use crate::error::Error;
use crate::kafka::KafkaConfig;

impl<H: EventHandler> IdempotentConsumer<H> {
    /// Whether this member should join again with a new client: the group's partitions that
    /// have lagged with their commit frozen for too long, this member's own included (its
    /// client may hold an assignment the group took away), judged only while this member
    /// has none paused for a cool-down; or the progress unreadable for as long.
    /// Reading it also updates the group's lag gauge.
    pub(super) fn stall(
        &self,
        read: Result<Result<Vec<(TopicPartition, Progress)>, Error>, JoinError>,
        judge: &mut StallJudge,
        gate: &PartitionGate,
    ) -> Option<Stall> {
        let readings = match read
            .map_err(|e| Error::Interrupted("reading the group's progress", e))
            .and_then(|read| read)
        {
            Ok(readings) => readings,
            Err(e) => {
                debug!(error = %e, "could not read the group's progress");
                return judge.unreadable(Instant::now());
            }
        };
        if self.pace == Pace::Saga {
            let lag = readings.iter().map(|(_, p)| p.lag().max(0)).sum();
            self.metrics.consumer_lag.set(lag);
        }
        if gate.next_resume().is_some() {
            // Paused for a cool-down: a shared outage is likelier than a stuck peer.
            judge.reset();
            return None;
        }
        let stalled = judge.observe(&readings, Instant::now());
        (!stalled.is_empty()).then_some(Stall::Partitions(stalled))
    }
}

/// How often, at most, the group's progress is read (its lag is a gauge admission control
/// reads; stalls are judged by elapsed time, however often it is read).
pub(super) const PROGRESS_READ_INTERVAL: Duration = Duration::from_secs(5);

/// A partition lagging with its commit frozen for this many session timeouts is stalled:
/// by then its owner, were it alive and well, would have committed or been expelled.
pub(super) const STALLED_AFTER_SESSIONS: u32 = 3;

/// A new member of `group_id`, subscribed to `topics`.
pub(super) fn join(
    kafka: &KafkaConfig,
    group_id: &str,
    topics: &[String],
    reassigned: &ReassignedPartitions,
) -> Result<Arc<StreamConsumer<RebalanceTracker>>, Error> {
    let context = RebalanceTracker {
        reassigned: reassigned.clone(),
    };
    let consumer: StreamConsumer<RebalanceTracker> = kafka
        .at_least_once_consumer(group_id)
        .create_with_context(context)
        .map_err(Error::Kafka)?;
    let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics).map_err(Error::Kafka)?;
    Ok(Arc::new(consumer))
}
