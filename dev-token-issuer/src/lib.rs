//! A development OAuth2 token issuer, for the Docker-less demo and the tests: it publishes
//! its public key as a JWKS (what the services verify tokens against, as they would a real
//! provider's) and mints ES256 access tokens on request.
//!
//! Its signing key is generated when it starts and lives only in memory: nothing to commit,
//! nothing to leak, and every restart invalidates the tokens it issued. It authenticates
//! nobody (anyone who can reach it gets any token), so it must never run where real users
//! are: production uses a real OIDC provider, whose JWKS URL the services are given instead.

mod error;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use jsonwebtoken::jwk::{Jwk, JwkSet, ThumbprintHash};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use service_runtime::allowed_hosts::is_loopback_host;

pub use error::Error;

/// A development OAuth2 token issuer: JWKS and a token endpoint, its key generated at
/// start-up. Anyone who reaches it gets any token: never run it where real users are.
#[derive(Debug, clap::Parser)]
#[command(name = "dev-token-issuer", version)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "DEV_ISSUER_LISTEN", default_value = "127.0.0.1:8090")]
    pub listen: String,
    /// The `iss` of its tokens: the URL the services reach it at.
    #[arg(long, env = "DEV_ISSUER_URL", default_value = "http://127.0.0.1:8090")]
    pub issuer: String,
}

/// The claims of the access tokens the services accept (RFC 9068's core, with `scope` as a
/// space-separated list as in RFC 8693, and roles where Keycloak puts a realm's roles).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scope: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realm_access: Option<RealmAccess>,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
}

/// Keycloak's `realm_access` claim: the realm roles granted to the token's user.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RealmAccess {
    pub roles: Vec<String>,
}

/// The role that makes a caller an admin, unless the services are configured otherwise.
pub use service_runtime::auth::DEFAULT_ADMIN_ROLE as ADMIN_ROLE;

/// What a token is asked for.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TokenRequest {
    /// Who the token is for: a customer's id.
    pub sub: String,
    /// Space-separated scopes, e.g. `orders`.
    #[serde(default)]
    pub scope: String,
    /// Realm roles, e.g. [`ADMIN_ROLE`] for an operator.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Defaults to [`DEFAULT_AUDIENCE`].
    pub audience: Option<String>,
    /// Seconds until the token expires; defaults to an hour.
    pub expires_in: Option<u64>,
}

/// The audience the services expect unless configured otherwise.
pub const DEFAULT_AUDIENCE: &str = "orderflow";

const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

/// An ES256 signing key and the issuer name its tokens carry.
pub struct Issuer {
    issuer: String,
    key: EncodingKey,
    jwk: Jwk,
    kid: String,
}

impl Issuer {
    /// A fresh P-256 key pair, known only to this process; `issuer` is the `iss` of its
    /// tokens (by convention the URL it is served at).
    pub fn generate(issuer: impl Into<String>) -> Result<Self, Error> {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
            .map_err(|_| Error::KeyGeneration)?;
        let pkcs8 = pair.to_pkcs8v1().map_err(|_| Error::KeyGeneration)?;
        let key = EncodingKey::from_ec_der(pkcs8.as_ref());
        let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES256)?;
        // The key's RFC 7638 thumbprint names it: stable for the key, unique across restarts.
        let kid = jwk.thumbprint(ThumbprintHash::SHA256)?;
        jwk.common.key_id = Some(kid.clone());
        Ok(Self {
            issuer: issuer.into(),
            key,
            jwk,
            kid,
        })
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The public half, as served at `/.well-known/jwks.json`.
    pub fn jwks(&self) -> JwkSet {
        JwkSet {
            keys: vec![self.jwk.clone()],
        }
    }

    /// Signs `claims` as they are (tests use it for expired or foreign tokens).
    pub fn sign(&self, claims: &Claims) -> Result<String, Error> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        Ok(jsonwebtoken::encode(&header, claims, &self.key)?)
    }

    /// The claims of a token for `request`, valid from now.
    pub fn claims_for(&self, request: &TokenRequest) -> Claims {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let lifetime = request.expires_in.unwrap_or(DEFAULT_LIFETIME.as_secs());
        Claims {
            iss: self.issuer.clone(),
            sub: request.sub.clone(),
            aud: request
                .audience
                .clone()
                .unwrap_or_else(|| DEFAULT_AUDIENCE.to_owned()),
            scope: request.scope.clone(),
            realm_access: (!request.roles.is_empty()).then(|| RealmAccess {
                roles: request.roles.clone(),
            }),
            iat: now,
            nbf: now,
            exp: now + lifetime,
        }
    }

    /// A signed token for `request`.
    pub fn mint(&self, request: &TokenRequest) -> Result<String, Error> {
        self.sign(&self.claims_for(request))
    }
}

/// `GET /.well-known/openid-configuration`, `GET /.well-known/jwks.json` and `POST /token`
/// (JSON [`TokenRequest`] in, e.g. `{"sub": "ops", "scope": "orders", "roles":
/// ["orderflow-admin"]}`; `{access_token, token_type, expires_in, scope}` out).
pub fn router(issuer: Arc<Issuer>) -> Router {
    Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/token", post(token))
        .with_state(issuer)
}

async fn discovery(State(issuer): State<Arc<Issuer>>) -> Json<Value> {
    let base = issuer.issuer().trim_end_matches('/');
    Json(json!({
        "issuer": issuer.issuer(),
        "jwks_uri": format!("{base}/.well-known/jwks.json"),
        "token_endpoint": format!("{base}/token"),
        "id_token_signing_alg_values_supported": ["ES256"],
    }))
}

async fn jwks(State(issuer): State<Arc<Issuer>>) -> Json<JwkSet> {
    Json(issuer.jwks())
}

async fn token(
    State(issuer): State<Arc<Issuer>>,
    headers: axum::http::HeaderMap,
    Json(request): Json<TokenRequest>,
) -> Result<Json<Value>, Error> {
    // The issuer signs anything for anyone who reaches it, so only a developer's own tools
    // may: a web page whose host name an attacker re-points at 127.0.0.1 (DNS rebinding)
    // reaches it too, but sends its own host name.
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|host| host.to_str().ok())
        .unwrap_or_default();
    if !is_loopback_host(host) {
        return Err(Error::NotLoopback(host.chars().take(100).collect()));
    }
    let claims = issuer.claims_for(&request);
    let access_token = issuer.sign(&claims)?;
    Ok(Json(json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": claims.exp - claims.iat,
        "scope": claims.scope,
    })))
}

/// Serves [`router`] on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    issuer: Arc<Issuer>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(issuer))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};

    #[test]
    fn a_minted_token_verifies_against_the_published_key_and_carries_the_request() {
        let issuer = Issuer::generate("http://issuer.test").unwrap();
        let token = issuer
            .mint(&TokenRequest {
                sub: "alice".into(),
                scope: "orders".into(),
                roles: vec![ADMIN_ROLE.into()],
                audience: None,
                expires_in: Some(60),
            })
            .unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        let jwks = issuer.jwks();
        let jwk = jwks.find(header.kid.as_deref().unwrap()).unwrap();
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_issuer(&["http://issuer.test"]);
        validation.set_audience(&[DEFAULT_AUDIENCE]);
        let data = jsonwebtoken::decode::<Claims>(
            &token,
            &DecodingKey::from_jwk(jwk).unwrap(),
            &validation,
        )
        .unwrap();
        assert_eq!(data.claims.sub, "alice");
        assert_eq!(data.claims.scope, "orders");
        assert_eq!(data.claims.realm_access.unwrap().roles, [ADMIN_ROLE]);
        assert_eq!(data.claims.exp - data.claims.iat, 60);
    }

    #[test]
    fn every_start_has_a_key_of_its_own() {
        let first = Issuer::generate("http://issuer.test").unwrap();
        let second = Issuer::generate("http://issuer.test").unwrap();
        assert_ne!(first.kid, second.kid);
    }
}
