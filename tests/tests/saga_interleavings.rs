//! Property test of the saga's four state machines together, with no I/O: orders' events are
//! delivered to the services in random orders (far more freely than Kafka would: any pending
//! event, not just the head of a partition), some more than once, while customers cancel
//! and deadlines pass at random moments. After every step and at the end it checks:
//! never a refund without a charge, never two refunds, never shipped and refunded or
//! released, never negative stock, reserved + available conserved per product, every order
//! in exactly one terminal state, and money conserved.

use std::collections::BTreeMap;

use billing_service::domain::{self as billing, Account, OrderPayment};
use chrono::{DateTime, Duration, TimeZone, Utc};
use inventory_service::domain::{self as inventory, OrderStock, StockLevel};
use order_service::domain::{Line, Order, OrderEvent, OrderStatus, Placed};
use proptest::prelude::*;
use shared_events::contracts::topology::{self, ServiceTopology};
use shared_events::contracts::{Address, Event, EventMetadata, EventPayload};
use shipping_service::domain::{self as shipping, Carriers, OrderShipment};
use uuid::Uuid;

const PRODUCTS: [&str; 2] = ["p1", "p2"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Service {
    Order,
    Billing,
    Inventory,
    Shipping,
}

const SERVICES: [Service; 4] = [
    Service::Order,
    Service::Billing,
    Service::Inventory,
    Service::Shipping,
];

impl Service {
    /// The service's part as the topology writes it down: its name and what it receives.
    fn topology(self) -> &'static ServiceTopology {
        match self {
            Service::Order => &topology::ORDER_SERVICE,
            Service::Billing => &topology::BILLING_SERVICE,
            Service::Inventory => &topology::INVENTORY_SERVICE,
            Service::Shipping => &topology::SHIPPING_SERVICE,
        }
    }

    /// Whether the service's consumer takes `event_type` (it skips the rest of a topic).
    fn hears(self, event_type: &str) -> bool {
        self.topology().receives.contains(&event_type)
    }

    fn name(self) -> &'static str {
        self.topology().name
    }
}

#[derive(Debug, Clone)]
struct OrderSpec {
    rich: bool,
    lines: Vec<(usize, i32)>,
    refused_destination: bool,
}

#[derive(Debug, Clone)]
enum Step {
    Deliver { service: usize, pick: usize },
    Redeliver { service: usize, pick: usize },
    Cancel { order: usize },
    DeadlinePasses,
}

struct World {
    now: DateTime<Utc>,
    deadline: DateTime<Utc>,
    order_ids: Vec<Uuid>,
    histories: BTreeMap<Uuid, Vec<OrderEvent>>,
    placed_metadata: BTreeMap<Uuid, EventMetadata>,
    payments: BTreeMap<Uuid, OrderPayment>,
    accounts: BTreeMap<String, Account>,
    reservations: BTreeMap<Uuid, OrderStock>,
    levels: BTreeMap<String, StockLevel>,
    shipments: BTreeMap<Uuid, OrderShipment>,
    carriers: Carriers,
    inboxes: [Vec<Event>; 4],
    published: Vec<Event>,
}

impl World {
    fn new(stock: &[i32; 2], poor_balance: i64, orders: &[OrderSpec]) -> Self {
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap();
        let deadline = now + Duration::seconds(30);
        let mut world = World {
            now,
            deadline,
            order_ids: Vec::new(),
            histories: BTreeMap::new(),
            placed_metadata: BTreeMap::new(),
            payments: BTreeMap::new(),
            accounts: [("rich", 1_000_000), ("poor", poor_balance)]
                .into_iter()
                .map(|(id, balance)| {
                    (
                        id.to_owned(),
                        Account {
                            customer_id: id.to_owned(),
                            currency: "EUR".into(),
                            balance_minor: balance,
                            credit_limit_minor: 0,
                        },
                    )
                })
                .collect(),
            reservations: BTreeMap::new(),
            levels: PRODUCTS
                .iter()
                .zip(stock)
                .map(|(p, &available)| {
                    (
                        (*p).to_owned(),
                        StockLevel {
                            available,
                            reserved: 0,
                        },
                    )
                })
                .collect(),
            shipments: BTreeMap::new(),
            carriers: Carriers {
                destinations: vec!["DE".into()],
            },
            inboxes: Default::default(),
            published: Vec::new(),
        };
        for spec in orders {
            world.place(spec);
        }
        world
    }

    fn place(&mut self, spec: &OrderSpec) {
        let order_id = Uuid::new_v4();
        let lines: Vec<Line> = spec
            .lines
            .iter()
            .map(|&(product, quantity)| Line {
                product_id: PRODUCTS[product].to_owned(),
                quantity,
                unit_price_minor: 700,
            })
            .collect();
        let placed = Placed {
            customer_id: if spec.rich { "rich" } else { "poor" }.into(),
            currency: "EUR".into(),
            total_minor: lines
                .iter()
                .map(|l| l.unit_price_minor * i64::from(l.quantity))
                .sum(),
            lines,
            shipping_address: Address {
                recipient: "R".into(),
                line1: "L".into(),
                line2: None,
                city: "C".into(),
                postal_code: "P".into(),
                country: if spec.refused_destination { "AQ" } else { "DE" }.into(),
            },
            note: None,
            saga_deadline: self.deadline,
        };
        let event = OrderEvent::OrderPlaced(placed.clone());
        let published = Event::first_of_order(
            order_id,
            "order-service",
            event.to_contract(&placed).unwrap(),
        )
        .with_saga_deadline(self.deadline);
        self.order_ids.push(order_id);
        self.histories.insert(order_id, vec![event]);
        self.placed_metadata
            .insert(order_id, published.metadata.clone());
        self.publish(published);
    }

    fn publish(&mut self, event: Event) {
        for (i, service) in SERVICES.iter().enumerate() {
            if service.hears(event.event_type()) {
                self.inboxes[i].push(event.clone());
            }
        }
        self.published.push(event);
    }

    fn order(&self, order_id: Uuid) -> Order {
        Order::from_history(order_id, &self.histories[&order_id]).unwrap()
    }

    /// Order-service records events decided for the order, publishing those it owns.
    fn record(
        &mut self,
        order_id: Uuid,
        cause: &EventMetadata,
        events: Vec<OrderEvent>,
        first_is_fact: bool,
    ) {
        let placed = self.order(order_id).placed;
        for (i, event) in events.into_iter().enumerate() {
            if !(first_is_fact && i == 0)
                && let Some(payload) = event.to_contract(&placed)
            {
                self.publish(Event::caused_by(cause, "order-service", payload));
            }
            self.histories.get_mut(&order_id).unwrap().push(event);
        }
    }

    fn request_cancellation(&mut self, order_id: Uuid, reason: &str) {
        if let Ok(Some(event)) = self.order(order_id).request_cancellation(reason) {
            let cause = self.placed_metadata[&order_id].clone();
            self.record(order_id, &cause, vec![event], false);
        }
    }

    fn deadline_sweep(&mut self) {
        for order_id in self.order_ids.clone() {
            if self.order(order_id).deadline_due(self.now) {
                self.request_cancellation(order_id, "deadline");
            }
        }
    }

    fn deliver(&mut self, service: Service, event: &Event) {
        let order_id = event.metadata.order_id.unwrap();
        let emit = match service {
            Service::Order => {
                if let Some(fact) = OrderEvent::from_contract(&event.payload) {
                    let decided = self.order(order_id).react(fact);
                    self.record(order_id, &event.metadata, decided, true);
                }
                None
            }
            Service::Billing => {
                let current = self.payments.get(&order_id).cloned().unwrap_or_default();
                let account = billing::account_needed(&event.payload)
                    .and_then(|c| self.accounts.get(c))
                    .cloned();
                let decision =
                    billing::decide(&current, &event.payload, account.as_ref(), Uuid::new_v4());
                if decision.balance_change_minor != 0 {
                    let (OrderPayment::Authorized { payment }
                    | OrderPayment::Refunded { payment, .. }) = &decision.next
                    else {
                        panic!("balance changed without a payment: {decision:?}");
                    };
                    self.accounts
                        .get_mut(&payment.customer_id)
                        .unwrap()
                        .balance_minor += decision.balance_change_minor;
                }
                self.payments.insert(order_id, decision.next);
                decision.emit
            }
            Service::Inventory => {
                let current = self
                    .reservations
                    .get(&order_id)
                    .cloned()
                    .unwrap_or_default();
                let decision =
                    inventory::decide(&current, &event.payload, &self.levels, Uuid::new_v4());
                self.levels.extend(decision.stock_updates);
                self.reservations.insert(order_id, decision.next);
                decision.emit
            }
            Service::Shipping => {
                let current = self.shipments.get(&order_id).cloned().unwrap_or_default();
                let decision = shipping::decide(
                    &current,
                    &event.metadata,
                    &event.payload,
                    &self.carriers,
                    self.now,
                    Uuid::new_v4(),
                );
                self.shipments.insert(order_id, decision.next);
                decision.emit
            }
        };
        if let Some(payload) = emit {
            self.publish(Event::caused_by(&event.metadata, service.name(), payload));
        }
    }

    fn step(&mut self, step: &Step) {
        match *step {
            Step::Deliver { service, pick } | Step::Redeliver { service, pick } => {
                let inbox = &mut self.inboxes[service % 4];
                if inbox.is_empty() {
                    return;
                }
                let index = pick % inbox.len();
                let event = if matches!(step, Step::Redeliver { .. }) {
                    inbox[index].clone()
                } else {
                    inbox.remove(index)
                };
                self.deliver(SERVICES[service % 4], &event);
            }
            Step::Cancel { order } => {
                let order_id = self.order_ids[order % self.order_ids.len()];
                self.request_cancellation(order_id, "customer");
            }
            Step::DeadlinePasses => {
                self.now = self.deadline + Duration::seconds(1);
                self.deadline_sweep();
            }
        }
    }

    /// Delivers everything still pending; then the deadline passes, and again.
    fn drain(&mut self) {
        for round in 0..2 {
            while let Some(service) = (0..4).find(|&s| !self.inboxes[s].is_empty()) {
                let event = self.inboxes[service].remove(0);
                self.deliver(SERVICES[service], &event);
            }
            if round == 0 {
                self.now = self.deadline + Duration::seconds(1);
                self.deadline_sweep();
            }
        }
    }

    fn emitted(&self, order_id: Uuid, event_type: &str) -> Vec<&Event> {
        self.published
            .iter()
            .filter(|e| e.metadata.order_id == Some(order_id) && e.event_type() == event_type)
            .collect()
    }

    fn check_always(&self, initial_stock: &[i32; 2]) -> Result<(), TestCaseError> {
        for (product, initial) in PRODUCTS.iter().zip(initial_stock) {
            let level = self.levels[*product];
            prop_assert!(
                level.available >= 0 && level.reserved >= 0,
                "{product}: {level:?}"
            );
            prop_assert_eq!(
                level.available + level.reserved,
                *initial,
                "{} not conserved",
                product
            );
        }
        for &order_id in &self.order_ids {
            let charges = self.emitted(order_id, "PaymentAuthorized").len();
            let refunds = self.emitted(order_id, "PaymentRefunded").len();
            let shipped = self.emitted(order_id, "ShipmentScheduled").len();
            let released = self.emitted(order_id, "StockReleased").len();
            prop_assert!(
                charges <= 1 && refunds <= 1,
                "charges {charges}, refunds {refunds}"
            );
            prop_assert!(refunds <= charges, "refund without a charge");
            prop_assert!(shipped <= 1);
            prop_assert!(
                shipped == 0 || (refunds == 0 && released == 0),
                "shipped and refunded ({refunds}) or released ({released})"
            );
        }
        Ok(())
    }

    fn check_end(&self, initial_poor: i64) -> Result<(), TestCaseError> {
        let mut completed_totals: BTreeMap<&str, i64> = BTreeMap::new();
        let mut net_charges: BTreeMap<String, i64> = BTreeMap::new();
        for &order_id in &self.order_ids {
            let order = self.order(order_id);
            let history = &self.histories[&order_id];
            let terminals = history
                .iter()
                .filter(|e| {
                    matches!(
                        e,
                        OrderEvent::OrderCompleted | OrderEvent::OrderCancelled { .. }
                    )
                })
                .count();
            prop_assert_eq!(terminals, 1, "history: {:?}", history);
            prop_assert!(order.status().is_terminal());
            let published_terminals = self.emitted(order_id, "OrderCompleted").len()
                + self.emitted(order_id, "OrderCancelled").len();
            prop_assert_eq!(published_terminals, 1);
            if order.status() == OrderStatus::Completed {
                prop_assert_eq!(self.emitted(order_id, "ShipmentScheduled").len(), 1);
                *completed_totals.entry("all").or_default() += order.placed.total_minor;
            } else {
                // A cancelled order holds no stock and no money.
                prop_assert_eq!(self.emitted(order_id, "ShipmentScheduled").len(), 0);
                let charged = self.emitted(order_id, "PaymentAuthorized").len();
                prop_assert_eq!(self.emitted(order_id, "PaymentRefunded").len(), charged);
                let reserved = self.emitted(order_id, "StockReserved").len();
                prop_assert_eq!(self.emitted(order_id, "StockReleased").len(), reserved);
            }
            for event in &self.published {
                if event.metadata.order_id != Some(order_id) {
                    continue;
                }
                match &event.payload {
                    EventPayload::PaymentAuthorized(p) => {
                        *net_charges.entry(p.customer_id.clone()).or_default() +=
                            p.amount.amount_minor;
                    }
                    EventPayload::PaymentRefunded(p) => {
                        *net_charges.entry(p.customer_id.clone()).or_default() -=
                            p.amount.amount_minor;
                    }
                    _ => {}
                }
            }
        }
        let net: i64 = net_charges.values().sum();
        prop_assert_eq!(net, completed_totals.get("all").copied().unwrap_or(0));
        for (customer, initial) in [("rich", 1_000_000), ("poor", initial_poor)] {
            let spent = initial - self.accounts[customer].balance_minor;
            prop_assert_eq!(spent, net_charges.get(customer).copied().unwrap_or(0));
        }
        let shipped_units: i32 = self
            .order_ids
            .iter()
            .filter(|id| self.order(**id).status() == OrderStatus::Completed)
            .flat_map(|id| self.order(*id).placed.lines)
            .map(|l| l.quantity)
            .sum();
        let reserved: i32 = self.levels.values().map(|l| l.reserved).sum();
        prop_assert_eq!(
            reserved,
            shipped_units,
            "stock still held by cancelled orders"
        );
        Ok(())
    }
}

fn order_spec() -> impl Strategy<Value = OrderSpec> {
    (
        any::<bool>(),
        prop::collection::vec((0..PRODUCTS.len(), 1..4i32), 1..3),
        prop::bool::weighted(0.2),
    )
        .prop_map(|(rich, lines, refused_destination)| OrderSpec {
            rich,
            lines,
            refused_destination,
        })
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        10 => (0..4usize, any::<usize>()).prop_map(|(service, pick)| Step::Deliver { service, pick }),
        3 => (0..4usize, any::<usize>()).prop_map(|(service, pick)| Step::Redeliver { service, pick }),
        1 => (0..3usize).prop_map(|order| Step::Cancel { order }),
        1 => Just(Step::DeadlinePasses),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn every_interleaving_keeps_the_saga_invariants(
        stock in [0..6i32, 0..6i32],
        poor_balance in 0..3000i64,
        orders in prop::collection::vec(order_spec(), 1..4),
        steps in prop::collection::vec(step(), 0..80),
    ) {
        let mut world = World::new(&stock, poor_balance, &orders);
        for step in &steps {
            world.step(step);
            world.check_always(&stock)?;
        }
        world.drain();
        world.check_always(&stock)?;
        world.check_end(poor_balance)?;
    }
}
