//! A fresh database with order-service's migrations, for tests of its storage. Needs
//! PostgreSQL (`TEST_POSTGRES_URL`, by default the local one).

use shared_events::database::{create_database, drop_database};
use sqlx::{Connection, PgConnection};

pub struct TestDatabase {
    server: String,
    name: String,
    /// A connection to the migrated database.
    pub db: PgConnection,
}

impl TestDatabase {
    pub async fn migrated() -> Self {
        let server = std::env::var("TEST_POSTGRES_URL")
            .unwrap_or_else(|_| shared_events::settings::LOCAL_POSTGRES.into());
        let name = format!("it_{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
        let url = create_database(&server, &name).await.unwrap();
        let mut db = PgConnection::connect(&url).await.unwrap();
        shared_events::migrations::with_service_migrations(&order_service::MIGRATIONS)
            .run(&mut db)
            .await
            .unwrap();
        Self { server, name, db }
    }

    pub async fn drop(self) {
        self.db.close().await.unwrap();
        drop_database(&self.server, &self.name).await.unwrap();
    }
}
