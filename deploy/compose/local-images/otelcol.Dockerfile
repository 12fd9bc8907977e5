# Stands in for otel/opentelemetry-collector-contrib: a collector built with the collector's
# own builder from its Go modules (otelcol-builder.yaml), the binary being the build context.
FROM scratch
COPY otelcol /otelcol
USER 10001
ENTRYPOINT ["/otelcol"]
