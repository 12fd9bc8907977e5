//! Who may do what, route by route, against the running services: no token, an expired
//! one, a tampered one, one from a key the provider does not publish, one for another
//! audience, another customer's, a customer's on an admin route, and the right one.

use orderflow_e2e::auth::{self, Claims, OPERATOR};
use orderflow_e2e::client::{order_body, place, wait_for_status};
use orderflow_e2e::{Stack, put_account, put_product, wait_for_catalog};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// What a case must be answered.
#[derive(Debug, Clone, Copy)]
enum Expect {
    Status(StatusCode),
    Success,
    /// Let through: neither refused (401, 403, 404) nor failed (5xx); what the route then
    /// answers is its own business (a cancel may find the order already shipped: 409).
    Allowed,
}

struct Route {
    method: Method,
    /// The service and the path on it.
    service: &'static str,
    path: String,
    body: Option<Value>,
    /// Only an admin may call it.
    admin_only: bool,
    /// What an admin gets, on an admin route.
    admin_gets: Expect,
    /// What a token of a customer other than alice (who owns what the route names) gets.
    other_customer: Expect,
}

const ALICE: &str = "authz-alice";
const MALLORY: &str = "authz-mallory";

/// An operator's claims, for alice: the tokens below are refused for what is wrong with
/// them, not for lack of rights.
fn operator_claims() -> Claims {
    Claims {
        realm_access: Some(dev_token_issuer::RealmAccess {
            roles: vec![dev_token_issuer::ADMIN_ROLE.into()],
        }),
        ..auth::claims(ALICE, "orders")
    }
}

fn expired() -> String {
    let mut claims = operator_claims();
    claims.iat -= 7_200;
    claims.nbf -= 7_200;
    claims.exp = claims.iat + 3_600;
    auth::sign(&claims)
}

fn for_audience(audience: &str) -> String {
    auth::sign(&Claims {
        aud: audience.into(),
        ..operator_claims()
    })
}

/// A valid token whose payload is swapped for one granting more: the signature no longer
/// matches.
fn tampered() -> String {
    let honest = auth::token(ALICE, "orders");
    let greedy = auth::admin_token(ALICE);
    let parts: Vec<&str> = honest.split('.').collect();
    let greedy_payload = greedy.split('.').nth(1).unwrap();
    format!("{}.{greedy_payload}.{}", parts[0], parts[2])
}

/// Signed by a key of its own (same issuer name, same key-id scheme), which the services'
/// provider does not publish.
fn foreign_key() -> String {
    let impostor = dev_token_issuer::Issuer::generate(auth::claims(ALICE, "").iss).unwrap();
    impostor.sign(&operator_claims()).unwrap()
}

async fn call(
    stack: &Stack,
    route: &Route,
    token: Option<&str>,
) -> (StatusCode, reqwest::Response) {
    let url = format!("{}{}", stack.url(route.service), route.path);
    let mut request = reqwest::Client::new()
        .request(route.method.clone(), url)
        .header("Idempotency-Key", uuid::Uuid::new_v4().to_string());
    if let Some(body) = &route.body {
        request = request.json(body);
    }
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    (response.status(), response)
}

fn judge(expect: Expect, status: StatusCode) -> bool {
    match expect {
        Expect::Status(expected) => status == expected,
        Expect::Success => status.is_success(),
        Expect::Allowed => ![401, 403, 404].contains(&status.as_u16()) && !status.is_server_error(),
    }
}

#[tokio::test]
async fn every_route_answers_each_kind_of_caller_as_it_should() {
    let mut stack = Stack::start("authz", &[]).await;
    put_product(&stack, "authz-product", 500, 1_000).await;
    put_account(&stack, ALICE, 1_000_000).await;
    wait_for_catalog(&stack, &["authz-product"]).await;
    let order = place(&stack, &order_body(ALICE, &[("authz-product", 1)], "DE")).await;
    // Every service has heard of it (shipping included) before its routes are tried.
    wait_for_status(&stack, &order, "COMPLETED").await;
    let alice_order = order_body(ALICE, &[("authz-product", 1)], "DE");

    let customer_route = |method: Method, service, path: String, body, other_customer| Route {
        method,
        service,
        path,
        body,
        admin_only: false,
        admin_gets: Expect::Success,
        other_customer,
    };
    let admin_route = |method: Method, service, path: String, body| Route {
        method,
        service,
        path,
        body,
        admin_only: true,
        admin_gets: Expect::Success,
        other_customer: Expect::Status(StatusCode::FORBIDDEN),
    };
    // The order completed: an operator is let through, and told the action means nothing
    // now (409).
    let operator_action = |action: &str| Route {
        admin_gets: Expect::Allowed,
        ..admin_route(
            Method::POST,
            "order-service",
            format!("/sagas/{order}/{action}"),
            Some(json!({"reason": "authorization check"})),
        )
    };
    let routes = [
        customer_route(
            Method::POST,
            "order-service",
            "/orders".into(),
            Some(alice_order),
            Expect::Status(StatusCode::FORBIDDEN),
        ),
        // Another customer's listing is answered, with none of alice's orders (checked below).
        customer_route(
            Method::GET,
            "order-service",
            format!("/orders?customer_id={ALICE}"),
            None,
            Expect::Status(StatusCode::OK),
        ),
        customer_route(
            Method::GET,
            "order-service",
            format!("/orders/{order}"),
            None,
            Expect::Status(StatusCode::NOT_FOUND),
        ),
        customer_route(
            Method::GET,
            "billing-service",
            format!("/accounts/{ALICE}"),
            None,
            Expect::Status(StatusCode::NOT_FOUND),
        ),
        // The catalog is for every customer to read.
        customer_route(
            Method::GET,
            "inventory-service",
            "/products".into(),
            None,
            Expect::Success,
        ),
        customer_route(
            Method::GET,
            "inventory-service",
            "/products/authz-product".into(),
            None,
            Expect::Success,
        ),
        admin_route(
            Method::PUT,
            "inventory-service",
            "/products/authz-new".into(),
            Some(
                json!({"name": "new", "unit_price_minor": 100, "currency": "EUR", "available": 1}),
            ),
        ),
        admin_route(
            Method::PUT,
            "billing-service",
            "/accounts/authz-new".into(),
            Some(json!({"currency": "EUR", "credit_limit_minor": 0})),
        ),
        admin_route(
            Method::GET,
            "shipping-service",
            format!("/shipments/{order}"),
            None,
        ),
        admin_route(Method::GET, "order-service", "/sagas/stuck".into(), None),
        admin_route(
            Method::GET,
            "order-service",
            "/sagas/dead-letters".into(),
            None,
        ),
        admin_route(
            Method::GET,
            "order-service",
            "/sagas/dead-letters?acknowledged=true".into(),
            None,
        ),
        // No letter has this cause: an operator is let through and told so (422).
        Route {
            admin_gets: Expect::Allowed,
            ..admin_route(
                Method::POST,
                "order-service",
                "/sagas/dead-letters/acknowledge".into(),
                Some(json!({"reason": "authorization check", "cause": {
                    "topic": "nowhere.dlq", "consumer_group": null, "error_class": null,
                    "fingerprint": "nothing"}})),
            )
        },
        operator_action("redrive"),
        operator_action("nudge"),
        operator_action("cancel"),
        customer_route(
            Method::POST,
            "order-service",
            format!("/orders/{order}/cancel"),
            None,
            Expect::Status(StatusCode::NOT_FOUND),
        ),
    ];

    let (expired, wrong_audience, tampered, foreign) = (
        expired(),
        for_audience("someone-else"),
        tampered(),
        foreign_key(),
    );
    let (alice, mallory) = (auth::token(ALICE, "orders"), auth::token(MALLORY, "orders"));
    let admin = auth::admin_token(OPERATOR);
    // Where the provider lets a client ask for any scope (Keycloak's optional client
    // scopes), a customer can hold `admin` as a scope: that is not the admin role.
    let admin_scope_only = auth::token(ALICE, "orders admin");
    let mut failures = Vec::new();
    for route in &routes {
        let unauthorized = Expect::Status(StatusCode::UNAUTHORIZED);
        let mut cases: Vec<(&str, Option<&str>, Expect)> = vec![
            ("no token", None, unauthorized),
            ("expired", Some(&expired), unauthorized),
            ("tampered", Some(&tampered), unauthorized),
            ("unpublished key", Some(&foreign), unauthorized),
            ("wrong audience", Some(&wrong_audience), unauthorized),
            ("another customer", Some(&mallory), route.other_customer),
        ];
        if route.admin_only {
            cases.push((
                "customer on an admin route",
                Some(&alice),
                Expect::Status(StatusCode::FORBIDDEN),
            ));
            cases.push((
                "scope admin without the admin role",
                Some(&admin_scope_only),
                Expect::Status(StatusCode::FORBIDDEN),
            ));
            cases.push(("admin", Some(&admin), route.admin_gets));
        } else if route.path.ends_with("/cancel") {
            // The order has shipped: the owner is let through, and told it is too late.
            cases.push(("the customer", Some(&alice), Expect::Allowed));
        } else {
            cases.push(("the customer", Some(&alice), Expect::Success));
        }
        for (case, token, expect) in cases {
            let (status, response) = call(&stack, route, token).await;
            let challenge = response.headers().get("www-authenticate").cloned();
            let content_type = response.headers().get("content-type").cloned();
            let body = response.text().await.unwrap_or_default();
            let what = format!("{} {} {}: {case}", route.service, route.method, route.path);
            println!("{what:<80} {}", status.as_u16());
            if !judge(expect, status) {
                failures.push(format!("{what}: expected {expect:?}, got {status} {body}"));
                continue;
            }
            if status == StatusCode::UNAUTHORIZED
                && !challenge.is_some_and(|c| c.to_str().unwrap_or("").starts_with("Bearer"))
            {
                failures.push(format!("{what}: 401 without a Bearer WWW-Authenticate"));
            }
            if status.is_client_error()
                && content_type.is_none_or(|c| c != "application/problem+json")
            {
                failures.push(format!("{what}: {status} is not problem+json"));
            }
            if case == "another customer" && status.is_success() && body.contains(&order) {
                failures.push(format!(
                    "{what}: another customer's answer names alice's order"
                ));
            }
        }
    }
    stack.stop_all().await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Requests their route will refuse (401) take no room from admission control: within one
/// reading of the load, a flood of token-less orders, then a customer's order, which is
/// accepted. (Counted before the token was checked, the flood used the room up and the
/// customer got 503.)
#[tokio::test]
async fn token_less_requests_take_no_room_from_customers() {
    const CUSTOMER: &str = "shed-alice";
    let mut stack = Stack::start("shed", &[("OVERLOAD_ORDERS_IN_FLIGHT", "5".into())]).await;
    put_product(&stack, "shed-product", 500, 1_000).await;
    put_account(&stack, CUSTOMER, 1_000_000).await;
    wait_for_catalog(&stack, &["shed-product"]).await;
    let url = format!("{}/orders", stack.url("order-service"));
    let body = order_body(CUSTOMER, &[("shed-product", 1)], "DE");
    let anonymous = reqwest::Client::new();
    let customer = reqwest::Client::new();
    let token = auth::token(CUSTOMER, "orders");
    let idempotency_key = || uuid::Uuid::new_v4().to_string();
    for round in 0..5 {
        let flood = (0..60).map(|_| {
            anonymous
                .post(&url)
                .header("Idempotency-Key", idempotency_key())
                .json(&body)
                .send()
        });
        for answer in futures::future::join_all(flood).await {
            assert_eq!(answer.unwrap().status(), StatusCode::UNAUTHORIZED);
        }
        let response = customer
            .post(&url)
            .bearer_auth(&token)
            .header("Idempotency-Key", idempotency_key())
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(status, StatusCode::ACCEPTED, "round {round}: {answer}");
        let order = answer["order_id"].as_str().unwrap();
        wait_for_status(&stack, order, "COMPLETED").await;
    }
    stack.stop_all().await;
}
