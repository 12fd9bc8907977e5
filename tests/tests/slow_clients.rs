//! Slow, silent and crowding clients cannot hold a service's connections:
//! - a client that sends a request's headers one byte at a time is cut off once
//!   `HTTP_HEADER_READ_TIMEOUT_MS` has passed (before, the request timeout started only
//!   after the headers, and such a client stayed connected for as long as it kept
//!   dribbling), and a thousand of them at once do not keep a normal request from being
//!   served;
//! - a client that sends nothing, or only the HTTP/2 preface, is cut off as soon (before,
//!   both were held for good: the header-read timeout starts with the first bytes of an
//!   HTTP/1 request, and HTTP/2 had no idle limit);
//! - one address cannot take more than `HTTP_MAX_CONNECTIONS_PER_ADDRESS` connections
//!   (before, 4,096 silent connections took every slot without a token).
//!
//! Each crowd connects from an address of its own in 127.0.0.0/8, so the per-address cap
//! applies to it and not to the test's own requests from 127.0.0.1.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use orderflow_e2e::Stack;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(2);
/// How long past the timeout a slow client may still be connected (timer, scheduling, and
/// the second an idle connection has to say goodbye).
const SLACK: Duration = Duration::from_millis(2500);
const SLOW_CLIENTS: usize = 1_000;
const PER_ADDRESS: usize = 256;

/// A connection to `address` from the loopback address `from`.
async fn connect_from(from: Ipv4Addr, address: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((from, 0))).unwrap();
    socket.connect(address.parse().unwrap()).await.unwrap()
}

/// Connects from `from`, sends `opening` (nothing, or the HTTP/2 preface) and nothing
/// more; returns how long the server kept the connection open, or `None` if it was still
/// open after `give_up`.
async fn silent(
    from: Ipv4Addr,
    address: &str,
    opening: &[u8],
    give_up: Duration,
) -> Option<Duration> {
    let mut stream = connect_from(from, address).await;
    let started = Instant::now();
    stream.write_all(opening).await.unwrap();
    let mut buffer = [0_u8; 512];
    loop {
        let left = give_up.checked_sub(started.elapsed())?;
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => continue, // HTTP/2 SETTINGS, then a GOAWAY; its EOF follows
            Err(_) => return None,
        }
    }
}

/// Starts a request and sends its headers one byte a second; returns how long the server
/// kept the connection open, or `None` if it was still open after `give_up`.
async fn dribble(from: Ipv4Addr, address: &str, give_up: Duration) -> Option<Duration> {
    let mut stream = connect_from(from, address).await;
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
        &[
            (
                "HTTP_HEADER_READ_TIMEOUT_MS",
                HEADER_READ_TIMEOUT.as_millis().to_string(),
            ),
            ("HTTP_MAX_CONNECTIONS_PER_ADDRESS", PER_ADDRESS.to_string()),
        ],
    )
    .await;
    let base = stack.url("order-service").to_owned();
    let address = base.trim_start_matches("http://").to_owned();
    let give_up = HEADER_READ_TIMEOUT * 5;
    let client = Ipv4Addr::new(127, 0, 0, 2);

    for (what, opening) in [
        ("sends nothing", &b""[..]),
        (
            "sends only the HTTP/2 preface",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ),
    ] {
        let held = silent(client, &address, opening, give_up).await;
        println!("a client that {what} was held {held:?}");
        assert!(
            held.is_some_and(|held| held <= HEADER_READ_TIMEOUT + SLACK),
            "a client that {what} was held {held:?} (None: still connected after {give_up:?})"
        );
    }

    // A flood from one address: past PER_ADDRESS, its connections are closed at once, and
    // the rest of the world is served meanwhile.
    let flooder = Ipv4Addr::new(127, 0, 0, 3);
    let flood: Vec<_> = (0..PER_ADDRESS + 50)
        .map(|_| {
            let address = address.clone();
            tokio::spawn(async move { silent(flooder, &address, b"", give_up).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let orders = orderflow_e2e::http()
        .get(format!("{base}/orders?limit=1"))
        .timeout(Duration::from_secs(1))
        .send()
        .await
        .expect("a normal request during a flood of silent connections from one address");
    assert_eq!(orders.status(), 200);
    let mut held = Vec::new();
    for connection in flood {
        held.push(connection.await.unwrap());
    }
    let turned_away = held
        .iter()
        .filter(|held| held.is_some_and(|held| held < Duration::from_millis(500)))
        .count();
    println!(
        "{} connections from one address: {turned_away} closed at once",
        held.len()
    );
    assert!(
        turned_away >= 50,
        "{turned_away} of the flood were closed at once"
    );

    let alone = dribble(client, &address, give_up).await;
    assert!(
        alone.is_some_and(|held| held <= HEADER_READ_TIMEOUT + SLACK),
        "a client dribbling its headers was held {alone:?} (None: still connected after {give_up:?}); \
         the header-read timeout is {HEADER_READ_TIMEOUT:?}"
    );

    // Spread over addresses, each under the per-address cap.
    let crowd: Vec<_> = (0..SLOW_CLIENTS)
        .map(|i| {
            let address = address.clone();
            let from = Ipv4Addr::new(127, 0, 1, (i % 8) as u8 + 1);
            tokio::spawn(async move { dribble(from, &address, give_up).await })
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
