//! Per-order saga state that billing, inventory and shipping keep as JSON, one row per order
//! in a table of their own shaped `(order_id uuid PRIMARY KEY, state jsonb NOT NULL,
//! updated_at timestamptz)`, and the lock -> decide -> save step their handlers share.
//!
//! A handler locks the rows of every order in its batch before deciding, so two events of one
//! order (arriving on different topics, possibly handled by different replicas) are decided
//! one after the other. The table's SQL is written once, in [`saga_state_table!`](crate::saga_state_table), and
//! expanded in the service that owns the table, where `sqlx::query!` checks it against that
//! service's schema.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::types::Json;
use uuid::Uuid;

use crate::consumer::HandlerError;
use crate::contracts::{Event, EventPayload};

/// Declares a unit struct for one saga-state table with three checked statements:
/// `lock_all` (lock the batch's orders, creating missing rows), `save` (write what changed)
/// and `get` (read one order without a lock).
///
/// ```ignore
/// shared_events::saga_state_table! {
///     /// Billing's saga state per order.
///     pub struct OrderPayments("order_payments") holds OrderPayment;
/// }
/// ```
#[macro_export]
macro_rules! saga_state_table {
    ($(#[$doc:meta])* $vis:vis struct $name:ident($table:literal) holds $state:ty;) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        $vis struct $name;

        impl $name {
            /// Locks the rows of the orders `events` concern (creating missing ones) in
            /// order-id order, so that batches sharing orders queue instead of
            /// deadlocking; returns each order's state, the default if new. One statement:
            /// the no-op update on conflict takes the lock.
            pub async fn lock_all(
                tx: &mut ::sqlx::PgConnection,
                events: &[&$crate::contracts::Event],
            ) -> ::std::result::Result<
                $crate::saga_state::LockedStates<$state>,
                $crate::consumer::HandlerError,
            > {
                let ids = $crate::saga_state::order_ids(events);
                let rows = ::sqlx::query!(
                    "INSERT INTO " + $table + " AS t (order_id, state)
                     SELECT id, 'null' FROM UNNEST($1::uuid[]) AS id ORDER BY id
                     ON CONFLICT (order_id) DO UPDATE SET state = t.state
                     RETURNING order_id, state",
                    &ids,
                )
                .fetch_all(&mut *tx)
                .await?;
                $crate::saga_state::LockedStates::parse(
                    $table,
                    rows.into_iter().map(|row| (row.order_id, row.state)),
                )
            }

            /// Writes the states the batch changed, in one statement.
            pub async fn save(
                tx: &mut ::sqlx::PgConnection,
                states: &$crate::saga_state::LockedStates<$state>,
            ) -> ::std::result::Result<(), $crate::consumer::HandlerError> {
                let (ids, changed) = states.changed();
                if ids.is_empty() {
                    return Ok(());
                }
                // A borrowed JSON array is bound unchecked (`as _`); the statement still is.
                ::sqlx::query!(
                    "UPDATE " + $table + " AS t SET state = v.state, updated_at = now()
                     FROM UNNEST($1::uuid[], $2::jsonb[]) AS v(order_id, state)
                     WHERE t.order_id = v.order_id",
                    &ids,
                    &changed as _,
                )
                .execute(tx)
                .await?;
                Ok(())
            }

            /// The order's state for reading (no lock); `None` if the service never heard
            /// of it.
            pub async fn get(
                pool: &::sqlx::PgPool,
                order_id: ::uuid::Uuid,
            ) -> ::std::result::Result<::std::option::Option<$state>, ::sqlx::Error> {
                let state = ::sqlx::query_scalar!(
                    "SELECT state FROM " + $table + " WHERE order_id = $1",
                    order_id,
                )
                .fetch_optional(pool)
                .await?;
                match state {
                    Some(state) => $crate::saga_state::decode(state),
                    None => Ok(None),
                }
            }
        }
    };
}

/// The saga states of a batch's orders under their row locks: as they were read and as the
/// batch leaves them.
#[derive(Debug)]
pub struct LockedStates<T> {
    before: BTreeMap<Uuid, T>,
    now: BTreeMap<Uuid, T>,
}

impl<T: DeserializeOwned + Default + Clone> LockedStates<T> {
    /// The locked rows of `table`. A stored state that no longer parses is a permanent
    /// failure: the batch is replayed record by record and only that order's events are
    /// dead-lettered.
    pub fn parse(
        table: &str,
        rows: impl IntoIterator<Item = (Uuid, serde_json::Value)>,
    ) -> Result<Self, HandlerError> {
        let mut before = BTreeMap::new();
        for (order_id, state) in rows {
            before.insert(order_id, parse(table, order_id, state)?.unwrap_or_default());
        }
        Ok(Self {
            now: before.clone(),
            before,
        })
    }
}

impl<T: Default + PartialEq + Serialize> LockedStates<T> {
    /// The orders' states as the batch leaves them so far.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.now.values()
    }

    /// Decides each event of the batch on its order's state, in order: `decide` updates the
    /// state in place and returns what the service answers, which goes out caused by the
    /// event it answers, from `producer`. An event of no order is not this step's.
    pub fn decide_each(
        &mut self,
        events: &[&Event],
        producer: &str,
        mut decide: impl FnMut(&mut T, &Event) -> Result<Option<EventPayload>, HandlerError>,
    ) -> Result<Vec<Event>, HandlerError> {
        let mut answers = Vec::new();
        for event in events {
            let Some(order_id) = event.metadata.order_id else {
                continue;
            };
            let state = self.now.entry(order_id).or_default();
            if let Some(answer) = decide(state, event)? {
                answers.push(Event::caused_by(&event.metadata, producer, answer));
            }
        }
        Ok(answers)
    }

    /// The orders whose state the batch changed, and those states, as two columns.
    pub fn changed(&self) -> (Vec<Uuid>, Vec<Json<&T>>) {
        self.now
            .iter()
            .filter(|(order_id, state)| self.before.get(order_id) != Some(state))
            .map(|(order_id, state)| (*order_id, Json(state)))
            .unzip()
    }
}

/// The orders the events concern, each once, in order-id order (the order rows are locked in).
pub fn order_ids(events: &[&Event]) -> Vec<Uuid> {
    let ids: BTreeSet<Uuid> = events.iter().filter_map(|e| e.metadata.order_id).collect();
    ids.into_iter().collect()
}

/// One stored state; `None` for the `null` a locked row is created with.
pub fn parse<T: DeserializeOwned>(
    table: &str,
    order_id: Uuid,
    state: serde_json::Value,
) -> Result<Option<T>, HandlerError> {
    serde_json::from_value(state).map_err(|e| {
        HandlerError::Rejected(format!(
            "the saga state of order {order_id} in {table} does not parse: {e}"
        ))
    })
}

/// One stored state as read outside a batch: one that no longer parses is a decode error.
pub fn decode<T: DeserializeOwned>(state: serde_json::Value) -> Result<Option<T>, sqlx::Error> {
    serde_json::from_value(state).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}
