//! What a handler's database errors mean to the runner: a deadlock and a serialization
//! failure pass on a retry (transient); a broken constraint never will (rejected).

mod support;

use std::time::Duration;

use shared_events::HandlerError;
use sqlx::{Connection, PgConnection};
use support::TestStack;

async fn connect(stack: &TestStack) -> PgConnection {
    let options = stack.pool.connect_options();
    PgConnection::connect_with(&options).await.unwrap()
}

#[tokio::test]
async fn a_deadlock_is_transient() {
    let stack = TestStack::new(1).await;
    sqlx::raw_sql(
        "CREATE TABLE rows_to_lock (id int PRIMARY KEY); INSERT INTO rows_to_lock VALUES (1), (2)",
    )
    .execute(&stack.pool)
    .await
    .unwrap();
    let (mut first, mut second) = (connect(&stack).await, connect(&stack).await);
    let lock =
        |id: i32| sqlx::query("SELECT id FROM rows_to_lock WHERE id = $1 FOR UPDATE").bind(id);
    let mut a = first.begin().await.unwrap();
    let mut b = second.begin().await.unwrap();
    lock(1).execute(&mut *a).await.unwrap();
    lock(2).execute(&mut *b).await.unwrap();
    // Each now waits for the other; PostgreSQL aborts one of them after deadlock_timeout.
    let (left, right) = tokio::join!(lock(2).execute(&mut *a), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        lock(1).execute(&mut *b).await
    });
    let error = left
        .err()
        .or(right.err())
        .expect("one of the two is aborted");
    let code = error
        .as_database_error()
        .and_then(|e| e.code())
        .map(|c| c.into_owned());
    assert_eq!(code.as_deref(), Some("40P01"));
    assert!(matches!(
        HandlerError::from(error),
        HandlerError::Transient(_)
    ));
}

#[tokio::test]
async fn a_serialization_failure_is_transient() {
    let stack = TestStack::new(1).await;
    sqlx::raw_sql("CREATE TABLE counters (id int PRIMARY KEY, n int NOT NULL); INSERT INTO counters VALUES (1, 0)")
        .execute(&stack.pool)
        .await
        .unwrap();
    let (mut first, mut second) = (connect(&stack).await, connect(&stack).await);
    let serializable = "BEGIN ISOLATION LEVEL SERIALIZABLE";
    let bump = "UPDATE counters SET n = n + 1 WHERE id = 1";
    sqlx::raw_sql(serializable)
        .execute(&mut first)
        .await
        .unwrap();
    sqlx::raw_sql(serializable)
        .execute(&mut second)
        .await
        .unwrap();
    sqlx::query("SELECT n FROM counters")
        .execute(&mut first)
        .await
        .unwrap();
    sqlx::query("SELECT n FROM counters")
        .execute(&mut second)
        .await
        .unwrap();
    sqlx::query(bump).execute(&mut first).await.unwrap();
    let (updated, committed) = tokio::join!(sqlx::query(bump).execute(&mut second), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        sqlx::raw_sql("COMMIT").execute(&mut first).await
    });
    committed.unwrap();
    let error = updated.expect_err("the second update of a row the first changed must fail");
    let code = error
        .as_database_error()
        .and_then(|e| e.code())
        .map(|c| c.into_owned());
    assert_eq!(code.as_deref(), Some("40001"));
    assert!(matches!(
        HandlerError::from(error),
        HandlerError::Transient(_)
    ));
}

#[tokio::test]
async fn a_broken_constraint_is_rejected() {
    let stack = TestStack::new(1).await;
    sqlx::query("CREATE TABLE positive (n int CHECK (n > 0))")
        .execute(&stack.pool)
        .await
        .unwrap();
    let error = sqlx::query("INSERT INTO positive VALUES (-1)")
        .execute(&stack.pool)
        .await
        .expect_err("the check constraint refuses it");
    assert!(matches!(
        HandlerError::from(error),
        HandlerError::Rejected(_)
    ));
}

/// A stored value that no longer reads back as its type (a JSON column that does not parse)
/// reads the same way on every retry: rejected, so the record goes to the dead-letter topic
/// instead of blocking its partition.
#[tokio::test]
async fn a_stored_value_that_does_not_read_back_is_rejected() {
    #[derive(serde::Deserialize)]
    #[allow(dead_code)] // only its shape matters
    struct SagaState {
        stage: String,
    }
    let stack = TestStack::new(1).await;
    let row: Result<(sqlx::types::Json<SagaState>,), _> =
        sqlx::query_as("SELECT '{\"no_stage\": 1}'::jsonb")
            .fetch_one(&stack.pool)
            .await;
    let error = row.err().expect("the JSON does not fit the struct");
    assert!(
        matches!(HandlerError::from(error), HandlerError::Rejected(_)),
        "a value that cannot decode must not be retried forever"
    );
}
