//! One read of every dead-letter topic, with each record decoded through the schema
//! registry where it can be: the evidence a stuck listing shows, what the dead-letter
//! listing groups and what a redrive or an acknowledgement picks from. Scans are shared:
//! one runs at a time, and the last is kept for a moment.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use shared_events::contracts::Topic;
use shared_events::dead_letter::{DeadLetter, read_newest_dead_letters};
use shared_events::{KafkaConfig, RegistryCodec, TopicNames};
use uuid::Uuid;

use super::acknowledgements::Place;
use super::causes::Cause;
use super::dead_letters::DeadLetterView;
use super::{EVIDENCE_LIMIT, OperateState};

/// How many of the newest records of each partition of each dead-letter topic a scan reads:
/// a listing shows the newest, and a stuck order's dead letters are recent. (A flood of dead
/// letters leaves the older ones to `orderflow-admin dlq list`.)
const SCANNED_PER_PARTITION: i64 = 500;

/// One read of every dead-letter topic: the records, each with its topic and what its record
/// decodes to, and the topics that could not be read, with why.
#[derive(Debug, Default)]
pub struct Scan {
    letters: Vec<ScannedLetter>,
    pub unavailable: Vec<String>,
}

#[derive(Debug)]
pub(super) struct ScannedLetter {
    pub(super) dlq: String,
    pub(super) letter: DeadLetter,
    /// Shared with the scans after this one: a letter's position never holds another.
    pub(super) decoded: Arc<Decoded>,
}

/// A dead letter's record, decoded through the schema registry, or why it could not be.
#[derive(Debug)]
pub(super) struct Decoded {
    /// The order it is of: the record's own `order_id`; the Kafka key only for a record that
    /// does not decode (a poison record has no other). Either can be forged by whoever may
    /// write the dead-letter topic: a redrive never trusts it, it reads the record back from
    /// the topic (`shared_events::redrive`).
    pub(super) order_id: Option<Uuid>,
    pub(super) record: Result<serde_json::Value, String>,
}

impl ScannedLetter {
    /// Where it sits: its dead-letter topic, partition and offset.
    pub(super) fn place(&self) -> Place {
        (self.dlq.clone(), self.letter.partition, self.letter.offset)
    }

    pub(super) fn cause(&self) -> Cause {
        Cause::new(
            &self.dlq,
            self.letter.consumer_group.as_deref(),
            self.letter.error_class.as_deref(),
            self.letter.error_message.as_deref(),
        )
    }
}

impl Scan {
    /// Reads the newest records of every dead-letter topic and decodes those the `previous`
    /// scan did not (a letter's topic, partition and offset never hold another).
    async fn read(
        kafka: &KafkaConfig,
        names: &TopicNames,
        codec: &RegistryCodec,
        previous: Option<&Scan>,
    ) -> Self {
        let known: HashMap<(&str, i32, i64), &Arc<Decoded>> = previous
            .into_iter()
            .flat_map(|scan| &scan.letters)
            .map(|s| {
                (
                    (s.dlq.as_str(), s.letter.partition, s.letter.offset),
                    &s.decoded,
                )
            })
            .collect();
        let (kafka_config, topic_names) = (kafka.clone(), names.clone());
        let read = tokio::task::spawn_blocking(move || {
            Topic::ALL.map(|topic| {
                let dlq = topic_names.dead_letter(topic);
                let letters =
                    read_newest_dead_letters(&kafka_config, &dlq, Some(SCANNED_PER_PARTITION));
                (dlq, letters)
            })
        })
        .await;
        let mut scan = Self::default();
        let Ok(topics) = read else {
            scan.unavailable
                .push("the dead-letter topics: the read did not finish".to_owned());
            return scan;
        };
        for (dlq, letters) in topics {
            let letters = match letters {
                Ok(letters) => letters,
                Err(e) => {
                    scan.unavailable.push(format!("{dlq}: {e}"));
                    continue;
                }
            };
            for letter in letters {
                let position = (dlq.as_str(), letter.partition, letter.offset);
                let decoded = match known.get(&position) {
                    Some(&decoded) => decoded.clone(),
                    None => Arc::new(Decoded::of(codec, &letter).await),
                };
                scan.letters.push(ScannedLetter {
                    dlq: dlq.clone(),
                    letter,
                    decoded,
                });
            }
        }
        scan
    }

    fn unavailable(why: String) -> Self {
        Self {
            letters: Vec::new(),
            unavailable: vec![why],
        }
    }

    /// The dead letters of the `wanted` orders, by order.
    pub fn of_orders(&self, wanted: &BTreeSet<Uuid>) -> HashMap<Uuid, Vec<DeadLetterView>> {
        let mut by_order: HashMap<Uuid, Vec<DeadLetterView>> = HashMap::new();
        for scanned in &self.letters {
            if let Some(order) = scanned.decoded.order_id.filter(|o| wanted.contains(o)) {
                by_order
                    .entry(order)
                    .or_default()
                    .push(DeadLetterView::of(&scanned.dlq, &scanned.letter));
            }
        }
        by_order
    }

    /// Every dead letter read.
    pub(super) fn letters(&self) -> &[ScannedLetter] {
        &self.letters
    }
}

impl Decoded {
    async fn of(codec: &RegistryCodec, letter: &DeadLetter) -> Self {
        match codec.decode(letter.payload.as_deref()).await {
            Ok(event) => Self {
                order_id: event.metadata.order_id,
                record: Ok(event.to_json()),
            },
            Err(e) => Self {
                order_id: letter.key.as_deref().and_then(|key| key.parse().ok()),
                record: Err(e.to_string()),
            },
        }
    }
}

/// The scans of the dead-letter topics. One runs at a time, in a task of its own that no
/// caller abandons: a caller that stops waiting (the broker is slow) leaves it to finish for
/// the next, so scans never pile up. The last one is kept for a moment: the console
/// refreshes its stuck listing and its dead-letter list together every few seconds.
#[derive(Clone, Default)]
pub struct DeadLetterScans {
    inner: Arc<Mutex<Scans>>,
}

#[derive(Default)]
struct Scans {
    last: Option<TakenScan>,
    running: Option<Shared<BoxFuture<'static, Arc<Scan>>>>,
}

/// A scan and when it was taken.
struct TakenScan {
    at: Instant,
    scan: Arc<Scan>,
}

/// How old a scan the listings take.
pub const LISTING_MAX_AGE: Duration = Duration::from_secs(2);

impl DeadLetterScans {
    /// A scan at most `max_age` old: the last one, the one running, or a new one.
    pub async fn read(&self, state: &OperateState, max_age: Duration) -> Arc<Scan> {
        let running = {
            let mut scans = self.inner.lock().expect("scans lock poisoned");
            if let Some(taken) = &scans.last
                && taken.at.elapsed() <= max_age
            {
                return taken.scan.clone();
            }
            match &scans.running {
                Some(running) => running.clone(),
                None => {
                    let previous = scans.last.as_ref().map(|taken| taken.scan.clone());
                    let running = self.start(state, previous);
                    scans.running = Some(running.clone());
                    running
                }
            }
        };
        tokio::time::timeout(EVIDENCE_LIMIT, running)
            .await
            .unwrap_or_else(|_| {
                Arc::new(Scan::unavailable(format!(
                    "the dead-letter topics: the broker did not answer within \
                     {EVIDENCE_LIMIT:?} (the read goes on; ask again)"
                )))
            })
    }

    /// Starts a scan in a task of its own, reusing what the `previous` one decoded.
    fn start(
        &self,
        state: &OperateState,
        previous: Option<Arc<Scan>>,
    ) -> Shared<BoxFuture<'static, Arc<Scan>>> {
        let (kafka, names, codec) = (
            state.kafka.clone(),
            state.names.clone(),
            state.codec.clone(),
        );
        let inner = self.inner.clone();
        let task = tokio::spawn(async move {
            let scan = Scan::read(&kafka, &names, &codec, previous.as_deref()).await;
            let scan = Arc::new(scan);
            let mut scans = inner.lock().expect("scans lock poisoned");
            scans.last = Some(TakenScan {
                at: Instant::now(),
                scan: scan.clone(),
            });
            scans.running = None;
            scan
        });
        let finished = async move {
            task.await.unwrap_or_else(|e| {
                Arc::new(Scan::unavailable(format!(
                    "the dead-letter topics: the scan failed: {e}"
                )))
            })
        };
        finished.boxed().shared()
    }
}
