//! `orderflow-admin load`: a black-box load generator. It places orders over REST, closed loop
//! (N orders, C at a time) or open loop (R orders/s for S seconds, whether or not the system
//! keeps up), in a mix of intended outcomes, learns each order's outcome from its terminal
//! event on the `orders` topic, and reports orders/s to a terminal state and latency.

mod mix;
mod report;
mod seed;
mod watch;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::bail;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::StatusCode;
use serde_json::Value;
use shared_events::{KafkaConfig, RegistryCodec, RegistryConfig, TopicNames};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::urls::ServiceUrls;
use mix::{Intent, Mix};
use report::{Offered, Recorder, Trend};
use seed::Seeded;
use watch::{Terminal, TerminalWatcher};

#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    #[command(flatten)]
    urls: ServiceUrls,
    #[command(flatten)]
    registry: RegistryConfig,
    /// Closed loop: place this many orders, `--concurrency` at a time, each worker waiting
    /// for its order's outcome before placing the next.
    #[arg(long, conflicts_with_all = ["rate", "duration"], required_unless_present = "rate")]
    orders: Option<u64>,
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Open loop: offer this many orders per second, whether or not the system keeps up.
    #[arg(long, requires = "duration")]
    rate: Option<f64>,
    /// Open loop: for this many seconds.
    #[arg(long)]
    duration: Option<f64>,
    /// Intended outcomes, in percent.
    #[arg(
        long,
        default_value = "completed=85,declined=5,out-of-stock=5,cancelled=5"
    )]
    mix: Mix,
    /// How long to wait for the last orders' outcomes once every order is placed.
    #[arg(long, default_value_t = 120)]
    drain_timeout_secs: u64,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// A placed order waiting for its outcome.
struct Pending {
    intent: Intent,
    sent_ms: i64,
    done: Option<oneshot::Sender<()>>,
}

/// What the placing tasks and the watcher share.
#[derive(Default)]
struct Tracker {
    pending: HashMap<Uuid, Pending>,
    /// Terminal events that arrived before their POST's answer was registered.
    early: HashMap<Uuid, Terminal>,
    recorder: Recorder,
}

impl Tracker {
    fn register(
        &mut self,
        order_id: Uuid,
        intent: Intent,
        sent_ms: i64,
        done: Option<oneshot::Sender<()>>,
    ) {
        self.recorder.placed(sent_ms);
        let pending = Pending {
            intent,
            sent_ms,
            done,
        };
        match self.early.remove(&order_id) {
            Some(terminal) => self.finish(pending, terminal),
            None => {
                self.pending.insert(order_id, pending);
            }
        }
    }

    fn terminal(&mut self, terminal: Terminal) {
        match self.pending.remove(&terminal.order_id) {
            Some(pending) => self.finish(pending, terminal),
            None => {
                self.early.insert(terminal.order_id, terminal);
            }
        }
    }

    fn finish(&mut self, pending: Pending, terminal: Terminal) {
        self.recorder.finished(
            pending.intent,
            terminal.outcome,
            pending.sent_ms,
            terminal.at_ms,
        );
        if let Some(done) = pending.done {
            let _ = done.send(());
        }
    }
}

/// Everything a placing task needs.
struct Load {
    http: reqwest::Client,
    urls: ServiceUrls,
    seeded: Seeded,
    tracker: Mutex<Tracker>,
}

pub async fn run(kafka: &KafkaConfig, args: LoadArgs) -> anyhow::Result<()> {
    let http = args
        .urls
        .client(
            reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .pool_max_idle_per_host(1024),
        )
        .await?;
    let names = TopicNames::new(kafka.topic_prefix.clone());
    let registry = RegistryConfig {
        auto_register: false,
        ..args.registry.clone()
    };
    let codec = RegistryCodec::connect(&registry, &names).await?;
    let seeded = seed::seed(&http, &args.urls).await?;
    let watcher = TerminalWatcher::start(kafka, &names, codec).await?;
    let (terminal_tx, mut terminal_rx) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let watching = tokio::spawn(watcher.run(terminal_tx, stop.clone()));
    let load = Arc::new(Load {
        http,
        urls: args.urls.clone(),
        seeded,
        tracker: Mutex::new(Tracker::default()),
    });
    {
        let load = load.clone();
        tokio::spawn(async move {
            while let Some(terminal) = terminal_rx.recv().await {
                load.tracker
                    .lock()
                    .expect("tracker poisoned")
                    .terminal(terminal);
            }
        });
    }
    let total = match (args.orders, args.rate, args.duration) {
        (Some(orders), _, _) => orders,
        (None, Some(rate), Some(seconds)) if rate > 0.0 && seconds > 0.0 => {
            (rate * seconds).round() as u64
        }
        _ => bail!(
            "give --orders N (closed loop) or --rate R --duration S (open loop), all positive"
        ),
    };
    let progress = progress_bar(total);
    let ticker = {
        let (load, progress) = (load.clone(), progress.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let tracker = load.tracker.lock().expect("tracker poisoned");
                let r = &tracker.recorder;
                progress.set_position(r.terminal);
                let errors: u64 = r.http_errors.values().sum();
                progress.set_message(format!(
                    "placed {} · in flight {} · HTTP errors {errors}",
                    r.placed,
                    r.placed - r.terminal
                ));
            }
        })
    };
    let (offered, trend) = match args.rate {
        None => (
            Offered::Closed {
                orders: total,
                concurrency: args.concurrency,
            },
            closed_loop(&load, total, args.concurrency, &args).await,
        ),
        Some(rate) => open_loop(&load, total, rate, &args).await,
    };
    ticker.abort();
    progress.finish_and_clear();
    stop.cancel();
    let _ = watching.await;
    let summary = load
        .tracker
        .lock()
        .expect("tracker poisoned")
        .recorder
        .summary(trend, offered);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        summary.print();
    }
    if summary.unfinished > 0 {
        bail!(
            "{} order(s) did not reach a terminal state within {} s of the last POST",
            summary.unfinished,
            args.drain_timeout_secs
        );
    }
    Ok(())
}

async fn closed_loop(load: &Arc<Load>, total: u64, concurrency: usize, args: &LoadArgs) -> Trend {
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let intents: Arc<Vec<Intent>> = Arc::new(args.mix.schedule().take(total as usize).collect());
    let drain = Duration::from_secs(args.drain_timeout_secs);
    let mut workers = JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (load, next, intents) = (load.clone(), next.clone(), intents.clone());
        workers.spawn(async move {
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= total {
                    return;
                }
                let (done_tx, done) = oneshot::channel();
                if load.place(n, intents[n as usize], Some(done_tx)).await {
                    let _ = tokio::time::timeout(drain, done).await;
                }
            }
        });
    }
    while workers.join_next().await.is_some() {}
    Trend {
        drain_seconds: started.elapsed().as_secs_f64(),
        ..Trend::default()
    }
}

async fn open_loop(load: &Arc<Load>, total: u64, rate: f64, args: &LoadArgs) -> (Offered, Trend) {
    let started = Instant::now();
    let mut intents = args.mix.schedule();
    let mut placing = JoinSet::new();
    let mut max_lag = Duration::ZERO;
    let mut in_flight_mid = 0;
    for n in 0..total {
        let at = started + Duration::from_secs_f64(n as f64 / rate);
        tokio::time::sleep_until(at).await;
        max_lag = max_lag.max(at.elapsed());
        if n == total / 2 {
            in_flight_mid = load.in_flight();
        }
        let intent = intents.next().expect("the schedule never ends");
        let load = load.clone();
        placing.spawn(async move {
            load.place(n, intent, None).await;
        });
    }
    let in_flight_end = load.in_flight();
    let window_end = Instant::now();
    while placing.join_next().await.is_some() {}
    let deadline = window_end + Duration::from_secs(args.drain_timeout_secs);
    while load.in_flight() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let offered = Offered::Open {
        rate_per_second: rate,
        seconds: args.duration.unwrap_or_default(),
        orders: total,
        max_schedule_lag_ms: max_lag.as_millis() as u64,
    };
    // Kept up: what is in flight at the end is about what was in flight mid-window (one
    // latency's worth of orders). Not keeping up: it keeps growing with time.
    let backlog_grows = in_flight_end as f64 > 1.5 * in_flight_mid as f64 + 0.25 * rate;
    let trend = Trend {
        in_flight_mid,
        in_flight_end,
        drain_seconds: window_end.elapsed().as_secs_f64(),
        backlog_grows,
    };
    (offered, trend)
}

impl Load {
    fn in_flight(&self) -> u64 {
        let tracker = self.tracker.lock().expect("tracker poisoned");
        tracker.recorder.placed - tracker.recorder.terminal
    }

    /// Places the `n`th order (and cancels it at once if that is its intent); `true` if it
    /// was accepted. `done` fires when its outcome is known.
    async fn place(&self, n: u64, intent: Intent, done: Option<oneshot::Sender<()>>) -> bool {
        let body = self.seeded.order_body(n, intent);
        let sent_ms = unix_ms();
        // One key for every attempt: a retry of a POST whose answer was lost places nothing new.
        let idempotency_key = Uuid::new_v4().to_string();
        let response = self
            .send_retrying(|| {
                self.http
                    .post(format!("{}/orders", self.urls.order_service))
                    .header("Idempotency-Key", &idempotency_key)
                    .json(&body)
            })
            .await;
        let order_id = match response {
            Ok(response) if response.status() == StatusCode::ACCEPTED => {
                let answer: Option<Value> = response.json().await.ok();
                answer.and_then(|a| {
                    a["order_id"]
                        .as_str()
                        .and_then(|id| id.parse::<Uuid>().ok())
                })
            }
            Ok(response) => {
                self.error(format!("POST /orders {}", response.status().as_u16()));
                return false;
            }
            Err(e) => {
                self.error(format!("POST /orders: {}", error_kind(&e)));
                return false;
            }
        };
        let Some(order_id) = order_id else {
            self.error("POST /orders: 202 without an order id".to_owned());
            return false;
        };
        self.tracker
            .lock()
            .expect("tracker poisoned")
            .register(order_id, intent, sent_ms, done);
        if intent == Intent::Cancelled {
            // Asking twice to cancel one order asks once.
            let cancel = self
                .send_retrying(|| {
                    self.http.post(format!(
                        "{}/orders/{order_id}/cancel",
                        self.urls.order_service
                    ))
                })
                .await;
            match cancel {
                // 409: the shipment won the race; the order completes.
                Ok(r) if matches!(r.status(), StatusCode::ACCEPTED | StatusCode::CONFLICT) => {}
                Ok(r) => self.error(format!(
                    "POST /orders/{{id}}/cancel {}",
                    r.status().as_u16()
                )),
                Err(e) => self.error(format!("POST /orders/{{id}}/cancel: {}", error_kind(&e))),
            }
        }
        true
    }

    /// Sends a request that is safe to repeat, again when the connection failed before an
    /// answer came (a replica that stopped between two requests on a kept-alive connection, a
    /// Service with no ready pod for a moment), as a client of the API should. Timeouts are not
    /// retried: the order may be under way, and the run reports them.
    async fn send_retrying(
        &self,
        request: impl Fn() -> reqwest::RequestBuilder,
    ) -> reqwest::Result<reqwest::Response> {
        let mut delays = [100, 300, 1_000, 3_000]
            .into_iter()
            .map(Duration::from_millis);
        loop {
            match request().send().await {
                Err(e) if !e.is_timeout() => match delays.next() {
                    Some(delay) => {
                        self.tracker
                            .lock()
                            .expect("tracker poisoned")
                            .recorder
                            .retried(error_kind(&e));
                        tokio::time::sleep(delay).await;
                    }
                    None => return Err(e),
                },
                answer => return answer,
            }
        }
    }

    fn error(&self, what: String) {
        self.tracker
            .lock()
            .expect("tracker poisoned")
            .recorder
            .http_error(what);
    }
}

fn error_kind(error: &reqwest::Error) -> &'static str {
    if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connection refused"
    } else {
        "transport error"
    }
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn progress_bar(total: u64) -> ProgressBar {
    let progress = ProgressBar::new(total);
    progress.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} terminal · {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    progress
}
