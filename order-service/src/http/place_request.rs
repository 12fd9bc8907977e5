//! The body of `POST /orders` as it travels, and its reading into a [`NewOrder`]: each field
//! parsed by the domain type it becomes, every broken rule reported against its field.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use service_runtime::FieldErrors;
use shared_events::contracts::Currency;

use crate::domain::Line;
use crate::domain::new_order::{
    Catalog, CountryCode, Limited, MAX_LINES, NewOrder, Note, PricedLines, ProductId, Quantity,
    ShippingAddress, Text, check_line_count,
};

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

impl PlaceOrder {
    /// The order this request asks for, its lines priced from `catalog` (the requested
    /// products that exist); or every broken rule, each against its field.
    pub fn parse(&self, catalog: &Catalog) -> Result<NewOrder, FieldErrors> {
        let mut errors = FieldErrors::default();
        let customer_id = errors.parse("customer_id", Text::parse(&self.customer_id));
        let currency = errors.parse("currency", Currency::parse(&self.currency));
        let lines = self.lines(currency, catalog, &mut errors);
        let shipping_address = self.shipping_address.parse(&mut errors);
        let note = errors.parse("note", self.note.as_deref().map(Note::parse).transpose());
        let lines = errors.parse("items", PricedLines::total(lines));
        match (customer_id, currency, lines, shipping_address, note) {
            (
                Some(customer_id),
                Some(currency),
                Some(lines),
                Some(shipping_address),
                Some(note),
            ) if errors.is_empty() => Ok(NewOrder {
                customer_id,
                currency,
                lines,
                shipping_address,
                note,
            }),
            _ => Err(errors),
        }
    }

    /// The lines that parse and price (one per product); the others' rules are recorded.
    fn lines(
        &self,
        currency: Option<Currency>,
        catalog: &Catalog,
        errors: &mut FieldErrors,
    ) -> Vec<Line> {
        errors.parse("items", check_line_count(self.items.len()));
        let mut products = BTreeSet::new();
        let mut lines = Vec::new();
        for (i, item) in self.items.iter().enumerate().take(MAX_LINES) {
            let product_field = format!("items[{i}].product_id");
            let Some(product) = errors.parse(&product_field, ProductId::parse(&item.product_id))
            else {
                continue;
            };
            let quantity = errors.parse(
                &format!("items[{i}].quantity"),
                Quantity::parse(item.quantity),
            );
            if !products.insert(product.clone()) {
                errors.check(
                    false,
                    &product_field,
                    "product appears on more than one line",
                );
                continue;
            }
            // A line whose quantity is wrong is still looked up, so an unknown product on
            // it is reported at once too.
            let quantity = quantity.unwrap_or(Quantity::ONE);
            let line = errors.parse(&product_field, catalog.price(product, quantity, currency));
            if let Some(line) = line {
                lines.push(line);
            }
        }
        lines
    }
}

impl AddressRequest {
    fn parse(&self, errors: &mut FieldErrors) -> Option<ShippingAddress> {
        let mut text = |field: &str, value: &str| {
            errors.parse(&format!("shipping_address.{field}"), Text::parse(value))
        };
        let (recipient, line1, city, postal_code) = (
            text("recipient", &self.recipient),
            text("line1", &self.line1),
            text("city", &self.city),
            text("postal_code", &self.postal_code),
        );
        let line2 = errors.parse(
            "shipping_address.line2",
            self.line2.as_deref().map(Limited::parse).transpose(),
        );
        let country = errors.parse(
            "shipping_address.country",
            CountryCode::parse(&self.country),
        );
        Some(ShippingAddress {
            recipient: recipient?,
            line1: line1?,
            line2: line2?,
            city: city?,
            postal_code: postal_code?,
            country: country?,
        })
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

    fn catalog() -> Catalog {
        Catalog::of(&[("p1", 250, "EUR"), ("p2", 1000, "EUR"), ("usd", 5, "USD")])
    }

    fn fields(result: Result<NewOrder, FieldErrors>) -> Vec<String> {
        result.unwrap_err().fields()
    }

    #[test]
    fn a_valid_order_is_priced_from_the_catalog() {
        let order = request().parse(&catalog()).unwrap();
        let placed = order.placed(chrono::Utc::now());
        assert_eq!(placed.total_minor, 2 * 250 + 1000);
        assert_eq!(placed.lines[0].unit_price_minor, 250);
        assert_eq!(placed.shipping_address.country, "DE");
    }

    #[test]
    fn a_total_too_large_for_i64_is_refused_not_wrapped() {
        let mut huge = catalog();
        huge.0.get_mut("p1").unwrap().unit_price_minor = i64::MAX / 2;
        assert_eq!(fields(request().parse(&huge)), ["items"]);
        // At the edge it still adds up.
        huge.0.get_mut("p1").unwrap().unit_price_minor = (i64::MAX - 1000) / 2;
        let order = request().parse(&huge).unwrap();
        assert_eq!(order.lines.total_minor(), (i64::MAX - 1000) / 2 * 2 + 1000);
    }

    #[test]
    fn every_broken_rule_names_its_field() {
        let mut bad = request();
        bad.currency = "XYZ".into();
        bad.items[0].quantity = 0;
        bad.items[1].product_id = "nope".into();
        bad.shipping_address.country = "de".into();
        assert_eq!(
            fields(bad.parse(&catalog())),
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
        assert_eq!(fields(bad.parse(&catalog())), ["items"]);
        let mut bad = request();
        bad.items = (0..51).map(|_| bad.items[0].clone()).collect();
        assert!(fields(bad.parse(&catalog())).contains(&"items".to_owned()));
        let mut bad = request();
        bad.items[1].product_id = "p1".into();
        bad.items[0].quantity = 1001;
        assert_eq!(
            fields(bad.parse(&catalog())),
            ["items[0].quantity", "items[1].product_id"]
        );
        let mut bad = request();
        bad.items[1].product_id = "usd".into();
        assert_eq!(fields(bad.parse(&catalog())), ["items[1].product_id"]);
    }
}
