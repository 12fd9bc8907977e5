//! The identity provider's signing keys (its JWKS), fetched when a token names a key not
//! seen yet: that is how a provider's key rotation reaches the services. Refetching is
//! rate-limited, so tokens with made-up key ids cannot make the service hammer the provider,
//! and while the provider cannot be reached, requests get its last failure at once instead
//! of each waiting out a fetch of its own.

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
    keys: RwLock<HashMap<String, Arc<VerificationKey>>>,
    /// The last fetch; held while fetching, so one fetch serves a burst.
    last_fetch: Mutex<Option<Fetch>>,
}

struct Fetch {
    at: Instant,
    failure: Option<Arc<reqwest::Error>>,
}

impl KeySet {
    pub fn new(url: String) -> Result<Self, reqwest::Error> {
        Ok(Self {
            url,
            http: reqwest::Client::builder().timeout(FETCH_TIMEOUT).build()?,
            keys: RwLock::new(HashMap::new()),
            last_fetch: Mutex::new(None),
        })
    }

    /// The key named `kid`, fetching the set again if it is unknown and was not fetched
    /// within [`MIN_REFETCH_INTERVAL`] (within [`RETRY_UNREACHABLE`] after a failure, while
    /// no key is known).
    pub async fn get(&self, kid: &str) -> Result<Arc<VerificationKey>, AuthError> {
        if let Some(key) = self.keys.read().await.get(kid) {
            return Ok(key.clone());
        }
        let mut last_fetch = self.last_fetch.lock().await;
        let known = self.keys.read().await;
        if let Some(key) = known.get(kid) {
            return Ok(key.clone()); // fetched by another request meanwhile
        }
        let none_known = known.is_empty();
        drop(known);
        if let Some(last) = &*last_fetch {
            let unreachable = last.failure.as_ref().filter(|_| none_known);
            let wait = if unreachable.is_some() {
                RETRY_UNREACHABLE
            } else {
                MIN_REFETCH_INTERVAL
            };
            if last.at.elapsed() < wait {
                return Err(match unreachable {
                    Some(failure) => AuthError::KeysUnavailable(failure.clone()),
                    None => unknown_key(),
                });
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
                return Err(unknown_key());
            }
        };
        *last_fetch = Some(Fetch { at, failure: None });
        let keys = usable_keys(&set);
        tracing::info!(keys = keys.len(), url = %self.url, "identity provider keys fetched");
        let found = keys.get(kid).cloned();
        *self.keys.write().await = keys;
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
