//! Reading a topic outside any consumer group: to its end, its newest records, or the records
//! at known positions. The dead-letter listings and redrives read this way. Every function
//! blocks (a plain consumer's poll): call them off the async threads.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, OwnedMessage};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::error::Error;
use crate::kafka::KafkaConfig;

/// How long one call waits for the broker's metadata or one partition's records.
const BROKER_WAIT: Duration = Duration::from_secs(10);
/// How long reading a whole range may take.
const READ_LIMIT: Duration = Duration::from_secs(30);

/// Calls `visit` for every record of `topic` between the low and high watermark at call time.
pub fn scan_topic(
    kafka: &KafkaConfig,
    topic: &str,
    visit: impl FnMut(&BorrowedMessage<'_>) -> Result<(), Error>,
) -> Result<(), Error> {
    scan_newest(kafka, topic, None, visit)
}

/// Calls `visit` for the newest `per_partition` records of each partition of `topic` (all of
/// them when `None`), up to the high watermark at call time.
pub fn scan_newest(
    kafka: &KafkaConfig,
    topic: &str,
    per_partition: Option<i64>,
    mut visit: impl FnMut(&BorrowedMessage<'_>) -> Result<(), Error>,
) -> Result<(), Error> {
    let consumer: BaseConsumer = kafka.reader().create().map_err(Error::Kafka)?;
    let mut assignment = TopicPartitionList::new();
    let mut remaining = HashMap::new();
    for partition in crate::kafka::partition_ids(&consumer, topic, BROKER_WAIT)? {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, BROKER_WAIT)
            .map_err(Error::Kafka)?;
        let start = per_partition.map_or(low, |n| low.max(high - n));
        if high > start {
            assignment
                .add_partition_offset(topic, partition, Offset::Offset(start))
                .map_err(Error::Kafka)?;
            remaining.insert(partition, high);
        }
    }
    if remaining.is_empty() {
        return Ok(());
    }
    consumer.assign(&assignment).map_err(Error::Kafka)?;
    let deadline = Instant::now() + READ_LIMIT;
    while !remaining.is_empty() && Instant::now() < deadline {
        let Some(result) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let message = result.map_err(Error::Kafka)?;
        let Some(&high) = remaining.get(&message.partition()) else {
            continue;
        };
        visit(&message)?;
        if message.offset() + 1 >= high {
            remaining.remove(&message.partition());
        }
    }
    if remaining.is_empty() {
        Ok(())
    } else {
        Err(Error::Timeout(format!(
            "timed out reading {topic}: partitions {:?} not read to their end",
            remaining.keys().collect::<Vec<_>>()
        )))
    }
}

/// The records of `topic` at `positions` (partition, offset). A position the topic no longer
/// holds (retention), has not reached, or that holds no record of data (a transaction
/// marker) is missing from the answer.
pub fn read_at(
    kafka: &KafkaConfig,
    topic: &str,
    positions: &BTreeSet<(i32, i64)>,
) -> Result<BTreeMap<(i32, i64), OwnedMessage>, Error> {
    let mut found = BTreeMap::new();
    if positions.is_empty() {
        return Ok(found);
    }
    let consumer: BaseConsumer = kafka.reader().create().map_err(Error::Kafka)?;
    let mut watermarks = HashMap::new();
    for &(partition, offset) in positions {
        let (low, high) = match watermarks.get(&partition) {
            Some(&known) => known,
            None => {
                let known = consumer
                    .fetch_watermarks(topic, partition, BROKER_WAIT)
                    .map_err(Error::Kafka)?;
                watermarks.insert(partition, known);
                known
            }
        };
        if offset < low || offset >= high {
            continue;
        }
        if let Some(message) = read_one(&consumer, topic, partition, offset)? {
            found.insert((partition, offset), message);
        }
    }
    Ok(found)
}

/// The record at `offset` of `partition`, if that offset holds one: the first record the
/// broker returns from there is the next one when it does not.
fn read_one(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<Option<OwnedMessage>, Error> {
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, partition, Offset::Offset(offset))
        .map_err(Error::Kafka)?;
    consumer.assign(&assignment).map_err(Error::Kafka)?;
    let deadline = Instant::now() + BROKER_WAIT;
    while Instant::now() < deadline {
        let Some(result) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = result.map_err(Error::Kafka)?;
        if message.partition() != partition || message.offset() < offset {
            continue;
        }
        return Ok((message.offset() == offset).then(|| message.detach()));
    }
    Err(Error::Timeout(format!(
        "timed out reading {topic} partition {partition} at offset {offset}"
    )))
}
