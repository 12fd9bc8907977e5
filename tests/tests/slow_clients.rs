//! Slow clients cannot hold a service's connections: a client that sends a request's
//! headers one byte at a time is cut off once `HTTP_HEADER_READ_TIMEOUT_MS` has passed
//! (before, the request timeout started only after the headers, and such a client stayed
//! connected for as long as it kept dribbling), and a thousand of them at once do not keep
//! a normal request from being served.

use std::time::Duration;

use orderflow_e2e::Stack;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(2);
/// How long past the timeout a slow client may still be connected (timer and scheduling).
const SLACK: Duration = Duration::from_millis(1500);
const SLOW_CLIENTS: usize = 1_000;

/// Starts a request and sends its headers one byte a second; returns how long the server
/// kept the connection open, or `None` if it was still open after `give_up`.
async fn dribble(address: &str, give_up: Duration) -> Option<Duration> {
    let mut stream = TcpStream::connect(address).await.unwrap();
    let started = Instant::now();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .unwrap();
    let header = b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    let mut buffer = [0_u8; 512];
    for byte in header.iter().cycle() {
        if started.elapsed() > give_up {
            return None;
        }
        // Closed by the server: a read ends (EOF, or the 408/400 it may send first, then
        // EOF) or a write fails.
        match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buffer)).await {
            Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => continue, // an error response; its EOF follows
            Err(_) => {}
        }
        if stream.write_all(&[*byte]).await.is_err() {
            return Some(started.elapsed());
        }
    }
    unreachable!("the header cycles forever")
}

#[tokio::test]
async fn slow_clients_are_cut_off_and_cannot_crowd_out_others() {
    let mut stack = Stack::start(
        "slow",
        &[(
            "HTTP_HEADER_READ_TIMEOUT_MS",
            HEADER_READ_TIMEOUT.as_millis().to_string(),
        )],
    )
    .await;
    let base = stack.url("order-service").to_owned();
    let address = base.trim_start_matches("http://").to_owned();
    let give_up = HEADER_READ_TIMEOUT * 5;

    let alone = dribble(&address, give_up).await;
    assert!(
        alone.is_some_and(|held| held <= HEADER_READ_TIMEOUT + SLACK),
        "a client dribbling its headers was held {alone:?} (None: still connected after {give_up:?}); \
         the header-read timeout is {HEADER_READ_TIMEOUT:?}"
    );

    let crowd: Vec<_> = (0..SLOW_CLIENTS)
        .map(|_| {
            let address = address.clone();
            tokio::spawn(async move { dribble(&address, give_up).await })
        })
        .collect();
    // Once they are all connected and dribbling, a normal request is served at once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let orders = orderflow_e2e::http()
        .get(format!("{base}/orders?limit=1"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("a normal request among a thousand slow clients");
    assert_eq!(orders.status(), 200);
    println!(
        "a normal request among {SLOW_CLIENTS} slow clients answered in {:?}",
        started.elapsed()
    );
    let mut held = Vec::new();
    for client in crowd {
        held.push(client.await.unwrap());
    }
    let still_connected = held.iter().filter(|h| h.is_none()).count();
    let longest = held.iter().flatten().max().copied().unwrap_or_default();
    println!(
        "{SLOW_CLIENTS} slow clients: longest held {longest:?}, {still_connected} never cut off"
    );
    assert_eq!(still_connected, 0);
    // All of them were let in at once, so each was cut off by its own timer.
    assert!(
        longest <= HEADER_READ_TIMEOUT + SLACK * 2,
        "held {longest:?}"
    );
    stack.stop_all().await;
}
