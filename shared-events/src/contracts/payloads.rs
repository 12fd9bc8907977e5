//! Payload of each event of the order saga; one struct per `schemas/*.avsc`.
//!
//! Field names and types mirror the schemas exactly; the round-trip tests in `mod.rs` encode
//! every payload with its schema and fail on any drift.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Money;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub product_id: String,
    pub quantity: i32,
    pub unit_price: Money,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    pub recipient: String,
    pub line1: String,
    pub line2: Option<String>,
    pub city: String,
    pub postal_code: String,
    pub country: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockLine {
    pub product_id: String,
    pub quantity: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPlaced {
    pub customer_id: String,
    pub lines: Vec<OrderLine>,
    pub total: Money,
    pub shipping_address: Address,
    pub customer_note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCancellationRequested {
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCompleted {
    pub total: Money,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCancelled {
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentAuthorized {
    #[serde(with = "super::avro_uuid")]
    pub payment_id: Uuid,
    pub customer_id: String,
    pub amount: Money,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentDeclined {
    pub customer_id: String,
    pub amount: Money,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRefunded {
    #[serde(with = "super::avro_uuid")]
    pub payment_id: Uuid,
    pub customer_id: String,
    pub amount: Money,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockReserved {
    #[serde(with = "super::avro_uuid")]
    pub reservation_id: Uuid,
    pub lines: Vec<StockLine>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockRejected {
    pub product_id: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockReleased {
    #[serde(with = "super::avro_uuid")]
    pub reservation_id: Uuid,
    pub lines: Vec<StockLine>,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipmentScheduled {
    #[serde(with = "super::avro_uuid")]
    pub shipment_id: Uuid,
    pub tracking_id: String,
    pub carrier: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipmentFailed {
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductUpserted {
    pub product_id: String,
    pub name: String,
    pub unit_price: Money,
    pub available_quantity: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterRedriveRequested {
    pub operator: String,
    pub reason: String,
    pub dead_letters: Vec<DeadLetterPosition>,
}

/// Where a dead letter sits: the record at `offset` on `partition` of `<topic>.dlq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterPosition {
    /// The topic the record failed on, without the deployment's prefix (e.g. `payments`).
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}
