//! A member that stays in the group but consumes nothing (hung, or a ghost the coordinator
//! keeps after a kill -9) holds its partitions. The runner sees them lag with their commit
//! frozen, counts them, logs them and rejoins the group as a new member; nothing is lost.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::consumer::BaseConsumer;
use shared_events::consumer::held_back::HeldBack;
use shared_events::consumer::stall::read_progress;
use shared_events::contracts::Topic;
use shared_events::metrics::TopicLabels;
use support::{TestStack, eventually, idle_member, step_event};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[tokio::test]
async fn a_partition_nobody_consumes_is_detected_and_the_runner_rejoins() {
    let stack = TestStack::new(2).await;
    let group = format!("{}stall", stack.kafka.topic_prefix);
    let stop = Arc::new(AtomicBool::new(false));
    let (stuck, assigned) = idle_member(&stack, &group, stop.clone());
    tokio::task::spawn_blocking(move || assigned.recv_timeout(Duration::from_secs(60)))
        .await
        .unwrap()
        .expect("the stuck member never got a partition");

    let shutdown = CancellationToken::new();
    let relay = stack.spawn_relay(&shutdown);
    let runner = stack.spawn_consumer("stall", &shutdown);
    let orders: Vec<Uuid> = (0..20).map(|_| Uuid::now_v7()).collect();
    let events: Vec<_> = orders.iter().map(|order| step_event(*order, 0)).collect();
    stack.append_committed(&events).await;

    let orders_topic = TopicLabels {
        topic: stack.names.name(Topic::Orders),
    };
    eventually(
        Duration::from_secs(120),
        "the stalled partition to be detected and the runner to rejoin",
        || async {
            let stalled = stack
                .metrics
                .partitions_stalled
                .get_or_create(&orders_topic)
                .get();
            (stalled >= 1 && stack.metrics.rejoins.get() >= 1).then_some(())
        },
    )
    .await;
    // The runner said so with the group's commit there, for operators to read.
    eventually(Duration::from_secs(15), "the stall said", || async {
        let (kafka, group, topics) = (
            stack.kafka.clone(),
            group.clone(),
            vec![stack.names.name(Topic::Orders)],
        );
        let reader = move || -> Result<_, shared_events::Error> {
            let client: BaseConsumer = kafka
                .reader()
                .set("group.id", &group)
                .create()
                .map_err(shared_events::Error::Kafka)?;
            read_progress(&client, &topics)
        };
        let readings = tokio::task::spawn_blocking(reader).await.unwrap().ok()?;
        readings
            .iter()
            .any(|(_, progress)| matches!(progress.held_back, Some(HeldBack::Stalled { .. })))
            .then_some(())
    })
    .await;

    // The stuck member goes; its partition moves and every event is applied once.
    stop.store(true, Ordering::SeqCst);
    tokio::task::spawn_blocking(move || stuck.join().unwrap())
        .await
        .unwrap();
    eventually(Duration::from_secs(60), "all 20 events", || async {
        (stack.effects().await.len() >= 20).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(stack.effects().await.len(), 20, "each event applied once");
    shutdown.cancel();
    relay.await.unwrap();
    runner.await.unwrap();
}
