//! An order whose history was written before `event_version` existed (version 1: the type
//! inside the payload) still reads back, rebuilds its projection, folds to the right state
//! and takes new events, which are written in the current version beside the old ones.
//! Needs PostgreSQL.

use chrono::Utc;
use order_service::domain::{Line, OrderEvent, OrderStatus, Placed};
use order_service::store::{self, upcaster};
use shared_events::contracts::Address;
use sqlx::Connection;
use uuid::Uuid;

mod support;

use support::TestDatabase;

fn placed() -> Placed {
    Placed {
        customer_id: "old-timer".into(),
        currency: "EUR".into(),
        lines: vec![Line {
            product_id: "sku-1".into(),
            quantity: 2,
            unit_price_minor: 1_250,
        }],
        total_minor: 2_500,
        shipping_address: Address {
            recipient: "Ada".into(),
            line1: "Main St 1".into(),
            line2: None,
            city: "Berlin".into(),
            postal_code: "10115".into(),
            country: "DE".into(),
        },
        note: None,
        saga_deadline: Utc::now(),
    }
}

#[tokio::test]
async fn a_version_1_history_reads_back_and_grows_in_the_current_version() {
    let mut test_db = TestDatabase::migrated().await;
    let db = &mut test_db.db;

    // Two events as version 1 wrote them: serde's tagged form, type inside.
    let order_id = Uuid::now_v7();
    let old = [
        OrderEvent::OrderPlaced(placed()),
        OrderEvent::PaymentAuthorized {
            payment_id: Uuid::now_v7(),
            amount_minor: 2_500,
        },
    ];
    for (sequence, event) in old.iter().enumerate() {
        sqlx::query(
            "INSERT INTO order_events (order_id, sequence, event_id, event_type, producer,
                 occurred_at, event_version, data)
             VALUES ($1, $2, $3, $4, 'order-service', now(), 1, $5)",
        )
        .bind(order_id)
        .bind(sequence as i32)
        .bind(Uuid::now_v7())
        .bind(event.event_type())
        .bind(serde_json::to_value(event).unwrap())
        .execute(&mut *db)
        .await
        .unwrap();
    }

    let history = store::history(&mut *db, order_id).await.unwrap();
    let events: Vec<OrderEvent> = history.iter().map(|r| r.event.clone()).collect();
    assert_eq!(events, old);

    // The projection, rebuilt from the old history as `order-service rebuild-view` does;
    // then a command appends an event, in the current version.
    let mut tx = db.begin().await.unwrap();
    assert_eq!(store::rebuild_view(&mut tx).await.unwrap(), 1);
    tx.commit().await.unwrap();
    let mut tx = db.begin().await.unwrap();
    let mut loaded = store::lock(&mut tx, order_id).await.unwrap().unwrap();
    assert_eq!(loaded.order.status(), OrderStatus::PaymentAuthorized);
    let mut metadata = loaded.placed.clone();
    metadata.event_id = Uuid::now_v7();
    metadata.event_type = "OrderCancellationRequested".into();
    loaded.append(
        metadata,
        OrderEvent::OrderCancellationRequested {
            reason: "changed my mind".into(),
        },
    );
    store::record(&mut tx, [&loaded]).await.unwrap();
    tx.commit().await.unwrap();

    let versions: Vec<i16> = sqlx::query_scalar(
        "SELECT event_version FROM order_events WHERE order_id = $1 ORDER BY sequence",
    )
    .bind(order_id)
    .fetch_all(&mut *db)
    .await
    .unwrap();
    assert_eq!(versions, [1, 1, upcaster::CURRENT_VERSION]);
    let history = store::history(&mut *db, order_id).await.unwrap();
    assert_eq!(history.len(), 3);
    assert_eq!(
        history[2].event,
        OrderEvent::OrderCancellationRequested {
            reason: "changed my mind".into()
        }
    );

    test_db.drop().await;
}
