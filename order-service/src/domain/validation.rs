//! Checking a `POST /orders` body against the rules and the local catalog copy, as a pure
//! function: every broken rule is reported with the field it concerns.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use shared_events::contracts::{Address, CURRENCIES};

use super::events::Line;

pub const MAX_LINES: usize = 50;
pub const MAX_QUANTITY: i64 = 1000;
/// The longest name, address line or id a field may hold (each field's `maxLength` in
/// the OpenAPI document says so; the e2e test checks each one against the service).
const MAX_TEXT: usize = 200;
/// Product ids, as inventory-service accepts them.
const MAX_PRODUCT_ID: usize = 64;
/// A note or a cancellation's reason.
pub const MAX_NOTE: usize = 500;

/// The body of `POST /orders`.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrder {
    #[schema(min_length = 1, max_length = 200)]
    pub customer_id: String,
    /// ISO 4217 code; one of EUR, USD, GBP, CHF.
    #[schema(min_length = 3, max_length = 3)]
    pub currency: String,
    /// 1 to 50 lines.
    pub items: Vec<ItemRequest>,
    pub shipping_address: AddressRequest,
    #[serde(default)]
    #[schema(max_length = 500)]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ItemRequest {
    #[schema(min_length = 1, max_length = 64)]
    pub product_id: String,
    /// 1 to 1000.
    pub quantity: i64,
}

#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddressRequest {
    #[schema(min_length = 1, max_length = 200)]
    pub recipient: String,
    #[schema(min_length = 1, max_length = 200)]
    pub line1: String,
    #[serde(default)]
    #[schema(max_length = 200)]
    pub line2: Option<String>,
    #[schema(min_length = 1, max_length = 200)]
    pub city: String,
    #[schema(min_length = 1, max_length = 200)]
    pub postal_code: String,
    /// ISO 3166-1 alpha-2, e.g. `DE`.
    #[schema(min_length = 2, max_length = 2)]
    pub country: String,
}

/// A product as order-service's catalog copy knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogPrice {
    pub unit_price_minor: i64,
    pub currency: String,
}

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// Path of the offending field, e.g. `items[2].quantity`.
    pub field: String,
    pub message: String,
}

/// An order that passed every check, priced from the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidOrder {
    pub customer_id: String,
    pub currency: String,
    pub lines: Vec<Line>,
    pub total_minor: i64,
    pub shipping_address: Address,
    pub note: Option<String>,
}

/// Validates `request` against the rules and `catalog` (the requested products that exist).
pub fn validate(
    request: &PlaceOrder,
    catalog: &BTreeMap<String, CatalogPrice>,
) -> Result<ValidOrder, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut fail = |field: String, message: String| errors.push(FieldError { field, message });
    text("customer_id", &request.customer_id, &mut fail);
    let known_currency = CURRENCIES.contains(&request.currency.as_str());
    if !known_currency {
        fail(
            "currency".into(),
            format!("unknown currency; use one of {}", CURRENCIES.join(", ")),
        );
    }
    if request.items.is_empty() || request.items.len() > MAX_LINES {
        fail(
            "items".into(),
            format!(
                "must have 1 to {MAX_LINES} lines, has {}",
                request.items.len()
            ),
        );
    }
    let mut seen = BTreeSet::new();
    let mut lines = Vec::new();
    for (i, item) in request.items.iter().enumerate().take(MAX_LINES) {
        if item.product_id.is_empty() || item.product_id.chars().count() > MAX_PRODUCT_ID {
            fail(
                format!("items[{i}].product_id"),
                format!("must be 1 to {MAX_PRODUCT_ID} characters"),
            );
            continue;
        }
        if !(1..=MAX_QUANTITY).contains(&item.quantity) {
            fail(
                format!("items[{i}].quantity"),
                format!("must be 1 to {MAX_QUANTITY}"),
            );
        }
        if !seen.insert(item.product_id.as_str()) {
            fail(
                format!("items[{i}].product_id"),
                "product appears on more than one line".into(),
            );
            continue;
        }
        match catalog.get(&item.product_id) {
            None => fail(
                format!("items[{i}].product_id"),
                format!("unknown product {:?}", item.product_id),
            ),
            Some(price) if known_currency && price.currency != request.currency => fail(
                format!("items[{i}].product_id"),
                format!(
                    "priced in {}, the order is in {}",
                    price.currency, request.currency
                ),
            ),
            Some(price) => lines.push(Line {
                product_id: item.product_id.clone(),
                quantity: item.quantity.clamp(1, MAX_QUANTITY) as i32,
                unit_price_minor: price.unit_price_minor,
            }),
        }
    }
    let address = &request.shipping_address;
    for (field, value) in [
        ("recipient", &address.recipient),
        ("line1", &address.line1),
        ("city", &address.city),
        ("postal_code", &address.postal_code),
    ] {
        text(&format!("shipping_address.{field}"), value, &mut fail);
    }
    if address
        .line2
        .as_ref()
        .is_some_and(|l| l.chars().count() > MAX_TEXT)
    {
        fail(
            "shipping_address.line2".into(),
            format!("must be at most {MAX_TEXT} characters"),
        );
    }
    let country_ok =
        address.country.len() == 2 && address.country.chars().all(|c| c.is_ascii_uppercase());
    if !country_ok {
        fail(
            "shipping_address.country".into(),
            "must be an ISO 3166-1 alpha-2 code such as DE".into(),
        );
    }
    if request
        .note
        .as_ref()
        .is_some_and(|n| n.chars().count() > MAX_NOTE)
    {
        fail(
            "note".into(),
            format!("must be at most {MAX_NOTE} characters"),
        );
    }
    // Prices come from the catalog, which caps none: the sum is checked, not wrapped.
    let total_minor = lines.iter().try_fold(0_i64, |total, l| {
        l.unit_price_minor
            .checked_mul(i64::from(l.quantity))?
            .checked_add(total)
    });
    if total_minor.is_none() {
        fail(
            "items".into(),
            "the order total is too large to be charged".into(),
        );
    }
    let (Some(total_minor), true) = (total_minor, errors.is_empty()) else {
        return Err(errors);
    };
    Ok(ValidOrder {
        customer_id: request.customer_id.clone(),
        currency: request.currency.clone(),
        lines,
        total_minor,
        shipping_address: Address {
            recipient: address.recipient.clone(),
            line1: address.line1.clone(),
            line2: address.line2.clone(),
            city: address.city.clone(),
            postal_code: address.postal_code.clone(),
            country: address.country.clone(),
        },
        note: request.note.clone(),
    })
}

fn text(field: &str, value: &str, fail: &mut impl FnMut(String, String)) {
    if value.trim().is_empty() || value.chars().count() > MAX_TEXT {
        fail(
            field.to_owned(),
            format!("must be 1 to {MAX_TEXT} characters"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> PlaceOrder {
        serde_json::from_value(serde_json::json!({
            "customer_id": "alice", "currency": "EUR",
            "items": [{"product_id": "p1", "quantity": 2}, {"product_id": "p2", "quantity": 1}],
            "shipping_address": {"recipient": "A", "line1": "1 St", "city": "Berlin",
                                 "postal_code": "10115", "country": "DE"}
        }))
        .unwrap()
    }

    fn catalog() -> BTreeMap<String, CatalogPrice> {
        [("p1", 250, "EUR"), ("p2", 1000, "EUR"), ("usd", 5, "USD")]
            .into_iter()
            .map(|(id, price, currency)| {
                (
                    id.to_owned(),
                    CatalogPrice {
                        unit_price_minor: price,
                        currency: currency.to_owned(),
                    },
                )
            })
            .collect()
    }

    fn fields(result: Result<ValidOrder, Vec<FieldError>>) -> Vec<String> {
        result.unwrap_err().into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn a_valid_order_is_priced_from_the_catalog() {
        let order = validate(&request(), &catalog()).unwrap();
        assert_eq!(order.total_minor, 2 * 250 + 1000);
        assert_eq!(order.lines[0].unit_price_minor, 250);
    }

    #[test]
    fn a_total_too_large_for_i64_is_refused_not_wrapped() {
        let mut huge = catalog();
        huge.get_mut("p1").unwrap().unit_price_minor = i64::MAX / 2;
        assert_eq!(fields(validate(&request(), &huge)), ["items"]);
        // At the edge it still adds up.
        huge.get_mut("p1").unwrap().unit_price_minor = (i64::MAX - 1000) / 2;
        let order = validate(&request(), &huge).unwrap();
        assert_eq!(order.total_minor, (i64::MAX - 1000) / 2 * 2 + 1000);
    }

    #[test]
    fn every_broken_rule_names_its_field() {
        let mut bad = request();
        bad.currency = "XYZ".into();
        bad.items[0].quantity = 0;
        bad.items[1].product_id = "nope".into();
        bad.shipping_address.country = "de".into();
        assert_eq!(
            fields(validate(&bad, &catalog())),
            [
                "currency",
                "items[0].quantity",
                "items[1].product_id",
                "shipping_address.country"
            ]
        );
    }

    #[test]
    fn line_count_quantity_duplicates_and_currency_mismatch_are_checked() {
        let mut bad = request();
        bad.items.clear();
        assert_eq!(fields(validate(&bad, &catalog())), ["items"]);
        let mut bad = request();
        bad.items = (0..51).map(|_| bad.items[0].clone()).collect();
        assert!(fields(validate(&bad, &catalog())).contains(&"items".to_owned()));
        let mut bad = request();
        bad.items[1].product_id = "p1".into();
        bad.items[0].quantity = 1001;
        assert_eq!(
            fields(validate(&bad, &catalog())),
            ["items[0].quantity", "items[1].product_id"]
        );
        let mut bad = request();
        bad.items[1].product_id = "usd".into();
        assert_eq!(fields(validate(&bad, &catalog())), ["items[1].product_id"]);
    }
}
