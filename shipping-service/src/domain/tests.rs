use chrono::Duration;
use shared_events::contracts::{
    Event, Money, OrderCancellationRequested, OrderPlaced, StockLine, StockReserved,
};

use super::*;

fn carriers() -> Carriers {
    Carriers {
        destinations: vec!["DE".into(), "US".into()],
    }
}

fn placed(country: &str) -> Event {
    Event::first_of_order(
        Uuid::nil(),
        "order-service",
        OrderPlaced {
            customer_id: "c".into(),
            lines: vec![],
            total: Money::new(1, "EUR"),
            shipping_address: Address {
                recipient: "r".into(),
                line1: "l".into(),
                line2: None,
                city: "c".into(),
                postal_code: "p".into(),
                country: country.into(),
            },
            customer_note: None,
        },
    )
    .with_saga_deadline(Utc::now() + Duration::seconds(30))
}

fn reserved(cause: &Event) -> Event {
    Event::caused_by(
        &cause.metadata,
        "inventory-service",
        StockReserved {
            reservation_id: Uuid::nil(),
            lines: vec![StockLine {
                product_id: "p".into(),
                quantity: 1,
            }],
        },
    )
}

fn cancel(cause: &Event) -> Event {
    Event::caused_by(
        &cause.metadata,
        "order-service",
        OrderCancellationRequested {
            reason: "changed my mind".into(),
        },
    )
}

fn run(events: &[&Event], now: DateTime<Utc>) -> Vec<Decision> {
    let mut state = OrderShipment::default();
    let mut decisions = Vec::new();
    for event in events {
        let decision = decide(
            &state,
            &event.metadata,
            &event.payload,
            &carriers(),
            now,
            Uuid::now_v7(),
        );
        state = decision.next.clone();
        decisions.push(decision);
    }
    decisions
}

fn emitted(decisions: &[Decision]) -> Vec<&'static str> {
    decisions
        .iter()
        .filter_map(|d| d.emit.as_ref().map(EventPayload::event_type))
        .collect()
}

#[test]
fn schedules_once_destination_and_reservation_are_known_in_either_order() {
    let order = placed("DE");
    let stock = reserved(&order);
    for events in [[&order, &stock], [&stock, &order]] {
        let decisions = run(&events, Utc::now());
        assert_eq!(emitted(&decisions), ["ShipmentScheduled"]);
    }
}

#[test]
fn refuses_destinations_without_a_carrier() {
    let order = placed("AQ");
    assert_eq!(
        emitted(&run(&[&order, &reserved(&order)], Utc::now())),
        ["ShipmentFailed"]
    );
}

#[test]
fn a_cancellation_before_scheduling_wins_and_one_after_loses() {
    let order = placed("DE");
    let stock = reserved(&order);
    let cancellation = cancel(&order);
    assert_eq!(
        emitted(&run(&[&order, &cancellation, &stock], Utc::now())),
        ["ShipmentFailed"]
    );
    assert_eq!(
        emitted(&run(&[&order, &stock, &cancellation], Utc::now())),
        ["ShipmentScheduled"]
    );
}

#[test]
fn past_the_saga_deadline_the_order_is_refused() {
    let order = placed("DE");
    let later = Utc::now() + Duration::seconds(31);
    assert_eq!(
        emitted(&run(&[&order, &reserved(&order)], later)),
        ["ShipmentFailed"]
    );
}

#[test]
fn redeliveries_change_nothing_once_settled() {
    let order = placed("DE");
    let stock = reserved(&order);
    let decisions = run(
        &[&order, &stock, &stock, &order, &cancel(&order)],
        Utc::now(),
    );
    assert_eq!(emitted(&decisions), ["ShipmentScheduled"]);
}

#[test]
fn tracking_ids_carry_the_carrier_prefix() {
    assert!(tracking_id("DHL", Uuid::now_v7()).starts_with("DH"));
    assert_eq!(tracking_id("UPS", Uuid::nil()).len(), 14);
}
