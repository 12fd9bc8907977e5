//! The transactional outbox and its relay, against real Postgres, tansu and the registry.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use support::{TestStack, eventually, step_event};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[tokio::test]
async fn outbox_rows_of_a_rolled_back_transaction_never_reach_kafka() {
    let stack = TestStack::new(3).await;
    let shutdown = CancellationToken::new();
    let relay = stack.spawn_relay(&shutdown);
    let consumer = stack.spawn_consumer("rollback", &shutdown);

    let rolled_back = Uuid::now_v7();
    let outbox = stack.outbox();
    let mut tx = stack.pool.begin().await.unwrap();
    outbox
        .append(&mut tx, &[step_event(rolled_back, 0)])
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    // A committed event after it proves the relay and the consumer were running meanwhile.
    let committed = Uuid::now_v7();
    stack.append_committed(&[step_event(committed, 0)]).await;

    let effects = eventually(Duration::from_secs(60), "the committed event", || async {
        let effects = stack.effects().await;
        (!effects.is_empty()).then_some(effects)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let effects_after = stack.effects().await;
    assert_eq!(effects, effects_after);
    assert_eq!(effects.len(), 1);
    assert_eq!(effects[0].1, committed);
    assert_eq!(stack.outbox_len().await, 0);
    shutdown.cancel();
    relay.await.unwrap();
    consumer.await.unwrap();
}

#[tokio::test]
async fn a_thousand_events_across_fifty_orders_arrive_in_per_order_order() {
    let stack = TestStack::new(6).await;
    let orders: Vec<Uuid> = (0..50).map(|_| Uuid::now_v7()).collect();
    // Interleave the orders the way concurrent requests would: step by step, in batches of
    // transactions of different sizes.
    let events: Vec<_> = (0..20)
        .flat_map(|step| orders.iter().map(move |order| step_event(*order, step)))
        .collect();
    for chunk in events.chunks(37) {
        stack.append_committed(chunk).await;
    }
    let shutdown = CancellationToken::new();
    let relay = stack.spawn_relay(&shutdown);
    let consumer = stack.spawn_consumer("ordering", &shutdown);

    let effects = eventually(Duration::from_secs(120), "1,000 applied events", || async {
        let effects = stack.effects().await;
        (effects.len() >= 1_000).then_some(effects)
    })
    .await;

    assert_eq!(effects.len(), 1_000, "each event applied once");
    let mut per_order: HashMap<Uuid, Vec<String>> = HashMap::new();
    for (_, order, step) in effects {
        per_order.entry(order).or_default().push(step);
    }
    assert_eq!(per_order.len(), 50);
    let expected: Vec<String> = (0..20).map(|s| format!("step-{s:04}")).collect();
    for (order, steps) in per_order {
        assert_eq!(steps, expected, "order {order} applied out of order");
    }
    assert_eq!(stack.outbox_len().await, 0);
    shutdown.cancel();
    relay.await.unwrap();
    consumer.await.unwrap();
}

#[tokio::test]
async fn a_standby_relay_takes_over_when_the_active_one_stops() {
    let stack = TestStack::new(3).await;
    let first_shutdown = CancellationToken::new();
    let second_shutdown = CancellationToken::new();
    let consumer_shutdown = CancellationToken::new();
    let first = stack.spawn_relay(&first_shutdown);
    // Give the first relay time to take the lock, then start a standby beside it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = stack.spawn_relay(&second_shutdown);
    let consumer = stack.spawn_consumer("takeover", &consumer_shutdown);

    let order = Uuid::now_v7();
    stack.append_committed(&[step_event(order, 0)]).await;
    eventually(Duration::from_secs(60), "the first event", || async {
        (stack.effects().await.len() == 1).then_some(())
    })
    .await;

    first_shutdown.cancel();
    first.await.unwrap();
    stack.append_committed(&[step_event(order, 1)]).await;
    let effects = eventually(
        Duration::from_secs(60),
        "the event published by the standby",
        || async {
            let effects = stack.effects().await;
            (effects.len() == 2).then_some(effects)
        },
    )
    .await;

    let steps: Vec<_> = effects.into_iter().map(|(_, _, step)| step).collect();
    assert_eq!(steps, ["step-0000", "step-0001"]);
    second_shutdown.cancel();
    consumer_shutdown.cancel();
    second.await.unwrap();
    consumer.await.unwrap();
}

/// The outbox row `event` was appended as, in the transaction that appended it.
async fn outbox_id(tx: &mut sqlx::PgConnection, event: &shared_events::contracts::Event) -> i64 {
    sqlx::query_scalar("SELECT id FROM outbox WHERE event_id = $1")
        .bind(event.metadata.event_id)
        .fetch_one(tx)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_row_that_commits_after_a_higher_id_was_published_is_published_too() {
    let stack = TestStack::new(3).await;
    let shutdown = CancellationToken::new();
    let relay = stack.spawn_relay(&shutdown);
    let consumer = stack.spawn_consumer("late-commit", &shutdown);

    // The first transaction takes its id and stays open...
    let late = step_event(Uuid::now_v7(), 0);
    let mut open = stack.pool.begin().await.unwrap();
    stack
        .outbox
        .append(&mut open, std::slice::from_ref(&late))
        .await
        .unwrap();
    let late_id = outbox_id(&mut open, &late).await;
    // ...while a second takes a higher id, commits, and is published.
    let early = step_event(Uuid::now_v7(), 0);
    let mut tx = stack.pool.begin().await.unwrap();
    stack
        .outbox
        .append(&mut tx, std::slice::from_ref(&early))
        .await
        .unwrap();
    let early_id = outbox_id(&mut tx, &early).await;
    stack.outbox.commit(tx).await.unwrap();
    assert!(late_id < early_id);
    let applied = |event: &shared_events::contracts::Event| {
        let id = event.metadata.event_id;
        let stack = &stack;
        async move {
            stack
                .effects()
                .await
                .iter()
                .any(|(applied, _, _)| *applied == id)
                .then_some(())
        }
    };
    eventually(Duration::from_secs(60), "the higher id published", || {
        applied(&early)
    })
    .await;

    // The relay has read past the lower id; committing it now must still publish it.
    stack.outbox.commit(open).await.unwrap();
    eventually(Duration::from_secs(60), "the late row published", || {
        applied(&late)
    })
    .await;
    eventually(Duration::from_secs(30), "an empty outbox", || async {
        (stack.outbox_len().await == 0).then_some(())
    })
    .await;
    assert_eq!(stack.effects().await.len(), 2, "each published once");
    shutdown.cancel();
    relay.await.unwrap();
    consumer.await.unwrap();
}

/// A row the broker can never take (over its record size limit) must not hold up the rows
/// behind it: it moves to `outbox_dead_letters` with the reason, the others are published.
#[tokio::test]
async fn a_row_the_broker_refuses_for_good_is_moved_aside_and_the_rest_go_on() {
    use shared_events::contracts::OrderCancellationRequested;
    let stack = TestStack::new(1).await;
    let (before, oversized, after) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let huge = shared_events::contracts::Event::first_of_order(
        oversized,
        "integration-test",
        OrderCancellationRequested {
            reason: "x".repeat(2_000_000),
        },
    );
    stack.append_committed(&[step_event(before, 0)]).await;
    stack.append_committed(&[huge]).await;
    stack.append_committed(&[step_event(after, 0)]).await;
    let shutdown = CancellationToken::new();
    let relay = stack.spawn_relay(&shutdown);
    let consumer = stack.spawn_consumer("refused", &shutdown);

    let effects = eventually(Duration::from_secs(60), "the rows around it", || async {
        let effects = stack.effects().await;
        (effects.len() == 2).then_some(effects)
    })
    .await;
    let orders: Vec<Uuid> = effects.iter().map(|(_, order, _)| *order).collect();
    assert_eq!(orders, [before, after]);
    let dead: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT record_key::uuid, reason FROM outbox_dead_letters")
            .fetch_all(&stack.pool)
            .await
            .unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].0, oversized);
    assert!(dead[0].1.contains("MessageSizeTooLarge"), "{}", dead[0].1);
    // Consumed is not yet acknowledged: the relay removes rows once the broker has acked.
    eventually(Duration::from_secs(30), "an empty outbox", || async {
        (stack.outbox_len().await == 0).then_some(())
    })
    .await;
    shutdown.cancel();
    relay.await.unwrap();
    consumer.await.unwrap();
}
