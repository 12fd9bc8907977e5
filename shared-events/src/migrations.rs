//! Database migrations of the plumbing tables (`outbox`, `processed_events`), merged with a
//! service's own so one migrator owns one `_sqlx_migrations` table.

use sqlx::migrate::Migrator;

/// Plumbing migrations; versions 1..=999 are reserved for them, services start at 1000.
pub static PLUMBING: Migrator = sqlx::migrate!("./migrations");

/// The plumbing migrations followed by the service's own, in version order.
pub fn with_service_migrations(service: &Migrator) -> Migrator {
    let mut migrations: Vec<_> = PLUMBING.iter().chain(service.iter()).cloned().collect();
    migrations.sort_by_key(|m| m.version);
    Migrator::with_migrations(migrations)
}
