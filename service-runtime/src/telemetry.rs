//! Logs and traces: `tracing` with an OpenTelemetry layer, so every span has a W3C trace
//! context that the outbox carries across Kafka, exported over OTLP when configured.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{OtlpProtocol, TelemetryConfig};

/// Flushes spans still buffered when dropped; keep it alive until the service exits.
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("flushing spans failed: {e}");
        }
    }
}

/// Installs the global subscriber. `RUST_LOG` filters the logs (default `info`); spans at INFO
/// and above always reach the tracer.
pub fn init(
    service_name: &'static str,
    config: &TelemetryConfig,
) -> anyhow::Result<TelemetryGuard> {
    let resource = Resource::builder().with_service_name(service_name).build();
    let mut builder = SdkTracerProvider::builder().with_resource(resource);
    if let Some(endpoint) = &config.otlp_endpoint {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(match config.otlp_protocol {
                OtlpProtocol::HttpJson => Protocol::HttpJson,
                OtlpProtocol::HttpProtobuf => Protocol::HttpBinary,
            })
            .with_endpoint(endpoint.clone())
            .build()?;
        builder = builder.with_batch_exporter(exporter);
    }
    let provider = builder.build();
    let tracer = provider.tracer(service_name);

    // RUST_LOG filters the logs only: traces need the INFO spans whatever the log level, or
    // the outbox would stop carrying trace context when someone quiets the logs.
    let log_filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = if config.log_json {
        tracing_subscriber::fmt::layer().json().boxed()
    } else {
        tracing_subscriber::fmt::layer().boxed()
    };
    tracing_subscriber::registry()
        .with(fmt.with_filter(log_filter))
        .with(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(LevelFilter::INFO),
        )
        .try_init()?;
    Ok(TelemetryGuard { provider })
}
