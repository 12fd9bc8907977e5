//! Who is calling, and what they may do: OAuth2 bearer tokens (JWTs signed by the identity
//! provider, RS256 or ES256) checked against the provider's JWKS, and the authorization
//! rules of every service, decided here and nowhere else.
//!
//! - [`Caller`]: a valid token with the `orders` or `admin` scope. The customer is the
//!   token's subject; [`Caller::may_access`] says whether they may see or act on what
//!   belongs to a customer (their own; anything, for an admin). Handlers answer 404, not
//!   403, for what they may not see, so that ids do not leak.
//! - [`Admin`]: a valid token with the `admin` scope (catalog and account writes, reading
//!   anything, operations).
//!
//! A missing or bad token is a 401 with `WWW-Authenticate` (RFC 6750), a token without the
//! scope a 403, both as problem+json.

mod keys;
mod openapi;

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jsonwebtoken::Validation;
use serde::Deserialize;

pub use keys::KeySet;
pub use openapi::document;

use crate::problem::Problem;

/// Where tokens come from, and for whom they must be.
#[derive(Debug, Clone, clap::Args)]
pub struct AuthConfig {
    /// The identity provider's JWKS URL: the public keys tokens are checked against (e.g.
    /// Keycloak's `.../realms/orderflow/protocol/openid-connect/certs`).
    /// Required to serve; maintenance commands (migrate, rebuild-view) do without.
    #[arg(long = "auth-jwks-url", env = "AUTH_JWKS_URL")]
    pub jwks_url: Option<String>,
    /// The `iss` every token must carry (the provider's issuer URL). Required to serve.
    #[arg(long = "auth-issuer", env = "AUTH_ISSUER")]
    pub issuer: Option<String>,
    /// The `aud` every token must carry: this API's name at the provider.
    #[arg(
        long = "auth-audience",
        env = "AUTH_AUDIENCE",
        default_value = "orderflow"
    )]
    pub audience: String,
}

/// The scopes this API knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// A customer's own orders and account, and reading the catalog.
    Orders,
    /// Everything, and operations: catalog and account writes.
    Admin,
}

impl Scope {
    pub const fn as_str(self) -> &'static str {
        match self {
            Scope::Orders => "orders",
            Scope::Admin => "admin",
        }
    }
}

/// Checks bearer tokens; shared by every request of a service.
pub struct Authenticator {
    keys: KeySet,
    issuer: String,
    audience: String,
}

/// The claims this API reads; the signature, `iss`, `aud`, `exp` and `nbf` are checked by
/// `jsonwebtoken` before these are trusted.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    scope: String,
}

/// Clock skew tolerated between the provider and this service.
const LEEWAY_SECS: u64 = 30;

/// Why the service cannot check tokens as configured.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error(
        "AUTH_JWKS_URL and AUTH_ISSUER must name the identity provider: every business route checks bearer tokens (locally, scripts/stack-up runs a dev issuer on 127.0.0.1:8090)"
    )]
    Missing,
    #[error("cannot build the client that fetches the provider's keys")]
    Client(#[from] reqwest::Error),
}

impl Authenticator {
    pub fn new(config: &AuthConfig) -> Result<Self, AuthConfigError> {
        let (Some(jwks_url), Some(issuer)) = (&config.jwks_url, &config.issuer) else {
            return Err(AuthConfigError::Missing);
        };
        Ok(Self {
            keys: KeySet::new(jwks_url.clone())?,
            issuer: issuer.clone(),
            audience: config.audience.clone(),
        })
    }

    /// The caller a bearer token speaks for, if the provider signed it for this API and it
    /// is current.
    pub async fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| AuthError::InvalidToken(format!("malformed token: {e}")))?;
        let kid = header
            .kid
            .ok_or_else(|| AuthError::InvalidToken("the token names no signing key".into()))?;
        let key = self.keys.get(&kid).await?;
        if header.alg != key.algorithm {
            // The key decides the algorithm, never the token: no algorithm confusion.
            return Err(AuthError::InvalidToken(
                "the token's algorithm is not its key's".into(),
            ));
        }
        let mut validation = Validation::new(key.algorithm);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        let data = jsonwebtoken::decode::<Claims>(token, &key.decoding, &validation)
            .map_err(|e| AuthError::InvalidToken(e.to_string()))?;
        Ok(Caller {
            subject: data.claims.sub,
            scopes: data
                .claims
                .scope
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
        })
    }
}

/// Someone with a valid token for this API, holding the `orders` or `admin` scope.
#[derive(Debug, Clone)]
pub struct Caller {
    subject: String,
    scopes: Vec<String>,
}

impl Caller {
    /// The token's subject: for a customer, their customer id.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.iter().any(|s| s == scope.as_str())
    }

    /// Whether the token holds a scope of this API at all (`orders` or `admin`).
    pub fn may_use_the_api(&self) -> bool {
        self.has(Scope::Orders) || self.has(Scope::Admin)
    }

    /// Whether the caller may see and act on what belongs to customer `owner`.
    pub fn may_access(&self, owner: &str) -> bool {
        self.has(Scope::Admin) || (self.has(Scope::Orders) && self.subject == owner)
    }
}

/// A [`Caller`] holding the `admin` scope.
#[derive(Debug, Clone)]
pub struct Admin(pub Caller);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let caller = authenticated(parts).await?;
        if caller.may_use_the_api() {
            Ok(caller)
        } else {
            Err(AuthError::InsufficientScope(Scope::Orders))
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Admin {
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let caller = authenticated(parts).await?;
        if caller.has(Scope::Admin) {
            Ok(Admin(caller))
        } else {
            Err(AuthError::InsufficientScope(Scope::Admin))
        }
    }
}

/// A request's token, checked: kept in its extensions, so that admission control (which
/// must know who asks before it counts a request) and the route's extractor check it once.
#[derive(Debug, Clone)]
struct Checked(Result<Caller, AuthError>);

/// Who `parts`' bearer token speaks for, checked at most once per request.
pub async fn authenticated(parts: &mut Parts) -> Result<Caller, AuthError> {
    if let Some(Checked(outcome)) = parts.extensions.get::<Checked>() {
        return outcome.clone();
    }
    let outcome = authenticate(parts).await;
    parts.extensions.insert(Checked(outcome.clone()));
    outcome
}

async fn authenticate(parts: &Parts) -> Result<Caller, AuthError> {
    let authenticator = parts
        .extensions
        .get::<Arc<Authenticator>>()
        .ok_or(AuthError::NotConfigured)?
        .clone();
    let value = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or(AuthError::MissingToken)?;
    let token = value
        .to_str()
        .ok()
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .filter(|token| !token.is_empty())
        .ok_or_else(|| {
            AuthError::InvalidToken("expected 'Authorization: Bearer <token>'".into())
        })?;
    authenticator.verify(token).await
}

/// Why a request is not let through.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token")]
    MissingToken,
    #[error("invalid token: {0}")]
    InvalidToken(String),
    #[error("the token lacks the '{}' scope", .0.as_str())]
    InsufficientScope(Scope),
    #[error("the identity provider's keys cannot be fetched")]
    KeysUnavailable(#[source] Arc<reqwest::Error>),
    #[error("the route checks tokens but the service has no authenticator")]
    NotConfigured,
}

const REALM: &str = "orderflow";

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let (problem, challenge) = match &self {
            AuthError::MissingToken => (
                unauthorized().detail("send 'Authorization: Bearer <access token>'"),
                format!("Bearer realm=\"{REALM}\""),
            ),
            AuthError::InvalidToken(reason) => (
                unauthorized().detail(reason.clone()),
                format!(
                    "Bearer realm=\"{REALM}\", error=\"invalid_token\", error_description=\"{}\"",
                    reason.replace(['"', '\\'], "'")
                ),
            ),
            AuthError::InsufficientScope(scope) => (
                Problem::new(
                    StatusCode::FORBIDDEN,
                    "/problems/insufficient-scope",
                    "The token does not allow this",
                )
                .detail(format!("this needs the '{}' scope", scope.as_str())),
                format!(
                    "Bearer realm=\"{REALM}\", error=\"insufficient_scope\", scope=\"{}\"",
                    scope.as_str()
                ),
            ),
            AuthError::KeysUnavailable(source) => {
                tracing::warn!(error = %source, "cannot fetch the identity provider's keys");
                let mut response = Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "/problems/identity-provider-unavailable",
                    "Tokens cannot be checked right now",
                )
                .into_response();
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
                return response;
            }
            AuthError::NotConfigured => {
                tracing::error!("{self}");
                return Problem::internal().into_response();
            }
        };
        let mut response = problem.into_response();
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }
}

fn unauthorized() -> Problem {
    Problem::new(
        StatusCode::UNAUTHORIZED,
        "/problems/unauthorized",
        "A valid access token is needed",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_without_an_identity_provider_refuses_to_start() {
        let config = AuthConfig {
            jwks_url: None,
            issuer: Some("https://login.example.com".into()),
            audience: "orderflow".into(),
        };
        assert!(matches!(
            Authenticator::new(&config),
            Err(AuthConfigError::Missing)
        ));
    }

    #[test]
    fn a_customer_acts_for_themselves_and_an_admin_for_anyone() {
        let caller = |scopes: &[&str]| Caller {
            subject: "alice".into(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        };
        assert!(caller(&["orders"]).may_access("alice"));
        assert!(!caller(&["orders"]).may_access("bob"));
        assert!(caller(&["admin"]).may_access("bob"));
        assert!(!caller(&[]).may_access("alice"));
    }
}
