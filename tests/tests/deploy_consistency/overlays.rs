//! Checks of a rendered kustomize overlay.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::exposure::exposure_problems;
use super::{
    DEV_ISSUER, admin_reads, admin_required, binaries, check_env, dev_issuer_reads, port_of,
};

/// Problems in one rendered overlay.
pub fn check_overlay(name: &str, objects: &[Value]) -> Vec<String> {
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
                    && var["valueFrom"]["secretKeyRef"]["optional"] != true
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
            if binary == DEV_ISSUER {
                if name.starts_with("prod") {
                    problems.push(format!("{place}: the dev token issuer runs in production"));
                }
                check_env(
                    &mut problems,
                    &place,
                    binary,
                    &env,
                    &dev_issuer_reads(),
                    &[],
                );
                continue;
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
                    admin_required(command),
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
            "AUTH_JWKS_URL",
        ] {
            let port = settings.get(key).and_then(|v| {
                let authority = v.split("://").nth(1).unwrap_or(v).split('/').next()?;
                port_of(authority)
                    .or((v.starts_with("https://") && !authority.contains(':')).then_some(443))
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
    problems.extend(exposure_problems(name, objects, &service_settings));
    if name == "dev" {
        problems.extend(dev_exposure_problems(objects));
    }
    if name.starts_with("prod") {
        problems.extend(prod_least_privilege_problems(name, objects));
    }
    problems
}

/// Production names every egress destination, and migrates under a database role of its
/// own: a service's role cannot change the schema.
fn prod_least_privilege_problems(name: &str, objects: &[Value]) -> Vec<String> {
    let mut problems = Vec::new();
    for policy in objects.iter().filter(|o| o["kind"] == "NetworkPolicy") {
        let policy_name = policy["metadata"]["name"].as_str().unwrap_or_default();
        for rule in policy["spec"]["egress"].as_array().into_iter().flatten() {
            if rule["to"].as_array().is_none_or(Vec::is_empty) {
                problems.push(format!(
                    "{name}: NetworkPolicy {policy_name} lets egress reach any destination on {}",
                    rule["ports"]
                ));
            }
        }
    }
    let database_secret = |container: &Value| {
        container["env"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|var| var["name"] == "DATABASE_URL")
            .map(|var| var["valueFrom"]["secretKeyRef"]["name"].clone())
    };
    problems.extend(kafka_user_problems(name, objects));
    // The registry's answers decide what a record decodes as, and the identity provider's
    // keys who may call: neither is fetched in the clear.
    for config in objects.iter().filter(|o| o["kind"] == "ConfigMap") {
        for key in ["SCHEMA_REGISTRY_URL", "AUTH_JWKS_URL"] {
            if let Some(url) = config["data"][key].as_str()
                && !url.starts_with("https://")
            {
                problems.push(format!(
                    "{name}: ConfigMap {} sets {key} to {url}, not https",
                    config["metadata"]["name"].as_str().unwrap_or_default()
                ));
            }
        }
    }
    for deployment in objects.iter().filter(|o| o["kind"] == "Deployment") {
        let pod = &deployment["spec"]["template"]["spec"];
        let migrations = pod["initContainers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["args"][0] == "migrate");
        let (Some(migrations), Some(service)) = (migrations, pod["containers"].get(0)) else {
            continue;
        };
        if database_secret(migrations) == database_secret(service) {
            problems.push(format!(
                "{name}: {} migrates with the service's own database role",
                deployment["metadata"]["name"].as_str().unwrap_or_default()
            ));
        }
    }
    problems
}

/// The dev overlay's token issuer (it signs anything) and PostgreSQL (it trusts in-cluster
/// clients) each need a NetworkPolicy that admits named peers only.
fn dev_exposure_problems(objects: &[Value]) -> Vec<String> {
    let mut problems = Vec::new();
    for pod in ["token-issuer", "postgres"] {
        let policy = objects.iter().find(|o| {
            o["kind"] == "NetworkPolicy"
                && o["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == pod
        });
        let Some(policy) = policy else {
            problems.push(format!("dev: no NetworkPolicy guards {pod}"));
            continue;
        };
        let ingress = policy["spec"]["ingress"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let open = ingress.iter().any(|rule| {
            rule["from"].as_array().is_none_or(|peers| {
                peers.is_empty()
                    || peers
                        .iter()
                        .any(|p| p["podSelector"] == serde_json::json!({}))
            })
        });
        if open {
            problems.push(format!("dev: the NetworkPolicy of {pod} admits every pod"));
        }
    }
    problems
}

/// Each service authenticates to Kafka as a user of its own whose ACLs are exactly the
/// grants the topology gives it (`shared_events::acl`).
fn kafka_user_problems(name: &str, objects: &[Value]) -> Vec<String> {
    let mut problems = Vec::new();
    let find = |kind: &str, object: &str| {
        objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == object)
    };
    for service in shared_events::contracts::topology::SERVICES {
        let prefix = find("ConfigMap", service.name)
            .and_then(|c| c["data"]["KAFKA_TOPIC_PREFIX"].as_str())
            .unwrap_or_default();
        let expected: BTreeSet<(String, String, String)> = service
            .grants(&shared_events::TopicNames::new(prefix))
            .iter()
            .flat_map(|grant| {
                grant.resources.iter().map(|r| {
                    (
                        r.resource_type.to_string(),
                        r.name.clone(),
                        grant.operation.to_string(),
                    )
                })
            })
            .collect();
        let Some(user) = find("KafkaUser", service.name) else {
            problems.push(format!("{name}: no KafkaUser {}", service.name));
            continue;
        };
        let mut granted = BTreeSet::new();
        for acl in user["spec"]["authorization"]["acls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let resource = &acl["resource"];
            if resource["patternType"] != "literal" {
                problems.push(format!(
                    "{name}: KafkaUser {} grants a {} pattern",
                    service.name, resource["patternType"]
                ));
            }
            for operation in acl["operations"].as_array().into_iter().flatten() {
                granted.insert((
                    resource["type"].as_str().unwrap_or_default().to_owned(),
                    resource["name"].as_str().unwrap_or_default().to_owned(),
                    operation.as_str().unwrap_or_default().to_owned(),
                ));
            }
        }
        if granted != expected {
            problems.push(format!(
                "{name}: KafkaUser {} grants {:?} beyond the topology and lacks {:?}",
                service.name,
                granted.difference(&expected).collect::<Vec<_>>(),
                expected.difference(&granted).collect::<Vec<_>>()
            ));
        }
        let env = find("Deployment", service.name)
            .map(|d| d["spec"]["template"]["spec"]["containers"][0]["env"].clone())
            .unwrap_or_default();
        let var = |key: &str| {
            env.as_array()
                .into_iter()
                .flatten()
                .find(|v| v["name"] == key)
                .cloned()
                .unwrap_or_default()
        };
        if var("KAFKA_SASL_USERNAME")["value"] != service.name
            || var("KAFKA_SASL_PASSWORD")["valueFrom"]["secretKeyRef"]["name"] != service.name
        {
            problems.push(format!(
                "{name}: {} does not authenticate as its own Kafka user",
                service.name
            ));
        }
    }
    problems
}
