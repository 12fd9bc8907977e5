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
