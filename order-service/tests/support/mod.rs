//! A fresh database with order-service's migrations, for tests of its storage. Needs
//! PostgreSQL (`TEST_POSTGRES_URL`, by default the local one).

use shared_events::settings::database_url;
use sqlx::{Connection, PgConnection};

pub struct TestDatabase {
    admin: PgConnection,
    name: String,
    /// A connection to the migrated database.
    pub db: PgConnection,
}

impl TestDatabase {
    pub async fn migrated() -> Self {
        let base = std::env::var("TEST_POSTGRES_URL")
            .unwrap_or_else(|_| shared_events::settings::LOCAL_POSTGRES.into());
        let name = format!("it_{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
        let mut admin = PgConnection::connect(&database_url(&base, "postgres"))
            .await
            .unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .unwrap();
        let mut db = PgConnection::connect(&database_url(&base, &name))
            .await
            .unwrap();
        shared_events::migrations::with_service_migrations(&order_service::MIGRATIONS)
            .run(&mut db)
            .await
            .unwrap();
        Self { admin, name, db }
    }

    pub async fn drop(mut self) {
        self.db.close().await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&mut self.admin)
        .await
        .unwrap();
    }
}
