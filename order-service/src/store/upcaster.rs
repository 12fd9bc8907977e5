//! Stored events that can evolve. Each row of `order_events` names the version of the shape
//! its `data` was written in; reading upcasts an older shape step by step to the current one
//! (the idea of the cqrs-es crate's upcasters), so old histories stay readable without ever
//! being rewritten (the table is append-only).
//!
//! Versions of `data`:
//! 1. the event with its type inside: `{"type": "PaymentDeclined", "reason": "..."}`;
//! 2. the payload alone: the type is the row's `event_type` column, not a second copy that
//!    could disagree with it.

use serde_json::{Map, Value};

use crate::domain::OrderEvent;

/// The version this build writes.
pub const CURRENT_VERSION: i16 = 2;

/// Upcasters by the version they read: `UPCASTERS[v - 1]` turns version `v` into `v + 1`.
const UPCASTERS: [fn(Value) -> Value; (CURRENT_VERSION - 1) as usize] = [type_leaves_payload];

#[derive(Debug, thiserror::Error)]
pub enum UpcastError {
    #[error("version {0} is newer than this build reads (up to {CURRENT_VERSION})")]
    Newer(i16),
    #[error("version {0} never existed")]
    Unknown(i16),
    #[error("the payload is not a JSON object")]
    NotAnObject,
    #[error("the payload does not match the {event_type} event")]
    Shape {
        event_type: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Version 1 to 2: the type leaves the payload.
fn type_leaves_payload(mut data: Value) -> Value {
    if let Value::Object(fields) = &mut data {
        fields.remove("type");
    }
    data
}

/// The payload of `event` as the current version stores it.
pub fn encode(event: &OrderEvent) -> Value {
    let tagged = serde_json::to_value(event).expect("plain data always serializes");
    type_leaves_payload(tagged)
}

/// The event a row holds, whatever version wrote it.
pub fn decode(event_type: &str, version: i16, data: Value) -> Result<OrderEvent, UpcastError> {
    if version > CURRENT_VERSION {
        return Err(UpcastError::Newer(version));
    }
    let first = usize::try_from(version - 1).map_err(|_| UpcastError::Unknown(version))?;
    let data = UPCASTERS[first..]
        .iter()
        .fold(data, |data, upcast| upcast(data));
    let Value::Object(mut fields) = data else {
        return Err(UpcastError::NotAnObject);
    };
    fields.insert("type".to_owned(), Value::String(event_type.to_owned()));
    serde_json::from_value(Value::Object(Map::from_iter(fields))).map_err(|source| {
        UpcastError::Shape {
            event_type: event_type.to_owned(),
            source,
        }
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use uuid::Uuid;

    use super::*;

    fn samples() -> Vec<OrderEvent> {
        vec![
            OrderEvent::PaymentAuthorized {
                payment_id: Uuid::nil(),
                amount_minor: 2_500,
            },
            OrderEvent::StockRejected {
                product_id: "sku".into(),
                reason: "out of stock".into(),
            },
            OrderEvent::OrderCompleted,
        ]
    }

    #[test]
    fn the_current_version_reads_back_what_it_writes() {
        for event in samples() {
            let stored = encode(&event);
            assert!(stored.get("type").is_none(), "{stored}");
            assert_eq!(
                decode(event.event_type(), CURRENT_VERSION, stored).unwrap(),
                event
            );
        }
    }

    #[test]
    fn a_version_1_row_reads_as_the_same_event() {
        let row = json!({"type": "PaymentDeclined", "reason": "insufficient funds"});
        assert_eq!(
            decode("PaymentDeclined", 1, row).unwrap(),
            OrderEvent::PaymentDeclined {
                reason: "insufficient funds".into()
            }
        );
        let unit = json!({"type": "OrderCompleted"});
        assert_eq!(
            decode("OrderCompleted", 1, unit).unwrap(),
            OrderEvent::OrderCompleted
        );
    }

    #[test]
    fn versions_it_cannot_know_are_errors_not_guesses() {
        let data = json!({"reason": "x"});
        assert!(matches!(
            decode("PaymentDeclined", 3, data.clone()),
            Err(UpcastError::Newer(3))
        ));
        assert!(matches!(
            decode("PaymentDeclined", 0, data.clone()),
            Err(UpcastError::Unknown(0))
        ));
        assert!(matches!(
            decode("PaymentDeclined", 2, json!({"corrupt": true})),
            Err(UpcastError::Shape { .. })
        ));
        assert!(matches!(
            decode("PaymentDeclined", 2, json!([1])),
            Err(UpcastError::NotAnObject)
        ));
    }
}
