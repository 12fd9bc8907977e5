//! The records in the dead-letter topics: the evidence a stuck listing shows, what a
//! redrive picks from, and `GET /sagas/dead-letters`, the newest of them with their records
//! decoded.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use service_runtime::{Admin, Problem};
use shared_events::contracts::{DeadLetterPosition, Topic};
use shared_events::dead_letter::{DeadLetter, read_dead_letters};
use shared_events::topics::DLQ_SUFFIX;
use shared_events::{KafkaConfig, TopicNames};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{OperateState, from_broker};

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

/// One read of every dead-letter topic: the records, each with its topic, and the topics
/// that could not be read, with why.
#[derive(Debug, Default)]
pub struct Scan {
    letters: Vec<(String, DeadLetter)>,
    pub unavailable: Vec<String>,
}

impl Scan {
    /// Reads every dead-letter topic to its end. Blocking.
    fn read(kafka: &KafkaConfig, names: &TopicNames) -> Self {
        let mut scan = Self::default();
        for topic in Topic::ALL {
            let dlq = names.dead_letter(topic);
            match read_dead_letters(kafka, &dlq) {
                Ok(letters) => scan
                    .letters
                    .extend(letters.into_iter().map(|letter| (dlq.clone(), letter))),
                Err(e) => scan.unavailable.push(format!("{dlq}: {e}")),
            }
        }
        scan
    }

    /// The dead letters of the `wanted` orders, by order.
    pub fn of_orders(&self, wanted: &BTreeSet<Uuid>) -> HashMap<Uuid, Vec<DeadLetterView>> {
        let mut by_order: HashMap<Uuid, Vec<DeadLetterView>> = HashMap::new();
        for (dlq, letter) in &self.letters {
            if let Some(order) = order_of(letter).filter(|order| wanted.contains(order)) {
                by_order
                    .entry(order)
                    .or_default()
                    .push(DeadLetterView::of(dlq, letter));
            }
        }
        by_order
    }

    /// The newest `limit` dead letters.
    fn newest(&self, limit: usize) -> Vec<&(String, DeadLetter)> {
        let mut letters: Vec<_> = self.letters.iter().collect();
        letters.sort_by_key(|(_, letter)| std::cmp::Reverse(letter.timestamp));
        letters.truncate(limit);
        letters
    }
}

/// The last scan of the dead-letter topics, kept for a moment: the console refreshes its
/// stuck listing and its dead-letter list together every few seconds, and each would
/// otherwise read every topic to its end with clients of its own. One scan runs at a time;
/// callers that come meanwhile wait for it and share it.
#[derive(Clone, Default)]
pub struct DeadLetterScans {
    last: Arc<tokio::sync::Mutex<Option<TakenScan>>>,
}

/// A scan and when it was taken.
struct TakenScan {
    at: Instant,
    scan: Arc<Scan>,
}

/// How old a scan the listings take.
pub const LISTING_MAX_AGE: Duration = Duration::from_secs(2);

impl DeadLetterScans {
    /// A scan at most `max_age` old: the last one, or a new one of the topics `names` gives
    /// on the broker `kafka` reaches.
    pub async fn read(
        &self,
        kafka: &KafkaConfig,
        names: &TopicNames,
        max_age: Duration,
    ) -> Arc<Scan> {
        let mut last = self.last.lock().await;
        if let Some(taken) = last.as_ref()
            && taken.at.elapsed() <= max_age
        {
            return taken.scan.clone();
        }
        let (kafka, names) = (kafka.clone(), names.clone());
        let scan = from_broker(move || Scan::read(&kafka, &names))
            .await
            .unwrap_or_else(|why| Scan {
                letters: Vec::new(),
                unavailable: vec![format!("the dead-letter topics: {why}")],
            });
        let scan = Arc::new(scan);
        *last = Some(TakenScan {
            at: Instant::now(),
            scan: scan.clone(),
        });
        scan
    }
}

fn order_of(letter: &DeadLetter) -> Option<Uuid> {
    letter.key.as_deref()?.parse().ok()
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
    let scan = state.dead_letter_scan(LISTING_MAX_AGE).await;
    let letters = scan.newest(LISTED);
    let mut entries = Vec::with_capacity(letters.len());
    for (dlq, letter) in letters {
        let (record, undecodable) = match state.codec.decode(letter.payload.as_deref()).await {
            Ok(event) => (Some(event.to_json()), None),
            Err(e) => (None, Some(e.to_string())),
        };
        entries.push(DeadLetterEntry {
            letter: DeadLetterView::of(dlq, letter),
            order_id: order_of(letter),
            dead_lettered_at: letter.timestamp,
            event_type: letter.event_type.clone(),
            record,
            undecodable,
        });
    }
    Ok(Json(DeadLetterList {
        dead_letters: entries,
        unavailable: scan.unavailable.clone(),
    }))
}
