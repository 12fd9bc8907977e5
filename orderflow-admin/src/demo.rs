//! `orderflow-admin demo`: seeds products and customers through the services' REST APIs,
//! places one order per saga outcome, and prints each order's timeline.

use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::urls::ServiceUrls;

/// The demo's catalog: (id, name, price in cents, stock). The kettle is scarce.
const PRODUCTS: [(&str, &str, i64, i32); 3] = [
    ("espresso-beans", "Espresso beans, 1 kg", 1_490, 500),
    ("grinder", "Burr grinder", 8_900, 50),
    ("limited-kettle", "Limited-edition kettle", 12_900, 1),
];

/// A rich customer and a poor one: (id, balance in cents).
const CUSTOMERS: [(&str, i64); 2] = [("alice", 500_000), ("bob", 1_000)];

/// (title, customer, items as (product, quantity), destination country).
type Scenario = (
    &'static str,
    &'static str,
    &'static [(&'static str, i64)],
    &'static str,
);

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
    let scenarios: [Scenario; 5] = [
        (
            "Happy path",
            "alice",
            &[("espresso-beans", 2), ("grinder", 1)],
            "DE",
        ),
        (
            "Payment declined (bob cannot afford it)",
            "bob",
            &[("grinder", 1)],
            "DE",
        ),
        (
            "Out of stock (one kettle left, two ordered)",
            "alice",
            &[("limited-kettle", 2)],
            "FR",
        ),
        (
            "Shipping refused (nobody ships to Antarctica)",
            "alice",
            &[("espresso-beans", 1)],
            "AQ",
        ),
        (
            "Cancelled by the customer right after ordering",
            "alice",
            &[("grinder", 1)],
            "GB",
        ),
    ];
    let mut orders = Vec::new();
    for (i, (title, customer, items, country)) in scenarios.iter().enumerate() {
        let order_id = demo.place(customer, items, country).await?;
        if i == 4 {
            demo.cancel(&order_id).await?;
        }
        orders.push((*title, order_id));
    }
    for (i, (title, order_id)) in orders.iter().enumerate() {
        let order = demo.wait_terminal(order_id).await?;
        println!();
        println!("{}. {title}", i + 1);
        print_order(&order);
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
    println!();
    println!(
        "6. Cancelling the shipped order from 1. is refused: {} {}",
        response.status().as_u16(),
        response.json::<Value>().await?["title"]
            .as_str()
            .unwrap_or("")
    );
    let alice = demo
        .get(&format!("{}/accounts/alice", demo.urls.billing_service))
        .await?;
    println!(
        "\nalice's account: balance {} cents, {} payment(s), {} refund(s)",
        alice["balance_minor"],
        alice["payments"].as_array().map_or(0, Vec::len),
        alice["refunds"].as_array().map_or(0, Vec::len)
    );
    Ok(())
}

impl Demo {
    async fn seed(&self) -> anyhow::Result<()> {
        for (id, name, price, stock) in PRODUCTS {
            let url = format!("{}/products/{id}", self.urls.inventory_service);
            let body = json!({"name": name, "unit_price_minor": price, "currency": "EUR", "available": stock});
            self.put(&url, &body).await?;
        }
        for (id, balance) in CUSTOMERS {
            let url = format!("{}/accounts/{id}", self.urls.billing_service);
            let body =
                json!({"currency": "EUR", "credit_limit_minor": 0, "balance_minor": balance});
            self.put(&url, &body).await?;
        }
        println!(
            "Seeded {} products (limited-kettle: 1 in stock) and customers alice (5000.00 EUR) and bob (10.00 EUR).",
            PRODUCTS.len()
        );
        Ok(())
    }

    async fn put(&self, url: &str, body: &Value) -> anyhow::Result<()> {
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

    async fn get(&self, url: &str) -> anyhow::Result<Value> {
        let response = self.http.get(url).send().await?.error_for_status()?;
        Ok(response.json().await?)
    }

    /// Places an order, retrying while order-service's catalog copy has not yet heard of
    /// the seeded products (it learns them from ProductUpserted events).
    async fn place(
        &self,
        customer: &str,
        items: &[(&str, i64)],
        country: &str,
    ) -> anyhow::Result<String> {
        let body = json!({
            "customer_id": customer,
            "currency": "EUR",
            "items": items.iter().map(|(p, q)| json!({"product_id": p, "quantity": q})).collect::<Vec<_>>(),
            "shipping_address": {"recipient": customer, "line1": "1 Demo Street", "city": "Demotown",
                                 "postal_code": "12345", "country": country},
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
            let status = response.status();
            let answer: Value = response.json().await?;
            match status {
                StatusCode::ACCEPTED => {
                    return answer["order_id"]
                        .as_str()
                        .map(str::to_owned)
                        .context("202 without order_id");
                }
                StatusCode::UNPROCESSABLE_ENTITY
                    if answer.to_string().contains("unknown product") =>
                {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                _ => bail!("placing an order: {status} {answer}"),
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
            .await?;
        Ok(())
    }

    async fn wait_terminal(&self, order_id: &str) -> anyhow::Result<Value> {
        for _ in 0..600 {
            let order = self
                .get(&format!("{}/orders/{order_id}", self.urls.order_service))
                .await?;
            if ["COMPLETED", "CANCELLED"].contains(&order["status"].as_str().unwrap_or("")) {
                return Ok(order);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("order {order_id} did not finish within a minute")
    }
}

fn print_order(order: &Value) {
    let status = order["status"].as_str().unwrap_or("?");
    println!(
        "   order {}  {}  total {:.2} {}",
        order["order_id"].as_str().unwrap_or("?"),
        status,
        order["total_minor"].as_i64().unwrap_or(0) as f64 / 100.0,
        order["currency"].as_str().unwrap_or("")
    );
    if let Some(reason) = order["outcome_reason"].as_str() {
        println!("   reason: {reason}");
    }
    let timeline = order["timeline"].as_array().cloned().unwrap_or_default();
    let start: Option<DateTime<Utc>> = timeline
        .first()
        .and_then(|e| e["at"].as_str()?.parse().ok());
    println!("   {:>8}  {:<18} {:<27} DETAIL", "+ms", "SERVICE", "EVENT");
    for entry in &timeline {
        let at: Option<DateTime<Utc>> = entry["at"].as_str().and_then(|t| t.parse().ok());
        let offset = match (start, at) {
            (Some(start), Some(at)) => (at - start).num_milliseconds().to_string(),
            _ => "?".to_owned(),
        };
        println!(
            "   {:>8}  {:<18} {:<27} {}",
            offset,
            entry["service"].as_str().unwrap_or(""),
            entry["event_type"].as_str().unwrap_or(""),
            entry["detail"].as_str().unwrap_or("")
        );
    }
}
