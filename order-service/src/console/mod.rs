//! The web console at `/console`: recent orders updating live, an order's saga timeline
//! across the four services with its compensations marked, a form that places an order and
//! a button that cancels one, the last minute's outcomes, and what needs an operator's
//! attention (stuck sagas, dead letters) with the actions that fix it.
//!
//! The page is plain HTML, CSS and JavaScript compiled into the binary: nothing to build or
//! install. It calls the same REST API as any client, with the bearer token the operator
//! gives it, and follows `GET /orders/live`, a stream of server-sent events for admins.

mod feed;
mod live;

use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header;
use axum::response::IntoResponse;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::routing::get;
use futures::{Stream, StreamExt};
use service_runtime::problem::kind;
use service_runtime::{Admin, Problem};
use tokio::sync::broadcast::error::RecvError;

pub use feed::Counters;
use live::STREAMS_PER_SUBJECT;
pub use live::{FeedSource, LiveOrders, LiveUpdate};

pub fn routes(live: Arc<LiveOrders>) -> Router {
    Router::new()
        .route(
            "/console",
            get(|| asset("text/html", include_str!("assets/index.html"))),
        )
        .route(
            "/console/app.js",
            get(|| asset("text/javascript", include_str!("assets/app.js"))),
        )
        .route(
            "/console/attention.js",
            get(|| asset("text/javascript", include_str!("assets/attention.js"))),
        )
        .route(
            "/console/style.css",
            get(|| asset("text/css", include_str!("assets/style.css"))),
        )
        .route("/orders/live", get(live_orders))
        .with_state(live)
}

/// What the console may do: load its own assets and call its own origin, nothing else; never
/// be framed (it acts with an operator's token, so a page that framed it could click for
/// them); no `<base>` or form posts elsewhere.
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

async fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (
                header::CONTENT_TYPE,
                format!("{content_type}; charset=utf-8"),
            ),
            // The page is small and changes with the binary: always revalidate.
            (header::CACHE_CONTROL, "no-cache".to_owned()),
            (
                header::CONTENT_SECURITY_POLICY,
                CONTENT_SECURITY_POLICY.to_owned(),
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
        ],
        body,
    )
}

/// `GET /orders/live` (admin): server-sent events named `order` (an order as `GET
/// /orders/{id}` shows it, each time it changes), `counters` (every second) and `resync`
/// (this stream fell behind and skipped updates: reload the list). Not in the OpenAPI
/// document, whose clients (and fuzzer) expect responses that end.
async fn live_orders(
    Admin(operator): Admin,
    State(live): State<Arc<LiveOrders>>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, Problem> {
    let Some((updates, slot)) = live.subscribe(operator.subject()) else {
        return Err(Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            kind::RATE_LIMITED,
            "Too many live streams",
        )
        .detail(format!(
            "{} already has {STREAMS_PER_SUBJECT} live streams open; close one",
            operator.subject()
        )));
    };
    let closed = live.closed();
    // The stream ends when the token does: a revoked operator's console must not go on
    // receiving orders. The console reconnects with a fresh token.
    let expires_in = operator
        .expires_at()
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    let events = futures::stream::unfold((updates, slot), |(mut updates, slot)| async move {
        let event = match updates.recv().await {
            Ok(update) => SseEvent::default()
                .event(update.name())
                .json_data(&*update)
                .unwrap_or_else(|_| SseEvent::default().event("resync")),
            Err(RecvError::Lagged(skipped)) => SseEvent::default()
                .event("resync")
                .data(skipped.to_string()),
            Err(RecvError::Closed) => return None,
        };
        Some((Ok(event), (updates, slot)))
    })
    .take_until(async move { closed.cancelled_owned().await })
    .take_until(tokio::time::sleep(expires_in));
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}
