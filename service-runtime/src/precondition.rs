//! Optimistic concurrency for clients that read, change and write back (RFC 9110 13.1.1):
//! reads answer with an `ETag`, a write with `If-Match` applies only to the version it
//! names, else 412. Without `If-Match` a write is unconditional (last writer wins).
//!
//! The version is the row's `xmin` as text: every UPDATE of a row (a reservation, a charge)
//! writes a new version with a new `xmin`, so a write based on a stale read is refused
//! instead of overwriting what happened since.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::problem::Problem;
use crate::problem::kind;

/// The `If-Match` header of a request, if it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfMatch {
    /// No header: the write is unconditional.
    Absent,
    /// `*`: the resource must exist.
    Any,
    /// The version the client read (an `ETag` without its quotes).
    Version(String),
}

impl IfMatch {
    /// The version the stored row must have, if one is named.
    pub fn version(&self) -> Option<&str> {
        match self {
            IfMatch::Version(version) => Some(version),
            IfMatch::Absent | IfMatch::Any => None,
        }
    }

    /// Whether the write may create the resource (a precondition presumes it exists).
    pub fn allows_creation(&self) -> bool {
        *self == IfMatch::Absent
    }

    fn parse(value: &str) -> Option<Self> {
        let value = value.trim();
        if value == "*" {
            return Some(IfMatch::Any);
        }
        // One strong tag; a weak one (W/"...") never matches under If-Match.
        let version = value.strip_prefix('"')?.strip_suffix('"')?;
        (!version.is_empty() && !version.contains('"'))
            .then(|| IfMatch::Version(version.to_owned()))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(header::IF_MATCH) else {
            return Ok(IfMatch::Absent);
        };
        value.to_str().ok().and_then(IfMatch::parse).ok_or_else(|| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                kind::BAD_PRECONDITION,
                "Malformed If-Match",
            )
            .detail("If-Match takes * or one strong entity tag, e.g. \"1234\"")
        })
    }
}

/// The `ETag` header value of `version`.
pub fn etag(version: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).expect("a row version is ASCII digits")
}

/// `body` as JSON with `status`, tagged with the `ETag` of `version`.
pub fn tagged(status: StatusCode, version: &str, body: impl serde::Serialize) -> Response {
    (status, [(header::ETAG, etag(version))], axum::Json(body)).into_response()
}

/// 412: the resource changed since the client read it (or does not exist).
pub fn precondition_failed(what: &str) -> Problem {
    Problem::new(
        StatusCode::PRECONDITION_FAILED,
        kind::PRECONDITION_FAILED,
        "Precondition failed",
    )
    .detail(format!(
        "{what} is not at the version If-Match names: read it again and reapply the change"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_takes_a_star_or_one_strong_tag() {
        assert_eq!(IfMatch::parse("*"), Some(IfMatch::Any));
        assert_eq!(
            IfMatch::parse("\"1234\""),
            Some(IfMatch::Version("1234".into()))
        );
        assert_eq!(IfMatch::parse("W/\"1234\""), None);
        assert_eq!(IfMatch::parse("1234"), None);
        assert_eq!(IfMatch::parse("\"\""), None);
    }
}
