//! Writes at the edges: a stock or balance PUT based on a stale read must not overwrite a
//! reservation or a charge made since (If-Match / ETag), and concurrent first PUTs of one
//! account all succeed.

use orderflow_e2e::client::{self, order_body};
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::{Ctx, Run, seed};

/// PUTs `body` to `url` with `if_match` (if any); returns the status, ETag and body.
async fn put(
    url: &str,
    if_match: Option<&str>,
    body: &Value,
) -> (StatusCode, Option<String>, Value) {
    let mut request = orderflow_e2e::http().put(url).json(body);
    if let Some(tag) = if_match {
        request = request.header("If-Match", tag);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let etag = response
        .headers()
        .get("etag")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, etag, response.json().await.unwrap_or(Value::Null))
}

async fn etag_of(url: &str) -> String {
    let response = orderflow_e2e::http().get(url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.headers()["etag"].to_str().unwrap().to_owned()
}

pub(super) fn a_write_based_on_a_stale_read_is_refused_with_412(ctx: &Ctx) -> Run<'_> {
    Box::pin(async move {
        let stack = &ctx.0;
        let (products, customers) = seed(stack, "etag", &[(100, 50)], &[100_000]).await;
        let product_url = format!(
            "{}/products/{}",
            stack.url("inventory-service"),
            products[0]
        );
        let account_url = format!("{}/accounts/{}", stack.url("billing-service"), customers[0]);
        let restock = json!({"name": "etag", "unit_price_minor": 100, "currency": "EUR",
                             "available": 100});
        let top_up = json!({"currency": "EUR", "credit_limit_minor": 0,
                            "balance_minor": 500_000});
        let stale_stock = etag_of(&product_url).await;
        let stale_account = etag_of(&account_url).await;

        // An order reserves 2 units and charges 200 after those reads.
        let order_id = client::place(
            stack,
            &order_body(&customers[0], &[(&products[0], 2)], "DE"),
        )
        .await;
        client::wait_for_status(stack, &order_id, "COMPLETED").await;

        let (status, _, problem) = put(&product_url, Some(&stale_stock), &restock).await;
        assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{problem}");
        assert_eq!(problem["type"], "/problems/precondition-failed");
        let (status, _, _) = put(&account_url, Some(&stale_account), &top_up).await;
        assert_eq!(status, StatusCode::PRECONDITION_FAILED);
        assert_eq!(client::product(stack, &products[0]).await["available"], 48);
        assert_eq!(
            client::account(stack, &customers[0]).await["balance_minor"],
            99_800
        );

        // Read again, and the same change goes through, answering the new version.
        let fresh = etag_of(&product_url).await;
        let (status, etag, view) = put(&product_url, Some(&fresh), &restock).await;
        assert_eq!(status, StatusCode::OK, "{view}");
        assert_eq!(view["available"], 100);
        assert_eq!(etag.unwrap(), etag_of(&product_url).await);
        let fresh = etag_of(&account_url).await;
        let (status, _, view) = put(&account_url, Some(&fresh), &top_up).await;
        assert_eq!(status, StatusCode::OK, "{view}");
        assert_eq!(view["balance_minor"], 500_000);

        // If-Match presumes the resource exists; a malformed one is a bad request.
        let missing = format!("{}/products/etag-missing", stack.url("inventory-service"));
        let (status, _, _) = put(&missing, Some("*"), &restock).await;
        assert_eq!(status, StatusCode::PRECONDITION_FAILED);
        let (status, _) = client::get_json(&missing).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _, problem) = put(&product_url, Some("not-a-tag"), &restock).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    })
}

pub(super) fn concurrent_first_puts_of_an_account_all_succeed(ctx: &Ctx) -> Run<'_> {
    Box::pin(async move {
        let stack = &ctx.0;
        let url = format!(
            "{}/accounts/race-{}",
            stack.url("billing-service"),
            uuid::Uuid::new_v4().simple()
        );
        let body = json!({"currency": "EUR", "credit_limit_minor": 0, "balance_minor": 1_000});
        let puts = (0..16).map(|_| put(&url, None, &body));
        let statuses: Vec<StatusCode> = futures::future::join_all(puts)
            .await
            .into_iter()
            .map(|(status, _, _)| status)
            .collect();
        let created = statuses
            .iter()
            .filter(|s| **s == StatusCode::CREATED)
            .count();
        let updated = statuses.iter().filter(|s| **s == StatusCode::OK).count();
        assert_eq!((created, updated), (1, 15), "{statuses:?}");
    })
}
