//! Redriving dead letters on an operator's request. order-service, which operates the saga,
//! publishes `DeadLetterRedriveRequested` on the `operations` topic; every service consumes
//! it (in a group of its own, [`TopicNames::redrive_group_of`]) and copies back the dead
//! letters of the topics it publishes to, with the same replay the admin tool uses
//! ([`replay_dead_letters`]). Only a topic's own publisher ever writes it, so an operator's
//! redrive needs no service to hold another's rights on the broker.
//!
//! A replayed record keeps its event id: a consumer that already applied it skips it, so a
//! redrive is safe to repeat, and so is a request carried out twice after a crash.

use sqlx::PgConnection;

use crate::consumer::{EventHandler, HandlerError};
use crate::contracts::Topic;
use crate::contracts::topology::ServiceTopology;
use crate::contracts::{DeadLetterRedriveRequested, Event, EventPayload};
use crate::dead_letter::replay_dead_letters;
use crate::error::with_causes;
use crate::kafka::KafkaConfig;
use crate::topics::TopicNames;

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

    /// Copies back this service's share of `request`; returns how many records it sent.
    async fn redrive(&self, request: &DeadLetterRedriveRequested) -> Result<usize, HandlerError> {
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
            let dlq = self.names.dead_letter(*topic);
            // The broker may be away: retried like any transient failure of a handler.
            let replayed = replay_dead_letters(&self.kafka, &dlq, Some(&selected))
                .await
                .map_err(|e| HandlerError::Transient(with_causes(&e)))?;
            if replayed < selected.len() {
                tracing::warn!(
                    dlq,
                    asked = selected.len(),
                    replayed,
                    "some dead letters to redrive are no longer in their topic (retention)"
                );
            }
            sent += replayed;
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
            let sent = self.redrive(request).await?;
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
