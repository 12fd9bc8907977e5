//! Partitions nobody consumes. A partition of the group's topics whose lag stays above zero
//! while its committed offset does not move for several session timeouts is stalled: its
//! owner is stuck (a consumer that hangs still heartbeats from librdkafka's own thread, so
//! the coordinator keeps its partitions), or is a member the coordinator still lists although
//! it is gone, or is this very member, whose client still holds an assignment the group has
//! taken away (seen after a broker restart: the coordinator expired the member, the client
//! never heard and never fetched again). The runner counts it, logs it, and leaves and
//! rejoins the group as a new member with a new client, which makes the coordinator assign
//! every partition again.
//!
//! Partitions are judged only while this member has none paused for a cool-down, so that a
//! shared outage (the database down for everyone) does not set every replica rejoining.
//! A member that cannot read its group's progress at all for as long (its client lost its
//! way to the coordinator) makes a new client too.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::gate::TopicPartition;
use super::held_back::HeldBack;
use crate::error::Error;

/// Where a partition stands: the group's committed offset and the log end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// The group's committed offset, or `None` if it never committed one.
    pub committed: Option<i64>,
    /// The high watermark: the offset the next record will get.
    pub end: i64,
    /// Why the group's consumer holds the partition back, if it said so with the commit.
    pub held_back: Option<HeldBack>,
}

impl Progress {
    pub fn lag(&self) -> i64 {
        lag(self.committed, self.end)
    }
}

/// Records from `committed` to `end`.
pub(crate) fn lag(committed: Option<i64>, end: i64) -> i64 {
    // A partition never committed lags by everything from its start; treat that as
    // lagging as long as it has records (its low watermark is not read).
    end - committed.unwrap_or(0)
}

/// Why a member leaves its group and joins again with a new client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stall {
    /// Partitions of the group lagging with their commit frozen.
    Partitions(Vec<TopicPartition>),
    /// The group's progress has been unreadable for this long.
    Unreadable(Duration),
}

/// The judgement, without I/O: which partitions have lagged without their committed offset
/// moving for at least `stall_after`, or whether the progress has been unreadable as long.
#[derive(Debug)]
pub struct StallJudge {
    stall_after: Duration,
    /// Partition -> its committed offset when first seen lagging at it, and when.
    stuck_since: HashMap<TopicPartition, (Option<i64>, Instant)>,
    /// When reading the progress started failing, if the last read failed.
    unreadable_since: Option<Instant>,
}

impl StallJudge {
    pub fn new(stall_after: Duration) -> Self {
        Self {
            stall_after,
            stuck_since: HashMap::new(),
            unreadable_since: None,
        }
    }

    /// A read of the progress failed at `now`: a stall once reads have failed for
    /// `stall_after` in a row.
    pub fn unreadable(&mut self, now: Instant) -> Option<Stall> {
        let since = *self.unreadable_since.get_or_insert(now);
        let failing = now.duration_since(since);
        (failing >= self.stall_after).then_some(Stall::Unreadable(failing))
    }

    /// Takes one reading of every partition at `now`; returns those stalled.
    pub fn observe(
        &mut self,
        readings: &[(TopicPartition, Progress)],
        now: Instant,
    ) -> Vec<TopicPartition> {
        self.unreadable_since = None;
        let mut stalled = Vec::new();
        for (partition, progress) in readings {
            if progress.lag() <= 0 {
                self.stuck_since.remove(partition);
                continue;
            }
            let since = self
                .stuck_since
                .entry(partition.clone())
                .and_modify(|entry| {
                    if entry.0 != progress.committed {
                        *entry = (progress.committed, now);
                    }
                })
                .or_insert((progress.committed, now));
            if now.duration_since(since.1) >= self.stall_after {
                stalled.push(partition.clone());
            }
        }
        stalled
    }

    /// The committed offset a lagging partition has been frozen at, and since when.
    pub fn frozen(&self, partition: &TopicPartition) -> Option<(Option<i64>, Instant)> {
        self.stuck_since.get(partition).copied()
    }

    /// Forgets every reading: after a rejoin, each partition gets its full time again.
    pub fn reset(&mut self) {
        self.stuck_since.clear();
        self.unreadable_since = None;
    }
}

/// Reads the group's committed offsets and the log ends of its topics, through the group
/// member's own client (another client would cost its own threads and buffers).
pub(super) struct ProgressReader {
    topics: Vec<String>,
}

const READ_TIMEOUT: Duration = Duration::from_secs(5);

impl ProgressReader {
    pub(super) fn new(topics: Vec<String>) -> Self {
        Self { topics }
    }

    /// Starts reading every partition of the topics with its progress: blocking calls, on
    /// a thread of the blocking pool. The caller keeps consuming meanwhile: the reads wait
    /// behind the member's long-polling fetches, and a consumer that stopped polling for
    /// them would overrun `max.poll.interval.ms` and be expelled from its group.
    pub(super) fn start<C>(&self, member: &Arc<StreamConsumer<C>>) -> ProgressRead
    where
        C: ConsumerContext + 'static,
    {
        let member = member.clone();
        let topics = self.topics.clone();
        tokio::task::spawn_blocking(move || read_progress(&*member, &topics))
    }
}

/// A read of the group's progress under way.
pub(super) type ProgressRead = JoinHandle<Result<Vec<(TopicPartition, Progress)>, Error>>;

/// Every partition of `topics` with the committed offset of `client`'s group and its end:
/// blocking calls, one request per kind.
pub fn read_progress<C: ConsumerContext>(
    client: &impl Consumer<C>,
    topics: &[String],
) -> Result<Vec<(TopicPartition, Progress)>, Error> {
    progress_of(client, partitions_of(client, topics)?)
}

/// Every partition of `topics`, from the broker's metadata.
pub fn partitions_of<C: ConsumerContext>(
    client: &impl Consumer<C>,
    topics: &[String],
) -> Result<TopicPartitionList, Error> {
    let mut partitions = TopicPartitionList::new();
    for topic in topics {
        for partition in crate::kafka::partition_ids(client, topic, READ_TIMEOUT)? {
            partitions.add_partition(topic, partition);
        }
    }
    Ok(partitions)
}

/// The committed offset of `client`'s group and the end of each of `partitions`; a
/// partition the broker gave no end for is left out.
pub fn progress_of<C: ConsumerContext>(
    client: &impl Consumer<C>,
    partitions: TopicPartitionList,
) -> Result<Vec<(TopicPartition, Progress)>, Error> {
    // One ListOffsets for every partition's end (timestamp -1 asks for the latest offset)
    // instead of one request per partition: requests on the member's connection wait behind
    // its long-polling fetch, each up to fetch.wait.max.ms.
    let mut ends = partitions.clone();
    ends.set_all_offsets(Offset::End).map_err(Error::Kafka)?;
    let ends = client
        .offsets_for_times(ends, READ_TIMEOUT)
        .map_err(Error::Kafka)?;
    let committed = client
        .committed_offsets(partitions, READ_TIMEOUT)
        .map_err(Error::Kafka)?;
    let mut readings = Vec::new();
    for element in committed.elements() {
        let end = match ends
            .find_partition(element.topic(), element.partition())
            .map(|e| e.offset())
        {
            Some(Offset::Offset(end)) => end,
            // No answer for it: judged at the next reading.
            _ => continue,
        };
        let committed = match element.offset() {
            Offset::Offset(offset) => Some(offset),
            _ => None,
        };
        readings.push((
            TopicPartition::new(element.topic(), element.partition()),
            Progress {
                committed,
                end,
                held_back: metadata_of(&element)
                    .as_deref()
                    .and_then(HeldBack::from_metadata),
            },
        ));
    }
    Ok(readings)
}

/// The metadata committed with a partition's offset, or `None` if it is not UTF-8.
///
/// Any member of a group may commit any metadata, and rust-rdkafka's `metadata()` panics on
/// bytes that are not UTF-8, which would end the whole reading (the runner's lag gauge, the
/// stuck listing's evidence). Apache Kafka's broker replaces invalid UTF-8 as it decodes a
/// commit (measured: `ff fe 41` reads back as `ef bf bd ef bf bd 41`), so against it this
/// never triggers; other brokers may keep the bytes. Reading the raw bytes would take
/// `unsafe`, which this workspace forbids: the panic is caught instead, on this element only.
fn metadata_of(
    element: &rdkafka::topic_partition_list::TopicPartitionListElem<'_>,
) -> Option<String> {
    let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        element.metadata().to_owned()
    }));
    match read {
        Ok(metadata) => Some(metadata),
        Err(_) => {
            tracing::warn!(
                topic = element.topic(),
                partition = element.partition(),
                "the offset committed on this partition carries metadata that is not UTF-8 \
                 (another client wrote it); read as none"
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(partition: i32, committed: i64, end: i64) -> (TopicPartition, Progress) {
        (
            TopicPartition::new("orders", partition),
            Progress {
                committed: Some(committed),
                end,
                held_back: None,
            },
        )
    }

    const STALL_AFTER: Duration = Duration::from_secs(18);

    #[tokio::test(start_paused = true)]
    async fn a_partition_lagging_with_its_commit_frozen_is_stalled_after_the_wait() {
        let mut judge = StallJudge::new(STALL_AFTER);
        assert!(
            judge
                .observe(&[reading(0, 10, 15)], Instant::now())
                .is_empty()
        );
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(
            judge
                .observe(&[reading(0, 10, 20)], Instant::now())
                .is_empty()
        );
        tokio::time::advance(Duration::from_secs(8)).await;
        assert_eq!(
            judge.observe(&[reading(0, 10, 25)], Instant::now()),
            [TopicPartition::new("orders", 0)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_moving_commit_or_no_lag_starts_the_wait_over() {
        let mut judge = StallJudge::new(STALL_AFTER);
        judge.observe(&[reading(0, 10, 15), reading(1, 5, 9)], Instant::now());
        tokio::time::advance(Duration::from_secs(12)).await;
        // Partition 0 committed further; partition 1 caught up.
        judge.observe(&[reading(0, 12, 15), reading(1, 9, 9)], Instant::now());
        tokio::time::advance(Duration::from_secs(12)).await;
        let stalled = judge.observe(&[reading(0, 12, 16), reading(1, 9, 11)], Instant::now());
        assert!(stalled.is_empty(), "{stalled:?}");
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(
            judge.observe(&[reading(0, 12, 16), reading(1, 9, 11)], Instant::now()),
            [TopicPartition::new("orders", 0)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn progress_unreadable_for_the_wait_is_a_stall_and_one_good_read_starts_it_over() {
        let mut judge = StallJudge::new(STALL_AFTER);
        assert_eq!(judge.unreadable(Instant::now()), None);
        tokio::time::advance(Duration::from_secs(12)).await;
        assert_eq!(judge.unreadable(Instant::now()), None);
        judge.observe(&[reading(0, 1, 1)], Instant::now());
        tokio::time::advance(Duration::from_secs(12)).await;
        assert_eq!(judge.unreadable(Instant::now()), None);
        tokio::time::advance(STALL_AFTER).await;
        assert_eq!(
            judge.unreadable(Instant::now()),
            Some(Stall::Unreadable(STALL_AFTER))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_reset_gives_every_partition_its_full_wait_again() {
        let mut judge = StallJudge::new(STALL_AFTER);
        judge.observe(&[reading(0, 1, 9), reading(1, 1, 9)], Instant::now());
        tokio::time::advance(STALL_AFTER).await;
        assert_eq!(
            judge.observe(&[reading(0, 1, 9), reading(1, 1, 9)], Instant::now()),
            [
                TopicPartition::new("orders", 0),
                TopicPartition::new("orders", 1)
            ]
        );
        judge.reset();
        assert!(
            judge
                .observe(&[reading(1, 1, 9)], Instant::now())
                .is_empty()
        );
    }
}
