//! Access tokens for the tests: a dev token issuer runs inside the test process (on a thread
//! of its own, so that it outlives any one test's runtime), the services are pointed at its
//! JWKS, and the tests mint what they need, valid or not.

use std::sync::{Arc, OnceLock};

use dev_token_issuer::{Issuer, TokenRequest};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};

pub use dev_token_issuer::Claims;

struct RunningIssuer {
    issuer: Arc<Issuer>,
    url: String,
}

static ISSUER: OnceLock<RunningIssuer> = OnceLock::new();

fn running() -> &'static RunningIssuer {
    ISSUER.get_or_init(|| {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let issuer = Arc::new(Issuer::generate(url.clone()).unwrap());
        let serving = issuer.clone();
        std::thread::Builder::new()
            .name("dev-token-issuer".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                    dev_token_issuer::serve(listener, serving, std::future::pending())
                        .await
                        .unwrap();
                });
            })
            .unwrap();
        RunningIssuer { issuer, url }
    })
}

/// The environment that points a service at the test issuer.
pub fn service_env() -> [(&'static str, String); 2] {
    let running = running();
    [
        (
            "AUTH_JWKS_URL",
            format!("{}/.well-known/jwks.json", running.url),
        ),
        ("AUTH_ISSUER", running.issuer.issuer().to_owned()),
    ]
}

/// A valid token for `subject` with `scope` (space-separated).
pub fn token(subject: &str, scope: &str) -> String {
    running()
        .issuer
        .mint(&TokenRequest {
            sub: subject.into(),
            scope: scope.into(),
            ..TokenRequest::default()
        })
        .unwrap()
}

/// A valid operator's token for `subject`: the `orders` scope and the admin role.
pub fn admin_token(subject: &str) -> String {
    running()
        .issuer
        .mint(&TokenRequest {
            sub: subject.into(),
            scope: "orders".into(),
            roles: vec![dev_token_issuer::ADMIN_ROLE.into()],
            ..TokenRequest::default()
        })
        .unwrap()
}

/// Signs `claims` as given, with the issuer the services trust.
pub fn sign(claims: &Claims) -> String {
    running().issuer.sign(claims).unwrap()
}

/// The claims of a valid token for `subject` with `scope`, to alter before [`sign`].
pub fn claims(subject: &str, scope: &str) -> Claims {
    running().issuer.claims_for(&TokenRequest {
        sub: subject.into(),
        scope: scope.into(),
        ..TokenRequest::default()
    })
}

/// The operator the tests act as unless they test authorization: the admin role, so it may
/// set up the catalog and accounts and place and read orders for any customer.
pub const OPERATOR: &str = "e2e-operator";

pub fn operator_headers() -> HeaderMap {
    static TOKEN: OnceLock<String> = OnceLock::new();
    let token = TOKEN.get_or_init(|| admin_token(OPERATOR));
    let mut headers = HeaderMap::new();
    headers.insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    headers
}

/// A client that sends the operator's token with every request.
pub fn http() -> reqwest::Client {
    operator_client().build().unwrap()
}

/// [`http`]'s builder, for clients that need more settings.
pub fn operator_client() -> reqwest::ClientBuilder {
    reqwest::Client::builder().default_headers(operator_headers())
}
