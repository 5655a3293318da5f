//! The monitoring shipped in `monitoring/`: the alert rules pass `promtool check rules` and
//! their unit tests (`promtool test rules`), and the rules and the Grafana dashboard name only
//! metrics the daemon exports (and, between them, use every one).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::metrics::tool;

fn monitoring() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("monitoring")
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(monitoring())
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{said}");
    said
}

#[test]
fn the_alert_rules_pass_promtool_check_and_their_unit_tests() {
    if !tool("promtool") {
        return;
    }
    let said = promtool(&["check", "rules", "alerts.yml"]);
    assert!(said.contains("SUCCESS: 11 rules found"), "{said}");
    let said = promtool(&["test", "rules", "alerts_test.yml"]);
    assert!(said.contains("SUCCESS"), "{said}");
}

/// The metric families the daemon exports (from its own renderer: every family is written,
/// with or without samples), with a histogram's series names.
fn exported() -> BTreeSet<String> {
    let text = backplan::metrics::render(
        &backplan::metrics::Scrape {
            recorded: &Default::default(),
            config: None,
            config_rejected: false,
        },
        &backplan::metrics::Metrics::new(chrono::Utc::now()),
    );
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').unwrap();
        if kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        } else {
            names.insert(name.to_string());
        }
    }
    names
}

/// Every `backplan_*` word in a query.
fn named(query: &str) -> Vec<String> {
    query
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| w.starts_with("backplan_"))
        .map(String::from)
        .collect()
}

fn queries(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr" | "definition", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => queries(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| queries(v, out)),
        _ => {}
    }
}

#[test]
fn the_rules_and_the_dashboard_name_only_exported_metrics() {
    let exported = exported();
    assert!(exported.contains("backplan_last_successful_backup_timestamp_seconds"));
    let text = std::fs::read_to_string(monitoring().join("grafana-dashboard.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    assert_eq!(dashboard["uid"], "backplan");
    let mut dash_queries = Vec::new();
    queries(&dashboard, &mut dash_queries);
    assert!(dash_queries.len() >= 10, "{dash_queries:?}");
    let rules = std::fs::read_to_string(monitoring().join("alerts.yml")).unwrap();
    let rule_exprs: Vec<String> = rules
        .split("expr:")
        .skip(1)
        .map(|e| {
            e.split("for:")
                .next()
                .unwrap()
                .split("labels:")
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(rule_exprs.len(), 11);
    let mut used = BTreeSet::new();
    for (what, q) in dash_queries
        .iter()
        .map(|q| ("the dashboard", q))
        .chain(rule_exprs.iter().map(|q| ("alerts.yml", q)))
    {
        for name in named(q) {
            assert!(
                exported.contains(&name),
                "{what} queries `{name}`, which the daemon does not export: {q}"
            );
            used.insert(name);
        }
    }
    let unused: Vec<&String> = exported
        .iter()
        .filter(|n| !used.contains(*n))
        .filter(|n| !n.ends_with("_sum") && !n.ends_with("_count"))
        .collect();
    assert!(unused.is_empty(), "exported but shown nowhere: {unused:?}");
}
