//! What of a service an ingress can reach: its API, never its `/metrics` (on a port of its
//! own that no Service routes to and only Prometheus's namespace is admitted to); and, in
//! production, the host names the API answers to are named.

use std::collections::BTreeMap;

use serde_json::Value;

use super::port_of;

/// The namespace Prometheus runs in, the only one admitted to the metrics port.
const MONITORING: &str = "monitoring";

/// Problems in how `name`'s services expose `/metrics` and which hosts they answer to.
pub fn exposure_problems(
    name: &str,
    objects: &[Value],
    service_settings: &BTreeMap<String, BTreeMap<String, String>>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let find = |kind: &str, binary: &str| {
        objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == binary)
    };
    for (binary, settings) in service_settings {
        let place = format!("{name}: {binary}");
        let metrics_port = settings.get("METRICS_ADDR").and_then(|a| port_of(a));
        let http_port = settings.get("HTTP_ADDR").and_then(|a| port_of(a));
        let Some(metrics_port) = metrics_port.filter(|port| Some(*port) != http_port) else {
            problems.push(format!(
                "{place}: /metrics is served with the API (METRICS_ADDR {:?})",
                settings.get("METRICS_ADDR")
            ));
            continue;
        };
        let container_port = find("Deployment", binary)
            .and_then(|d| d["spec"]["template"]["spec"]["containers"][0]["ports"].as_array())
            .into_iter()
            .flatten()
            .find(|p| p["name"] == "metrics")
            .and_then(|p| p["containerPort"].as_u64());
        if container_port != Some(u64::from(metrics_port)) {
            problems.push(format!(
                "{place}: METRICS_ADDR port {metrics_port} but containerPort metrics is {container_port:?}"
            ));
        }
        let routes_metrics =
            |port: &Value| port == "metrics" || port.as_u64() == Some(u64::from(metrics_port));
        if let Some(service) = find("Service", binary)
            && service["spec"]["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| routes_metrics(&p["targetPort"]) || routes_metrics(&p["port"]))
        {
            problems.push(format!(
                "{place}: its Service routes to the metrics port, so an ingress can reach /metrics"
            ));
        }
        let rules = find("NetworkPolicy", binary)
            .and_then(|p| p["spec"]["ingress"].as_array())
            .cloned()
            .unwrap_or_default();
        for rule in rules {
            let ports = rule["ports"].as_array().cloned().unwrap_or_default();
            let admits_metrics =
                ports.is_empty() || ports.iter().any(|p| routes_metrics(&p["port"]));
            let only_monitoring = rule["from"].as_array().is_some_and(|from| {
                !from.is_empty()
                    && from.iter().all(|peer| {
                        peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                            == MONITORING
                    })
            });
            if admits_metrics && !only_monitoring {
                problems.push(format!(
                    "{place}: its NetworkPolicy admits {} to the metrics port",
                    rule["from"]
                ));
            }
        }
        if name.starts_with("prod") {
            let hosts = settings
                .get("HTTP_ALLOWED_HOSTS")
                .map_or("", String::as_str);
            if hosts.is_empty() || hosts.split(',').any(|h| h.trim() == "*") {
                problems.push(format!(
                    "{place}: HTTP_ALLOWED_HOSTS is {hosts:?}: name the ingress's host"
                ));
            }
        }
    }
    problems
}
