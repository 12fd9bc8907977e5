//! Where a key's records stand for a group, on the real broker: the partition computed from
//! the key is the one the producer put its records on, and the group's committed offset
//! and the log end read there are the broker's.

mod support;

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use shared_events::contracts::Topic;
use shared_events::key_position::{GroupProgress, partition_for_key};
use support::TestStack;
use uuid::Uuid;

const PARTITIONS: i32 = 6;

#[tokio::test]
async fn the_computed_partition_is_where_the_producer_put_the_key_and_the_group_stands_there() {
    let stack = TestStack::new(PARTITIONS).await;
    let topic = stack.names.name(Topic::Orders);
    let producer: FutureProducer = stack.kafka.idempotent_producer().create().unwrap();
    let mut delivered = Vec::new();
    for _ in 0..60 {
        let key = Uuid::now_v7().to_string();
        let delivery = producer
            .send(
                FutureRecord::to(&topic).key(&key).payload("x"),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
        delivered.push((key, delivery.partition, delivery.offset));
    }
    for (key, partition, _) in &delivered {
        assert_eq!(
            partition_for_key(key.as_bytes(), PARTITIONS),
            *partition,
            "key {key}"
        );
    }

    // The group commits past the first record of one key's partition, nothing elsewhere.
    let group = stack.names.group_of("key-position-test");
    let (key, partition, offset) = delivered[0].clone();
    let committer: BaseConsumer = stack
        .kafka
        .reader()
        .set("group.id", &group)
        .create()
        .unwrap();
    let mut commit = TopicPartitionList::new();
    commit
        .add_partition_offset(&topic, partition, Offset::Offset(offset + 1))
        .unwrap();
    committer.commit(&commit, CommitMode::Sync).unwrap();

    let (kafka, topics) = (stack.kafka.clone(), vec![topic.clone()]);
    let progress =
        tokio::task::spawn_blocking(move || GroupProgress::read(&kafka, &group, &topics))
            .await
            .unwrap()
            .unwrap();
    let positions = progress.of_key(key.as_bytes());
    assert_eq!(positions.len(), 1);
    let position = &positions[0];
    let on_partition = delivered.iter().filter(|(_, p, _)| *p == partition).count() as i64;
    assert_eq!(
        (position.topic.as_str(), position.partition),
        (topic.as_str(), partition)
    );
    assert_eq!(position.committed, Some(offset + 1));
    assert_eq!(position.end, on_partition);
    assert_eq!(position.lag(), on_partition - offset - 1);

    let elsewhere = delivered
        .iter()
        .find(|(_, p, _)| *p != partition)
        .expect("60 keys spread over more than one partition");
    let untouched = &progress.of_key(elsewhere.0.as_bytes())[0];
    assert_eq!(untouched.committed, None);
    assert!(untouched.lag() > 0);
}

/// Any member of a group may commit any metadata with its offsets. Metadata that is not
/// UTF-8 (rust-rdkafka's `metadata()` panics on it) or that wears the runner's mark over
/// nonsense must not break the reading: the offsets are read, the metadata is taken as none.
#[tokio::test]
async fn metadata_another_client_committed_never_breaks_a_reading() {
    let stack = TestStack::new(PARTITIONS).await;
    let topic = stack.names.name(Topic::Orders);
    let group = stack.names.group_of("foreign-metadata-test");
    // A record on each partition: its delivery waits until the new topic has its leaders.
    let producer: FutureProducer = stack.kafka.idempotent_producer().create().unwrap();
    for partition in 0..PARTITIONS {
        producer
            .send(
                FutureRecord::<str, str>::to(&topic)
                    .partition(partition)
                    .payload("x"),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
    let broker = stack
        .kafka
        .bootstrap_servers
        .split(',')
        .next()
        .unwrap()
        .to_owned();
    let commits: [(i32, i64, &[u8]); 3] = [
        (0, 3, b"\xff\xfeA"),
        (1, 5, b"orderflow:{\"state\":\"paused\",\"since\":"),
        (2, 7, b"orderflow:\xc3\x28"),
    ];
    let (group_name, topic_name) = (group.clone(), topic.clone());
    tokio::task::spawn_blocking(move || {
        raw_offset_commit(&broker, &group_name, &topic_name, &commits)
    })
    .await
    .unwrap();

    let (kafka, group_name, topics) = (stack.kafka.clone(), group.clone(), vec![topic.clone()]);
    let progress =
        tokio::task::spawn_blocking(move || GroupProgress::read(&kafka, &group_name, &topics))
            .await
            .unwrap()
            .expect("the group's progress reads despite the metadata");
    for (partition, offset, _) in commits {
        let key = (0..)
            .map(|n: u32| n.to_string())
            .find(|key| partition_for_key(key.as_bytes(), PARTITIONS) == partition)
            .unwrap();
        let position = &progress.of_key(key.as_bytes())[0];
        assert_eq!(position.partition, partition);
        assert_eq!(position.committed, Some(offset));
        assert_eq!(position.held_back, None, "partition {partition}");
    }

    // Why the first never reaches rust-rdkafka as it was sent: Apache Kafka's broker decodes
    // the field as UTF-8, replacing what is not (U+FFFD). Another broker may not.
    let reader: BaseConsumer = stack
        .kafka
        .reader()
        .set("group.id", &group)
        .create()
        .unwrap();
    let mut asked = TopicPartitionList::new();
    asked.add_partition(&topic, 0);
    let committed = reader
        .committed_offsets(asked, Duration::from_secs(10))
        .unwrap();
    let element = committed.find_partition(&topic, 0).unwrap();
    assert_eq!(element.metadata(), "\u{FFFD}\u{FFFD}A");
}

/// Commits `offsets` (partition, offset, metadata bytes) for `group` on `topic` with one
/// OffsetCommit v2 request written by hand, as any client of the group may: no client
/// library lets metadata be anything but a string.
fn raw_offset_commit(broker: &str, group: &str, topic: &str, offsets: &[(i32, i64, &[u8])]) {
    use std::io::{Read, Write};

    fn string(buffer: &mut Vec<u8>, bytes: &[u8]) {
        buffer.extend_from_slice(&(bytes.len() as i16).to_be_bytes());
        buffer.extend_from_slice(bytes);
    }
    let mut request = Vec::new();
    request.extend_from_slice(&8i16.to_be_bytes()); // OffsetCommit
    request.extend_from_slice(&2i16.to_be_bytes()); // version 2
    request.extend_from_slice(&1i32.to_be_bytes()); // correlation id
    string(&mut request, b"raw-offset-commit");
    string(&mut request, group.as_bytes());
    request.extend_from_slice(&(-1i32).to_be_bytes()); // generation: no member
    string(&mut request, b""); // member id
    request.extend_from_slice(&(-1i64).to_be_bytes()); // retention: the broker's
    request.extend_from_slice(&1i32.to_be_bytes()); // one topic
    string(&mut request, topic.as_bytes());
    request.extend_from_slice(&(offsets.len() as i32).to_be_bytes());
    for (partition, offset, metadata) in offsets {
        request.extend_from_slice(&partition.to_be_bytes());
        request.extend_from_slice(&offset.to_be_bytes());
        string(&mut request, metadata);
    }
    let mut stream = std::net::TcpStream::connect(broker).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(&(request.len() as i32).to_be_bytes())
        .unwrap();
    stream.write_all(&request).unwrap();
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).unwrap();
    let mut response = vec![0u8; i32::from_be_bytes(size) as usize];
    stream.read_exact(&mut response).unwrap();
    // correlation id, topics [name, partitions [index, error code]]: every error code 0.
    let name_len = i16::from_be_bytes([response[8], response[9]]) as usize;
    let mut at = 10 + name_len + 4;
    for _ in offsets {
        let error = i16::from_be_bytes([response[at + 4], response[at + 5]]);
        assert_eq!(
            error, 0,
            "the broker refused the commit: error code {error}"
        );
        at += 6;
    }
}
