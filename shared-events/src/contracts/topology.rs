//! Who sends and who receives each event type: the saga's topology, written down once.
//! Each service's handler takes the list of what it receives from here, and the AsyncAPI
//! document of the topics (`orderflow-admin asyncapi`) is generated from it.

/// One service's part in the saga.
#[derive(Debug, Clone, Copy)]
pub struct ServiceTopology {
    pub name: &'static str,
    /// The event types it publishes (through its outbox).
    pub sends: &'static [&'static str],
    /// The event types its consumer handles.
    pub receives: &'static [&'static str],
    /// The event types it also reads without a consumer group, to watch the flow:
    /// order-service's console feed taps its own events beside those it receives.
    pub watches: &'static [&'static str],
    /// Whether it operates the saga: it finds stuck orders and shows why (`GET
    /// /sagas/stuck`), so it reads every dead-letter topic and every service's consumer
    /// group progress.
    pub operates_the_saga: bool,
}

pub const ORDER_SERVICE: ServiceTopology = ServiceTopology {
    name: "order-service",
    sends: &[
        "OrderPlaced",
        "OrderCancellationRequested",
        "OrderCompleted",
        "OrderCancelled",
        "DeadLetterRedriveRequested",
    ],
    receives: &[
        "PaymentAuthorized",
        "PaymentDeclined",
        "PaymentRefunded",
        "StockReserved",
        "StockRejected",
        "StockReleased",
        "ShipmentScheduled",
        "ShipmentFailed",
        "ProductUpserted",
    ],
    watches: &[
        "OrderPlaced",
        "OrderCancellationRequested",
        "OrderCompleted",
        "OrderCancelled",
    ],
    operates_the_saga: true,
};

pub const BILLING_SERVICE: ServiceTopology = ServiceTopology {
    name: "billing-service",
    sends: &["PaymentAuthorized", "PaymentDeclined", "PaymentRefunded"],
    receives: &[
        "OrderPlaced",
        "StockRejected",
        "ShipmentFailed",
        "OrderCompleted",
    ],
    watches: &[],
    operates_the_saga: false,
};

pub const INVENTORY_SERVICE: ServiceTopology = ServiceTopology {
    name: "inventory-service",
    sends: &[
        "StockReserved",
        "StockRejected",
        "StockReleased",
        "ProductUpserted",
    ],
    receives: &["OrderPlaced", "PaymentAuthorized", "ShipmentFailed"],
    watches: &[],
    operates_the_saga: false,
};

pub const SHIPPING_SERVICE: ServiceTopology = ServiceTopology {
    name: "shipping-service",
    sends: &["ShipmentScheduled", "ShipmentFailed"],
    receives: &["OrderPlaced", "StockReserved", "OrderCancellationRequested"],
    watches: &[],
    operates_the_saga: false,
};

pub const SERVICES: [ServiceTopology; 4] = [
    ORDER_SERVICE,
    BILLING_SERVICE,
    INVENTORY_SERVICE,
    SHIPPING_SERVICE,
];

/// What every service hears besides its own `receives`, in a consumer group of its own
/// (`shared_events::redrive`): an operator's requests, each carried out by the service it falls to.
pub const HEARD_BY_EVERY_SERVICE: &[&str] = &["DeadLetterRedriveRequested"];

/// The service that publishes `event_type`.
pub fn sender_of(event_type: &str) -> Option<&'static ServiceTopology> {
    SERVICES.iter().find(|s| s.sends.contains(&event_type))
}

/// The services that handle `event_type`.
pub fn receivers_of(event_type: &str) -> impl Iterator<Item = &'static ServiceTopology> {
    let everyone = HEARD_BY_EVERY_SERVICE.contains(&event_type);
    SERVICES
        .iter()
        .filter(move |s| everyone || s.receives.contains(&event_type))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contracts::CONTRACTS;

    #[test]
    fn every_contract_has_exactly_one_sender() {
        // Receivers may be none: OrderCancelled is a fact for the world outside the saga.
        for contract in CONTRACTS {
            let senders = SERVICES
                .iter()
                .filter(|s| s.sends.contains(&contract.event_type))
                .count();
            assert_eq!(senders, 1, "{senders} senders of {}", contract.event_type);
        }
    }

    #[test]
    fn every_listed_event_type_is_a_contract_and_nobody_hears_itself() {
        for service in SERVICES {
            for event_type in service.sends.iter().chain(service.receives) {
                assert!(
                    CONTRACTS.iter().any(|c| c.event_type == *event_type),
                    "{event_type} of {} is no contract",
                    service.name
                );
            }
            for event_type in service.receives {
                assert!(
                    !service.sends.contains(event_type),
                    "{} hears its own {event_type}",
                    service.name
                );
            }
        }
    }
}
