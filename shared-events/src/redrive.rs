//! Redriving dead letters: sending again, once their cause is fixed, the records consumers
//! set aside.
//!
//! A dead letter's own bytes are never published. Every consumer of a topic may write its
//! dead-letter topic, so a compromised one could put there a forged `PaymentAuthorized` of
//! any order; re-publishing a letter's bytes under the topic owner's identity would launder
//! it past the ACLs. A letter only says where the record that failed sits (its
//! `dlq.original.partition` and `dlq.original.offset`); the redrive reads that record back
//! from the topic itself, named by the dead-letter topic's name and never by a header, which
//! only the topic's publisher may write, and sends it once however many letters name it. A
//! letter whose record is gone, or is another order's, is refused.
//!
//! Operators redrive through order-service, which operates the saga: it publishes
//! `DeadLetterRedriveRequested` on the `operations` topic; every service consumes it (in a
//! group of its own, [`TopicNames::redrive_group_of`]) and redrives the dead letters of the
//! topics it publishes to with [`redrive_dead_letters`], as `orderflow-admin dlq replay`
//! does. A redriven record keeps its event id: a consumer that already applied it skips it,
//! so a redrive is safe to repeat, and so is a request carried out twice after a crash.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rdkafka::Message;
use rdkafka::message::{Header, OwnedMessage};
use rdkafka::producer::FutureProducer;
use sqlx::PgConnection;

use crate::consumer::{EventHandler, HandlerError};
use crate::contracts::Topic;
use crate::contracts::topology::ServiceTopology;
use crate::contracts::{DeadLetterRedriveRequested, Event, EventPayload};
use crate::dead_letter::{copy_headers, header, headers, record};
use crate::error::{Error, with_causes};
use crate::kafka::KafkaConfig;
use crate::topic_reading::{read_at, scan_topic};
use crate::topics::{DLQ_SUFFIX, TopicNames};

/// What a redrive did.
#[derive(Debug, Default)]
pub struct Redriven {
    /// How many records it sent again.
    pub sent: usize,
    /// The dead letters it did not act on, and why.
    pub refused: Vec<RefusedLetter>,
}

/// A dead letter a redrive did not act on: its position in the dead-letter topic, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedLetter {
    pub partition: i32,
    pub offset: i64,
    pub why: String,
}

/// Sends again the records that the selected dead letters of `topic` (positions in
/// `<topic>.dlq`; all of its letters when `None`) stand for, read back from `topic`. When
/// `order` is given, only records keyed by it are sent.
pub async fn redrive_dead_letters(
    kafka: &KafkaConfig,
    topic: &str,
    selected: Option<&[(i32, i64)]>,
    order: Option<&str>,
) -> Result<Redriven, Error> {
    let producer: FutureProducer = kafka.idempotent_producer().create().map_err(Error::Kafka)?;
    let (to_send, refused) = {
        let (kafka, name) = (kafka.clone(), topic.to_owned());
        let selected = selected.map(<[(i32, i64)]>::to_vec);
        let order = order.map(str::to_owned);
        // The reads block (a plain consumer's poll): off the async threads.
        tokio::task::spawn_blocking(move || {
            records_to_redrive(&kafka, &name, selected.as_deref(), order.as_deref())
        })
        .await
        .map_err(|e| Error::Timeout(format!("reading {topic} for a redrive: {e}")))??
    };
    let timeout = Duration::from_millis(u64::from(kafka.message_timeout_ms));
    for (original, letter) in &to_send {
        let from = format!("{topic}{DLQ_SUFFIX}:{}:{}", letter.0, letter.1);
        let record_headers =
            copy_headers(original.headers(), |k| !k.starts_with("dlq.")).insert(Header {
                key: headers::REPLAYED_FROM,
                value: Some(&from),
            });
        producer
            .send(
                record(topic, original.key(), original.payload(), record_headers),
                timeout,
            )
            .await
            .map_err(|(e, _)| Error::Kafka(e))?;
    }
    Ok(Redriven {
        sent: to_send.len(),
        refused,
    })
}

/// The records of `topic` to send again, each with the first dead letter that named it, and
/// the letters refused. Blocking.
#[allow(clippy::type_complexity)]
fn records_to_redrive(
    kafka: &KafkaConfig,
    topic: &str,
    selected: Option<&[(i32, i64)]>,
    order: Option<&str>,
) -> Result<(Vec<(OwnedMessage, (i32, i64))>, Vec<RefusedLetter>), Error> {
    let dlq = format!("{topic}{DLQ_SUFFIX}");
    let mut refused = Vec::new();
    let refuse = |refused: &mut Vec<RefusedLetter>, letter: &OwnedMessage, why: String| {
        refused.push(RefusedLetter {
            partition: letter.partition(),
            offset: letter.offset(),
            why,
        });
    };
    let letters: Vec<OwnedMessage> = match selected {
        Some(positions) => {
            let wanted: BTreeSet<(i32, i64)> = positions.iter().copied().collect();
            let found = read_at(kafka, &dlq, &wanted)?;
            for &(partition, offset) in wanted.iter().filter(|p| !found.contains_key(p)) {
                refused.push(RefusedLetter {
                    partition,
                    offset,
                    why: format!("{dlq} holds no record there (any more)"),
                });
            }
            found.into_values().collect()
        }
        None => {
            let mut all = Vec::new();
            scan_topic(kafka, &dlq, |message| {
                all.push(message.detach());
                Ok(())
            })?;
            all
        }
    };
    // The record each letter names, by its position in `topic`.
    let mut named: BTreeMap<(i32, i64), Vec<&OwnedMessage>> = BTreeMap::new();
    for letter in &letters {
        match original_position(letter) {
            Some(position) => named.entry(position).or_default().push(letter),
            None => refuse(
                &mut refused,
                letter,
                "it names no position of the topic".to_owned(),
            ),
        }
    }
    let originals = read_at(kafka, topic, &named.keys().copied().collect())?;
    let mut to_send = Vec::new();
    for ((partition, offset), letters) in named {
        let at = format!("{topic}:{partition}:{offset}");
        let Some(original) = originals.get(&(partition, offset)) else {
            for letter in letters {
                let why = format!("{at} holds no record (any more): it cannot be sent again");
                refuse(&mut refused, letter, why);
            }
            continue;
        };
        let mut first = None;
        for letter in letters {
            let its_own = letter.key() == original.key()
                && order.is_none_or(|order| original.key() == Some(order.as_bytes()));
            if its_own {
                first.get_or_insert((letter.partition(), letter.offset()));
            } else {
                let why = format!("the record at {at} is another order's");
                refuse(&mut refused, letter, why);
            }
        }
        if let Some(letter) = first {
            to_send.push((original.clone(), letter));
        }
    }
    Ok((to_send, refused))
}

/// Where in its topic the record a dead letter stands for sits.
fn original_position(letter: &OwnedMessage) -> Option<(i32, i64)> {
    let partition = header(letter, headers::ORIGINAL_PARTITION)?.parse().ok()?;
    let offset = header(letter, headers::ORIGINAL_OFFSET)?.parse().ok()?;
    Some((partition, offset))
}

/// Carries out the part of each redrive request that falls to one service: the dead letters
/// of the topics it publishes to.
pub struct Redriver {
    kafka: KafkaConfig,
    names: TopicNames,
    /// The topics whose dead letters it redrives: those it publishes to.
    owns: Vec<Topic>,
}

impl Redriver {
    pub fn new(kafka: KafkaConfig, service: &ServiceTopology) -> Self {
        Self {
            names: TopicNames::new(kafka.topic_prefix.clone()),
            kafka,
            owns: service.publishes_to(),
        }
    }

    /// Carries out this service's share of `request`, about `order`; returns how many
    /// records it sent.
    async fn redrive(
        &self,
        request: &DeadLetterRedriveRequested,
        order: &str,
    ) -> Result<usize, HandlerError> {
        let mut sent = 0;
        for topic in &self.owns {
            let selected: Vec<(i32, i64)> = request
                .dead_letters
                .iter()
                .filter(|letter| letter.topic == topic.base_name())
                .map(|letter| (letter.partition, letter.offset))
                .collect();
            if selected.is_empty() {
                continue;
            }
            let name = self.names.name(*topic);
            // The broker may be away: retried like any transient failure of a handler.
            let redriven = redrive_dead_letters(&self.kafka, &name, Some(&selected), Some(order))
                .await
                .map_err(|e| HandlerError::Transient(with_causes(&e)))?;
            for refused in &redriven.refused {
                tracing::warn!(
                    topic = name,
                    order,
                    partition = refused.partition,
                    offset = refused.offset,
                    why = refused.why,
                    "refused to redrive a dead letter"
                );
            }
            sent += redriven.sent;
        }
        Ok(sent)
    }
}

impl EventHandler for Redriver {
    const EVENT_TYPES: &'static [&'static str] = crate::contracts::topology::HEARD_BY_EVERY_SERVICE;

    async fn handle(
        &self,
        events: &[&Event],
        _tx: &mut PgConnection,
    ) -> Result<Vec<Event>, HandlerError> {
        for event in events {
            let EventPayload::DeadLetterRedriveRequested(request) = &event.payload else {
                continue;
            };
            let Some(order) = event.metadata.order_id else {
                continue;
            };
            let sent = self.redrive(request, &order.to_string()).await?;
            if sent > 0 {
                tracing::info!(
                    order_id = ?event.metadata.order_id,
                    operator = request.operator,
                    reason = request.reason,
                    sent,
                    "redrove dead letters to their topics"
                );
            }
        }
        Ok(Vec::new())
    }
}
