//! The saga's SQL without Kafka: what PostgreSQL alone allows. Orders are placed through
//! order-service's own router (in-process, no socket); each service's own handler applies
//! events through the consumer runner's own [`Applier`] (the same transactions, dedup rows
//! and outbox inserts); each outbox is read in id order and emptied in bulk, as the relay
//! does; and where Kafka would carry a record to its consumers, an in-memory channel does.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::{Extension, Router};
use serde::Serialize;
use serde_json::json;
use service_runtime::auth::{AuthConfig, Authenticator};
use shared_events::consumer::batch::{Applier, Mode, Pending, Verdict};
use shared_events::consumer::gate::TopicPartition;
use shared_events::contracts::Event;
use shared_events::{EventHandler, Outbox, RegistryCodec};
use sqlx::PgPool;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::pgstats::PgCounters;
use crate::plumbing::wait_for;
use crate::scratch::Scratch;

const PRODUCTS: usize = 20;
const CUSTOMERS: usize = 50;

#[derive(Debug, Clone, Serialize)]
pub struct ReplayFigures {
    pub orders: usize,
    pub orders_per_second: f64,
    pub per_order: PgCounters,
}

/// One service in the replay: its database, outbox and consumer.
struct Service {
    pool: PgPool,
    outbox: Outbox,
    /// Woken whenever something committed rows to the outbox (the relay's in-process
    /// wake-up is the plumbing's own).
    committed: Arc<Notify>,
    inbox: mpsc::UnboundedSender<Event>,
    takes: &'static [&'static str],
}

/// Places `orders` orders (all meant to complete), `concurrency` at a time, and returns how
/// fast they reached a terminal state.
pub async fn run(
    scratch: &mut Scratch,
    orders: usize,
    concurrency: usize,
) -> anyhow::Result<ReplayFigures> {
    let (_, names, codec) = scratch.topics("replay", scratch.stack.partitions).await?;
    let stop = CancellationToken::new();
    let terminal = Arc::new(AtomicU64::new(0));
    let mut services = Vec::new();
    let mut tasks = Vec::new();
    macro_rules! service {
        ($name:literal, $migrations:expr, $handler:expr) => {{
            let url = scratch.database($name, Some(&$migrations)).await?;
            let pool = Scratch::pool(&url, 10).await?;
            let outbox = Outbox::new(codec.clone(), names.clone());
            let handler = $handler;
            let takes = event_types(&handler);
            let (inbox, events) = mpsc::unbounded_channel();
            let applier = Applier::new(pool.clone(), $name.to_owned(), handler, outbox.clone());
            let committed = Arc::new(Notify::new());
            tasks.push(tokio::spawn(consume(
                applier,
                events,
                committed.clone(),
                stop.clone(),
            )));
            services.push(Service {
                pool,
                outbox,
                committed,
                inbox,
                takes,
            });
        }};
    }
    service!(
        "order-service",
        order_service::MIGRATIONS,
        order_service::handler::OrderHandler {
            metrics: order_service::metrics::OrderMetrics::default(),
        }
    );
    service!(
        "billing-service",
        billing_service::MIGRATIONS,
        billing_service::handler::BillingHandler
    );
    service!(
        "inventory-service",
        inventory_service::MIGRATIONS,
        inventory_service::handler::InventoryHandler
    );
    service!(
        "shipping-service",
        shipping_service::MIGRATIONS,
        shipping_service::handler::ShippingHandler {
            carriers: shipping_service::domain::Carriers {
                destinations: vec!["DE".to_owned()],
            },
        }
    );
    let services = Arc::new(services);
    for index in 0..services.len() {
        let relay = relay(
            services.clone(),
            index,
            codec.clone(),
            terminal.clone(),
            stop.clone(),
        );
        tasks.push(tokio::spawn(relay));
    }
    let auth = Auth::from_issuer(&scratch.stack.issuer_url).await?;
    let order_api = auth.guard(order_service::http::routes(order_service::http::ApiState {
        pool: services[0].pool.clone(),
        outbox: services[0].outbox.clone(),
        saga_timeout: Duration::from_secs(3600),
    }));
    seed(&services, &auth).await?;
    let databases: Vec<String> = services.iter().map(|s| database_name(&s.pool)).collect();
    let before = PgCounters::read(&scratch.stack.postgres, &databases).await?;
    let started = Instant::now();
    place(
        &order_api,
        &auth,
        &services[0].committed,
        orders,
        concurrency,
    )
    .await?;
    wait_for("every replayed order to finish", || async {
        terminal.load(Ordering::SeqCst) >= orders as u64
    })
    .await?;
    let elapsed = started.elapsed();
    stop.cancel();
    for task in tasks {
        task.await??;
    }
    for service in services.iter() {
        service.pool.close().await;
    }
    // Closed connections have published their commit counts.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = PgCounters::read(&scratch.stack.postgres, &databases).await?;
    Ok(ReplayFigures {
        orders,
        orders_per_second: orders as f64 / elapsed.as_secs_f64(),
        per_order: after.since(&before).per(orders),
    })
}

fn event_types<H: EventHandler>(_: &H) -> &'static [&'static str] {
    H::EVENT_TYPES
}

fn database_name(pool: &PgPool) -> String {
    pool.connect_options()
        .get_database()
        .unwrap_or_default()
        .to_owned()
}

/// A service's consumer: takes what its inbox holds, up to the runner's batch size, and
/// applies it as the runner would.
async fn consume<H: EventHandler>(
    applier: Applier<H>,
    mut inbox: mpsc::UnboundedReceiver<Event>,
    committed: Arc<Notify>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let partition = TopicPartition::new("replay", 0);
    let mut offset = 0;
    let limit = shared_events::ConsumerConfig::default().batch_max_records;
    loop {
        let first = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            event = inbox.recv() => match event {
                Some(event) => event,
                None => return Ok(()),
            },
        };
        let mut batch = vec![first];
        while batch.len() < limit {
            match inbox.try_recv() {
                Ok(event) => batch.push(event),
                Err(_) => break,
            }
        }
        let pending: Vec<Pending> = batch
            .into_iter()
            .map(|event| {
                offset += 1;
                Pending {
                    partition: partition.clone(),
                    offset,
                    event,
                    span: tracing::Span::none(),
                    releases_only: false,
                }
            })
            .collect();
        let applied = applier.apply(&pending, Mode::Together).await?;
        committed.notify_one();
        if let Some(bad) = applied
            .verdicts
            .iter()
            .find(|v| !matches!(v, Verdict::Applied | Verdict::Duplicate))
        {
            bail!("the replay must apply every event, but one came to {bad:?}");
        }
    }
}

/// A service's relay: reads its outbox with the relay's query, deletes what it read, and
/// hands each event to the services that take its type. Counts the orders' outcomes.
async fn relay(
    services: Arc<Vec<Service>>,
    index: usize,
    codec: RegistryCodec,
    terminal: Arc<AtomicU64>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let pool = &services[index].pool;
    while !stop.is_cancelled() {
        // What was read is deleted before the next read, so reading from the start finds
        // only new rows, including any that committed after a higher id.
        let rows: Vec<(i64, Vec<u8>)> =
            sqlx::query_as("SELECT id, payload FROM outbox ORDER BY id LIMIT 1000")
                .fetch_all(pool)
                .await?;
        if rows.is_empty() {
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                () = services[index].committed.notified() => {}
            }
            continue;
        }
        let ids: Vec<i64> = rows.iter().map(|(id, _)| *id).collect();
        for (_, payload) in rows {
            let event = codec.decode(Some(&payload)).await?;
            if matches!(event.event_type(), "OrderCompleted" | "OrderCancelled") {
                terminal.fetch_add(1, Ordering::SeqCst);
            }
            for service in services
                .iter()
                .filter(|s| s.takes.contains(&event.event_type()))
            {
                let _ = service.inbox.send(event.clone());
            }
        }
        sqlx::query("DELETE FROM outbox WHERE id = ANY($1)")
            .bind(ids)
            .execute(pool)
            .await?;
    }
    Ok(())
}

/// The replay calls the services' routers in-process, so it checks tokens as the services
/// do (the JWT check is part of a request's cost): against the stack's dev token issuer,
/// with an operator's token.
#[derive(Clone)]
struct Auth {
    authenticator: Arc<Authenticator>,
    bearer: String,
}

impl Auth {
    async fn from_issuer(issuer_url: &str) -> anyhow::Result<Self> {
        let authenticator = Authenticator::new(&AuthConfig::new(
            format!("{issuer_url}/.well-known/jwks.json"),
            issuer_url,
        ))?;
        let answer: serde_json::Value = reqwest::Client::new()
            .post(format!("{issuer_url}/token"))
            .json(&json!({"sub": "bench-operator", "scope": "orders", "roles": [service_runtime::auth::DEFAULT_ADMIN_ROLE]}))
            .send()
            .await
            .context("asking the dev token issuer for a token (scripts/stack-up starts it)")?
            .error_for_status()?
            .json()
            .await?;
        let token = answer["access_token"]
            .as_str()
            .context("the issuer's answer has no access_token")?;
        Ok(Self {
            authenticator: Arc::new(authenticator),
            bearer: format!("Bearer {token}"),
        })
    }

    /// `router` checking tokens as a running service does.
    fn guard(&self, router: Router) -> Router {
        router.layer(Extension(self.authenticator.clone()))
    }
}

/// Products and accounts through the services' own routes; waits until order-service's
/// catalog copy knows every product.
async fn seed(services: &[Service], auth: &Auth) -> anyhow::Result<()> {
    let inventory = auth.guard(inventory_service::http::routes(
        services[2].pool.clone(),
        services[2].outbox.clone(),
    ));
    let billing = auth.guard(billing_service::http::routes(services[1].pool.clone()));
    for i in 0..PRODUCTS {
        let body = json!({"name": format!("p{i}"), "unit_price_minor": 100 + 25 * i as i64,
                          "currency": "EUR", "available": 2_000_000_000});
        send(
            &inventory,
            auth,
            Method::PUT,
            &format!("/products/p{i}"),
            &body,
            None,
        )
        .await?;
        services[2].committed.notify_one();
    }
    for i in 0..CUSTOMERS {
        let body = json!({"currency": "EUR", "credit_limit_minor": 0, "balance_minor": 1_000_000_000_000i64});
        send(
            &billing,
            auth,
            Method::PUT,
            &format!("/accounts/c{i}"),
            &body,
            None,
        )
        .await?;
    }
    let orders = &services[0].pool;
    wait_for("order-service to know the catalog", || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM catalog")
            .fetch_one(orders)
            .await
            .is_ok_and(|n| n as usize == PRODUCTS)
    })
    .await
}

/// `POST /orders`, `concurrency` at a time, until `orders` were accepted.
async fn place(
    api: &Router,
    auth: &Auth,
    committed: &Arc<Notify>,
    orders: usize,
    concurrency: usize,
) -> anyhow::Result<()> {
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (api, next, committed) = (api.clone(), next.clone(), committed.clone());
        let auth = auth.clone();
        workers.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::SeqCst) as usize;
                if n >= orders {
                    return anyhow::Ok(());
                }
                let lines: Vec<_> = (0..1 + n % 3)
                    .map(|l| json!({"product_id": format!("p{}", (n + l * 7) % PRODUCTS), "quantity": 1 + n % 2}))
                    .collect();
                let body = json!({
                    "customer_id": format!("c{}", n % CUSTOMERS), "currency": "EUR", "items": lines,
                    "shipping_address": {"recipient": "Replay", "line1": "1 Replay Street",
                                         "city": "Berlin", "postal_code": "10115", "country": "DE"},
                });
                let key = uuid::Uuid::new_v4().to_string();
                send(&api, &auth, Method::POST, "/orders", &body, Some(&key)).await?;
                committed.notify_one();
            }
        }));
    }
    for worker in workers {
        worker.await??;
    }
    Ok(())
}

async fn send(
    router: &Router,
    auth: &Auth,
    method: Method,
    uri: &str,
    body: &serde_json::Value,
    idempotency_key: Option<&str>,
) -> anyhow::Result<()> {
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .header("authorization", &auth.bearer);
    if let Some(key) = idempotency_key {
        request = request.header("idempotency-key", key);
    }
    let response = router
        .clone()
        .oneshot(request.body(Body::from(serde_json::to_vec(body)?))?)
        .await
        .context("calling a service's router")?;
    let status = response.status();
    if !matches!(
        status,
        StatusCode::OK | StatusCode::CREATED | StatusCode::ACCEPTED
    ) {
        bail!("{uri}: {status}");
    }
    Ok(())
}
