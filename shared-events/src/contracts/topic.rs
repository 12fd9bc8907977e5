//! The saga's topics. Several event types share one topic (TopicRecordNameStrategy); which
//! one each travels on is its [`super::Contract`]'s.

/// A topic of the saga. Several event types share one topic (TopicRecordNameStrategy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    Orders,
    Payments,
    Inventory,
    Shipments,
    Catalog,
    /// An operator's requests to every service (see `shared_events::redrive`).
    Operations,
}

impl Topic {
    pub const ALL: [Topic; 6] = [
        Topic::Orders,
        Topic::Payments,
        Topic::Inventory,
        Topic::Shipments,
        Topic::Catalog,
        Topic::Operations,
    ];

    pub fn base_name(self) -> &'static str {
        match self {
            Topic::Orders => "orders",
            Topic::Payments => "payments",
            Topic::Inventory => "inventory",
            Topic::Shipments => "shipments",
            Topic::Catalog => "catalog",
            Topic::Operations => "operations",
        }
    }
}
