//! Admission control: a service under more load than it can carry says so instead of
//! falling over.
//!
//! - **Overload (503 + Retry-After).** While the outbox backlog, the consumer group's lag,
//!   or a queue the service names (order-service: sagas in flight) is past its threshold,
//!   requests that would add work (every method but GET and HEAD) are refused; reads are
//!   still served. Work already accepted keeps flowing, so latency stays bounded for what
//!   was let in. Only requests from callers with a valid token for this API count: the
//!   token is checked first, so a flood of requests the routes will refuse (401, 403)
//!   takes no room from real customers.
//! - **Rate (429 + Retry-After).** Each client gets `RATE_LIMIT_PER_SECOND` requests a
//!   second with bursts of `RATE_LIMIT_BURST` (GCRA, from `governor`). A client is its
//!   token's subject; without a valid token, its address: the peer's, or behind an ingress
//!   that overwrites it, the header `RATE_LIMIT_CLIENT_ADDRESS_HEADER` names (never a
//!   header by default: a client could write any).
//!
//! Health, readiness, metrics and the OpenAPI document are never refused.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use shared_events::EventMetrics;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::auth::{Caller, authenticated};
use crate::problem::Problem;
use crate::problem::kind;

/// How often the outbox backlog and the consumer lag are compared to their thresholds.
const SAMPLE_INTERVAL: Duration = Duration::from_millis(500);
/// What an overloaded service asks a client to wait.
const OVERLOAD_RETRY_AFTER_SECS: u64 = 1;
/// Paths no limit applies to.
const ALWAYS_ADMITTED: [&str; 4] = ["/healthz", "/readyz", "/metrics", "/openapi.json"];

#[derive(Debug, Clone, clap::Args)]
pub struct AdmissionConfig {
    /// Outbox rows not yet published past which requests that add work get 503.
    #[arg(
        long = "overload-outbox-backlog",
        env = "OVERLOAD_OUTBOX_BACKLOG",
        default_value_t = 5_000
    )]
    pub outbox_backlog: u32,
    /// Records the consumer group has not committed past which requests that add work get
    /// 503.
    #[arg(
        long = "overload-consumer-lag",
        env = "OVERLOAD_CONSUMER_LAG",
        default_value_t = 20_000
    )]
    pub consumer_lag: u32,
    /// Requests a second each client may make (0: no limit).
    #[arg(
        long = "rate-limit-per-second",
        env = "RATE_LIMIT_PER_SECOND",
        default_value_t = 0
    )]
    pub rate_per_second: u32,
    /// How many requests a client may make at once before the rate applies.
    #[arg(
        long = "rate-limit-burst",
        env = "RATE_LIMIT_BURST",
        default_value_t = 50
    )]
    pub rate_burst: u32,
    /// The header holding an anonymous client's address, set by a trusted ingress that
    /// overwrites whatever the client sent (e.g. `X-Real-IP`). Unset: the peer address.
    #[arg(
        long = "rate-limit-client-address-header",
        env = "RATE_LIMIT_CLIENT_ADDRESS_HEADER"
    )]
    pub client_address_header: Option<HeaderName>,
}

/// Whom a rate applies to.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
enum Client {
    /// A caller with a valid token: its subject, wherever it connects from.
    Subject(String),
    /// Anyone else: their address.
    Address(IpAddr),
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShedLabels {
    reason: &'static str,
}

/// Counts a queue's items, stopping at `limit`: one checked statement, written beside the
/// queue's other SQL.
pub type CountUpTo = for<'a> fn(&'a PgPool, i64) -> BoxFuture<'a, Result<i64, sqlx::Error>>;

/// A queue of the service's own whose length says it is overloaded.
#[derive(Debug, Clone)]
pub struct OverloadProbe {
    pub name: &'static str,
    pub count_up_to: CountUpTo,
    pub threshold: u32,
}

impl OverloadProbe {
    fn outbox(threshold: u32) -> Self {
        Self {
            name: "outbox backlog",
            count_up_to: shared_events::outbox::count_up_to,
            threshold,
        }
    }

    /// How many more items the queue takes until it is past its threshold (0 or less:
    /// past it already); a failed count says it has room.
    async fn headroom(&self, pool: &PgPool) -> i64 {
        let limit = i64::from(self.threshold) + 1;
        match shared_events::database::bounded((self.count_up_to)(pool, limit)).await {
            Ok(queued) => limit - queued,
            Err(e) => {
                tracing::debug!(probe = self.name, error = %e, "could not measure");
                i64::MAX
            }
        }
    }
}

/// The admission state every request is checked against. Cheap to clone.
///
/// The queues are measured every half second, which at a high offered rate lets hundreds of
/// requests through between two readings; so each reading leaves a headroom (the smallest
/// room any queue has), and a request that adds work is admitted only while fewer than
/// that many have been admitted since the reading.
#[derive(Clone)]
pub struct Admission {
    headroom: Arc<AtomicI64>,
    admitted_since_reading: Arc<AtomicI64>,
    limiter: Option<Arc<DefaultKeyedRateLimiter<Client>>>,
    client_address_header: Option<HeaderName>,
    shed: Family<ShedLabels, Counter>,
}

impl Admission {
    pub fn new(config: &AdmissionConfig, registry: &mut Registry) -> Self {
        let limiter = NonZeroU32::new(config.rate_per_second).map(|rate| {
            let burst = NonZeroU32::new(config.rate_burst).unwrap_or(rate);
            Arc::new(RateLimiter::keyed(
                Quota::per_second(rate).allow_burst(burst),
            ))
        });
        let shed = Family::default();
        registry.sub_registry_with_prefix("orderflow").register(
            "http_requests_shed",
            "Requests refused by admission control, by reason (overloaded, rate_limited)",
            shed.clone(),
        );
        Self {
            headroom: Arc::new(AtomicI64::new(i64::MAX)),
            admitted_since_reading: Arc::new(AtomicI64::new(0)),
            limiter,
            client_address_header: config.client_address_header.clone(),
            shed,
        }
    }

    /// Whom `request`'s rate counts against.
    fn client(&self, request: &Request, caller: Option<&Caller>) -> Option<Client> {
        if let Some(caller) = caller {
            return Some(Client::Subject(caller.subject().to_owned()));
        }
        let address = match &self.client_address_header {
            Some(name) => request
                .headers()
                .get(name)
                .and_then(|value| value.to_str().ok()?.trim().parse().ok()),
            None => request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(peer)| peer.ip()),
        };
        address.map(Client::Address)
    }

    /// Compares the outbox backlog, the consumer lag and `probes` to their thresholds
    /// every half second until shutdown; also forgets clients idle long enough to be at
    /// full burst again.
    pub async fn watch(
        self,
        pool: PgPool,
        metrics: EventMetrics,
        config: AdmissionConfig,
        probes: Vec<OverloadProbe>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let probes: Vec<OverloadProbe> =
            std::iter::once(OverloadProbe::outbox(config.outbox_backlog))
                .chain(probes)
                .collect();
        let mut ticks = tokio::time::interval(SAMPLE_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                _ = ticks.tick() => {}
            }
            let mut tightest = (
                "consumer lag",
                i64::from(config.consumer_lag) + 1 - metrics.consumer_lag.get(),
            );
            for probe in &probes {
                let headroom = probe.headroom(&pool).await;
                if headroom < tightest.1 {
                    tightest = (probe.name, headroom);
                }
            }
            let was_overloaded = self.headroom.load(Ordering::Relaxed) <= 0;
            self.headroom.store(tightest.1, Ordering::Relaxed);
            self.admitted_since_reading.store(0, Ordering::Relaxed);
            let overloaded = tightest.1 <= 0;
            if overloaded != was_overloaded {
                if overloaded {
                    tracing::warn!(queue = tightest.0, "overloaded: refusing new work with 503");
                } else {
                    tracing::info!("no longer overloaded: accepting new work");
                }
            }
            if let Some(limiter) = &self.limiter {
                limiter.retain_recent();
            }
        }
    }
}

/// The middleware: checks the request's token (kept for the route), then refuses the
/// request with 429 or 503 (problem+json, Retry-After) when admission says so.
pub async fn admit(State(admission): State<Admission>, request: Request, next: Next) -> Response {
    if ALWAYS_ADMITTED.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let (mut parts, body) = request.into_parts();
    let caller = authenticated(&mut parts)
        .await
        .ok()
        .filter(Caller::may_use_the_api);
    let request = Request::from_parts(parts, body);
    if let Some(limiter) = &admission.limiter
        && let Some(client) = admission.client(&request, caller.as_ref())
        && let Err(not_until) = limiter.check_key(&client)
    {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        admission
            .shed
            .get_or_create(&ShedLabels {
                reason: "rate_limited",
            })
            .inc();
        return refuse(
            Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                kind::RATE_LIMITED,
                "Too many requests",
            )
            .detail("this client is over its request rate; retry after the given delay"),
            wait.as_secs() + 1,
        );
    }
    // A request without a valid token for this API will be refused by its route: it takes
    // no room.
    let adds_work = !matches!(*request.method(), Method::GET | Method::HEAD) && caller.is_some();
    if adds_work
        && admission
            .admitted_since_reading
            .fetch_add(1, Ordering::Relaxed)
            >= admission.headroom.load(Ordering::Relaxed)
    {
        admission
            .shed
            .get_or_create(&ShedLabels {
                reason: "overloaded",
            })
            .inc();
        return refuse(
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                kind::OVERLOADED,
                "Overloaded",
            )
            .detail("the service is behind on its work and takes no more for now; retry later"),
            OVERLOAD_RETRY_AFTER_SECS,
        );
    }
    next.run(request).await
}

/// Documents what admission control may answer on every operation of `doc`: 429 anywhere,
/// 503 where a request adds work.
pub fn document(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, HttpMethod, ResponseBuilder};
    let problem = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .header(
                "Retry-After",
                utoipa::openapi::HeaderBuilder::new()
                    .description(Some("Seconds to wait"))
                    .build(),
            )
            .content(crate::problem::CONTENT_TYPE, ContentBuilder::new().build())
            .build()
    };
    for (path, item) in doc.paths.paths.iter_mut() {
        if ALWAYS_ADMITTED.contains(&path.as_str()) {
            continue;
        }
        for (method, operation) in [
            (HttpMethod::Get, item.get.as_mut()),
            (HttpMethod::Put, item.put.as_mut()),
            (HttpMethod::Post, item.post.as_mut()),
            (HttpMethod::Delete, item.delete.as_mut()),
            (HttpMethod::Patch, item.patch.as_mut()),
        ] {
            let Some(operation) = operation else { continue };
            let responses = &mut operation.responses.responses;
            responses.insert(
                "429".to_owned(),
                problem("This client is over its request rate").into(),
            );
            if !matches!(method, HttpMethod::Get) {
                responses.insert(
                    "503".to_owned(),
                    problem("Overloaded: the service takes no new work for now").into(),
                );
            }
        }
    }
}

fn refuse(problem: Problem, retry_after_secs: u64) -> Response {
    let mut response = problem.into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
    response
}
