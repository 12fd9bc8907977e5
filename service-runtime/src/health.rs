//! `/healthz` (the process is alive), `/readyz` (its database and broker answer) and
//! `/metrics` (Prometheus text), merged into every service's router.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::registry::Registry;
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::json;
use sqlx::PgPool;

use crate::problem::Problem;

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct HealthState {
    pub pool: PgPool,
    /// A client used only to ask the broker for metadata.
    pub kafka_probe: Arc<BaseConsumer>,
    /// Shared so that a service can register metrics of its own after the build.
    pub metrics: Arc<Mutex<Registry>>,
}

pub fn router(state: HealthState) -> Router {
    Router::new()
        .route("/healthz", get(alive))
        .route("/readyz", get(ready))
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

/// The database and the broker answer.
#[utoipa::path(get, path = "/readyz", tag = "health", responses(
    (status = 200, description = "Ready"),
    (status = 503, description = "A dependency is unreachable", content_type = "application/problem+json"),
))]
async fn ready(State(state): State<HealthState>) -> Response {
    let database =
        tokio::time::timeout(CHECK_TIMEOUT, sqlx::query("SELECT 1").execute(&state.pool))
            .await
            .map_err(|_| "timed out".to_owned())
            .and_then(|r| r.map(drop).map_err(|e| e.to_string()));
    let probe = state.kafka_probe.clone();
    let broker =
        tokio::task::spawn_blocking(move || probe.fetch_metadata(None, CHECK_TIMEOUT).map(drop))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
    let failing: Vec<_> = [("database", database), ("broker", broker)]
        .into_iter()
        .filter_map(|(check, result)| {
            result.err().map(|reason| {
                tracing::warn!(check, reason, "readiness check failed");
                check
            })
        })
        .collect();
    if failing.is_empty() {
        Json(json!({"status": "ready"})).into_response()
    } else {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "/problems/not-ready",
            "Not ready",
        )
        .detail(format!("unreachable: {}", failing.join(", ")))
        .with("failing_checks", json!(failing))
        .into_response()
    }
}

/// Prometheus metrics, OpenMetrics text.
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
