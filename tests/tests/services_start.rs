//! Every service starts as a real process on the local stack, reports alive and ready, serves
//! metrics, and exits cleanly on SIGTERM. Needs the stack (`scripts/stack-up`) and the
//! service binaries (`cargo build --workspace --bins`); `scripts/test` provides both.

use orderflow_e2e::{SERVICES, Stack};
use sqlx::Connection;

#[tokio::test]
async fn every_service_starts_becomes_ready_serves_metrics_and_stops_on_sigterm() {
    let mut stack = Stack::start("boot", &[]).await;
    let client = reqwest::Client::new();
    for name in SERVICES {
        let base_url = stack.url(name);
        let alive = client
            .get(format!("{base_url}/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(alive.status(), 200);
        let metrics = client
            .get(format!("{base_url}/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(metrics.status(), 200);
        let text = metrics.text().await.unwrap();
        assert!(
            text.contains(&format!(
                "orderflow_outbox_relay_active{{service=\"{name}\"}}"
            )),
            "{name}: {text}"
        );
        assert!(text.contains("orderflow_outbox_backlog_events"));
    }
    // Each stop asserts a clean exit within 20 s of SIGTERM.
    stack.stop_all().await;
}

/// The outbox lets a service take work while the broker is away, so a broker outage must
/// not take it out of its Service: ready means its HTTP API can serve (database up), and the
/// broker's state is a metric.
#[tokio::test]
async fn every_service_is_ready_while_the_broker_is_unreachable() {
    let nobody_listens = orderflow_e2e::free_port();
    let mut stack = Stack::start(
        "nobroker",
        &[(
            "KAFKA_BOOTSTRAP_SERVERS",
            format!("127.0.0.1:{nobody_listens}"),
        )],
    )
    .await;
    let client = reqwest::Client::new();
    for name in SERVICES {
        let base_url = stack.url(name);
        let ready = client
            .get(format!("{base_url}/readyz"))
            .send()
            .await
            .unwrap();
        assert_eq!(ready.status(), 200, "{name}");
        let body: serde_json::Value = ready.json().await.unwrap();
        assert_eq!(body["broker"], "unreachable", "{name}: {body}");
        let metrics = client
            .get(format!("{base_url}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics.contains(&format!(
                "orderflow_broker_reachable{{service=\"{name}\"}} 0"
            )),
            "{name}: {metrics}"
        );
    }
    stack.stop_all().await;
}

/// The rows that only guard against repeats do not grow forever: each service prunes its
/// dedup record, and order-service its Idempotency-Keys, past their retention.
#[tokio::test]
async fn old_dedup_rows_and_idempotency_keys_are_pruned() {
    let mut stack = Stack::start("prune", &[("PRUNE_INTERVAL_SECS", "1".to_owned())]).await;
    let database_url = stack.services["order-service"].database_url.clone();
    let mut db = sqlx::PgConnection::connect(&database_url).await.unwrap();
    sqlx::raw_sql(
        "INSERT INTO processed_events (consumer_group, event_id, event_type, topic,
             kafka_partition, kafka_offset, processed_at)
         VALUES ('order-service', gen_random_uuid(), 'PaymentAuthorized', 'payments', 0, 1,
                 now() - interval '30 days'),
                ('order-service', gen_random_uuid(), 'PaymentAuthorized', 'payments', 0, 2,
                 now());
         INSERT INTO idempotency_keys (idempotency_key, request, order_id, created_at)
         VALUES ('old-key', '{}', gen_random_uuid(), now() - interval '30 days'),
                ('new-key', '{}', gen_random_uuid(), now());",
    )
    .execute(&mut db)
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (dedup, keys): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM processed_events WHERE kafka_partition = 0
                        AND consumer_group = 'order-service' AND topic = 'payments'),
                    (SELECT count(*) FROM idempotency_keys WHERE idempotency_key LIKE '%-key')",
        )
        .fetch_one(&mut db)
        .await
        .unwrap();
        if (dedup, keys) == (1, 1) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not pruned: {dedup} dedup rows, {keys} keys"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let kept: String = sqlx::query_scalar(
        "SELECT idempotency_key FROM idempotency_keys WHERE idempotency_key LIKE '%-key'",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(kept, "new-key");
    drop(db);
    stack.stop_all().await;
}
