//! Errors in Confluent's shape: an HTTP status plus `{"error_code", "message"}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("Subject '{0}' not found.")]
    SubjectNotFound(String),
    #[error("Version not found.")]
    VersionNotFound,
    #[error("Schema not found")]
    SchemaNotFound,
    #[error("Subject does not have subject-level compatibility configured")]
    SubjectConfigNotFound,
    #[error("Invalid schema: {0}")]
    InvalidSchema(String),
    #[error(
        "The specified version '{0}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\""
    )]
    InvalidVersion(String),
    #[error("Invalid compatibility level: {0}")]
    InvalidCompatibility(String),
    #[error("Schema being registered is incompatible with an earlier schema for subject: {0}")]
    Incompatible(String),
    #[error("Unrecognized field or malformed request: {0}")]
    BadRequest(String),
    #[error("Error in the backend data store: {0}")]
    Storage(String),
}

impl RegistryError {
    pub fn storage(e: impl std::fmt::Display) -> Self {
        Self::Storage(e.to_string())
    }

    /// Confluent's status and error code for this error.
    pub fn codes(&self) -> (StatusCode, u32) {
        match self {
            Self::SubjectNotFound(_) => (StatusCode::NOT_FOUND, 40401),
            Self::VersionNotFound => (StatusCode::NOT_FOUND, 40402),
            Self::SchemaNotFound => (StatusCode::NOT_FOUND, 40403),
            Self::SubjectConfigNotFound => (StatusCode::NOT_FOUND, 40408),
            Self::InvalidSchema(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42201),
            Self::InvalidVersion(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42202),
            Self::InvalidCompatibility(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42203),
            Self::Incompatible(_) => (StatusCode::CONFLICT, 409),
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, 400),
            Self::Storage(_) => (StatusCode::INTERNAL_SERVER_ERROR, 50001),
        }
    }
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let (status, code) = self.codes();
        let mut response = (
            status,
            Json(json!({ "error_code": code, "message": self.to_string() })),
        )
            .into_response();
        response.headers_mut().insert(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static(crate::CONTENT_TYPE),
        );
        response
    }
}
