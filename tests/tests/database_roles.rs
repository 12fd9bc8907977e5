//! Migrations can run under a role of their own, and a service under a role that cannot
//! change the schema: the `migrate` subcommand applies them as the owner, the service starts
//! with `DATABASE_MIGRATE_ON_START=false` as a role with only SELECT, INSERT, UPDATE and
//! DELETE (granted by default privileges, as deploy/README.md sets them up), checks that
//! every migration is there, and runs the saga. Without them it refuses to start.

use std::process::Stdio;
use std::time::Duration;

use orderflow_e2e::client::{order_body, place, wait_for_status};
use orderflow_e2e::{Stack, binary, postgres_url, put_account, put_product, wait_for_catalog};
use shared_events::settings::database_url;
use sqlx::{Connection, PgConnection};

/// `url` with `role` as its user.
fn as_role(url: &str, role: &str) -> String {
    let mut url = reqwest::Url::parse(url).unwrap();
    url.set_username(role).unwrap();
    url.to_string()
}

#[tokio::test]
async fn a_service_runs_under_a_role_that_cannot_change_the_schema() {
    let mut stack = Stack::start("roles", &[]).await;
    let run = &stack.prefix.trim_end_matches('-').to_owned();
    let (migrator, app) = (format!("{run}_migrator"), format!("{run}_app"));
    let database = format!("{run}_orders");
    let server = postgres_url();
    let mut superuser = PgConnection::connect(&database_url(&server, "postgres"))
        .await
        .unwrap();
    for statement in [
        format!("CREATE ROLE {migrator} LOGIN"),
        format!("CREATE ROLE {app} LOGIN"),
        format!("CREATE DATABASE {database} OWNER {migrator}"),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(&mut superuser)
            .await
            .unwrap();
    }
    // What deploy/README.md has the migration role run once in its database.
    let owner_url = as_role(&database_url(&server, &database), &migrator);
    let mut owner = PgConnection::connect(&owner_url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "REVOKE ALL ON SCHEMA public FROM PUBLIC;
         GRANT USAGE ON SCHEMA public TO {app};
         ALTER DEFAULT PRIVILEGES IN SCHEMA public
             GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {app};
         ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {app};"
    )))
    .execute(&mut owner)
    .await
    .unwrap();
    let app_url = as_role(&database_url(&server, &database), &app);

    // Not migrated yet: the service refuses to start, and says what to do.
    let refused = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(binary("order-service"))
            .env("DATABASE_URL", &app_url)
            .env("DATABASE_MIGRATE_ON_START", "false")
            .env("HTTP_ADDR", "127.0.0.1:0")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output(),
    )
    .await
    .expect("refuses at once")
    .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&refused.stdout),
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(!refused.status.success(), "{said}");
    assert!(
        said.contains("lacks migration") && said.contains("order-service migrate"),
        "{said}"
    );

    let migrated = tokio::process::Command::new(binary("order-service"))
        .arg("migrate")
        .env("DATABASE_URL", &owner_url)
        .output()
        .await
        .unwrap();
    assert!(
        migrated.status.success(),
        "{}",
        String::from_utf8_lossy(&migrated.stderr)
    );
    // The service's role reads and writes, and cannot change the schema.
    let mut as_app = PgConnection::connect(&app_url).await.unwrap();
    let ddl = sqlx::raw_sql("CREATE TABLE sneaky (id int)")
        .execute(&mut as_app)
        .await;
    assert!(ddl.is_err(), "the service's role could create a table");
    let ddl = sqlx::raw_sql("ALTER TABLE outbox ADD COLUMN sneaky int")
        .execute(&mut as_app)
        .await;
    assert!(ddl.is_err(), "the service's role could alter a table");

    // order-service moves to that database before any event reached it, then runs a saga.
    let order_service = stack.service("order-service");
    order_service.stop().await;
    order_service.run_with("DATABASE_URL", &app_url).await;
    order_service
        .run_with("DATABASE_MIGRATE_ON_START", "false")
        .await;
    order_service.start().await;
    put_product(&stack, "roles-product", 500, 10).await;
    put_account(&stack, "roles-customer", 100_000).await;
    wait_for_catalog(&stack, &["roles-product"]).await;
    let order = place(
        &stack,
        &order_body("roles-customer", &[("roles-product", 1)], "DE"),
    )
    .await;
    wait_for_status(&stack, &order, "COMPLETED").await;
    stack.stop_all().await;
    drop((as_app, owner));
    for statement in [
        format!("DROP DATABASE {database} WITH (FORCE)"),
        format!("DROP ROLE {app}"),
        format!("DROP ROLE {migrator}"),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(&mut superuser)
            .await
            .unwrap();
    }
}
