//! The identity provider's signing keys (its JWKS), fetched when a token names a key not
//! seen yet: that is how a provider's key rotation reaches the services. The set is also
//! fetched again once it is older than its maximum age (`AUTH_JWKS_MAX_AGE_SECS`), so a key
//! the provider withdrew (compromised, say) stops verifying tokens within that time even
//! if no token names an unknown key. Refetching is rate-limited, so tokens with made-up key
//! ids cannot make the service hammer the provider, and while the provider cannot be
//! reached, requests get its last failure at once instead of each waiting out a fetch of
//! their own (known keys stay in use meanwhile: an outage of the provider is not one of
//! the API).

use std::collections::HashMap;
use std::sync::Arc;
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
    url: String,
    http: reqwest::Client,
    max_age: Duration,
    cache: RwLock<Cache>,
    /// The last fetch; held while fetching, so one fetch serves a burst.
    last_fetch: Mutex<Option<Fetch>>,
}

/// The keys of the last successful fetch, and when it was.
#[derive(Default)]
struct Cache {
    keys: HashMap<String, Arc<VerificationKey>>,
    fetched_at: Option<Instant>,
}

impl Cache {
    fn is_fresh(&self, max_age: Duration) -> bool {
        self.fetched_at.is_some_and(|at| at.elapsed() < max_age)
    }
}

struct Fetch {
    at: Instant,
    failure: Option<Arc<reqwest::Error>>,
}

impl KeySet {
    /// Keys from `url`, fetched again once older than `max_age`.
    pub fn new(url: String, max_age: Duration) -> Result<Self, reqwest::Error> {
        Ok(Self {
            url,
            http: reqwest::Client::builder().timeout(FETCH_TIMEOUT).build()?,
            max_age,
            cache: RwLock::new(Cache::default()),
            last_fetch: Mutex::new(None),
        })
    }

    /// The key named `kid`. The set is fetched again if `kid` is unknown and the set was
    /// not fetched within [`MIN_REFETCH_INTERVAL`], or if it is older than its maximum age;
    /// within [`RETRY_UNREACHABLE`] of a failed fetch, not at all.
    pub async fn get(&self, kid: &str) -> Result<Arc<VerificationKey>, AuthError> {
        {
            let cache = self.cache.read().await;
            if let (Some(key), true) = (cache.keys.get(kid), cache.is_fresh(self.max_age)) {
                return Ok(key.clone());
            }
        }
        let mut last_fetch = self.last_fetch.lock().await;
        let cache = self.cache.read().await;
        let known = cache.keys.get(kid).cloned();
        if let (Some(key), true) = (&known, cache.is_fresh(self.max_age)) {
            return Ok(key.clone()); // fetched by another request meanwhile
        }
        let none_known = cache.keys.is_empty();
        drop(cache);
        if let Some(last) = &*last_fetch {
            let failure = last.failure.as_ref();
            let wait = match (&known, failure) {
                // The set is due for a refresh: its age is the limit, unless it just failed.
                (Some(_), None) => Duration::ZERO,
                (Some(_), Some(_)) => RETRY_UNREACHABLE,
                (None, Some(_)) if none_known => RETRY_UNREACHABLE,
                (None, _) => MIN_REFETCH_INTERVAL,
            };
            if last.at.elapsed() < wait {
                return match (known, failure.filter(|_| none_known)) {
                    (Some(key), _) => Ok(key),
                    (None, Some(failure)) => Err(AuthError::KeysUnavailable(failure.clone())),
                    (None, None) => Err(unknown_key()),
                };
            }
        }
        let set = self.fetch().await;
        let at = Instant::now();
        let set = match set {
            Ok(set) => set,
            Err(e) => {
                let failure = Arc::new(e);
                *last_fetch = Some(Fetch {
                    at,
                    failure: Some(failure.clone()),
                });
                if none_known {
                    return Err(AuthError::KeysUnavailable(failure));
                }
                tracing::warn!(error = %failure, "could not refetch the identity provider's keys; keeping the known ones");
                return known.ok_or_else(unknown_key);
            }
        };
        *last_fetch = Some(Fetch { at, failure: None });
        let keys = usable_keys(&set);
        tracing::info!(keys = keys.len(), url = %self.url, "identity provider keys fetched");
        let found = keys.get(kid).cloned();
        *self.cache.write().await = Cache {
            keys,
            fetched_at: Some(at),
        };
        found.ok_or_else(unknown_key)
    }

    async fn fetch(&self) -> Result<JwkSet, reqwest::Error> {
        self.http
            .get(&self.url)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await
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
