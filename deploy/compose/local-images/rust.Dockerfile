# Stands in for rust:1.95-slim-bookworm: this machine's Rust toolchain (the build context) on
# the Debian base, laid out as the official image lays it out.
ARG DEBIAN_IMAGE=orderflow-local/debian:bookworm
FROM ${DEBIAN_IMAGE}
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
COPY toolchain /usr/local/rust
ENV CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:/usr/local/rust/bin:$PATH
RUN cargo --version && rustc --version
