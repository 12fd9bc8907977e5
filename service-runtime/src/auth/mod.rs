//! Who is calling, and what they may do: OAuth2 bearer tokens (JWTs signed by the identity
//! provider, RS256 or ES256) checked against the provider's JWKS, and the authorization
//! rules of every service, decided here and nowhere else.
//!
//! - [`Caller`]: a valid token with the `orders` scope, or an admin's. The customer is the
//!   token's subject; [`Caller::may_access`] says whether they may see or act on what
//!   belongs to a customer (their own; anything, for an admin). Handlers answer 404, not
//!   403, for what they may not see, so that ids do not leak.
//! - [`Admin`]: a valid token whose role claim holds the admin role (catalog and account
//!   writes, reading anything, operations). Never a scope: where the provider lets a client
//!   ask for any scope it knows (Keycloak's optional client scopes), a customer could ask
//!   for `admin`; roles are granted to users by the provider's administrators.
//!
//! A missing or bad token is a 401 with `WWW-Authenticate` (RFC 6750), a token without the
//! scope or role a 403, both as problem+json.

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
use crate::problem::kind;

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
    /// Longest the provider's keys are trusted before they are fetched again (besides
    /// whenever a token names an unknown key): how soon a key the provider withdrew stops
    /// verifying tokens.
    #[arg(
        long = "auth-jwks-max-age-secs",
        env = "AUTH_JWKS_MAX_AGE_SECS",
        default_value_t = 600,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub jwks_max_age_secs: u64,
    /// The `aud` every token must carry: this API's name at the provider.
    #[arg(
        long = "auth-audience",
        env = "AUTH_AUDIENCE",
        default_value = "orderflow"
    )]
    pub audience: String,
    /// Where the token lists its roles: a dot-separated path into its claims, to an array
    /// of strings (Keycloak's realm roles: `realm_access.roles`; its client roles:
    /// `resource_access.<client>.roles`; other providers: often `roles`).
    #[arg(
        long = "auth-role-claim",
        env = "AUTH_ROLE_CLAIM",
        default_value = "realm_access.roles"
    )]
    pub role_claim: String,
    /// The role that makes a caller an admin.
    #[arg(
        long = "auth-admin-role",
        env = "AUTH_ADMIN_ROLE",
        default_value = "orderflow-admin"
    )]
    pub admin_role: String,
    /// If set, the `typ` every token must carry (in its header or its claims), so that
    /// other tokens the provider signs (ID tokens, refresh tokens) are refused: Keycloak's
    /// access tokens say `Bearer`, RFC 9068's `at+jwt`.
    #[arg(long = "auth-token-type", env = "AUTH_TOKEN_TYPE")]
    pub token_type: Option<String>,
    /// If set, the clients (`azp`) whose tokens are accepted, comma-separated: tokens the
    /// provider issued to other clients of the same audience are refused.
    #[arg(
        long = "auth-authorized-parties",
        env = "AUTH_AUTHORIZED_PARTIES",
        value_delimiter = ','
    )]
    pub authorized_parties: Vec<String>,
}

impl AuthConfig {
    /// Tokens from the provider at `jwks_url` and `issuer`, every other setting its default.
    pub fn new(jwks_url: impl Into<String>, issuer: impl Into<String>) -> Self {
        Self {
            jwks_url: Some(jwks_url.into()),
            issuer: Some(issuer.into()),
            jwks_max_age_secs: 600,
            audience: "orderflow".into(),
            role_claim: "realm_access.roles".into(),
            admin_role: DEFAULT_ADMIN_ROLE.into(),
            token_type: None,
            authorized_parties: Vec::new(),
        }
    }
}

/// The role that makes a caller an admin unless `AUTH_ADMIN_ROLE` says otherwise.
pub const DEFAULT_ADMIN_ROLE: &str = "orderflow-admin";

/// The scope of a customer: their own orders and account, and reading the catalog.
pub const ORDERS_SCOPE: &str = "orders";

/// Checks bearer tokens; shared by every request of a service.
pub struct Authenticator {
    keys: KeySet,
    issuer: String,
    audience: String,
    role_claim: Vec<String>,
    admin_role: String,
    token_type: Option<String>,
    authorized_parties: Vec<String>,
}

/// The claims this API reads; the signature, `iss`, `aud`, `exp` and `nbf` are checked by
/// `jsonwebtoken` before these are trusted. The roles sit where the provider puts them, so
/// the rest of the claims are kept to be looked into.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    /// When the token expires (seconds since the epoch); checked by `jsonwebtoken`.
    exp: u64,
    #[serde(default)]
    scope: String,
    typ: Option<String>,
    azp: Option<String>,
    #[serde(flatten)]
    rest: serde_json::Map<String, serde_json::Value>,
}

impl Claims {
    /// Whether the array at `path` (its first segment a claim) holds `role`.
    fn has_role(&self, path: &[String], role: &str) -> bool {
        let Some((first, inner)) = path.split_first() else {
            return false;
        };
        let found = inner
            .iter()
            .try_fold(self.rest.get(first), |value, key| {
                Some(value?.get(key.as_str()))
            })
            .flatten();
        found
            .and_then(serde_json::Value::as_array)
            .is_some_and(|roles| roles.iter().any(|r| r.as_str() == Some(role)))
    }
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
            keys: KeySet::new(
                jwks_url.clone(),
                std::time::Duration::from_secs(config.jwks_max_age_secs),
            )?,
            issuer: issuer.clone(),
            audience: config.audience.clone(),
            role_claim: config.role_claim.split('.').map(str::to_owned).collect(),
            admin_role: config.admin_role.clone(),
            token_type: config.token_type.clone(),
            authorized_parties: config.authorized_parties.clone(),
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
        let claims = data.claims;
        if let Some(expected) = &self.token_type {
            let typ = header
                .typ
                .as_deref()
                .into_iter()
                .chain(claims.typ.as_deref());
            if !typ.into_iter().any(|t| t.eq_ignore_ascii_case(expected)) {
                return Err(AuthError::InvalidToken(format!(
                    "not an access token: its type is not '{expected}'"
                )));
            }
        }
        if !self.authorized_parties.is_empty()
            && !claims
                .azp
                .as_ref()
                .is_some_and(|azp| self.authorized_parties.contains(azp))
        {
            return Err(AuthError::InvalidToken(
                "issued to a client this API does not accept".into(),
            ));
        }
        Ok(Caller {
            admin: claims.has_role(&self.role_claim, &self.admin_role),
            scopes: claims.scope.split_whitespace().map(str::to_owned).collect(),
            subject: claims.sub,
            expires_at: std::time::UNIX_EPOCH + std::time::Duration::from_secs(claims.exp),
        })
    }
}

/// Someone with a valid token for this API.
#[derive(Debug, Clone)]
pub struct Caller {
    subject: String,
    scopes: Vec<String>,
    /// The token's role claim holds the admin role.
    admin: bool,
    expires_at: std::time::SystemTime,
}

impl Caller {
    /// When the token stops being valid: a response that outlives the request (a live
    /// stream) must end then.
    pub fn expires_at(&self) -> std::time::SystemTime {
        self.expires_at
    }

    /// The token's subject: for a customer, their customer id.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    pub fn is_admin(&self) -> bool {
        self.admin
    }

    /// Whether the token lets its holder use this API at all: a customer's `orders`
    /// scope, or the admin role.
    pub fn may_use_the_api(&self) -> bool {
        self.admin || self.has_scope(ORDERS_SCOPE)
    }

    /// Whether the caller may see and act on what belongs to customer `owner`.
    pub fn may_access(&self, owner: &str) -> bool {
        self.admin || (self.has_scope(ORDERS_SCOPE) && self.subject == owner)
    }
}

/// A [`Caller`] whose token holds the admin role.
#[derive(Debug, Clone)]
pub struct Admin(pub Caller);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let caller = authenticated(parts).await?;
        if caller.may_use_the_api() {
            Ok(caller)
        } else {
            Err(AuthError::InsufficientScope(ORDERS_SCOPE))
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Admin {
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let caller = authenticated(parts).await?;
        if caller.is_admin() {
            Ok(Admin(caller))
        } else {
            Err(AuthError::NotAdmin)
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
    #[error("the token lacks the '{0}' scope")]
    InsufficientScope(&'static str),
    #[error("the token does not hold the admin role")]
    NotAdmin,
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
                    kind::INSUFFICIENT_SCOPE,
                    "The token does not allow this",
                )
                .detail(format!("this needs the '{scope}' scope")),
                format!(
                    "Bearer realm=\"{REALM}\", error=\"insufficient_scope\", scope=\"{scope}\""
                ),
            ),
            AuthError::NotAdmin => (
                Problem::new(
                    StatusCode::FORBIDDEN,
                    kind::INSUFFICIENT_SCOPE,
                    "The token does not allow this",
                )
                .detail("this needs an operator: a token with the admin role"),
                format!("Bearer realm=\"{REALM}\", error=\"insufficient_scope\""),
            ),
            AuthError::KeysUnavailable(source) => {
                tracing::warn!(error = %source, "cannot fetch the identity provider's keys");
                let mut response = Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    kind::IDENTITY_PROVIDER_UNAVAILABLE,
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
        kind::UNAUTHORIZED,
        "A valid access token is needed",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_service_without_an_identity_provider_refuses_to_start() {
        let config = AuthConfig {
            jwks_url: None,
            ..AuthConfig::new("unused", "https://login.example.com")
        };
        assert!(matches!(
            Authenticator::new(&config),
            Err(AuthConfigError::Missing)
        ));
    }

    #[test]
    fn a_customer_acts_for_themselves_and_an_admin_for_anyone() {
        let caller = |scopes: &[&str], admin| Caller {
            subject: "alice".into(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            admin,
            expires_at: std::time::SystemTime::now(),
        };
        assert!(caller(&["orders"], false).may_access("alice"));
        assert!(!caller(&["orders"], false).may_access("bob"));
        assert!(caller(&[], true).may_access("bob"));
        assert!(!caller(&[], false).may_access("alice"));
        assert!(!caller(&["admin"], false).may_access("bob"));
        assert!(!caller(&["admin"], false).may_use_the_api());
    }

    /// Claims as a token carries them (with an `exp`, which `jsonwebtoken` checks).
    fn claims(mut value: serde_json::Value) -> Claims {
        value["exp"] = json!(4_000_000_000_u64);
        serde_json::from_value(value).unwrap()
    }

    fn path(path: &str) -> Vec<String> {
        path.split('.').map(str::to_owned).collect()
    }

    #[test]
    fn the_admin_role_is_read_where_the_provider_puts_it_and_nowhere_else() {
        let keycloak = claims(json!({
            "sub": "ops", "scope": "orders admin",
            "realm_access": {"roles": ["offline_access", "orderflow-admin"]},
        }));
        assert!(keycloak.has_role(&path("realm_access.roles"), "orderflow-admin"));
        assert!(!keycloak.has_role(&path("roles"), "orderflow-admin"));
        assert!(!keycloak.has_role(&path("realm_access.roles"), "admin"));

        let flat = claims(json!({"sub": "ops", "roles": ["orderflow-admin"]}));
        assert!(flat.has_role(&path("roles"), "orderflow-admin"));

        // A scope, a string where an array belongs, or a role under another client: no.
        for not_admin in [
            json!({"sub": "eve", "scope": "admin orderflow-admin"}),
            json!({"sub": "eve", "realm_access": {"roles": "orderflow-admin"}}),
            json!({"sub": "eve", "realm_access": ["orderflow-admin"]}),
            json!({"sub": "eve", "resource_access": {"other": {"roles": ["orderflow-admin"]}}}),
        ] {
            assert!(!claims(not_admin).has_role(&path("realm_access.roles"), "orderflow-admin"));
        }
    }
}
