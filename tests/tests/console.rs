//! The web console against the running services: its live stream (admins only; each change
//! of an order pushed as it happens), and the page itself driven in headless Chromium
//! (tests/browser/console.mjs): an order placed from the page completes, a second is
//! cancelled from it, and its compensation appears, all without a reload. Its "Needs
//! attention" view (tests/browser/attention.mjs): a held order listed as stuck with the lag,
//! then moving; an order's dead letters listed with their reason and redriven from the page
//! once their cause is fixed. Its dead letters (tests/browser/dead-letters.mjs): thirty poison
//! records of three kinds shown as three groups, none offering a redrive, and one group
//! acknowledged from the page, leaving the view with its audit row.

use std::time::Duration;

use orderflow_e2e::auth::{self, OPERATOR};
use orderflow_e2e::browser::{BrowserScript, screenshot_path};
use orderflow_e2e::client::{self, order_body, place};
use orderflow_e2e::corrupt_history::CorruptHistory;
use orderflow_e2e::{Stack, put_account, put_product, wait_for_catalog};
use rdkafka::producer::{FutureProducer, FutureRecord};
use reqwest::StatusCode;
use serde_json::{Value, json};
use shared_events::contracts::{Event, Money, ProductUpserted, Topic};
use shared_events::{KafkaConfig, RegistryCodec, RegistryConfig, TopicNames};
use sqlx::Connection;

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

#[tokio::test(flavor = "multi_thread")]
async fn in_a_browser_an_operator_acknowledges_a_group_of_dead_letters() {
    let (customer, product) = ("letters-alice", "letters-beans");
    let mut stack = seeded_stack("letters", customer, product, &[]).await;
    let screenshot = "dead-letters-screenshot.png";
    let mut browser =
        BrowserScript::start("dead-letters.mjs", &stack, customer, product, screenshot);
    let run = tokio::time::timeout(BROWSER_SCENARIO, async {
        while let Some((step, _)) = browser.next_step().await {
            if step == "live" {
                poison_the_catalog(&stack).await;
                browser.answer("poisoned").await;
            }
        }
        browser.finish(&["live", "grouped", "acknowledged"]).await;
    });
    run.await.expect("the browser test finished in time");
    assert!(screenshot_path(screenshot).exists());

    // The audit: one acknowledgement, by the operator, of the cause, covering its ten letters.
    let mut db = sqlx::PgConnection::connect(&stack.service("order-service").database_url)
        .await
        .unwrap();
    let audit: Vec<(String, String, Value, i64)> = sqlx::query_as(
        "SELECT a.operator, a.reason, a.cause, count(l.*)
         FROM dead_letter_acknowledgements a JOIN acknowledged_dead_letters l
              USING (acknowledgement_id)
         GROUP BY a.acknowledgement_id",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    assert_eq!(audit.len(), 1, "{audit:?}");
    let (operator, reason, cause, letters) = &audit[0];
    assert_eq!(operator, OPERATOR);
    assert_eq!(reason, "records from a retired producer; nothing to replay");
    assert_eq!(cause["error_class"], "unknown_schema_id");
    assert_eq!(*letters, 10);

    // Acknowledged letters stay listable, with who acknowledged them and why.
    let listed = client::dead_letter_groups(&stack, true).await;
    let groups = listed["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1, "{listed}");
    assert_eq!(groups[0]["count"], 10);
    assert_eq!(
        groups[0]["letters"][0]["acknowledgement"]["operator"],
        OPERATOR
    );

    // Again: nothing is left to acknowledge (409), and no second audit row is written.
    let again = client::acknowledge(
        &stack,
        &json!({"reason": "twice", "cause": groups[0]["cause"]}),
    )
    .await;
    assert_eq!(again.0, StatusCode::CONFLICT, "{}", again.1);
    // One letter named on its own leaves its group one smaller.
    let open = client::dead_letter_groups(&stack, false).await;
    let garbage = open["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|group| group["cause"]["error_class"] == "not_wire_format")
        .unwrap();
    let letter = &garbage["letters"][0];
    let named = json!({"reason": "looked at it", "dead_letters": [{
        "topic": letter["topic"], "partition": letter["partition"], "offset": letter["offset"]}]});
    let one = client::acknowledge(&stack, &named).await;
    assert_eq!(
        (one.0, &one.1["acknowledged"]),
        (StatusCode::OK, &json!(1)),
        "{}",
        one.1
    );
    let open = client::dead_letter_groups(&stack, false).await;
    let counts: Vec<(&Value, &Value)> = open["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|group| (&group["cause"]["error_class"], &group["count"]))
        .collect();
    assert_eq!(counts.len(), 2, "{open}");
    assert!(
        counts.contains(&(&json!("not_wire_format"), &json!(9))),
        "{counts:?}"
    );
    assert_eq!(open["letters"], 19);
    stack.stop_all().await;
}

/// Ten records of each of three kinds into the stack's catalog topic, which only
/// order-service reads: garbage, unknown schema ids, and a product's Avro cut short. The
/// reasons of each kind differ only in their numbers.
async fn poison_the_catalog(stack: &Stack) {
    let kafka = KafkaConfig::local(&orderflow_e2e::bootstrap_servers());
    let producer: FutureProducer = kafka.idempotent_producer().create().unwrap();
    let names = TopicNames::new(stack.prefix.clone());
    let registry = RegistryConfig::at(
        orderflow_e2e::env_or("SCHEMA_REGISTRY_URL", "http://127.0.0.1:8081"),
        true,
    );
    let codec = RegistryCodec::connect(&registry, &names).await.unwrap();
    let mut records: Vec<Vec<u8>> = Vec::new();
    for i in 0..10u32 {
        records.push(format!("not an event, number {}", i * 37).into_bytes());
        let mut unknown = vec![0];
        unknown.extend((0x7fff_ff00 + i).to_be_bytes());
        unknown.extend([2, 4, 6]);
        records.push(unknown);
        let product = Event::catalog(
            "e2e-poison",
            ProductUpserted {
                product_id: format!("poison-{i}"),
                name: "Cut short".into(),
                unit_price: Money::new(100, "EUR"),
                available_quantity: 1,
            },
        );
        let mut cut = codec.encode(&product).await.unwrap();
        cut.truncate(7);
        records.push(cut);
    }
    for (i, payload) in records.iter().enumerate() {
        producer
            .send(
                FutureRecord::to(&names.name(Topic::Catalog))
                    .key(&format!("poison-{i}"))
                    .payload(payload),
                Duration::from_secs(30),
            )
            .await
            .unwrap();
    }
}
