//! order-service's copy of inventory's catalog, kept current from `ProductUpserted`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use shared_events::contracts::ProductUpserted;
use sqlx::{PgConnection, PgExecutor};

use crate::error::Error;

/// A product's price as order-service's catalog copy has it.
#[derive(Debug, Clone, Serialize)]
pub struct CatalogRow {
    pub product_id: String,
    pub unit_price_minor: i64,
    pub currency: String,
}

pub async fn catalog_prices<'e>(
    executor: impl PgExecutor<'e>,
    product_ids: &[String],
) -> Result<Vec<CatalogRow>, Error> {
    Ok(sqlx::query_as!(
        CatalogRow,
        "SELECT product_id, unit_price_minor, currency FROM catalog WHERE product_id = ANY($1)",
        product_ids,
    )
    .fetch_all(executor)
    .await?)
}

/// Upserts `products` (each with when it changed) in one statement, in the order given,
/// which is the order inventory committed them: a product's changes share its partition,
/// and the outbox relays them in commit order. Their timestamps only inform: comparing
/// wall clocks would drop the newer of two changes made within a clock's skew (another
/// replica, another host), so the last change given wins.
pub async fn upsert_catalog(
    tx: &mut PgConnection,
    products: &[(&ProductUpserted, DateTime<Utc>)],
) -> Result<(), Error> {
    let mut latest: BTreeMap<&str, (&ProductUpserted, DateTime<Utc>)> = BTreeMap::new();
    for &(product, at) in products {
        latest.insert(&product.product_id, (product, at));
    }
    if latest.is_empty() {
        return Ok(());
    }
    let mut ids = Vec::new();
    let mut names = Vec::new();
    let mut prices = Vec::new();
    let mut currencies = Vec::new();
    let mut quantities = Vec::new();
    let mut changed_at = Vec::new();
    for (id, (product, at)) in latest {
        ids.push(id);
        names.push(product.name.as_str());
        prices.push(product.unit_price.amount_minor);
        currencies.push(product.unit_price.currency.as_str());
        quantities.push(product.available_quantity);
        changed_at.push(at);
    }
    sqlx::query!(
        "INSERT INTO catalog (product_id, name, unit_price_minor, currency, available_quantity, updated_at)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::int[], $6::timestamptz[])
         ON CONFLICT (product_id) DO UPDATE SET name = excluded.name,
             unit_price_minor = excluded.unit_price_minor, currency = excluded.currency,
             available_quantity = excluded.available_quantity, updated_at = excluded.updated_at",
        &ids as _,
        &names as _,
        &prices,
        &currencies as _,
        &quantities,
        &changed_at,
    )
    .execute(tx)
    .await?;
    Ok(())
}
