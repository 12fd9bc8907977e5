//! Inventory's REST API: list and read products; create, restock or reprice one, which
//! publishes `ProductUpserted` (through the outbox) for order-service's catalog copy.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use service_runtime::precondition::{precondition_failed, tagged};
use service_runtime::{Admin, Caller, FieldErrors, IfMatch, PathId, Problem, ValidJson, ValidPath};
use shared_events::Outbox;
use shared_events::contracts::{Currency, Event, Money, ProductUpserted};
use sqlx::{PgExecutor, PgPool};
use utoipa::{OpenApi, ToSchema};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "inventory-service",
        description = "Products, stock and reservations."
    ),
    paths(list_products, get_product, put_product)
)]
pub struct ApiDoc;

#[derive(Clone)]
struct ApiState {
    pool: PgPool,
    outbox: Outbox,
}

pub fn routes(pool: PgPool, outbox: Outbox) -> Router {
    Router::new()
        .route("/products", get(list_products))
        .route("/products/{product_id}", get(get_product).put(put_product))
        .with_state(ApiState { pool, outbox })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProductView {
    pub product_id: String,
    pub name: String,
    pub unit_price_minor: i64,
    pub currency: String,
    /// Units that can still be reserved.
    pub available: i32,
    /// Units held by orders in flight.
    pub reserved: i32,
    /// The row's version, sent as the `ETag`.
    #[serde(skip)]
    pub version: String,
}

impl ProductView {
    fn with_etag(self, status: StatusCode) -> Response {
        tagged(status, &self.version.clone(), self)
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutProduct {
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    pub unit_price_minor: i64,
    /// ISO 4217 code: EUR, USD, GBP or CHF.
    #[schema(min_length = 3, max_length = 3)]
    pub currency: String,
    /// Units available for new orders (reserved units are not affected).
    pub available: i32,
}

/// Every product, by id.
#[utoipa::path(get, path = "/products", tag = "products",
    security(("bearer" = ["orders"]), ("bearer" = ["admin"])),
    responses((status = 200, body = Vec<ProductView>)))]
async fn list_products(
    _: Caller,
    State(state): State<ApiState>,
) -> Result<Json<Vec<ProductView>>, Problem> {
    Ok(Json(products(&state.pool, None).await?))
}

/// A product id as a URL names it: bounded before it is looked up or echoed.
type ProductKey = PathId<64>;

/// One product with its stock; its `ETag` names the version for a conditional PUT.
#[utoipa::path(get, path = "/products/{product_id}", tag = "products",
    security(("bearer" = ["orders"]), ("bearer" = ["admin"])),
    params(("product_id" = String, Path)),
    responses(
        (status = 200, body = ProductView, headers(("ETag" = String, description = "The product's version"))),
        (status = 400, description = "A product id over 64 characters, or with a control character", content_type = "application/problem+json"),
        (status = 404, description = "No such product", content_type = "application/problem+json"),
    ))]
#[tracing::instrument(name = "get_product", skip_all, fields(%product_id))]
async fn get_product(
    _: Caller,
    State(state): State<ApiState>,
    ValidPath(product_id): ValidPath<ProductKey>,
) -> Result<Response, Problem> {
    find(&state.pool, product_id.as_str())
        .await?
        .map(|view| view.with_etag(StatusCode::OK))
        .ok_or_else(|| Problem::not_found(format!("no product {product_id}")))
}

/// Creates a product, or restocks / reprices / renames it; publishes `ProductUpserted`.
/// `available` replaces the stock: send `If-Match` with the `ETag` you read, so that a
/// reservation made since is not overwritten (412 then: read again). Needs the `admin` scope.
#[utoipa::path(put, path = "/products/{product_id}", tag = "products",
    security(("bearer" = ["admin"])),
    params(
        ("product_id" = String, Path),
        ("If-Match" = Option<String>, Header, description = "The ETag the change is based on, or * (must exist)"),
    ),
    request_body = PutProduct,
    responses(
        (status = 200, description = "Updated", body = ProductView, headers(("ETag" = String))),
        (status = 201, description = "Created", body = ProductView, headers(("ETag" = String))),
        (status = 400, description = "Malformed JSON or If-Match, or a product id over 64 characters or with a control character", content_type = "application/problem+json"),
        (status = 412, description = "Changed since the If-Match version, or missing", content_type = "application/problem+json"),
        (status = 422, description = "Invalid", content_type = "application/problem+json"),
    ))]
#[tracing::instrument(name = "put_product", skip_all, fields(%product_id))]
async fn put_product(
    _: Admin,
    State(state): State<ApiState>,
    ValidPath(product_id): ValidPath<ProductKey>,
    if_match: IfMatch,
    ValidJson(body): ValidJson<PutProduct>,
) -> Result<Response, Problem> {
    let product_id = product_id.into_inner();
    let mut errors = FieldErrors::default();
    errors.check(
        !product_id.is_empty()
            && product_id.len() <= 64
            && product_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "product_id",
        "must be 1 to 64 letters, digits, '-' or '_'",
    );
    errors.check(
        !body.name.trim().is_empty() && body.name.chars().count() <= 200,
        "name",
        "must be 1 to 200 characters",
    );
    errors.check(
        body.unit_price_minor > 0,
        "unit_price_minor",
        "must be positive",
    );
    errors.parse("currency", Currency::parse(&body.currency));
    errors.check(body.available >= 0, "available", "must not be negative");
    errors.into_result()?;
    let mut tx = state.pool.begin().await?;
    let written = sqlx::query_scalar!(
        r#"INSERT INTO products (product_id, name, unit_price_minor, currency, available)
           VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (product_id) DO UPDATE SET name = $2, unit_price_minor = $3,
               currency = $4, available = $5, updated_at = now()
           WHERE $6::text IS NULL OR products.xmin::text = $6
           RETURNING (xmax = 0) AS "inserted!""#,
        product_id,
        body.name,
        body.unit_price_minor,
        body.currency,
        body.available,
        if_match.version(),
    )
    .fetch_optional(&mut *tx)
    .await?;
    let inserted = match written {
        Some(inserted) if !inserted || if_match.allows_creation() => inserted,
        // Changed since the version named, or created although If-Match presumed it
        // existed: the transaction rolls back on drop.
        _ => return Err(precondition_failed(&format!("product {product_id}"))),
    };
    let event = Event::catalog(
        crate::DEFAULTS.name,
        ProductUpserted {
            product_id: product_id.clone(),
            name: body.name,
            unit_price: Money::new(body.unit_price_minor, body.currency),
            available_quantity: body.available,
        },
    );
    state.outbox.append(&mut tx, &[event]).await?;
    let view = find(&mut *tx, &product_id)
        .await?
        .ok_or_else(Problem::internal)?;
    state.outbox.commit(tx).await?;
    let status = if inserted {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(view.with_etag(status))
}

async fn find<'e>(
    executor: impl PgExecutor<'e>,
    product_id: &str,
) -> Result<Option<ProductView>, sqlx::Error> {
    Ok(products(executor, Some(product_id)).await?.pop())
}

/// The product `only` names, or every product; by id.
async fn products<'e>(
    executor: impl PgExecutor<'e>,
    only: Option<&str>,
) -> Result<Vec<ProductView>, sqlx::Error> {
    sqlx::query_as!(
        ProductView,
        r#"SELECT product_id, name, unit_price_minor, currency, available, reserved,
                  xmin::text AS "version!"
           FROM products WHERE $1::text IS NULL OR product_id = $1
           ORDER BY product_id"#,
        only
    )
    .fetch_all(executor)
    .await
}
