//! Operating stuck sagas (`GET /sagas/stuck`): scenarios that hold an order at a step by
//! stopping the service that owes it, on the faults stack (whose stuck threshold is
//! [`STUCK_AFTER_SECS`]).

use std::future::Future;
use std::pin::Pin;

use orderflow_e2e::Stack;
use orderflow_e2e::client::{self, order_body};
use serde_json::json;

use crate::FaultScenario;
use crate::faults::{NO_DEADLINE_SECS, seed};

/// order-service's STUCK_AFTER_SECS on the faults stack: an order idle this long is stuck.
pub const STUCK_AFTER_SECS: u64 = 3;

type Run<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

pub const SCENARIOS: &[(&str, FaultScenario, u64)] = &[scenario!(
    an_order_waiting_on_a_stopped_service_is_listed_stuck_with_the_lag_until_it_moves,
    NO_DEADLINE_SECS
)];

fn an_order_waiting_on_a_stopped_service_is_listed_stuck_with_the_lag_until_it_moves(
    stack: &mut Stack,
) -> Run<'_> {
    Box::pin(async move {
        let (product, customer) = seed(stack, "stuck").await;
        stack.service("inventory-service").stop().await;
        let order_id = client::place(stack, &order_body(&customer, &[(&product, 1)], "DE")).await;
        client::wait_for_status(stack, &order_id, "PAYMENT_AUTHORIZED").await;
        assert!(
            client::stuck_entry(stack, &order_id).await.is_none(),
            "listed before it was idle for {STUCK_AFTER_SECS} s"
        );

        let listing = client::wait_until_stuck(stack, &order_id).await;
        assert_eq!(listing["stuck_after_secs"], STUCK_AFTER_SECS, "{listing:#}");
        assert_eq!(listing["evidence_unavailable"], json!([]), "{listing:#}");
        let stuck = client::stuck_entry_in(&listing, &order_id).unwrap();
        assert_eq!(stuck["status"], "PAYMENT_AUTHORIZED", "{stuck:#}");
        assert!(
            stuck["idle_secs"].as_i64().unwrap() >= STUCK_AFTER_SECS as i64 - 1,
            "{stuck:#}"
        );
        let awaiting = stuck["awaiting"].as_array().unwrap();
        assert_eq!(awaiting.len(), 1, "{stuck:#}");
        assert_eq!(awaiting[0]["service"], "inventory-service", "{stuck:#}");
        assert!(
            awaiting[0]["events"]
                .as_array()
                .unwrap()
                .contains(&"StockReserved".into()),
            "{stuck:#}"
        );
        // The payment inventory must act on sits behind the group's committed offset.
        let partitions = awaiting[0]["partitions"].as_array().unwrap();
        let payments = partitions
            .iter()
            .find(|p| p["topic"].as_str().unwrap().ends_with("payments"))
            .unwrap_or_else(|| panic!("no payments partition: {stuck:#}"));
        assert!(payments["lag"].as_i64().unwrap() >= 1, "{stuck:#}");
        assert!(
            stuck["dead_letters"].as_array().unwrap().is_empty(),
            "{stuck:#}"
        );
        // The gauges alerts read count it too (refreshed every 5 s).
        let (stuck, on_stock) = ("orderflow_sagas_stuck", "awaiting=\"StockReserved\"");
        eventually_metric(stack, stuck, on_stock, |v| v >= 1.0).await;
        let oldest = client::metric(
            stack.url("order-service"),
            "orderflow_sagas_stuck_oldest_idle_seconds",
        )
        .await;
        assert!(
            oldest >= STUCK_AFTER_SECS as f64 - 1.0,
            "oldest idle {oldest}"
        );

        stack.service("inventory-service").start().await;
        client::wait_for_status(stack, &order_id, "COMPLETED").await;
        assert!(
            client::stuck_entry(stack, &order_id).await.is_none(),
            "still listed once completed"
        );
        eventually_metric(stack, stuck, on_stock, |v| v == 0.0).await;
    })
}

/// Polls order-service's [`client::metric_where`] until `wanted` holds (15 s at most: the
/// gauges refresh every 5 s).
async fn eventually_metric(stack: &Stack, name: &str, label: &str, wanted: impl Fn(f64) -> bool) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let value = client::metric_where(stack.url("order-service"), name, label).await;
        if wanted(value) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} {label} stayed at {value}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}
