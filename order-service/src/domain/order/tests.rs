use chrono::{Duration, Utc};
use shared_events::contracts::Address;
use uuid::Uuid;

use super::*;
use crate::domain::events::{Line, OrderEvent, Placed, StepKind};

fn placed() -> Placed {
    Placed {
        customer_id: "alice".into(),
        currency: "EUR".into(),
        lines: vec![Line {
            product_id: "p1".into(),
            quantity: 2,
            unit_price_minor: 500,
        }],
        total_minor: 1000,
        shipping_address: Address {
            recipient: "Alice".into(),
            line1: "1 Main St".into(),
            line2: None,
            city: "Berlin".into(),
            postal_code: "10115".into(),
            country: "DE".into(),
        },
        note: None,
        saga_deadline: Utc::now() + Duration::seconds(30),
    }
}

fn order_after(events: &[OrderEvent]) -> Order {
    let mut history = vec![OrderEvent::OrderPlaced(placed())];
    history.extend(events.iter().cloned());
    Order::from_history(Uuid::now_v7(), &history).unwrap()
}

fn charged() -> OrderEvent {
    OrderEvent::PaymentAuthorized {
        payment_id: Uuid::nil(),
        amount_minor: 1000,
    }
}

fn reserved() -> OrderEvent {
    OrderEvent::StockReserved {
        reservation_id: Uuid::nil(),
    }
}

fn shipped() -> OrderEvent {
    OrderEvent::ShipmentScheduled {
        tracking_id: "UP1".into(),
        carrier: "UPS".into(),
    }
}

fn refunded() -> OrderEvent {
    OrderEvent::PaymentRefunded {
        amount_minor: 1000,
        reason: "r".into(),
    }
}

#[test]
fn the_happy_path_completes_on_shipment() {
    let order = order_after(&[charged(), reserved()]);
    assert_eq!(order.status(), OrderStatus::StockReserved);
    assert_eq!(
        order.react(shipped()),
        vec![shipped(), OrderEvent::OrderCompleted]
    );
}

#[test]
fn a_decline_cancels_at_once() {
    let order = order_after(&[]);
    let decline = OrderEvent::PaymentDeclined {
        reason: "insufficient funds".into(),
    };
    let recorded = order.react(decline);
    assert_eq!(recorded.len(), 2);
    assert!(
        matches!(&recorded[1], OrderEvent::OrderCancelled { reason } if reason.contains("insufficient"))
    );
}

#[test]
fn a_stock_rejection_cancels_only_after_the_refund() {
    let rejected = stock_rejected();
    let order = order_after(&[charged()]);
    assert_eq!(order.react(rejected.clone()), vec![rejected.clone()]);
    let order = order_after(&[charged(), rejected]);
    assert_eq!(order.status(), OrderStatus::Cancelling);
    let recorded = order.react(refunded());
    assert!(matches!(
        recorded[..],
        [_, OrderEvent::OrderCancelled { .. }]
    ));
}

#[test]
fn a_shipment_failure_cancels_after_release_and_refund_in_either_order() {
    let failed = OrderEvent::ShipmentFailed {
        reason: "no carrier".into(),
    };
    let released = OrderEvent::StockReleased {
        reservation_id: Uuid::nil(),
    };
    for (first, second) in [
        (released.clone(), refunded()),
        (refunded(), released.clone()),
    ] {
        let order = order_after(&[charged(), reserved(), failed.clone()]);
        assert_eq!(order.react(first.clone()).len(), 1);
        let order = order_after(&[charged(), reserved(), failed.clone(), first]);
        assert!(matches!(
            order.react(second)[..],
            [_, OrderEvent::OrderCancelled { .. }]
        ));
    }
}

#[test]
fn a_duplicate_fact_is_recorded_once() {
    let order = order_after(&[charged()]);
    assert!(order.react(charged()).is_empty());
}

#[test]
fn cancellation_is_refused_once_shipped_and_idempotent_before() {
    let order = order_after(&[charged(), reserved(), shipped(), OrderEvent::OrderCompleted]);
    assert_eq!(
        order.request_cancellation("changed my mind"),
        Err(CancelRefused::AlreadyShipped)
    );
    let order = order_after(&[charged()]);
    assert!(matches!(
        order.request_cancellation("x"),
        Ok(Some(OrderEvent::OrderCancellationRequested { .. }))
    ));
    let order = order_after(&[
        charged(),
        OrderEvent::OrderCancellationRequested { reason: "x".into() },
    ]);
    assert_eq!(order.request_cancellation("again"), Ok(None));
    assert_eq!(order.status(), OrderStatus::Cancelling);
}

#[test]
fn a_shipment_that_wins_the_race_completes_and_rejects_the_cancellation() {
    let order = order_after(&[
        charged(),
        reserved(),
        OrderEvent::OrderCancellationRequested { reason: "x".into() },
    ]);
    let recorded = order.react(shipped());
    assert!(matches!(
        recorded[..],
        [
            OrderEvent::ShipmentScheduled { .. },
            OrderEvent::CancellationRejected { .. },
            OrderEvent::OrderCompleted
        ]
    ));
}

#[test]
fn the_deadline_is_due_only_for_orders_still_in_flight() {
    let order = order_after(&[charged()]);
    let later = order.placed.saga_deadline + Duration::seconds(1);
    assert!(!order.deadline_due(Utc::now()));
    assert!(order.deadline_due(later));
    let cancelling = order_after(&[
        charged(),
        OrderEvent::OrderCancellationRequested { reason: "x".into() },
    ]);
    assert!(!cancelling.deadline_due(later));
    let done = order_after(&[charged(), reserved(), shipped(), OrderEvent::OrderCompleted]);
    assert!(!done.deadline_due(later));
}

#[test]
fn terminal_orders_record_late_facts_and_decide_nothing_more() {
    let order = order_after(&[
        OrderEvent::PaymentDeclined { reason: "x".into() },
        OrderEvent::OrderCancelled { reason: "x".into() },
    ]);
    assert_eq!(order.react(charged()), vec![charged()]);
    let late = order_after(&[
        OrderEvent::PaymentDeclined { reason: "x".into() },
        OrderEvent::OrderCancelled { reason: "x".into() },
        charged(),
    ]);
    assert_eq!(late.status(), OrderStatus::Cancelled);
}

#[test]
fn a_failed_shipment_is_followed_by_compensations_then_the_outcome() {
    let order = order_after(&[charged(), reserved()]);
    let failure = OrderEvent::ShipmentFailed { reason: "x".into() };
    let released = OrderEvent::StockReleased {
        reservation_id: Uuid::nil(),
    };
    let order_after_failure = order_after(&[charged(), reserved(), failure.clone()]);
    let after_release = order_after(&[charged(), reserved(), failure.clone(), released.clone()]);
    let recorded: Vec<OrderEvent> = [
        order.react(failure),
        order_after_failure.react(released),
        after_release.react(refunded()),
    ]
    .concat();
    let kinds: Vec<StepKind> = recorded.iter().map(OrderEvent::step_kind).collect();
    assert_eq!(
        kinds,
        [
            StepKind::Failure,
            StepKind::Compensation,
            StepKind::Compensation,
            StepKind::Outcome
        ]
    );
}

fn stock_rejected() -> OrderEvent {
    OrderEvent::StockRejected {
        product_id: "p1".into(),
        reason: "none left".into(),
    }
}

fn shipment_failed() -> OrderEvent {
    OrderEvent::ShipmentFailed {
        reason: "no carrier".into(),
    }
}

fn cancellation() -> OrderEvent {
    OrderEvent::OrderCancellationRequested {
        reason: "customer".into(),
    }
}

fn owed(order: &Order) -> Vec<(&'static str, &'static str)> {
    order
        .awaiting()
        .into_iter()
        .map(|step| (step.name(), step.owed_by().name))
        .collect()
}

#[test]
fn on_the_way_forward_the_order_awaits_one_step_from_its_owner() {
    assert_eq!(
        owed(&order_after(&[])),
        [("PaymentAuthorized", "billing-service")]
    );
    assert_eq!(
        owed(&order_after(&[charged()])),
        [("StockReserved", "inventory-service")]
    );
    assert_eq!(
        owed(&order_after(&[charged(), reserved()])),
        [("ShipmentScheduled", "shipping-service")]
    );
    assert!(
        owed(&order_after(&[
            charged(),
            reserved(),
            shipped(),
            OrderEvent::OrderCompleted
        ]))
        .is_empty()
    );
}

#[test]
fn a_failed_saga_awaits_each_compensation_still_owed() {
    assert_eq!(
        owed(&order_after(&[charged(), stock_rejected()])),
        [("PaymentRefunded", "billing-service")]
    );
    assert_eq!(
        owed(&order_after(&[charged(), reserved(), shipment_failed()])),
        [
            ("PaymentRefunded", "billing-service"),
            ("StockReleased", "inventory-service")
        ]
    );
    assert_eq!(
        owed(&order_after(&[
            charged(),
            reserved(),
            shipment_failed(),
            refunded()
        ])),
        [("StockReleased", "inventory-service")]
    );
}

#[test]
fn a_cancellation_awaits_shipping_s_answer_before_the_compensations() {
    // Billing has not answered the order yet: it is owed first, whatever else happened.
    assert_eq!(
        owed(&order_after(&[cancellation()])),
        [("PaymentAuthorized", "billing-service")]
    );
    assert_eq!(
        owed(&order_after(&[charged(), reserved(), cancellation()])),
        [("ShipmentScheduled", "shipping-service")]
    );
    // Inventory has not answered the payment yet; billing's refund waits for shipping.
    assert_eq!(
        owed(&order_after(&[charged(), cancellation()])),
        [
            ("ShipmentScheduled", "shipping-service"),
            ("StockReserved", "inventory-service")
        ]
    );
    let cancelled = order_after(&[
        charged(),
        cancellation(),
        stock_rejected(),
        refunded(),
        OrderEvent::OrderCancelled {
            reason: "cancelled: customer".into(),
        },
    ]);
    assert!(owed(&cancelled).is_empty());
}

fn nudged() -> OrderEvent {
    OrderEvent::NudgedByOperator {
        operator: "ops".into(),
        reason: "lost delivery".into(),
        event_id: Uuid::nil(),
        event_type: "OrderPlaced".into(),
    }
}

#[test]
fn an_operator_s_note_changes_nothing_the_saga_decides() {
    let noted = order_after(&[charged(), nudged(), nudged()]);
    let plain = order_after(&[charged()]);
    assert_eq!(noted.status(), plain.status());
    assert_eq!(noted.awaiting(), plain.awaiting());
    assert_eq!(noted.react(reserved()), plain.react(reserved()));
    assert!(!nudged().is_saga_event());
    assert_eq!(nudged().step_kind(), StepKind::Operation);
    assert!(charged().is_saga_event());
}

#[test]
fn an_operator_may_nudge_only_while_the_saga_waits() {
    assert_eq!(order_after(&[]).operator_may_nudge(), Ok(()));
    assert_eq!(
        order_after(&[stock_rejected()]).operator_may_nudge(),
        Ok(())
    );
    let completed = order_after(&[charged(), reserved(), shipped(), OrderEvent::OrderCompleted]);
    assert_eq!(completed.operator_may_nudge(), Err(OperatorRefused::Over));
}

#[test]
fn an_operator_may_cancel_only_an_order_moving_forward() {
    assert_eq!(order_after(&[charged()]).operator_may_cancel(), Ok(()));
    assert_eq!(
        order_after(&[charged(), reserved(), shipped()]).operator_may_cancel(),
        Err(OperatorRefused::Shipped)
    );
    // Compensations under way, whether a cancellation or a refusal started them.
    for failed in [cancellation(), stock_rejected()] {
        assert_eq!(
            order_after(&[charged(), failed]).operator_may_cancel(),
            Err(OperatorRefused::AlreadyCancelling)
        );
    }
    let cancelled = order_after(&[
        OrderEvent::PaymentDeclined {
            reason: "no".into(),
        },
        OrderEvent::OrderCancelled {
            reason: "no".into(),
        },
    ]);
    assert_eq!(cancelled.operator_may_cancel(), Err(OperatorRefused::Over));
}
