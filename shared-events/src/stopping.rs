//! Bounded shutdown. Work in flight when the service is asked to stop gets a grace period
//! to finish, then it is dropped: a database call that hangs (a half-open connection waits
//! for its bound, 30 s) must not hold the process past its termination grace period.
//! Dropping loses nothing: an unfinished transaction rolls back, and records whose offsets
//! were not stored, or outbox rows not yet acknowledged, are delivered again.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Completes `grace` after `shutdown` is cancelled; never before.
pub async fn grace_over(shutdown: &CancellationToken, grace: Duration) {
    shutdown.cancelled().await;
    tokio::time::sleep(grace).await;
}
