//! Operating the saga (admin only): finding the orders that are stuck and why, and
//! counting them for alerts.

mod stuck;
mod watch;

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use shared_events::{KafkaConfig, TopicNames};
use sqlx::PgPool;

pub use stuck::{AwaitedView, DeadLetterView, PartitionView, StuckSaga, StuckSagas};
pub use watch::{StuckMetrics, StuckWatch};

#[derive(Clone)]
pub struct OperateState {
    pub pool: PgPool,
    pub kafka: KafkaConfig,
    pub names: TopicNames,
    /// An order in flight with no event for longer than this is stuck.
    pub stuck_after: Duration,
}

pub fn routes(state: OperateState) -> Router {
    Router::new()
        .route("/sagas/stuck", get(stuck::stuck_sagas))
        .with_state(state)
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(stuck::stuck_sagas))]
pub struct ApiDoc;
