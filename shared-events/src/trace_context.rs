//! W3C trace-context propagation across Kafka: the producer's `traceparent` travels in the
//! outbox row and the record headers; the consumer's handler span continues that trace.

use std::collections::HashMap;

use opentelemetry::Context;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// `traceparent` (and `tracestate`, if any) of the current span; empty without a trace.
pub fn current_trace_headers() -> HashMap<String, String> {
    let mut headers = HashMap::new();
    let context = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&context, &mut headers);
    headers
}

/// The remote parent named by `traceparent`/`tracestate` in `headers`.
pub fn parent_context<'a>(headers: impl IntoIterator<Item = (&'a str, &'a str)>) -> Context {
    let carrier: HashMap<String, String> = headers
        .into_iter()
        .filter(|(k, _)| *k == "traceparent" || *k == "tracestate")
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    TraceContextPropagator::new().extract(&carrier)
}
