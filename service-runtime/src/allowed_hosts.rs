//! The host names a service answers to. A web page whose host name an attacker re-points at
//! 127.0.0.1 (DNS rebinding) reaches a developer's local services from the browser, as the
//! same origin as the page; but the browser sends the page's own host name. So a request
//! naming a host the service does not know is refused (421) before any route sees it.
//!
//! IP addresses are always accepted: rebinding needs a name, and kubelet probes and
//! Prometheus reach a pod by its address. A request without any host (no browser sends one)
//! is accepted too.

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::problem::{Problem, kind};

/// The names a service answers to, from `HTTP_ALLOWED_HOSTS`.
#[derive(Debug, Clone)]
pub struct AllowedHosts {
    names: Vec<String>,
}

impl AllowedHosts {
    /// `names` as configured: exact host names, `.example.com` for every name under
    /// `example.com`, or `*` for any name.
    pub fn new(names: &[String]) -> Self {
        Self {
            names: names
                .iter()
                .map(|name| name.trim().trim_end_matches('.').to_ascii_lowercase())
                .filter(|name| !name.is_empty())
                .collect(),
        }
    }

    /// Whether a request for `host` (a `Host` header or a URI's authority: a name or an
    /// address, with or without a port) is for this service.
    pub fn permit(&self, host: &str) -> bool {
        let name = host_name(host);
        if name.parse::<std::net::IpAddr>().is_ok() {
            return true;
        }
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.names.iter().any(|allowed| match allowed.as_str() {
            "*" => true,
            under if under.starts_with('.') => name.ends_with(under),
            exact => name == exact,
        })
    }
}

/// Whether `host` names this machine by a loopback name or address: `localhost` (or a name
/// under it), `127.0.0.1` or `[::1]`, with any port.
pub fn is_loopback_host(host: &str) -> bool {
    let name = host_name(host).trim_end_matches('.').to_ascii_lowercase();
    match name.parse::<std::net::IpAddr>() {
        Ok(address) => address.is_loopback(),
        Err(_) => name == "localhost" || name.ends_with(".localhost"),
    }
}

/// The host of a `Host` header or authority, without its port or an IPv6 address's
/// brackets.
fn host_name(host: &str) -> &str {
    match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _port)| name),
    }
}

/// Middleware: refuses a request for a host name not in `allowed`.
pub async fn refuse_unknown_hosts(
    State(allowed): State<AllowedHosts>,
    request: Request,
    next: Next,
) -> Response {
    // HTTP/2 carries the host in the URI (`:authority`); HTTP/1.1 in `Host`.
    let host = request.uri().authority().map(|a| a.as_str()).or_else(|| {
        request
            .headers()
            .get(header::HOST)
            .and_then(|host| host.to_str().ok())
    });
    match host {
        Some(host) if !allowed.permit(host) => {
            let shown: String = host.chars().filter(|c| !c.is_control()).take(100).collect();
            Problem::new(
                StatusCode::MISDIRECTED_REQUEST,
                kind::UNKNOWN_HOST,
                "Not a host this service answers to",
            )
            .detail(format!(
                "this service answers to the host names in HTTP_ALLOWED_HOSTS and to IP \
                 addresses; `{shown}` is not one of them"
            ))
            .into_response()
        }
        _ => next.run(request).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(names: &[&str]) -> AllowedHosts {
        AllowedHosts::new(&names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn configured_names_and_every_address_are_permitted() {
        let hosts = allowed(&["localhost", ".localhost", "shop.example.com"]);
        for permitted in [
            "localhost",
            "localhost:8080",
            "LOCALHOST.",
            "console.localhost:8080",
            "shop.example.com",
            "127.0.0.1:8080",
            "10.244.0.17:8080",
            "[::1]:8080",
            "[fd00::7]",
        ] {
            assert!(hosts.permit(permitted), "{permitted}");
        }
        for refused in [
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "example.com",
            "myshop.example.com",
            "",
        ] {
            assert!(!hosts.permit(refused), "{refused}");
        }
        assert!(allowed(&["*"]).permit("anything.example"));
    }

    #[test]
    fn only_loopback_names_and_addresses_are_loopback() {
        for loopback in [
            "localhost:8090",
            "127.0.0.1",
            "127.0.0.1:8090",
            "[::1]:8090",
            "LOCALHOST",
            "app.localhost:1",
        ] {
            assert!(is_loopback_host(loopback), "{loopback}");
        }
        for other in [
            "evil.example:8090",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
            "token-issuer:8090",
            "10.0.0.1:8090",
            "",
        ] {
            assert!(!is_loopback_host(other), "{other}");
        }
    }
}
