//! Leaving the consumer group on shutdown, with a bounded wait.
//!
//! The final commit and the group leave both need the broker, and librdkafka waits for it
//! without limit: dropping a consumer whose broker is unreachable blocks until the broker
//! answers. That would hold the process past its termination grace period and get it
//! killed. So both run on a thread of their own, and shutdown waits for them at most
//! [`CLOSE_TIMEOUT`]. If the wait runs out, nothing is lost: offsets that were not
//! committed make their records come again, and `processed_events` skips them as
//! duplicates.
//!
//! A close thread that outlived its wait is still inside librdkafka, and may wake up (the
//! broker answers at last) just as the process exits and its exit handlers tear down what
//! librdkafka uses. So the process waits for such threads once more, at the very end
//! ([`finish_abandoned_closes`]), and exits while one runs only if it is still blocked then.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::oneshot;
use tracing::{info, warn};

use super::rebalance::RebalanceTracker;

/// How long shutdown waits for the final commit and the group leave. Well inside a pod's
/// grace period, with the HTTP drain and the relay's flush beside it.
pub(super) const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Every close thread started, for [`finish_abandoned_closes`]: registered before the wait,
/// so that one whose wait is dropped (its task cut at shutdown) is still waited for.
static CLOSE_THREADS: Mutex<Vec<JoinHandle<()>>> = Mutex::new(Vec::new());

/// Commits the stored offsets, leaves the group and frees the consumer, waiting at most
/// `limit`. A thread that outlives the wait stays blocked in librdkafka;
/// [`finish_abandoned_closes`], which the process waits on before it exits, waits for it.
pub(super) async fn close_within(
    consumer: Arc<StreamConsumer<RebalanceTracker>>,
    group: &str,
    limit: Duration,
) {
    let (closed_tx, closed) = oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("consumer-close".to_owned())
        .spawn(move || {
            let committed = consumer.commit_consumer_state(CommitMode::Sync);
            consumer.unsubscribe();
            close_here(consumer);
            let _ = closed_tx.send(committed);
        });
    match spawned {
        Ok(thread) => {
            let mut threads = close_threads();
            threads.retain(|earlier| !earlier.is_finished());
            threads.push(thread);
        }
        Err(e) => {
            warn!(%group, error = %e, "no thread to close the consumer on; it is abandoned, its uncommitted records come again");
            return;
        }
    }
    match tokio::time::timeout(limit, closed).await {
        Ok(Ok(Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)))) => {
            info!(%group, "consumer stopped");
        }
        Ok(Ok(Err(e))) => {
            warn!(%group, error = %e, "consumer stopped; the final offset commit failed, so records since the last commit come again");
        }
        Ok(Err(_)) => warn!(%group, "the consumer's close thread died"),
        Err(_) => warn!(%group, ?limit,
            "the broker did not answer the final commit and group leave in time; stopping anyway, records since the last commit come again"),
    }
}

fn close_threads() -> std::sync::MutexGuard<'static, Vec<JoinHandle<()>>> {
    CLOSE_THREADS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Waits at most `limit` for the close threads still running (those that outlived their
/// wait, or whose wait was dropped) to finish, so that none is inside librdkafka while the
/// process runs its exit handlers. Call it last, just before the process exits; returns
/// how many still run.
pub async fn finish_abandoned_closes(limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    let threads = std::mem::take(&mut *close_threads());
    let mut still_running = 0;
    for thread in threads {
        while !thread.is_finished() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if thread.is_finished() {
            let _ = thread.join();
        } else {
            still_running += 1;
        }
    }
    if still_running > 0 {
        warn!(
            still_running,
            ?limit,
            "consumer close threads are still blocked on the broker; exiting with them"
        );
    }
    still_running
}

/// How long the close waits for a read of the group's progress (`stall::ProgressReader`) to
/// give back its handle: its calls each time out within seconds while the broker answers.
const OTHER_HANDLES_WAIT: Duration = Duration::from_secs(30);

/// Drops the last handle of `consumer` on this thread, which closes it (the group leave
/// happens in librdkafka's drop). Another handle (a progress read's) would otherwise drop
/// last wherever it is, and a close blocked on an unreachable broker would then block a
/// runtime thread, and the runtime's shutdown with it. So this waits for the other handles
/// to go; if one outlives the wait, the consumer is leaked rather than closed elsewhere.
fn close_here(mut consumer: Arc<StreamConsumer<RebalanceTracker>>) {
    let deadline = std::time::Instant::now() + OTHER_HANDLES_WAIT;
    loop {
        match Arc::try_unwrap(consumer) {
            Ok(last) => return drop(last),
            Err(shared) if std::time::Instant::now() < deadline => {
                consumer = shared;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(shared) => {
                warn!(
                    "a handle of the consumer outlived its close; leaking it instead of closing it on another thread"
                );
                return std::mem::forget(shared);
            }
        }
    }
}
