//! `GET /sagas/stuck`: orders in flight that made no progress for longer than the
//! threshold, each with what it waits for, who owes it, and the evidence an operator checks
//! first: the owing group's position on the order's partitions, and this order's records in
//! the dead-letter topics.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Serialize;
use service_runtime::{Admin, Problem};
use shared_events::consumer::held_back::HeldBack;
use shared_events::contracts::topology::ServiceTopology;
use shared_events::key_position::{GroupProgress, KeyPosition};
use utoipa::ToSchema;
use uuid::Uuid;

use super::dead_letters::DeadLetterView;
use super::scan::LISTING_MAX_AGE;
use super::{OperateState, from_broker};
use crate::domain::{AwaitedStep, OrderStatus};
use crate::store::{self, LoadedOrder, Unreadable};

/// Most orders one listing returns, the longest idle first.
const LISTED: i64 = 100;

#[derive(Debug, Serialize, ToSchema)]
pub struct StuckSagas {
    /// An order in flight is stuck once its last event is older than this.
    pub stuck_after_secs: u64,
    /// The longest idle first, at most 100.
    pub sagas: Vec<StuckSaga>,
    /// Why some evidence is missing (the broker did not answer), if it is.
    pub evidence_unavailable: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StuckSaga {
    pub order_id: Uuid,
    pub status: OrderStatus,
    /// When its last event happened: the last progress.
    pub idle_since: DateTime<Utc>,
    pub idle_secs: i64,
    pub awaiting: Vec<AwaitedView>,
    /// Records of this order in the dead-letter topics.
    pub dead_letters: Vec<DeadLetterView>,
    /// Why order-service cannot read the order's history, if it cannot (then nothing is
    /// known of what it awaits): every fact reported for it is dead-lettered until the
    /// history is repaired, after which a redrive sends them again.
    pub unreadable: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AwaitedView {
    /// Any one of these ends the wait.
    pub events: Vec<&'static str>,
    /// The service that owes them.
    pub service: &'static str,
    /// That service's consumer group on the partitions of this order, one per topic it reads.
    pub partitions: Vec<PartitionView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PartitionView {
    pub topic: String,
    pub partition: i32,
    /// The group's committed offset; absent if it never committed one.
    pub committed: Option<i64>,
    /// The log end: the offset the next record gets.
    pub end: i64,
    /// Records the group has not committed yet.
    pub lag: i64,
    /// Why the group's consumer does not move here, as it said with its last commit;
    /// absent while it goes on normally.
    pub held_back: Option<HeldBackView>,
}

/// What the owing consumer said of the partition (`shared_events::consumer::held_back`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum HeldBackView {
    /// The record at the committed offset kept failing: not fetched until `until`, then
    /// tried again (a pause whose `until` is past is being retried, or waits for its
    /// consumer's next commit).
    Paused {
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        reason: String,
    },
    /// Lagged with the commit frozen; a member left and rejoined the group for it.
    Stalled { since: DateTime<Utc> },
}

impl From<HeldBack> for HeldBackView {
    fn from(held: HeldBack) -> Self {
        match held {
            HeldBack::Paused {
                since,
                until,
                reason,
            } => Self::Paused {
                since,
                until,
                reason,
            },
            HeldBack::Stalled { since } => Self::Stalled { since },
        }
    }
}

/// Orders in flight that made no progress for longer than the stuck threshold, with what
/// each waits for and the evidence.
#[utoipa::path(get, path = "/sagas/stuck", tag = "operate",
    security(("bearer" = ["admin"])),
    responses(
        (status = 200, body = StuckSagas),
        (status = 403, description = "Not an operator", content_type = "application/problem+json"),
    ))]
pub(super) async fn stuck_sagas(
    _admin: Admin,
    State(state): State<OperateState>,
) -> Result<Json<StuckSagas>, Problem> {
    let cutoff = Utc::now() - state.stuck_after;
    let orders = {
        let mut conn = state.pool.acquire().await.map_err(crate::Error::from)?;
        shared_events::database::bounded(store::idle_since(&mut conn, cutoff, LISTED)).await?
    };
    let evidence = Evidence::gather(&state, &orders).await;
    let now = Utc::now();
    let sagas = orders
        .iter()
        .map(|idle| match idle {
            Ok(loaded) => StuckSaga {
                order_id: loaded.order.id,
                status: loaded.order.status(),
                idle_since: loaded.updated_at,
                idle_secs: (now - loaded.updated_at).num_seconds(),
                awaiting: loaded
                    .order
                    .awaiting()
                    .into_iter()
                    .map(|step| evidence.awaited(loaded.order.id, step))
                    .collect(),
                dead_letters: evidence.dead_letters_of(loaded.order.id),
                unreadable: None,
            },
            Err(unreadable) => StuckSaga {
                order_id: unreadable.order_id,
                // Written by this service from a status it knew: parses unless edited too.
                status: OrderStatus::parse(&unreadable.status).unwrap_or(OrderStatus::Pending),
                idle_since: unreadable.updated_at,
                idle_secs: (now - unreadable.updated_at).num_seconds(),
                awaiting: Vec::new(),
                dead_letters: evidence.dead_letters_of(unreadable.order_id),
                unreadable: Some(unreadable.reason.clone()),
            },
        })
        .collect();
    Ok(Json(StuckSagas {
        stuck_after_secs: state.stuck_after.as_secs(),
        sagas,
        evidence_unavailable: evidence.unavailable,
    }))
}

/// What the broker says about the listed orders, read once per listing: each owing
/// group's progress, and the dead-letter topics.
#[derive(Default)]
struct Evidence {
    groups: HashMap<&'static str, GroupProgress>,
    dead_letters: HashMap<Uuid, Vec<DeadLetterView>>,
    unavailable: Vec<String>,
}

impl Evidence {
    async fn gather(state: &OperateState, orders: &[Result<LoadedOrder, Unreadable>]) -> Self {
        let owing: BTreeMap<&'static str, &'static ServiceTopology> = orders
            .iter()
            .flatten()
            .flat_map(|loaded| loaded.order.awaiting())
            .map(|step| (step.owed_by().name, step.owed_by()))
            .collect();
        let wanted: BTreeSet<Uuid> = orders
            .iter()
            .map(|idle| match idle {
                Ok(loaded) => loaded.order.id,
                Err(unreadable) => unreadable.order_id,
            })
            .collect();
        let mut evidence = Evidence::default();
        if wanted.is_empty() {
            return evidence;
        }
        // Each group is read on its own: one that cannot be read (its broker slow, its
        // offsets unreadable) leaves the others' evidence whole.
        let groups = owing.into_iter().map(|(service, topology)| {
            let kafka = state.kafka.clone();
            let topics: Vec<String> = topology
                .consumes()
                .into_iter()
                .map(|topic| state.names.name(topic))
                .collect();
            let group = state.names.group_of(service);
            async move {
                let progress = from_broker(move || GroupProgress::read(&kafka, &group, &topics))
                    .await
                    .and_then(|read| read.map_err(|e| e.to_string()))
                    .map_err(|e| format!("{service}'s consumer group: {e}"));
                (service, progress)
            }
        });
        let dead_letters = state.dead_letter_scan(LISTING_MAX_AGE);
        let (groups, dead_letters) = tokio::join!(futures::future::join_all(groups), dead_letters);
        for (service, progress) in groups {
            match progress {
                Ok(progress) => {
                    evidence.groups.insert(service, progress);
                }
                Err(why) => evidence.unavailable.push(why),
            }
        }
        evidence.dead_letters = dead_letters.of_orders(&wanted);
        evidence
            .unavailable
            .extend(dead_letters.unavailable.clone());
        evidence
    }

    fn awaited(&self, order_id: Uuid, step: AwaitedStep) -> AwaitedView {
        let service = step.owed_by().name;
        let key = order_id.to_string();
        let partitions = self
            .groups
            .get(service)
            .map(|progress| progress.of_key(key.as_bytes()))
            .unwrap_or_default()
            .into_iter()
            .map(|position: KeyPosition| PartitionView {
                lag: position.lag(),
                topic: position.topic,
                partition: position.partition,
                committed: position.committed,
                end: position.end,
                held_back: position.held_back.map(HeldBackView::from),
            })
            .collect();
        AwaitedView {
            events: step.events.to_vec(),
            service,
            partitions,
        }
    }

    fn dead_letters_of(&self, order_id: Uuid) -> Vec<DeadLetterView> {
        self.dead_letters
            .get(&order_id)
            .cloned()
            .unwrap_or_default()
    }
}
