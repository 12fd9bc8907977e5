//! Scenarios that stop a service to hold the saga at a stage, act, and start it again: a
//! user cancellation at each stage before shipment, the saga deadline, and the projection
//! rebuild. They run one at a time on their own stack, whose saga deadline is short.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use orderflow_e2e::client::{self, order_body};
use orderflow_e2e::corrupt_history::CorruptHistory;
use orderflow_e2e::{Stack, put_account, put_product, timeline_types, wait_for_catalog};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::Connection;

use crate::FaultScenario;

/// The saga deadline of scenarios that need it to pass: long enough that any stage before
/// it is reached in time even on a slow machine (they take well under a second), short
/// enough to wait out.
pub const SHORT_DEADLINE_SECS: u64 = 15;
/// The saga deadline of every other scenario: it never fires by accident, so nothing in
/// their outcome depends on the machine's speed.
pub const NO_DEADLINE_SECS: u64 = 600;

type Run<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Each scenario with the saga deadline (order-service's SAGA_DEADLINE_SECS) it runs under.
pub const SCENARIOS: &[(&str, FaultScenario, u64)] = &[
    scenario!(
        cancel_while_pending_compensates_in_any_order,
        NO_DEADLINE_SECS
    ),
    scenario!(cancel_after_payment_refunds, NO_DEADLINE_SECS),
    scenario!(
        cancel_after_reservation_releases_and_refunds,
        SHORT_DEADLINE_SECS
    ),
    scenario!(
        saga_deadline_cancels_when_shipping_is_down,
        SHORT_DEADLINE_SECS
    ),
    scenario!(
        saga_deadline_skips_an_order_whose_history_is_corrupt,
        SHORT_DEADLINE_SECS
    ),
    scenario!(
        relay_fails_over_when_the_active_replica_freezes,
        NO_DEADLINE_SECS
    ),
    scenario!(
        new_orders_get_503_while_too_many_sagas_are_in_flight,
        NO_DEADLINE_SECS
    ),
    scenario!(rebuilt_projection_is_identical, NO_DEADLINE_SECS),
    scenario!(
        sigterm_under_load_loses_nothing_and_repeats_nothing,
        NO_DEADLINE_SECS
    ),
];

pub(crate) async fn seed(stack: &Stack, tag: &str) -> (String, String) {
    let product = format!("{tag}-{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
    let customer = format!("{product}-customer");
    put_product(stack, &product, 400, 10).await;
    put_account(stack, &customer, 10_000).await;
    wait_for_catalog(stack, &[&product]).await;
    (product, customer)
}

/// Nothing was kept: the customer has their money and the product its stock.
pub(crate) async fn assert_compensated(
    stack: &Stack,
    product: &str,
    customer: &str,
    order: &Value,
) {
    let account = client::account(stack, customer).await;
    assert_eq!(account["balance_minor"], 10_000, "{account:#}\n{order:#}");
    assert_eq!(account["holds"], json!([]));
    let stock = client::product(stack, product).await;
    assert_eq!(
        (stock["available"].clone(), stock["reserved"].clone()),
        (json!(10), json!(0)),
        "{order:#}"
    );
    assert!(!timeline_types(order).contains(&"ShipmentScheduled".to_owned()));
}

async fn cancel_accepted(stack: &Stack, order_id: &str) {
    let (status, body) = client::cancel(stack, order_id).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "CANCELLING");
}

fn cancel_while_pending_compensates_in_any_order(stack: &mut Stack) -> Run<'_> {
    Box::pin(async move {
        let (product, customer) = seed(stack, "pending").await;
        stack.service("billing-service").stop().await;
        let order_id = client::place(stack, &order_body(&customer, &[(&product, 2)], "DE")).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(client::order(stack, &order_id).await["status"], "PENDING");
        cancel_accepted(stack, &order_id).await;
        stack.service("billing-service").start().await;
        let order = client::wait_for_status(stack, &order_id, "CANCELLED").await;
        // Restarted billing hears OrderPlaced and ShipmentFailed (the cancellation) on
        // different topics: heard first, the failure makes it decline; heard second, it
        // charges and then refunds. Either way the customer keeps the money.
        let types = timeline_types(&order);
        let charged = types.contains(&"PaymentAuthorized".to_owned());
        let settled = if charged {
            "PaymentRefunded"
        } else {
            "PaymentDeclined"
        };
        assert!(types.contains(&settled.to_owned()), "{order:#}");
        assert!(types.contains(&"ShipmentFailed".to_owned()), "{order:#}");
        assert!(
            order["outcome_reason"]
                .as_str()
                .unwrap()
                .contains("changed my mind")
        );
        assert_compensated(stack, &product, &customer, &order).await;
    })
}

fn cancel_after_payment_refunds(stack: &mut Stack) -> Run<'_> {
    Box::pin(async move {
        let (product, customer) = seed(stack, "paid").await;
        stack.service("inventory-service").stop().await;
        let order_id = client::place(stack, &order_body(&customer, &[(&product, 2)], "DE")).await;
        client::wait_for_status(stack, &order_id, "PAYMENT_AUTHORIZED").await;
        cancel_accepted(stack, &order_id).await;
        stack.service("inventory-service").start().await;
        let order = client::wait_for_status(stack, &order_id, "CANCELLED").await;
        assert!(
            timeline_types(&order).contains(&"PaymentRefunded".to_owned()),
            "{order:#}"
        );
        assert_compensated(stack, &product, &customer, &order).await;
    })
}

fn cancel_after_reservation_releases_and_refunds(stack: &mut Stack) -> Run<'_> {
    Box::pin(async move {
        let (product, customer) = seed(stack, "reserved").await;
        stack.service("shipping-service").stop().await;
        let order_id = client::place(stack, &order_body(&customer, &[(&product, 2)], "DE")).await;
        let order = client::wait_for_status(stack, &order_id, "STOCK_RESERVED").await;
        cancel_accepted(stack, &order_id).await;
        // Shipping hears the reservation and the cancellation on different topics, in either
        // order; restarted after the deadline it refuses either way, so the cancellation wins
        // deterministically (before it, the race is legitimately open).
        sleep_past(&order["saga_deadline"]).await;
        stack.service("shipping-service").start().await;
        let order = client::wait_for_status(stack, &order_id, "CANCELLED").await;
        for expected in ["ShipmentFailed", "StockReleased", "PaymentRefunded"] {
            assert!(
                timeline_types(&order).contains(&expected.to_owned()),
                "{expected}: {order:#}"
            );
        }
        assert!(
            order["outcome_reason"]
                .as_str()
                .unwrap()
                .contains("changed my mind")
        );
        assert_compensated(stack, &product, &customer, &order).await;
    })
}

fn saga_deadline_cancels_when_shipping_is_down(stack: &mut Stack) -> Run<'_> {
    Box::pin(async move {
        let (product, customer) = seed(stack, "deadline").await;
        stack.service("shipping-service").stop().await;
        let order_id = client::place(stack, &order_body(&customer, &[(&product, 2)], "DE")).await;
        let order = client::wait_for_status(stack, &order_id, "STOCK_RESERVED").await;
        sleep_past(&order["saga_deadline"]).await;
        let order = client::wait_for_status(stack, &order_id, "CANCELLING").await;
        assert!(timeline_types(&order).contains(&"OrderCancellationRequested".to_owned()));
        stack.service("shipping-service").start().await;
        let order = client::wait_for_status(stack, &order_id, "CANCELLED").await;
        assert!(
            order["outcome_reason"]
                .as_str()
                .unwrap()
                .contains("deadline"),
            "{order:#}"
        );
        assert_compensated(stack, &product, &customer, &order).await;
    })
}

/// One order whose history no longer reads back (a manual edit) must not stop the deadline
/// of the others: the sweeper logs, counts and skips it.
fn saga_deadline_skips_an_order_whose_history_is_corrupt(stack: &mut Stack) -> Run<'_> {
    Box::pin(async move {
        let (product, customer) = seed(stack, "corrupt").await;
        stack.service("shipping-service").stop().await;
        let body = order_body(&customer, &[(&product, 1)], "DE");
        let corrupt = client::place(stack, &body).await;
        client::wait_for_status(stack, &corrupt, "STOCK_RESERVED").await;
        let healthy = client::place(stack, &body).await;
        let order = client::wait_for_status(stack, &healthy, "STOCK_RESERVED").await;
        // Its deadline comes first, so a sweep that stopped at it would never reach the other.
        let edit = CorruptHistory::of(stack, &corrupt).await;
        sleep_past(&order["saga_deadline"]).await;
        client::wait_for_status(stack, &healthy, "CANCELLING").await;
        assert_eq!(edit.status(stack).await, "STOCK_RESERVED");
        let skipped = client::metric(
            stack.url("order-service"),
            "orderflow_saga_deadlines_skipped_total",
        )
        .await;
        assert_eq!(skipped, 1.0);
        // Repaired, so that the stack's later scenarios (a projection rebuild) find every
        // history readable.
        edit.repair(stack).await;
        stack.service("shipping-service").start().await;
        client::wait_for_status(stack, &healthy, "CANCELLED").await;
    })
}

/// A replica whose host vanishes keeps its database session open and silent. The relay lock
/// it held must pass to the standby within seconds (not after TCP keepalive's hours), and
/// when it comes back it must find itself a standby, not a second active relay.
fn relay_fails_over_when_the_active_replica_freezes(stack: &mut Stack) -> Run<'_> {
    Box::pin(async move {
        let (product, customer) = seed(stack, "failover").await;
        let mut replica = stack.start_replica("order-service").await;
        let urls = [
            stack.url("order-service").to_owned(),
            replica.base_url.clone(),
        ];
        let active = wait_for_one_active_relay(&urls).await;
        let standby = 1 - active;
        if active == 0 {
            stack.service("order-service").freeze();
        } else {
            replica.freeze();
        }
        let order_id = client::place_at(
            &urls[standby],
            &order_body(&customer, &[(&product, 1)], "DE"),
        )
        .await;
        // Billing charges once OrderPlaced is on Kafka: only the standby can have sent it.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let account = client::account(stack, &customer).await;
            if account["payments"].as_array().unwrap().len() == 1 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the standby never took the relay over: {account:#}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        if active == 0 {
            stack.service("order-service").thaw();
        } else {
            replica.thaw();
        }
        assert_eq!(wait_for_one_active_relay(&urls).await, standby);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while client::order_at(&urls[standby], &order_id).await["status"] != "COMPLETED" {
            assert!(tokio::time::Instant::now() < deadline, "never completed");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        replica.stop().await;
    })
}

/// Which of the replicas at `urls` runs the relay, once exactly one does.
async fn wait_for_one_active_relay(urls: &[String]) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut active = Vec::new();
        for (i, url) in urls.iter().enumerate() {
            if client::metric(url, "orderflow_outbox_relay_active").await == 1.0 {
                active.push(i);
            }
        }
        if let [only] = active[..] {
            return only;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "relays active: {active:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Admission control: with shipping down, sagas pile up in flight; past the threshold new
/// orders get 503 with Retry-After (and nothing is placed), reads still work, and once the
/// sagas finish new orders are taken again.
fn new_orders_get_503_while_too_many_sagas_are_in_flight(stack: &mut Stack) -> Run<'_> {
    Box::pin(async move {
        let (product, customer) = seed(stack, "inflight").await;
        stack
            .service("order-service")
            .run_with("OVERLOAD_ORDERS_IN_FLIGHT", "2")
            .await;
        stack.service("shipping-service").stop().await;
        let body = order_body(&customer, &[(&product, 1)], "DE");
        let url = format!("{}/orders", stack.url("order-service"));
        let post = || {
            orderflow_e2e::http()
                .post(&url)
                .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
                .json(&body)
                .send()
        };
        let mut placed = Vec::new();
        let refused = loop {
            let response = post().await.unwrap();
            match response.status() {
                StatusCode::ACCEPTED => {
                    let answer: Value = response.json().await.unwrap();
                    placed.push(answer["order_id"].as_str().unwrap().to_owned());
                }
                StatusCode::SERVICE_UNAVAILABLE => break response,
                other => panic!("unexpected {other}"),
            }
            assert!(placed.len() <= 10, "never refused");
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        assert!(placed.len() >= 3, "refused too early: {}", placed.len());
        assert_eq!(refused.headers()["retry-after"], "1");
        let problem: Value = refused.json().await.unwrap();
        assert_eq!(problem["type"], "/problems/overloaded");
        let (_, page) = client::get_json(&format!("{url}?customer_id={customer}&limit=100")).await;
        assert_eq!(page["orders"].as_array().unwrap().len(), placed.len());

        stack.service("shipping-service").start().await;
        for order_id in &placed {
            client::wait_for_status(stack, order_id, "COMPLETED").await;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while post().await.unwrap().status() != StatusCode::ACCEPTED {
            assert!(tokio::time::Instant::now() < deadline, "still refusing");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        stack
            .service("order-service")
            .run_with("OVERLOAD_ORDERS_IN_FLIGHT", "2000")
            .await;
    })
}

async fn sleep_past(deadline: &Value) {
    let deadline = chrono::DateTime::parse_from_rfc3339(deadline.as_str().unwrap()).unwrap();
    let wait = (deadline.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_milliseconds() + 500;
    if wait > 0 {
        tokio::time::sleep(Duration::from_millis(wait as u64)).await;
    }
}

fn rebuilt_projection_is_identical(stack: &mut Stack) -> Run<'_> {
    Box::pin(async move {
        let (product, customer) = seed(stack, "rebuild").await;
        let completed = client::place(stack, &order_body(&customer, &[(&product, 1)], "DE")).await;
        let refused = client::place(stack, &order_body(&customer, &[(&product, 1)], "AQ")).await;
        client::wait_for_status(stack, &completed, "COMPLETED").await;
        client::wait_for_status(stack, &refused, "CANCELLED").await;
        let database_url = stack.service("order-service").database_url.clone();
        let before = snapshot(&database_url).await;
        assert!(before.len() >= 2);
        let output = tokio::process::Command::new(orderflow_e2e::binary("order-service"))
            .arg("rebuild-view")
            .env("DATABASE_URL", &database_url)
            .output()
            .await
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let after = snapshot(&database_url).await;
        assert_eq!(before, after);
    })
}

async fn snapshot(database_url: &str) -> Vec<Value> {
    let mut db = sqlx::PgConnection::connect(database_url).await.unwrap();
    let rows: Vec<(Value,)> =
        sqlx::query_as("SELECT to_jsonb(v) FROM orders_view v ORDER BY order_id")
            .fetch_all(&mut db)
            .await
            .unwrap();
    rows.into_iter().map(|(row,)| row).collect()
}

fn sigterm_under_load_loses_nothing_and_repeats_nothing(stack: &mut Stack) -> Run<'_> {
    Box::pin(async move {
        const ORDERS: usize = 60;
        let product = format!(
            "sigterm-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..6]
        );
        let customer = format!("{product}-customer");
        put_product(stack, &product, 100, 1_000).await;
        put_account(stack, &customer, 10_000_000).await;
        wait_for_catalog(stack, &[&product]).await;
        // The client retries each order with its Idempotency-Key until it is accepted, as a
        // real client would through a restart; a retry must never make a second order.
        let url = format!("{}/orders", stack.url("order-service"));
        let body = order_body(&customer, &[(&product, 2)], "DE");
        let load = tokio::spawn(async move {
            let http = orderflow_e2e::auth::operator_client()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap();
            let mut accepted = Vec::new();
            for _ in 0..ORDERS {
                let key = uuid::Uuid::new_v4().to_string();
                let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
                loop {
                    let sent = http
                        .post(&url)
                        .header("Idempotency-Key", &key)
                        .json(&body)
                        .send()
                        .await;
                    if let Ok(response) = sent
                        && response.status() == StatusCode::ACCEPTED
                    {
                        let answer: Value = response.json().await.unwrap();
                        accepted.push(answer["order_id"].as_str().unwrap().to_owned());
                        break;
                    }
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "order never accepted"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
            accepted
        });
        tokio::time::sleep(Duration::from_millis(800)).await;
        // Each stop asserts a clean exit within 20 s of SIGTERM (the pods' grace is 30 s).
        for service in ["billing-service", "order-service", "inventory-service"] {
            stack.service(service).stop().await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            stack.service(service).start().await;
        }
        let accepted = load.await.unwrap();
        let distinct: std::collections::BTreeSet<&String> = accepted.iter().collect();
        assert_eq!(
            distinct.len(),
            ORDERS,
            "a retried request made a second order"
        );
        // Should an order be cancelled instead of shipped (it is not expected: the deadline
        // here never fires), it must still end once, and money and stock account exactly for
        // the completed ones.
        let mut completed = 0i64;
        for order_id in &accepted {
            if client::wait_terminal(stack, order_id).await["status"] == "COMPLETED" {
                completed += 1;
            }
        }
        assert!(completed > 0, "no order completed");
        let account = client::account(stack, &customer).await;
        let payments = account["payments"].as_array().unwrap();
        let paid: std::collections::BTreeSet<&str> = payments
            .iter()
            .map(|p| p["order_id"].as_str().unwrap())
            .collect();
        assert_eq!(paid.len(), payments.len(), "an order was charged twice");
        assert_eq!(
            account["balance_minor"],
            10_000_000 - completed * 200,
            "{account:#}"
        );
        let stock = client::product(stack, &product).await;
        assert_eq!(stock["reserved"], 2 * completed, "{stock}");
        assert_eq!(stock["available"], 1_000 - 2 * completed);
        let (_, page) = client::get_json(&format!(
            "{}/orders?customer_id={customer}&limit=100",
            stack.url("order-service")
        ))
        .await;
        assert_eq!(page["orders"].as_array().unwrap().len(), ORDERS);
    })
}
