//! Chaos: shutdown while the broker is unreachable. The consumer's final commit and group
//! leave wait for the broker, and librdkafka waits without limit; a pod whose shutdown
//! outlasts its grace period is killed. The relay and the consumer must stop within a bound
//! anyway, and whatever they could not commit comes again later with no second effect.
//! A test binary of its own, so freezing the shared broker disturbs no other test.

mod support;

use std::time::{Duration, Instant};

use support::broker::FrozenBroker;
use support::{TestStack, eventually, step_event};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Well inside a pod's 30 s termination grace period.
const STOP_BOUND: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_and_consumer_stop_in_bounded_time_while_the_broker_is_frozen() {
    let mut stack = TestStack::new(3).await;
    // The first consumer cannot leave its group while the broker is frozen; the second one
    // joins once the coordinator has expired it, a session after its last heartbeat.
    stack.kafka.session_timeout_ms = 10_000;
    stack.kafka.max_poll_interval_ms = 20_000;
    let first: Vec<_> = (0..10).map(|_| step_event(Uuid::now_v7(), 0)).collect();
    let shutdown = CancellationToken::new();
    let relay = stack.spawn_relay(&shutdown);
    let consumer = stack.spawn_consumer("frozen-stop", &shutdown);
    stack.append_committed(&first).await;
    eventually(Duration::from_secs(60), "the first effects", || async {
        (stack.effects().await.len() == first.len()).then_some(())
    })
    .await;

    let stopped = {
        let _frozen = FrozenBroker::freeze();
        let started = Instant::now();
        shutdown.cancel();
        let stopped = tokio::time::timeout(STOP_BOUND, async {
            relay.await.unwrap();
            consumer.await.unwrap();
        })
        .await;
        stopped.map(|()| started.elapsed())
    };
    let elapsed = stopped.unwrap_or_else(|_| {
        panic!("the relay and the consumer did not stop within {STOP_BOUND:?} of shutdown with the broker frozen")
    });
    eprintln!("stopped {elapsed:?} after shutdown with the broker frozen");

    // After the thaw, the same group picks up where the committed offsets say: the first
    // events are not applied again, and new ones are.
    let second: Vec<_> = (0..10).map(|_| step_event(Uuid::now_v7(), 1)).collect();
    let shutdown = CancellationToken::new();
    let relay = stack.spawn_relay(&shutdown);
    let consumer = stack.spawn_consumer("frozen-stop", &shutdown);
    stack.append_committed(&second).await;
    let total = first.len() + second.len();
    eventually(Duration::from_secs(90), "the second effects", || async {
        (stack.effects().await.len() >= total).then_some(())
    })
    .await;
    // Give a late redelivery a moment to show up; dedup must keep it out.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let effects = stack.effects().await;
    assert_eq!(effects.len(), total, "one effect per event: {effects:?}");
    let mut applied: Vec<Uuid> = effects.iter().map(|(event_id, _, _)| *event_id).collect();
    let mut expected: Vec<Uuid> = first
        .iter()
        .chain(&second)
        .map(|e| e.metadata.event_id)
        .collect();
    applied.sort();
    expected.sort();
    assert_eq!(applied, expected);
    shutdown.cancel();
    relay.await.unwrap();
    consumer.await.unwrap();
}
