//! Operating the saga (admin only): finding the orders that are stuck and why, counting
//! them for alerts, and acting on one.

mod actions;
mod stuck;
mod watch;

use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use shared_events::{KafkaConfig, Outbox, TopicNames};
use sqlx::PgPool;

pub use actions::{OperatorAction, OperatorRequest};
pub use stuck::{AwaitedView, DeadLetterView, PartitionView, StuckSaga, StuckSagas};
pub use watch::{StuckMetrics, StuckWatch};

#[derive(Clone)]
pub struct OperateState {
    pub pool: PgPool,
    pub outbox: Outbox,
    pub kafka: KafkaConfig,
    pub names: TopicNames,
    /// An order in flight with no event for longer than this is stuck.
    pub stuck_after: Duration,
}

pub fn routes(state: OperateState) -> Router {
    Router::new()
        .route("/sagas/stuck", get(stuck::stuck_sagas))
        .route("/sagas/{order_id}/nudge", post(actions::nudge))
        .route("/sagas/{order_id}/cancel", post(actions::cancel))
        .with_state(state)
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(stuck::stuck_sagas, actions::nudge, actions::cancel))]
pub struct ApiDoc;
