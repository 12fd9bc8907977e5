//! The deployment files agree with the code: every environment variable docker-compose.yml
//! and deploy/ set is one the binary reads (clap's own list, not a copy), every variable a
//! service needs is set, HTTP ports line up from HTTP_ADDR to container, Service, probes and
//! Prometheus, and KEDA scales each service on exactly the topics and group it consumes.
//! Then broken copies must be caught.
//!
//! Reads target/deploy-rendered/ (compose as JSON, each overlay rendered), which
//! scripts/check-deploy writes; scripts/test runs it first.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use clap::CommandFactory;
use serde::Deserialize;
use serde_json::Value;
use shared_events::contracts::Topic;
use shared_events::contracts::topology;

mod alerts;
mod compose;
mod exposure;
mod overlays;

use compose::check_compose;
use overlays::check_overlay;

/// What a binary reads and needs.
struct Binary {
    reads: BTreeSet<String>,
    required: &'static [&'static str],
    consumes: Vec<Topic>,
}

const SERVICE_REQUIRED: &[&str] = &[
    "HTTP_ADDR",
    "DATABASE_URL",
    "KAFKA_BOOTSTRAP_SERVERS",
    "SCHEMA_REGISTRY_URL",
    "AUTH_JWKS_URL",
    "AUTH_ISSUER",
];

/// The dev token issuer: for compose and the dev overlay, never for production.
const DEV_ISSUER: &str = "dev-token-issuer";

fn dev_issuer_reads() -> BTreeSet<String> {
    let mut reads = env_vars(&dev_token_issuer::Config::command());
    reads.insert("RUST_LOG".to_owned());
    reads
}

fn env_vars(command: &clap::Command) -> BTreeSet<String> {
    let mut vars: BTreeSet<String> = command
        .get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect();
    for sub in command.get_subcommands() {
        vars.extend(env_vars(sub));
    }
    // Read by the log filter (tracing-subscriber's EnvFilter), not by clap.
    vars.insert("RUST_LOG".to_owned());
    vars
}

fn binaries() -> BTreeMap<&'static str, Binary> {
    let service = |command: clap::Command, consumes: &[Topic]| Binary {
        reads: env_vars(&command),
        required: SERVICE_REQUIRED,
        consumes: consumes.to_vec(),
    };
    BTreeMap::from([
        (
            "order-service",
            service(
                order_service::Config::command(),
                &topology::ORDER_SERVICE.consumes(),
            ),
        ),
        (
            "billing-service",
            service(
                billing_service::Config::command(),
                &topology::BILLING_SERVICE.consumes(),
            ),
        ),
        (
            "inventory-service",
            service(
                inventory_service::Config::command(),
                &topology::INVENTORY_SERVICE.consumes(),
            ),
        ),
        (
            "shipping-service",
            service(
                shipping_service::Config::command(),
                &topology::SHIPPING_SERVICE.consumes(),
            ),
        ),
    ])
}

/// orderflow-admin is a binary only; its `--help` lists the variables it reads (the Kafka
/// settings at the top level, the rest per command).
fn admin_reads(command: &str) -> BTreeSet<String> {
    let help = |args: &[&str]| {
        let output = std::process::Command::new(orderflow_e2e::binary("orderflow-admin"))
            .args(args)
            .output()
            .unwrap();
        assert!(output.status.success(), "orderflow-admin {args:?} failed");
        String::from_utf8(output.stdout).unwrap()
    };
    let text = help(&["--help"]) + &help(&[command, "--help"]);
    text.split("[env: ")
        .skip(1)
        .filter_map(|rest| rest.split(['=', ']']).next())
        .map(str::to_owned)
        .collect()
}

/// What each orderflow-admin command needs set.
fn admin_required(command: &str) -> &'static [&'static str] {
    match command {
        "register-schemas" => &["KAFKA_BOOTSTRAP_SERVERS", "SCHEMA_REGISTRY_URL"],
        _ => &["KAFKA_BOOTSTRAP_SERVERS"],
    }
}

fn rendered(file: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/deploy-rendered")
        .join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run scripts/check-deploy first (scripts/test does)",
            path.display()
        )
    })
}

fn yaml_documents(text: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|document| Value::deserialize(document).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

fn port_of(address: &str) -> Option<u16> {
    address
        .rsplit(':')
        .next()?
        .trim_end_matches('/')
        .parse()
        .ok()
}

fn check_env(
    problems: &mut Vec<String>,
    place: &str,
    binary: &str,
    env: &BTreeMap<String, String>,
    reads: &BTreeSet<String>,
    required: &[&str],
) {
    for key in env.keys() {
        if !reads.contains(key) {
            problems.push(format!("{place}: {binary} does not read {key}"));
        }
    }
    for key in required {
        if !env.contains_key(*key) {
            problems.push(format!("{place}: {binary} needs {key}, which is not set"));
        }
    }
}

fn compose() -> Value {
    serde_json::from_str(&rendered("compose.json")).unwrap()
}

fn prometheus() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/compose/prometheus.yml");
    yaml_documents(&std::fs::read_to_string(path).unwrap()).remove(0)
}

#[test]
fn compose_sets_only_what_the_services_read_and_all_they_need() {
    let problems = check_compose(&compose(), &prometheus());
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn every_overlay_sets_only_what_the_services_read_and_all_they_need() {
    for overlay in ["dev", "prod", "prod-keda"] {
        let objects = yaml_documents(&rendered(&format!("{overlay}.yaml")));
        let problems = check_overlay(overlay, &objects);
        assert!(problems.is_empty(), "{problems:#?}");
    }
    let keda = yaml_documents(&rendered("prod-keda.yaml"));
    assert_eq!(
        keda.iter().filter(|o| o["kind"] == "ScaledObject").count(),
        4
    );
    assert_eq!(
        keda.iter()
            .filter(|o| o["kind"] == "HorizontalPodAutoscaler")
            .count(),
        0
    );
}

#[test]
fn broken_copies_are_caught() {
    let mut compose = compose();
    let order = &mut compose["services"]["order-service"]["environment"];
    order["KAFKA_BOOTSTRAP_SERVER"] = "kafka:19092".into();
    order.as_object_mut().unwrap().remove("DATABASE_URL");
    order["HTTP_ADDR"] = "0.0.0.0:9999".into();
    order["METRICS_ADDR"] = "0.0.0.0:9465".into();
    order["KAFKA_TOPIC_PREFIX"] = "staging-".into();
    compose["services"]["kafka"]["ports"][0]
        .as_object_mut()
        .unwrap()
        .remove("host_ip");
    compose["services"]["token-issuer"]
        .as_object_mut()
        .unwrap()
        .remove("healthcheck");
    let problems = check_compose(&compose, &prometheus()).join("\n");
    for expected in [
        "services.kafka: publishes \"9092\" on every interface, not bound to 127.0.0.1",
        "services.token-issuer: healthcheck is null",
        "does not read KAFKA_BOOTSTRAP_SERVER",
        "needs DATABASE_URL",
        "publishes [8080]",
        "prometheus.yml scrapes",
        "different topic prefixes",
    ] {
        assert!(
            problems.contains(expected),
            "{expected} not reported:\n{problems}"
        );
    }

    let mut objects = yaml_documents(&rendered("prod-keda.yaml"));
    for object in &mut objects {
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        match (object["kind"].as_str().unwrap_or_default(), name.as_str()) {
            ("ConfigMap", "billing-service") => {
                let data = object["data"].as_object_mut().unwrap();
                data.remove("SCHEMA_REGISTRY_URL");
                data.insert("SAGA_DEADLINE_SECS".into(), "30".into());
                data.insert("HTTP_ALLOWED_HOSTS".into(), "*".into());
            }
            ("Service", "order-service") => {
                object["spec"]["ports"].as_array_mut().unwrap().push(
                    serde_json::json!({"name": "metrics", "port": 9464, "targetPort": "metrics"}),
                );
            }
            ("NetworkPolicy", "billing-service") => {
                object["spec"]["ingress"][1]["from"]
                    .as_array_mut()
                    .unwrap()
                    .push(serde_json::json!({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}));
            }
            ("ScaledObject", "shipping-service") => {
                object["spec"]["triggers"][0]["metadata"]["topic"] = "payments".into();
            }
            ("NetworkPolicy", "inventory-service") => {
                object["spec"]["egress"] =
                    serde_json::json!([{"ports": [{"port": 53, "protocol": "UDP"}]}]);
            }
            ("KafkaUser", "billing-service") => {
                object["spec"]["authorization"]["acls"]
                    .as_array_mut()
                    .unwrap()
                    .push(serde_json::json!({
                        "resource": {"type": "topic", "name": "shipments", "patternType": "literal"},
                        "operations": ["Write"],
                    }));
            }
            ("Deployment", "shipping-service") => {
                object["spec"]["template"]["spec"]["containers"][0]["env"][1]["value"] =
                    "order-service".into();
            }
            ("Deployment", "order-service") => {
                object["spec"]["template"]["spec"]["initContainers"][0]["env"][0]["valueFrom"]["secretKeyRef"]
                    ["name"] = "order-service-database".into();
            }
            _ => {}
        }
    }
    // The dev token issuer signs anything: production must never run it.
    objects.extend(
        yaml_documents(&rendered("dev.yaml"))
            .into_iter()
            .filter(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == "token-issuer"),
    );
    let problems = check_overlay("prod-keda", &objects).join("\n");
    let dev: Vec<Value> = yaml_documents(&rendered("dev.yaml"))
        .into_iter()
        .filter(|o| !(o["kind"] == "NetworkPolicy" && o["metadata"]["name"] == "postgres"))
        .map(|mut o| {
            if o["kind"] == "NetworkPolicy" && o["metadata"]["name"] == "token-issuer" {
                o["spec"]["ingress"][0]["from"] = serde_json::json!([{"podSelector": {}}]);
            }
            o
        })
        .collect();
    let dev_problems = check_overlay("dev", &dev).join("\n");
    for expected in [
        "dev: no NetworkPolicy guards postgres",
        "dev: the NetworkPolicy of token-issuer admits every pod",
    ] {
        assert!(
            dev_problems.contains(expected),
            "{expected} not reported:\n{dev_problems}"
        );
    }
    for expected in [
        "billing-service does not read SAGA_DEADLINE_SECS",
        "billing-service needs SCHEMA_REGISTRY_URL",
        "KEDA scales shipping-service on",
        "NetworkPolicy inventory-service blocks KAFKA_BOOTSTRAP_SERVERS",
        "NetworkPolicy inventory-service blocks AUTH_JWKS_URL",
        "NetworkPolicy inventory-service lets egress reach any destination",
        "order-service migrates with the service's own database role",
        "KafkaUser billing-service grants [(\"topic\", \"shipments\", \"Write\")] beyond the topology",
        "shipping-service does not authenticate as its own Kafka user",
        "the dev token issuer runs in production",
        "prod-keda: order-service: its Service routes to the metrics port",
        "prod-keda: billing-service: its NetworkPolicy admits",
        "prod-keda: billing-service: HTTP_ALLOWED_HOSTS is \"*\"",
    ] {
        assert!(
            problems.contains(expected),
            "{expected} not reported:\n{problems}"
        );
    }
}

/// The Kafka version of the local stack (scripts/kafka/pom.xml), of compose and of the dev
/// overlay: one version, so what the tests prove is what the containers run.
fn kafka_version_problems(pom: &str, compose: &Value, dev: &[Value]) -> Vec<String> {
    let version = pom
        .split("<kafka.version>")
        .nth(1)
        .and_then(|rest| rest.split("</kafka.version>").next())
        .expect("scripts/kafka/pom.xml names <kafka.version>");
    let expected = format!("apache/kafka:{version}");
    let mut images = vec![(
        "docker-compose.yml".to_owned(),
        compose["services"]["kafka"]["image"].clone(),
    )];
    for object in dev {
        if object["metadata"]["name"] == "kafka" && object["kind"] == "StatefulSet" {
            for container in object["spec"]["template"]["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
            {
                images.push(("the dev overlay".to_owned(), container["image"].clone()));
            }
        }
    }
    let mut problems: Vec<String> = images
        .iter()
        .filter(|(_, image)| image.as_str() != Some(expected.as_str()))
        .map(|(place, image)| format!("{place} runs {image}, the local stack {expected}"))
        .collect();
    if images.len() != 2 {
        problems.push(format!(
            "expected one Kafka in compose and one in the dev overlay, found {images:?}"
        ));
    }
    problems
}

#[test]
fn the_local_stack_compose_and_the_dev_overlay_run_one_kafka_version() {
    let pom_path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/kafka/pom.xml");
    let pom = std::fs::read_to_string(pom_path).unwrap();
    let dev = yaml_documents(&rendered("dev.yaml"));
    let problems = kafka_version_problems(&pom, &compose(), &dev);
    assert!(problems.is_empty(), "{problems:#?}");

    let mut stale = compose();
    stale["services"]["kafka"]["image"] = "apache/kafka:3.9.1".into();
    let problems = kafka_version_problems(&pom, &stale, &dev);
    assert!(
        problems.len() == 1 && problems[0].contains("apache/kafka:3.9.1"),
        "a stale compose image is not reported: {problems:#?}"
    );
}

#[test]
fn the_kubernetes_alerts_are_the_compose_alerts() {
    let file = alerts::rule_file_groups();
    assert!(
        file.as_array().is_some_and(|groups| !groups.is_empty()),
        "no rule groups: {file:#}"
    );
    let rule = alerts::prometheus_rule_groups();
    let problems = alerts::alert_problems(&file, rule.as_ref());
    assert!(problems.is_empty(), "{problems:#?}");

    // A threshold changed in one copy only is caught.
    let mut drifted = rule.unwrap();
    drifted[0]["rules"][0]["expr"] = "max by (awaiting) (orderflow_sagas_stuck) > 5".into();
    assert_eq!(alerts::alert_problems(&file, Some(&drifted)).len(), 1);
}

/// The prometheus component's PodMonitor scrapes every service's pods, on the container port
/// that serves `/metrics` (the API port does not).
#[test]
fn the_pod_monitor_scrapes_each_service_on_its_metrics_port() {
    let objects = yaml_documents(&rendered("prod-rules.yaml"));
    let monitor = objects
        .iter()
        .find(|o| o["kind"] == "PodMonitor")
        .expect("the prometheus component renders a PodMonitor");
    let selector = monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap();
    let endpoints = monitor["spec"]["podMetricsEndpoints"].as_array().unwrap();
    assert!(
        endpoints
            .iter()
            .all(|e| e["port"] == "metrics" && e["path"] == "/metrics"),
        "{endpoints:?}"
    );
    let scraped: BTreeSet<&str> = objects
        .iter()
        .filter(|o| o["kind"] == "Deployment")
        .filter(|d| {
            let labels = &d["spec"]["template"]["metadata"]["labels"];
            selector.iter().all(|(key, value)| &labels[key] == value)
        })
        .filter(|d| {
            d["spec"]["template"]["spec"]["containers"][0]["ports"]
                .as_array()
                .is_some_and(|ports| ports.iter().any(|p| p["name"] == "metrics"))
        })
        .filter_map(|d| d["metadata"]["name"].as_str())
        .collect();
    assert_eq!(scraped, binaries().keys().copied().collect());
}
