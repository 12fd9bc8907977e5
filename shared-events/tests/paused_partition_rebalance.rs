//! A partition the runner paused (its retries ran out) and that a rebalance takes away and
//! hands back must be consumed again at once: the pause belonged to the previous assignment.
//! Without that, nothing would ever resume it, and its orders would wait forever.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use shared_events::RetryConfig;
use shared_events::contracts::Topic;
use shared_events::metrics::TopicLabels;
use support::{RecordingHandler, TestStack, eventually, idle_member};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// A cool-down far longer than the test: only the rebalance can bring a paused partition back.
fn retry_with_long_cool_down() -> RetryConfig {
    RetryConfig {
        cool_down_ms: 3_600_000,
        ..TestStack::fast_retry()
    }
}

fn flaky_event(order_id: Uuid) -> shared_events::contracts::Event {
    shared_events::contracts::Event::first_of_order(
        order_id,
        "integration-test",
        shared_events::contracts::OrderCancellationRequested {
            reason: "flaky".into(),
        },
    )
}

#[tokio::test]
async fn a_paused_partition_that_comes_back_after_a_rebalance_is_consumed_again() {
    let stack = TestStack::new(2).await;
    let group = "paused-rebalance";
    let shutdown = CancellationToken::new();
    let relay = stack.spawn_relay(&shutdown);
    let handler = RecordingHandler::failing_transiently(usize::MAX);
    let failures = handler.transient_failures.clone();
    let runner =
        stack.spawn_consumer_retrying(group, handler, retry_with_long_cool_down(), &shutdown);

    // Orders spread over both partitions; each partition pauses on its first record.
    let events: Vec<_> = (0..16).map(|_| flaky_event(Uuid::now_v7())).collect();
    stack.append_committed(&events).await;
    let orders_topic = TopicLabels {
        topic: stack.names.name(Topic::Orders),
    };
    eventually(
        Duration::from_secs(60),
        "both partitions to pause",
        || async {
            let paused = stack
                .metrics
                .partitions_paused
                .get_or_create(&orders_topic)
                .get();
            (paused >= 2).then_some(())
        },
    )
    .await;
    failures.store(0, Ordering::SeqCst);

    // A second member joins (the sticky assignor moves one partition to it) and leaves
    // again, so that partition is revoked from the runner and assigned back to it.
    let stop = Arc::new(AtomicBool::new(false));
    let (visitor, took) = idle_member(
        &stack,
        &format!("{}{group}", stack.kafka.topic_prefix),
        stop.clone(),
    );
    tokio::task::spawn_blocking(move || took.recv_timeout(Duration::from_secs(60)))
        .await
        .unwrap()
        .expect("the second member never got a partition from the runner");
    assert!(
        stack.effects().await.is_empty(),
        "nothing is applied while the runner's partitions are paused or elsewhere"
    );
    stop.store(true, Ordering::SeqCst);
    tokio::task::spawn_blocking(move || visitor.join().unwrap())
        .await
        .unwrap();

    // Its partition returns to the runner, which must consume it now, not in an hour.
    eventually(
        Duration::from_secs(60),
        "the partition handed back to be consumed",
        || async { (!stack.effects().await.is_empty()).then_some(()) },
    )
    .await;
    shutdown.cancel();
    relay.await.unwrap();
    runner.await.unwrap();
}
