//! Shipping's REST API: where an order's shipment stands.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use service_runtime::{Admin, Problem, ValidPath};
use shared_events::contracts::Address;
use sqlx::PgPool;
use utoipa::{OpenApi, ToSchema};
use uuid::Uuid;

use crate::domain::OrderShipment;
use crate::handler::OrderShipments;

#[derive(OpenApi)]
#[openapi(
    info(title = "shipping-service", description = "Shipments of orders."),
    paths(get_shipment)
)]
pub struct ApiDoc;

pub fn routes(pool: PgPool) -> Router {
    Router::new()
        .route("/shipments/{order_id}", get(get_shipment))
        .with_state(pool)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ShipmentView {
    pub order_id: Uuid,
    /// `waiting` (for the order or its stock), `scheduled` or `refused`.
    pub status: &'static str,
    pub shipment_id: Option<Uuid>,
    pub tracking_id: Option<String>,
    pub carrier: Option<String>,
    pub country: Option<String>,
    /// Why the shipment was refused.
    pub reason: Option<String>,
}

/// The shipment of an order. Needs the `admin` scope: shipping does not keep who ordered,
/// and a customer follows their shipment in their order's timeline (order-service).
#[utoipa::path(get, path = "/shipments/{order_id}", tag = "shipments",
    security(("bearer" = ["admin"])),
    params(("order_id" = Uuid, Path)),
    responses(
        (status = 200, body = ShipmentView),
        (status = 400, description = "The order id is not a UUID", content_type = "application/problem+json"),
        (status = 404, description = "Shipping has not heard of the order", content_type = "application/problem+json"),
    ))]
#[tracing::instrument(name = "get_shipment", skip_all, fields(%order_id))]
async fn get_shipment(
    _: Admin,
    State(pool): State<PgPool>,
    ValidPath(order_id): ValidPath<Uuid>,
) -> Result<Json<ShipmentView>, Problem> {
    let state = OrderShipments::get(&pool, order_id)
        .await?
        .ok_or_else(|| Problem::not_found(format!("no shipment for order {order_id}")))?;
    let country = |address: &Option<Address>| address.as_ref().map(|a| a.country.clone());
    let mut view = ShipmentView {
        order_id,
        status: "waiting",
        shipment_id: None,
        tracking_id: None,
        carrier: None,
        country: None,
        reason: None,
    };
    match state {
        OrderShipment::Open => {}
        OrderShipment::Waiting { address, .. } => view.country = country(&address),
        OrderShipment::Scheduled {
            shipment_id,
            tracking_id,
            carrier,
            address,
        } => {
            view.status = "scheduled";
            view.shipment_id = Some(shipment_id);
            view.tracking_id = Some(tracking_id);
            view.carrier = Some(carrier);
            view.country = Some(address.country);
        }
        OrderShipment::Refused { reason } => {
            view.status = "refused";
            view.reason = Some(reason);
        }
    }
    Ok(Json(view))
}
