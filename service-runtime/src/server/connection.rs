//! One client connection: served by hyper until the client closes it, the server shuts
//! down (requests in flight finish), or it has had no request in flight for the idle limit.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// How long a connection closed for idleness may take to say goodbye (an HTTP/2 GOAWAY)
/// before it is dropped.
const GOODBYE: Duration = Duration::from_secs(1);

pub(super) struct Served {
    pub builder: Arc<auto::Builder<TokioExecutor>>,
    pub router: Router,
    pub peer: SocketAddr,
    pub idle_limit: Duration,
}

impl Served {
    pub async fn run(self, stream: TcpStream, shutdown: CancellationToken) {
        let Self {
            builder,
            router,
            peer,
            idle_limit,
        } = self;
        let activity = Activity::default();
        let requests = activity.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            let busy = requests.begin();
            let response = router.clone().oneshot(request.map(Body::new));
            async move {
                let response = response.await?;
                // In flight until its body is sent: a live feed streams for minutes.
                Ok::<_, Infallible>(response.map(|body| {
                    Body::new(body.map_frame(move |frame| {
                        let _in_flight = &busy;
                        frame
                    }))
                }))
            }
        });
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        tokio::pin!(connection);
        let mut closing = false;
        let mut drop_at: Option<Instant> = None;
        loop {
            let idle_check = activity.idle_deadline(idle_limit);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        // A client that went away or was too slow: nothing to act on.
                        tracing::debug!(%peer, error = %e, "connection ended");
                    }
                    return;
                }
                () = shutdown.cancelled(), if !closing => {
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
                () = tokio::time::sleep_until(idle_check), if !closing => {
                    if activity.is_idle_for(idle_limit) {
                        tracing::debug!(%peer, ?idle_limit, "connection idle: closed");
                        connection.as_mut().graceful_shutdown();
                        closing = true;
                        drop_at = Some(Instant::now() + GOODBYE);
                    }
                }
                () = sleep_until_some(drop_at) => return,
            }
        }
    }
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Whether a connection has requests in flight, and since when it has had none.
#[derive(Clone)]
struct Activity(Arc<Mutex<ActivityState>>);

struct ActivityState {
    in_flight: usize,
    idle_since: Instant,
}

/// A request in flight; ends when dropped (its response body sent, or abandoned).
struct Busy(Activity);

impl Default for Activity {
    fn default() -> Self {
        Self(Arc::new(Mutex::new(ActivityState {
            in_flight: 0,
            idle_since: Instant::now(),
        })))
    }
}

impl Activity {
    fn state(&self) -> std::sync::MutexGuard<'_, ActivityState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn begin(&self) -> Busy {
        self.state().in_flight += 1;
        Busy(self.clone())
    }

    /// When the connection would have been idle for `limit`, as far as is known now.
    fn idle_deadline(&self, limit: Duration) -> Instant {
        let state = self.state();
        if state.in_flight > 0 {
            Instant::now() + limit
        } else {
            state.idle_since + limit
        }
    }

    fn is_idle_for(&self, limit: Duration) -> bool {
        let state = self.state();
        state.in_flight == 0 && state.idle_since.elapsed() >= limit
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut state = self.0.state();
        state.in_flight -= 1;
        if state.in_flight == 0 {
            state.idle_since = Instant::now();
        }
    }
}
