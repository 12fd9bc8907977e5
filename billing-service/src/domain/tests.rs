use shared_events::contracts::{Address, ShipmentFailed, StockRejected};

use super::*;

fn account(balance: i64, credit: i64) -> Account {
    Account {
        customer_id: "alice".into(),
        currency: "EUR".into(),
        balance_minor: balance,
        credit_limit_minor: credit,
    }
}

fn placed(total: i64) -> EventPayload {
    EventPayload::OrderPlaced(OrderPlaced {
        customer_id: "alice".into(),
        lines: vec![],
        total: Money::new(total, "EUR"),
        shipping_address: Address {
            recipient: "A".into(),
            line1: "1 Main St".into(),
            line2: None,
            city: "Berlin".into(),
            postal_code: "10115".into(),
            country: "DE".into(),
        },
        customer_note: None,
    })
}

fn shipment_failed() -> EventPayload {
    EventPayload::ShipmentFailed(ShipmentFailed {
        reason: "no carrier".into(),
    })
}

fn stock_rejected() -> EventPayload {
    EventPayload::StockRejected(StockRejected {
        product_id: "p".into(),
        reason: "out of stock".into(),
    })
}

#[test]
fn charges_within_balance_plus_credit() {
    let d = decide(
        &OrderPayment::Open,
        &placed(1500),
        Some(&account(1000, 500)),
        Uuid::nil(),
    );
    assert_eq!(d.balance_change_minor, -1500);
    assert!(matches!(d.emit, Some(EventPayload::PaymentAuthorized(_))));
    assert!(matches!(d.next, OrderPayment::Authorized { .. }));
}

#[test]
fn declines_beyond_credit_unknown_customer_and_other_currency() {
    let over = decide(
        &OrderPayment::Open,
        &placed(1501),
        Some(&account(1000, 500)),
        Uuid::nil(),
    );
    assert!(
        matches!(over.emit, Some(EventPayload::PaymentDeclined(ref d)) if d.reason.contains("insufficient"))
    );
    assert_eq!(over.balance_change_minor, 0);

    let unknown = decide(&OrderPayment::Open, &placed(1), None, Uuid::nil());
    assert!(
        matches!(unknown.emit, Some(EventPayload::PaymentDeclined(ref d)) if d.reason.contains("no account"))
    );

    let mut usd = account(10_000, 0);
    usd.currency = "USD".into();
    let other = decide(&OrderPayment::Open, &placed(1), Some(&usd), Uuid::nil());
    assert!(
        matches!(other.emit, Some(EventPayload::PaymentDeclined(ref d)) if d.reason.contains("USD"))
    );
}

#[test]
fn refunds_a_charge_once_whichever_failure_arrives() {
    let charged = decide(
        &OrderPayment::Open,
        &placed(700),
        Some(&account(1000, 0)),
        Uuid::nil(),
    )
    .next;
    let refund = decide(&charged, &stock_rejected(), None, Uuid::nil());
    assert_eq!(refund.balance_change_minor, 700);
    assert!(matches!(
        refund.emit,
        Some(EventPayload::PaymentRefunded(_))
    ));
    for later in [shipment_failed(), stock_rejected()] {
        let again = decide(&refund.next, &later, None, Uuid::nil());
        assert_eq!(again, Decision::stay(&refund.next));
    }
}

#[test]
fn a_failure_heard_before_the_order_declines_it_without_charging() {
    let failed = decide(&OrderPayment::Open, &shipment_failed(), None, Uuid::nil());
    assert!(failed.emit.is_none());
    let placed = decide(
        &failed.next,
        &placed(100),
        Some(&account(1000, 0)),
        Uuid::nil(),
    );
    assert_eq!(placed.balance_change_minor, 0);
    assert!(matches!(
        placed.emit,
        Some(EventPayload::PaymentDeclined(_))
    ));
}

#[test]
fn a_redelivered_order_is_not_charged_twice() {
    let first = decide(
        &OrderPayment::Open,
        &placed(100),
        Some(&account(1000, 0)),
        Uuid::nil(),
    );
    let again = decide(
        &first.next,
        &placed(100),
        Some(&account(900, 0)),
        Uuid::nil(),
    );
    assert_eq!(again, Decision::stay(&first.next));
}

#[test]
fn a_completed_order_is_captured_and_never_refunded() {
    let charged = decide(
        &OrderPayment::Open,
        &placed(100),
        Some(&account(1000, 0)),
        Uuid::nil(),
    )
    .next;
    let completed = EventPayload::OrderCompleted(shared_events::contracts::OrderCompleted {
        total: Money::new(100, "EUR"),
    });
    let captured = decide(&charged, &completed, None, Uuid::nil()).next;
    assert!(matches!(captured, OrderPayment::Captured { .. }));
    assert_eq!(
        decide(&captured, &shipment_failed(), None, Uuid::nil()).balance_change_minor,
        0
    );
}

fn accounts_of(balance: i64) -> BTreeMap<String, Account> {
    BTreeMap::from([("alice".to_owned(), account(balance, 0))])
}

#[test]
fn a_charge_and_its_refund_hit_the_customers_account() {
    let mut accounts = accounts_of(1_000);
    let charged = decide(
        &OrderPayment::Open,
        &placed(400),
        accounts.get("alice"),
        Uuid::nil(),
    );
    charged.apply_balance(&mut accounts).unwrap();
    assert_eq!(accounts["alice"].balance_minor, 600);
    let refunded = decide(&charged.next, &shipment_failed(), None, Uuid::nil());
    refunded.apply_balance(&mut accounts).unwrap();
    assert_eq!(accounts["alice"].balance_minor, 1_000);
}

#[test]
fn a_balance_change_without_an_account_or_past_the_limits_of_i64_is_refused() {
    let charged = decide(
        &OrderPayment::Open,
        &placed(400),
        accounts_of(1_000).get("alice"),
        Uuid::nil(),
    );
    let error = charged.apply_balance(&mut BTreeMap::new()).unwrap_err();
    assert!(error.contains("no account alice"), "{error}");
    let mut broke = accounts_of(i64::MIN + 1);
    broke.get_mut("alice").unwrap().credit_limit_minor = i64::MAX;
    let error = charged.apply_balance(&mut broke).unwrap_err();
    assert!(error.contains("would overflow"), "{error}");
    // Nothing to apply, nothing needed.
    let declined = decide(&OrderPayment::Open, &stock_rejected(), None, Uuid::nil());
    declined.apply_balance(&mut BTreeMap::new()).unwrap();
}
