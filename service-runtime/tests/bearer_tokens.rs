//! Tokens checked against a real JWKS endpoint (the dev token issuer, served here): the
//! provider's key rotation is picked up by fetching the key set again when a token names an
//! unknown key, at most every 10 s, and a provider that cannot be reached is a 503, not a
//! 401, until its keys are known (retried at most every second meanwhile). Keys are
//! fetched again once older than their maximum age, so a withdrawn key stops verifying.

use std::sync::Arc;
use std::time::Duration;

use dev_token_issuer::{Issuer, TokenRequest};
use service_runtime::auth::{AuthConfig, AuthError, Authenticator};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const ISSUER: &str = "http://issuer.test";

/// Serves `issuer`'s JWKS on `listener` until the returned token is cancelled.
fn serve(listener: TcpListener, issuer: Arc<Issuer>) -> CancellationToken {
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    tokio::spawn(async move {
        dev_token_issuer::serve(listener, issuer, async move { stopped.cancelled().await })
            .await
            .unwrap();
    });
    stop
}

fn token(issuer: &Issuer, subject: &str) -> String {
    issuer
        .mint(&TokenRequest {
            sub: subject.into(),
            scope: "orders".into(),
            expires_in: Some(300),
            ..TokenRequest::default()
        })
        .unwrap()
}

#[tokio::test]
async fn a_rotated_key_is_picked_up_and_an_unreachable_provider_is_a_503() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let authenticator = Authenticator::new(&AuthConfig::new(
        format!("http://{address}/.well-known/jwks.json"),
        ISSUER,
    ))
    .unwrap();

    let before = Arc::new(Issuer::generate(ISSUER).unwrap());
    // Nothing fetched yet and nobody answers: the service cannot judge the token.
    let unreachable = authenticator.verify(&token(&before, "alice")).await;
    assert!(
        matches!(unreachable, Err(AuthError::KeysUnavailable(_))),
        "{unreachable:?}"
    );

    // Meanwhile other requests get that failure at once rather than each waiting out a
    // fetch of its own (the bound is far below the 5 s a fetch may take).
    let meanwhile = tokio::time::timeout(
        Duration::from_secs(2),
        authenticator.verify(&token(&before, "alice")),
    )
    .await
    .expect("answered without fetching again");
    assert!(
        matches!(meanwhile, Err(AuthError::KeysUnavailable(_))),
        "{meanwhile:?}"
    );

    // Once it answers, a token after the retry interval (1 s) fetches the set.
    let stop = serve(listener, before.clone());
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let caller = authenticator
        .verify(&token(&before, "alice"))
        .await
        .unwrap();
    assert_eq!(caller.subject(), "alice");

    // The provider rotates its key: same address, new key.
    stop.cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = Arc::new(Issuer::generate(ISSUER).unwrap());
    let _stop = serve(TcpListener::bind(address).await.unwrap(), after.clone());
    // Within the interval the set is not fetched again: a flood of unknown key ids cannot
    // make the service hammer the provider.
    let too_soon = authenticator.verify(&token(&after, "bob")).await;
    assert!(
        matches!(too_soon, Err(AuthError::InvalidToken(_))),
        "{too_soon:?}"
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    let caller = authenticator.verify(&token(&after, "bob")).await.unwrap();
    assert_eq!(caller.subject(), "bob");
    // The retired key no longer verifies anything.
    let retired = authenticator.verify(&token(&before, "alice")).await;
    assert!(
        matches!(retired, Err(AuthError::InvalidToken(_))),
        "{retired:?}"
    );
}

/// A key the provider withdraws (no new key needed) stops verifying tokens once the cached
/// set is older than `AUTH_JWKS_MAX_AGE_SECS`. Before, the cache was only ever refreshed
/// for an unknown key id, so a withdrawn key was trusted until the service restarted.
#[tokio::test]
async fn a_withdrawn_key_stops_verifying_once_the_cached_set_is_too_old() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let authenticator = Authenticator::new(&AuthConfig {
        jwks_max_age_secs: 2,
        ..AuthConfig::new(format!("http://{address}/.well-known/jwks.json"), ISSUER)
    })
    .unwrap();
    let withdrawn = Arc::new(Issuer::generate(ISSUER).unwrap());
    let stop = serve(listener, withdrawn.clone());
    authenticator
        .verify(&token(&withdrawn, "alice"))
        .await
        .unwrap();

    // The provider now publishes another key only.
    stop.cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let current = Arc::new(Issuer::generate(ISSUER).unwrap());
    let stop = serve(TcpListener::bind(address).await.unwrap(), current.clone());
    // Until the cached set is too old, the known key still verifies.
    authenticator
        .verify(&token(&withdrawn, "alice"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let refused = authenticator.verify(&token(&withdrawn, "alice")).await;
    assert!(
        matches!(refused, Err(AuthError::InvalidToken(_))),
        "a withdrawn key still verifies: {refused:?}"
    );
    // While the provider is unreachable, the keys known stay in use.
    authenticator.verify(&token(&current, "bob")).await.unwrap();
    stop.cancel();
    tokio::time::sleep(Duration::from_millis(2_300)).await;
    let during_outage = authenticator.verify(&token(&current, "bob")).await;
    assert!(during_outage.is_ok(), "{during_outage:?}");
}

/// While the provider does not answer (its port accepts connections and says nothing), a
/// token signed with a known key is verified at once, however old the cached set. Before, a
/// request that found the set older than its maximum age fetched it itself and waited out
/// the 5 s fetch timeout, and every request behind it waited too.
#[tokio::test]
async fn known_keys_verify_at_once_while_the_provider_does_not_answer() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let authenticator = Authenticator::new(&AuthConfig {
        jwks_max_age_secs: 1,
        ..AuthConfig::new(format!("http://{address}/.well-known/jwks.json"), ISSUER)
    })
    .unwrap();
    let issuer = Arc::new(Issuer::generate(ISSUER).unwrap());
    let stop = serve(listener, issuer.clone());
    authenticator
        .verify(&token(&issuer, "alice"))
        .await
        .unwrap();

    stop.cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Accepts connections (the kernel's backlog) and never reads or answers them.
    let _silent = std::net::TcpListener::bind(address).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    let mut slowest = Duration::ZERO;
    while tokio::time::Instant::now() < deadline {
        let started = tokio::time::Instant::now();
        authenticator
            .verify(&token(&issuer, "alice"))
            .await
            .unwrap();
        slowest = slowest.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        slowest < Duration::from_millis(500),
        "a request with a known key waited {slowest:?} for the provider"
    );
}

/// The dev issuer signs anything, so it hands tokens only to requests for a loopback host
/// name: a web page whose own host name an attacker points at 127.0.0.1 (DNS rebinding)
/// sends that name, and is refused. Before, any Host got a token, an admin's included.
#[tokio::test]
async fn the_dev_issuer_mints_only_for_loopback_host_names() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let issuer = Arc::new(Issuer::generate(ISSUER).unwrap());
    let _stop = serve(listener, issuer);
    let ask = |host: &'static str| {
        reqwest::Client::new()
            .post(format!("http://{address}/token"))
            .header(reqwest::header::HOST, host)
            .json(&serde_json::json!({"sub": "ops", "roles": ["orderflow-admin"]}))
            .send()
    };
    let rebound = ask("evil.example:8090").await.unwrap();
    assert_eq!(rebound.status(), reqwest::StatusCode::FORBIDDEN);
    let local = ask("localhost:8090").await.unwrap();
    assert_eq!(local.status(), reqwest::StatusCode::OK);
}
