//! `/healthz` (the process is alive) and `/readyz` (it can serve its HTTP API: its database
//! answers), merged into every service's router; `/metrics` (Prometheus text), merged too or
//! served on an address of its own that no ingress routes to (`METRICS_ADDR`); and the
//! broker watch, which reports the broker's reachability as a metric and a log line.
//!
//! The broker is deliberately not a readiness check: the outbox exists so that a service
//! keeps accepting work while Kafka is away, and a broker outage that took every pod out of
//! its Service would turn a delay into an outage.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::json;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::problem::Problem;
use crate::problem::kind;

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
const BROKER_PROBE_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct HealthState {
    pub pool: PgPool,
    /// What the broker watch last saw, reported beside readiness, not part of it.
    pub broker: BrokerWatch,
    /// Shared so that a service can register metrics of its own after the build.
    pub metrics: Arc<Mutex<Registry>>,
}

/// Asks the broker for metadata every few seconds; the answer sets
/// `orderflow_broker_reachable` and a change is logged.
#[derive(Clone)]
pub struct BrokerWatch {
    probe: Arc<BaseConsumer>,
    reachable: Gauge,
}

impl BrokerWatch {
    /// A watch using `probe` (a client used only to ask for metadata), its gauge registered
    /// in `registry`.
    pub fn register(probe: BaseConsumer, registry: &mut Registry) -> Self {
        let reachable = Gauge::default();
        registry.sub_registry_with_prefix("orderflow").register(
            "broker_reachable",
            "1 if the last metadata request to the broker succeeded, 0 if it failed",
            reachable.clone(),
        );
        Self {
            probe: Arc::new(probe),
            reachable,
        }
    }

    pub fn is_reachable(&self) -> bool {
        self.reachable.get() == 1
    }

    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut interval = tokio::time::interval(BROKER_PROBE_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut was_reachable = None;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                _ = interval.tick() => {}
            }
            let probe = self.probe.clone();
            let outcome =
                tokio::task::spawn_blocking(move || probe.fetch_metadata(None, CHECK_TIMEOUT))
                    .await?;
            self.reachable.set(i64::from(outcome.is_ok()));
            match (outcome, was_reachable) {
                (Err(e), Some(true) | None) => tracing::warn!(
                    error = %e,
                    "the broker does not answer; events wait in the outbox until it does"
                ),
                (Ok(_), Some(false)) => tracing::info!("the broker answers again"),
                _ => {}
            }
            was_reachable = Some(self.is_reachable());
        }
    }
}

/// `/healthz` and `/readyz`, served beside the API.
pub fn router(state: HealthState) -> Router {
    Router::new()
        .route("/healthz", get(alive))
        .route("/readyz", get(ready))
        .with_state(state)
}

/// `/metrics`: beside the API, or on a listener of its own (`METRICS_ADDR`).
pub fn metrics_router(state: HealthState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// The health endpoints every service serves, for its OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    #[derive(utoipa::OpenApi)]
    #[openapi(paths(alive, ready, metrics))]
    struct HealthApi;
    <HealthApi as utoipa::OpenApi>::openapi()
}

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "Alive")))]
async fn alive() -> Json<serde_json::Value> {
    Json(json!({"status": "alive"}))
}

/// The service can serve its HTTP API: its database answers. The broker's state is
/// reported, not checked: while it is away, work waits in the outbox.
#[utoipa::path(get, path = "/readyz", tag = "health", responses(
    (status = 200, description = "Ready; `broker` says whether the broker answered its last probe"),
    (status = 503, description = "The database is unreachable", content_type = "application/problem+json"),
))]
async fn ready(State(state): State<HealthState>) -> Response {
    let broker = if state.broker.is_reachable() {
        "reachable"
    } else {
        "unreachable"
    };
    let database =
        tokio::time::timeout(CHECK_TIMEOUT, sqlx::query("SELECT 1").execute(&state.pool))
            .await
            .map_err(|_| "timed out".to_owned())
            .and_then(|r| r.map(drop).map_err(|e| e.to_string()));
    match database {
        Ok(()) => Json(json!({"status": "ready", "broker": broker})).into_response(),
        Err(reason) => {
            tracing::warn!(
                reason,
                "readiness check failed: the database does not answer"
            );
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                kind::NOT_READY,
                "Not ready",
            )
            .detail("the database is unreachable")
            .with("failing_checks", json!(["database"]))
            .into_response()
        }
    }
}

/// Prometheus metrics, OpenMetrics text. Served on `METRICS_ADDR` instead when that is set.
#[utoipa::path(get, path = "/metrics", tag = "health", responses((status = 200, description = "Metrics", content_type = "application/openmetrics-text")))]
async fn metrics(State(state): State<HealthState>) -> Response {
    let mut body = String::new();
    let registry = state
        .metrics
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Err(e) = prometheus_client::encoding::text::encode(&mut body, &registry) {
        tracing::error!(error = %e, "encoding metrics failed");
        return Problem::internal().into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}
