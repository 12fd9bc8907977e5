//! Stock rules and inventory's part of the saga, as pure functions: no I/O.
//!
//! Inventory reserves an order's lines once it knows both the lines (`OrderPlaced`) and that
//! the order is paid (`PaymentAuthorized`); these arrive on different topics in either order.
//! It releases the reservation when shipping refuses the order (`ShipmentFailed`). A
//! reservation takes every line or none, and stock only moves between `available` and
//! `reserved`, so their sum per product never changes and neither goes negative.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use shared_events::contracts::{
    EventPayload, StockLine, StockRejected, StockReleased, StockReserved,
};
use uuid::Uuid;

/// Stock of one product.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockLevel {
    pub available: i32,
    pub reserved: i32,
}

/// Why a reservation was refused, naming the product.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortage {
    pub product_id: String,
    pub reason: String,
}

/// Reserves every line or none: on success, returns the new levels of the products touched.
/// Lines naming the same product are added up first.
pub fn reserve(
    levels: &BTreeMap<String, StockLevel>,
    lines: &[StockLine],
) -> Result<BTreeMap<String, StockLevel>, Shortage> {
    let mut updated = BTreeMap::new();
    for (product_id, quantity) in totals(lines)? {
        let Some(level) = levels.get(&product_id) else {
            return Err(Shortage {
                reason: format!("unknown product {product_id}"),
                product_id,
            });
        };
        if quantity <= 0 || quantity > level.available {
            return Err(Shortage {
                reason: format!("{quantity} requested, {} available", level.available.max(0)),
                product_id,
            });
        }
        // Quantities come from Kafka records: checked, never wrapped (release) or panicking
        // (debug).
        let Some(reserved) = level.reserved.checked_add(quantity) else {
            return Err(Shortage {
                reason: format!("{quantity} more reserved would overflow the stock count"),
                product_id,
            });
        };
        updated.insert(
            product_id,
            StockLevel {
                available: level.available - quantity,
                reserved,
            },
        );
    }
    Ok(updated)
}

/// Gives reserved stock back; returns the new levels of the products touched.
pub fn release(
    levels: &BTreeMap<String, StockLevel>,
    lines: &[StockLine],
) -> BTreeMap<String, StockLevel> {
    // The lines are a reservation's, whose totals were checked when it was made.
    totals(lines)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(product_id, quantity)| {
            let level = levels.get(&product_id)?;
            // A reservation only ever holds what it took, so this cannot go negative; the
            // clamp keeps a corrupted row from spreading.
            let returned = quantity.min(level.reserved);
            Some((
                product_id,
                StockLevel {
                    available: level.available.saturating_add(returned),
                    reserved: level.reserved - returned,
                },
            ))
        })
        .collect()
}

/// Each product's total quantity over `lines`; every line must ask for at least one, and
/// the totals must fit (a record from Kafka may claim anything).
fn totals(lines: &[StockLine]) -> Result<BTreeMap<String, i32>, Shortage> {
    let mut totals = BTreeMap::new();
    for line in lines {
        let refused = |reason: String| Shortage {
            product_id: line.product_id.clone(),
            reason,
        };
        if line.quantity <= 0 {
            return Err(refused(format!("a line asks for {}", line.quantity)));
        }
        let total: &mut i32 = totals.entry(line.product_id.clone()).or_insert(0);
        *total = total
            .checked_add(line.quantity)
            .ok_or_else(|| refused("the lines' quantities overflow".to_owned()))?;
    }
    Ok(totals)
}

/// Where one order stands with inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "stage", rename_all = "snake_case")]
pub enum OrderStock {
    /// Waiting to know the lines and that the order is paid; `failed` if shipping already
    /// refused the order, so it must not be reserved.
    Open {
        lines: Option<Vec<StockLine>>,
        paid: bool,
        failed: bool,
    },
    Reserved {
        reservation_id: Uuid,
        lines: Vec<StockLine>,
    },
    Rejected {
        product_id: String,
        reason: String,
    },
    Released {
        reservation_id: Uuid,
        lines: Vec<StockLine>,
    },
}

impl Default for OrderStock {
    fn default() -> Self {
        OrderStock::Open {
            lines: None,
            paid: false,
            failed: false,
        }
    }
}

/// Every product whose stock [`decide`] may need for these orders and events: the lines each
/// order already has, and the lines of any `OrderPlaced` among the events. A superset, so the
/// rows can be locked before anything is decided.
pub fn products_touched<'a>(
    orders: impl IntoIterator<Item = &'a OrderStock>,
    events: impl IntoIterator<Item = &'a EventPayload>,
) -> BTreeSet<String> {
    let known = orders.into_iter().flat_map(|order| match order {
        OrderStock::Open { lines, .. } => lines.as_deref().unwrap_or_default(),
        OrderStock::Reserved { lines, .. } | OrderStock::Released { lines, .. } => lines,
        OrderStock::Rejected { .. } => &[],
    });
    let known = known.map(|line| line.product_id.clone());
    let placed = events.into_iter().flat_map(|payload| match payload {
        EventPayload::OrderPlaced(placed) => placed
            .lines
            .iter()
            .map(|line| line.product_id.clone())
            .collect(),
        _ => Vec::new(),
    });
    known.chain(placed).collect()
}

/// What inventory does about one event: next state, stock levels to write, event to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub next: OrderStock,
    pub stock_updates: BTreeMap<String, StockLevel>,
    pub emit: Option<EventPayload>,
}

/// Inventory's reaction to `payload` for an order in state `current`, given the current
/// levels of the products [`products_touched`] names. `reservation_id` names a new
/// reservation.
pub fn decide(
    current: &OrderStock,
    payload: &EventPayload,
    levels: &BTreeMap<String, StockLevel>,
    reservation_id: Uuid,
) -> Decision {
    let stay = || Decision {
        next: current.clone(),
        stock_updates: BTreeMap::new(),
        emit: None,
    };
    match (current, payload) {
        (
            OrderStock::Open {
                lines: None,
                paid,
                failed,
            },
            EventPayload::OrderPlaced(placed),
        ) => {
            let lines = placed
                .lines
                .iter()
                .map(|l| StockLine {
                    product_id: l.product_id.clone(),
                    quantity: l.quantity,
                })
                .collect();
            settle(Some(lines), *paid, *failed, levels, reservation_id)
        }
        (
            OrderStock::Open {
                lines,
                paid: false,
                failed,
            },
            EventPayload::PaymentAuthorized(_),
        ) => settle(lines.clone(), true, *failed, levels, reservation_id),
        (OrderStock::Open { lines, paid, .. }, EventPayload::ShipmentFailed(_)) => Decision {
            next: OrderStock::Open {
                lines: lines.clone(),
                paid: *paid,
                failed: true,
            },
            stock_updates: BTreeMap::new(),
            emit: None,
        },
        (
            OrderStock::Reserved {
                reservation_id,
                lines,
            },
            EventPayload::ShipmentFailed(failed),
        ) => Decision {
            next: OrderStock::Released {
                reservation_id: *reservation_id,
                lines: lines.clone(),
            },
            stock_updates: release(levels, lines),
            emit: Some(EventPayload::StockReleased(StockReleased {
                reservation_id: *reservation_id,
                lines: lines.clone(),
                reason: format!("shipment failed: {}", failed.reason),
            })),
        },
        _ => stay(),
    }
}

/// Decides an open order once its lines and payment are both known.
fn settle(
    lines: Option<Vec<StockLine>>,
    paid: bool,
    failed: bool,
    levels: &BTreeMap<String, StockLevel>,
    reservation_id: Uuid,
) -> Decision {
    let (Some(lines), true) = (lines.clone(), paid) else {
        return Decision {
            next: OrderStock::Open {
                lines,
                paid,
                failed,
            },
            stock_updates: BTreeMap::new(),
            emit: None,
        };
    };
    let outcome = if failed {
        Err(Shortage {
            product_id: lines
                .first()
                .map(|l| l.product_id.clone())
                .unwrap_or_default(),
            reason: "order failed before stock was reserved".to_owned(),
        })
    } else {
        reserve(levels, &lines)
    };
    match outcome {
        Ok(stock_updates) => Decision {
            next: OrderStock::Reserved {
                reservation_id,
                lines: lines.clone(),
            },
            stock_updates,
            emit: Some(EventPayload::StockReserved(StockReserved {
                reservation_id,
                lines,
            })),
        },
        Err(Shortage { product_id, reason }) => Decision {
            next: OrderStock::Rejected {
                product_id: product_id.clone(),
                reason: reason.clone(),
            },
            stock_updates: BTreeMap::new(),
            emit: Some(EventPayload::StockRejected(StockRejected {
                product_id,
                reason,
            })),
        },
    }
}

#[cfg(test)]
mod tests;
