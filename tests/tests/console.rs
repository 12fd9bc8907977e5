//! The web console against the running services: its live stream (admins only; each change
//! of an order pushed as it happens), and the page itself driven in headless Chromium
//! (tests/browser/console.mjs): an order placed from the page completes, a second is
//! cancelled from it, and its compensation appears, all without a reload.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use orderflow_e2e::auth::{self, OPERATOR};
use orderflow_e2e::client::{order_body, place};
use orderflow_e2e::{Stack, put_account, put_product, wait_for_catalog};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

async fn seeded_stack(label: &str, customer: &str, product: &str) -> Stack {
    let stack = Stack::start(label, &[]).await;
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
    let mut stack = seeded_stack("live", customer, product).await;
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
    stack.stop_all().await;
}

/// Where the browser test is, and the Chromium it drives: both installed by scripts/test.
fn browser_test() -> (PathBuf, String) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    assert!(
        dir.join("node_modules/playwright-core").exists() && PathBuf::from(&chromium).exists(),
        "the browser test needs Node packages in tests/browser and Chromium at {chromium}: \
         scripts/test installs both (npm ci; apt-get install chromium)"
    );
    (dir, chromium)
}

#[tokio::test(flavor = "multi_thread")]
async fn in_a_browser_an_order_completes_and_a_cancelled_one_shows_its_compensation() {
    let (dir, chromium) = browser_test();
    let (customer, product) = ("browser-alice", "browser-beans");
    let mut stack = seeded_stack("browser", customer, product).await;
    let screenshot =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshot.png");
    let mut browser = tokio::process::Command::new("node")
        .current_dir(&dir)
        .arg("console.mjs")
        .arg(stack.url("order-service"))
        .arg(auth::admin_token(OPERATOR))
        .args([customer, product])
        .arg(&screenshot)
        .env("CHROMIUM", chromium)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs the browser test");
    let mut answers = browser.stdin.take().unwrap();
    let mut steps = BufReader::new(browser.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let run = tokio::time::timeout(Duration::from_secs(300), async {
        while let Some(line) = steps.next_line().await.unwrap() {
            println!("browser: {line}");
            let step = line
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
            match step.as_str() {
                // The next order must wait after payment: without inventory it cannot move.
                "completed" => {
                    stack.service("inventory-service").stop().await;
                    answers.write_all(b"inventory-stopped\n").await.unwrap();
                }
                "cancelling" => {
                    stack.service("inventory-service").start().await;
                    answers.write_all(b"inventory-started\n").await.unwrap();
                }
                _ => {}
            }
            seen.push(step);
        }
        browser.wait().await.unwrap()
    })
    .await;
    let status = run.expect("the browser test finished in time");
    assert!(status.success(), "the browser test failed after {seen:?}");
    assert_eq!(
        seen,
        [
            "live",
            "completed",
            "cancelling",
            "compensated",
            "screenshot"
        ]
    );
    assert!(screenshot.exists());
    stack.stop_all().await;
}
