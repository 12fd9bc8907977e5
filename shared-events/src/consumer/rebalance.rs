//! Consumer-group rebalances: logged, stored offsets committed before partitions leave, and
//! every partition that changed hands reported to the runner, which drops its pause state.

use std::sync::{Arc, Mutex};

use rdkafka::ClientContext;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use tracing::{info, warn};

use super::gate::TopicPartition;

/// Partitions revoked or assigned since the runner last looked.
pub(super) type ReassignedPartitions = Arc<Mutex<Vec<TopicPartition>>>;

/// Logs rebalances, commits stored offsets before partitions leave (so the next owner
/// starts right after the last applied record), resumes newly assigned partitions, and
/// tells the runner what changed hands.
pub(super) struct RebalanceTracker {
    pub(super) reassigned: ReassignedPartitions,
}

impl RebalanceTracker {
    fn report(&self, tpl: &TopicPartitionList) {
        let mut reassigned = self.reassigned.lock().expect("rebalance list poisoned");
        reassigned.extend(
            tpl.elements()
                .iter()
                .map(|e| TopicPartition::new(e.topic(), e.partition())),
        );
    }
}

impl ClientContext for RebalanceTracker {}

impl ConsumerContext for RebalanceTracker {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
                    info!(error = %e, "no offsets to commit before revocation");
                }
                self.report(tpl);
                info!(partitions = tpl.count(), "partitions revoked");
            }
            Rebalance::Assign(_) => {}
            Rebalance::Error(e) => warn!(error = %e, "rebalance error"),
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            // A partition this consumer paused, lost and got back must not stay paused:
            // the runner forgets its pause, so nothing would ever resume it.
            if let Err(e) = consumer.resume(tpl) {
                warn!(error = %e, "could not resume newly assigned partitions");
            }
            self.report(tpl);
            info!(partitions = tpl.count(), "partitions assigned");
        }
    }
}
