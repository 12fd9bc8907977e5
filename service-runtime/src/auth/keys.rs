//! The identity provider's signing keys (its JWKS), fetched when a token names a key not
//! seen yet: that is how a provider's key rotation reaches the services. The set is also
//! fetched again in the background every half its maximum age (`AUTH_JWKS_MAX_AGE_SECS`),
//! so a key the provider withdrew (compromised, say) stops verifying tokens within that
//! time even if no token names an unknown key, and no request ever waits for a refresh of
//! keys it knows: while the provider cannot be reached, known keys stay in use (an outage of
//! the provider is not one of the API). Fetching for unknown key ids is rate-limited, so
//! tokens with made-up key ids cannot make the service hammer the provider, and while no key
//! is known, requests get the last failure at once instead of each waiting out a fetch of
//! their own.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::sync::{Mutex, RwLock};
use tokio::time::Instant;

use super::AuthError;

/// Fetch at most this often for an unknown key id.
const MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(10);
/// While no key is known, retry a failed fetch at most this often.
const RETRY_UNREACHABLE: Duration = Duration::from_secs(1);
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// A verification key and the one algorithm it verifies.
#[derive(Clone)]
pub struct VerificationKey {
    pub decoding: DecodingKey,
    pub algorithm: Algorithm,
}

pub struct KeySet {
    inner: Arc<Keys>,
}

struct Keys {
    url: String,
    http: reqwest::Client,
    keys: RwLock<HashMap<String, Arc<VerificationKey>>>,
    /// The last fetch; held while fetching, so one fetch serves a burst.
    last_fetch: Mutex<Option<Fetch>>,
}

struct Fetch {
    at: Instant,
    failure: Option<Arc<reqwest::Error>>,
}

impl KeySet {
    /// Keys from `url`, fetched again in the background every `max_age / 2` (from a Tokio
    /// runtime's task, which ends when the set is dropped).
    pub fn new(url: String, max_age: Duration) -> Result<Self, reqwest::Error> {
        let inner = Arc::new(Keys {
            url,
            http: reqwest::Client::builder().timeout(FETCH_TIMEOUT).build()?,
            keys: RwLock::default(),
            last_fetch: Mutex::new(None),
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(refresh_every(max_age / 2, Arc::downgrade(&inner)));
        }
        Ok(Self { inner })
    }

    /// The key named `kid`: a known one at once, whatever the provider's state; an unknown
    /// one by fetching the set, unless it was fetched within [`MIN_REFETCH_INTERVAL`] (or,
    /// while no key is known and the last fetch failed, within [`RETRY_UNREACHABLE`]).
    pub async fn get(&self, kid: &str) -> Result<Arc<VerificationKey>, AuthError> {
        let keys = &self.inner;
        if let Some(key) = keys.keys.read().await.get(kid) {
            return Ok(key.clone());
        }
        let mut last_fetch = keys.last_fetch.lock().await;
        let none_known = {
            let known = keys.keys.read().await;
            if let Some(key) = known.get(kid) {
                return Ok(key.clone()); // fetched by another request meanwhile
            }
            known.is_empty()
        };
        if let Some(last) = &*last_fetch {
            let failure = last.failure.as_ref().filter(|_| none_known);
            let wait = if failure.is_some() {
                RETRY_UNREACHABLE
            } else {
                MIN_REFETCH_INTERVAL
            };
            if last.at.elapsed() < wait {
                return Err(match failure {
                    Some(failure) => AuthError::KeysUnavailable(failure.clone()),
                    None => unknown_key(),
                });
            }
        }
        match keys.fetch(&mut last_fetch).await {
            Ok(()) => {}
            Err(failure) if none_known => return Err(AuthError::KeysUnavailable(failure)),
            Err(_) => return Err(unknown_key()),
        }
        let found = keys.keys.read().await.get(kid).cloned();
        found.ok_or_else(unknown_key)
    }
}

/// Fetches the set every `interval` while it exists and has been fetched once.
async fn refresh_every(interval: Duration, keys: Weak<Keys>) {
    loop {
        tokio::time::sleep(interval).await;
        let Some(keys) = keys.upgrade() else { return };
        if keys.keys.read().await.is_empty() {
            continue; // fetched when a first token comes
        }
        let mut last_fetch = keys.last_fetch.lock().await;
        if let Err(failure) = keys.fetch(&mut last_fetch).await {
            tracing::warn!(error = %failure, "could not refetch the identity provider's keys; keeping the known ones");
        }
    }
}

impl Keys {
    /// Fetches the set and, if that works, replaces the known keys with it; records the
    /// attempt in `last_fetch`.
    async fn fetch(&self, last_fetch: &mut Option<Fetch>) -> Result<(), Arc<reqwest::Error>> {
        let fetched = async {
            self.http
                .get(&self.url)
                .send()
                .await?
                .error_for_status()?
                .json::<JwkSet>()
                .await
        }
        .await;
        let at = Instant::now();
        match fetched {
            Ok(set) => {
                *last_fetch = Some(Fetch { at, failure: None });
                let keys = usable_keys(&set);
                tracing::info!(keys = keys.len(), url = %self.url, "identity provider keys fetched");
                *self.keys.write().await = keys;
                Ok(())
            }
            Err(e) => {
                let failure = Arc::new(e);
                *last_fetch = Some(Fetch {
                    at,
                    failure: Some(failure.clone()),
                });
                Err(failure)
            }
        }
    }
}

fn unknown_key() -> AuthError {
    AuthError::InvalidToken("signed by a key the identity provider does not publish".into())
}

/// The set's signing keys this service can use, by key id: RSA (RS256) and P-256 (ES256)
/// keys with an id; others are skipped.
fn usable_keys(set: &JwkSet) -> HashMap<String, Arc<VerificationKey>> {
    set.keys
        .iter()
        .filter_map(|jwk| {
            if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
                return None;
            }
            let kid = jwk.common.key_id.clone()?;
            let algorithm = match (&jwk.algorithm, jwk.common.key_algorithm) {
                (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
                (AlgorithmParameters::EllipticCurve(ec), None | Some(KeyAlgorithm::ES256))
                    if ec.curve == EllipticCurve::P256 =>
                {
                    Algorithm::ES256
                }
                _ => return None,
            };
            let decoding = DecodingKey::from_jwk(jwk).ok()?;
            Some((
                kid,
                Arc::new(VerificationKey {
                    decoding,
                    algorithm,
                }),
            ))
        })
        .collect()
}
