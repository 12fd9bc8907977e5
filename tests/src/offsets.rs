//! Moving a stopped service's consumer group past a record, as a mistaken offset reset or
//! a lost delivery would: the record is in the log, and the group will never read it.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use shared_events::contracts::Topic;
use shared_events::key_position::partition_for_key;
use shared_events::{KafkaConfig, TopicNames};

/// Commits `service`'s group on the partition of `key` on `topic` at the log end. The
/// service must be stopped (its group empty): a member's offsets are its own to commit.
pub fn skip_to_end(prefix: &str, service: &str, topic: Topic, key: &str) {
    let timeout = Duration::from_secs(10);
    let names = TopicNames::new(prefix);
    let topic = names.name(topic);
    let consumer: BaseConsumer = KafkaConfig::local(&crate::bootstrap_servers())
        .reader()
        .set("group.id", names.group_of(service))
        .create()
        .unwrap();
    let metadata = consumer.fetch_metadata(Some(&topic), timeout).unwrap();
    let partitions = metadata.topics()[0].partitions().len() as i32;
    let partition = partition_for_key(key.as_bytes(), partitions);
    let (_, end) = consumer
        .fetch_watermarks(&topic, partition, timeout)
        .unwrap();
    let mut offsets = TopicPartitionList::new();
    offsets
        .add_partition_offset(&topic, partition, Offset::Offset(end))
        .unwrap();
    consumer.commit(&offsets, CommitMode::Sync).unwrap();
}
