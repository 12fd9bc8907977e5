//! Shipping's part of the saga, as pure functions: no I/O, the clock passed in.
//!
//! Scheduling a shipment is the saga's point of no return, and shipping is the one service
//! that decides it: for each order it settles exactly once on `Scheduled` or `Refused`.
//! A cancellation request that arrives first refuses the order; one that arrives later is
//! ignored (order-service reports it as rejected). Every compensation downstream starts from
//! `ShipmentFailed`, which shipping emits only when it refuses, so no order can be both
//! shipped and refunded. An order whose saga deadline has passed is refused too, so a
//! timed-out order is compensated whichever of its events shipping happens to read first.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared_events::contracts::{
    Address, EventMetadata, EventPayload, ShipmentFailed, ShipmentScheduled,
};
use uuid::Uuid;

/// Countries shipping-service has a carrier for, and which carrier.
#[derive(Debug, Clone)]
pub struct Carriers {
    pub destinations: Vec<String>,
}

impl Carriers {
    pub fn carrier_for(&self, country: &str) -> Option<&'static str> {
        if !self
            .destinations
            .iter()
            .any(|d| d.eq_ignore_ascii_case(country))
        {
            return None;
        }
        Some(match country.to_ascii_uppercase().as_str() {
            "US" | "CA" => "UPS",
            "GB" | "IE" => "Royal Mail",
            _ => "DHL",
        })
    }
}

/// Where one order stands with shipping.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "stage", rename_all = "snake_case")]
pub enum OrderShipment {
    /// Waiting for the destination (`OrderPlaced`) and the reservation (`StockReserved`).
    #[default]
    Open,
    Waiting {
        address: Option<Address>,
        stock_reserved: bool,
        saga_deadline: Option<DateTime<Utc>>,
    },
    Scheduled {
        shipment_id: Uuid,
        tracking_id: String,
        carrier: String,
        address: Address,
    },
    Refused {
        reason: String,
    },
}

/// What shipping does about one event: next state and event to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub next: OrderShipment,
    pub emit: Option<EventPayload>,
}

/// Shipping's reaction to an event for an order in state `current`, at `now`.
pub fn decide(
    current: &OrderShipment,
    metadata: &EventMetadata,
    payload: &EventPayload,
    carriers: &Carriers,
    now: DateTime<Utc>,
    shipment_id: Uuid,
) -> Decision {
    let (mut address, mut stock_reserved, mut saga_deadline) = match current {
        OrderShipment::Open => (None, false, None),
        OrderShipment::Waiting {
            address,
            stock_reserved,
            saga_deadline,
        } => (address.clone(), *stock_reserved, *saga_deadline),
        // Settled: nothing changes it.
        OrderShipment::Scheduled { .. } | OrderShipment::Refused { .. } => {
            return Decision {
                next: current.clone(),
                emit: None,
            };
        }
    };
    saga_deadline = saga_deadline.or(metadata.saga_deadline);
    match payload {
        EventPayload::OrderPlaced(placed) => address = Some(placed.shipping_address.clone()),
        EventPayload::StockReserved(_) => stock_reserved = true,
        EventPayload::OrderCancellationRequested(request) => {
            return refuse(format!("order cancelled: {}", request.reason));
        }
        _ => {}
    }
    let (Some(address), true) = (address.clone(), stock_reserved) else {
        return Decision {
            next: OrderShipment::Waiting {
                address,
                stock_reserved,
                saga_deadline,
            },
            emit: None,
        };
    };
    if saga_deadline.is_some_and(|deadline| now >= deadline) {
        return refuse("saga deadline passed before the shipment was scheduled".to_owned());
    }
    let Some(carrier) = carriers.carrier_for(&address.country) else {
        return refuse(format!("no carrier ships to {}", address.country));
    };
    let tracking_id = tracking_id(carrier, shipment_id);
    Decision {
        next: OrderShipment::Scheduled {
            shipment_id,
            tracking_id: tracking_id.clone(),
            carrier: carrier.to_owned(),
            address,
        },
        emit: Some(EventPayload::ShipmentScheduled(ShipmentScheduled {
            shipment_id,
            tracking_id,
            carrier: carrier.to_owned(),
        })),
    }
}

fn refuse(reason: String) -> Decision {
    Decision {
        next: OrderShipment::Refused {
            reason: reason.clone(),
        },
        emit: Some(EventPayload::ShipmentFailed(ShipmentFailed { reason })),
    }
}

/// A carrier-style tracking number derived from the shipment id.
fn tracking_id(carrier: &str, shipment_id: Uuid) -> String {
    let prefix: String = carrier
        .chars()
        .filter(char::is_ascii_alphabetic)
        .take(2)
        .collect::<String>()
        .to_ascii_uppercase();
    let digits = shipment_id.simple().to_string().to_ascii_uppercase();
    format!("{prefix}{}", &digits[digits.len() - 12..])
}

#[cfg(test)]
mod tests;
