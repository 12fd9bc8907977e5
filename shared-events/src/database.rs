//! PostgreSQL connections that cannot hang a service. sqlx waits for the server's answer
//! without limit, also when it checks a connection given back to the pool. So one
//! half-open connection (a server that vanished, a middlebox that dropped the flow, a frozen
//! host whose kernel still acknowledges) would block its task forever and leak its pool
//! slot; a few of them and every request waits for a connection that never comes. Hence:
//! every unit of background work is [`bounded`], and the pool checks a returned connection
//! within [`RELEASE_CHECK_LIMIT`], closing it if the server does not answer.

use std::future::Future;
use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::PgPoolOptions;

use crate::settings::database_url;

/// Longest one unit of database work (a consumer batch, a relay step, a probe) waits for
/// PostgreSQL before giving the connection up as dead. Each statement is bounded by the
/// server's `statement_timeout` too; this bound is for a server that no longer answers.
pub const ANSWER_LIMIT: Duration = Duration::from_secs(30);

/// Longest the check of a connection given back to the pool waits for its answer.
pub const RELEASE_CHECK_LIMIT: Duration = Duration::from_secs(5);

/// Pool settings every service uses: connections are checked on release within a bound
/// (sqlx checks them once more after, without one; a connection that just answered answers
/// again), and not on checkout: a dead connection fails its statement, which a consumer
/// retries and an HTTP client sees as a 503, and the pool replaces it.
pub fn pool_options() -> PgPoolOptions {
    PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(5))
        .test_before_acquire(false)
        .after_release(|connection, _| {
            Box::pin(async move {
                match tokio::time::timeout(RELEASE_CHECK_LIMIT, connection.ping()).await {
                    Ok(answered) => answered.map(|()| true),
                    // An error closes it without a goodbye the server would not read.
                    Err(_) => Err(no_answer(RELEASE_CHECK_LIMIT)),
                }
            })
        })
}

/// Runs `work` (a unit of database work on a pooled connection) for at most
/// [`ANSWER_LIMIT`]. When the bound runs out, `work` is dropped, which hands its connection
/// back to the pool, whose release check closes it.
pub async fn bounded<T, E: From<sqlx::Error>>(
    work: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    tokio::time::timeout(ANSWER_LIMIT, work)
        .await
        .unwrap_or_else(|_| Err(no_answer(ANSWER_LIMIT).into()))
}

fn no_answer(limit: Duration) -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("PostgreSQL did not answer within {limit:?}"),
    ))
}

/// Creates the database `name` on the PostgreSQL server at `server` (a URL without a
/// database, as [`database_url`] takes it) and returns the new database's URL: the tests'
/// and the benchmark's scratch databases, made the same way everywhere. `name` is a plain
/// identifier the caller generated.
///
/// [`database_url`]: crate::settings::database_url
pub async fn create_database(server: &str, name: &str) -> Result<String, sqlx::Error> {
    assert_plain_identifier(name);
    let mut admin = sqlx::PgConnection::connect(&database_url(server, "postgres")).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await?;
    admin.close().await?;
    Ok(database_url(server, name))
}

/// Drops the database `name` from the server at `server`, ending its sessions; nothing if it
/// is gone already.
pub async fn drop_database(server: &str, name: &str) -> Result<(), sqlx::Error> {
    assert_plain_identifier(name);
    let mut admin = sqlx::PgConnection::connect(&database_url(server, "postgres")).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await?;
    admin.close().await
}

/// The name goes into the statement as it is (CREATE DATABASE takes no parameters).
fn assert_plain_identifier(name: &str) {
    assert!(
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
        "not a plain database name: {name:?}"
    );
}
