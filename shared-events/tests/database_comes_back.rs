//! The circuit breaker and the database: a consumer whose database goes away retries, then
//! pauses its partition for a cool-down; once the database answers again the partition
//! retries at once, not when the cool-down ends. (With the 30 s default, orders waited that
//! long after PostgreSQL came back.)

mod support;

use std::time::Duration;

use shared_events::RetryConfig;
use shared_events::metrics::TopicLabels;
use sqlx::postgres::PgPoolOptions;
use support::database_proxy::DatabaseProxy;
use support::{RecordingHandler, TestStack, eventually, step_event};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[tokio::test]
async fn a_partition_paused_while_the_database_was_away_retries_as_soon_as_it_answers() {
    let stack = TestStack::new(1).await;
    let proxy = DatabaseProxy::start(&stack.pool.connect_options()).await;
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(2))
        .connect_with(proxy.options(&stack.pool.connect_options()))
        .await
        .unwrap();
    // A cool-down far longer than the test waits: only an early end can pass it.
    let retry = RetryConfig {
        initial_delay_ms: 50,
        max_delay_ms: 500,
        max_attempts: 3,
        cool_down_ms: 300_000,
    };
    let shutdown = CancellationToken::new();
    let consumer = stack.spawn_consumer_on(
        pool,
        "dbback",
        RecordingHandler::default(),
        retry,
        &shutdown,
    );

    proxy.cut();
    let orders: Vec<Uuid> = (0..5).map(|_| Uuid::now_v7()).collect();
    let events: Vec<_> = orders.iter().map(|order| step_event(*order, 0)).collect();
    let relay = stack.publish(&events, &shutdown).await;
    let topic = TopicLabels {
        topic: stack.names.name(shared_events::contracts::Topic::Orders),
    };
    eventually(
        Duration::from_secs(60),
        "the partition to pause",
        || async {
            (stack.metrics.partitions_paused.get_or_create(&topic).get() >= 1).then_some(())
        },
    )
    .await;
    assert!(stack.effects().await.is_empty());

    proxy.restore();
    eventually(
        Duration::from_secs(30),
        "every event applied once the database answers",
        || async { (stack.effects().await.len() == events.len()).then_some(()) },
    )
    .await;
    shutdown.cancel();
    let _ = tokio::join!(consumer, relay);
}
