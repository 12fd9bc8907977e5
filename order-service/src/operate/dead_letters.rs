//! The records in the dead-letter topics: the evidence a stuck listing shows, what a
//! redrive picks from, and `GET /sagas/dead-letters`, the newest of them with their records
//! decoded.

use std::collections::{BTreeSet, HashMap};

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use service_runtime::{Admin, Problem};
use shared_events::contracts::DeadLetterPosition;
use shared_events::dead_letter::{DeadLetter, read_dead_letters};
use shared_events::topics::DLQ_SUFFIX;
use shared_events::{KafkaConfig, Topic, TopicNames};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{EVIDENCE_LIMIT, OperateState};

/// Most dead letters `GET /sagas/dead-letters` returns, the newest first.
const LISTED: usize = 100;

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
    fn of(dlq: &str, letter: &DeadLetter) -> Self {
        Self {
            topic: dlq.to_owned(),
            partition: letter.partition,
            offset: letter.offset,
            original_topic: letter.original_topic.clone(),
            consumer_group: letter.consumer_group.clone(),
            error_class: letter.error_class.clone(),
            reason: letter.error_message.clone(),
        }
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

/// The dead letters, newest first, at most 100, each with its record decoded where it can
/// be.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterList {
    pub dead_letters: Vec<DeadLetterEntry>,
    /// The dead-letter topics that could not be read, and why.
    pub unavailable: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterEntry {
    #[serde(flatten)]
    pub letter: DeadLetterView,
    /// The record's key: the order, for every saga topic.
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
}

/// Reads every dead-letter topic and keeps the records whose order (their key, if it is
/// one) `keep` accepts, each with its topic; also says which topics could not be read, and
/// why. Blocking: a scan of each topic to its end.
fn read_all(
    kafka: &KafkaConfig,
    names: &TopicNames,
    keep: impl Fn(Option<Uuid>) -> bool,
) -> (Vec<(String, DeadLetter)>, Vec<String>) {
    let mut found = Vec::new();
    let mut unavailable = Vec::new();
    for topic in Topic::ALL {
        let dlq = names.dead_letter(topic);
        match read_dead_letters(kafka, &dlq) {
            Ok(letters) => found.extend(
                letters
                    .into_iter()
                    .filter(|letter| keep(order_of(letter)))
                    .map(|letter| (dlq.clone(), letter)),
            ),
            Err(e) => unavailable.push(format!("{dlq}: {e}")),
        }
    }
    (found, unavailable)
}

fn order_of(letter: &DeadLetter) -> Option<Uuid> {
    letter.key.as_deref()?.parse().ok()
}

/// The dead letters of the `wanted` orders, by order, and which topics could not be read.
/// Blocking.
pub fn scan(
    kafka: &KafkaConfig,
    names: &TopicNames,
    wanted: &BTreeSet<Uuid>,
) -> (HashMap<Uuid, Vec<DeadLetterView>>, Vec<String>) {
    let (letters, unavailable) = read_all(kafka, names, |order| {
        order.is_some_and(|order| wanted.contains(&order))
    });
    let mut by_order: HashMap<Uuid, Vec<DeadLetterView>> = HashMap::new();
    for (dlq, letter) in &letters {
        if let Some(order) = order_of(letter) {
            by_order
                .entry(order)
                .or_default()
                .push(DeadLetterView::of(dlq, letter));
        }
    }
    (by_order, unavailable)
}

/// The newest dead letters (of every topic, the catalog's too), with their records decoded.
#[utoipa::path(get, path = "/sagas/dead-letters", tag = "operate",
    security(("bearer" = ["admin"])),
    responses(
        (status = 200, body = DeadLetterList),
        (status = 403, description = "Not an operator", content_type = "application/problem+json"),
    ))]
pub(super) async fn dead_letters(
    _admin: Admin,
    State(state): State<OperateState>,
) -> Result<Json<DeadLetterList>, Problem> {
    let (kafka, names) = (state.kafka.clone(), state.names.clone());
    let read = tokio::task::spawn_blocking(move || read_all(&kafka, &names, |_| true));
    let (mut letters, unavailable) = match tokio::time::timeout(EVIDENCE_LIMIT, read).await {
        Ok(Ok(read)) => read,
        Ok(Err(e)) => (
            Vec::new(),
            vec![format!("reading the dead letters failed: {e}")],
        ),
        Err(_) => (
            Vec::new(),
            vec![format!(
                "the broker did not answer within {EVIDENCE_LIMIT:?}"
            )],
        ),
    };
    letters.sort_by_key(|(_, letter)| std::cmp::Reverse(letter.timestamp));
    letters.truncate(LISTED);
    let mut entries = Vec::with_capacity(letters.len());
    for (dlq, letter) in letters {
        let (record, undecodable) = match state.codec.decode(letter.payload.as_deref()).await {
            Ok(event) => (Some(event.to_json()), None),
            Err(e) => (None, Some(e.to_string())),
        };
        entries.push(DeadLetterEntry {
            letter: DeadLetterView::of(&dlq, &letter),
            order_id: order_of(&letter),
            dead_lettered_at: letter.timestamp,
            event_type: letter.event_type,
            record,
            undecodable,
        });
    }
    Ok(Json(DeadLetterList {
        dead_letters: entries,
        unavailable,
    }))
}
