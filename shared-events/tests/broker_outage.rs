//! Chaos: the broker freezes (SIGSTOP) for longer than the producer's message timeout while
//! the relay is publishing. Every event must still arrive, once in effect, in per-order order.
//! A test binary of its own, so freezing the shared broker disturbs no other test.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use shared_events::contracts::Topic;
use support::broker::FrozenBroker;
use support::{TestStack, eventually, step_event};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_arrives_once_and_in_order_after_the_broker_freezes_mid_relay() {
    let mut stack = TestStack::new(6).await;
    // The freeze outlasts the producer's message timeout, so deliveries fail and are retried.
    stack.kafka.message_timeout_ms = 5_000;
    // ...but not the consumer's session: the coordinator's clock runs on while the JVM is
    // stopped, so a shorter session would also expire the group's members at the thaw and
    // add a rebalance to the outage under test.
    stack.kafka.session_timeout_ms = 30_000;
    stack.kafka.max_poll_interval_ms = 60_000;
    let orders: Vec<Uuid> = (0..40).map(|_| Uuid::now_v7()).collect();
    let steps = 15;
    let shutdown = CancellationToken::new();
    let relay = stack.spawn_relay(&shutdown);
    let consumer = stack.spawn_consumer("outage", &shutdown);

    // Keep writing while the broker is frozen, so the relay has records in flight then.
    let writer = {
        let stack_pool = stack.pool.clone();
        let outbox = stack.outbox();
        let orders = orders.clone();
        tokio::spawn(async move {
            for step in 0..steps {
                for chunk in orders.chunks(10) {
                    let mut tx = stack_pool.begin().await.unwrap();
                    for order in chunk {
                        outbox
                            .append(&mut tx, &[step_event(*order, step)])
                            .await
                            .unwrap();
                    }
                    outbox.commit(tx).await.unwrap();
                }
                tokio::time::sleep(Duration::from_millis(400)).await;
            }
        })
    };
    eventually(Duration::from_secs(60), "the first effects", || async {
        (stack.effects().await.len() >= 40).then_some(())
    })
    .await;
    {
        let _frozen = FrozenBroker::freeze();
        // Longer than the producer's message timeout (5 s in tests).
        tokio::time::sleep(Duration::from_secs(8)).await;
    }
    writer.await.unwrap();

    let total = orders.len() * steps;
    let effects = eventually(
        Duration::from_secs(180),
        "every event after the outage",
        || async {
            let effects = stack.effects().await;
            (effects.len() >= total && stack.outbox_len().await == 0).then_some(effects)
        },
    )
    .await;
    // Give late duplicates a moment to show up; dedup must keep them out.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let effects_after = stack.effects().await;
    assert_eq!(effects_after.len(), total, "one effect per event");
    assert_eq!(effects, effects_after);

    let mut per_order: HashMap<Uuid, Vec<String>> = HashMap::new();
    for (_, order, step) in effects {
        per_order.entry(order).or_default().push(step);
    }
    let expected: Vec<String> = (0..steps).map(|s| format!("step-{s:04}")).collect();
    for (order, applied) in per_order {
        assert_eq!(applied, expected, "order {order} applied out of order");
    }
    let labels = shared_events::metrics::TopicLabels {
        topic: stack.names.name(Topic::Orders),
    };
    let failures = stack.metrics.publish_failures.get_or_create(&labels).get();
    assert!(
        failures > 0,
        "the outage should have failed some deliveries"
    );
    shutdown.cancel();
    relay.await.unwrap();
    consumer.await.unwrap();
}
