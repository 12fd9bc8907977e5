//! A new order as the domain takes it: each part parsed into a type that cannot hold an
//! invalid value (as zero2prod's `SubscriberName::parse`), the lines priced from the
//! catalog. Reading a request into these parts, field by field, is the HTTP layer's
//! (`http/place.rs`); what a part may be is decided here.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use shared_events::contracts::{Address, Currency};

use super::events::{Line, Placed};

pub const MAX_LINES: usize = 50;
pub const MAX_QUANTITY: i64 = 1000;
/// The longest name, address line or id a field may hold (each field's `maxLength` in
/// the OpenAPI document says so; the e2e test checks each one against the service).
pub const MAX_TEXT: usize = 200;
/// Product ids, as inventory-service accepts them.
pub const MAX_PRODUCT_ID: usize = 64;
/// A note or a cancellation's reason.
pub const MAX_NOTE: usize = 500;

/// Text a person gave (a customer id, a name, an address line): not blank, at most
/// [`MAX_TEXT`] characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text(String);

impl Text {
    pub fn parse(value: &str) -> Result<Self, String> {
        if value.trim().is_empty() || value.chars().count() > MAX_TEXT {
            return Err(format!("must be 1 to {MAX_TEXT} characters"));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Optional text of at most `MAX` characters, which may be empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limited<const MAX: usize>(String);

impl<const MAX: usize> Limited<MAX> {
    pub fn parse(value: &str) -> Result<Self, String> {
        if value.chars().count() > MAX {
            return Err(format!("must be at most {MAX} characters"));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// A note on an order, or why it is cancelled or acted on.
pub type Note = Limited<MAX_NOTE>;

/// A product id: 1 to [`MAX_PRODUCT_ID`] characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ProductId(String);

impl ProductId {
    pub fn parse(value: &str) -> Result<Self, String> {
        if value.is_empty() || value.chars().count() > MAX_PRODUCT_ID {
            return Err(format!("must be 1 to {MAX_PRODUCT_ID} characters"));
        }
        Ok(Self(value.to_owned()))
    }
}

/// How many of a product a line orders: 1 to [`MAX_QUANTITY`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity(i32);

impl Quantity {
    pub const ONE: Quantity = Quantity(1);

    pub fn parse(value: i64) -> Result<Self, String> {
        if !(1..=MAX_QUANTITY).contains(&value) {
            return Err(format!("must be 1 to {MAX_QUANTITY}"));
        }
        Ok(Self(value as i32))
    }
}

/// An ISO 3166-1 alpha-2 country code such as `DE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountryCode(String);

impl CountryCode {
    pub fn parse(value: &str) -> Result<Self, String> {
        if value.len() != 2 || !value.chars().all(|c| c.is_ascii_uppercase()) {
            return Err("must be an ISO 3166-1 alpha-2 code such as DE".to_owned());
        }
        Ok(Self(value.to_owned()))
    }
}

/// Where the order goes; every part parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShippingAddress {
    pub recipient: Text,
    pub line1: Text,
    pub line2: Option<Limited<MAX_TEXT>>,
    pub city: Text,
    pub postal_code: Text,
    pub country: CountryCode,
}

impl From<ShippingAddress> for Address {
    fn from(address: ShippingAddress) -> Self {
        Address {
            recipient: address.recipient.0,
            line1: address.line1.0,
            line2: address.line2.map(Limited::into_inner),
            city: address.city.0,
            postal_code: address.postal_code.0,
            country: address.country.0,
        }
    }
}

/// How many lines an order may have: 1 to [`MAX_LINES`].
pub fn check_line_count(lines: usize) -> Result<(), String> {
    if lines == 0 || lines > MAX_LINES {
        return Err(format!("must have 1 to {MAX_LINES} lines, has {lines}"));
    }
    Ok(())
}

/// A product as order-service's catalog copy knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogPrice {
    pub unit_price_minor: i64,
    pub currency: String,
}

/// The catalog copy's prices of the products an order names (those that exist).
#[derive(Debug, Clone, Default)]
pub struct Catalog(pub BTreeMap<String, CatalogPrice>);

impl Catalog {
    /// A catalog of `(product id, unit price in minor units, currency)`, for tests.
    #[cfg(test)]
    pub fn of(prices: &[(&str, i64, &str)]) -> Self {
        let price = |&(id, unit_price_minor, currency): &(&str, i64, &str)| {
            let price = CatalogPrice {
                unit_price_minor,
                currency: currency.to_owned(),
            };
            (id.to_owned(), price)
        };
        Catalog(prices.iter().map(price).collect())
    }

    /// Prices `quantity` of `product` in the order's currency (`None` when the order's own
    /// currency did not parse: the product then only has to exist).
    pub fn price(
        &self,
        product: ProductId,
        quantity: Quantity,
        currency: Option<Currency>,
    ) -> Result<Line, String> {
        let Some(price) = self.0.get(&product.0) else {
            return Err(format!("unknown product {:?}", product.0));
        };
        if let Some(currency) = currency.filter(|c| c.as_str() != price.currency) {
            return Err(format!(
                "priced in {}, the order is in {}",
                price.currency,
                currency.as_str()
            ));
        }
        Ok(Line {
            product_id: product.0,
            quantity: quantity.0,
            unit_price_minor: price.unit_price_minor,
        })
    }
}

/// An order's priced lines and their total, which fits an `i64`: prices come from the
/// catalog, which caps none, so the sum is checked, not wrapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricedLines {
    lines: Vec<Line>,
    total_minor: i64,
}

impl PricedLines {
    pub fn total(lines: Vec<Line>) -> Result<Self, String> {
        let total_minor = lines.iter().try_fold(0_i64, |total, l| {
            l.unit_price_minor
                .checked_mul(i64::from(l.quantity))?
                .checked_add(total)
        });
        match total_minor {
            Some(total_minor) => Ok(Self { lines, total_minor }),
            None => Err("the order total is too large to be charged".to_owned()),
        }
    }

    pub fn total_minor(&self) -> i64 {
        self.total_minor
    }
}

/// An order that passed every rule, priced from the catalog: made only of parsed parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    pub customer_id: Text,
    pub currency: Currency,
    pub lines: PricedLines,
    pub shipping_address: ShippingAddress,
    pub note: Option<Note>,
}

impl NewOrder {
    /// The order's first event, with the deadline its saga must finish by.
    pub fn placed(self, saga_deadline: DateTime<Utc>) -> Placed {
        Placed {
            customer_id: self.customer_id.0,
            currency: self.currency.as_str().to_owned(),
            total_minor: self.lines.total_minor,
            lines: self.lines.lines,
            shipping_address: self.shipping_address.into(),
            note: self.note.map(Limited::into_inner),
            saga_deadline,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_part_refuses_what_it_cannot_hold() {
        assert!(Text::parse("  ").is_err());
        assert!(Text::parse(&"x".repeat(MAX_TEXT + 1)).is_err());
        assert!(Text::parse(&"é".repeat(MAX_TEXT)).is_ok()); // characters, not bytes
        assert!(ProductId::parse("").is_err());
        assert!(ProductId::parse(&"p".repeat(MAX_PRODUCT_ID + 1)).is_err());
        assert_eq!(
            Quantity::parse(0),
            Err(format!("must be 1 to {MAX_QUANTITY}"))
        );
        assert!(Quantity::parse(MAX_QUANTITY + 1).is_err());
        assert!(Quantity::parse(i64::MAX).is_err());
        assert!(CountryCode::parse("de").is_err());
        assert!(CountryCode::parse("DEU").is_err());
        assert!(Note::parse("").is_ok());
        assert!(Note::parse(&"n".repeat(MAX_NOTE + 1)).is_err());
        assert!(check_line_count(0).is_err());
        assert!(check_line_count(MAX_LINES + 1).is_err());
        assert!(check_line_count(MAX_LINES).is_ok());
    }

    fn catalog() -> Catalog {
        Catalog::of(&[("p1", 250, "EUR"), ("usd", 5, "USD")])
    }

    #[test]
    fn a_line_is_priced_only_from_a_known_product_in_the_order_currency() {
        let (p1, two) = (ProductId::parse("p1").unwrap(), Quantity::parse(2).unwrap());
        let eur = Currency::parse("EUR").ok();
        let line = catalog().price(p1.clone(), two, eur).unwrap();
        assert_eq!((line.quantity, line.unit_price_minor), (2, 250));
        let usd = ProductId::parse("usd").unwrap();
        assert_eq!(
            catalog().price(usd.clone(), two, eur),
            Err("priced in USD, the order is in EUR".to_owned())
        );
        // An order whose currency did not parse: the product only has to exist.
        assert!(catalog().price(usd, two, None).is_ok());
        let unknown = ProductId::parse("nope").unwrap();
        assert!(catalog().price(unknown, two, eur).is_err());
    }

    #[test]
    fn a_total_too_large_for_i64_is_refused_not_wrapped() {
        let line = |unit_price_minor| Line {
            product_id: "p".into(),
            quantity: 2,
            unit_price_minor,
        };
        assert!(PricedLines::total(vec![line(i64::MAX / 2 + 1)]).is_err());
        // At the edge it still adds up.
        let edge = (i64::MAX - 1000) / 2;
        let priced = PricedLines::total(vec![line(edge), line(500)]).unwrap();
        assert_eq!(priced.total_minor(), edge * 2 + 1000);
    }
}
