//! Every service starts as a real process on the local stack, reports alive and ready, serves
//! metrics, and exits cleanly on SIGTERM. Needs the stack (`scripts/stack-up`) and the
//! service binaries (`cargo build --workspace --bins`); `scripts/test` provides both.

use std::collections::HashMap;

use orderflow_e2e::{SERVICES, Stack};
use shared_events::KafkaConfig;
use sqlx::Connection;

#[tokio::test]
async fn every_service_starts_becomes_ready_serves_metrics_and_stops_on_sigterm() {
    let mut stack = Stack::start("boot", &[]).await;
    let client = orderflow_e2e::http();
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
    let client = orderflow_e2e::http();
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
         INSERT INTO idempotency_keys (customer_id, idempotency_key, request, order_id,
             created_at)
         VALUES ('prune-c', 'old-key', '{}', gen_random_uuid(), now() - interval '30 days'),
                ('prune-c', 'new-key', '{}', gen_random_uuid(), now());",
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

/// PUTs a product to inventory-service; the response's status and Retry-After header.
async fn put_product_status(base_url: &str, product: &str) -> (u16, Option<String>) {
    let response = orderflow_e2e::http()
        .put(format!("{base_url}/products/{product}"))
        .json(
            &serde_json::json!({"name": product, "unit_price_minor": 100,
                                  "currency": "EUR", "available": 1}),
        )
        .send()
        .await
        .unwrap();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    if !response.status().is_success() {
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(content_type, "application/problem+json");
    }
    (response.status().as_u16(), retry_after)
}

/// With the broker away the outbox backs up; past the threshold a service refuses new work
/// with 503 and Retry-After, still serves reads, and a refused request writes nothing.
#[tokio::test]
async fn a_service_whose_outbox_backs_up_refuses_new_work_with_503() {
    let nobody_listens = orderflow_e2e::free_port();
    let mut stack = Stack::start(
        "shed",
        &[
            (
                "KAFKA_BOOTSTRAP_SERVERS",
                format!("127.0.0.1:{nobody_listens}"),
            ),
            ("OVERLOAD_OUTBOX_BACKLOG", "3".to_owned()),
        ],
    )
    .await;
    let inventory = stack.url("inventory-service").to_owned();
    let mut accepted = 0;
    let mut refused = None;
    for i in 0..100 {
        match put_product_status(&inventory, &format!("shed-{i}")).await {
            (200 | 201, _) => accepted += 1,
            (503, retry_after) => {
                refused = retry_after;
                break;
            }
            other => panic!("unexpected answer {other:?}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(refused.as_deref(), Some("1"), "never refused");
    assert!(
        accepted > 3,
        "refused before the backlog passed 3: {accepted}"
    );
    let reads = orderflow_e2e::http()
        .get(format!("{inventory}/products"))
        .send()
        .await
        .unwrap();
    assert_eq!(reads.status(), 200);
    let database_url = stack.services["inventory-service"].database_url.clone();
    let mut db = sqlx::PgConnection::connect(&database_url).await.unwrap();
    let (products, outbox): (i64, i64) =
        sqlx::query_as("SELECT (SELECT count(*) FROM products), (SELECT count(*) FROM outbox)")
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!((products, outbox), (accepted, accepted));
    drop(db);
    stack.stop_all().await;
}

/// A client over its request rate gets 429 with Retry-After; another client, even from the
/// same address, does not.
#[tokio::test]
async fn a_client_over_its_rate_gets_429() {
    let mut stack = Stack::start(
        "rate",
        &[
            ("RATE_LIMIT_PER_SECOND", "1".to_owned()),
            ("RATE_LIMIT_BURST", "3".to_owned()),
        ],
    )
    .await;
    let inventory = stack.url("inventory-service").to_owned();
    let mut statuses = Vec::new();
    for i in 0..8 {
        statuses.push(put_product_status(&inventory, &format!("rate-{i}")).await);
    }
    // Another customer, from the same address at the same moment, is a client of its own:
    // the limit keys on the token's subject, not on the address they share (keyed on the
    // address, this customer got 429 for the operator's requests).
    let other_customer = reqwest::Client::new()
        .get(format!("{inventory}/products"))
        .bearer_auth(orderflow_e2e::auth::token("rate-bob", "orders"))
        .send()
        .await
        .unwrap();
    assert_eq!(other_customer.status(), 200, "{statuses:?}");
    let limited: Vec<_> = statuses.iter().filter(|(s, _)| *s == 429).collect();
    assert!(limited.len() >= 4, "{statuses:?}");
    assert!(
        limited.iter().all(|(_, retry)| retry.is_some()),
        "{statuses:?}"
    );
    // Health is never limited.
    for _ in 0..5 {
        let health = orderflow_e2e::http()
            .get(format!("{inventory}/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(health.status(), 200);
    }
    stack.stop_all().await;
}

/// `--help` shows each setting's environment value, which for `DATABASE_URL` holds the
/// database password: every binary hides it (as it hides the other secrets).
#[test]
fn help_never_prints_the_database_password() {
    for service in SERVICES {
        let output = std::process::Command::new(orderflow_e2e::binary(service))
            .arg("--help")
            .env(
                "DATABASE_URL",
                "postgres://app:hunter2-secret@db:5432/orders",
            )
            .output()
            .unwrap();
        assert!(output.status.success(), "{service} --help failed");
        let help = String::from_utf8_lossy(&output.stdout);
        assert!(help.contains("DATABASE_URL"), "{service}: {help}");
        assert!(
            !help.contains("hunter2-secret"),
            "{service} prints the password:\n{help}"
        );
    }
}

/// With `METRICS_ADDR` set (as in every pod), `/metrics` is served only there: the API port,
/// which the Service and an ingress route to, answers 404 for it. And a web page whose host
/// name an attacker re-points at 127.0.0.1 (DNS rebinding) reaches a developer's services
/// from the browser, but with its own host name: refused with 421, before any route. The
/// loopback names, any IP address and the names configured are answered.
#[tokio::test]
async fn metrics_are_apart_from_the_api_and_unknown_host_names_are_refused() {
    let metrics_ports: HashMap<&str, u16> = SERVICES
        .iter()
        .map(|&name| (name, orderflow_e2e::free_port()))
        .collect();
    let mut stack = Stack::start_with(
        Stack::new_prefix("apart"),
        &KafkaConfig::local(&orderflow_e2e::bootstrap_servers()),
        &[(
            "HTTP_ALLOWED_HOSTS",
            "localhost,shop.example.com".to_owned(),
        )],
        |name| vec![("METRICS_ADDR", format!("127.0.0.1:{}", metrics_ports[name]))],
    )
    .await;
    let client = orderflow_e2e::http();
    for name in SERVICES {
        let base_url = stack.url(name);
        let on_the_api = client
            .get(format!("{base_url}/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(on_the_api.status(), 404, "{name}");
        let apart = client
            .get(format!("http://127.0.0.1:{}/metrics", metrics_ports[name]))
            .send()
            .await
            .unwrap();
        assert_eq!(apart.status(), 200, "{name}");
        let text = apart.text().await.unwrap();
        assert!(
            text.contains("orderflow_outbox_backlog_events"),
            "{name}: {text}"
        );

        let port = base_url.rsplit(':').next().unwrap();
        for (host, expected) in [
            (format!("rebound.evil.example:{port}"), 421),
            ("localhost.evil.example".to_owned(), 421),
            (format!("localhost:{port}"), 200),
            ("shop.example.com".to_owned(), 200),
            (format!("127.0.0.1:{port}"), 200),
            ("10.244.0.17:8080".to_owned(), 200),
        ] {
            let response = client
                .get(format!("{base_url}/healthz"))
                .header("Host", &host)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), expected, "{name}, Host: {host}");
            if expected == 421 {
                assert_eq!(
                    response.headers()["content-type"],
                    "application/problem+json"
                );
                let problem: serde_json::Value = response.json().await.unwrap();
                assert_eq!(problem["type"], "/problems/unknown-host", "{problem}");
            }
        }
    }
    // Before any route: the console and an order's page are refused alike.
    let base_url = stack.url("order-service");
    let port = base_url.rsplit(':').next().unwrap();
    for path in ["/console", "/orders/00000000-0000-0000-0000-000000000000"] {
        let refused = client
            .get(format!("{base_url}{path}"))
            .header("Host", format!("rebound.evil.example:{port}"))
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 421, "{path}");
    }
    stack.stop_all().await;
}
