//! Consumer-group rebalances: logged, stored offsets committed before partitions leave, and
//! revocations reported to the runner so it forgets pauses of partitions it lost.

use std::sync::{Arc, Mutex};

use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use tracing::{info, warn};

/// Partitions revoked since the runner last looked, as `(topic, partition)`.
pub(super) type RevokedPartitions = Arc<Mutex<Vec<(String, i32)>>>;

/// Logs rebalances, commits stored offsets before partitions leave (so the next owner
/// starts right after the last applied record), and tells the runner what was revoked.
pub(super) struct RebalanceTracker {
    pub(super) revoked: RevokedPartitions,
}

impl ClientContext for RebalanceTracker {}

impl ConsumerContext for RebalanceTracker {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
                    info!(error = %e, "no offsets to commit before revocation");
                }
                let mut revoked = self.revoked.lock().expect("revoked list poisoned");
                revoked.extend(
                    tpl.elements()
                        .iter()
                        .map(|e| (e.topic().to_owned(), e.partition())),
                );
                info!(partitions = tpl.count(), "partitions revoked");
            }
            Rebalance::Assign(tpl) => info!(partitions = tpl.count(), "partitions assigned"),
            Rebalance::Error(e) => warn!(error = %e, "rebalance error"),
        }
    }
}
