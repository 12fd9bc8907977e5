//! HTTP calls the tests make, with the assertions every caller would repeat.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::Stack;

pub fn order_body(customer_id: &str, items: &[(&str, i64)], country: &str) -> Value {
    json!({
        "customer_id": customer_id,
        "currency": "EUR",
        "items": items.iter().map(|(p, q)| json!({"product_id": p, "quantity": q})).collect::<Vec<_>>(),
        "shipping_address": {"recipient": "Test Customer", "line1": "1 Test Street",
                             "city": "Testville", "postal_code": "12345", "country": country},
    })
}

/// Places an order; returns its id.
pub async fn place(stack: &Stack, body: &Value) -> String {
    place_at(stack.url("order-service"), body).await
}

/// Places an order through the order-service replica at `base_url`; returns its id.
pub async fn place_at(base_url: &str, body: &Value) -> String {
    let response = crate::http()
        .post(format!("{base_url}/orders"))
        .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::ACCEPTED,
        "{}",
        response.text().await.unwrap()
    );
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let accepted: Value = response.json().await.unwrap();
    let order_id = accepted["order_id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/orders/{order_id}"));
    order_id
}

pub async fn get_json(url: &str) -> (StatusCode, Value) {
    let response = crate::http().get(url).send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// POSTs `body` as JSON: the status and the JSON answer (`Null` when there is none).
pub async fn post_json(url: &str, body: &Value) -> (StatusCode, Value) {
    let response = crate::http().post(url).json(body).send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

pub async fn order(stack: &Stack, order_id: &str) -> Value {
    order_at(stack.url("order-service"), order_id).await
}

/// The order as the order-service replica at `base_url` answers it.
pub async fn order_at(base_url: &str, order_id: &str) -> Value {
    let (status, order) = get_json(&format!("{base_url}/orders/{order_id}")).await;
    assert_eq!(status, StatusCode::OK, "{order}");
    order
}

/// Polls the order until its status is `status`; panics with the timeline otherwise.
pub async fn wait_for_status(stack: &Stack, order_id: &str, status: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let order = order(stack, order_id).await;
        if order["status"] == status {
            return order;
        }
        let terminal = ["COMPLETED", "CANCELLED"].contains(&order["status"].as_str().unwrap());
        assert!(
            !terminal && tokio::time::Instant::now() < deadline,
            "order {order_id} did not reach {status}: {order:#}"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// Polls the order until it is COMPLETED or CANCELLED.
pub async fn wait_terminal(stack: &Stack, order_id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    loop {
        let order = order(stack, order_id).await;
        if ["COMPLETED", "CANCELLED"].contains(&order["status"].as_str().unwrap()) {
            return order;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "order {order_id} still in flight: {order:#}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub async fn cancel(stack: &Stack, order_id: &str) -> (StatusCode, Value) {
    let response = crate::http()
        .post(format!(
            "{}/orders/{order_id}/cancel",
            stack.url("order-service")
        ))
        .json(&json!({"reason": "changed my mind"}))
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

pub async fn account(stack: &Stack, customer_id: &str) -> Value {
    let (status, account) = get_json(&format!(
        "{}/accounts/{customer_id}",
        stack.url("billing-service")
    ))
    .await;
    assert_eq!(status, StatusCode::OK, "{account}");
    account
}

pub async fn product(stack: &Stack, product_id: &str) -> Value {
    let (status, product) = get_json(&format!(
        "{}/products/{product_id}",
        stack.url("inventory-service")
    ))
    .await;
    assert_eq!(status, StatusCode::OK, "{product}");
    product
}

/// A counter's value summed over its label sets, from a service's `/metrics`.
pub async fn metric(base_url: &str, name: &str) -> f64 {
    metric_where(base_url, name, "").await
}

/// [`metric`] summed over the label sets that include `label` (e.g.
/// `awaiting="StockReserved"`).
pub async fn metric_where(base_url: &str, name: &str, label: &str) -> f64 {
    let text = crate::http()
        .get(format!("{base_url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|line| line.starts_with(name) && line[name.len()..].starts_with(['{', ' ']))
        .filter(|line| line.contains(label))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `POST /sagas/{order_id}/{action}` (as the operator, [`crate::auth::OPERATOR`]) with a
/// reason: `redrive` (all of the order's dead letters), `nudge` or `cancel`.
pub async fn operate(
    stack: &Stack,
    order_id: &str,
    action: &str,
    reason: &str,
) -> (StatusCode, Value) {
    operate_with(stack, order_id, action, &json!({ "reason": reason })).await
}

/// [`operate`] with a body of the caller's.
pub async fn operate_with(
    stack: &Stack,
    order_id: &str,
    action: &str,
    body: &Value,
) -> (StatusCode, Value) {
    let url = format!("{}/sagas/{order_id}/{action}", stack.url("order-service"));
    post_json(&url, body).await
}

/// `GET /sagas/stuck` (as an operator): the orders in flight idle past the threshold.
pub async fn stuck_sagas(stack: &Stack) -> Value {
    let url = format!("{}/sagas/stuck", stack.url("order-service"));
    let (status, listing) = get_json(&url).await;
    assert_eq!(status, StatusCode::OK, "{listing:#}");
    listing
}

/// `GET /sagas/dead-letters` (as an operator): the letters needing one, grouped by cause;
/// with `acknowledged`, those acknowledged.
pub async fn dead_letter_groups(stack: &Stack, acknowledged: bool) -> Value {
    let url = format!(
        "{}/sagas/dead-letters?acknowledged={acknowledged}",
        stack.url("order-service")
    );
    let (status, listing) = get_json(&url).await;
    assert_eq!(status, StatusCode::OK, "{listing:#}");
    listing
}

/// `POST /sagas/dead-letters/acknowledge` (as an operator) with `body`.
pub async fn acknowledge(stack: &Stack, body: &Value) -> (StatusCode, Value) {
    let url = format!(
        "{}/sagas/dead-letters/acknowledge",
        stack.url("order-service")
    );
    post_json(&url, body).await
}

/// The order's entry in a `GET /sagas/stuck` listing, if it is listed.
pub fn stuck_entry_in(listing: &Value, order_id: &str) -> Option<Value> {
    listing["sagas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|saga| saga["order_id"] == order_id)
        .cloned()
}

/// The order's entry in `GET /sagas/stuck`, if it is listed.
pub async fn stuck_entry(stack: &Stack, order_id: &str) -> Option<Value> {
    stuck_entry_in(&stuck_sagas(stack).await, order_id)
}

/// Polls `GET /sagas/stuck` until it lists the order (30 s at most); returns the listing.
pub async fn wait_until_stuck(stack: &Stack, order_id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let listing = stuck_sagas(stack).await;
        if stuck_entry_in(&listing, order_id).is_some() {
            return listing;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{order_id} never listed as stuck: {listing:#}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
