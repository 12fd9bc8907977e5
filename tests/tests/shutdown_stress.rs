//! The shutdown path alone, many times: while orders flow, a service drawn at random is
//! sent SIGTERM at a random moment, sometimes while the broker is frozen (SIGSTOP) or being
//! restarted (SIGKILL and start), and must exit 0 every time; then it starts again. Every
//! service process may dump core, and a crash's report carries every thread's backtrace
//! (gdb), so a rare crash on the way out is caught with its cause.
//!
//! `SHUTDOWN_ROUNDS` (50) and `SHUTDOWN_SEED` (drawn and printed) replay a run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use orderflow_e2e::client::order_body;
use orderflow_e2e::draw::Draw;
use orderflow_e2e::{SERVICES, Stack, local_broker, put_account, put_product, wait_for_catalog};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Broker {
    Up,
    Frozen,
    Restarting,
    /// Frozen at the SIGTERM and thawed about when the consumer's close gives up waiting
    /// for it (5 s): librdkafka comes back to life while the process is on its way out.
    ThawedAsTheCloseGivesUp,
}

#[tokio::test]
async fn every_sigterm_exits_cleanly_even_with_the_broker_frozen_or_restarting() {
    let rounds: usize = std::env::var("SHUTDOWN_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let (seed, mut draw) = Draw::from_env("SHUTDOWN_SEED");
    println!("SHUTDOWN_SEED={seed} SHUTDOWN_ROUNDS={rounds}");
    let mut stack = Stack::start("sigterm", &[]).await;
    put_product(&stack, "sigterm-product", 100, 1_000_000).await;
    put_account(&stack, "sigterm-customer", 1_000_000_000).await;
    wait_for_catalog(&stack, &["sigterm-product"]).await;

    // Orders keep coming; while order-service is down they are refused, which is fine.
    let stop_load = Arc::new(AtomicBool::new(false));
    let load = {
        let url = format!("{}/orders", stack.url("order-service"));
        let stop = stop_load.clone();
        tokio::spawn(async move {
            let http = orderflow_e2e::http();
            let body = order_body("sigterm-customer", &[("sigterm-product", 1)], "DE");
            let mut placed = 0_u64;
            while !stop.load(Ordering::Relaxed) {
                let sent = http
                    .post(&url)
                    .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
                    .json(&body)
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await;
                placed += u64::from(sent.is_ok_and(|r| r.status() == 202));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            placed
        })
    };

    let mut unclean = Vec::new();
    let mut broker_faults = (0, 0, 0);
    let mut slowest = Duration::ZERO;
    for round in 0..rounds {
        let victim = SERVICES[draw.below(SERVICES.len() as u64) as usize];
        let broker = match draw.below(10) {
            0 | 1 => Broker::Frozen,
            2 => Broker::Restarting,
            3 | 4 => Broker::ThawedAsTheCloseGivesUp,
            _ => Broker::Up,
        };
        tokio::time::sleep(Duration::from_millis(draw.between(200, 2_000))).await;
        let recovering = match broker {
            Broker::ThawedAsTheCloseGivesUp => {
                local_broker::freeze();
                broker_faults.2 += 1;
                let thaw_after = Duration::from_millis(draw.between(4_500, 6_500));
                Some(tokio::spawn(async move {
                    tokio::time::sleep(thaw_after).await;
                    local_broker::thaw();
                }))
            }
            Broker::Frozen => {
                local_broker::freeze();
                broker_faults.0 += 1;
                None
            }
            Broker::Restarting => {
                broker_faults.1 += 1;
                Some(tokio::spawn(local_broker::restart()))
            }
            Broker::Up => None,
        };
        if broker == Broker::Restarting {
            // SIGTERM lands while the broker is down or recovering.
            tokio::time::sleep(Duration::from_millis(700)).await;
        }
        let signalled = std::time::Instant::now();
        let outcome = stack.service(victim).stop_and_report().await;
        let took = signalled.elapsed();
        slowest = slowest.max(took);
        if broker == Broker::Frozen {
            local_broker::thaw();
        }
        if let Some(recovering) = recovering {
            recovering.await.unwrap();
        }
        println!(
            "round {round:>2}: SIGTERM to {victim:<17} broker {broker:<10} -> {} after {:.1} s",
            outcome.as_deref().unwrap_or("exit 0"),
            took.as_secs_f64(),
            broker = format!("{broker:?}")
        );
        if let Some(outcome) = outcome {
            unclean.push(format!(
                "round {round} ({victim}, broker {broker:?}): {outcome}"
            ));
        }
        stack.service(victim).start().await;
    }
    stop_load.store(true, Ordering::Relaxed);
    let placed = load.await.unwrap();
    println!(
        "{rounds} SIGTERMs ({} with the broker frozen, {} during its restart, {} with it thawed as the close gives up) while {placed} orders were placed: {} unclean exits, the slowest exit {:.1} s after its SIGTERM",
        broker_faults.0,
        broker_faults.1,
        broker_faults.2,
        unclean.len(),
        slowest.as_secs_f64()
    );
    stack.stop_all().await;
    assert!(unclean.is_empty(), "{}", unclean.join("\n"));
}
