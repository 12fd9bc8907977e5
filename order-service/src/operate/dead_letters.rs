//! The records in the dead-letter topics as an operator works through them: `GET
//! /sagas/dead-letters` groups them by cause (where, by whom, why), with counts, when they
//! were first and last seen and the orders they touch; each letter says why it cannot be
//! redriven where it cannot. Acknowledged letters leave the listing; `?acknowledged=true`
//! lists them, with who acknowledged them and why.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use service_runtime::{Admin, Problem, ValidQuery};
use shared_events::TopicNames;
use shared_events::contracts::DeadLetterPosition;
use shared_events::dead_letter::DeadLetter;
use shared_events::topics::DLQ_SUFFIX;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::OperateState;
use super::acknowledgements::{self, Acknowledgement, Place};
use super::causes::Cause;
use super::scan::{LISTING_MAX_AGE, ScannedLetter};

/// Most letters a group lists, the newest first (its count has them all).
const LETTERS_PER_GROUP: usize = 20;
/// Most orders a group names.
const ORDERS_PER_GROUP: usize = 50;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeadLetterView {
    /// The dead-letter topic.
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub original_topic: Option<String>,
    pub consumer_group: Option<String>,
    pub error_class: Option<String>,
    /// Why the consumer gave up on the record.
    pub reason: Option<String>,
    /// Set when the record had been sent again by a redrive and failed again: the dead
    /// letter that redrive was for.
    pub failed_again_after: Option<String>,
}

/// One dead letter, as `GET /sagas/stuck` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterId {
    /// The dead-letter topic, e.g. `payments.dlq`.
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

impl DeadLetterView {
    pub(super) fn of(dlq: &str, letter: &DeadLetter) -> Self {
        Self {
            topic: dlq.to_owned(),
            partition: letter.partition,
            offset: letter.offset,
            original_topic: letter.original_topic.clone(),
            consumer_group: letter.consumer_group.clone(),
            error_class: letter.error_class.clone(),
            reason: letter.error_message.clone(),
            failed_again_after: letter.replayed_from.clone(),
        }
    }

    pub fn place(&self) -> Place {
        (self.topic.clone(), self.partition, self.offset)
    }

    pub fn is(&self, id: &DeadLetterId) -> bool {
        (self.topic.as_str(), self.partition, self.offset) == (&id.topic, id.partition, id.offset)
    }

    /// Where it sits, as a redrive request names it (the original topic without the
    /// deployment's prefix); `None` for a topic that is not one of ours.
    pub fn position(&self, names: &TopicNames) -> Option<DeadLetterPosition> {
        let original = names.parse(self.topic.strip_suffix(DLQ_SUFFIX)?)?;
        Some(DeadLetterPosition {
            topic: original.base_name().to_owned(),
            partition: self.partition,
            offset: self.offset,
        })
    }
}

/// The dead letters, grouped by cause, the newest cause first.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterGroups {
    pub groups: Vec<DeadLetterGroup>,
    /// How many letters the groups hold in all.
    pub letters: usize,
    /// The dead-letter topics that could not be read, and why.
    pub unavailable: Vec<String>,
}

/// The letters of one cause.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterGroup {
    pub cause: Cause,
    /// How many letters it holds.
    pub count: usize,
    /// When its first letter was set aside.
    pub first_seen: Option<DateTime<Utc>>,
    /// When its last letter was set aside.
    pub last_seen: Option<DateTime<Utc>>,
    /// The orders its letters are of, at most 50.
    pub orders: Vec<Uuid>,
    /// Its newest letters, at most 20.
    pub letters: Vec<DeadLetterEntry>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterEntry {
    #[serde(flatten)]
    pub letter: DeadLetterView,
    /// The order it is of: the record's `order_id`, or for a record that does not decode,
    /// its key.
    pub order_id: Option<Uuid>,
    /// When it was set aside.
    pub dead_lettered_at: Option<DateTime<Utc>>,
    /// Its `event_type` header.
    pub event_type: Option<String>,
    /// The record decoded through the schema registry: its metadata and payload.
    #[schema(value_type = Option<Object>)]
    pub record: Option<serde_json::Value>,
    /// Why it could not be decoded, if it could not (often why it was set aside).
    pub undecodable: Option<String>,
    /// Why a redrive cannot send it back, if it cannot: then only an acknowledgement ends it.
    pub not_redrivable: Option<String>,
    /// Who acknowledged it, when and why (in the acknowledged listing).
    pub acknowledgement: Option<Acknowledgement>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterQuery {
    /// `true` lists the letters operators acknowledged instead of those that need one.
    pub acknowledged: Option<bool>,
}

/// The dead letters (of every topic, the catalog's too) that need an operator, grouped by
/// cause; or, with `acknowledged=true`, those acknowledged. Reads the newest 500 records of
/// each dead-letter partition.
#[utoipa::path(get, path = "/sagas/dead-letters", tag = "operate", params(DeadLetterQuery),
    security(("bearer" = ["admin"])),
    responses(
        (status = 200, body = DeadLetterGroups),
        (status = 403, description = "Not an operator", content_type = "application/problem+json"),
        (status = 422, description = "An unknown query parameter or a value that is not a boolean", content_type = "application/problem+json"),
    ))]
pub(super) async fn dead_letters(
    _admin: Admin,
    State(state): State<OperateState>,
    ValidQuery(query): ValidQuery<DeadLetterQuery>,
) -> Result<Json<DeadLetterGroups>, Problem> {
    let listing_acknowledged = query.acknowledged.unwrap_or(false);
    let scan = state.dead_letter_scan(LISTING_MAX_AGE).await;
    let places: Vec<Place> = scan.letters().iter().map(ScannedLetter::place).collect();
    let acknowledged = acknowledgements::of(&state.pool, &places).await?;
    let mut by_cause: BTreeMap<Cause, Vec<&ScannedLetter>> = BTreeMap::new();
    for (scanned, place) in scan.letters().iter().zip(&places) {
        if acknowledged.contains_key(place) == listing_acknowledged {
            by_cause.entry(scanned.cause()).or_default().push(scanned);
        }
    }
    let mut groups: Vec<_> = by_cause.into_iter().map(Group::of).collect();
    // The newest cause first. (By first sighting: a group's place stays put while its letters
    // come in, so the console's rows do not move under the operator's pointer.)
    groups.sort_by_key(|group| std::cmp::Reverse(group.first_seen));
    let listed_orders: Vec<Uuid> = groups
        .iter()
        .flat_map(|group| &group.listed)
        .filter_map(|scanned| scanned.decoded.order_id)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let ours = crate::store::existing_orders(&state.pool, &listed_orders).await?;
    let letters = groups.iter().map(|group| group.count).sum();
    let groups = groups
        .into_iter()
        .map(|group| group.view(&state.names, &ours, &acknowledged))
        .collect();
    Ok(Json(DeadLetterGroups {
        groups,
        letters,
        unavailable: scan.unavailable.clone(),
    }))
}

/// A group as it is gathered: its letters, newest first.
struct Group<'a> {
    cause: Cause,
    count: usize,
    first_seen: Option<DateTime<Utc>>,
    last_seen: Option<DateTime<Utc>>,
    orders: Vec<Uuid>,
    listed: Vec<&'a ScannedLetter>,
}

impl<'a> Group<'a> {
    fn of((cause, mut letters): (Cause, Vec<&'a ScannedLetter>)) -> Self {
        letters.sort_by_key(|scanned| std::cmp::Reverse(scanned.letter.timestamp));
        let times = letters
            .iter()
            .filter_map(|scanned| scanned.letter.timestamp);
        let (first_seen, last_seen) = (times.clone().min(), times.max());
        let orders: BTreeSet<Uuid> = letters
            .iter()
            .filter_map(|scanned| scanned.decoded.order_id)
            .collect();
        Self {
            cause,
            count: letters.len(),
            first_seen,
            last_seen,
            orders: orders.into_iter().take(ORDERS_PER_GROUP).collect(),
            listed: letters.into_iter().take(LETTERS_PER_GROUP).collect(),
        }
    }

    fn view(
        self,
        names: &TopicNames,
        ours: &HashSet<Uuid>,
        acknowledged: &HashMap<Place, Acknowledgement>,
    ) -> DeadLetterGroup {
        let letters = self
            .listed
            .into_iter()
            .map(|scanned| {
                let (letter, decoded) = (&scanned.letter, &scanned.decoded);
                let view = DeadLetterView::of(&scanned.dlq, letter);
                DeadLetterEntry {
                    not_redrivable: not_redrivable(&view, scanned, names, ours),
                    acknowledgement: acknowledged.get(&view.place()).cloned(),
                    letter: view,
                    order_id: decoded.order_id,
                    dead_lettered_at: letter.timestamp,
                    event_type: letter.event_type.clone(),
                    record: decoded.record.as_ref().ok().cloned(),
                    undecodable: decoded.record.as_ref().err().cloned(),
                }
            })
            .collect();
        DeadLetterGroup {
            cause: self.cause,
            count: self.count,
            first_seen: self.first_seen,
            last_seen: self.last_seen,
            orders: self.orders,
            letters,
        }
    }
}

/// Why a redrive cannot send the letter back: a redrive reads an order's record back from
/// its topic and sends it again, so a record that does not decode would fail again the same
/// way, and one of no order of ours has no saga to go on.
fn not_redrivable(
    view: &DeadLetterView,
    scanned: &ScannedLetter,
    names: &TopicNames,
    ours: &HashSet<Uuid>,
) -> Option<String> {
    if view.position(names).is_none() {
        return Some(format!(
            "{} is not a dead-letter topic of this deployment",
            view.topic
        ));
    }
    if scanned.decoded.record.is_err() {
        // Why it does not is the entry's `undecodable`.
        return Some("its record does not decode: sent again, it would fail the same way".into());
    }
    match scanned.decoded.order_id {
        None => Some("its record is of no order: a redrive sends back an order's records".into()),
        Some(order) if !ours.contains(&order) => {
            Some(format!("order {order} is not one this service took"))
        }
        Some(_) => None,
    }
}
