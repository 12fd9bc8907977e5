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
use shared_events::Topic;

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
];

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
            service(order_service::Config::command(), &order_service::CONSUMES),
        ),
        (
            "billing-service",
            service(
                billing_service::Config::command(),
                &billing_service::CONSUMES,
            ),
        ),
        (
            "inventory-service",
            service(
                inventory_service::Config::command(),
                &inventory_service::CONSUMES,
            ),
        ),
        (
            "shipping-service",
            service(
                shipping_service::Config::command(),
                &shipping_service::CONSUMES,
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

/// Problems in the compose file (as `docker compose config --format json` resolved it).
fn check_compose(compose: &Value, prometheus: &Value) -> Vec<String> {
    let binaries = binaries();
    let mut problems = Vec::new();
    let mut scrape_expected = BTreeSet::new();
    let mut topic_prefixes = BTreeSet::new();
    for (name, service) in compose["services"].as_object().unwrap() {
        let image = service["image"].as_str().unwrap_or_default();
        let Some(binary) = service["build"]["args"]["SERVICE"]
            .as_str()
            .or_else(|| image.strip_prefix("orderflow/")?.split(':').next())
        else {
            continue;
        };
        let env: BTreeMap<String, String> = service["environment"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        let place = format!("docker-compose.yml services.{name}");
        topic_prefixes.insert(env.get("KAFKA_TOPIC_PREFIX").cloned().unwrap_or_default());
        if binary == "orderflow-admin" {
            let command = service["command"][0].as_str().unwrap_or_default();
            let required: &[&str] = match command {
                "register-schemas" => &["KAFKA_BOOTSTRAP_SERVERS", "SCHEMA_REGISTRY_URL"],
                _ => &["KAFKA_BOOTSTRAP_SERVERS"],
            };
            check_env(
                &mut problems,
                &place,
                binary,
                &env,
                &admin_reads(command),
                required,
            );
            continue;
        }
        let Some(known) = binaries.get(binary) else {
            problems.push(format!("{place}: builds unknown binary {binary}"));
            continue;
        };
        check_env(
            &mut problems,
            &place,
            binary,
            &env,
            &known.reads,
            known.required,
        );
        let http_port = env.get("HTTP_ADDR").and_then(|a| port_of(a));
        let targets: Vec<u64> = service["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["target"].as_u64())
            .collect();
        if http_port.is_none() || targets != [u64::from(http_port.unwrap())] {
            problems.push(format!(
                "{place}: publishes {targets:?} but HTTP_ADDR listens on {http_port:?}"
            ));
        }
        if let Some(port) = http_port {
            scrape_expected.insert(format!("{name}:{port}"));
        }
        let healthcheck = &service["healthcheck"]["test"];
        if healthcheck != &serde_json::json!(["CMD", "/usr/local/bin/service", "healthcheck"]) {
            problems.push(format!("{place}: healthcheck is {healthcheck}"));
        }
        for key in ["KAFKA_BOOTSTRAP_SERVERS", "SCHEMA_REGISTRY_URL"] {
            let host = env.get(key).and_then(|v| {
                v.trim_start_matches("http://")
                    .split(':')
                    .next()
                    .map(str::to_owned)
            });
            if host
                .as_ref()
                .is_none_or(|h| compose["services"].get(h).is_none())
            {
                problems.push(format!("{place}: {key} names no compose service: {host:?}"));
            }
        }
    }
    if topic_prefixes.len() != 1 {
        problems.push(format!(
            "docker-compose.yml: services use different topic prefixes {topic_prefixes:?}"
        ));
    }
    let scraped: BTreeSet<String> = prometheus["scrape_configs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|job| job["job_name"] == "orderflow")
        .flat_map(|job| {
            job["static_configs"][0]["targets"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|t| t.as_str().map(str::to_owned))
        .collect();
    if scraped != scrape_expected {
        problems.push(format!(
            "prometheus.yml scrapes {scraped:?}, the services listen on {scrape_expected:?}"
        ));
    }
    problems
}

/// Problems in one rendered overlay.
fn check_overlay(name: &str, objects: &[Value]) -> Vec<String> {
    let binaries = binaries();
    let mut problems = Vec::new();
    let by_kind = |kind: &'static str| objects.iter().filter(move |o| o["kind"] == kind);
    let config_maps: BTreeMap<&str, &Value> = by_kind("ConfigMap")
        .map(|c| (c["metadata"]["name"].as_str().unwrap(), &c["data"]))
        .collect();
    let secrets: BTreeSet<&str> = by_kind("Secret")
        .filter_map(|s| s["metadata"]["name"].as_str())
        .collect();
    let mut service_settings: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for workload in objects.iter().filter(|o| {
        ["Deployment", "StatefulSet", "Job"].contains(&o["kind"].as_str().unwrap_or_default())
    }) {
        let workload_name = workload["metadata"]["name"].as_str().unwrap();
        let pod = &workload["spec"]["template"]["spec"];
        let containers = pod["initContainers"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(pod["containers"].as_array().into_iter().flatten());
        for container in containers {
            let image = container["image"].as_str().unwrap_or_default();
            let Some(binary) = image
                .split('/')
                .next_back()
                .and_then(|last| last.split(':').next())
                .filter(|_| image.contains("orderflow/"))
            else {
                continue;
            };
            let place = format!(
                "{name}: {workload_name}/{}",
                container["name"].as_str().unwrap()
            );
            let mut env: BTreeMap<String, String> = BTreeMap::new();
            for from in container["envFrom"].as_array().into_iter().flatten() {
                let map = from["configMapRef"]["name"].as_str().unwrap_or_default();
                match config_maps.get(map) {
                    Some(data) => env.extend(
                        data.as_object()
                            .unwrap()
                            .iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned())),
                    ),
                    None => problems.push(format!("{place}: ConfigMap {map} does not exist")),
                }
            }
            for var in container["env"].as_array().into_iter().flatten() {
                let key = var["name"].as_str().unwrap().to_owned();
                if let Some(secret) = var["valueFrom"]["secretKeyRef"]["name"].as_str()
                    && name == "dev"
                    && !secrets.contains(secret)
                {
                    problems.push(format!("{place}: Secret {secret} does not exist"));
                }
                env.insert(
                    key,
                    var["value"].as_str().unwrap_or("<from secret>").to_owned(),
                );
            }
            if binary == "orderflow-admin" {
                let command = container["args"][0].as_str().unwrap_or_default();
                let reads = admin_reads(command);
                check_env(
                    &mut problems,
                    &place,
                    binary,
                    &env,
                    &reads,
                    &["KAFKA_BOOTSTRAP_SERVERS"],
                );
                continue;
            }
            let Some(known) = binaries.get(binary) else {
                problems.push(format!("{place}: runs unknown binary {binary}"));
                continue;
            };
            check_env(
                &mut problems,
                &place,
                binary,
                &env,
                &known.reads,
                known.required,
            );
            if container["args"].is_null() {
                let http_port = env.get("HTTP_ADDR").and_then(|a| port_of(a));
                let container_port = container["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|p| p["name"] == "http")
                    .and_then(|p| p["containerPort"].as_u64());
                if http_port.map(u64::from) != container_port {
                    problems.push(format!(
                        "{place}: HTTP_ADDR port {http_port:?} but containerPort http is {container_port:?}"
                    ));
                }
                for probe in ["readinessProbe", "livenessProbe"] {
                    if container[probe]["httpGet"]["port"] != "http" {
                        problems.push(format!("{place}: {probe} does not probe the http port"));
                    }
                }
                service_settings.insert(binary.to_owned(), env);
            }
        }
    }
    for (binary, settings) in &service_settings {
        let service = by_kind("Service").find(|s| s["metadata"]["name"] == binary.as_str());
        let target = service.map(|s| &s["spec"]["ports"][0]["targetPort"]);
        if target.is_none_or(|t| t != "http") {
            problems.push(format!(
                "{name}: Service {binary} does not target the http port"
            ));
        }
        let policy = by_kind("NetworkPolicy").find(|p| p["metadata"]["name"] == binary.as_str());
        let egress_ports: BTreeSet<u64> = policy
            .map(|p| {
                p["spec"]["egress"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|rule| rule["ports"].as_array().cloned().unwrap_or_default())
                    .filter_map(|port| port["port"].as_u64())
                    .collect()
            })
            .unwrap_or_default();
        for key in [
            "KAFKA_BOOTSTRAP_SERVERS",
            "SCHEMA_REGISTRY_URL",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        ] {
            let port = settings.get(key).and_then(|v| {
                v.trim_start_matches("http://")
                    .split('/')
                    .next()
                    .and_then(port_of)
            });
            if !port.is_some_and(|p| egress_ports.contains(&u64::from(p))) {
                problems.push(format!(
                    "{name}: NetworkPolicy {binary} blocks {key} (port {port:?})"
                ));
            }
        }
        for scaled in by_kind("ScaledObject")
            .filter(|s| s["spec"]["scaleTargetRef"]["name"] == binary.as_str())
        {
            let triggers: Vec<&Value> = scaled["spec"]["triggers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| &t["metadata"])
                .collect();
            let prefix = settings
                .get("KAFKA_TOPIC_PREFIX")
                .cloned()
                .unwrap_or_default();
            let names = shared_events::TopicNames::new(prefix);
            let expected: BTreeSet<String> = binaries[binary.as_str()]
                .consumes
                .iter()
                .map(|t| names.name(*t))
                .collect();
            let topics: BTreeSet<String> = triggers
                .iter()
                .filter_map(|t| t["topic"].as_str().map(str::to_owned))
                .collect();
            if topics != expected {
                problems.push(format!(
                    "{name}: KEDA scales {binary} on {topics:?}, it consumes {expected:?}"
                ));
            }
            for trigger in triggers {
                if trigger["consumerGroup"] != binary.as_str() {
                    problems.push(format!(
                        "{name}: KEDA watches group {}, not {binary}",
                        trigger["consumerGroup"]
                    ));
                }
                // KEDA reads the broker from the Deployment's own environment.
                let broker_var = trigger["bootstrapServersFromEnv"]
                    .as_str()
                    .unwrap_or_default();
                if !settings.contains_key(broker_var) {
                    problems.push(format!(
                        "{name}: KEDA takes {binary}'s broker from {broker_var:?}, which is not set"
                    ));
                }
            }
        }
    }
    let prefixes: BTreeSet<&str> = service_settings
        .values()
        .map(|env| env.get("KAFKA_TOPIC_PREFIX").map_or("", String::as_str))
        .collect();
    if prefixes.len() > 1 {
        problems.push(format!(
            "{name}: services use different topic prefixes {prefixes:?}"
        ));
    }
    if service_settings.len() != binaries.len() {
        problems.push(format!(
            "{name}: runs {:?}",
            service_settings.keys().collect::<Vec<_>>()
        ));
    }
    problems
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
    order["KAFKA_TOPIC_PREFIX"] = "staging-".into();
    let problems = check_compose(&compose, &prometheus()).join("\n");
    for expected in [
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
            }
            ("ScaledObject", "shipping-service") => {
                object["spec"]["triggers"][0]["metadata"]["topic"] = "payments".into();
            }
            ("NetworkPolicy", "inventory-service") => {
                object["spec"]["egress"] =
                    serde_json::json!([{"ports": [{"port": 53, "protocol": "UDP"}]}]);
            }
            _ => {}
        }
    }
    let problems = check_overlay("prod-keda", &objects).join("\n");
    for expected in [
        "billing-service does not read SAGA_DEADLINE_SECS",
        "billing-service needs SCHEMA_REGISTRY_URL",
        "KEDA scales shipping-service on",
        "NetworkPolicy inventory-service blocks KAFKA_BOOTSTRAP_SERVERS",
    ] {
        assert!(
            problems.contains(expected),
            "{expected} not reported:\n{problems}"
        );
    }
}
