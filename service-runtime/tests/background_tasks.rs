//! A service whose background task ends stops, and says which task and why, instead of
//! answering "alive" without it. Needs the local stack (`scripts/stack-up`).

use std::time::Duration;

use clap::Parser;
use service_runtime::{Application, ServiceConfig, ServiceDefaults};
use shared_events::database::{create_database, drop_database};
use shared_events::settings::database_url;
use sqlx::migrate::Migrator;
use tokio_util::sync::CancellationToken;

const DEFAULTS: ServiceDefaults = ServiceDefaults {
    name: "background-task-test",
    http_port: 0,
    database: "unused",
};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    service: ServiceConfig,
}

/// A fresh database, dropped when the guard goes.
struct TestDatabase {
    base: String,
    name: String,
}

impl TestDatabase {
    async fn create() -> Self {
        let base = std::env::var("TEST_POSTGRES_URL")
            .unwrap_or_else(|_| shared_events::settings::LOCAL_POSTGRES.into());
        let name = format!("it_{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
        create_database(&base, &name).await.unwrap();
        Self { base, name }
    }

    fn url(&self) -> String {
        database_url(&self.base, &self.name)
    }

    async fn drop(self) {
        drop_database(&self.base, &self.name).await.unwrap();
    }
}

async fn application(database: &TestDatabase) -> Application {
    let config = Cli::parse_from([
        "test",
        "--http-addr",
        "127.0.0.1:0",
        "--database-url",
        &database.url(),
        // No request is served here: the identity provider is never asked.
        "--auth-jwks-url",
        "http://127.0.0.1:9/jwks.json",
        "--auth-issuer",
        "unused",
    ])
    .service;
    Application::build(DEFAULTS, config, &Migrator::with_migrations(Vec::new()))
        .await
        .expect("the local stack must run: scripts/stack-up")
}

/// Runs the application until it stops by itself; nobody cancels the token.
async fn run_until_it_stops(app: Application) -> anyhow::Result<()> {
    tokio::time::timeout(
        Duration::from_secs(60),
        app.run_until_stopped(CancellationToken::new()),
    )
    .await
    .expect("the service kept running without its task")
}

#[tokio::test]
async fn a_failed_task_stops_the_service_with_its_error() {
    let database = TestDatabase::create().await;
    let app = application(&database)
        .await
        .with_task("doomed task", |_| async { anyhow::bail!("disk on fire") });
    let error = run_until_it_stops(app).await.unwrap_err();
    let chain = format!("{error:#}");
    assert!(chain.contains("doomed task failed"), "{chain}");
    assert!(chain.contains("disk on fire"), "{chain}");
    database.drop().await;
}

#[tokio::test]
async fn a_task_that_returns_before_shutdown_stops_the_service() {
    let database = TestDatabase::create().await;
    let app = application(&database)
        .await
        .with_task("quitter", |_| async { Ok(()) });
    let error = run_until_it_stops(app).await.unwrap_err();
    assert!(
        format!("{error:#}").contains("quitter ended although the service was not stopping"),
        "{error:#}"
    );
    database.drop().await;
}

#[tokio::test]
async fn tasks_that_end_on_shutdown_end_the_service_cleanly() {
    let database = TestDatabase::create().await;
    let app = application(&database)
        .await
        .with_task("patient task", |token| async move {
            token.cancelled().await;
            Ok(())
        });
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!running.is_finished(), "the service stopped by itself");
    shutdown.cancel();
    let outcome = tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .expect("the service did not stop on shutdown")
        .unwrap();
    assert!(outcome.is_ok(), "{outcome:?}");
    database.drop().await;
}
