//! A TCP relay in front of the test's PostgreSQL that a test can cut (every connection
//! dropped, new ones closed at once, as when the server is away) and restore.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sqlx::postgres::PgConnectOptions;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

pub struct DatabaseProxy {
    pub port: u16,
    cut: Arc<AtomicBool>,
    relays: Arc<std::sync::Mutex<JoinSet<()>>>,
}

impl DatabaseProxy {
    /// Relays 127.0.0.1:<port> to the server `options` name.
    pub async fn start(options: &PgConnectOptions) -> Self {
        let server = format!("{}:{}", options.get_host(), options.get_port());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let relays = Arc::new(std::sync::Mutex::new(JoinSet::new()));
        let (accepting, tasks) = (cut.clone(), relays.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if accepting.load(Ordering::SeqCst) {
                    continue; // dropped: closed at once
                }
                let server = server.clone();
                tasks.lock().unwrap().spawn(async move {
                    if let Ok(mut upstream) = TcpStream::connect(&server).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                });
            }
        });
        Self { port, cut, relays }
    }

    /// Options that reach the server through this proxy.
    pub fn options(&self, direct: &PgConnectOptions) -> PgConnectOptions {
        direct.clone().host("127.0.0.1").port(self.port)
    }

    /// The server is away: every open connection is dropped, new ones are closed at once.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.relays.lock().unwrap().abort_all();
    }

    /// The server answers again.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}
