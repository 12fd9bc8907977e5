//! One trace across Kafka: the span that appends an event to the outbox and the consumer's
//! handler span share a trace id, carried by the `traceparent` header. A binary of its own
//! because it installs the process-wide OpenTelemetry subscriber.

mod support;

use std::time::Duration;

use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use support::{TestStack, eventually, step_event};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use uuid::Uuid;

#[tokio::test]
async fn the_handler_span_continues_the_trace_of_the_span_that_appended_the_event() {
    let provider = SdkTracerProvider::builder().build();
    tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("trace-propagation-test")))
        .init();
    let stack = TestStack::new(1).await;

    let span = tracing::info_span!("place_order");
    let producer_trace = span.context().span().span_context().trace_id().to_string();
    let order = Uuid::now_v7();
    stack
        .append_committed(&[step_event(order, 0)])
        .instrument(span)
        .await;
    // An event appended outside any span starts no trace of its own in the handler's eyes.
    stack.append_committed(&[step_event(order, 1)]).await;

    let shutdown = CancellationToken::new();
    let relay = stack.spawn_relay(&shutdown);
    let consumer = stack.spawn_consumer("tracing", &shutdown);
    eventually(Duration::from_secs(60), "both events applied", || async {
        (stack.effects().await.len() == 2).then_some(())
    })
    .await;

    let traces: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT step, trace_id FROM test_effects ORDER BY applied_seq")
            .fetch_all(&stack.pool)
            .await
            .unwrap();
    assert_eq!(
        traces[0],
        ("step-0000".to_owned(), Some(producer_trace.clone()))
    );
    let (_, unrelated) = &traces[1];
    assert!(
        unrelated.as_ref().is_some_and(|t| *t != producer_trace),
        "{traces:?}"
    );
    shutdown.cancel();
    relay.await.unwrap();
    consumer.await.unwrap();
}
