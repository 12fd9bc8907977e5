//! The saga's topics on a broker: their names (under a prefix), their dead-letter twins, and
//! idempotent provisioning. Which topics there are is a contract (`contracts::Topic`).

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use crate::contracts::Topic;
use crate::error::Error;

/// Suffix of every dead-letter topic: `orders` -> `orders.dlq`.
pub const DLQ_SUFFIX: &str = ".dlq";

/// Maps topics to their names on the broker. The optional prefix lets tests (and shared
/// clusters) run isolated copies of the whole topology side by side.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicNames {
    prefix: String,
}

impl TopicNames {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    pub fn name(&self, topic: Topic) -> String {
        format!("{}{}", self.prefix, topic.base_name())
    }

    pub fn dead_letter(&self, topic: Topic) -> String {
        format!("{}{DLQ_SUFFIX}", self.name(topic))
    }

    /// The broker-side name of a base topic name given without the prefix.
    pub fn name_for_base(&self, base: &str) -> String {
        format!("{}{base}", self.prefix)
    }

    /// The consumer group of `service`: named after it, under the prefix, so that stacks
    /// sharing a cluster share no group.
    pub fn group_of(&self, service: &str) -> String {
        self.name_for_base(service)
    }

    /// The consumer group in which `service` carries out operators' redrive requests
    /// (see [`crate::redrive`]), apart from its saga consumer's.
    pub fn redrive_group_of(&self, service: &str) -> String {
        self.group_of(&format!("{service}-redrive"))
    }

    /// The topic a broker-side name stands for, if it is one of ours (not a DLQ).
    pub fn parse(&self, name: &str) -> Option<Topic> {
        let base = name.strip_prefix(&self.prefix)?;
        Topic::ALL.into_iter().find(|t| t.base_name() == base)
    }

    /// Every topic name, each followed by its dead-letter twin.
    pub fn all_with_dead_letters(&self) -> Vec<String> {
        Topic::ALL
            .into_iter()
            .flat_map(|t| [self.name(t), self.dead_letter(t)])
            .collect()
    }
}

/// Creates every saga topic and its DLQ with `partitions` partitions. Topics that already exist
/// are left alone, so running it again is safe.
pub async fn provision_topics(
    admin: &AdminClient<DefaultClientContext>,
    names: &TopicNames,
    partitions: i32,
    replication: i32,
) -> Result<Vec<String>, Error> {
    let topic_names = names.all_with_dead_letters();
    let new_topics: Vec<NewTopic<'_>> = topic_names
        .iter()
        .map(|name| NewTopic::new(name, partitions, TopicReplication::Fixed(replication)))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics(&new_topics, &options)
        .await
        .map_err(Error::Kafka)?;
    let mut created = Vec::new();
    for result in results {
        match result {
            Ok(name) => created.push(name),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => return Err(Error::TopicProvisioning { topic: name, code }),
        }
    }
    Ok(created)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_topic_has_a_dead_letter_twin() {
        let names = TopicNames::default();
        assert_eq!(
            names.all_with_dead_letters(),
            [
                "orders",
                "orders.dlq",
                "payments",
                "payments.dlq",
                "inventory",
                "inventory.dlq",
                "shipments",
                "shipments.dlq",
                "catalog",
                "catalog.dlq",
                "operations",
                "operations.dlq"
            ]
        );
    }

    #[test]
    fn a_prefixed_name_parses_back_to_its_topic_but_a_dlq_does_not() {
        let names = TopicNames::new("t1-");
        assert_eq!(names.parse("t1-payments"), Some(Topic::Payments));
        assert_eq!(names.parse("t1-payments.dlq"), None);
        assert_eq!(names.parse("payments"), None);
    }
}
