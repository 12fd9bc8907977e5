//! `orderflow-admin demo`: seeds products and customers through the services' REST APIs,
//! places one order per saga outcome, and prints each order's timeline.

use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::json;

use crate::urls::ServiceUrls;

struct Product {
    id: &'static str,
    name: &'static str,
    price_minor: i64,
    stock: i32,
}

/// The demo's catalog. The kettle is scarce.
const PRODUCTS: [Product; 3] = [
    Product {
        id: "espresso-beans",
        name: "Espresso beans, 1 kg",
        price_minor: 1_490,
        stock: 500,
    },
    Product {
        id: "grinder",
        name: "Burr grinder",
        price_minor: 8_900,
        stock: 50,
    },
    Product {
        id: "limited-kettle",
        name: "Limited-edition kettle",
        price_minor: 12_900,
        stock: 1,
    },
];

struct Customer {
    id: &'static str,
    balance_minor: i64,
}

/// A rich customer and a poor one.
const CUSTOMERS: [Customer; 2] = [
    Customer {
        id: "alice",
        balance_minor: 500_000,
    },
    Customer {
        id: "bob",
        balance_minor: 1_000,
    },
];

/// One order the demo places, and the outcome it shows.
struct Scenario {
    title: &'static str,
    customer: &'static str,
    /// (product, quantity)
    items: &'static [(&'static str, i64)],
    country: &'static str,
    /// Cancelled by the customer right after it was placed.
    cancel_at_once: bool,
    /// The status the saga must end in: the demo fails on any other.
    outcome: &'static str,
}

const SCENARIOS: [Scenario; 5] = [
    Scenario {
        title: "Happy path",
        customer: "alice",
        items: &[("espresso-beans", 2), ("grinder", 1)],
        country: "DE",
        cancel_at_once: false,
        outcome: "COMPLETED",
    },
    Scenario {
        title: "Payment declined (bob cannot afford it)",
        customer: "bob",
        items: &[("grinder", 1)],
        country: "DE",
        cancel_at_once: false,
        outcome: "CANCELLED",
    },
    Scenario {
        title: "Out of stock (one kettle left, two ordered)",
        customer: "alice",
        items: &[("limited-kettle", 2)],
        country: "FR",
        cancel_at_once: false,
        outcome: "CANCELLED",
    },
    Scenario {
        title: "Shipping refused (nobody ships to Antarctica)",
        customer: "alice",
        items: &[("espresso-beans", 1)],
        country: "AQ",
        cancel_at_once: false,
        outcome: "CANCELLED",
    },
    Scenario {
        title: "Cancelled by the customer right after ordering",
        customer: "alice",
        items: &[("grinder", 1)],
        country: "GB",
        cancel_at_once: true,
        outcome: "CANCELLED",
    },
];

/// What the demo reads of an order (`GET /orders/{id}`).
#[derive(Debug, Deserialize)]
struct Order {
    order_id: String,
    status: String,
    total_minor: i64,
    currency: String,
    outcome_reason: Option<String>,
    timeline: Vec<TimelineEntry>,
}

#[derive(Debug, Deserialize)]
struct TimelineEntry {
    at: DateTime<Utc>,
    service: String,
    event_type: String,
    detail: String,
}

impl Order {
    fn is_terminal(&self) -> bool {
        ["COMPLETED", "CANCELLED"].contains(&self.status.as_str())
    }
}

#[derive(Debug, Deserialize)]
struct Account {
    balance_minor: i64,
    payments: Vec<serde_json::Value>,
    refunds: Vec<serde_json::Value>,
}

/// A problem+json answer, as far as the demo needs it.
#[derive(Debug, Deserialize)]
struct Problem {
    title: String,
    #[serde(default)]
    errors: Vec<FieldError>,
}

#[derive(Debug, Deserialize)]
struct FieldError {
    field: String,
}

impl Problem {
    /// Refused only for naming products: order-service's catalog copy has not caught up
    /// with the seeded catalog yet (it learns it from `ProductUpserted` events).
    fn only_products_unknown(&self) -> bool {
        !self.errors.is_empty() && self.errors.iter().all(|e| e.field.ends_with(".product_id"))
    }
}

struct Demo {
    http: reqwest::Client,
    urls: ServiceUrls,
}

pub async fn run(urls: ServiceUrls) -> anyhow::Result<()> {
    let demo = Demo {
        http: urls
            .client(reqwest::Client::builder().timeout(Duration::from_secs(10)))
            .await?,
        urls,
    };
    demo.seed().await?;
    let mut orders = Vec::new();
    for scenario in &SCENARIOS {
        let order_id = demo.place(scenario).await?;
        if scenario.cancel_at_once {
            demo.cancel(&order_id).await?;
        }
        orders.push((scenario, order_id));
    }
    let mut unexpected = Vec::new();
    for (i, (scenario, order_id)) in orders.iter().enumerate() {
        let order = demo.wait_terminal(order_id).await?;
        println!();
        println!("{}. {}", i + 1, scenario.title);
        print_order(&order);
        if order.status != scenario.outcome {
            unexpected.push(format!(
                "{}: {} instead of {}",
                scenario.title, order.status, scenario.outcome
            ));
        }
    }
    // The point of no return: a shipped order cannot be cancelled.
    let (_, shipped) = &orders[0];
    let response = demo
        .http
        .post(format!(
            "{}/orders/{shipped}/cancel",
            demo.urls.order_service
        ))
        .send()
        .await?;
    let status = response.status();
    if status.is_success() {
        bail!("cancelling the shipped order from 1. was accepted: a shipped order must refuse it");
    }
    let refusal: Problem = response.json().await?;
    println!();
    println!(
        "{}. Cancelling the shipped order from 1. is refused: {} {}",
        orders.len() + 1,
        status.as_u16(),
        refusal.title
    );
    let alice: Account = demo
        .get(&format!("{}/accounts/alice", demo.urls.billing_service))
        .await?;
    println!(
        "\nalice's account: balance {} cents, {} payment(s), {} refund(s)",
        alice.balance_minor,
        alice.payments.len(),
        alice.refunds.len()
    );
    if !unexpected.is_empty() {
        bail!(
            "orders that did not end as their scenario says: {}",
            unexpected.join("; ")
        );
    }
    Ok(())
}

impl Demo {
    async fn seed(&self) -> anyhow::Result<()> {
        for product in &PRODUCTS {
            let url = format!("{}/products/{}", self.urls.inventory_service, product.id);
            let body = json!({"name": product.name, "unit_price_minor": product.price_minor,
                              "currency": "EUR", "available": product.stock});
            self.put(&url, &body).await?;
        }
        for customer in &CUSTOMERS {
            let url = format!("{}/accounts/{}", self.urls.billing_service, customer.id);
            let body = json!({"currency": "EUR", "credit_limit_minor": 0,
                              "balance_minor": customer.balance_minor});
            self.put(&url, &body).await?;
        }
        println!(
            "Seeded {} products (limited-kettle: 1 in stock) and customers alice (5000.00 EUR) and bob (10.00 EUR).",
            PRODUCTS.len()
        );
        Ok(())
    }

    async fn put(&self, url: &str, body: &serde_json::Value) -> anyhow::Result<()> {
        let response = self.http.put(url).json(body).send().await?;
        if !response.status().is_success() {
            bail!(
                "PUT {url}: {} {}",
                response.status(),
                response.text().await?
            );
        }
        Ok(())
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, url: &str) -> anyhow::Result<T> {
        let response = self.http.get(url).send().await?.error_for_status()?;
        Ok(response.json().await?)
    }

    /// Places the scenario's order, retrying while order-service's catalog copy has not yet
    /// heard of the seeded products.
    async fn place(&self, scenario: &Scenario) -> anyhow::Result<String> {
        let body = json!({
            "customer_id": scenario.customer,
            "currency": "EUR",
            "items": scenario.items.iter().map(|(p, q)| json!({"product_id": p, "quantity": q})).collect::<Vec<_>>(),
            "shipping_address": {"recipient": scenario.customer, "line1": "1 Demo Street",
                                 "city": "Demotown", "postal_code": "12345",
                                 "country": scenario.country},
        });
        let key = uuid::Uuid::new_v4().to_string();
        for _ in 0..150 {
            let response = self
                .http
                .post(format!("{}/orders", self.urls.order_service))
                .header("Idempotency-Key", &key)
                .json(&body)
                .send()
                .await?;
            match response.status() {
                StatusCode::ACCEPTED => {
                    #[derive(Deserialize)]
                    struct Accepted {
                        order_id: String,
                    }
                    let accepted: Accepted =
                        response.json().await.context("202 without order_id")?;
                    return Ok(accepted.order_id);
                }
                StatusCode::UNPROCESSABLE_ENTITY => {
                    let problem: Problem = response.json().await?;
                    if !problem.only_products_unknown() {
                        bail!("placing an order: 422 {problem:?}");
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                status => bail!("placing an order: {status} {}", response.text().await?),
            }
        }
        bail!("order-service never learned the seeded catalog; is inventory-service publishing?")
    }

    async fn cancel(&self, order_id: &str) -> anyhow::Result<()> {
        self.http
            .post(format!(
                "{}/orders/{order_id}/cancel",
                self.urls.order_service
            ))
            .json(&json!({"reason": "changed my mind"}))
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    async fn wait_terminal(&self, order_id: &str) -> anyhow::Result<Order> {
        for _ in 0..600 {
            let order: Order = self
                .get(&format!("{}/orders/{order_id}", self.urls.order_service))
                .await?;
            if order.is_terminal() {
                return Ok(order);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("order {order_id} did not finish within a minute")
    }
}

fn print_order(order: &Order) {
    println!(
        "   order {}  {}  total {:.2} {}",
        order.order_id,
        order.status,
        order.total_minor as f64 / 100.0,
        order.currency
    );
    if let Some(reason) = &order.outcome_reason {
        println!("   reason: {reason}");
    }
    let start = order.timeline.first().map(|e| e.at);
    println!("   {:>8}  {:<18} {:<27} DETAIL", "+ms", "SERVICE", "EVENT");
    for entry in &order.timeline {
        let offset = start.map_or(0, |start| (entry.at - start).num_milliseconds());
        println!(
            "   {:>8}  {:<18} {:<27} {}",
            offset, entry.service, entry.event_type, entry.detail
        );
    }
}
