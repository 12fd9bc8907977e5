//! Every service starts as a real process on the local stack, reports alive and ready, serves
//! metrics, and exits cleanly on SIGTERM. Needs the stack (`scripts/stack-up`) and the
//! service binaries (`cargo build --workspace --bins`); `scripts/test` provides both.

use orderflow_e2e::{SERVICES, Stack};

#[tokio::test]
async fn every_service_starts_becomes_ready_serves_metrics_and_stops_on_sigterm() {
    let mut stack = Stack::start("boot", &[]).await;
    let client = reqwest::Client::new();
    for name in SERVICES {
        let base_url = stack.url(name);
        let alive = client
            .get(format!("{base_url}/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(alive.status(), 200);
        let metrics = client
            .get(format!("{base_url}/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(metrics.status(), 200);
        let text = metrics.text().await.unwrap();
        assert!(
            text.contains(&format!(
                "orderflow_outbox_relay_active{{service=\"{name}\"}}"
            )),
            "{name}: {text}"
        );
        assert!(text.contains("orderflow_outbox_backlog_events"));
    }
    // Each stop asserts a clean exit within 20 s of SIGTERM.
    stack.stop_all().await;
}
