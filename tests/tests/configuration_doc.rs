//! docs/configuration.md's tables are the services' `--help`: every setting with its
//! variable, flag, default and help text, generated here from each binary's clap command.
//! The test fails when the file is stale; `UPDATE_DOCS=1 cargo test -p orderflow-e2e --test
//! configuration_doc` writes it again. The prose around the tables is the file's own.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::CommandFactory;

const BEGIN: &str =
    "<!-- generated from each service's --help by tests/tests/configuration_doc.rs -->";
const END: &str = "<!-- end of the generated part -->";

/// One setting as `--help` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Setting {
    variable: String,
    flag: String,
    default: String,
    help: String,
}

impl Setting {
    fn row(&self) -> String {
        format!(
            "| `{}` | `--{}` | {} | {} |",
            self.variable, self.flag, self.default, self.help
        )
    }
}

/// Every setting `command` reads from the environment, by variable.
fn settings(command: &clap::Command) -> BTreeMap<String, Setting> {
    command
        .get_arguments()
        .filter_map(|arg| {
            let variable = arg.get_env()?.to_string_lossy().into_owned();
            let help = arg
                .get_long_help()
                .or(arg.get_help())
                .map(|h| h.to_string())
                .unwrap_or_default();
            let defaults: Vec<String> = arg
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            let choices: Vec<String> = arg
                .get_possible_values()
                .iter()
                .filter(|v| !v.is_hide_set())
                .map(|v| format!("`{}`", v.get_name()))
                .collect();
            let mut help = help.split_whitespace().collect::<Vec<_>>().join(" ");
            // Booleans list true and false; anything else with a short list names them.
            if !choices.is_empty() && choices.len() <= 6 && choices != ["`true`", "`false`"] {
                help = format!("{help} One of {}.", choices.join(", "));
            }
            let setting = Setting {
                flag: arg.get_long().unwrap_or_default().to_owned(),
                default: match defaults.join(",") {
                    d if d.is_empty() => "".to_owned(),
                    d => format!("`{d}`"),
                },
                help: help.replace('|', "\\|"),
                variable: variable.clone(),
            };
            Some((variable, setting))
        })
        .collect()
}

fn table(settings: &[&Setting]) -> String {
    let mut lines = vec![
        "| variable | flag | default | what it sets |".to_owned(),
        "| --- | --- | --- | --- |".to_owned(),
    ];
    lines.extend(settings.iter().map(|s| s.row()));
    lines.join("\n")
}

/// The tables: the settings every service reads, then each service's own.
fn generated() -> String {
    let services: Vec<(&str, BTreeMap<String, Setting>)> = vec![
        ("order-service", settings(&order_service::Config::command())),
        (
            "inventory-service",
            settings(&inventory_service::Config::command()),
        ),
        (
            "billing-service",
            settings(&billing_service::Config::command()),
        ),
        (
            "shipping-service",
            settings(&shipping_service::Config::command()),
        ),
    ];
    let shared: Vec<&Setting> = services[0]
        .1
        .values()
        .filter(|setting| {
            services
                .iter()
                .all(|(_, own)| own.get(&setting.variable) == Some(*setting))
        })
        .collect();
    let mut out = vec![
        BEGIN.to_owned(),
        String::new(),
        "## Every service".to_owned(),
        String::new(),
        table(&shared),
    ];
    for (service, own) in &services {
        let extra: Vec<&Setting> = own
            .values()
            .filter(|setting| !shared.contains(setting))
            .collect();
        if extra.is_empty() {
            continue;
        }
        out.extend([
            String::new(),
            format!("## {service} also"),
            String::new(),
            table(&extra),
        ]);
    }
    out.extend([String::new(), END.to_owned()]);
    out.join("\n")
}

#[test]
fn docs_configuration_md_is_the_services_help() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md");
    let file = std::fs::read_to_string(&path).unwrap();
    let (before, rest) = file
        .split_once(BEGIN)
        .expect("docs/configuration.md has the generated part's opening marker");
    let (_, after) = rest
        .split_once(END)
        .expect("docs/configuration.md has the generated part's closing marker");
    let current = format!("{before}{}{after}", generated());
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::write(&path, &current).unwrap();
        return;
    }
    assert!(
        current == file,
        "docs/configuration.md is stale: run `UPDATE_DOCS=1 cargo test -p orderflow-e2e --test configuration_doc`"
    );
}
