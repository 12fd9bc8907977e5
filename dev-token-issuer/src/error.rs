use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("could not generate a signing key")]
    KeyGeneration,
    #[error("could not sign or describe a token")]
    Jwt(#[from] jsonwebtoken::errors::Error),
    #[error(
        "tokens are handed out only to requests for a loopback host name (localhost, \
         127.0.0.1, [::1]), not {0:?}: a web page must not mint tokens through DNS rebinding"
    )]
    NotLoopback(String),
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = match self {
            Error::NotLoopback(_) => {
                tracing::warn!(error = %self, "token request refused");
                StatusCode::FORBIDDEN
            }
            _ => {
                tracing::error!(error = %self, "token request failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        (status, self.to_string()).into_response()
    }
}
