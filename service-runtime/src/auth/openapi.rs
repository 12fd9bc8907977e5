//! The OpenAPI side of authentication: the bearer scheme, and the 401/403 every secured
//! operation can answer. Each handler names its scope with `security(("bearer" = [...]))`.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ComponentsBuilder, ContentBuilder, ResponseBuilder};

/// The name handlers use in `security(...)`.
pub const SCHEME: &str = "bearer";

/// Adds the bearer scheme, and 401 and 403 to every operation that requires it.
pub fn document(doc: &mut utoipa::openapi::OpenApi) {
    let components = doc
        .components
        .get_or_insert_with(|| ComponentsBuilder::new().build());
    components.add_security_scheme(
        SCHEME,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .description(Some(
                    "An OAuth2 access token from the identity provider: the `orders` scope for \
                     a customer's own orders and account and the catalog; for what the \
                     operation marks `admin`, the admin role in the token's role claim \
                     (`AUTH_ADMIN_ROLE` at `AUTH_ROLE_CLAIM`, by default `orderflow-admin` in \
                     `realm_access.roles`), never a scope.",
                ))
                .build(),
        ),
    );
    let problem = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .header(
                "WWW-Authenticate",
                utoipa::openapi::HeaderBuilder::new()
                    .description(Some("The bearer challenge (RFC 6750)"))
                    .build(),
            )
            .content(crate::problem::CONTENT_TYPE, ContentBuilder::new().build())
            .build()
    };
    for item in doc.paths.paths.values_mut() {
        for operation in [
            item.get.as_mut(),
            item.put.as_mut(),
            item.post.as_mut(),
            item.delete.as_mut(),
            item.patch.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            if operation.security.as_ref().is_none_or(Vec::is_empty) {
                continue;
            }
            let responses = &mut operation.responses.responses;
            responses.insert(
                "401".to_owned(),
                problem("No token, or one that is malformed, expired, not for this API or wrongly signed").into(),
            );
            responses.insert(
                "403".to_owned(),
                problem("The token lacks the scope or role the operation needs").into(),
            );
            responses.insert(
                "503".to_owned(),
                problem("The identity provider's keys cannot be fetched right now").into(),
            );
        }
    }
}
