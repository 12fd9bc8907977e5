//! The runner's side of the circuit breaker: pausing a partition in librdkafka when its
//! retries run out, rewinding and resuming it when the cool-down is over (or as soon as the
//! database that went away answers again), and forgetting the pause of a partition a
//! rebalance moved. The state itself is [`PartitionGate`].

use std::collections::HashMap;

use chrono::Utc;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use sqlx::PgPool;
use tokio::time::Duration;
use tracing::{info, warn};

use super::gate::{PartitionGate, TopicPartition};
use super::held_back::HeldBack;
use super::{EventHandler, IdempotentConsumer, Record};
use crate::metrics::TopicLabels;

impl<H: EventHandler> IdempotentConsumer<H> {
    /// Circuit breaker: stop fetching each partition of `records`, to retry its first record
    /// after the cool-down. Polling goes on, so the group membership stays alive. Each pause
    /// is said with the partition's commit ([`HeldBack`]), with its last failure.
    pub(super) fn pause(
        &self,
        records: &[&Record],
        failures: &HashMap<&TopicPartition, &str>,
        gate: &mut PartitionGate,
    ) {
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
            let since = Utc::now();
            let reason = failures
                .get(partition)
                .copied()
                .unwrap_or("an earlier record of the batch failed");
            let held = HeldBack::paused(since, since + cool_down, reason);
            self.say_held_back(partition, offset, &held);
        }
    }

    /// Commits `offset` on `partition` with `held` as its metadata, for operators to read.
    /// The offset is one the group has reached already, so the commit moves nothing forward;
    /// should it land after a newer commit (a race with the auto-commit or another member),
    /// the records between come again and `processed_events` skips them.
    pub(super) fn say_held_back(&self, partition: &TopicPartition, offset: i64, held: &HeldBack) {
        let mut commit = TopicPartitionList::new();
        let mut entry = commit.add_partition(&partition.topic, partition.partition);
        if let Err(e) = entry.set_offset(Offset::Offset(offset)) {
            warn!(error = %e, %partition, "could not say why the partition is held back");
            return;
        }
        entry.set_metadata(held.to_metadata());
        if let Err(e) = self.consumer.commit(&commit, CommitMode::Async) {
            warn!(error = %e, %partition, "could not say why the partition is held back");
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

/// How often the database is asked whether it answers while partitions are paused.
pub(super) const DATABASE_PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// While partitions are paused: has the database gone away and come back? A partition
/// paused because its records could not reach the database then retries at once instead of
/// waiting out its cool-down (30 s by default), so the saga moves within a second of the
/// database's return. A pause the database had no part in (it answered all along) keeps
/// its cool-down.
pub(super) struct DatabaseProbe {
    pool: PgPool,
    /// A probe since the pauses began found the database away.
    found_away: bool,
}

impl DatabaseProbe {
    pub(super) fn new(pool: PgPool) -> Self {
        Self {
            pool,
            found_away: false,
        }
    }

    /// Asks the database once (bounded by the interval); true if it answers now after a
    /// probe found it away.
    pub(super) async fn came_back(&mut self) -> bool {
        let answers = tokio::time::timeout(
            DATABASE_PROBE_INTERVAL,
            sqlx::query("SELECT 1").execute(&self.pool),
        )
        .await
        .is_ok_and(|answer| answer.is_ok());
        let came_back = answers && self.found_away;
        self.found_away = !answers;
        came_back
    }

    /// No partition is paused any more: what the probes saw is of no use to the next pause.
    pub(super) fn forget(&mut self) {
        self.found_away = false;
    }
}

fn single_partition(partition: &TopicPartition) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&partition.topic, partition.partition);
    tpl
}
