//! The contract between the runner and a service's event handler.

use std::future::Future;

use sqlx::PgConnection;

use crate::contracts::Event;
use crate::error::Error;
use crate::error::with_causes;

/// What a handler reports when it cannot apply an event.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The event can never be applied (it breaks a business rule or is inconsistent):
    /// the record goes to the dead-letter topic.
    #[error("rejected: {0}")]
    Rejected(String),
    /// Applying may succeed later (database or registry unreachable, a deadlock): retried.
    #[error("transient: {0}")]
    Transient(String),
}

impl From<sqlx::Error> for HandlerError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            // Integrity (23xxx) and data (22xxx) errors will fail the same way every time;
            // deadlocks (40P01) and serialization failures (40001) pass on a retry.
            sqlx::Error::Database(db)
                if db
                    .code()
                    .is_some_and(|c| c.starts_with("23") || c.starts_with("22")) =>
            {
                HandlerError::Rejected(error.to_string())
            }
            // A stored value that does not read back as its type (a JSON column that no
            // longer parses, say) reads the same on every retry.
            sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => {
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
            invalid @ (Error::InvalidContract { .. } | Error::Contract(_)) => {
                HandlerError::Rejected(with_causes(&invalid))
            }
            other => HandlerError::Transient(with_causes(&other)),
        }
    }
}

/// Applies events inside the runner's transaction: a function from (events, transaction) to
/// the events they cause.
pub trait EventHandler: Send + Sync + 'static {
    /// The event types this handler applies. The consumer subscribes to their topics, and
    /// skips records of other types (by their `event_type` header) without decoding them or
    /// opening a transaction.
    const EVENT_TYPES: &'static [&'static str];

    /// Applies `events` in order: writes state through `tx` (do not commit) and returns the
    /// events to publish, which the runner appends to the outbox in the same transaction.
    ///
    /// The runner passes a whole batch (records of several partitions, each partition's in
    /// offset order), or one event at a time when it replays a batch that failed, so the
    /// result must be the same as applying the events one by one. Set-based is the point:
    /// lock every row the batch touches in one statement, in a fixed order (so concurrent
    /// batches queue instead of deadlocking), decide in memory, write back in one statement.
    fn handle(
        &self,
        events: &[&Event],
        tx: &mut PgConnection,
    ) -> impl Future<Output = Result<Vec<Event>, HandlerError>> + Send;

    /// Called once the transaction that published `published` committed: the place to
    /// count what happened (a rolled-back or replayed attempt must not count).
    fn committed(&self, published: &[Event]) {
        let _ = published;
    }
}
