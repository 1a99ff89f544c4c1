//! The alerts and the dashboard name only metrics the code exports and docs/metrics.md
//! documents, and every alert has its runbook section.

use std::collections::BTreeSet;

use yaml_rust2::Yaml;

use super::files::*;

/// Metrics from other exporters the alerts and panels may use: RabbitMQ's prometheus plugin and
/// kube-state-metrics (docs/operations.md, prerequisites).
const OTHER_EXPORTERS: &[&str] = &["rabbitmq_", "kube_"];

/// `waybill_*` names in a PromQL text, histogram series folded into their metric.
fn waybill_metrics(query: &str) -> BTreeSet<String> {
    query
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("waybill_"))
        .map(|word| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| word.strip_suffix(suffix))
                .unwrap_or(word)
                .to_owned()
        })
        .collect()
}

/// Every string literal of the workspace's library and binary sources.
fn source_literals() -> String {
    let mut text = String::new();
    let mut dirs = vec![root().join("crates")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("source directory").flatten() {
            let path = entry.path();
            let name = entry.file_name();
            if path.is_dir() && name != "tests" && name != "target" {
                dirs.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                text.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
            }
        }
    }
    text
}

fn queries() -> Vec<(String, String)> {
    let mut found = Vec::new();
    let rules = find(&base(), "PrometheusRule", "waybill").clone();
    for rule in rule_list(&rules) {
        let name = scalar(&rule["alert"]).unwrap_or_default();
        found.push((
            format!("alert {name}"),
            scalar(&rule["expr"]).unwrap_or_default(),
        ));
    }
    let dashboard = read("deploy/grafana/waybill.json");
    for line in dashboard
        .lines()
        .filter(|line| line.trim_start().starts_with("\"expr\""))
    {
        found.push(("deploy/grafana/waybill.json".to_owned(), line.to_owned()));
    }
    assert!(found.len() > 10, "alerts and panels were found");
    found
}

fn rule_list(rules: &Yaml) -> Vec<Yaml> {
    rules["spec"]["groups"]
        .as_vec()
        .into_iter()
        .flatten()
        .flat_map(|group| group["rules"].as_vec().cloned().unwrap_or_default())
        .collect()
}

#[test]
fn alerts_and_panels_use_metrics_the_code_exports() {
    let documented = read("docs/metrics.md");
    let code = source_literals();
    for (place, query) in queries() {
        for metric in waybill_metrics(&query) {
            assert!(
                documented.contains(&format!("`{metric}`")),
                "{place}: {metric} is not in docs/metrics.md"
            );
            assert!(
                code.contains(&format!("\"{metric}\"")),
                "{place}: no code exports {metric}"
            );
        }
        // Label values an alert compares with are ones the code emits (e.g. outcome="unavailable").
        for (at, _) in query.match_indices("=\"") {
            let value = query[at + 2..].split('"').next().unwrap_or_default();
            let plain =
                !value.is_empty() && value.chars().all(|c| c.is_ascii_lowercase() || c == '_');
            if place.starts_with("alert") && plain {
                assert!(
                    code.contains(&format!("\"{value}\"")),
                    "{place}: compares with \"{value}\", which no code emits"
                );
            }
        }
        let words = query.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'));
        for word in words.filter(|word| word.contains('_') && word.ends_with("_total")) {
            assert!(
                word.starts_with("waybill_")
                    || OTHER_EXPORTERS
                        .iter()
                        .any(|prefix| word.starts_with(prefix)),
                "{place}: {word} comes from no known exporter"
            );
        }
    }
}

#[test]
fn every_alert_has_its_runbook() {
    let operations = read("docs/operations.md");
    for rule in rule_list(find(&base(), "PrometheusRule", "waybill")) {
        let Some(alert) = rule["alert"].as_str() else {
            continue;
        };
        let runbook = rule["annotations"]["runbook"].as_str().unwrap_or_default();
        assert_eq!(
            runbook,
            format!("docs/operations.md#{}", alert.to_lowercase()),
            "{alert}: runbook"
        );
        assert!(
            operations.contains(&format!("\n### {alert}\n")),
            "docs/operations.md has no section {alert}"
        );
        assert!(
            ["critical", "warning", "info"]
                .contains(&rule["labels"]["severity"].as_str().unwrap_or_default())
        );
    }
}
