//! The fault tests' order mix: a catalog and two customers of a run's own, clients that
//! place a paced mix of orders through replicas that may be dying, and poison records.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;
use shared_events::contracts::{Address, Event, Money, OrderLine, OrderPlaced, Topic};
use shared_events::{KafkaConfig, RegistryCodec, RegistryConfig, TopicNames};
use tokio::task::JoinHandle;

use crate::client::order_body;
use crate::{Stack, put_account, put_product, wait_for_catalog};

pub const RICH: i64 = 100_000_000;
pub const STOCK: i32 = 100_000;
pub const SCARCE_STOCK: i32 = 5;

/// What kind of order the i-th one is: mostly completed, some declined, out of stock,
/// refused by shipping or cancelled by the customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OrderKind {
    /// A rich customer, a plentiful product, a country shipping serves.
    Completes,
    /// The first few complete; the rest are out of stock.
    OfScarceStock,
    Declined,
    RefusedByShipping,
    /// Completes or is cancelled, whichever wins the race with shipping.
    CancelledByTheCustomer,
}

impl OrderKind {
    fn of(i: usize) -> Self {
        match i % 10 {
            6 => Self::OfScarceStock,
            7 => Self::Declined,
            8 => Self::RefusedByShipping,
            9 => Self::CancelledByTheCustomer,
            _ => Self::Completes,
        }
    }
}

/// A run's own products and customers, named after its tag.
#[derive(Debug, Clone)]
pub struct Workload {
    pub tag: String,
}

impl Workload {
    /// Creates the catalog (two plentiful products, one scarce) and the accounts (one rich,
    /// one empty) through the services' APIs, and waits until order-service knows them.
    pub async fn prepare(stack: &Stack, label: &str) -> Workload {
        let tag = format!("{label}{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
        let workload = Workload { tag };
        for (product, stock) in workload.products() {
            put_product(stack, &product, 100, stock).await;
        }
        for (customer, balance) in workload.customers() {
            put_account(stack, &customer, balance).await;
        }
        let products: Vec<String> = workload.products().into_iter().map(|(p, _)| p).collect();
        let products: Vec<&str> = products.iter().map(String::as_str).collect();
        wait_for_catalog(stack, &products).await;
        workload
    }

    /// Each product with its initial stock.
    pub fn products(&self) -> [(String, i32); 3] {
        let tag = &self.tag;
        [
            (format!("{tag}-p0"), STOCK),
            (format!("{tag}-p1"), STOCK),
            (format!("{tag}-scarce"), SCARCE_STOCK),
        ]
    }

    /// Each customer with the initial balance.
    pub fn customers(&self) -> [(String, i64); 2] {
        [
            (format!("{}-rich", self.tag), RICH),
            (format!("{}-poor", self.tag), 0),
        ]
    }

    /// Whether the i-th order (of [`place`](Self::place)'s answer) is meant to complete.
    pub fn meant_to_complete(i: usize) -> bool {
        OrderKind::of(i) == OrderKind::Completes
    }

    /// The i-th order's body, and whether the customer cancels it.
    fn order(&self, i: usize) -> (Value, bool) {
        let tag = &self.tag;
        let rich = format!("{tag}-rich");
        let (customer, product, country, cancel) = match OrderKind::of(i) {
            OrderKind::Declined => (format!("{tag}-poor"), format!("{tag}-p0"), "DE", false),
            OrderKind::RefusedByShipping => (rich, format!("{tag}-p1"), "AQ", false),
            OrderKind::CancelledByTheCustomer => (rich, format!("{tag}-p1"), "DE", true),
            OrderKind::OfScarceStock => (rich, format!("{tag}-scarce"), "DE", false),
            OrderKind::Completes => (rich, format!("{tag}-p{}", i % 2), "DE", false),
        };
        (order_body(&customer, &[(&product, 1)], country), cancel)
    }

    /// 16 clients place `orders` orders paced evenly over `duration`, each retrying with its
    /// Idempotency-Key until one of `urls` (order-service replicas) accepts it, and cancel
    /// every tenth. The task returns the accepted order ids, the i-th order's i-th.
    pub fn place(
        &self,
        urls: Vec<String>,
        orders: usize,
        duration: Duration,
    ) -> JoinHandle<Vec<String>> {
        let per_order = duration / orders.max(1) as u32;
        let next = Arc::new(AtomicUsize::new(0));
        let start = tokio::time::Instant::now();
        let clients: Vec<JoinHandle<Vec<(usize, String)>>> = (0..16)
            .map(|_| {
                let (next, urls, workload) = (next.clone(), urls.clone(), self.clone());
                tokio::spawn(async move {
                    let mut placed = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        if i >= orders {
                            return placed;
                        }
                        tokio::time::sleep_until(start + per_order * i as u32).await;
                        let (body, cancel_it) = workload.order(i);
                        let order_id = place(&urls, &body).await;
                        if cancel_it {
                            cancel(&urls, &order_id).await;
                        }
                        placed.push((i, order_id));
                    }
                })
            })
            .collect();
        tokio::spawn(async move {
            let mut placed = Vec::new();
            for client in clients {
                placed.extend(client.await.unwrap());
            }
            placed.sort();
            placed.into_iter().map(|(_, order_id)| order_id).collect()
        })
    }
}

/// Sends until some replica answers: a killed replica's requests fail, the client retries
/// with the same Idempotency-Key, as a real client would.
async fn place(urls: &[String], body: &Value) -> String {
    let http = crate::auth::operator_client()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let key = uuid::Uuid::new_v4().to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    for attempt in 0.. {
        let url = &urls[attempt % urls.len()];
        let sent = http
            .post(format!("{url}/orders"))
            .header("Idempotency-Key", &key)
            .json(body)
            .send()
            .await;
        if let Ok(response) = sent
            && response.status() == reqwest::StatusCode::ACCEPTED
        {
            let answer: Value = response.json().await.unwrap();
            return answer["order_id"].as_str().unwrap().to_owned();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "order never accepted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    unreachable!()
}

async fn cancel(urls: &[String], order_id: &str) {
    let http = crate::auth::operator_client()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    for attempt in 0.. {
        let url = &urls[attempt % urls.len()];
        let sent = http
            .post(format!("{url}/orders/{order_id}/cancel"))
            .json(&serde_json::json!({"reason": "changed my mind"}))
            .send()
            .await;
        // 202 cancelling, 409 already shipped: either way the customer was answered.
        if let Ok(response) = sent
            && [202, 409].contains(&response.status().as_u16())
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "cancel of {order_id} never answered"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Into every topic of `prefix` on the broker `kafka` reaches: garbage bytes and an unknown
/// schema id; into `orders` also a valid OrderPlaced of an unknown order with a negative
/// quantity. Returns how many per topic.
pub async fn inject_poison(kafka: &KafkaConfig, prefix: &str) -> BTreeMap<Topic, usize> {
    let producer: FutureProducer = kafka.idempotent_producer().create().unwrap();
    let registry = RegistryConfig::at(
        crate::env_or("SCHEMA_REGISTRY_URL", "http://127.0.0.1:8081"),
        true,
    );
    let names = TopicNames::new(prefix.to_owned());
    let codec = RegistryCodec::connect(&registry, &names).await.unwrap();
    let impossible = Event::first_of_order(
        uuid::Uuid::now_v7(),
        "chaos-poison",
        OrderPlaced {
            customer_id: "nobody".into(),
            lines: vec![OrderLine {
                product_id: "anything".into(),
                quantity: -5,
                unit_price: Money::new(100, "EUR"),
            }],
            total: Money::new(-500, "EUR"),
            shipping_address: Address {
                recipient: "Nobody".into(),
                line1: "Nowhere 1".into(),
                line2: None,
                city: "Nowhere".into(),
                postal_code: "00000".into(),
                country: "DE".into(),
            },
            customer_note: None,
        },
    );
    let impossible = codec.encode(&impossible).await.unwrap();
    let mut counts = BTreeMap::new();
    for topic in Topic::ALL {
        let mut poison: Vec<&[u8]> = vec![
            b"not an event at all",
            &[0, 0x7f, 0xff, 0xff, 0xf0, 2, 4, 6],
        ];
        if topic == Topic::Orders {
            poison.push(&impossible);
        }
        for payload in &poison {
            let key = uuid::Uuid::new_v4().to_string();
            producer
                .send(
                    FutureRecord::to(&names.name(topic))
                        .key(&key)
                        .payload(*payload),
                    Duration::from_secs(30),
                )
                .await
                .unwrap();
        }
        counts.insert(topic, poison.len());
    }
    counts
}
