//! Many orders at once against scarce stock, and one trace per order across the services.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::time::Duration;

use orderflow_e2e::Stack;
use orderflow_e2e::client::{self, order_body};
use serde_json::{Value, json};

use super::{Ctx, Run, seed};

pub(super) fn concurrent_orders_never_oversell_and_conserve_money(ctx: &Ctx) -> Run<'_> {
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
            let order = client::wait_terminal(stack, order_id).await;
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
            let account = settled_account(stack, customer).await;
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
        }
        assert_eq!(charges - refunds, completed_total);
        assert_eq!(spent, completed_total);
        // The dashboard's orders/s and saga latency come from these (other scenarios share
        // the stack, so at least ours).
        let order_service = stack.url("order-service");
        let finished = client::metric(order_service, "orderflow_orders_finished_total").await;
        assert!(
            finished >= ORDERS as f64,
            "orders_finished_total = {finished}"
        );
        let timed =
            client::metric(order_service, "orderflow_order_saga_duration_seconds_count").await;
        assert!(timed >= ORDERS as f64, "saga durations observed: {timed}");
    })
}

/// The account once billing has heard every order's end: no charge still held.
async fn settled_account(stack: &Stack, customer: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let account = client::account(stack, customer).await;
        if account["holds"] == json!([]) {
            return account;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "charges still held after every order ended: {account:#}"
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

pub(super) fn one_trace_per_order_across_all_four_services(ctx: &Ctx) -> Run<'_> {
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
