//! order-service's one error type, and how it reaches HTTP clients and the consumer runner.

use service_runtime::Problem;
use shared_events::HandlerError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Events(#[from] shared_events::Error),
    /// The stored history cannot be read back: a bug or a manual edit, never retried.
    #[error("order {order_id} has a corrupt history: {reason}")]
    CorruptHistory {
        order_id: uuid::Uuid,
        reason: String,
    },
}

impl From<Error> for Problem {
    fn from(error: Error) -> Self {
        match error {
            // A database that cannot be reached is a 503, not a 500 (service_runtime).
            Error::Database(e) => e.into(),
            Error::Events(e) => e.into(),
            corrupt @ Error::CorruptHistory { .. } => Problem::internal_caused_by(corrupt),
        }
    }
}

impl From<Error> for HandlerError {
    fn from(error: Error) -> Self {
        match error {
            Error::Database(e) => e.into(),
            Error::Events(e) => e.into(),
            corrupt @ Error::CorruptHistory { .. } => HandlerError::Rejected(corrupt.to_string()),
        }
    }
}
