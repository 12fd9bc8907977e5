//! The alerts have one source: the Kubernetes PrometheusRule (components/prometheus,
//! rendered into the prod overlay by scripts/check-deploy) carries exactly the groups of
//! deploy/prometheus/orderflow-rules.yml, which the compose Prometheus loads.

use std::path::PathBuf;

use serde_json::Value;

use super::{rendered, yaml_documents};

/// The rule groups of the file the compose Prometheus loads.
pub fn rule_file_groups() -> Value {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus/orderflow-rules.yml");
    yaml_documents(&std::fs::read_to_string(path).unwrap()).remove(0)["groups"].clone()
}

/// The groups of the PrometheusRule in the rendered prod overlay with the component.
pub fn prometheus_rule_groups() -> Option<Value> {
    yaml_documents(&rendered("prod-rules.yaml"))
        .into_iter()
        .find(|object| object["kind"] == "PrometheusRule")
        .map(|rule| rule["spec"]["groups"].clone())
}

/// What differs between the rule file's groups and the PrometheusRule's.
pub fn alert_problems(file: &Value, rule: Option<&Value>) -> Vec<String> {
    match rule {
        None => vec!["the prometheus component renders no PrometheusRule".to_owned()],
        Some(rule) if rule != file => vec![format!(
            "the PrometheusRule's groups differ from deploy/prometheus/orderflow-rules.yml:\n{rule:#}"
        )],
        Some(_) => Vec::new(),
    }
}
