//! A JSON body extractor whose rejections are problem documents naming the offending field:
//! malformed JSON is 400, a well-formed body of the wrong shape is 422 with the field's path,
//! a body over the limit is 413, a non-JSON content type is 415.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::problem::Problem;
use crate::problem::kind;

/// Largest request body any service accepts.
pub const BODY_LIMIT_BYTES: usize = 64 * 1024;

/// Like `axum::Json`, with problem+json rejections.
#[derive(Debug, Clone)]
pub struct ValidJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ValidJson<T> {
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Problem> {
        let json_content = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json") || v.contains("+json"));
        if !json_content {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                kind::UNSUPPORTED_MEDIA_TYPE,
                "Expected application/json",
            )
            .detail("send the body with Content-Type: application/json"));
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    Problem::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        kind::PAYLOAD_TOO_LARGE,
                        "Request body too large",
                    )
                    .detail(format!("the limit is {BODY_LIMIT_BYTES} bytes"))
                } else {
                    Problem::new(
                        StatusCode::BAD_REQUEST,
                        kind::UNREADABLE_BODY,
                        "Request body could not be read",
                    )
                    .detail(rejection.body_text())
                }
            })?;
        parse(&bytes).map(ValidJson)
    }
}

/// Parses a JSON body, reporting the path of a field of the wrong shape.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let (path, inner) = match serde_path_to_error::deserialize(&mut deserializer) {
        Ok(value) => match deserializer.end() {
            Ok(()) => match nul_field(bytes) {
                None => return Ok(value),
                Some(field) => return Err(invalid(field, NUL_MESSAGE.to_owned())),
            },
            Err(trailing) => (".".to_owned(), trailing),
        },
        Err(error) => (error.path().to_string(), error.into_inner()),
    };
    if !inner.is_data() {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            kind::MALFORMED_JSON,
            "Malformed JSON",
        )
        .detail(inner.to_string()));
    }
    let message = inner.to_string();
    Err(invalid(field_path(&path, &message), message))
}

fn invalid(field: String, message: String) -> Problem {
    Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        kind::VALIDATION,
        "The request is invalid",
    )
    .detail(format!("{field}: {message}"))
    .with("errors", json!([{"field": field, "message": message}]))
}

const NUL_MESSAGE: &str = "must not contain the NUL character (U+0000)";

/// The path of a string (or key) holding U+0000, if one does. PostgreSQL's text and jsonb
/// cannot store it, so no API of ours takes it: refused here, before it meets a database.
/// JSON can only spell it `\u0000`, so most bodies are passed over without a second parse.
fn nul_field(bytes: &[u8]) -> Option<String> {
    if !bytes.windows(6).any(|w| w == b"\\u0000") {
        return None;
    }
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    nul_in(&value, "")
}

fn nul_in(value: &serde_json::Value, path: &str) -> Option<String> {
    let here = || if path.is_empty() { "body" } else { path }.to_owned();
    match value {
        serde_json::Value::String(text) => text.contains('\0').then(here),
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| nul_in(item, &format!("{path}[{i}]"))),
        serde_json::Value::Object(fields) => fields.iter().find_map(|(key, field)| {
            let path = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            if key.contains('\0') {
                Some(path)
            } else {
                nul_in(field, &path)
            }
        }),
        _ => None,
    }
}

/// serde reports a missing field at its parent's path; name the field itself.
fn field_path(path: &str, message: &str) -> String {
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next());
    match (path, missing) {
        (".", Some(field)) => field.to_owned(),
        (parent, Some(field)) => format!("{parent}.{field}"),
        (".", None) => "body".to_owned(),
        (path, None) => path.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        items: Vec<Item>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Item {
        quantity: i32,
    }

    fn field(bytes: &str) -> (StatusCode, Option<String>) {
        let problem = parse::<Body>(bytes.as_bytes()).unwrap_err();
        let field = problem
            .extensions
            .get("errors")
            .map(|e| e[0]["field"].as_str().unwrap().to_owned());
        (problem.status, field)
    }

    #[test]
    fn malformed_json_is_400_and_a_wrong_shape_names_the_field() {
        assert_eq!(field("{\"name\": "), (StatusCode::BAD_REQUEST, None));
        assert_eq!(
            field(r#"{"name": "x", "items": []} trailing"#),
            (StatusCode::BAD_REQUEST, None)
        );
        assert_eq!(
            field(r#"{"name": "x", "items": [{"quantity": "two"}]}"#),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                Some("items[0].quantity".into())
            )
        );
        assert_eq!(
            field(r#"{"name": "x", "items": [{}]}"#),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                Some("items[0].quantity".into())
            )
        );
        assert_eq!(
            field(r#"{"items": []}"#),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("name".into()))
        );
    }

    #[test]
    fn a_nul_character_anywhere_is_refused_with_its_field() {
        assert_eq!(
            field(r#"{"name": "a\u0000b", "items": []}"#),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("name".into()))
        );
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Loose {
            items: Vec<serde_json::Value>,
        }
        let problem = parse::<Loose>(br#"{"items": [1, {"note": {"x\u0000": 2}}]}"#).unwrap_err();
        assert_eq!(
            problem.extensions["errors"][0]["field"],
            "items[1].note.x\u{0}"
        );
        // An escaped backslash before "u0000" is text, not NUL.
        assert!(parse::<Body>(br#"{"name": "C:\\u0000", "items": []}"#).is_ok());
    }
}

/// Like `axum::extract::Path`, with a problem+json 400 naming what did not parse (a
/// malformed order id, say) instead of axum's plain-text one.
#[derive(Debug, Clone)]
pub struct ValidPath<T>(pub T);

impl<S: Send + Sync, T> axum::extract::FromRequestParts<S> for ValidPath<T>
where
    T: DeserializeOwned + Send,
{
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Problem> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| ValidPath(value))
            .map_err(|rejection| {
                Problem::new(
                    StatusCode::BAD_REQUEST,
                    kind::INVALID_PATH,
                    "The URL is invalid",
                )
                .detail(rejection.body_text())
            })
    }
}

/// Like `axum::extract::Query`, with a problem+json 422 on `query` saying what did not
/// parse (an unknown parameter, a value of the wrong type) instead of axum's plain-text 400.
#[derive(Debug, Clone)]
pub struct ValidQuery<T>(pub T);

impl<S: Send + Sync, T> axum::extract::FromRequestParts<S> for ValidQuery<T>
where
    T: DeserializeOwned + Send,
{
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Problem> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| ValidQuery(value))
            .map_err(|rejection| Problem::invalid_field("query", rejection.body_text()))
    }
}

/// Refuses a URL whose path or query holds an encoded NUL (`%00`), on every route: no
/// field accepts one, and PostgreSQL cannot store U+0000 in text, so it would otherwise
/// reach a query and come back as a 500. (Bodies are checked in [`parse`].)
pub async fn refuse_nul_in_url(
    request: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let uri = request.uri();
    let has_nul = |part: &str| part.contains("%00");
    if has_nul(uri.path()) || uri.query().is_some_and(has_nul) {
        return axum::response::IntoResponse::into_response(
            Problem::new(
                StatusCode::BAD_REQUEST,
                kind::INVALID_PATH,
                "The URL is invalid",
            )
            .detail("it holds an encoded NUL character (%00), which no field accepts"),
        );
    }
    next.run(request).await
}
