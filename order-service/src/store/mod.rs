//! Persistence: the append-only `order_events` with its `orders_view` projection, the
//! catalog copy and idempotency keys. Nothing here decides anything.

mod catalog;
mod history;
mod idempotency;
pub mod upcaster;
mod view;

pub use catalog::{CatalogRow, catalog_prices, upsert_catalog};
pub use history::{LoadedOrder, RecordedEvent, histories, history};
pub use idempotency::{claim_idempotency_key, delete_idempotency_keys_older, idempotent_request};
pub use view::{
    Unreadable, count_in_flight_up_to, existing_orders, idle_since, lock, lock_all, rebuild_view,
    record,
};
