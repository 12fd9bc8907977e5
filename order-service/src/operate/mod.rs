//! Operating the saga (admin only): finding the orders that are stuck and why, counting
//! them for alerts, and acting on one.

mod actions;
mod dead_letters;
mod stuck;
mod watch;

use std::collections::BTreeSet;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};
use service_runtime::Problem;
use shared_events::{KafkaConfig, Outbox, RegistryCodec, TopicNames};
use sqlx::PgPool;
use uuid::Uuid;

pub use actions::{OperatorAction, OperatorRequest, RedriveRequest};
pub use dead_letters::{DeadLetterEntry, DeadLetterId, DeadLetterList, DeadLetterView};
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
}

/// How long a listing or a redrive waits for the broker's evidence.
const EVIDENCE_LIMIT: Duration = Duration::from_secs(5);

impl OperateState {
    /// The order's records in the dead-letter topics, read within [`EVIDENCE_LIMIT`]; a 503
    /// if any topic could not be read (a redrive must not miss one).
    async fn dead_letters_of(&self, order_id: Uuid) -> Result<Vec<DeadLetterView>, Problem> {
        let (kafka, names) = (self.kafka.clone(), self.names.clone());
        let wanted = BTreeSet::from([order_id]);
        let read = tokio::task::spawn_blocking(move || dead_letters::scan(&kafka, &names, &wanted));
        let unavailable = |why: String| {
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "/problems/broker-unavailable",
                "The dead letters could not be read",
            )
            .detail(why)
        };
        match tokio::time::timeout(EVIDENCE_LIMIT, read).await {
            Ok(Ok((mut found, missing))) if missing.is_empty() => {
                Ok(found.remove(&order_id).unwrap_or_default())
            }
            Ok(Ok((_, missing))) => Err(unavailable(missing.join("; "))),
            Ok(Err(e)) => Err(unavailable(format!("reading them failed: {e}"))),
            Err(_) => Err(unavailable(format!(
                "the broker did not answer within {EVIDENCE_LIMIT:?}"
            ))),
        }
    }
}

pub fn routes(state: OperateState) -> Router {
    Router::new()
        .route("/sagas/stuck", get(stuck::stuck_sagas))
        .route("/sagas/dead-letters", get(dead_letters::dead_letters))
        .route("/sagas/{order_id}/redrive", post(actions::redrive))
        .route("/sagas/{order_id}/nudge", post(actions::nudge))
        .route("/sagas/{order_id}/cancel", post(actions::cancel))
        .with_state(state)
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(
    stuck::stuck_sagas,
    dead_letters::dead_letters,
    actions::redrive,
    actions::nudge,
    actions::cancel
))]
pub struct ApiDoc;
