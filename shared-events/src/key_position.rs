//! Where one key's records stand for a consumer group: the partition they go to on each
//! topic the group reads, the group's committed offset there and the log end. What an
//! operator asks of an order that waits on a service: is its record behind a backlog, or
//! has the group passed it?
//!
//! Every producer of the saga is librdkafka with the `consistent_random` partitioner
//! (set in [`KafkaConfig::idempotent_producer`]): a keyed record goes to the partition
//! `crc32(key) % partitions`, so the partition is computed, not searched for.
//!
//! [`KafkaConfig::idempotent_producer`]: crate::kafka::KafkaConfig::idempotent_producer

use std::collections::HashMap;

use rdkafka::consumer::BaseConsumer;

use crate::consumer::gate::TopicPartition;
use crate::consumer::held_back::HeldBack;
use crate::consumer::stall::{self, Progress, partitions_of, progress_of};
use crate::error::Error;
use crate::kafka::KafkaConfig;

/// The partition librdkafka's `consistent_random` partitioner gives a record with `key`.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    debug_assert!(partitions > 0);
    (crc32fast::hash(key) % partitions.unsigned_abs()) as i32
}

/// One topic's partition of a key, as a group stands on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPosition {
    pub topic: String,
    pub partition: i32,
    /// The group's committed offset, `None` if it never committed one.
    pub committed: Option<i64>,
    /// The log end: the offset the next record gets.
    pub end: i64,
    /// Why the group's consumer holds the partition back, if it said so with its commit.
    pub held_back: Option<HeldBack>,
}

impl KeyPosition {
    /// Records on the partition the group has not committed yet.
    pub fn lag(&self) -> i64 {
        stall::lag(self.committed, self.end)
    }
}

/// A group's committed offsets and the log ends of every partition of its topics, read
/// once; [`GroupProgress::of_key`] then answers for any number of keys.
#[derive(Debug, Clone)]
pub struct GroupProgress {
    partitions: HashMap<String, i32>,
    progress: HashMap<TopicPartition, Progress>,
}

impl GroupProgress {
    /// Reads `group`'s progress on `topics` without joining the group. Blocking: a few
    /// requests to the broker, each bounded.
    pub fn read(kafka: &KafkaConfig, group: &str, topics: &[String]) -> Result<Self, Error> {
        let client: BaseConsumer = kafka
            .reader()
            .set("group.id", group)
            .create()
            .map_err(Error::Kafka)?;
        let all = partitions_of(&client, topics)?;
        // Counted from the metadata, not from the readings, which leave out a partition
        // the broker gave no end for: a wrong count would compute a wrong partition.
        let mut partitions: HashMap<String, i32> = HashMap::new();
        for element in all.elements() {
            *partitions.entry(element.topic().to_owned()).or_default() += 1;
        }
        Ok(Self {
            partitions,
            progress: progress_of(&client, all)?.into_iter().collect(),
        })
    }

    /// The group's position on the partition of `key`, on each of its topics.
    pub fn of_key(&self, key: &[u8]) -> Vec<KeyPosition> {
        let mut positions: Vec<KeyPosition> = self
            .partitions
            .iter()
            .filter_map(|(topic, &count)| {
                let partition = partition_for_key(key, count);
                let progress = self
                    .progress
                    .get(&TopicPartition::new(topic.clone(), partition))?;
                Some(KeyPosition {
                    topic: topic.clone(),
                    partition,
                    committed: progress.committed,
                    end: progress.end,
                    held_back: progress.held_back.clone(),
                })
            })
            .collect();
        positions.sort_by(|a, b| a.topic.cmp(&b.topic));
        positions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_always_goes_to_the_same_partition_within_the_count() {
        let key = b"0193a6b2-7c1e-7d3a-9f00-123456789abc";
        let first = partition_for_key(key, 6);
        assert!((0..6).contains(&first));
        assert_eq!(partition_for_key(key, 6), first);
        assert_eq!(partition_for_key(key, 1), 0);
    }

    #[test]
    fn the_partition_is_crc32_of_the_key_modulo_the_count() {
        // CRC-32 (IEEE) of "123456789" is the check value 0xCBF43926.
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
        assert_eq!(
            partition_for_key(b"123456789", 7),
            (0xCBF4_3926_u32 % 7) as i32
        );
    }
}
