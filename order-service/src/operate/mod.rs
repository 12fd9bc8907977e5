//! Operating the saga (admin only): finding the orders that are stuck and why, counting
//! them for alerts, and acting on one.

mod acknowledgements;
mod actions;
mod causes;
mod dead_letters;
mod scan;
mod stuck;
mod watch;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};
use service_runtime::Problem;
use service_runtime::problem::kind;
use shared_events::{KafkaConfig, Outbox, RegistryCodec, TopicNames};
use sqlx::PgPool;
use uuid::Uuid;

use scan::Scan;

pub use acknowledgements::{AcknowledgeRequest, Acknowledged, Acknowledgement};
pub use actions::{CancelRequest, OperatorAction, OperatorRequest, RedriveRequest};
pub use causes::Cause;
pub use dead_letters::{
    DeadLetterEntry, DeadLetterGroup, DeadLetterGroups, DeadLetterId, DeadLetterView,
};
pub use scan::DeadLetterScans;
pub use stuck::{AwaitedView, HeldBackView, PartitionView, StuckSaga, StuckSagas};
pub use watch::{StuckMetrics, StuckWatch};

#[derive(Clone)]
pub struct OperateState {
    pub pool: PgPool,
    pub outbox: Outbox,
    /// Decodes the dead letters' records for people to read.
    pub codec: RegistryCodec,
    pub kafka: KafkaConfig,
    pub names: TopicNames,
    /// An order in flight with no event for longer than this is stuck.
    pub stuck_after: Duration,
    /// The last scan of the dead-letter topics, shared by the listings.
    pub dead_letters: DeadLetterScans,
}

/// How long a listing or a redrive waits for the broker's evidence.
const EVIDENCE_LIMIT: Duration = Duration::from_secs(5);

/// Runs a blocking read of the broker on the blocking pool and waits for it at most
/// [`EVIDENCE_LIMIT`]: the operator's views matter most when the broker is the trouble, so
/// they never wait for it past the bound (the read goes on in the background until its own
/// timeouts). The error says why there is no answer.
async fn from_broker<T: Send + 'static>(
    read: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    match tokio::time::timeout(EVIDENCE_LIMIT, tokio::task::spawn_blocking(read)).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(format!("reading it failed: {e}")),
        Err(_) => Err(format!(
            "the broker did not answer within {EVIDENCE_LIMIT:?}"
        )),
    }
}

impl OperateState {
    /// The dead-letter topics' records, from a scan at most `max_age` old.
    async fn dead_letter_scan(&self, max_age: Duration) -> Arc<Scan> {
        self.dead_letters.read(self, max_age).await
    }

    /// Every dead-letter topic's records, read now; a 503 if any topic could not be read (a
    /// redrive or an acknowledgement of a cause must not miss one).
    async fn complete_dead_letter_scan(&self) -> Result<Arc<Scan>, Problem> {
        let scan = self.dead_letter_scan(Duration::ZERO).await;
        if !scan.unavailable.is_empty() {
            return Err(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                kind::BROKER_UNAVAILABLE,
                "The dead letters could not be read",
            )
            .detail(scan.unavailable.join("; ")));
        }
        Ok(scan)
    }

    /// The order's records in the dead-letter topics, read now; a 503 if any topic could not
    /// be read.
    async fn dead_letters_of(&self, order_id: Uuid) -> Result<Vec<DeadLetterView>, Problem> {
        let scan = self.complete_dead_letter_scan().await?;
        Ok(scan
            .of_orders(&BTreeSet::from([order_id]))
            .remove(&order_id)
            .unwrap_or_default())
    }
}

pub fn routes(state: OperateState) -> Router {
    Router::new()
        .route("/sagas/stuck", get(stuck::stuck_sagas))
        .route("/sagas/dead-letters", get(dead_letters::dead_letters))
        .route(
            "/sagas/dead-letters/acknowledge",
            post(acknowledgements::acknowledge),
        )
        .route("/sagas/{order_id}/redrive", post(actions::redrive))
        .route("/sagas/{order_id}/nudge", post(actions::nudge))
        .route("/sagas/{order_id}/cancel", post(actions::cancel))
        .with_state(state)
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(
    stuck::stuck_sagas,
    dead_letters::dead_letters,
    acknowledgements::acknowledge,
    actions::redrive,
    actions::nudge,
    actions::cancel
))]
pub struct ApiDoc;
