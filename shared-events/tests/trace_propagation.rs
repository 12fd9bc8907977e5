//! One trace across Kafka: the span that appends an event to the outbox and the consumer's
//! span for that record share a trace id, carried by the `traceparent` header. A binary of its
//! own because it installs the process-wide OpenTelemetry subscriber.

mod support;

use std::time::Duration;

use opentelemetry::Value;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use support::{TestStack, eventually, step_event};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use uuid::Uuid;

/// The consumer's `handle_event` span for the record of `event_id`.
fn record_span(spans: &[SpanData], event_id: Uuid) -> &SpanData {
    let id = Value::from(event_id.to_string());
    spans
        .iter()
        .find(|s| {
            s.name == "handle_event"
                && s.attributes
                    .iter()
                    .any(|kv| kv.key.as_str() == "event_id" && kv.value == id)
        })
        .unwrap_or_else(|| panic!("no handle_event span for {event_id} among {spans:#?}"))
}

#[tokio::test]
async fn the_consumers_span_for_a_record_continues_the_trace_of_the_span_that_appended_it() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("trace-propagation-test")))
        .init();
    let stack = TestStack::new(1).await;

    let span = tracing::info_span!("place_order");
    let producer_trace = span.context().span().span_context().trace_id();
    let order = Uuid::now_v7();
    let traced = step_event(order, 0);
    stack
        .append_committed(std::slice::from_ref(&traced))
        .instrument(span)
        .await;
    // An event appended outside any span starts no trace of its own in the consumer's eyes.
    let untraced = step_event(order, 1);
    stack
        .append_committed(std::slice::from_ref(&untraced))
        .await;

    let shutdown = CancellationToken::new();
    let relay = stack.spawn_relay(&shutdown);
    let consumer = stack.spawn_consumer("tracing", &shutdown);
    eventually(Duration::from_secs(60), "both events applied", || async {
        (stack.effects().await.len() == 2).then_some(())
    })
    .await;
    shutdown.cancel();
    relay.await.unwrap();
    consumer.await.unwrap();
    provider.force_flush().unwrap();

    let spans = exporter.get_finished_spans().unwrap();
    let continued = record_span(&spans, traced.metadata.event_id);
    assert_eq!(continued.span_context.trace_id(), producer_trace);
    let unrelated = record_span(&spans, untraced.metadata.event_id);
    assert_ne!(unrelated.span_context.trace_id(), producer_trace);
}
