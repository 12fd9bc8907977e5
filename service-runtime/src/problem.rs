//! RFC 9457 problem details (`application/problem+json`), the one error body every service
//! answers with. Internal error text never leaves the process: a 5xx keeps its cause, and
//! the response logs the cause's whole chain, once, as it leaves.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

pub const CONTENT_TYPE: &str = "application/problem+json";

#[derive(Debug, Clone)]
pub struct Problem {
    /// Stable identifier of the kind of problem, e.g. `/problems/validation`.
    pub kind: &'static str,
    pub title: &'static str,
    pub status: StatusCode,
    pub detail: Option<String>,
    /// Extra members, e.g. `{"errors": [{"field": "items[0].quantity", ...}]}`.
    pub extensions: serde_json::Map<String, Value>,
    /// What went wrong inside, for the log; never sent.
    pub cause: Option<Arc<dyn StdError + Send + Sync>>,
    /// Sent as `Retry-After`: when a retry may succeed.
    pub retry_after_secs: Option<u64>,
}

impl Problem {
    pub fn new(status: StatusCode, kind: &'static str, title: &'static str) -> Self {
        Self {
            kind,
            title,
            status,
            detail: None,
            extensions: serde_json::Map::new(),
            cause: None,
            retry_after_secs: None,
        }
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn with(mut self, key: &str, value: Value) -> Self {
        self.extensions.insert(key.to_owned(), value);
        self
    }

    /// 422 with one entry per broken rule: `errors: [{field, message}]`.
    pub fn validation(errors: impl serde::Serialize) -> Self {
        let errors = serde_json::to_value(errors).unwrap_or(Value::Null);
        let detail = errors
            .as_array()
            .map(|list| {
                list.iter()
                    .map(|e| {
                        format!(
                            "{}: {}",
                            e["field"].as_str().unwrap_or(""),
                            e["message"].as_str().unwrap_or("")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default();
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "/problems/validation",
            "The request is invalid",
        )
        .detail(detail)
        .with("errors", errors)
    }

    /// 422 for one broken rule.
    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        Self::validation([json!({"field": field, "message": message.into()})])
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "/problems/not-found", "Not found").detail(what)
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "/problems/internal",
            "Internal error",
        )
    }

    /// A 500 caused by `error`, which the response logs and the client never sees.
    pub fn internal_caused_by(error: impl StdError + Send + Sync + 'static) -> Self {
        Self {
            cause: Some(Arc::new(error)),
            ..Self::internal()
        }
    }
}

/// A database failure is the server's problem: a bare 500 for the client; but while the
/// database cannot be reached, a 503 with `Retry-After`, so that clients (and load
/// balancers) know a retry will do once it is back. Nothing was written either way: the
/// request's transaction never committed.
impl From<sqlx::Error> for Problem {
    fn from(error: sqlx::Error) -> Self {
        if database_unreachable(&error) {
            Self::database_unavailable(error)
        } else {
            Self::internal_caused_by(error)
        }
    }
}

/// An event-plumbing failure (registry unreachable, say) while appending to the outbox.
impl From<shared_events::Error> for Problem {
    fn from(error: shared_events::Error) -> Self {
        match error {
            shared_events::Error::Database(database) => database.into(),
            other => Self::internal_caused_by(other),
        }
    }
}

impl Problem {
    /// A 503 for a database that cannot be reached now, logged with its cause.
    pub fn database_unavailable(error: impl StdError + Send + Sync + 'static) -> Self {
        Self {
            cause: Some(Arc::new(error)),
            retry_after_secs: Some(DATABASE_RETRY_AFTER_SECS),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "/problems/database-unavailable",
                "The database cannot be reached right now",
            )
            .detail("nothing was written; try again shortly")
        }
    }
}

/// What a client is asked to wait while the database is away.
const DATABASE_RETRY_AFTER_SECS: u64 = 1;

/// Whether `error` says the database cannot be reached (not that a statement failed): no
/// connection to be had (refused, reset, the pool's wait ran out), or the server ending the
/// session because it is shutting down or not yet up (SQLSTATE class 08, 57P01-57P03).
pub fn database_unreachable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => true,
        sqlx::Error::Database(database) => database.code().is_some_and(|code| {
            code.starts_with("08") || ["57P01", "57P02", "57P03"].contains(&code.as_ref())
        }),
        _ => false,
    }
}

/// Writes `error` and every error that caused it, one per line (zero2prod's
/// `error_chain_fmt`): for `Debug` impls and logs that should show the whole story once.
pub fn error_chain_fmt(error: &dyn StdError, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    write!(f, "{error}")?;
    let mut cause = error.source();
    while let Some(source) = cause {
        write!(f, "\n  caused by: {source}")?;
        cause = source.source();
    }
    Ok(())
}

/// Displays an error with its chain of causes ([`error_chain_fmt`]).
pub struct ErrorChain<'a>(pub &'a (dyn StdError + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        error_chain_fmt(self.0, f)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        if let Some(cause) = &self.cause {
            // The edge: the one place an internal failure is logged, with all its causes.
            tracing::error!(status = self.status.as_u16(), error = %ErrorChain(cause.as_ref()), "request failed");
        }
        let mut body = json!({
            "type": self.kind,
            "title": self.title,
            "status": self.status.as_u16(),
        });
        if let Some(detail) = self.detail {
            body["detail"] = Value::String(detail);
        }
        if let Value::Object(map) = &mut body {
            map.extend(self.extensions);
        }
        let mut response = (self.status, body.to_string()).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        if let Some(seconds) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// Collects broken rules of a request; [`FieldErrors::into_result`] turns them into one 422.
#[derive(Debug, Default)]
pub struct FieldErrors(Vec<Value>);

impl FieldErrors {
    /// Records `message` against `field` unless `ok`.
    pub fn check(&mut self, ok: bool, field: &str, message: impl Into<String>) {
        if !ok {
            self.0
                .push(json!({"field": field, "message": message.into()}));
        }
    }

    pub fn into_result(self) -> Result<(), Problem> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Problem::validation(self.0))
        }
    }
}
