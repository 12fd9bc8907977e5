//! Scenarios that need no fault: every outcome of the saga, the REST contract, idempotency,
//! concurrency and tracing. They run side by side, each with its own products and customers.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use orderflow_e2e::client::{self, order_body};
use orderflow_e2e::{Stack, put_account, put_product, timeline_types, wait_for_catalog};
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use reqwest::StatusCode;
use serde_json::{Value, json};
use shared_events::{KafkaConfig, Topic, TopicNames};

use crate::SteadyScenario;
use crate::otlp::Receiver;

type Ctx = (Stack, Receiver);
type Run<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

pub const SCENARIOS: &[(&str, SteadyScenario)] = &[
    (
        "saga::happy_path_completes_with_the_expected_timeline",
        happy_path,
    ),
    ("saga::declined_payment_cancels_the_order", declined_payment),
    ("saga::out_of_stock_refunds_and_cancels", out_of_stock),
    (
        "saga::shipping_failure_releases_refunds_and_cancels",
        shipping_failure,
    ),
    ("saga::cancel_after_shipment_is_409", cancel_after_shipment),
    (
        "rest::idempotency_key_replays_the_original_answer",
        idempotency,
    ),
    (
        "rest::bad_input_gets_problem_json_naming_the_field",
        bad_input,
    ),
    (
        "rest::every_service_serves_openapi_health_and_lists",
        rest_surface,
    ),
    (
        "kafka::republished_event_has_no_second_effect",
        republished_event,
    ),
    (
        "load::concurrent_orders_never_oversell_and_conserve_money",
        concurrent_orders,
    ),
    (
        "tracing::one_trace_per_order_across_all_four_services",
        one_trace_per_order,
    ),
];

/// Products and customers of one scenario, named after it so scenarios never share.
async fn seed(
    stack: &Stack,
    tag: &str,
    products: &[(i64, i32)],
    customers: &[i64],
) -> (Vec<String>, Vec<String>) {
    let product_ids: Vec<String> = (0..products.len()).map(|i| format!("{tag}-p{i}")).collect();
    let customer_ids: Vec<String> = (0..customers.len())
        .map(|i| format!("{tag}-c{i}"))
        .collect();
    for (id, (price, stock)) in product_ids.iter().zip(products) {
        put_product(stack, id, *price, *stock).await;
    }
    for (id, balance) in customer_ids.iter().zip(customers) {
        put_account(stack, id, *balance).await;
    }
    let ids: Vec<&str> = product_ids.iter().map(String::as_str).collect();
    wait_for_catalog(stack, &ids).await;
    (product_ids, customer_ids)
}

fn event<'a>(order: &'a Value, event_type: &str) -> &'a Value {
    order["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_type"] == event_type)
        .unwrap_or_else(|| panic!("no {event_type} in {order:#}"))
}

fn happy_path(ctx: &Ctx) -> Run<'_> {
    Box::pin(async move {
        let stack = &ctx.0;
        let (products, customers) =
            seed(stack, "happy", &[(1250, 10), (300, 10)], &[100_000]).await;
        let order_id = client::place(
            stack,
            &order_body(&customers[0], &[(&products[0], 2), (&products[1], 1)], "DE"),
        )
        .await;
        let order = client::wait_for_status(stack, &order_id, "COMPLETED").await;
        assert_eq!(order["total_minor"], 2 * 1250 + 300);
        let types: BTreeSet<String> = timeline_types(&order).into_iter().collect();
        let expected: BTreeSet<String> = [
            "OrderPlaced",
            "PaymentAuthorized",
            "StockReserved",
            "ShipmentScheduled",
            "OrderCompleted",
        ]
        .map(str::to_owned)
        .into();
        assert_eq!(types, expected, "{order:#}");
        for (event_type, service) in [
            ("OrderPlaced", "order-service"),
            ("PaymentAuthorized", "billing-service"),
            ("StockReserved", "inventory-service"),
            ("ShipmentScheduled", "shipping-service"),
            ("OrderCompleted", "order-service"),
        ] {
            assert_eq!(event(&order, event_type)["service"], service);
        }
        // Causation: every step names the event that triggered it.
        let placed = event(&order, "OrderPlaced");
        assert!(placed["causation_id"].is_null());
        assert_eq!(
            event(&order, "PaymentAuthorized")["causation_id"],
            placed["event_id"]
        );
        assert_eq!(
            event(&order, "OrderCompleted")["causation_id"],
            event(&order, "ShipmentScheduled")["event_id"]
        );
        let ids: Vec<&Value> = order["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| &e["event_id"])
            .collect();
        for step in order["timeline"].as_array().unwrap().iter().skip(1) {
            assert!(
                ids.contains(&&step["causation_id"]),
                "dangling causation in {step}"
            );
        }
        // Billing captures the charge once it hears OrderCompleted.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let account = loop {
            let account = client::account(stack, &customers[0]).await;
            if account["payments"][0]["status"] == "captured" {
                break account;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "never captured: {account:#}"
            );
            tokio::time::sleep(Duration::from_millis(150)).await;
        };
        assert_eq!(account["balance_minor"], 100_000 - 2800);
        assert_eq!(account["holds"], json!([]));
        let product = client::product(stack, &products[0]).await;
        assert_eq!(
            (product["available"].clone(), product["reserved"].clone()),
            (json!(8), json!(2))
        );
        let (status, shipment) = client::get_json(&format!(
            "{}/shipments/{order_id}",
            stack.url("shipping-service")
        ))
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(shipment["status"], "scheduled");
        assert_eq!(
            shipment["tracking_id"],
            event(&order, "ShipmentScheduled")["detail"]
                .as_str()
                .unwrap()
                .split(' ')
                .next_back()
                .unwrap()
        );
    })
}

fn declined_payment(ctx: &Ctx) -> Run<'_> {
    Box::pin(async move {
        let stack = &ctx.0;
        let (products, customers) = seed(stack, "declined", &[(5000, 10)], &[1000]).await;
        let order_id = client::place(
            stack,
            &order_body(&customers[0], &[(&products[0], 1)], "DE"),
        )
        .await;
        let order = client::wait_for_status(stack, &order_id, "CANCELLED").await;
        assert_eq!(
            timeline_types(&order),
            ["OrderPlaced", "PaymentDeclined", "OrderCancelled"]
        );
        assert!(
            order["outcome_reason"]
                .as_str()
                .unwrap()
                .contains("insufficient funds"),
            "{order}"
        );
        let account = client::account(stack, &customers[0]).await;
        assert_eq!(account["balance_minor"], 1000);
        assert_eq!(account["payments"], json!([]));
        assert_eq!(client::product(stack, &products[0]).await["available"], 10);
    })
}

fn out_of_stock(ctx: &Ctx) -> Run<'_> {
    Box::pin(async move {
        let stack = &ctx.0;
        let (products, customers) = seed(stack, "oos", &[(100, 1)], &[10_000]).await;
        let order_id = client::place(
            stack,
            &order_body(&customers[0], &[(&products[0], 2)], "DE"),
        )
        .await;
        let order = client::wait_for_status(stack, &order_id, "CANCELLED").await;
        let types: BTreeSet<String> = timeline_types(&order).into_iter().collect();
        for expected in [
            "PaymentAuthorized",
            "StockRejected",
            "PaymentRefunded",
            "OrderCancelled",
        ] {
            assert!(types.contains(expected), "{expected} missing: {order:#}");
        }
        assert!(!types.contains("ShipmentScheduled"));
        let account = client::account(stack, &customers[0]).await;
        assert_eq!(account["balance_minor"], 10_000);
        assert_eq!(account["refunds"][0]["amount_minor"], 200);
        assert_eq!(account["holds"], json!([]));
        let product = client::product(stack, &products[0]).await;
        assert_eq!(
            (product["available"].clone(), product["reserved"].clone()),
            (json!(1), json!(0))
        );
    })
}

fn shipping_failure(ctx: &Ctx) -> Run<'_> {
    Box::pin(async move {
        let stack = &ctx.0;
        let (products, customers) = seed(stack, "noship", &[(100, 5)], &[10_000]).await;
        // Nobody ships to Antarctica.
        let order_id = client::place(
            stack,
            &order_body(&customers[0], &[(&products[0], 3)], "AQ"),
        )
        .await;
        let order = client::wait_for_status(stack, &order_id, "CANCELLED").await;
        let types: BTreeSet<String> = timeline_types(&order).into_iter().collect();
        for expected in [
            "StockReserved",
            "ShipmentFailed",
            "StockReleased",
            "PaymentRefunded",
            "OrderCancelled",
        ] {
            assert!(types.contains(expected), "{expected} missing: {order:#}");
        }
        assert!(order["outcome_reason"].as_str().unwrap().contains("AQ"));
        assert_eq!(
            client::account(stack, &customers[0]).await["balance_minor"],
            10_000
        );
        let product = client::product(stack, &products[0]).await;
        assert_eq!(
            (product["available"].clone(), product["reserved"].clone()),
            (json!(5), json!(0))
        );
    })
}

fn cancel_after_shipment(ctx: &Ctx) -> Run<'_> {
    Box::pin(async move {
        let stack = &ctx.0;
        let (products, customers) = seed(stack, "late", &[(100, 5)], &[10_000]).await;
        let order_id = client::place(
            stack,
            &order_body(&customers[0], &[(&products[0], 1)], "DE"),
        )
        .await;
        client::wait_for_status(stack, &order_id, "COMPLETED").await;
        let (status, problem) = client::cancel(stack, &order_id).await;
        assert_eq!(status, StatusCode::CONFLICT, "{problem}");
        assert_eq!(problem["type"], "/problems/order-shipped");
        let order = client::order(stack, &order_id).await;
        assert_eq!(order["status"], "COMPLETED");
        assert_eq!(
            client::account(stack, &customers[0]).await["balance_minor"],
            9_900
        );
        let (status, _) = client::cancel(stack, "01a20b33-0000-7000-8000-000000000000").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    })
}

fn idempotency(ctx: &Ctx) -> Run<'_> {
    Box::pin(async move {
        let stack = &ctx.0;
        let (products, customers) = seed(stack, "idem", &[(100, 50)], &[100_000]).await;
        let http = reqwest::Client::new();
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

fn bad_input(ctx: &Ctx) -> Run<'_> {
    Box::pin(async move {
        let stack = &ctx.0;
        let (products, customers) = seed(stack, "bad", &[(100, 50)], &[100_000]).await;
        let http = reqwest::Client::new();
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

fn rest_surface(ctx: &Ctx) -> Run<'_> {
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

fn republished_event(ctx: &Ctx) -> Run<'_> {
    Box::pin(async move {
        let stack = &ctx.0;
        let (products, customers) = seed(stack, "replay", &[(100, 10)], &[10_000]).await;
        let order_id = client::place(
            stack,
            &order_body(&customers[0], &[(&products[0], 2)], "DE"),
        )
        .await;
        client::wait_for_status(stack, &order_id, "COMPLETED").await;
        // Every record of the order: keyed by the order, correlated to it, caused by another.
        let kafka = KafkaConfig::local(&orderflow_e2e::bootstrap_servers());
        let names = TopicNames::new(stack.prefix.clone());
        let records = read_order_records(&kafka, &names, &order_id);
        let types: BTreeSet<&str> = records.iter().map(|r| r.event_type.as_str()).collect();
        assert!(
            types.is_superset(&BTreeSet::from([
                "OrderPlaced",
                "PaymentAuthorized",
                "StockReserved",
                "ShipmentScheduled",
                "OrderCompleted"
            ])),
            "{types:?}"
        );
        for record in &records {
            assert_eq!(
                record.headers.get("correlation_id").map(String::as_str),
                Some(order_id.as_str())
            );
            assert_eq!(
                record.headers.contains_key("causation_id"),
                record.event_type != "OrderPlaced"
            );
            assert!(
                record.headers.contains_key("traceparent"),
                "{} has no trace context",
                record.event_type
            );
        }
        let placed = records
            .iter()
            .find(|r| r.event_type == "OrderPlaced")
            .unwrap();
        let duplicates = "orderflow_consumer_duplicates_skipped_total";
        let mut before = HashMap::new();
        for service in ["billing-service", "inventory-service", "shipping-service"] {
            before.insert(
                service,
                client::metric(stack.url(service), duplicates).await,
            );
        }
        // Publish the recorded OrderPlaced again, byte for byte.
        let producer: FutureProducer = kafka.idempotent_producer().create().unwrap();
        let mut headers = OwnedHeaders::new();
        for (key, value) in &placed.headers {
            headers = headers.insert(Header {
                key,
                value: Some(value.as_bytes()),
            });
        }
        producer
            .send(
                FutureRecord::to(&placed.topic)
                    .key(&order_id)
                    .payload(&placed.payload)
                    .headers(headers),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
        for service in ["billing-service", "inventory-service", "shipping-service"] {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while client::metric(stack.url(service), duplicates).await <= before[service] {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{service} never saw the duplicate"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        let account = client::account(stack, &customers[0]).await;
        assert_eq!(account["balance_minor"], 9_800);
        assert_eq!(account["payments"].as_array().unwrap().len(), 1);
        let product = client::product(stack, &products[0]).await;
        assert_eq!(
            (product["available"].clone(), product["reserved"].clone()),
            (json!(8), json!(2))
        );
        let order = client::order(stack, &order_id).await;
        assert_eq!(order["timeline"].as_array().unwrap().len(), 5, "{order:#}");
    })
}

struct RawRecord {
    topic: String,
    event_type: String,
    payload: Vec<u8>,
    headers: BTreeMap<String, String>,
}

fn read_order_records(kafka: &KafkaConfig, names: &TopicNames, order_id: &str) -> Vec<RawRecord> {
    let consumer: BaseConsumer = kafka
        .base()
        .set("group.id", format!("e2e-reader-{}", uuid::Uuid::new_v4()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let topics: Vec<String> = [
        Topic::Orders,
        Topic::Payments,
        Topic::Inventory,
        Topic::Shipments,
    ]
    .iter()
    .map(|t| names.name(*t))
    .collect();
    consumer
        .subscribe(&topics.iter().map(String::as_str).collect::<Vec<_>>())
        .unwrap();
    let mut records = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut quiet_since = std::time::Instant::now();
    while std::time::Instant::now() < deadline && quiet_since.elapsed() < Duration::from_secs(4) {
        let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        quiet_since = std::time::Instant::now();
        if message.key() != Some(order_id.as_bytes()) {
            continue;
        }
        let headers: BTreeMap<String, String> = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        (
                            h.key.to_owned(),
                            String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        records.push(RawRecord {
            topic: message.topic().to_owned(),
            event_type: headers.get("event_type").cloned().unwrap_or_default(),
            payload: message.payload().unwrap_or_default().to_vec(),
            headers,
        });
    }
    records
}

fn concurrent_orders(ctx: &Ctx) -> Run<'_> {
    Box::pin(async move {
        let stack = &ctx.0;
        const PRODUCTS: usize = 10;
        const STOCK: i32 = 3;
        const ORDERS: usize = 200;
        let (products, customers) =
            seed(stack, "rush", &[(250, STOCK); PRODUCTS], &[1_000_000; 4]).await;
        let placements = (0..ORDERS).map(|i| {
            let body = order_body(
                &customers[i % customers.len()],
                &[(&products[(i * 7) % PRODUCTS], 1 + (i % 2) as i64)],
                "DE",
            );
            async move { client::place(stack, &body).await }
        });
        let order_ids: Vec<String> = futures_join_all(placements, 25).await;
        let mut completed_total = 0i64;
        let mut shipped_units: HashMap<String, i64> = HashMap::new();
        let mut completed = 0;
        for order_id in &order_ids {
            let order = wait_terminal(stack, order_id).await;
            if order["status"] == "COMPLETED" {
                completed += 1;
                completed_total += order["total_minor"].as_i64().unwrap();
                let line = &order["lines"][0];
                *shipped_units
                    .entry(line["product_id"].as_str().unwrap().to_owned())
                    .or_default() += line["quantity"].as_i64().unwrap();
            }
        }
        assert!(completed > 0, "no order completed");
        for product_id in &products {
            let product = client::product(stack, product_id).await;
            let shipped = shipped_units.get(product_id).copied().unwrap_or(0);
            assert!(
                shipped <= i64::from(STOCK),
                "{product_id} oversold: {shipped}"
            );
            assert_eq!(product["reserved"], shipped, "{product}");
            assert_eq!(
                product["available"],
                i64::from(STOCK) - shipped,
                "{product}"
            );
        }
        let (mut charges, mut refunds, mut spent) = (0, 0, 0);
        for customer in &customers {
            let account = client::account(stack, customer).await;
            charges += account["payments"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["amount_minor"].as_i64().unwrap())
                .sum::<i64>();
            refunds += account["refunds"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["amount_minor"].as_i64().unwrap())
                .sum::<i64>();
            spent += 1_000_000 - account["balance_minor"].as_i64().unwrap();
            assert_eq!(account["holds"], json!([]));
        }
        assert_eq!(charges - refunds, completed_total);
        assert_eq!(spent, completed_total);
    })
}

async fn wait_terminal(stack: &Stack, order_id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    loop {
        let order = client::order(stack, order_id).await;
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

/// Runs the futures with at most `limit` in flight; results in input order.
async fn futures_join_all<F: Future<Output = String>>(
    futures: impl Iterator<Item = F>,
    limit: usize,
) -> Vec<String> {
    use futures::stream::StreamExt;
    futures::stream::iter(futures)
        .buffered(limit)
        .collect()
        .await
}

fn one_trace_per_order(ctx: &Ctx) -> Run<'_> {
    Box::pin(async move {
        let (stack, receiver) = ctx;
        let (products, customers) = seed(stack, "trace", &[(100, 10)], &[10_000]).await;
        let order_id = client::place(
            stack,
            &order_body(&customers[0], &[(&products[0], 1)], "DE"),
        )
        .await;
        client::wait_for_status(stack, &order_id, "COMPLETED").await;
        let services: BTreeSet<&str> = orderflow_e2e::SERVICES.into_iter().collect();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let spans: Vec<_> = receiver
                .spans()
                .into_iter()
                .filter(|s| {
                    s.attributes
                        .iter()
                        .any(|(k, v)| k == "correlation_id" && *v == order_id)
                })
                .collect();
            let reporting: BTreeSet<&str> = spans.iter().map(|s| s.service.as_str()).collect();
            if reporting == services {
                let traces: BTreeSet<&str> = spans.iter().map(|s| s.trace_id.as_str()).collect();
                assert_eq!(
                    traces.len(),
                    1,
                    "the order's spans are in several traces: {spans:#?}"
                );
                let trace = *traces.first().unwrap();
                assert!(!trace.is_empty() && trace.chars().any(|c| c != '0'));
                // The trace starts at the HTTP request that placed the order.
                assert!(
                    receiver.spans().iter().any(|s| s.trace_id == trace
                        && s.service == "order-service"
                        && s.name.contains("request")),
                    "no order-service request span in the order's trace"
                );
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "spans only from {reporting:?}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
}
