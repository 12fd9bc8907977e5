//! The records of given orders in the dead-letter topics: the evidence a stuck listing
//! shows, and what a redrive picks from.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use shared_events::contracts::DeadLetterPosition;
use shared_events::dead_letter::read_dead_letters;
use shared_events::topics::DLQ_SUFFIX;
use shared_events::{KafkaConfig, Topic, TopicNames};
use utoipa::ToSchema;
use uuid::Uuid;

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

/// Reads every dead-letter topic and keeps the records of the `wanted` orders (the record
/// key is the order id), by order; also says which topics could not be read, and why.
/// Blocking: a scan of each topic to its end.
pub fn scan(
    kafka: &KafkaConfig,
    names: &TopicNames,
    wanted: &BTreeSet<Uuid>,
) -> (HashMap<Uuid, Vec<DeadLetterView>>, Vec<String>) {
    let mut found: HashMap<Uuid, Vec<DeadLetterView>> = HashMap::new();
    let mut unavailable = Vec::new();
    for topic in Topic::ALL {
        let dlq = names.dead_letter(topic);
        let letters = match read_dead_letters(kafka, &dlq) {
            Ok(letters) => letters,
            Err(e) => {
                unavailable.push(format!("{dlq}: {e}"));
                continue;
            }
        };
        for letter in letters {
            let Some(order_id) = letter.key.as_deref().and_then(|k| k.parse().ok()) else {
                continue;
            };
            if !wanted.contains(&order_id) {
                continue;
            }
            found.entry(order_id).or_default().push(DeadLetterView {
                topic: dlq.clone(),
                partition: letter.partition,
                offset: letter.offset,
                original_topic: letter.original_topic,
                consumer_group: letter.consumer_group,
                error_class: letter.error_class,
                reason: letter.error_message,
            });
        }
    }
    (found, unavailable)
}
