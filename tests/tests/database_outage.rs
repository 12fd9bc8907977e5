//! PostgreSQL goes away for a few seconds while orders flow (the stack's own cluster is
//! stopped with every session in it, then started again): the services stay alive
//! (`/healthz`), refuse new work with 503 and `Retry-After` (not a 500, and nothing is
//! written), and once it is back every accepted order reaches its end with the money and the
//! stock exact. A test binary of its own: stopping the cluster must meet no other test.

use std::time::Duration;

use orderflow_e2e::client::{order_body, wait_for_status};
use orderflow_e2e::{SERVICES, Stack, local_postgres, put_account, put_product, wait_for_catalog};
use reqwest::StatusCode;
use serde_json::Value;

const OUTAGE: Duration = Duration::from_secs(6);
const PRICE: i64 = 250;

#[tokio::test]
async fn a_database_outage_is_a_503_meanwhile_and_costs_no_order() {
    let mut stack = Stack::start("pgdown", &[]).await;
    put_product(&stack, "pgdown-product", PRICE, 10_000).await;
    put_account(&stack, "pgdown-customer", 1_000_000).await;
    wait_for_catalog(&stack, &["pgdown-product"]).await;
    let url = format!("{}/orders", stack.url("order-service"));
    let body = order_body("pgdown-customer", &[("pgdown-product", 1)], "DE");
    let http = orderflow_e2e::http();
    let post = || {
        http.post(&url)
            .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
            .json(&body)
            .timeout(Duration::from_secs(15))
            .send()
    };
    let mut accepted = Vec::new();
    for _ in 0..10 {
        let answer = post().await.unwrap();
        assert_eq!(answer.status(), StatusCode::ACCEPTED);
        accepted.push(
            answer.json::<Value>().await.unwrap()["order_id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }

    // The outage, with the orders just placed still in their sagas.
    let outage = tokio::spawn(local_postgres::outage(OUTAGE));
    let mut refused = 0;
    let mut other = Vec::new();
    let deadline = tokio::time::Instant::now() + OUTAGE;
    while tokio::time::Instant::now() < deadline {
        let answer = post().await.unwrap();
        match answer.status() {
            StatusCode::SERVICE_UNAVAILABLE => {
                assert!(answer.headers().contains_key("retry-after"));
                assert_eq!(answer.headers()["content-type"], "application/problem+json");
                refused += 1;
            }
            StatusCode::ACCEPTED => {
                // Before the stop took hold: a real order.
                accepted.push(
                    answer.json::<Value>().await.unwrap()["order_id"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                );
            }
            status => other.push(format!(
                "{status} {}",
                answer.text().await.unwrap_or_default()
            )),
        }
        for name in SERVICES {
            let alive = http
                .get(format!("{}/healthz", stack.url(name)))
                .send()
                .await
                .unwrap();
            assert_eq!(
                alive.status(),
                StatusCode::OK,
                "{name} not alive during the outage"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    outage.await.unwrap();
    println!(
        "during the {OUTAGE:?} outage: {refused} orders refused with 503, other answers {other:?}"
    );
    assert!(
        refused > 0,
        "no order was refused while the database was away"
    );
    assert!(
        other.is_empty(),
        "answers other than 202 and 503: {other:?}"
    );

    // Back: new orders are taken again (a client retrying on 503 gets through), and every
    // accepted order, from before and after the outage, completes exactly once.
    let resumed = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let answer = post().await.unwrap();
        if answer.status() == StatusCode::ACCEPTED {
            accepted.push(
                answer.json::<Value>().await.unwrap()["order_id"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < resumed,
            "orders still refused a minute after the outage"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for order in &accepted {
        wait_for_status(&stack, order, "COMPLETED").await;
    }
    let account = orderflow_e2e::client::account(&stack, "pgdown-customer").await;
    let charged = 1_000_000 - account["balance_minor"].as_i64().unwrap();
    assert_eq!(charged, PRICE * accepted.len() as i64, "{account}");
    let (_, product) = orderflow_e2e::client::get_json(&format!(
        "{}/products/pgdown-product",
        stack.url("inventory-service")
    ))
    .await;
    assert_eq!(
        product["available"].as_i64().unwrap() + product["reserved"].as_i64().unwrap(),
        10_000,
        "{product}"
    );
    println!(
        "{} orders accepted around the outage, each completed once",
        accepted.len()
    );
    stack.stop_all().await;
}
