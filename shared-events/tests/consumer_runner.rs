//! The idempotent consumer runner: dedup, dead letters, replay.

mod support;

use std::time::Duration;

use rdkafka::Message;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use shared_events::consumer::held_back::HeldBack;
use shared_events::contracts::{Event, Topic};
use shared_events::dead_letter::read_dead_letters;
use shared_events::key_position::GroupProgress;
use shared_events::redrive::redrive_dead_letters;
use shared_events::{ConsumerConfig, EventHandler, GroupProtocol, HandlerError};
use support::{TestStack, eventually, step_event};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

async fn produce_raw(stack: &TestStack, key: &str, payload: &[u8]) -> (i32, i64) {
    let producer: FutureProducer = stack.kafka.idempotent_producer().create().unwrap();
    let headers = OwnedHeaders::new().insert(Header {
        key: "event_type",
        value: Some("Garbage"),
    });
    let delivery = producer
        .send(
            FutureRecord::to(&stack.names.name(Topic::Orders))
                .key(key)
                .payload(payload)
                .headers(headers),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    (delivery.partition, delivery.offset)
}

#[tokio::test]
async fn the_same_event_delivered_twice_has_one_effect() {
    let stack = TestStack::new(3).await;
    let order = Uuid::now_v7();
    let event = step_event(order, 0);
    // Two outbox rows with one event id are impossible (unique), so the second delivery is
    // produced the way a relay crash would: the same record sent again.
    let shutdown = CancellationToken::new();
    let relay = stack.publish(std::slice::from_ref(&event), &shutdown).await;
    let bytes = stack.codec.encode(&event).await.unwrap();
    produce_raw(&stack, &order.to_string(), &bytes).await;
    let marker = step_event(order, 1);
    stack.append_committed(std::slice::from_ref(&marker)).await;

    let consumer = stack.spawn_consumer("dedup", &shutdown);
    let effects = eventually(Duration::from_secs(60), "the marker event", || async {
        let effects = stack.effects().await;
        effects
            .iter()
            .any(|(id, _, _)| *id == marker.metadata.event_id)
            .then_some(effects)
    })
    .await;

    let applied: Vec<_> = effects.iter().map(|(id, _, _)| *id).collect();
    assert_eq!(applied, [event.metadata.event_id, marker.metadata.event_id]);
    let duplicates: i64 = sqlx::query_scalar("SELECT count(*) FROM processed_events")
        .fetch_one(&stack.pool)
        .await
        .unwrap();
    assert_eq!(duplicates, 2, "one processed_events row per event id");
    shutdown.cancel();
    relay.await.unwrap();
    consumer.await.unwrap();
}

#[tokio::test]
async fn poison_records_go_to_the_dead_letter_topic_and_the_next_record_is_processed() {
    let stack = TestStack::new(1).await;
    let order = Uuid::now_v7();
    let garbage = produce_raw(&stack, &order.to_string(), b"definitely not avro").await;
    let unknown_schema = produce_raw(
        &stack,
        &order.to_string(),
        &[0, 0x7f, 0xff, 0xff, 0x01, 2, 4],
    )
    .await;
    let rejected = support::cancellation_request(order, "reject-me");
    let valid = step_event(order, 7);
    stack
        .append_committed(&[rejected.clone(), valid.clone()])
        .await;
    let shutdown = CancellationToken::new();
    let relay = stack.spawn_relay(&shutdown);
    let consumer = stack.spawn_consumer("poison", &shutdown);

    let effects = eventually(
        Duration::from_secs(60),
        "the valid record after the poison",
        || async {
            let effects = stack.effects().await;
            (!effects.is_empty()).then_some(effects)
        },
    )
    .await;
    assert_eq!(effects.len(), 1);
    assert_eq!(effects[0].0, valid.metadata.event_id);

    let dlq = stack.names.dead_letter(Topic::Orders);
    let letters = eventually(Duration::from_secs(30), "three dead letters", || async {
        let letters = read_dead_letters(&stack.kafka, &dlq).unwrap();
        (letters.len() >= 3).then_some(letters)
    })
    .await;
    assert_eq!(letters.len(), 3);
    let orders_topic = stack.names.name(Topic::Orders);
    let group = format!("{}poison", stack.kafka.topic_prefix);
    let expected = [
        (garbage, "not_wire_format"),
        (unknown_schema, "unknown_schema_id"),
    ];
    for (letter, ((partition, offset), class)) in letters.iter().zip(expected) {
        assert_eq!(
            letter.original_topic.as_deref(),
            Some(orders_topic.as_str())
        );
        assert_eq!(letter.original_partition, Some(partition.to_string()));
        assert_eq!(letter.original_offset, Some(offset.to_string()));
        assert_eq!(letter.consumer_group.as_deref(), Some(group.as_str()));
        assert_eq!(letter.error_class.as_deref(), Some(class));
        assert!(
            letter
                .error_message
                .as_deref()
                .is_some_and(|m| !m.is_empty())
        );
        assert_eq!(letter.key.as_deref(), Some(order.to_string().as_str()));
    }
    assert_eq!(letters[2].error_class.as_deref(), Some("handler_rejected"));
    assert!(
        letters[2]
            .error_message
            .as_deref()
            .unwrap()
            .contains("asked for a rejection")
    );

    shutdown.cancel();
    relay.await.unwrap();
    consumer.await.unwrap();
}

#[tokio::test]
async fn a_replayed_dead_letter_is_processed_once_it_can_be() {
    let stack = TestStack::new(1).await;
    let order = Uuid::now_v7();
    // A valid event whose schema id the consumer cannot resolve yet is indistinguishable on
    // the wire from a fixed-up record; here the dead letter is a valid record sent to the DLQ
    // by the handler, then replayed to a consumer group that accepts it.
    let event = support::cancellation_request(order, "reject-me");
    stack.append_committed(std::slice::from_ref(&event)).await;
    let shutdown = CancellationToken::new();
    let relay = stack.spawn_relay(&shutdown);
    let consumer = stack.spawn_consumer("replay", &shutdown);
    let dlq = stack.names.dead_letter(Topic::Orders);
    let letters = eventually(Duration::from_secs(60), "the dead letter", || async {
        let letters = read_dead_letters(&stack.kafka, &dlq).unwrap();
        (!letters.is_empty()).then_some(letters)
    })
    .await;

    let redriven = redrive_dead_letters(
        &stack.kafka,
        &stack.names.name(Topic::Orders),
        Some(&[(letters[0].partition, letters[0].offset)]),
        None,
    )
    .await
    .unwrap();
    assert_eq!((redriven.sent, redriven.refused), (1, Vec::new()));
    // The replayed record is on the original topic again with its payload intact: a plain
    // read decodes it to the same event.
    let consumer_config = stack.kafka.base();
    let reader: rdkafka::consumer::BaseConsumer = consumer_config
        .clone()
        .set("group.id", format!("{}reader", stack.kafka.topic_prefix))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    rdkafka::consumer::Consumer::subscribe(&reader, &[stack.names.name(Topic::Orders).as_str()])
        .unwrap();
    let mut decoded = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while decoded.len() < 2 && std::time::Instant::now() < deadline {
        if let Some(Ok(message)) = reader.poll(Duration::from_millis(200)) {
            decoded.push(stack.codec.decode(message.payload()).await.unwrap());
        }
    }
    assert_eq!(decoded, [event.clone(), event]);
    shutdown.cancel();
    relay.await.unwrap();
    consumer.await.unwrap();
}

#[tokio::test]
async fn transient_failures_are_retried_then_the_partition_pauses_and_resumes_in_order() {
    let stack = TestStack::new(1).await;
    let order = Uuid::now_v7();
    let flaky = support::cancellation_request(order, "flaky-step");
    let after = step_event(order, 1);
    stack
        .append_committed(&[flaky.clone(), after.clone()])
        .await;
    let shutdown = CancellationToken::new();
    let relay = stack.spawn_relay(&shutdown);
    // fast_retry allows 3 retries per round, so the first round makes 4 attempts and then
    // pauses the partition. Its first attempt calls the handler twice (the batch, then the
    // record alone to find the failing one); retries go record by record, once each: 5 of
    // the 6 failures. After the cool-down the batch call takes the last one and the record,
    // on its own, succeeds. Each attempt that fails counts one retry.
    let handler = support::RecordingHandler::failing_transiently(6);
    let consumer = stack.spawn_consumer_with("flaky", handler.clone(), &shutdown);

    let effects = eventually(Duration::from_secs(60), "both events applied", || async {
        let effects = stack.effects().await;
        (effects.len() == 2).then_some(effects)
    })
    .await;

    let applied: Vec<_> = effects.iter().map(|(id, _, _)| *id).collect();
    assert_eq!(
        applied,
        [flaky.metadata.event_id, after.metadata.event_id],
        "order kept"
    );
    let labels = shared_events::metrics::RecordLabels::new(
        &stack.names.name(Topic::Orders),
        "OrderCancellationRequested",
    );
    assert_eq!(stack.metrics.retried.get_or_create(&labels).get(), 4);
    let topic = shared_events::metrics::TopicLabels {
        topic: stack.names.name(Topic::Orders),
    };
    assert_eq!(
        stack.metrics.partitions_paused.get_or_create(&topic).get(),
        1
    );
    assert_eq!(
        handler
            .transient_failures
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    shutdown.cancel();
    relay.await.unwrap();
    consumer.await.unwrap();
}

/// A paused partition says why with the group's commit there, where an operator's read of
/// the group's offsets finds it, until the partition moves again.
#[tokio::test]
async fn a_paused_partition_says_why_with_its_commit_until_it_moves_again() {
    let stack = TestStack::new(1).await;
    let order = Uuid::now_v7();
    let flaky = support::cancellation_request(order, "flaky-step");
    stack.append_committed(std::slice::from_ref(&flaky)).await;
    let shutdown = CancellationToken::new();
    let relay = stack.spawn_relay(&shutdown);
    let handler = support::RecordingHandler::failing_transiently(usize::MAX);
    let retry = shared_events::RetryConfig {
        cool_down_ms: 6_000,
        ..TestStack::fast_retry()
    };
    let consumer = stack.spawn_consumer_retrying("held", handler.clone(), retry, &shutdown);
    let group = format!("{}held", stack.kafka.topic_prefix);
    let read = || {
        let (kafka, group, topics) = (
            stack.kafka.clone(),
            group.clone(),
            vec![stack.names.name(Topic::Orders)],
        );
        async move {
            tokio::task::spawn_blocking(move || GroupProgress::read(&kafka, &group, &topics))
                .await
                .unwrap()
                .ok()
                .and_then(|progress| progress.of_key(order.to_string().as_bytes()).pop())
        }
    };

    let held = eventually(Duration::from_secs(30), "the pause said", || async {
        read().await.filter(|position| position.held_back.is_some())
    })
    .await;
    let Some(HeldBack::Paused {
        since,
        until,
        reason,
    }) = &held.held_back
    else {
        panic!("paused, not {:?}", held.held_back)
    };
    assert_eq!(
        (held.committed, held.lag()),
        (Some(0), 1),
        "at the failing record"
    );
    assert!(
        reason.contains("the test asked for a transient failure"),
        "{reason}"
    );
    assert!(
        *until - *since >= chrono::TimeDelta::seconds(6),
        "{since} .. {until}"
    );

    // The cause goes; after the cool-down the record is applied and the next commit
    // clears what the pause said.
    handler
        .transient_failures
        .store(0, std::sync::atomic::Ordering::SeqCst);
    let moved = eventually(
        Duration::from_secs(60),
        "the partition moved on",
        || async {
            read()
                .await
                .filter(|position| position.committed == Some(1))
        },
    )
    .await;
    assert_eq!((moved.lag(), moved.held_back), (0, None));
    shutdown.cancel();
    relay.await.unwrap();
    consumer.await.unwrap();
}

/// Appends the given steps of every order, step by step, 30 events per transaction.
async fn append_steps(stack: &TestStack, orders: &[Uuid], steps: std::ops::Range<usize>) {
    let events: Vec<_> = steps
        .flat_map(|step| orders.iter().map(move |order| step_event(*order, step)))
        .collect();
    for chunk in events.chunks(30) {
        stack.append_committed(chunk).await;
    }
}

#[tokio::test]
async fn consumers_joining_and_leaving_the_group_lose_nothing_and_keep_per_order_order() {
    members_join_and_leave(GroupProtocol::Classic).await;
}

/// The same on KIP-848's consumer protocol (`KAFKA_GROUP_PROTOCOL=consumer`), where the
/// broker assigns the partitions.
#[tokio::test]
async fn on_the_kip_848_protocol_members_joining_and_leaving_lose_nothing_either() {
    members_join_and_leave(GroupProtocol::Consumer).await;
}

async fn members_join_and_leave(protocol: GroupProtocol) {
    let mut stack = TestStack::new(6).await;
    stack.kafka.group_protocol = protocol;
    let orders: Vec<Uuid> = (0..30).map(|_| Uuid::now_v7()).collect();
    let shutdown = CancellationToken::new();
    let first_shutdown = CancellationToken::new();
    let relay = stack.spawn_relay(&shutdown);
    let first = stack.spawn_consumer("rebalance", &first_shutdown);
    append_steps(&stack, &orders, 0..4).await;
    eventually(
        Duration::from_secs(60),
        "the first member to apply events",
        || async { (stack.effects().await.len() >= 30).then_some(()) },
    )
    .await;

    // A second member joins (rebalance), then the first leaves (rebalance again), while
    // events keep coming.
    let second = stack.spawn_consumer("rebalance", &shutdown);
    append_steps(&stack, &orders, 4..7).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    first_shutdown.cancel();
    first.await.unwrap();
    append_steps(&stack, &orders, 7..10).await;

    let effects = eventually(Duration::from_secs(120), "all 300 events", || async {
        let effects = stack.effects().await;
        (effects.len() >= 300).then_some(effects)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(stack.effects().await.len(), 300, "each event applied once");
    let mut per_order: std::collections::HashMap<Uuid, Vec<String>> = Default::default();
    for (_, order, step) in effects {
        per_order.entry(order).or_default().push(step);
    }
    let expected: Vec<String> = (0..10).map(|s| format!("step-{s:04}")).collect();
    for (order, steps) in per_order {
        assert_eq!(steps, expected, "order {order} applied out of order");
    }
    shutdown.cancel();
    relay.await.unwrap();
    second.await.unwrap();
}

#[tokio::test]
async fn a_rejected_record_costs_only_itself_and_its_batch_is_kept() {
    let stack = TestStack::new(1).await;
    let order = Uuid::now_v7();
    let rejected = support::cancellation_request(order, "reject-me");
    let mut events: Vec<Event> = (0..5).map(|step| step_event(order, step)).collect();
    events.push(rejected.clone());
    events.extend((5..10).map(|step| step_event(order, step)));
    // Everything is on Kafka before the consumer starts, so the records arrive together and
    // are applied as one batch.
    let shutdown = CancellationToken::new();
    let relay = stack.publish(&events, &shutdown).await;
    let consumer = stack.spawn_consumer("batch-poison", &shutdown);

    let effects = eventually(Duration::from_secs(60), "the ten good records", || async {
        let effects = stack.effects().await;
        (effects.len() >= 10).then_some(effects)
    })
    .await;
    let steps: Vec<String> = effects.into_iter().map(|(_, _, step)| step).collect();
    let expected: Vec<String> = (0..10).map(|s| format!("step-{s:04}")).collect();
    assert_eq!(steps, expected, "kept, in order, once each");
    let dlq = stack.names.dead_letter(Topic::Orders);
    let letters = eventually(Duration::from_secs(30), "the dead letter", || async {
        let letters = read_dead_letters(&stack.kafka, &dlq).unwrap();
        (!letters.is_empty()).then_some(letters)
    })
    .await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].error_class.as_deref(), Some("handler_rejected"));
    let (recorded, rejected_recorded): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE event_id = $1) FROM processed_events",
    )
    .bind(rejected.metadata.event_id)
    .fetch_one(&stack.pool)
    .await
    .unwrap();
    assert_eq!(
        (recorded, rejected_recorded),
        (10, 0),
        "the rejected record's dedup row rolled back with it"
    );
    shutdown.cancel();
    relay.await.unwrap();
    consumer.await.unwrap();
}

/// Takes only cancellation requests; the `orders` topic's other events are not its business.
#[derive(Clone, Default)]
struct CancellationsOnly(support::RecordingHandler);

impl EventHandler for CancellationsOnly {
    const EVENT_TYPES: &'static [&'static str] = &["OrderCancellationRequested"];

    async fn handle(
        &self,
        events: &[&Event],
        tx: &mut sqlx::PgConnection,
    ) -> Result<Vec<Event>, HandlerError> {
        self.0.handle(events, tx).await
    }
}

#[tokio::test]
async fn events_the_handler_does_not_take_are_skipped_without_a_transaction() {
    let stack = TestStack::new(1).await;
    let order = Uuid::now_v7();
    let placed = support::sample_order_placed(order);
    let step = step_event(order, 0);
    let shutdown = CancellationToken::new();
    let relay = stack
        .publish(&[placed.clone(), step.clone()], &shutdown)
        .await;
    let consumer = stack.spawn_consumer_with("skipping", CancellationsOnly::default(), &shutdown);

    let effects = eventually(Duration::from_secs(60), "the cancellation", || async {
        let effects = stack.effects().await;
        (!effects.is_empty()).then_some(effects)
    })
    .await;
    assert_eq!(effects[0].0, step.metadata.event_id);
    let recorded: Vec<Uuid> = sqlx::query_scalar("SELECT event_id FROM processed_events")
        .fetch_all(&stack.pool)
        .await
        .unwrap();
    assert_eq!(
        recorded,
        [step.metadata.event_id],
        "OrderPlaced left no trace"
    );
    let topic = shared_events::metrics::TopicLabels {
        topic: stack.names.name(Topic::Orders),
    };
    assert_eq!(stack.metrics.skipped.get_or_create(&topic).get(), 1);
    shutdown.cancel();
    relay.await.unwrap();
    consumer.await.unwrap();
}

/// Shipping hears one order's cancellation on `orders` and its reservation on `inventory`:
/// in one batch, the partitions' records are applied in the order they were sent, not one
/// partition's run after the other's as the fetches returned them.
#[tokio::test]
async fn a_batch_applies_records_of_several_partitions_in_the_order_they_were_sent() {
    let stack = TestStack::new(2).await;
    let (first, second) = (Uuid::now_v7(), Uuid::now_v7());
    let sent_at = chrono::Utc::now().timestamp_millis() - 60_000;
    let producer: FutureProducer = stack.kafka.idempotent_producer().create().unwrap();
    // Each partition's records are on Kafka in one piece, before the consumer starts: they
    // arrive together, in one batch.
    for (partition, order, steps) in [(0, first, [0, 2]), (1, second, [1, 3])] {
        for step in steps {
            let bytes = stack.codec.encode(&step_event(order, step)).await.unwrap();
            producer
                .send(
                    FutureRecord::to(&stack.names.name(Topic::Orders))
                        .partition(partition)
                        .key(&order.to_string())
                        .payload(&bytes)
                        .timestamp(sent_at + 1_000 * step as i64),
                    Duration::from_secs(10),
                )
                .await
                .unwrap();
        }
    }
    let shutdown = CancellationToken::new();
    // A batch waits for the second partition's first fetch.
    let batching = ConsumerConfig {
        batch_max_wait_ms: 1_000,
        ..ConsumerConfig::default()
    };
    let consumer = stack.spawn_consumer_batching(
        stack.pool.clone(),
        "publish-order",
        support::RecordingHandler::default(),
        TestStack::fast_retry(),
        batching,
        &shutdown,
    );
    let effects = eventually(Duration::from_secs(60), "the four records", || async {
        let effects = stack.effects().await;
        (effects.len() >= 4).then_some(effects)
    })
    .await;
    let steps: Vec<String> = effects.into_iter().map(|(_, _, step)| step).collect();
    let sent: Vec<String> = (0..4).map(|s| format!("step-{s:04}")).collect();
    assert_eq!(steps, sent, "applied in the order they were sent");
    shutdown.cancel();
    consumer.await.unwrap();
}
