//! The Helm chart, checked without Helm: the RBAC rule files are valid rules and grant no
//! Secret access, every `.Values.*` a template reads is in values.yaml, every file a template
//! includes exists, every environment variable the operator Deployment sets is one the
//! binary reads, and the Grafana dashboard asks only for metrics the relay and the operator
//! export, through variables it defines. (relay/tests/dashboard.rs evaluates its queries
//! against a real Prometheus.) (The rules being enough is proven by tests/reconcile.rs, which runs the
//! operator bound to them against a real API server.)

#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};

use k8s_openapi::api::rbac::v1::PolicyRule;
use serde_yaml::Value;

fn chart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/xdpturn")
}

fn templates() -> Vec<(String, String)> {
    fs::read_dir(chart().join("templates"))
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                fs::read_to_string(&p).unwrap(),
            )
        })
        .collect()
}

/// The `name` in `{{ ... .<prefix><name> ... }}` occurrences, e.g. `.Values.operator.image.tag`.
fn references(text: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(prefix) {
        rest = &rest[i + prefix.len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '_')
            .collect();
        out.push(name.trim_end_matches('.').to_owned());
    }
    out
}

#[test]
fn rbac_rules_are_rules_and_never_secrets() {
    for file in ["operator-rules.yaml", "leader-election-rules.yaml"] {
        let text = fs::read_to_string(chart().join("files").join(file)).unwrap();
        let rules: Vec<PolicyRule> = serde_yaml::from_str(&text).unwrap();
        assert!(!rules.is_empty(), "{file}");
        for r in &rules {
            let resources = r.resources.clone().unwrap_or_default();
            assert!(
                !resources.iter().any(|x| x == "secrets" || x == "*"),
                "{file}: {r:?}"
            );
            assert!(!r.verbs.iter().any(|v| v == "*"), "{file}: {r:?}");
        }
    }
}

#[test]
fn templates_read_only_values_that_exist() {
    let values: Value =
        serde_yaml::from_str(&fs::read_to_string(chart().join("values.yaml")).unwrap()).unwrap();
    for (name, text) in templates() {
        for path in references(&text, ".Values.") {
            let mut node = &values;
            for key in path.split('.') {
                node = node
                    .get(key)
                    .unwrap_or_else(|| panic!("{name} reads .Values.{path}, not in values.yaml"));
            }
        }
        for file in text
            .split(".Files.Get \"")
            .skip(1)
            .filter_map(|r| r.split('"').next())
        {
            assert!(
                chart().join(file).is_file(),
                "{name} includes missing {file}"
            );
        }
    }
}

#[test]
fn the_deployment_sets_only_variables_the_operator_reads() {
    let main =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/main.rs")).unwrap();
    let deployment = fs::read_to_string(chart().join("templates/deployment.yaml")).unwrap();
    let set: Vec<&str> = deployment
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- name: "))
        .filter(|n| n.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .collect();
    assert!(set.contains(&"XDPTURN_LEADER_ELECT"), "{set:?}");
    for var in set {
        if var == "RUST_LOG" {
            continue;
        }
        assert!(
            main.contains(&format!("env = \"{var}\"")),
            "the chart sets {var}, which xdpturn-operator does not read"
        );
    }
}

/// The `xdpturn_*` metric names in a PromQL expression.
fn metric_names(expr: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("xdpturn_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.push(&tail[..end]);
        rest = &tail[end..];
    }
    out
}

#[test]
fn the_dashboard_queries_exported_metrics_through_its_variables() {
    let text = fs::read_to_string(chart().join("files/dashboards/xdpturn.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let sources = [
        fs::read_to_string(root.join("relay/src/metrics.rs")).unwrap(),
        fs::read_to_string(root.join("operator/src/metrics.rs")).unwrap(),
    ];
    let exported = |name: &str| sources.iter().any(|s| s.contains(&format!("\"{name}\"")));
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert!(variables.contains(&"datasource"), "{variables:?}");

    let mut panels = Vec::new();
    for p in dashboard["panels"].as_array().unwrap() {
        if p["type"] == "row" {
            panels.extend(p["panels"].as_array().into_iter().flatten());
        } else {
            panels.push(p);
        }
    }
    let mut names = 0;
    for p in panels {
        let title = p["title"].as_str().unwrap();
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            for name in metric_names(expr) {
                // A histogram's series are its name and a suffix.
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s).filter(|b| exported(b)))
                    .unwrap_or(name);
                assert!(
                    exported(base),
                    "panel {title:?} queries {name}, which neither the relay nor the operator \
                     exports: {expr}"
                );
                names += 1;
            }
            for var in expr.split('$').skip(1) {
                let var: String = var
                    .trim_start_matches('{')
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                assert!(
                    var.starts_with("__") || variables.contains(&var.as_str()),
                    "panel {title:?} uses ${var}, which the dashboard does not define"
                );
            }
        }
    }
    assert!(names >= 30, "{names} metric references");
}
