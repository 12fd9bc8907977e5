//! The runner's side of the circuit breaker: pausing a partition in librdkafka when its
//! retries run out, rewinding and resuming it when the cool-down is over, and forgetting
//! the pause of a partition a rebalance moved. The state itself is [`PartitionGate`].

use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::time::Duration;
use tracing::{info, warn};

use super::gate::{PartitionGate, TopicPartition};
use super::{EventHandler, IdempotentConsumer, Record};
use crate::metrics::TopicLabels;

impl<H: EventHandler> IdempotentConsumer<H> {
    /// Circuit breaker: stop fetching each partition of `records`, to retry its first record
    /// after the cool-down. Polling goes on, so the group membership stays alive.
    pub(super) fn pause(&self, records: &[&Record], gate: &mut PartitionGate) {
        let mut first_offsets: Vec<(&TopicPartition, i64)> = Vec::new();
        for record in records {
            if !first_offsets.iter().any(|(p, _)| *p == &record.partition) {
                first_offsets.push((&record.partition, record.message.offset()));
            }
        }
        for (partition, offset) in first_offsets {
            let cool_down = gate.pause(partition.clone(), offset);
            if let Err(e) = self.consumer.pause(&single_partition(partition)) {
                warn!(error = %e, %partition, "could not pause partition");
            }
            self.metrics
                .partitions_paused
                .get_or_create(&TopicLabels {
                    topic: partition.topic.clone(),
                })
                .inc();
            warn!(%partition, offset, ?cool_down, "retries exhausted; pausing the partition for a cool-down");
        }
    }

    pub(super) fn resume_due(&self, gate: &mut PartitionGate) {
        for (partition, offset) in gate.take_due() {
            if let Err(e) = self.consumer.seek(
                &partition.topic,
                partition.partition,
                Offset::Offset(offset),
                Duration::from_secs(5),
            ) {
                warn!(error = %e, %partition, "could not rewind partition; pausing again");
                gate.pause(partition, offset);
                continue;
            }
            if let Err(e) = self.consumer.resume(&single_partition(&partition)) {
                warn!(error = %e, %partition, "could not resume partition");
            }
            info!(%partition, offset, "cool-down over; retrying partition");
        }
    }

    /// A partition revoked or assigned afresh starts with no pause (the rebalance tracker
    /// resumed it in librdkafka too).
    pub(super) fn forget_reassigned(&self, gate: &mut PartitionGate) {
        let reassigned =
            std::mem::take(&mut *self.reassigned.lock().expect("rebalance list poisoned"));
        for partition in reassigned {
            gate.forget(&partition);
        }
    }
}

fn single_partition(partition: &TopicPartition) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&partition.topic, partition.partition);
    tpl
}
