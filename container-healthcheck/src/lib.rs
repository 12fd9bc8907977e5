//! The probe behind every binary's `healthcheck` subcommand: the images are distroless, so a
//! container healthcheck runs the binary itself instead of curl.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Exits 0 (`Ok`) if `GET path` on the server listening at `address` answers 200 within
/// 3 s. An unspecified address (a container listening on all interfaces) is probed on
/// loopback.
pub async fn probe(mut address: SocketAddr, path: &str) -> anyhow::Result<()> {
    if address.ip().is_unspecified() {
        address.set_ip(Ipv4Addr::LOCALHOST.into());
    }
    let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
    let probe = async {
        let mut stream = TcpStream::connect(address).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await?;
        anyhow::Ok(head)
    };
    let head = tokio::time::timeout(Duration::from_secs(3), probe)
        .await
        .context("the probe timed out")??;
    if &head[9..12] != b"200" {
        bail!("{path}: {}", String::from_utf8_lossy(&head).trim_end());
    }
    Ok(())
}
