//! The REST contract: idempotency keys, bad input, OpenAPI, health, listing and pagination.

use orderflow_e2e::client::{self, order_body};
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::{Ctx, Run, seed};

pub(super) fn idempotency_key_replays_the_original_answer(ctx: &Ctx) -> Run<'_> {
    Box::pin(async move {
        let stack = &ctx.0;
        let (products, customers) = seed(stack, "idem", &[(100, 50)], &[100_000]).await;
        let http = orderflow_e2e::http();
        let url = format!("{}/orders", stack.url("order-service"));
        let body = order_body(&customers[0], &[(&products[0], 1)], "DE");
        let send = |body: Value| {
            http.post(&url)
                .header("Idempotency-Key", "idem-key-1")
                .json(&body)
                .send()
        };
        let first = send(body.clone()).await.unwrap();
        assert_eq!(first.status(), StatusCode::ACCEPTED);
        let first_location = first.headers()["location"].clone();
        let first_body: Value = first.json().await.unwrap();
        let again = send(body.clone()).await.unwrap();
        assert_eq!(again.status(), StatusCode::ACCEPTED);
        assert_eq!(again.headers()["location"], first_location);
        assert_eq!(again.headers()["idempotent-replayed"], "true");
        assert_eq!(again.json::<Value>().await.unwrap(), first_body);
        let mut other = body.clone();
        other["items"][0]["quantity"] = json!(2);
        let conflict = send(other).await.unwrap();
        assert_eq!(conflict.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            conflict.headers()["content-type"],
            "application/problem+json"
        );
        let order_id = first_body["order_id"].as_str().unwrap();
        client::wait_for_status(stack, order_id, "COMPLETED").await;
        let (_, page) = client::get_json(&format!("{url}?customer_id={}", customers[0])).await;
        assert_eq!(page["orders"].as_array().unwrap().len(), 1, "{page}");
        let account = client::account(stack, &customers[0]).await;
        assert_eq!(account["payments"].as_array().unwrap().len(), 1);
    })
}

/// A key is its customer's own: another customer using it first neither takes it from them
/// (before, their later order with it got 422) nor learns that it was used (422 again).
pub(super) fn idempotency_keys_are_each_customers_own(ctx: &Ctx) -> Run<'_> {
    Box::pin(async move {
        let stack = &ctx.0;
        let (products, customers) = seed(stack, "idemown", &[(100, 50)], &[100_000, 100_000]).await;
        let (alice, bob) = (&customers[0], &customers[1]);
        let url = format!("{}/orders", stack.url("order-service"));
        let place = |customer: &str, key: &str| {
            let body = order_body(customer, &[(&products[0], 1)], "DE");
            reqwest::Client::new()
                .post(&url)
                .bearer_auth(orderflow_e2e::auth::token(customer, "orders"))
                .header("Idempotency-Key", key)
                .json(&body)
                .send()
        };
        let fresh = |response: reqwest::Response, what: &str| {
            assert_eq!(response.status(), StatusCode::ACCEPTED, "{what}");
            assert!(
                response.headers().get("idempotent-replayed").is_none(),
                "{what}: answered with another customer's order"
            );
            response.headers()["location"].clone()
        };
        // Bob claims a key before alice uses it: alice's order is placed all the same.
        let key = format!("idemown-{}", uuid::Uuid::new_v4());
        let bobs = fresh(place(bob, &key).await.unwrap(), "bob, first");
        let alices = fresh(place(alice, &key).await.unwrap(), "alice, after bob");
        assert_ne!(bobs, alices);
        // Alice uses a key first: bob's use of it is a new order of his, not a 422 that
        // would tell him alice has used it.
        let key = format!("idemown-{}", uuid::Uuid::new_v4());
        fresh(place(alice, &key).await.unwrap(), "alice, first");
        fresh(place(bob, &key).await.unwrap(), "bob, after alice");
        // Each one's retry still replays their own order.
        let again = place(alice, &key).await.unwrap();
        assert_eq!(again.headers()["idempotent-replayed"], "true");
    })
}

pub(super) fn bad_input_gets_problem_json_naming_the_field(ctx: &Ctx) -> Run<'_> {
    Box::pin(async move {
        let stack = &ctx.0;
        let (products, customers) = seed(stack, "bad", &[(100, 50)], &[100_000]).await;
        let http = orderflow_e2e::http();
        let url = format!("{}/orders", stack.url("order-service"));
        let good = order_body(&customers[0], &[(&products[0], 1)], "DE");
        let post = |body: String, key: Option<&str>| {
            let mut request = http
                .post(&url)
                .header("content-type", "application/json")
                .body(body);
            if let Some(key) = key {
                request = request.header("Idempotency-Key", key);
            }
            request.send()
        };
        let check = |response: reqwest::Response,
                     status: StatusCode,
                     field: Option<&'static str>| async move {
            assert_eq!(response.status(), status);
            assert_eq!(
                response.headers()["content-type"],
                "application/problem+json"
            );
            let problem: Value = response.json().await.unwrap();
            if let Some(field) = field {
                let fields: Vec<&str> = problem["errors"]
                    .as_array()
                    .unwrap_or_else(|| panic!("{problem}"))
                    .iter()
                    .map(|e| e["field"].as_str().unwrap())
                    .collect();
                assert!(fields.contains(&field), "{field} not in {problem}");
            }
        };
        check(
            post(good.to_string(), None).await.unwrap(),
            StatusCode::BAD_REQUEST,
            None,
        )
        .await;
        check(
            post("{\"customer_id\": ".into(), Some("bad-1"))
                .await
                .unwrap(),
            StatusCode::BAD_REQUEST,
            None,
        )
        .await;
        check(
            post(
                format!("{{\"note\": \"{}\"}}", "x".repeat(70_000)),
                Some("bad-2"),
            )
            .await
            .unwrap(),
            StatusCode::PAYLOAD_TOO_LARGE,
            None,
        )
        .await;
        let cases: [(&str, Value, &str); 7] = [
            ("items", json!([]), "items"),
            (
                "items",
                json!(
                    (0..51)
                        .map(|i| json!({"product_id": format!("x{i}"), "quantity": 1}))
                        .collect::<Vec<_>>()
                ),
                "items",
            ),
            (
                "items",
                json!([{"product_id": products[0], "quantity": 0}]),
                "items[0].quantity",
            ),
            (
                "items",
                json!([{"product_id": products[0], "quantity": 1001}]),
                "items[0].quantity",
            ),
            (
                "items",
                json!([{"product_id": "no-such-product", "quantity": 1}]),
                "items[0].product_id",
            ),
            ("currency", json!("XYZ"), "currency"),
            (
                "items",
                json!([{"product_id": products[0], "quantity": "two"}]),
                "items[0].quantity",
            ),
        ];
        for (i, (key, value, field)) in cases.into_iter().enumerate() {
            let mut body = good.clone();
            body[key] = value;
            let response = post(body.to_string(), Some(&format!("bad-case-{i}")))
                .await
                .unwrap();
            check(response, StatusCode::UNPROCESSABLE_ENTITY, Some(field)).await;
        }
        let mut missing = good.clone();
        missing["shipping_address"]
            .as_object_mut()
            .unwrap()
            .remove("country");
        check(
            post(missing.to_string(), Some("bad-missing"))
                .await
                .unwrap(),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("shipping_address.country"),
        )
        .await;
        // Nothing was placed by any of them.
        let (_, page) = client::get_json(&format!("{url}?customer_id={}", customers[0])).await;
        assert_eq!(page["orders"], json!([]));
        let (status, problem) = client::get_json(&format!("{url}?status=SHIPPED")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
        // An encoded NUL in a query or a path is refused before any handler sees it (no
        // field takes one, and PostgreSQL cannot store it).
        for nul in [
            format!("{url}?customer_id=%00"),
            format!("{}/products/x%00y", stack.url("inventory-service")),
            format!("{}/accounts/%00", stack.url("billing-service")),
        ] {
            let (status, problem) = client::get_json(&nul).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{nul}: {problem}");
            assert!(
                problem["detail"].as_str().unwrap().contains("%00"),
                "{problem}"
            );
        }
        let response = http
            .put(format!(
                "{}/products/{}",
                stack.url("inventory-service"),
                products[0]
            ))
            .json(&json!({"name": "x", "unit_price_minor": -1, "currency": "EUR", "available": 1}))
            .send()
            .await
            .unwrap();
        check(
            response,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("unit_price_minor"),
        )
        .await;
    })
}

pub(super) fn every_service_serves_openapi_health_and_lists(ctx: &Ctx) -> Run<'_> {
    Box::pin(async move {
        let stack = &ctx.0;
        for (service, path) in [
            ("order-service", "/orders/{order_id}/cancel"),
            ("inventory-service", "/products/{product_id}"),
            ("billing-service", "/accounts/{customer_id}"),
            ("shipping-service", "/shipments/{order_id}"),
        ] {
            let (status, doc) =
                client::get_json(&format!("{}/openapi.json", stack.url(service))).await;
            assert_eq!(status, StatusCode::OK);
            assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
            assert!(doc["paths"][path].is_object(), "{service} lacks {path}");
            assert!(doc["paths"]["/readyz"].is_object());
            let (status, _) = client::get_json(&format!("{}/healthz", stack.url(service))).await;
            assert_eq!(status, StatusCode::OK);
        }
        let (products, customers) = seed(stack, "list", &[(100, 50)], &[100_000]).await;
        let mut placed = Vec::new();
        for _ in 0..5 {
            placed.push(
                client::place(
                    stack,
                    &order_body(&customers[0], &[(&products[0], 1)], "DE"),
                )
                .await,
            );
        }
        // Keyset pagination, newest first, two per page.
        let url = format!(
            "{}/orders?customer_id={}&limit=2",
            stack.url("order-service"),
            customers[0]
        );
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page_url = match &cursor {
                Some(c) => format!("{url}&cursor={c}"),
                None => url.clone(),
            };
            let (_, page) = client::get_json(&page_url).await;
            seen.extend(
                page["orders"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|o| o["order_id"].as_str().unwrap().to_owned()),
            );
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        placed.reverse();
        assert_eq!(seen, placed);
        let (_, listed) =
            client::get_json(&format!("{}/products", stack.url("inventory-service"))).await;
        assert!(
            listed
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["product_id"] == products[0])
        );
        for id in &placed {
            client::wait_for_status(stack, id, "COMPLETED").await;
        }
        let (_, completed) = client::get_json(&format!("{url}&status=COMPLETED")).await;
        assert_eq!(completed["orders"].as_array().unwrap().len(), 2);
    })
}

/// The console's page and assets may not be framed (clickjacking: the page acts with an
/// operator's token), load nothing from elsewhere, and are not content-sniffed.
pub(super) fn the_console_is_served_with_a_content_security_policy(ctx: &Ctx) -> Run<'_> {
    Box::pin(async move {
        let stack = &ctx.0;
        for asset in ["/console", "/console/app.js", "/console/style.css"] {
            let response = reqwest::get(format!("{}{asset}", stack.url("order-service")))
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{asset}");
            let header = |name: &str| {
                response
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned()
            };
            let policy = header("content-security-policy");
            for directive in ["default-src 'self'", "frame-ancestors 'none'"] {
                assert!(policy.contains(directive), "{asset}: CSP {policy:?}");
            }
            assert_eq!(header("x-content-type-options"), "nosniff", "{asset}");
        }
    })
}
