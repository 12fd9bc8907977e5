//! Every outcome of the saga, end to end, with its timeline and its effects on money and stock.

use std::collections::BTreeSet;
use std::time::Duration;

use orderflow_e2e::client::{self, order_body};
use orderflow_e2e::timeline_types;
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::{Ctx, Run, event, seed};

pub(super) fn happy_path_completes_with_the_expected_timeline(ctx: &Ctx) -> Run<'_> {
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

pub(super) fn declined_payment_cancels_the_order(ctx: &Ctx) -> Run<'_> {
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

pub(super) fn out_of_stock_refunds_and_cancels(ctx: &Ctx) -> Run<'_> {
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

pub(super) fn shipping_failure_releases_refunds_and_cancels(ctx: &Ctx) -> Run<'_> {
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

pub(super) fn cancel_after_shipment_is_409(ctx: &Ctx) -> Run<'_> {
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
