//! A small Confluent-REST-compatible schema registry for machines without a real one
//! (development and tests). `docker-compose.yml` and `deploy/` use Confluent Schema Registry.
//!
//! Serves the subset of the API that serializers and operators use: registering and looking
//! up schemas under subjects, fetching by id, compatibility levels and checks (real Avro
//! schema resolution), with Confluent's JSON shapes and error codes.

mod error;
mod store;

use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path as UrlPath, State};
use axum::http::HeaderValue;
use axum::http::header::CONTENT_TYPE as CONTENT_TYPE_HEADER;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

pub use error::RegistryError;
pub use store::{Compatibility, Store};

/// Media type of every response, as Confluent sends it.
pub const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

type Shared = Arc<Mutex<Store>>;

/// The registry's routes over `store`.
pub fn app(store: Store) -> Router {
    let shared: Shared = Arc::new(Mutex::new(store));
    Router::new()
        .route("/", get(|| async { Json(json!({})) }))
        .route("/subjects", get(list_subjects))
        .route("/subjects/{subject}", post(lookup_schema))
        .route(
            "/subjects/{subject}/versions",
            get(list_versions).post(register_schema),
        )
        .route("/subjects/{subject}/versions/{version}", get(get_version))
        .route(
            "/subjects/{subject}/versions/{version}/schema",
            get(get_version_schema),
        )
        .route("/schemas/ids/{id}", get(get_schema_by_id))
        .route("/schemas/ids/{id}/versions", get(get_versions_of_id))
        .route("/config", get(get_global_config).put(put_global_config))
        .route(
            "/config/{subject}",
            get(get_subject_config).put(put_subject_config),
        )
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            post(check_compatibility),
        )
        .with_state(shared)
}

/// Serves the registry on `listener` until `shutdown` completes, persisting to `data_file`.
pub async fn run(
    listener: tokio::net::TcpListener,
    data_file: Option<&Path>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let store = Store::open(data_file)?;
    axum::serve(listener, app(store))
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

/// A JSON response with the registry's media type.
struct RegistryJson(Value);

impl IntoResponse for RegistryJson {
    fn into_response(self) -> Response {
        let mut response = Json(self.0).into_response();
        response
            .headers_mut()
            .insert(CONTENT_TYPE_HEADER, HeaderValue::from_static(CONTENT_TYPE));
        response
    }
}

type ApiResult = Result<RegistryJson, RegistryError>;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SchemaRequest {
    schema: String,
    #[serde(default)]
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<Value>,
}

impl SchemaRequest {
    fn from_body(body: Result<Json<SchemaRequest>, JsonRejection>) -> Result<Self, RegistryError> {
        let Json(request) = body.map_err(|e| RegistryError::BadRequest(e.body_text()))?;
        match request.schema_type.as_deref() {
            None | Some("AVRO") => {}
            Some(other) => {
                return Err(RegistryError::InvalidSchema(format!(
                    "schema type {other} is not supported by this dev registry (AVRO only)"
                )));
            }
        }
        if !request.references.is_empty() {
            return Err(RegistryError::InvalidSchema(
                "schema references are not supported by this dev registry".into(),
            ));
        }
        Ok(request)
    }
}

#[derive(Deserialize)]
struct ConfigRequest {
    compatibility: String,
}

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Store> {
    // A panic while holding the lock leaves consistent state (every change is one push).
    shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn list_subjects(State(shared): State<Shared>) -> ApiResult {
    Ok(RegistryJson(json!(lock(&shared).subjects())))
}

async fn list_versions(
    State(shared): State<Shared>,
    UrlPath(subject): UrlPath<String>,
) -> ApiResult {
    Ok(RegistryJson(json!(lock(&shared).versions(&subject)?)))
}

async fn register_schema(
    State(shared): State<Shared>,
    UrlPath(subject): UrlPath<String>,
    body: Result<Json<SchemaRequest>, JsonRejection>,
) -> ApiResult {
    let request = SchemaRequest::from_body(body)?;
    let id = lock(&shared).register(&subject, &request.schema)?;
    tracing::info!(subject, id, "schema registered");
    Ok(RegistryJson(json!({ "id": id })))
}

async fn lookup_schema(
    State(shared): State<Shared>,
    UrlPath(subject): UrlPath<String>,
    body: Result<Json<SchemaRequest>, JsonRejection>,
) -> ApiResult {
    let request = SchemaRequest::from_body(body)?;
    let found = lock(&shared).lookup(&subject, &request.schema)?;
    Ok(RegistryJson(json!({
        "subject": found.subject, "version": found.version, "id": found.id, "schema": found.schema
    })))
}

async fn get_version(
    State(shared): State<Shared>,
    UrlPath((subject, version)): UrlPath<(String, String)>,
) -> ApiResult {
    let found = lock(&shared).version(&subject, &version)?;
    Ok(RegistryJson(json!({
        "subject": found.subject, "version": found.version, "id": found.id, "schema": found.schema
    })))
}

async fn get_version_schema(
    State(shared): State<Shared>,
    UrlPath((subject, version)): UrlPath<(String, String)>,
) -> Result<Response, RegistryError> {
    let found = lock(&shared).version(&subject, &version)?;
    let schema: Value = serde_json::from_str(&found.schema).map_err(RegistryError::storage)?;
    Ok(RegistryJson(schema).into_response())
}

async fn get_schema_by_id(State(shared): State<Shared>, UrlPath(id): UrlPath<String>) -> ApiResult {
    let id: u32 = id.parse().map_err(|_| RegistryError::SchemaNotFound)?;
    let store = lock(&shared);
    Ok(RegistryJson(json!({ "schema": store.schema_by_id(id)? })))
}

async fn get_versions_of_id(
    State(shared): State<Shared>,
    UrlPath(id): UrlPath<String>,
) -> ApiResult {
    let id: u32 = id.parse().map_err(|_| RegistryError::SchemaNotFound)?;
    let found = lock(&shared).subject_versions_of(id)?;
    let found: Vec<Value> = found
        .into_iter()
        .map(|(subject, version)| json!({ "subject": subject, "version": version }))
        .collect();
    Ok(RegistryJson(json!(found)))
}

async fn get_global_config(State(shared): State<Shared>) -> ApiResult {
    Ok(RegistryJson(
        json!({ "compatibilityLevel": lock(&shared).global_compatibility() }),
    ))
}

async fn put_global_config(
    State(shared): State<Shared>,
    body: Result<Json<ConfigRequest>, JsonRejection>,
) -> ApiResult {
    let level = parse_level(body)?;
    lock(&shared).set_global_compatibility(level)?;
    Ok(RegistryJson(json!({ "compatibility": level })))
}

async fn get_subject_config(
    State(shared): State<Shared>,
    UrlPath(subject): UrlPath<String>,
) -> ApiResult {
    let level = lock(&shared)
        .subject_compatibility(&subject)
        .ok_or(RegistryError::SubjectConfigNotFound)?;
    Ok(RegistryJson(json!({ "compatibilityLevel": level })))
}

async fn put_subject_config(
    State(shared): State<Shared>,
    UrlPath(subject): UrlPath<String>,
    body: Result<Json<ConfigRequest>, JsonRejection>,
) -> ApiResult {
    let level = parse_level(body)?;
    lock(&shared).set_subject_compatibility(&subject, level)?;
    Ok(RegistryJson(json!({ "compatibility": level })))
}

async fn check_compatibility(
    State(shared): State<Shared>,
    UrlPath((subject, version)): UrlPath<(String, String)>,
    body: Result<Json<SchemaRequest>, JsonRejection>,
) -> ApiResult {
    let request = SchemaRequest::from_body(body)?;
    let compatible = lock(&shared).is_compatible(&subject, &version, &request.schema)?;
    Ok(RegistryJson(json!({ "is_compatible": compatible })))
}

fn parse_level(
    body: Result<Json<ConfigRequest>, JsonRejection>,
) -> Result<Compatibility, RegistryError> {
    let Json(request) = body.map_err(|e| RegistryError::BadRequest(e.body_text()))?;
    serde_json::from_value(Value::String(request.compatibility.clone()))
        .map_err(|_| RegistryError::InvalidCompatibility(request.compatibility))
}
