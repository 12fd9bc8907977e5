//! Database migrations of the plumbing tables (`outbox`, `processed_events`), merged with a
//! service's own so one migrator owns one `_sqlx_migrations` table.

use sqlx::PgConnection;
use sqlx::migrate::Migrator;

use crate::error::Error;

/// Plumbing migrations; versions 1..=999 are reserved for them, services start at 1000.
pub static PLUMBING: Migrator = sqlx::migrate!("./migrations");

/// The plumbing migrations followed by the service's own, in version order.
pub fn with_service_migrations(service: &Migrator) -> Migrator {
    let mut migrations: Vec<_> = PLUMBING.iter().chain(service.iter()).cloned().collect();
    migrations.sort_by_key(|m| m.version);
    Migrator::with_migrations(migrations)
}

/// Checks that every migration of `migrator` was applied, without applying any: for a
/// service whose database role may not change the schema (its migrations run under a role
/// of their own, before it starts).
pub async fn require_applied(migrator: &Migrator, conn: &mut PgConnection) -> Result<(), Error> {
    let migrated: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(&mut *conn)
        .await?;
    let applied: Vec<i64> = if migrated {
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(&mut *conn)
            .await?
    } else {
        Vec::new()
    };
    match migrator.iter().find(|m| !applied.contains(&m.version)) {
        Some(missing) => Err(Error::MigrationMissing {
            version: missing.version,
            description: missing.description.to_string(),
        }),
        None => Ok(()),
    }
}
