//! The load run's own catalog and customers, created through the services' REST APIs under
//! a run id, so that each intent leads to its outcome and runs never share state.

use std::time::Duration;

use anyhow::{Context, bail};
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::mix::Intent;
use crate::urls::ServiceUrls;

const PRODUCTS: usize = 20;
const CUSTOMERS: usize = 50;
/// Enough stock and money that a run never runs out (an i32 of stock, cents in the billions).
const PLENTY_OF_STOCK: i64 = 2_000_000_000;
const PLENTY_OF_MONEY: i64 = 1_000_000_000_000;

/// What a run places orders against.
pub struct Seeded {
    run: String,
}

impl Seeded {
    fn product(&self, i: usize) -> String {
        format!("load-{}-p{i}", self.run)
    }

    fn sold_out(&self) -> String {
        format!("load-{}-sold-out", self.run)
    }

    fn customer(&self, i: usize) -> String {
        format!("load-{}-c{i}", self.run)
    }

    fn broke(&self) -> String {
        format!("load-{}-broke", self.run)
    }

    /// The `POST /orders` body of the `n`th order, meant to end as `intent`.
    pub fn order_body(&self, n: u64, intent: Intent) -> Value {
        let n = n as usize;
        let (customer, items) = match intent {
            Intent::Completed | Intent::Cancelled => {
                let lines = 1 + n % 3;
                let items: Vec<(String, u64)> = (0..lines)
                    .map(|l| (self.product((n + l * 7) % PRODUCTS), 1 + (n % 2) as u64))
                    .collect();
                (self.customer(n % CUSTOMERS), items)
            }
            Intent::Declined => (self.broke(), vec![(self.product(n % PRODUCTS), 1)]),
            Intent::OutOfStock => (self.customer(n % CUSTOMERS), vec![(self.sold_out(), 1)]),
        };
        json!({
            "customer_id": customer,
            "currency": "EUR",
            "items": items.iter().map(|(p, q)| json!({"product_id": p, "quantity": q})).collect::<Vec<_>>(),
            "shipping_address": {"recipient": "Load Test", "line1": "1 Load Street", "city": "Berlin",
                                 "postal_code": "10115", "country": "DE"},
        })
    }
}

/// Creates the run's products and accounts and waits until order-service's catalog copy
/// knows every product.
pub async fn seed(http: &reqwest::Client, urls: &ServiceUrls) -> anyhow::Result<Seeded> {
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let seeded = Seeded { run };
    let mut products: Vec<(String, i64)> = (0..PRODUCTS)
        .map(|i| (seeded.product(i), PLENTY_OF_STOCK))
        .collect();
    products.push((seeded.sold_out(), 0));
    for (i, (product, stock)) in products.iter().enumerate() {
        let url = format!("{}/products/{product}", urls.inventory_service);
        let body = json!({"name": product, "unit_price_minor": 100 + 25 * i as i64,
                          "currency": "EUR", "available": stock});
        put(http, &url, &body).await?;
    }
    let mut accounts: Vec<(String, i64)> = (0..CUSTOMERS)
        .map(|i| (seeded.customer(i), PLENTY_OF_MONEY))
        .collect();
    accounts.push((seeded.broke(), 0));
    for (customer, balance) in &accounts {
        let url = format!("{}/accounts/{customer}", urls.billing_service);
        let body = json!({"currency": "EUR", "credit_limit_minor": 0, "balance_minor": balance});
        put(http, &url, &body).await?;
    }
    for (product, _) in &products {
        wait_for_catalog(http, urls, product).await?;
    }
    Ok(seeded)
}

async fn put(http: &reqwest::Client, url: &str, body: &Value) -> anyhow::Result<()> {
    let response = http
        .put(url)
        .json(body)
        .send()
        .await
        .with_context(|| format!("PUT {url}"))?;
    if !response.status().is_success() {
        bail!(
            "PUT {url}: {} {}",
            response.status(),
            response.text().await?
        );
    }
    Ok(())
}

/// Order-service learns products from `ProductUpserted`. An order of quantity 0 is always
/// refused, so it probes without placing anything: the refusal names the product as well
/// while the catalog copy does not know it.
async fn wait_for_catalog(
    http: &reqwest::Client,
    urls: &ServiceUrls,
    product: &str,
) -> anyhow::Result<()> {
    let probe = json!({
        "customer_id": "probe", "currency": "EUR",
        "items": [{"product_id": product, "quantity": 0}],
        "shipping_address": {"recipient": "p", "line1": "p", "city": "p", "postal_code": "p", "country": "DE"},
    });
    for _ in 0..300 {
        let response = http
            .post(format!("{}/orders", urls.order_service))
            .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
            .json(&probe)
            .send()
            .await?;
        if response.status() != StatusCode::UNPROCESSABLE_ENTITY {
            bail!("probing the catalog: unexpected {}", response.status());
        }
        let problem: Value = response.json().await?;
        if !problem.to_string().contains("items[0].product_id") {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("order-service never learned product {product}; is inventory-service publishing?")
}
