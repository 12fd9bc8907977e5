//! The dedup record is pruned by age, in chunks, and only past its retention.

mod support;

use chrono::Utc;
use shared_events::{PruneTarget, RetentionConfig};
use support::TestStack;

async fn insert_processed(stack: &TestStack, rows: i64, age: &str) {
    sqlx::query(
        "INSERT INTO processed_events
             (consumer_group, event_id, event_type, topic, kafka_partition, kafka_offset, processed_at)
         SELECT 'pruning', gen_random_uuid(), 'OrderPlaced', 'orders', 0, n, now() - $2::interval
         FROM generate_series(1, $1) AS n",
    )
    .bind(rows)
    .bind(age)
    .execute(&stack.pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn dedup_rows_past_their_retention_are_pruned_and_younger_ones_kept() {
    let stack = TestStack::new(1).await;
    // More than one chunk of old rows, and rows just inside the retention.
    insert_processed(&stack, 25_000, "15 days").await;
    insert_processed(&stack, 10, "13 days").await;
    let config = RetentionConfig {
        processed_events_hours: 14 * 24,
        interval_secs: 3_600,
    };

    let pruned = PruneTarget::processed_events(&config)
        .prune(&stack.pool, Utc::now())
        .await
        .unwrap();

    assert_eq!(pruned, 25_000);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM processed_events")
        .fetch_one(&stack.pool)
        .await
        .unwrap();
    assert_eq!(left, 10);
}
