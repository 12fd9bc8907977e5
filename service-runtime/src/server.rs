//! The HTTP server: hyper, with the bounds `axum::serve` does not set, so that clients that
//! are slow, silent or idle cannot hold the process's connections:
//! - a client must send each request's headers within `HTTP_HEADER_READ_TIMEOUT_MS` (the
//!   request timeout starts only once they are in, so without it a client dribbling one
//!   header line every few seconds holds its connection forever);
//! - a connection with no request in flight is closed once it has been idle that long: from
//!   its opening (a client that sends nothing, or only the HTTP/2 preface, never reaches a
//!   header read) and between requests (hyper never closes an idle HTTP/2 connection);
//! - at most `HTTP_MAX_CONNECTIONS` connections are open at once (more wait in the kernel's
//!   accept queue), and at most `HTTP_MAX_CONNECTIONS_PER_ADDRESS` from one peer address
//!   (more are closed at once), so one address cannot take every slot.

mod connection;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::per_key_limit::PerKeyLimit;

#[derive(Debug, Clone, clap::Args)]
pub struct HttpConfig {
    /// Longest a client may take to send a request's headers, and longest a connection
    /// may stay open with no request in flight (from its opening, and between requests).
    #[arg(
        long = "http-header-read-timeout-ms",
        env = "HTTP_HEADER_READ_TIMEOUT_MS",
        default_value_t = 10_000,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub header_read_timeout_ms: u64,
    /// Most client connections open at once; further clients wait to be accepted.
    #[arg(
        long = "http-max-connections",
        env = "HTTP_MAX_CONNECTIONS",
        default_value_t = 4096,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_connections: u32,
    /// Most connections open at once from one peer address; further ones are closed at
    /// once. Behind a proxy every connection comes from the proxy: keep this above its
    /// connection pool.
    #[arg(
        long = "http-max-connections-per-address",
        env = "HTTP_MAX_CONNECTIONS_PER_ADDRESS",
        default_value_t = 512,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_connections_per_address: u32,
    /// Host names the HTTP API answers to, comma-separated: exact names, `.example.com` for
    /// every name under it, `*` for any. IP addresses are always answered. Anything else
    /// gets 421, so that a web page re-pointed at this machine (DNS rebinding) cannot use
    /// it from a browser: list the names clients use (an ingress's host, a container's).
    #[arg(
        long = "http-allowed-hosts",
        env = "HTTP_ALLOWED_HOSTS",
        value_delimiter = ',',
        default_value = "localhost,.localhost"
    )]
    pub allowed_hosts: Vec<String>,
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then lets the requests in
/// flight finish. Handlers can extract the peer's address as `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    config: &HttpConfig,
    shutdown: CancellationToken,
) {
    let idle_limit = Duration::from_millis(config.header_read_timeout_ms);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(idle_limit);
    builder
        .http2()
        .timer(TokioTimer::new())
        // A peer that stops answering pings is gone: its connection is closed.
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(20))
        .max_concurrent_streams(256);
    let builder = Arc::new(builder);
    let connections = Arc::new(Semaphore::new(config.max_connections as usize));
    let per_address = PerKeyLimit::new(config.max_connections_per_address as usize);
    let tasks = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = accept(&listener, &connections) => accepted,
        };
        let (stream, peer, permit) = accepted;
        let Some(slot) = per_address.take(&peer.ip()) else {
            tracing::debug!(%peer, "too many connections from one address: closed");
            continue;
        };
        let connection = connection::Served {
            builder: builder.clone(),
            router: router.clone(),
            peer,
            idle_limit,
        };
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            connection.run(stream, shutdown).await;
            drop((slot, permit));
        });
    }
    drop(listener);
    tasks.close();
    tasks.wait().await;
}

/// The next connection, once one of the allowed connections is free.
async fn accept(
    listener: &TcpListener,
    connections: &Arc<Semaphore>,
) -> (
    tokio::net::TcpStream,
    SocketAddr,
    tokio::sync::OwnedSemaphorePermit,
) {
    let permit = connections
        .clone()
        .acquire_owned()
        .await
        .expect("the semaphore is never closed");
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                // Responses are small and written whole: no reason to wait for more.
                let _ = stream.set_nodelay(true);
                return (stream, peer, permit);
            }
            Err(e) => {
                // Out of file descriptors, or a connection reset before it was accepted:
                // wait a little rather than spin (as axum::serve does).
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
