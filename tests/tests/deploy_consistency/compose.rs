//! Checks of docker-compose.yml (as `docker compose config --format json` resolves it).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::{
    DEV_ISSUER, admin_reads, admin_required, binaries, check_env, dev_issuer_reads, port_of,
};

/// Problems in the compose file (as `docker compose config --format json` resolved it).
pub fn check_compose(compose: &Value, prometheus: &Value) -> Vec<String> {
    let binaries = binaries();
    let mut problems = Vec::new();
    let mut scrape_expected = BTreeSet::new();
    let mut topic_prefixes = BTreeSet::new();
    for (name, service) in compose["services"].as_object().unwrap() {
        // Kafka without auth, a token issuer that signs anything, a database that trusts
        // its clients: nothing of the demo is for the network.
        for port in service["ports"].as_array().into_iter().flatten() {
            if port["host_ip"] != "127.0.0.1" {
                problems.push(format!(
                    "docker-compose.yml services.{name}: publishes {} on {}, not bound to 127.0.0.1",
                    port["published"],
                    port["host_ip"].as_str().unwrap_or("every interface")
                ));
            }
        }
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
            check_env(
                &mut problems,
                &place,
                binary,
                &env,
                &admin_reads(command),
                admin_required(command),
            );
            continue;
        }
        let healthcheck = &service["healthcheck"]["test"];
        if healthcheck != &serde_json::json!(["CMD", "/usr/local/bin/service", "healthcheck"]) {
            problems.push(format!("{place}: healthcheck is {healthcheck}"));
        }
        if binary == DEV_ISSUER {
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
        // /metrics where it is served: its own port if METRICS_ADDR names one, which is never
        // published (only the HTTP port is, above).
        let metrics_port = env.get("METRICS_ADDR").and_then(|a| port_of(a));
        if let Some(port) = metrics_port.or(http_port) {
            scrape_expected.insert(format!("{name}:{port}"));
        }
        for key in [
            "KAFKA_BOOTSTRAP_SERVERS",
            "SCHEMA_REGISTRY_URL",
            "AUTH_JWKS_URL",
        ] {
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

/// Workspace members the image build context leaves out: `.dockerignore` admits only what it
/// names, and cargo must see every member's manifest to build any of them.
pub fn build_context_problems(workspace_manifest: &str, dockerignore: &str) -> Vec<String> {
    let admitted: BTreeSet<&str> = dockerignore
        .lines()
        .filter_map(|line| line.trim().strip_prefix('!'))
        .map(|path| path.trim_end_matches('/'))
        .collect();
    let members = workspace_manifest
        .split_once("members = [")
        .and_then(|(_, rest)| rest.split_once(']'))
        .map_or("", |(members, _)| members);
    members
        .split(',')
        .map(|member| member.trim().trim_matches('"'))
        .filter(|member| !member.is_empty())
        .filter(|member| {
            !admitted.contains(member)
                && !admitted.contains(format!("{member}/Cargo.toml").as_str())
        })
        .map(|member| {
            format!(".dockerignore leaves the workspace member {member} out of the image build")
        })
        .collect()
}

#[test]
fn every_workspace_member_is_in_the_image_build_context() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let dockerignore = std::fs::read_to_string(root.join(".dockerignore")).unwrap();
    let problems = build_context_problems(&manifest, &dockerignore);
    assert!(problems.is_empty(), "{problems:#?}");

    let without_billing = dockerignore.replace("!billing-service/\n", "");
    assert_eq!(
        build_context_problems(&manifest, &without_billing),
        [".dockerignore leaves the workspace member billing-service out of the image build"]
    );
}
