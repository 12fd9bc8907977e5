//! Parked orders: a dead-lettered record holds back its order only, in that consumer group,
//! until its redrive or the order's cancellation request; then what was parked applies in
//! the order it came, and every other order on the partition went on meanwhile.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use shared_events::contracts::{Event, Topic};
use shared_events::dead_letter::{DeadLetter, read_dead_letters};
use shared_events::metrics::RecordLabels;
use shared_events::redrive::redrive_dead_letters;
use support::{RecordingHandler, TestStack, eventually, step_event};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The steps `order`'s applied records recorded, in the order they applied.
async fn steps_of(stack: &TestStack, order: Uuid) -> Vec<String> {
    stack
        .effects()
        .await
        .into_iter()
        .filter(|(_, of, _)| *of == order)
        .map(|(_, _, step)| step)
        .collect()
}

/// How many orders are parked, and how many records parked behind them.
async fn parked(stack: &TestStack) -> (i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM parked_orders), (SELECT count(*) FROM parked_records)",
    )
    .fetch_one(&stack.pool)
    .await
    .unwrap()
}

async fn the_dead_letter(stack: &TestStack) -> DeadLetter {
    let dlq = stack.names.dead_letter(Topic::Orders);
    eventually(Duration::from_secs(60), "the dead letter", || async {
        read_dead_letters(&stack.kafka, &dlq)
            .unwrap()
            .into_iter()
            .next()
    })
    .await
}

fn parked_counter(stack: &TestStack, event_type: &str) -> u64 {
    let labels = RecordLabels::new(&stack.names.name(Topic::Orders), event_type);
    stack.metrics.parked.get_or_create(&labels).get()
}

#[tokio::test]
async fn a_dead_lettered_record_parks_its_order_until_the_redrive_then_all_apply_in_order() {
    let stack = TestStack::new(1).await;
    let (held, other) = (Uuid::now_v7(), Uuid::now_v7());
    // One partition: the two orders' records interleave on it.
    let events: Vec<Event> = vec![
        support::cancellation_request(held, "fix-me"),
        step_event(other, 0),
        support::sample_order_placed(held),
        step_event(other, 1),
        support::order_cancelled(held, "integration test"),
        step_event(other, 2),
    ];
    let shutdown = CancellationToken::new();
    let relay = stack.publish(&events, &shutdown).await;
    let handler = RecordingHandler::default();
    let consumer = stack.spawn_consumer_with("parking", handler.clone(), &shutdown);

    let letter = the_dead_letter(&stack).await;
    eventually(
        Duration::from_secs(60),
        "the other order's records",
        || async { (steps_of(&stack, other).await.len() == 3).then_some(()) },
    )
    .await;
    assert_eq!(
        steps_of(&stack, held).await,
        Vec::<String>::new(),
        "the parked order's later records wait behind its dead letter"
    );
    assert_eq!(parked(&stack).await, (1, 2));
    assert_eq!(
        (
            parked_counter(&stack, "OrderPlaced"),
            parked_counter(&stack, "OrderCancelled")
        ),
        (1, 1)
    );

    // The cause fixed and the letter redriven: it applies, then what was parked, in order.
    handler.fixed.store(true, Ordering::SeqCst);
    let orders = stack.names.name(Topic::Orders);
    let redriven = redrive_dead_letters(
        &stack.kafka,
        &orders,
        Some(&[(letter.partition, letter.offset)]),
        None,
    )
    .await
    .unwrap();
    assert_eq!(redriven.sent, 1);
    let steps = eventually(
        Duration::from_secs(60),
        "the parked order's records",
        || async {
            let steps = steps_of(&stack, held).await;
            (steps.len() == 3).then_some(steps)
        },
    )
    .await;
    assert_eq!(steps, ["fix-me", "OrderPlaced", "OrderCancelled"]);
    assert_eq!(parked(&stack).await, (0, 0), "nothing left parked");
    shutdown.cancel();
    relay.await.unwrap();
    consumer.await.unwrap();
}

#[tokio::test]
async fn the_orders_cancellation_request_ends_its_parking_with_what_was_parked_applied_first() {
    let stack = TestStack::new(1).await;
    let order = Uuid::now_v7();
    let events = [
        support::cancellation_request(order, "reject-me"),
        support::sample_order_placed(order),
        step_event(order, 1),
    ];
    let shutdown = CancellationToken::new();
    let relay = stack.publish(&events, &shutdown).await;
    let consumer = stack.spawn_consumer("parking-cancelled", &shutdown);

    let steps = eventually(Duration::from_secs(60), "the order's records", || async {
        let steps = steps_of(&stack, order).await;
        (steps.len() == 2).then_some(steps)
    })
    .await;
    // The cancellation request may have come in the batch that parked the order, or later.
    assert_eq!(steps, ["OrderPlaced", "step-0001"]);
    assert_eq!(
        parked_counter(&stack, "OrderPlaced"),
        1,
        "it waited, parked"
    );
    assert_eq!(parked(&stack).await, (0, 0));
    // The letter stays, for the operator to redrive or acknowledge.
    let letter = the_dead_letter(&stack).await;
    assert_eq!(letter.error_class.as_deref(), Some("handler_rejected"));
    shutdown.cancel();
    relay.await.unwrap();
    consumer.await.unwrap();
}

#[tokio::test]
async fn a_parked_record_refused_after_the_redrive_is_dead_lettered_and_the_rest_wait_behind_it() {
    let stack = TestStack::new(1).await;
    let order = Uuid::now_v7();
    let events = [
        support::cancellation_request(order, "fix-me"),
        support::sample_order_placed(order),
        support::order_cancelled(order, "reject-me"),
        support::order_completed(order),
    ];
    let shutdown = CancellationToken::new();
    let relay = stack.publish(&events, &shutdown).await;
    let handler = RecordingHandler::default();
    let consumer = stack.spawn_consumer_with("parking-again", handler.clone(), &shutdown);
    let letter = the_dead_letter(&stack).await;
    eventually(Duration::from_secs(60), "three records parked", || async {
        (parked(&stack).await == (1, 3)).then_some(())
    })
    .await;

    handler.fixed.store(true, Ordering::SeqCst);
    let orders = stack.names.name(Topic::Orders);
    let positions = [(letter.partition, letter.offset)];
    redrive_dead_letters(&stack.kafka, &orders, Some(&positions), None)
        .await
        .unwrap();
    // The redriven record and the placement apply; the refused cancellation is
    // dead-lettered and the completion waits behind it.
    let dlq = stack.names.dead_letter(Topic::Orders);
    let letters = eventually(
        Duration::from_secs(60),
        "the second dead letter",
        || async {
            let letters = read_dead_letters(&stack.kafka, &dlq).unwrap();
            (letters.len() == 2).then_some(letters)
        },
    )
    .await;
    assert_eq!(steps_of(&stack, order).await, ["fix-me", "OrderPlaced"]);
    assert_eq!(parked(&stack).await, (1, 1));
    let second = &letters[1];
    assert_eq!(second.error_class.as_deref(), Some("handler_rejected"));
    assert_eq!(second.key.as_deref(), Some(order.to_string().as_str()));
    assert_eq!(second.original_topic.as_deref(), Some(orders.as_str()));
    assert_eq!(
        second.original_offset.as_deref(),
        Some((letter_offset_of(&letter) + 2).to_string().as_str()),
        "the letter names where the refused record sits on its topic"
    );

    // The order's cancellation request ends the parking: what waited applies, then it.
    stack.append_committed(&[step_event(order, 9)]).await;
    let steps = eventually(Duration::from_secs(60), "the rest", || async {
        let steps = steps_of(&stack, order).await;
        (steps.len() == 4).then_some(steps)
    })
    .await;
    assert_eq!(
        steps,
        ["fix-me", "OrderPlaced", "OrderCompleted", "step-0009"]
    );
    assert_eq!(parked(&stack).await, (0, 0));
    shutdown.cancel();
    relay.await.unwrap();
    consumer.await.unwrap();
}

/// The original offset of the record `letter` set aside.
fn letter_offset_of(letter: &DeadLetter) -> i64 {
    letter.original_offset.as_deref().unwrap().parse().unwrap()
}
