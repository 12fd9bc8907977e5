//! Breaking an order's history on purpose, as a bad manual edit would, and repairing it:
//! how the tests make order-service dead-letter every fact reported for an order.

use serde_json::Value;
use sqlx::Connection;

use crate::Stack;

/// An order's history edited by hand so that it no longer reads back (past the append-only
/// trigger, as a manual edit would go), with what it held, to repair it.
pub struct CorruptHistory {
    order_id: String,
    history: Vec<(i32, Value)>,
    snapshot: Option<Value>,
}

impl CorruptHistory {
    pub async fn of(stack: &mut Stack, order_id: &str) -> Self {
        let mut db = order_db(stack).await;
        let history: Vec<(i32, Value)> = sqlx::query_as(
            "SELECT sequence, data FROM order_events WHERE order_id = $1::uuid ORDER BY sequence",
        )
        .bind(order_id)
        .fetch_all(&mut db)
        .await
        .unwrap();
        let (snapshot,): (Option<Value>,) =
            sqlx::query_as("SELECT snapshot FROM orders_view WHERE order_id = $1::uuid")
                .bind(order_id)
                .fetch_one(&mut db)
                .await
                .unwrap();
        sqlx::query(
            "UPDATE order_events SET data = '{\"corrupt\": true}' WHERE order_id = $1::uuid",
        )
        .bind(order_id)
        .execute(&mut db)
        .await
        .unwrap();
        sqlx::query("UPDATE orders_view SET snapshot = NULL WHERE order_id = $1::uuid")
            .bind(order_id)
            .execute(&mut db)
            .await
            .unwrap();
        Self {
            order_id: order_id.to_owned(),
            history,
            snapshot,
        }
    }

    /// The status in the projection (the API cannot read the order back meanwhile).
    pub async fn status(&self, stack: &mut Stack) -> String {
        let (status,): (String,) =
            sqlx::query_as("SELECT status FROM orders_view WHERE order_id = $1::uuid")
                .bind(&self.order_id)
                .fetch_one(&mut order_db(stack).await)
                .await
                .unwrap();
        status
    }

    /// Puts back what the edit replaced.
    pub async fn repair(self, stack: &mut Stack) {
        let mut db = order_db(stack).await;
        for (sequence, data) in self.history {
            sqlx::query(
                "UPDATE order_events SET data = $1 WHERE order_id = $2::uuid AND sequence = $3",
            )
            .bind(data)
            .bind(&self.order_id)
            .bind(sequence)
            .execute(&mut db)
            .await
            .unwrap();
        }
        sqlx::query("UPDATE orders_view SET snapshot = $1 WHERE order_id = $2::uuid")
            .bind(self.snapshot)
            .bind(&self.order_id)
            .execute(&mut db)
            .await
            .unwrap();
    }
}

/// A connection to order-service's database whose edits go past the append-only trigger.
async fn order_db(stack: &mut Stack) -> sqlx::PgConnection {
    let mut db = sqlx::PgConnection::connect(&stack.service("order-service").database_url)
        .await
        .unwrap();
    sqlx::query("SET session_replication_role = replica")
        .execute(&mut db)
        .await
        .unwrap();
    db
}
