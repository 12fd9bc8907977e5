//! Where the services' REST APIs are, and the access token to call them with, for the
//! commands that drive them (demo, load).

use anyhow::{Context, bail};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use serde_json::{Value, json};

#[derive(Debug, Clone, clap::Args)]
pub struct ServiceUrls {
    #[arg(
        long,
        env = "ORDER_SERVICE_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub order_service: String,
    #[arg(
        long,
        env = "INVENTORY_SERVICE_URL",
        default_value = "http://127.0.0.1:8082"
    )]
    pub inventory_service: String,
    #[arg(
        long,
        env = "BILLING_SERVICE_URL",
        default_value = "http://127.0.0.1:8083"
    )]
    pub billing_service: String,
    /// An access token with the `orderflow-admin` role, from your identity provider. Without
    /// it, one is asked of the dev token issuer.
    #[arg(long, env = "ORDERFLOW_ACCESS_TOKEN", hide_env_values = true)]
    pub access_token: Option<String>,
    #[command(flatten)]
    pub issuer: DevIssuer,
}

/// The dev token issuer (`dev-token-issuer`) of the Docker-less stack.
#[derive(Debug, Clone, clap::Args)]
pub struct DevIssuer {
    #[arg(
        long = "dev-issuer-url",
        env = "DEV_ISSUER_URL",
        default_value = "http://127.0.0.1:8090"
    )]
    pub url: String,
}

/// Who the demo and the load generator act as: an operator, who may set up the catalog and
/// accounts and order for any customer.
const OPERATOR: &str = "orderflow-operator";

/// The role that makes a token an operator's: the services' default `AUTH_ADMIN_ROLE`.
pub const ADMIN_ROLE: &str = "orderflow-admin";

impl DevIssuer {
    /// A token for `subject` with `scope` and `roles`, minted by the dev issuer.
    pub async fn token(
        &self,
        subject: &str,
        scope: &str,
        roles: &[String],
        expires_in: u64,
    ) -> anyhow::Result<String> {
        let url = format!("{}/token", self.url.trim_end_matches('/'));
        let response = reqwest::Client::new()
            .post(&url)
            .json(&json!({"sub": subject, "scope": scope, "roles": roles, "expires_in": expires_in}))
            .send()
            .await
            .with_context(|| format!("asking the dev token issuer at {url} (scripts/stack-up starts it; or pass --access-token)"))?;
        if !response.status().is_success() {
            bail!("the dev token issuer answered {}", response.status());
        }
        let answer: Value = response.json().await?;
        answer["access_token"]
            .as_str()
            .map(str::to_owned)
            .context("the dev token issuer's answer has no access_token")
    }
}

impl ServiceUrls {
    /// `builder`'s client, sending the operator's access token with every request.
    pub async fn client(&self, builder: reqwest::ClientBuilder) -> anyhow::Result<reqwest::Client> {
        let token = match &self.access_token {
            Some(token) => token.clone(),
            None => {
                self.issuer
                    .token(OPERATOR, "orders", &[ADMIN_ROLE.to_owned()], 24 * 3600)
                    .await?
            }
        };
        let mut headers = HeaderMap::new();
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}"))
                .context("the access token is not a valid header value")?,
        );
        Ok(builder.default_headers(headers).build()?)
    }
}
