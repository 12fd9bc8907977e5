# syntax=docker/dockerfile:1
# One image per service: docker build --build-arg SERVICE=order-service -t orderflow/order-service .
# SERVICE is one of order-service, billing-service, inventory-service, shipping-service,
# orderflow-admin (topic and schema provisioning).
#
# Stages: chef (toolchain + cargo-chef) -> planner (dependency recipe) -> builder (dependencies
# cached in their own layer, then the workspace) -> runtime (distroless, non-root, one binary).
# Migrations are compiled into each service binary (sqlx::migrate!), so the binary is all the
# runtime image holds.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS chef
# librdkafka is built from source by rdkafka's build script. Build tools follow the pinned
# base image's Debian release, so their versions are not pinned one by one.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake pkg-config zlib1g-dev libssl-dev \
    && rm -rf /var/lib/apt/lists/*
RUN cargo install cargo-chef --version 0.1.78 --locked
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
ARG SERVICE
COPY --from=planner /src/recipe.json recipe.json
# The dependency layer: rebuilt only when Cargo.toml or Cargo.lock change.
RUN cargo chef cook --release --locked --recipe-path recipe.json
COPY . .
RUN test -n "${SERVICE}" \
    && cargo build --release --locked --bin "${SERVICE}" \
    && cp "target/release/${SERVICE}" /service

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
ARG SERVICE
LABEL org.opencontainers.image.title="orderflow ${SERVICE}" \
      org.opencontainers.image.source="https://github.com/orderflow/orderflow"
COPY --from=builder /service /usr/local/bin/service
# distroless "nonroot", numeric so that runAsNonRoot can verify it.
USER 65532:65532
# Containers listen on all interfaces; the binaries default to loopback.
ENV HTTP_ADDR=0.0.0.0:8080 \
    LOG_JSON=true
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/service"]
