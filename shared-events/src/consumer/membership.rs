//! Who this consumer is in its group: joining it, and judging whether partitions the
//! group holds are stalled (see [`super::stall`]), which makes the runner join again.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use tokio::task::JoinError;
use tokio::time::Instant;
use tracing::debug;

use super::gate::{PartitionGate, TopicPartition};
use super::rebalance::{ReassignedPartitions, RebalanceTracker};
use super::stall::{Progress, StallJudge};
use super::{EventHandler, IdempotentConsumer};
use crate::Error;
use crate::kafka::KafkaConfig;

impl<H: EventHandler> IdempotentConsumer<H> {
    /// The group's partitions that this member does not own and that have lagged with
    /// their commit frozen for too long; none while this member has troubles of its own.
    /// Reading them also updates the group's lag gauge.
    pub(super) fn stalled_partitions(
        &self,
        read: Result<Result<Vec<(TopicPartition, Progress)>, Error>, JoinError>,
        judge: &mut StallJudge,
        gate: &PartitionGate,
    ) -> Vec<TopicPartition> {
        let readings = match read
            .map_err(|e| Error::Interrupted("reading the group's progress", e))
            .and_then(|read| read)
        {
            Ok(readings) => readings,
            Err(e) => {
                debug!(error = %e, "could not read the group's progress");
                return Vec::new();
            }
        };
        let lag = readings.iter().map(|(_, p)| p.lag().max(0)).sum();
        self.metrics.consumer_lag.set(lag);
        if gate.next_resume().is_some() {
            // Paused for a cool-down: a shared outage is likelier than a stuck peer.
            judge.reset();
            return Vec::new();
        }
        let own: HashSet<TopicPartition> = self
            .consumer
            .assignment()
            .map(|tpl| {
                tpl.elements()
                    .iter()
                    .map(|e| TopicPartition::new(e.topic(), e.partition()))
                    .collect()
            })
            .unwrap_or_default();
        judge.observe(&readings, &own, Instant::now())
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
