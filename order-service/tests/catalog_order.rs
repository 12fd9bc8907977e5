//! order-service's catalog copy applies a product's changes in the order they come (the
//! order inventory committed them), not by their wall-clock timestamps. Needs PostgreSQL.

use chrono::{Duration, Utc};
use shared_events::contracts::{Money, ProductUpserted};

mod support;

use support::TestDatabase;

fn product(price: i64) -> ProductUpserted {
    ProductUpserted {
        product_id: "skewed".into(),
        name: "skewed".into(),
        unit_price: Money::new(price, "EUR"),
        available_quantity: 10,
    }
}

#[tokio::test]
async fn a_later_change_with_an_earlier_clock_still_wins() {
    let mut test_db = TestDatabase::migrated().await;
    let db = &mut test_db.db;

    // The second change was made on a host whose clock is a second behind.
    let now = Utc::now();
    let (first, second) = (product(100), product(250));
    order_service::store::upsert_catalog(&mut *db, &[(&first, now)])
        .await
        .unwrap();
    order_service::store::upsert_catalog(&mut *db, &[(&second, now - Duration::seconds(1))])
        .await
        .unwrap();
    // And within one batch, the last of a product's changes wins.
    let (third, fourth) = (product(300), product(400));
    order_service::store::upsert_catalog(
        &mut *db,
        &[(&third, now), (&fourth, now - Duration::seconds(5))],
    )
    .await
    .unwrap();

    let price: i64 =
        sqlx::query_scalar("SELECT unit_price_minor FROM catalog WHERE product_id = 'skewed'")
            .fetch_one(&mut *db)
            .await
            .unwrap();
    assert_eq!(price, 400);
    test_db.drop().await;
}
