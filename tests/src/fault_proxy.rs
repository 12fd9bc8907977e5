//! A TCP proxy that injects network faults between the services and what they connect to
//! (the broker, PostgreSQL): added latency, every connection reset at once, and connections
//! that go silent (half-open: the bytes are taken and nothing ever answers).
//!
//! A silenced connection stays silent after [`FaultProxy::heal`], as a half-open one does
//! in life: only the client's own timeouts get it out of one. New connections forward again.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub struct FaultProxy {
    /// Where clients connect instead of upstream.
    pub address: String,
    state: Arc<State>,
    accepting: JoinHandle<()>,
}

struct State {
    upstream: String,
    latency_ms: AtomicU64,
    /// Cancelled to reset every connection open at that moment.
    reset: Mutex<CancellationToken>,
    /// Cancelled to silence every connection open at that moment; while `silent` is true,
    /// new connections are silent from the start.
    silence: Mutex<CancellationToken>,
    silent: AtomicBool,
    connections: AtomicUsize,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards each connection to `upstream`.
    pub async fn start(upstream: &str) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let state = Arc::new(State {
            upstream: upstream.to_owned(),
            latency_ms: AtomicU64::new(0),
            reset: Mutex::new(CancellationToken::new()),
            silence: Mutex::new(CancellationToken::new()),
            silent: AtomicBool::new(false),
            connections: AtomicUsize::new(0),
        });
        let accepting = tokio::spawn(accept(listener, state.clone()));
        FaultProxy {
            address,
            state,
            accepting,
        }
    }

    /// Delays every chunk forwarded, either way, by `latency`.
    pub fn add_latency(&self, latency: Duration) {
        let ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
        self.state.latency_ms.store(ms, Ordering::SeqCst);
    }

    /// Resets (RST) every connection open now, mid-request or not. Returns how many.
    pub fn reset_all(&self) -> usize {
        let open = self.state.connections.load(Ordering::SeqCst);
        replace_and_cancel(&self.state.reset);
        open
    }

    /// From now on every open and new connection goes silent: what is sent to it is taken
    /// and never answered, either way. Returns how many were open.
    pub fn go_silent(&self) -> usize {
        self.state.silent.store(true, Ordering::SeqCst);
        replace_and_cancel(&self.state.silence);
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Ends the faults for new connections: no latency, and they forward again. Silenced
    /// connections stay silent.
    pub fn heal(&self) {
        self.add_latency(Duration::ZERO);
        self.state.silent.store(false, Ordering::SeqCst);
    }

    /// Connections open now (silent ones included).
    pub fn open_connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accepting.abort();
        replace_and_cancel(&self.state.reset);
    }
}

fn replace_and_cancel(token: &Mutex<CancellationToken>) {
    let old = std::mem::take(&mut *token.lock().unwrap());
    old.cancel();
}

async fn accept(listener: TcpListener, state: Arc<State>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            state.connections.fetch_add(1, Ordering::SeqCst);
            connection(client, &state).await;
            state.connections.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// One client connection: forwarded until either side closes, reset, or silenced (then
/// its input is drained unanswered until the client gives up on it).
async fn connection(mut client: TcpStream, state: &State) {
    let reset = state.reset.lock().unwrap().clone();
    let silence = state.silence.lock().unwrap().clone();
    if state.silent.load(Ordering::SeqCst) {
        return drain_until_closed(client, &reset).await;
    }
    let Ok(mut upstream) = TcpStream::connect(&state.upstream).await else {
        return;
    };
    let _ = (client.set_nodelay(true), upstream.set_nodelay(true));
    let outcome = {
        let (from_upstream, to_upstream) = upstream.split();
        let (from_client, to_client) = client.split();
        tokio::select! {
            _ = reset.cancelled() => Outcome::Reset,
            _ = silence.cancelled() => Outcome::Silenced,
            _ = pipe(from_client, to_upstream, state) => Outcome::Closed,
            _ = pipe(from_upstream, to_client, state) => Outcome::Closed,
        }
    };
    match outcome {
        Outcome::Closed => {}
        Outcome::Reset => {
            let _ = (client.set_zero_linger(), upstream.set_zero_linger());
        }
        Outcome::Silenced => {
            // Upstream goes too (PostgreSQL ends the session), the client is never told.
            drop(upstream);
            drain_until_closed(client, &reset).await;
        }
    }
}

enum Outcome {
    Closed,
    Reset,
    Silenced,
}

/// Copies `from` to `to`, each chunk after the proxy's current latency.
async fn pipe(
    mut from: impl AsyncReadExt + Unpin,
    mut to: impl AsyncWriteExt + Unpin,
    state: &State,
) {
    let mut buffer = vec![0; 64 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        let latency = state.latency_ms.load(Ordering::SeqCst);
        if latency > 0 {
            tokio::time::sleep(Duration::from_millis(latency)).await;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}

async fn drain_until_closed(mut client: TcpStream, reset: &CancellationToken) {
    let mut sink = vec![0; 64 * 1024];
    loop {
        tokio::select! {
            _ = reset.cancelled() => {
                let _ = client.set_zero_linger();
                return;
            }
            read = client.read(&mut sink) => if matches!(read, Ok(0) | Err(_)) { return },
        }
    }
}

/// The network fault schedule over `proxies`, each step lasting `each`: `latency` added to
/// every chunk, then every connection reset at once, then every connection half-open; then
/// healed. Returns what it did, with the numbers; a step that found no connection to hit
/// fails the test, since the fault would not have happened.
pub async fn degrade(proxies: &[&FaultProxy], latency: Duration, each: Duration) -> String {
    for proxy in proxies {
        proxy.add_latency(latency);
    }
    tokio::time::sleep(each).await;
    let mut reset = 0;
    for proxy in proxies {
        proxy.heal();
        reset += proxy.reset_all();
    }
    assert!(reset > 0, "no connection was open to reset");
    tokio::time::sleep(each / 2).await;
    let silenced: usize = proxies.iter().map(|proxy| proxy.go_silent()).sum();
    assert!(silenced > 0, "no connection was open to silence");
    tokio::time::sleep(each).await;
    for proxy in proxies {
        proxy.heal();
    }
    format!(
        "+{latency:?} for {each:?}, {reset} connections reset, {silenced} half-open for {each:?}"
    )
}
