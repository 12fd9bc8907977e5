//! Persistence: the append-only `order_events` with its `orders_view` projection, the
//! catalog copy and idempotency keys. Nothing here decides anything.

mod catalog;
mod history;
mod idempotency;
pub mod upcaster;

pub use catalog::{CatalogRow, catalog_prices, upsert_catalog};
pub use history::{
    LoadedOrder, RecordedEvent, Unreadable, histories, history, idle_since, lock, lock_all,
    rebuild_view, record,
};
pub use idempotency::{claim_idempotency_key, idempotent_request};
