use shared_events::contracts::{
    Address, Money, OrderLine, OrderPlaced, PaymentAuthorized, ShipmentFailed,
};

use super::*;

fn line(product_id: &str, quantity: i32) -> StockLine {
    StockLine {
        product_id: product_id.into(),
        quantity,
    }
}

fn levels(entries: &[(&str, i32)]) -> BTreeMap<String, StockLevel> {
    entries
        .iter()
        .map(|(id, available)| {
            (
                (*id).to_owned(),
                StockLevel {
                    available: *available,
                    reserved: 0,
                },
            )
        })
        .collect()
}

fn placed(lines: &[(&str, i32)]) -> EventPayload {
    EventPayload::OrderPlaced(OrderPlaced {
        customer_id: "c".into(),
        lines: lines
            .iter()
            .map(|(id, q)| OrderLine {
                product_id: (*id).into(),
                quantity: *q,
                unit_price: Money::new(100, "EUR"),
            })
            .collect(),
        total: Money::new(100, "EUR"),
        shipping_address: Address {
            recipient: "r".into(),
            line1: "l".into(),
            line2: None,
            city: "c".into(),
            postal_code: "p".into(),
            country: "DE".into(),
        },
        customer_note: None,
    })
}

fn paid() -> EventPayload {
    EventPayload::PaymentAuthorized(PaymentAuthorized {
        payment_id: Uuid::nil(),
        customer_id: "c".into(),
        amount: Money::new(100, "EUR"),
    })
}

fn shipment_failed() -> EventPayload {
    EventPayload::ShipmentFailed(ShipmentFailed { reason: "x".into() })
}

#[test]
fn reserves_every_line_or_none() {
    let stock = levels(&[("a", 5), ("b", 1)]);
    let updated = reserve(&stock, &[line("a", 2), line("b", 1)]).unwrap();
    assert_eq!(
        updated["a"],
        StockLevel {
            available: 3,
            reserved: 2
        }
    );
    assert_eq!(
        updated["b"],
        StockLevel {
            available: 0,
            reserved: 1
        }
    );

    let short = reserve(&stock, &[line("a", 2), line("b", 2)]).unwrap_err();
    assert_eq!(short.product_id, "b");
}

#[test]
fn repeated_lines_of_one_product_are_added_up() {
    let stock = levels(&[("a", 3)]);
    assert!(reserve(&stock, &[line("a", 2), line("a", 2)]).is_err());
    assert_eq!(
        reserve(&stock, &[line("a", 1), line("a", 2)]).unwrap()["a"].available,
        0
    );
}

#[test]
fn quantities_that_overflow_or_offset_each_other_are_refused_not_wrapped() {
    let stock = levels(&[("a", 10)]);
    let overflowing = reserve(&stock, &[line("a", i32::MAX), line("a", i32::MAX)]).unwrap_err();
    assert_eq!(overflowing.product_id, "a");
    // A negative line may not make room for another.
    assert!(reserve(&stock, &[line("a", 15), line("a", -6)]).is_err());
    let mut nearly_full = stock.clone();
    nearly_full.get_mut("a").unwrap().reserved = i32::MAX - 1;
    let full = reserve(&nearly_full, &[line("a", 5)]).unwrap_err();
    assert!(full.reason.contains("overflow"), "{full:?}");
}

#[test]
fn unknown_products_are_refused() {
    let short = reserve(&levels(&[]), &[line("ghost", 1)]).unwrap_err();
    assert!(short.reason.contains("unknown product"));
}

#[test]
fn release_returns_what_was_reserved() {
    let stock = levels(&[("a", 5)]);
    let reserved = reserve(&stock, &[line("a", 2)]).unwrap();
    let released = release(&reserved, &[line("a", 2)]);
    assert_eq!(
        released["a"],
        StockLevel {
            available: 5,
            reserved: 0
        }
    );
}

#[test]
fn reserves_when_lines_and_payment_are_both_known_in_either_order() {
    let stock = levels(&[("a", 5)]);
    for events in [[placed(&[("a", 2)]), paid()], [paid(), placed(&[("a", 2)])]] {
        let first = decide(&OrderStock::default(), &events[0], &stock, Uuid::nil());
        assert!(first.emit.is_none());
        let second = decide(&first.next, &events[1], &stock, Uuid::nil());
        assert!(matches!(second.emit, Some(EventPayload::StockReserved(_))));
        assert_eq!(second.stock_updates["a"].reserved, 2);
    }
}

#[test]
fn a_shipment_failure_releases_a_reservation_once() {
    let stock = levels(&[("a", 5)]);
    let placed_state = decide(
        &OrderStock::default(),
        &placed(&[("a", 2)]),
        &stock,
        Uuid::nil(),
    )
    .next;
    let reserved = decide(&placed_state, &paid(), &stock, Uuid::nil());
    let levels_after: BTreeMap<_, _> = reserved.stock_updates.clone();
    let released = decide(
        &reserved.next,
        &shipment_failed(),
        &levels_after,
        Uuid::nil(),
    );
    assert_eq!(
        released.stock_updates["a"],
        StockLevel {
            available: 5,
            reserved: 0
        }
    );
    let again = decide(&released.next, &shipment_failed(), &stock, Uuid::nil());
    assert!(again.emit.is_none() && again.stock_updates.is_empty());
}

#[test]
fn a_failure_heard_before_payment_rejects_instead_of_reserving() {
    let stock = levels(&[("a", 5)]);
    let failed = decide(
        &OrderStock::default(),
        &shipment_failed(),
        &stock,
        Uuid::nil(),
    )
    .next;
    let placed_state = decide(&failed, &placed(&[("a", 2)]), &stock, Uuid::nil()).next;
    let paid_decision = decide(&placed_state, &paid(), &stock, Uuid::nil());
    assert!(matches!(
        paid_decision.emit,
        Some(EventPayload::StockRejected(_))
    ));
    assert!(paid_decision.stock_updates.is_empty());
}

#[test]
fn a_batch_locks_every_product_its_orders_name_and_those_of_new_orders() {
    let open = OrderStock::Open {
        lines: Some(vec![line("kettle", 1)]),
        paid: false,
        failed: false,
    };
    let reserved = OrderStock::Reserved {
        reservation_id: Uuid::nil(),
        lines: vec![line("grinder", 2), line("beans", 1)],
    };
    let events = [placed(&[("cups", 4), ("beans", 2)]), paid()];
    let touched = products_touched([&open, &reserved, &OrderStock::default()], &events);
    let names: Vec<&str> = touched.iter().map(String::as_str).collect();
    assert_eq!(names, ["beans", "cups", "grinder", "kettle"]);
}
