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

/// Every problem type the services answer with, listed once: what a client matches on
/// (`type` of the problem document). The first group is every service's; the second,
/// order-service's.
pub mod kind {
    /// 422: the request breaks a rule; `errors` names each field.
    pub const VALIDATION: &str = "/problems/validation";
    /// 404: no such resource.
    pub const NOT_FOUND: &str = "/problems/not-found";
    /// 500: a fault of the service; the cause is logged, never sent.
    pub const INTERNAL: &str = "/problems/internal";
    /// 503: the database did not answer; retry after `Retry-After`.
    pub const DATABASE_UNAVAILABLE: &str = "/problems/database-unavailable";
    /// 415: the body is not `application/json`.
    pub const UNSUPPORTED_MEDIA_TYPE: &str = "/problems/unsupported-media-type";
    /// 413: the body is over the limit.
    pub const PAYLOAD_TOO_LARGE: &str = "/problems/payload-too-large";
    /// 400: the body could not be read.
    pub const UNREADABLE_BODY: &str = "/problems/unreadable-body";
    /// 400: the body is not JSON.
    pub const MALFORMED_JSON: &str = "/problems/malformed-json";
    /// 400: the URL's path or query cannot be read (or holds an encoded NUL).
    pub const INVALID_PATH: &str = "/problems/invalid-path";
    /// 400: an `If-Match` that is not an entity tag.
    pub const BAD_PRECONDITION: &str = "/problems/bad-precondition";
    /// 412: `If-Match` names a version that is no longer current.
    pub const PRECONDITION_FAILED: &str = "/problems/precondition-failed";
    /// 503: the service is not ready (`/readyz`).
    pub const NOT_READY: &str = "/problems/not-ready";
    /// 403: the token lacks the scope or role the route needs.
    pub const INSUFFICIENT_SCOPE: &str = "/problems/insufficient-scope";
    /// 503: the identity provider's keys could not be fetched.
    pub const IDENTITY_PROVIDER_UNAVAILABLE: &str = "/problems/identity-provider-unavailable";
    /// 401: no valid bearer token.
    pub const UNAUTHORIZED: &str = "/problems/unauthorized";
    /// 429: the caller's share of admission is spent.
    pub const RATE_LIMITED: &str = "/problems/rate-limited";
    /// 503: the service sheds load (its backlog is over the bound).
    pub const OVERLOADED: &str = "/problems/overloaded";
    /// 421: the request names a host the service does not answer to.
    pub const UNKNOWN_HOST: &str = "/problems/unknown-host";

    /// 400: a missing or malformed `Idempotency-Key`.
    pub const IDEMPOTENCY_KEY: &str = "/problems/idempotency-key";
    /// 422: an `Idempotency-Key` used before with another body.
    pub const IDEMPOTENCY_KEY_REUSED: &str = "/problems/idempotency-key-reused";
    /// 403: an order for another customer than the token's.
    pub const NOT_YOUR_CUSTOMER_ID: &str = "/problems/not-your-customer-id";
    /// 409: the order has shipped.
    pub const ORDER_SHIPPED: &str = "/problems/order-shipped";
    /// 409: the order is cancelled.
    pub const ORDER_CANCELLED: &str = "/problems/order-cancelled";
    /// 409: the order is completed or cancelled.
    pub const ORDER_OVER: &str = "/problems/order-over";
    /// 409: the order is being cancelled.
    pub const ORDER_CANCELLING: &str = "/problems/order-cancelling";
    /// 409: the order has no dead letters to redrive.
    pub const NO_DEAD_LETTERS: &str = "/problems/no-dead-letters";
    /// 409: the dead letters a redrive names were redriven before.
    pub const ALREADY_REDRIVEN: &str = "/problems/already-redriven";
    /// 409: every dead letter an acknowledgement covers was acknowledged before.
    pub const ALREADY_ACKNOWLEDGED: &str = "/problems/already-acknowledged";
    /// 409: the order's dead letters left are records that failed again after a redrive.
    pub const FAILED_AGAIN: &str = "/problems/failed-again-after-redrive";
    /// 409: the order's history does not read back.
    pub const UNREADABLE_HISTORY: &str = "/problems/unreadable-history";
    /// 409: the event to republish is still in the outbox.
    pub const EVENT_STILL_QUEUED: &str = "/problems/event-still-queued";
    /// 503: the broker did not answer in time.
    pub const BROKER_UNAVAILABLE: &str = "/problems/broker-unavailable";
}

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
            kind::VALIDATION,
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
        Self::new(StatusCode::NOT_FOUND, kind::NOT_FOUND, "Not found").detail(what)
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            kind::INTERNAL,
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
                kind::DATABASE_UNAVAILABLE,
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
    for (depth, link) in shared_events::error_chain(error).enumerate() {
        if depth == 0 {
            write!(f, "{link}")?;
        } else {
            write!(f, "\n  caused by: {link}")?;
        }
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
            self.add(field, message);
        }
    }

    /// Records `message` against `field`.
    pub fn add(&mut self, field: &str, message: impl Into<String>) {
        self.0
            .push(json!({"field": field, "message": message.into()}));
    }

    /// The parsed value, or `None` with the parse's error recorded against `field`.
    pub fn parse<T, E: std::fmt::Display>(
        &mut self,
        field: &str,
        parsed: Result<T, E>,
    ) -> Option<T> {
        match parsed {
            Ok(value) => Some(value),
            Err(e) => {
                self.add(field, e.to_string());
                None
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The fields with a broken rule, in the order they were recorded.
    pub fn fields(&self) -> Vec<String> {
        self.0
            .iter()
            .filter_map(|error| error["field"].as_str().map(str::to_owned))
            .collect()
    }

    pub fn into_result(self) -> Result<(), Problem> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self.into())
        }
    }
}

/// One 422 listing every broken rule.
impl From<FieldErrors> for Problem {
    fn from(errors: FieldErrors) -> Self {
        Problem::validation(errors.0)
    }
}
