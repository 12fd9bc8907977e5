//! The `Idempotency-Key` header of `POST /orders`: required, 1 to 200 characters. A retry
//! with the same key and body gets the original answer (see `place.rs`).

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use service_runtime::Problem;
use service_runtime::problem::kind;

const HEADER: &str = "idempotency-key";
const MAX_LEN: usize = 200;

/// A present, well-formed Idempotency-Key; a missing or malformed one is a 400.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(pub String);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .headers
            .get(HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|k| !k.is_empty() && k.len() <= MAX_LEN)
            .map(|k| Self(k.to_owned()))
            .ok_or_else(|| {
                Problem::new(
                    StatusCode::BAD_REQUEST,
                    kind::IDEMPOTENCY_KEY,
                    "Idempotency-Key header required",
                )
                .detail("send a unique Idempotency-Key (1 to 200 characters) with every new order")
                .with("field", "Idempotency-Key".into())
            })
    }
}
