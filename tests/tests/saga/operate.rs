//! Operating stuck sagas (`GET /sagas/stuck`, and the operator's nudge and cancel):
//! scenarios that hold an order at a step by stopping the service that owes it, on the
//! faults stack (whose stuck threshold is [`STUCK_AFTER_SECS`]).

use std::future::Future;
use std::pin::Pin;

use orderflow_e2e::auth::OPERATOR;
use orderflow_e2e::client::{self, order_body};
use orderflow_e2e::corrupt_history::CorruptHistory;
use orderflow_e2e::{Stack, offsets, timeline_types};
use reqwest::StatusCode;
use serde_json::{Value, json};
use shared_events::contracts::Topic;
use sqlx::Connection;

use crate::FaultScenario;
use crate::faults::{NO_DEADLINE_SECS, assert_compensated, seed};

/// order-service's STUCK_AFTER_SECS on the faults stack: an order idle this long is stuck.
pub const STUCK_AFTER_SECS: u64 = 3;

type Run<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

pub const SCENARIOS: &[(&str, FaultScenario, u64)] = &[
    scenario!(
        an_order_waiting_on_a_stopped_service_is_listed_stuck_with_the_lag_until_it_moves,
        NO_DEADLINE_SECS
    ),
    scenario!(
        a_partition_paused_on_a_failing_step_is_listed_with_why_until_the_cause_goes,
        NO_DEADLINE_SECS
    ),
    scenario!(
        a_nudge_heals_a_delivery_the_group_skipped_and_charges_once_however_often_repeated,
        NO_DEADLINE_SECS
    ),
    scenario!(
        an_operator_cancels_a_stuck_order_and_every_step_is_compensated,
        NO_DEADLINE_SECS
    ),
    scenario!(
        dead_letters_redriven_once_their_cause_is_fixed_complete_the_order_once,
        NO_DEADLINE_SECS
    ),
];

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
        // Stopped, not held back: nobody said anything with the group's commit.
        assert_eq!(payments["held_back"], Value::Null, "{stuck:#}");
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

/// Inventory's database refuses its reservations (a trigger standing in for an outage of
/// one service's storage): inventory retries, then pauses the order's partition of
/// `orders` (where its OrderPlaced waits) for a cool-down and says so with its group's commit there. The listing shows the pause
/// and its reason beside the lag; once the cause goes, the order completes and leaves it.
fn a_partition_paused_on_a_failing_step_is_listed_with_why_until_the_cause_goes(
    stack: &mut Stack,
) -> Run<'_> {
    Box::pin(async move {
        let (product, customer) = seed(stack, "paused").await;
        let inventory_db = stack.service("inventory-service").database_url.clone();
        let mut inventory = sqlx::PgConnection::connect(&inventory_db).await.unwrap();
        for statement in [
            "CREATE FUNCTION refuse_reservations() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN RAISE EXCEPTION 'the warehouse system is offline' USING ERRCODE = '57P03'; END $$",
            "CREATE TRIGGER refuse_reservations BEFORE INSERT ON order_reservations \
             FOR EACH ROW EXECUTE FUNCTION refuse_reservations()",
        ] {
            sqlx::query(statement)
                .execute(&mut inventory)
                .await
                .unwrap();
        }
        let order_id = client::place(stack, &order_body(&customer, &[(&product, 1)], "DE")).await;

        let listing = eventually_listed(stack, |listing| {
            client::stuck_entry_in(listing, &order_id).is_some_and(|stuck| {
                stuck["awaiting"][0]["partitions"]
                    .to_string()
                    .contains("paused")
            })
        })
        .await;
        let stuck = client::stuck_entry_in(&listing, &order_id).unwrap();
        assert_eq!(
            stuck["awaiting"][0]["service"], "inventory-service",
            "{stuck:#}"
        );
        let orders = stuck["awaiting"][0]["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["topic"].as_str().unwrap().ends_with("-orders"))
            .cloned()
            .unwrap_or_else(|| panic!("no orders partition: {stuck:#}"));
        let held = &orders["held_back"];
        assert_eq!(held["state"], "paused", "{stuck:#}");
        assert!(
            held["reason"]
                .as_str()
                .unwrap()
                .contains("the warehouse system is offline"),
            "{stuck:#}"
        );
        assert!(
            held["until"].as_str().unwrap() > held["since"].as_str().unwrap(),
            "{stuck:#}"
        );
        assert!(orders["lag"].as_i64().unwrap() >= 1, "{stuck:#}");

        // The cause goes: after the cool-down the step is retried and the order completes.
        for statement in [
            "DROP TRIGGER refuse_reservations ON order_reservations",
            "DROP FUNCTION refuse_reservations()",
        ] {
            sqlx::query(statement)
                .execute(&mut inventory)
                .await
                .unwrap();
        }
        client::wait_for_status(stack, &order_id, "COMPLETED").await;
        assert!(
            client::stuck_entry(stack, &order_id).await.is_none(),
            "still listed once completed"
        );
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

/// Billing's group is moved past the order's `OrderPlaced` while billing is down, as a
/// mistaken offset reset would: the order waits for a payment nobody will ask for, and the
/// evidence shows the group with nothing left to read. Two nudges republish the event under
/// its own id; billing charges once.
fn a_nudge_heals_a_delivery_the_group_skipped_and_charges_once_however_often_repeated(
    stack: &mut Stack,
) -> Run<'_> {
    Box::pin(async move {
        let (product, customer) = seed(stack, "nudge").await;
        stack.service("billing-service").stop().await;
        let order_id = client::place(stack, &order_body(&customer, &[(&product, 1)], "DE")).await;
        let orders_lag = |listing: &Value| {
            let stuck = client::stuck_entry_in(listing, &order_id)?;
            let awaiting = stuck["awaiting"].as_array()?.first()?.clone();
            let orders = awaiting["partitions"]
                .as_array()?
                .iter()
                .find(|p| p["topic"].as_str().unwrap().ends_with("orders"))?
                .clone();
            orders["lag"].as_i64()
        };
        let listing = eventually_listed(stack, |l| orders_lag(l).is_some_and(|lag| lag >= 1)).await;
        let stuck = client::stuck_entry_in(&listing, &order_id).unwrap();
        assert_eq!(stuck["status"], "PENDING", "{stuck:#}");
        assert_eq!(
            stuck["awaiting"][0]["service"], "billing-service",
            "{stuck:#}"
        );

        offsets::skip_to_end(&stack.prefix, "billing-service", Topic::Orders, &order_id);
        stack.service("billing-service").start().await;
        // Still stuck, and the group has passed the record: a nudge's case.
        eventually_listed(stack, |l| orders_lag(l) == Some(0)).await;
        let placed_id = client::order(stack, &order_id).await["timeline"][0]["event_id"].clone();

        stack.service("billing-service").stop().await;
        for nudge in 1..=2 {
            let reason = format!("billing's group skipped OrderPlaced ({nudge})");
            let (status, action) = client::operate(stack, &order_id, "nudge", &reason).await;
            assert_eq!(status, StatusCode::ACCEPTED, "{action:#}");
            assert_eq!(action["event_type"], "OrderPlaced", "{action:#}");
            assert_eq!(action["event_id"], placed_id, "{action:#}");
            // Published again (the outbox row is gone) before the next nudge.
            eventually_listed(stack, |l| orders_lag(l) == Some(nudge)).await;
        }
        stack.service("billing-service").start().await;
        let order = client::wait_for_status(stack, &order_id, "COMPLETED").await;

        let account = client::account(stack, &customer).await;
        assert_eq!(
            account["balance_minor"],
            10_000 - 400,
            "charged once: {account:#}"
        );
        let nudges: Vec<&Value> = order["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|step| step["event_type"] == "NudgedByOperator")
            .collect();
        assert_eq!(nudges.len(), 2, "{order:#}");
        for nudge in nudges {
            assert_eq!(nudge["kind"], "operation", "{nudge:#}");
            let detail = nudge["detail"].as_str().unwrap();
            assert!(
                detail.contains(OPERATOR) && detail.contains("skipped OrderPlaced"),
                "{detail}"
            );
        }
        assert_refused(stack, &order_id, "nudge", "/problems/order-over").await;
        assert_refused(stack, &order_id, "cancel", "/problems/order-shipped").await;
    })
}

/// An order waits on a stopped inventory-service; the operator cancels it, with a reason.
/// Once inventory is back, every step is compensated, and the history says who did it.
fn an_operator_cancels_a_stuck_order_and_every_step_is_compensated(stack: &mut Stack) -> Run<'_> {
    Box::pin(async move {
        let (product, customer) = seed(stack, "opcancel").await;
        stack.service("inventory-service").stop().await;
        let order_id = client::place(stack, &order_body(&customer, &[(&product, 1)], "DE")).await;
        client::wait_for_status(stack, &order_id, "PAYMENT_AUTHORIZED").await;

        for refused in [
            "  ",
            "forged\n2026-12-07 INFO operator approved",
            "bell\u{7}",
        ] {
            let (status, problem) = client::operate(stack, &order_id, "cancel", refused).await;
            assert_eq!(
                status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{refused:?}: {problem:#}"
            );
        }
        let (status, action) = client::operate_with(
            stack,
            &order_id,
            "cancel",
            &json!({"reason": "internal note: fraud team ticket 4411",
                    "customer_reason": "an item could not be reserved in time"}),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{action:#}");
        assert_eq!(action["status"], "CANCELLING", "{action:#}");
        assert_eq!(
            action["event_type"], "OrderCancellationRequested",
            "{action:#}"
        );
        assert_refused(stack, &order_id, "cancel", "/problems/order-cancelling").await;

        stack.service("inventory-service").start().await;
        let order = client::wait_for_status(stack, &order_id, "CANCELLED").await;
        assert_compensated(stack, &product, &customer, &order).await;
        let types = timeline_types(&order);
        let noted = types.iter().position(|t| t == "CancelledByOperator");
        let requested = types.iter().position(|t| t == "OrderCancellationRequested");
        assert!(noted.is_some() && noted < requested, "{types:?}");
        // The operator's name and note are for admins; the customer reads what the operator
        // chose to tell them. (Before, the customer's own view showed both.)
        let outcome = order["outcome_reason"].as_str().unwrap();
        assert!(
            outcome.ends_with("cancelled by the shop: an item could not be reserved in time"),
            "{outcome}"
        );
        let noted = &order["timeline"][noted.unwrap()]["detail"];
        assert!(
            noted.as_str().unwrap().contains(OPERATOR)
                && noted.as_str().unwrap().contains("fraud team"),
            "{noted}"
        );
        let url = format!("{}/orders/{order_id}", stack.url("order-service"));
        let seen_by_customer: Value = reqwest::Client::new()
            .get(url)
            .bearer_auth(orderflow_e2e::auth::token(&customer, "orders"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            seen_by_customer["status"], "CANCELLED",
            "{seen_by_customer:#}"
        );
        let text = seen_by_customer.to_string();
        for internal in [OPERATOR, "fraud team", "CancelledByOperator"] {
            assert!(
                !text.contains(internal),
                "the customer sees {internal}: {seen_by_customer:#}"
            );
        }
        assert_refused(stack, &order_id, "cancel", "/problems/order-over").await;
        assert_refused(stack, &order_id, "nudge", "/problems/order-over").await;
        let unknown = uuid::Uuid::new_v4().to_string();
        let (status, _) = client::operate(stack, &unknown, "nudge", "no such order").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    })
}

/// The action is refused with 409 and the problem type `kind`, and records nothing. (The
/// saga may go on meanwhile, a cancelling order's compensation say: the history may grow,
/// but by no operator's action.)
async fn assert_refused(stack: &Stack, order_id: &str, action: &str, kind: &str) {
    let before = client::order(stack, order_id).await;
    let (status, problem) = client::operate(stack, order_id, action, "meaningless now").await;
    assert_eq!(status, StatusCode::CONFLICT, "{action}: {problem:#}");
    assert_eq!(problem["type"], kind, "{action}: {problem:#}");
    let after = client::order(stack, order_id).await;
    let (before, after) = (
        before["timeline"].as_array().unwrap(),
        after["timeline"].as_array().unwrap(),
    );
    assert!(
        after.starts_with(before)
            && after[before.len()..]
                .iter()
                .all(|entry| entry["kind"] != "operation"),
        "{action} changed the history: {before:#?} became {after:#?}"
    );
}

/// Polls `GET /sagas/stuck` until `wanted` holds of the listing (30 s at most).
async fn eventually_listed(stack: &Stack, wanted: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let listing = client::stuck_sagas(stack).await;
        if wanted(&listing) {
            return listing;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the listing never became as wanted: {listing:#}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// order-service cannot read an order's history back (a bad manual edit), so it
/// dead-letters each fact reported for it, with the reason, and lists it as stuck. Once
/// the history is repaired, the operator redrives them: billing, inventory and shipping
/// each read their own topic's record back and send it again, and the order completes. A
/// second redrive of the same dead letters is refused.
fn dead_letters_redriven_once_their_cause_is_fixed_complete_the_order_once(
    stack: &mut Stack,
) -> Run<'_> {
    Box::pin(async move {
        let (product, customer) = seed(stack, "redrive").await;
        stack.service("billing-service").stop().await;
        let order_id = client::place(stack, &order_body(&customer, &[(&product, 1)], "DE")).await;
        assert_refused(stack, &order_id, "redrive", "/problems/no-dead-letters").await;
        let edit = CorruptHistory::of(stack, &order_id).await;
        stack.service("billing-service").start().await;

        // Payment, stock and shipment each reported, each refused.
        let letters = |listing: &Value| {
            client::stuck_entry_in(listing, &order_id)
                .map(|stuck| stuck["dead_letters"].as_array().unwrap().clone())
                .unwrap_or_default()
        };
        let listing = eventually_listed(stack, |l| letters(l).len() == 3).await;
        let stuck = client::stuck_entry_in(&listing, &order_id).unwrap();
        assert!(
            stuck["unreadable"]
                .as_str()
                .unwrap()
                .contains("does not match"),
            "{stuck:#}"
        );
        for letter in letters(&listing) {
            assert!(
                letter["reason"]
                    .as_str()
                    .unwrap()
                    .contains("corrupt history"),
                "{letter:#}"
            );
            assert!(
                letter["consumer_group"]
                    .as_str()
                    .unwrap()
                    .ends_with("order-service")
            );
        }
        let unreadable = "awaiting=\"unreadable_history\"";
        eventually_metric(stack, "orderflow_sagas_stuck", unreadable, |v| v >= 1.0).await;
        // Before the repair, a redrive would only fail again.
        let (status, problem) = client::operate(stack, &order_id, "redrive", "too soon").await;
        assert_eq!(status, StatusCode::CONFLICT, "{problem:#}");
        assert_eq!(
            problem["type"], "/problems/unreadable-history",
            "{problem:#}"
        );

        edit.repair(stack).await;
        let (status, problem) = client::operate_with(
            stack,
            &order_id,
            "redrive",
            &json!({"reason": "one of another order",
                    "dead_letters": [{"topic": "payments.dlq", "partition": 0, "offset": 99999}]}),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem:#}");
        let (status, action) =
            client::operate(stack, &order_id, "redrive", "the history is repaired").await;
        assert_eq!(status, StatusCode::ACCEPTED, "{action:#}");
        assert_eq!(
            action["event_type"], "DeadLetterRedriveRequested",
            "{action:#}"
        );
        assert_eq!(
            action["dead_letters"].as_array().unwrap().len(),
            3,
            "{action:#}"
        );
        let order = client::wait_for_status(stack, &order_id, "COMPLETED").await;
        let redrive = order["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .find(|step| step["event_type"] == "DeadLetterRedriveRequested")
            .unwrap_or_else(|| panic!("no redrive in the history: {order:#}"));
        assert_eq!(redrive["kind"], "operation", "{redrive:#}");
        let detail = redrive["detail"].as_str().unwrap();
        assert!(
            detail.contains(OPERATOR) && detail.contains("the history is repaired"),
            "{detail}"
        );
        eventually_metric(stack, "orderflow_sagas_stuck", unreadable, |v| v == 0.0).await;

        // Again: refused, all of them or one named, since each was redriven once; before,
        // every click sent each record again (and, were the cause not fixed, doubled the
        // order's dead letters).
        let (status, problem) = client::operate(stack, &order_id, "redrive", "once more").await;
        assert_eq!(status, StatusCode::CONFLICT, "{problem:#}");
        assert_eq!(problem["type"], "/problems/already-redriven", "{problem:#}");
        let named = &action["dead_letters"][0];
        let (status, problem) = client::operate_with(
            stack,
            &order_id,
            "redrive",
            &json!({"reason": "this one once more",
                    "dead_letters": [{"topic": named["topic"], "partition": named["partition"],
                                      "offset": named["offset"]}]}),
        )
        .await;
        assert_eq!(status, StatusCode::CONFLICT, "{problem:#}");
        assert_eq!(problem["type"], "/problems/already-redriven", "{problem:#}");
        let order = client::order(stack, &order_id).await;
        let types = timeline_types(&order);
        for fact in ["PaymentAuthorized", "StockReserved", "ShipmentScheduled"] {
            assert_eq!(
                types.iter().filter(|t| *t == fact).count(),
                1,
                "{fact}: {types:?}"
            );
        }
        let account = client::account(stack, &customer).await;
        assert_eq!(
            account["balance_minor"],
            10_000 - 400,
            "charged once: {account:#}"
        );
    })
}
