# One image per binary: docker build --build-arg SERVICE=order-service -t orderflow/order-service .
# SERVICE is one of order-service, billing-service, inventory-service, shipping-service,
# orderflow-admin (topic and schema provisioning), dev-token-issuer, schema-registry-dev.
#
# Stages: chef (toolchain + cargo-chef) -> planner (dependency recipe) -> builder (dependencies
# cached in their own layer, then every binary at once) -> runtime (distroless, non-root, one
# binary). The builder takes no SERVICE, so all images share it: the first image compiles the
# workspace, the others reuse its layers. Migrations are compiled into each service binary
# (sqlx::migrate!), so the binary is all the runtime image holds.
#
# No `# syntax=` line: BuildKit would fetch a frontend image before building anything, and the
# classic builder ignores it. RUST_IMAGE and RUNTIME_IMAGE name stand-ins where the public
# images cannot be pulled (deploy/compose/local-images.yml).

ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS chef
# librdkafka is built from source by rdkafka's build script. Build tools follow the pinned
# base image's Debian release, so their versions are not pinned one by one.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake pkg-config zlib1g-dev libssl-dev \
    && rm -rf /var/lib/apt/lists/*
RUN cargo install cargo-chef --version 0.1.78 --locked
WORKDIR /src
# The binaries the images hold: cook and build select the same ones, so features agree and
# the dependency layer is reused.
ENV IMAGE_BINARIES="--bin order-service --bin billing-service --bin inventory-service --bin shipping-service --bin orderflow-admin --bin dev-token-issuer --bin schema-registry-dev"

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
# The dependency layer: rebuilt only when Cargo.toml or Cargo.lock change.
# hadolint ignore=SC2086
RUN cargo chef cook --release --locked --recipe-path recipe.json $IMAGE_BINARIES
COPY . .
# hadolint ignore=SC2086
RUN cargo build --release --locked $IMAGE_BINARIES

FROM ${RUNTIME_IMAGE} AS runtime
ARG SERVICE
LABEL org.opencontainers.image.title="orderflow ${SERVICE}" \
      org.opencontainers.image.source="https://github.com/orderflow/orderflow"
COPY --from=builder /src/target/release/${SERVICE} /usr/local/bin/service
# The binary must load here: a shared library the runtime image lacks fails the build, not a
# deploy. (Exec form: the runtime image has no shell.)
RUN ["/usr/local/bin/service", "--help"]
# distroless "nonroot", numeric so that runAsNonRoot can verify it.
USER 65532:65532
# Containers listen on all interfaces; the binaries default to loopback.
ENV HTTP_ADDR=0.0.0.0:8080 \
    LOG_JSON=true
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/service"]
