//! What PostgreSQL counted for a set of databases: statements executed (from
//! `pg_stat_statements`, when the server loads it) and transactions committed.

use serde::Serialize;
use shared_events::settings::database_url;
use sqlx::{Connection, PgConnection};

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct PgCounters {
    /// `None` when `pg_stat_statements` is not loaded (`shared_preload_libraries`).
    pub statements: Option<f64>,
    pub commits: f64,
}

impl PgCounters {
    /// The counters now. Backends publish their commit counts about once a second, so read
    /// after the work's connections closed or went idle.
    pub async fn read(postgres: &str, databases: &[String]) -> anyhow::Result<Self> {
        let mut connection = PgConnection::connect(&database_url(postgres, "postgres")).await?;
        let commits: Option<i64> = sqlx::query_scalar(
            "SELECT sum(xact_commit)::bigint FROM pg_stat_database WHERE datname = ANY($1)",
        )
        .bind(databases)
        .fetch_one(&mut connection)
        .await?;
        let _ = sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .execute(&mut connection)
            .await;
        let statements: Option<i64> = sqlx::query_scalar(
            "SELECT sum(s.calls)::bigint FROM pg_stat_statements s
             JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = ANY($1)",
        )
        .bind(databases)
        .fetch_one(&mut connection)
        .await
        .ok()
        .flatten();
        Ok(Self {
            statements: statements.map(|n| n as f64),
            commits: commits.unwrap_or(0) as f64,
        })
    }

    pub fn since(&self, before: &Self) -> Self {
        Self {
            statements: self.statements.zip(before.statements).map(|(a, b)| a - b),
            commits: self.commits - before.commits,
        }
    }

    pub fn per(&self, orders: usize) -> Self {
        let n = orders.max(1) as f64;
        Self {
            statements: self.statements.map(|s| s / n),
            commits: self.commits / n,
        }
    }
}
