//! The web console against the running services: its live stream (admins only; each change
//! of an order pushed as it happens), and the page itself driven in headless Chromium
//! (tests/browser/console.mjs): an order placed from the page completes, a second is
//! cancelled from it, and its compensation appears, all without a reload. Its "Needs
//! attention" view (tests/browser/attention.mjs): a held order listed as stuck with the lag,
//! then moving; an order's dead letters listed with their reason and redriven from the page
//! once their cause is fixed.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use orderflow_e2e::auth::{self, OPERATOR};
use orderflow_e2e::client::{order_body, place};
use orderflow_e2e::corrupt_history::CorruptHistory;
use orderflow_e2e::{Stack, put_account, put_product, wait_for_catalog};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

async fn seeded_stack(
    label: &str,
    customer: &str,
    product: &str,
    extra_env: &[(&str, String)],
) -> Stack {
    let stack = Stack::start(label, extra_env).await;
    put_product(&stack, product, 1_000, 100).await;
    put_account(&stack, customer, 1_000_000).await;
    wait_for_catalog(&stack, &[product]).await;
    stack
}

/// Reads server-sent events from `response` until one named `name` satisfies `wanted`.
async fn next_event(
    response: &mut reqwest::Response,
    buffer: &mut String,
    name: &str,
    wanted: impl Fn(&Value) -> bool,
) -> Value {
    loop {
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let mut event = "message";
            let mut data = String::new();
            for line in block.lines() {
                if let Some(value) = line.strip_prefix("event:") {
                    event = value.trim();
                } else if let Some(value) = line.strip_prefix("data:") {
                    data.push_str(value.trim_start());
                }
            }
            if event == name {
                let value: Value = serde_json::from_str(&data).unwrap();
                if wanted(&value) {
                    return value;
                }
            }
        }
        let chunk = response.chunk().await.unwrap().expect("the stream ended");
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_live_stream_is_for_admins_and_pushes_every_change_of_an_order() {
    let (customer, product) = ("live-alice", "live-beans");
    let mut stack = seeded_stack("live", customer, product, &[]).await;
    let url = format!("{}/orders/live", stack.url("order-service"));
    let http = reqwest::Client::new();

    let customers = http
        .get(&url)
        .bearer_auth(auth::token(customer, "orders"))
        .send()
        .await
        .unwrap();
    assert_eq!(customers.status(), StatusCode::FORBIDDEN);
    let anonymous = http.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);

    let mut live = http
        .get(&url)
        .bearer_auth(auth::admin_token(OPERATOR))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), StatusCode::OK);
    assert_eq!(live.headers()["content-type"], "text/event-stream");
    let mut buffer = String::new();
    // The first counters come once the feed has opened its tap: from then on, nothing is
    // missed.
    next_event(&mut live, &mut buffer, "counters", |_| true).await;
    let order_id = place(&stack, &order_body(customer, &[(product, 1)], "DE")).await;
    let is_ours = |status: &'static str| {
        let order_id = order_id.clone();
        move |order: &Value| order["order_id"] == order_id.as_str() && order["status"] == status
    };
    let read = tokio::time::timeout(Duration::from_secs(60), async {
        let completed = next_event(&mut live, &mut buffer, "order", is_ours("COMPLETED")).await;
        let counters = next_event(&mut live, &mut buffer, "counters", |c| {
            c["completed"].as_u64() >= Some(1)
        })
        .await;
        (completed, counters)
    })
    .await;
    let (completed, counters) = read.expect("the order's completion was pushed in time");
    let kinds: Vec<&str> = completed["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|step| step["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"progress"), "{completed:#}");
    assert_eq!(kinds.last(), Some(&"outcome"), "{completed:#}");
    assert!(counters["placed"].as_u64() >= Some(1), "{counters}");
    drop(live);

    // A stream ends when its token does (before, it went on for as long as the
    // connection did, so a revoked operator kept receiving orders).
    let mut brief = auth::claims("live-brief-operator", "orders");
    brief.realm_access = Some(dev_token_issuer::RealmAccess {
        roles: vec![dev_token_issuer::ADMIN_ROLE.into()],
    });
    brief.exp = chrono::Utc::now().timestamp() as u64 + 3;
    let mut stream = http
        .get(&url)
        .bearer_auth(auth::sign(&brief))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    let ended = tokio::time::timeout(Duration::from_secs(15), async {
        while stream.chunk().await.is_ok_and(|chunk| chunk.is_some()) {}
    })
    .await;
    assert!(ended.is_ok(), "the stream outlived its token by over 12 s");

    // One subject holds at most STREAMS_PER_SUBJECT streams.
    let many = auth::admin_token("live-many-tabs");
    let mut open = Vec::new();
    for _ in 0..8 {
        let stream = http.get(&url).bearer_auth(&many).send().await.unwrap();
        assert_eq!(stream.status(), StatusCode::OK);
        open.push(stream);
    }
    let ninth = http.get(&url).bearer_auth(&many).send().await.unwrap();
    assert_eq!(ninth.status(), StatusCode::TOO_MANY_REQUESTS);
    drop(open);
    stack.stop_all().await;
}

/// A browser test script (tests/browser/*.mjs) run by node against a stack: it reports each
/// step on stdout, and waits on stdin for the test's answer where it needs one.
struct BrowserScript {
    child: tokio::process::Child,
    answers: tokio::process::ChildStdin,
    steps: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    seen: Vec<String>,
}

impl BrowserScript {
    /// Starts `script` on `stack`'s console as the operator, for `customer` and `product`;
    /// it saves a screenshot at `target/<screenshot>`. Node's packages and Chromium are
    /// installed by scripts/test.
    fn start(script: &str, stack: &Stack, customer: &str, product: &str, screenshot: &str) -> Self {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser");
        let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
        assert!(
            dir.join("node_modules/playwright-core").exists() && PathBuf::from(&chromium).exists(),
            "the browser test needs Node packages in tests/browser and Chromium at {chromium}: \
             scripts/test installs both (npm ci; apt-get install chromium)"
        );
        let mut child = tokio::process::Command::new("node")
            .current_dir(&dir)
            .arg(script)
            .arg(stack.url("order-service"))
            .arg(auth::admin_token(OPERATOR))
            .args([customer, product])
            .arg(screenshot_path(screenshot))
            .env("CHROMIUM", chromium)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs the browser test");
        Self {
            answers: child.stdin.take().unwrap(),
            steps: BufReader::new(child.stdout.take().unwrap()).lines(),
            child,
            seen: Vec::new(),
        }
    }

    /// The next step the script reports, with the words after it; `None` once it ended.
    async fn next_step(&mut self) -> Option<(String, Vec<String>)> {
        let line = self.steps.next_line().await.unwrap()?;
        println!("browser: {line}");
        let mut words = line.split_whitespace().map(str::to_owned);
        let step = words.next().unwrap_or_default();
        self.seen.push(step.clone());
        Some((step, words.collect()))
    }

    async fn answer(&mut self, answer: &str) {
        self.answers
            .write_all(format!("{answer}\n").as_bytes())
            .await
            .unwrap();
    }

    /// Waits for the script's end: it must succeed, having reported exactly `expected`.
    async fn finish(mut self, expected: &[&str]) {
        let status = self.child.wait().await.unwrap();
        assert!(
            status.success(),
            "the browser test failed after {:?}",
            self.seen
        );
        assert_eq!(self.seen, expected);
    }
}

fn screenshot_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target")
        .join(name)
}

/// How long a whole browser scenario may take.
const BROWSER_SCENARIO: Duration = Duration::from_secs(300);

#[tokio::test(flavor = "multi_thread")]
async fn in_a_browser_an_order_completes_and_a_cancelled_one_shows_its_compensation() {
    let (customer, product) = ("browser-alice", "browser-beans");
    let mut stack = seeded_stack("browser", customer, product, &[]).await;
    let screenshot = "console-screenshot.png";
    let mut browser = BrowserScript::start("console.mjs", &stack, customer, product, screenshot);
    let run = tokio::time::timeout(BROWSER_SCENARIO, async {
        while let Some((step, _)) = browser.next_step().await {
            match step.as_str() {
                // The next order must wait after payment: without inventory it cannot move.
                "completed" => {
                    stack.service("inventory-service").stop().await;
                    browser.answer("inventory-stopped").await;
                }
                "cancelling" => {
                    stack.service("inventory-service").start().await;
                    browser.answer("inventory-started").await;
                }
                _ => {}
            }
        }
        browser
            .finish(&[
                "live",
                "completed",
                "cancelling",
                "compensated",
                "screenshot",
            ])
            .await;
    });
    run.await.expect("the browser test finished in time");
    assert!(screenshot_path(screenshot).exists());
    stack.stop_all().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn in_a_browser_an_operator_sees_what_is_stuck_and_redrives_dead_letters() {
    let (customer, product) = ("attention-alice", "attention-beans");
    let stuck_after = [("STUCK_AFTER_SECS", "3".to_owned())];
    let mut stack = seeded_stack("attention", customer, product, &stuck_after).await;
    let screenshot = "attention-screenshot.png";
    let mut browser = BrowserScript::start("attention.mjs", &stack, customer, product, screenshot);
    let mut broken = None;
    let run = tokio::time::timeout(BROWSER_SCENARIO, async {
        while let Some((step, words)) = browser.next_step().await {
            let answer = match step.as_str() {
                "live" => {
                    stack.service("inventory-service").stop().await;
                    "inventory-stopped"
                }
                "stuck" => {
                    stack.service("inventory-service").start().await;
                    "inventory-started"
                }
                "moved" => {
                    stack.service("billing-service").stop().await;
                    "billing-stopped"
                }
                // Its payment, stock and shipment will each be dead-lettered.
                "placed" => {
                    broken = Some(CorruptHistory::of(&mut stack, &words[0]).await);
                    stack.service("billing-service").start().await;
                    "poisoned"
                }
                "refused" => {
                    broken.take().unwrap().repair(&mut stack).await;
                    "repaired"
                }
                _ => continue,
            };
            browser.answer(answer).await;
        }
        browser
            .finish(&[
                "live",
                "stuck",
                "moved",
                "placed",
                "dead-lettered",
                "refused",
                "redriven",
            ])
            .await;
    });
    run.await.expect("the browser test finished in time");
    assert!(screenshot_path(screenshot).exists());
    stack.stop_all().await;
}
