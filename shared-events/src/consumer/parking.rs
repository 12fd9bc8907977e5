//! Parked orders: one order's bad record holds back that order only, and keeps it in order.
//!
//! When a consumer group dead-letters a record of an order, the order is *parked* in that
//! group: its later records are set aside in the group's database, in the order they came,
//! instead of applied, so the saga never sees them before the one that failed; every other
//! order on the partition goes on. The parking ends in one of two ways:
//!
//! - **The redrive.** The dead-lettered record comes again (same event id): it is applied,
//!   then the parked records, in order. One of them rejected in turn is dead-lettered and
//!   parks the order again, behind it.
//! - **The order's cancellation request.** The saga is being given up (the operator's cancel
//!   or the deadline): the parked records are applied, in order, then the request. They are
//!   not dropped: they may be the very inputs of the compensation (a `ShipmentFailed` that
//!   makes billing refund). The dead letter stays, for the operator to redrive or acknowledge.
//!
//! Only a group that hears the cancellation request parks orders (billing, inventory and
//! shipping read the orders topic); order-service's consumer does not: it owns the saga, and
//! its deadline cancels an order stuck behind a letter.
//!
//! Every write here happens in the transaction of the batch that decides it, so a crash
//! loses no parked record and parks none twice.

use std::collections::HashMap;

use sqlx::PgConnection;
use uuid::Uuid;

use super::batch::Pending;
use crate::contracts::{Contract, Topic};
use crate::outbox::OutboxRecord;

/// The event type whose record ends an order's parking without its letter: the order's
/// cancellation request.
pub const RELEASED_BY: &str = "OrderCancellationRequested";

/// Whether a group reading `topics` parks orders: it hears [`RELEASED_BY`].
pub fn parks_orders(topics: &[Topic]) -> bool {
    Contract::by_event_type(RELEASED_BY).is_some_and(|c| topics.contains(&c.topic))
}

/// A record set aside while its order was parked.
#[derive(Debug, Clone)]
pub struct ParkedRecord {
    pub seq: i64,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub event_type: String,
    pub payload: Vec<u8>,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    pub key: String,
}

/// The orders of `keys` parked in `group`, each with its dead-lettered event, locked until
/// the transaction ends: parking a record and ending the parking queue behind each other
/// (two members can hold two of an order's topics).
pub(super) async fn lock(
    tx: &mut PgConnection,
    group: &str,
    keys: &[String],
) -> Result<HashMap<String, Uuid>, sqlx::Error> {
    let rows = sqlx::query!(
        "SELECT order_key, event_id FROM parked_orders
         WHERE consumer_group = $1 AND order_key = ANY($2)
         ORDER BY order_key
         FOR UPDATE",
        group,
        keys,
    )
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.order_key, r.event_id))
        .collect())
}

/// Parks `pending`'s order behind it, dead-lettered for `reason` (or moves the parking
/// to it, when the order was parked behind another record).
pub(super) async fn park_order(
    tx: &mut PgConnection,
    group: &str,
    key: &str,
    pending: &Pending,
    reason: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO parked_orders
             (consumer_group, order_key, event_id, topic, kafka_partition, kafka_offset, reason)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (consumer_group, order_key) DO UPDATE SET
             event_id = EXCLUDED.event_id, topic = EXCLUDED.topic,
             kafka_partition = EXCLUDED.kafka_partition, kafka_offset = EXCLUDED.kafka_offset,
             reason = EXCLUDED.reason, parked_at = now()",
        group,
        key,
        pending.event.metadata.event_id,
        pending.partition.topic,
        pending.partition.partition,
        pending.offset,
        reason,
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Sets `pending` aside behind its parked order, as `encoded`.
pub(super) async fn park_record(
    tx: &mut PgConnection,
    group: &str,
    pending: &Pending,
    encoded: &OutboxRecord,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO parked_records
             (consumer_group, order_key, topic, kafka_partition, kafka_offset, event_id,
              event_type, payload, traceparent, tracestate)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (consumer_group, topic, kafka_partition, kafka_offset) DO NOTHING",
        group,
        encoded.key,
        pending.partition.topic,
        pending.partition.partition,
        pending.offset,
        encoded.event_id,
        encoded.event_type,
        encoded.payload,
        encoded.traceparent,
        encoded.tracestate,
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The records parked behind `key`'s order, in the order they came.
pub(super) async fn parked_records(
    tx: &mut PgConnection,
    group: &str,
    key: &str,
) -> Result<Vec<ParkedRecord>, sqlx::Error> {
    sqlx::query_as!(
        ParkedRecord,
        r#"SELECT seq, topic, kafka_partition AS partition, kafka_offset AS "offset",
                  event_type, payload, traceparent, tracestate, order_key AS key
           FROM parked_records
           WHERE consumer_group = $1 AND order_key = $2
           ORDER BY seq"#,
        group,
        key,
    )
    .fetch_all(&mut *tx)
    .await
}

/// A parked record is done with: applied, or dead-lettered.
pub(super) async fn remove_record(tx: &mut PgConnection, seq: i64) -> Result<(), sqlx::Error> {
    sqlx::query!("DELETE FROM parked_records WHERE seq = $1", seq)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// `key`'s order is no longer parked.
pub(super) async fn release_order(
    tx: &mut PgConnection,
    group: &str,
    key: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "DELETE FROM parked_orders WHERE consumer_group = $1 AND order_key = $2",
        group,
        key,
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_groups_that_hear_the_cancellation_request_park_and_no_other() {
        assert!(parks_orders(&[Topic::Orders, Topic::Shipments]));
        assert!(!parks_orders(&[Topic::Payments, Topic::Inventory]));
        assert!(!parks_orders(&[Topic::Operations]));
    }
}
