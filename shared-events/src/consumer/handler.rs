//! The contract between the runner and a service's event handler.

use std::future::Future;

use sqlx::PgConnection;

use crate::Error;
use crate::contracts::Event;

/// What a handler reports when it cannot apply an event.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The event can never be applied (it breaks a business rule or is inconsistent):
    /// the record goes to the dead-letter topic.
    #[error("rejected: {0}")]
    Rejected(String),
    /// Applying may succeed later (database or registry unreachable): retried.
    #[error("transient: {0}")]
    Transient(String),
}

impl From<sqlx::Error> for HandlerError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            // Integrity (23xxx) and data (22xxx) errors will fail the same way every time.
            sqlx::Error::Database(db)
                if db
                    .code()
                    .is_some_and(|c| c.starts_with("23") || c.starts_with("22")) =>
            {
                HandlerError::Rejected(error.to_string())
            }
            _ => HandlerError::Transient(error.to_string()),
        }
    }
}

impl From<Error> for HandlerError {
    fn from(error: Error) -> Self {
        match error {
            Error::Database(e) => e.into(),
            Error::InvalidContract(reason) => HandlerError::Rejected(reason),
            other => HandlerError::Transient(other.to_string()),
        }
    }
}

/// Applies one event inside the runner's transaction. Write state and append outgoing
/// events (with [`crate::Outbox::append`]) through `tx`; do not commit.
pub trait EventHandler: Send + Sync + 'static {
    fn handle(
        &self,
        event: &Event,
        tx: &mut PgConnection,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;
}
