//! What each service may do on the broker, derived from the topology, so that a service's
//! Kafka identity can do its part of the saga and nothing else: write the topics of the
//! events it sends and the dead-letter topics of those it consumes, read the topics of the
//! events it receives or watches and the operators' requests, read its own topics and their
//! dead letters (to redrive them), and use its own consumer groups. Billing's credentials cannot publish
//! `ShipmentScheduled`, nor read the orders' topic as order-service's group.
//!
//! The prod overlay's Strimzi `KafkaUser`s are generated from here (`orderflow-admin
//! kafka-acls --format strimzi`), the deploy-consistency test checks them against it, and
//! the secured-broker test applies the same grants with Kafka's own `kafka-acls` tool.

use std::fmt;

use crate::contracts::Topic;
use crate::contracts::topics_of;
use crate::contracts::topology::{HEARD_BY_EVERY_SERVICE, SERVICES, ServiceTopology};
use crate::topics::TopicNames;

/// What a grant is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ResourceType {
    Topic,
    Group,
}

/// An operation a grant allows. `Write` and `Read` each imply `Describe`, which is all the
/// services' metadata and offset lookups need; `Describe` alone lets the saga's operator
/// read another group's committed offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operation {
    Read,
    Write,
    Describe,
}

/// One resource a service may act on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Resource {
    pub resource_type: ResourceType,
    /// A literal name (topic names carry the deployment's prefix).
    pub name: String,
}

/// `principal` may do `operation` on each of `resources`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The Kafka user: the service's name.
    pub principal: &'static str,
    pub operation: Operation,
    pub resources: Vec<Resource>,
}

impl ServiceTopology {
    /// The topics its outbox publishes to: those of the events it sends.
    pub fn publishes_to(&self) -> Vec<Topic> {
        topics_of(self.sends).expect("the topology names contract event types")
    }

    /// The topics its consumer reads: those of the events it receives.
    pub fn consumes(&self) -> Vec<Topic> {
        topics_of(self.receives).expect("the topology names contract event types")
    }

    /// The topics it reads without a consumer group.
    pub fn watched_topics(&self) -> Vec<Topic> {
        topics_of(self.watches).expect("the topology names contract event types")
    }

    /// Everything this service's Kafka user needs, and nothing more, with topics and its
    /// consumer group named as in a deployment using `names`: what it writes, what it
    /// reads, and (the saga's operator only) the groups whose progress it describes.
    pub fn grants(&self, names: &TopicNames) -> Vec<Grant> {
        let topic = |name: String| Resource {
            resource_type: ResourceType::Topic,
            name,
        };
        let mut writes: Vec<Resource> = self
            .publishes_to()
            .into_iter()
            .map(|t| names.name(t))
            .map(topic)
            .collect();
        // Its redrive consumer (crate::redrive) is a consumer too: of the operators' topic.
        let mut consumed = self.consumes();
        consumed.extend(topics_of(HEARD_BY_EVERY_SERVICE).expect("contract event types"));
        writes.extend(consumed.iter().map(|t| topic(names.dead_letter(*t))));
        let mut read_topics = consumed;
        read_topics.extend(self.watched_topics());
        read_topics.sort();
        read_topics.dedup();
        let mut reads: Vec<Resource> = read_topics
            .into_iter()
            .map(|t| topic(names.name(t)))
            .collect();
        let group = |service: &ServiceTopology| Resource {
            resource_type: ResourceType::Group,
            name: names.group_of(service.name),
        };
        reads.push(group(self));
        reads.push(Resource {
            resource_type: ResourceType::Group,
            name: names.redrive_group_of(self.name),
        });
        // The dead letters it redrives: those of the topics it publishes to, and those topics
        // themselves, from which a redrive reads the records back (never trusting a dead
        // letter's bytes); the saga's operator reads every dead-letter topic, to show them.
        let redriven = if self.operates_the_saga {
            Topic::ALL.to_vec()
        } else {
            self.publishes_to()
        };
        reads.extend(redriven.into_iter().map(|t| topic(names.dead_letter(t))));
        reads.extend(
            self.publishes_to()
                .into_iter()
                .map(|t| topic(names.name(t))),
        );
        reads.sort();
        reads.dedup();
        writes.sort();
        reads.sort();
        let mut grants = vec![
            Grant {
                principal: self.name,
                operation: Operation::Write,
                resources: writes,
            },
            Grant {
                principal: self.name,
                operation: Operation::Read,
                resources: reads,
            },
        ];
        if self.operates_the_saga {
            grants.push(Grant {
                principal: self.name,
                operation: Operation::Describe,
                resources: SERVICES
                    .iter()
                    .filter(|s| s.name != self.name)
                    .map(group)
                    .collect(),
            });
        }
        grants
    }
}

impl Grant {
    /// The arguments of Kafka's `kafka-acls` tool (`org.apache.kafka.tools.AclCommand`)
    /// that add this grant, after `--bootstrap-server` and `--command-config`.
    pub fn kafka_acls_arguments(&self) -> Vec<String> {
        let mut arguments = vec![
            "--add".to_owned(),
            "--allow-principal".to_owned(),
            format!("User:{}", self.principal),
            "--operation".to_owned(),
            self.operation.to_string(),
        ];
        for resource in &self.resources {
            let flag = match resource.resource_type {
                ResourceType::Topic => "--topic",
                ResourceType::Group => "--group",
            };
            arguments.extend([flag.to_owned(), resource.name.clone()]);
        }
        arguments
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operation::Read => "Read",
            Operation::Write => "Write",
            Operation::Describe => "Describe",
        })
    }
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ResourceType::Topic => "topic",
            ResourceType::Group => "group",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contracts::topology::{BILLING_SERVICE, ORDER_SERVICE};

    fn names(grant: &Grant) -> Vec<&str> {
        grant.resources.iter().map(|r| r.name.as_str()).collect()
    }

    #[test]
    fn billing_may_write_payments_and_read_what_it_hears_and_nothing_else() {
        let [write, read] = &BILLING_SERVICE.grants(&TopicNames::new("staging-"))[..] else {
            panic!("billing has a write and a read grant, nothing else");
        };
        assert_eq!(write.operation, Operation::Write);
        assert_eq!(
            names(write),
            [
                "staging-inventory.dlq",
                "staging-operations.dlq",
                "staging-orders.dlq",
                "staging-payments",
                "staging-shipments.dlq"
            ]
        );
        // What it hears, the operators' requests, and its own topic and dead letters, which
        // a redrive reads.
        assert_eq!(
            names(read),
            [
                "staging-inventory",
                "staging-operations",
                "staging-orders",
                "staging-payments",
                "staging-payments.dlq",
                "staging-shipments",
                "staging-billing-service",
                "staging-billing-service-redrive"
            ]
        );
        assert!(
            read.resources[6..]
                .iter()
                .all(|r| r.resource_type == ResourceType::Group)
        );
    }

    #[test]
    fn the_saga_s_operator_also_reads_every_dead_letter_and_describes_the_other_groups() {
        let grants = ORDER_SERVICE.grants(&TopicNames::new("staging-"));
        let [_, read, describe] = &grants[..] else {
            panic!("order-service has a write, a read and a describe grant: {grants:?}");
        };
        for dlq in [
            "staging-catalog.dlq",
            "staging-inventory.dlq",
            "staging-orders.dlq",
            "staging-payments.dlq",
            "staging-shipments.dlq",
            "staging-operations.dlq",
        ] {
            assert!(names(read).contains(&dlq), "{dlq}: {read:?}");
        }
        assert_eq!(describe.operation, Operation::Describe);
        assert_eq!(
            names(describe),
            [
                "staging-billing-service",
                "staging-inventory-service",
                "staging-shipping-service"
            ]
        );
        assert!(
            describe
                .resources
                .iter()
                .all(|r| r.resource_type == ResourceType::Group)
        );
    }

    #[test]
    fn every_topic_has_exactly_one_writer_besides_the_dead_letters() {
        let names = TopicNames::default();
        for topic in Topic::ALL {
            let writers: Vec<&str> = SERVICES
                .iter()
                .filter(|s| {
                    s.grants(&names)[0]
                        .resources
                        .iter()
                        .any(|r| r.name == names.name(topic))
                })
                .map(|s| s.name)
                .collect();
            assert_eq!(writers.len(), 1, "{topic:?} written by {writers:?}");
        }
    }

    #[test]
    fn the_kafka_acls_arguments_name_every_resource() {
        let write = &BILLING_SERVICE.grants(&TopicNames::default())[0];
        assert_eq!(
            write.kafka_acls_arguments().join(" "),
            "--add --allow-principal User:billing-service --operation Write \
             --topic inventory.dlq --topic operations.dlq --topic orders.dlq --topic payments \
             --topic shipments.dlq"
        );
    }
}
