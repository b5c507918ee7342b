//! The ready-made operations files under deploy/: the Prometheus alert rules and the Grafana
//! dashboard. Each expression's metric names must be exported by a live pgheal (a rule or a
//! panel on a misspelt or removed metric silently shows nothing); the rules must hold the
//! alerts the runbook expects; `promtool check rules` must accept them when promtool is
//! installed (Debian's `prometheus` package ships it).

use crate::common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use common::metrics::{metric_names, scrape};
use common::*;
use pgheal::config::cli::RunArgs;
use pgheal::config::file::FileConfig;

fn deploy(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(name)
}

fn read(name: &str) -> String {
    std::fs::read_to_string(deploy(name)).unwrap_or_else(|e| panic!("deploy/{name}: {e}"))
}

/// The metric names an expression uses: every `pgheal_...` identifier (all of pgheal's
/// metrics start so; labels and functions do not).
fn names_in(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find("pgheal_") {
        let preceded = rest[..i]
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(tail.len());
        if !preceded {
            out.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    out
}

/// The alert rules: (alert name, expression).
fn rules() -> Vec<(String, String)> {
    let doc: serde_yaml::Value =
        serde_yaml::from_str(&read("prometheus-rules.yml")).expect("rules are YAML");
    let groups = doc["groups"].as_sequence().expect("groups: [...]");
    let mut out = Vec::new();
    for g in groups {
        for r in g["rules"].as_sequence().expect("rules: [...]") {
            let alert = r["alert"].as_str().expect("every rule is an alert");
            let expr = r["expr"].as_str().expect("an expr");
            assert!(
                r["labels"]["severity"].as_str().is_some(),
                "{alert} has a severity"
            );
            assert!(
                r["annotations"]["summary"].as_str().is_some(),
                "{alert} has a summary"
            );
            out.push((alert.to_owned(), expr.to_owned()));
        }
    }
    out
}

/// Every target expression of the dashboard: (panel title, expression).
fn panel_exprs() -> Vec<(String, String)> {
    let dash: serde_json::Value =
        serde_json::from_str(&read("grafana-dashboard.json")).expect("dashboard is JSON");
    let panels = dash["panels"].as_array().expect("panels: [...]");
    let mut ids = BTreeSet::new();
    let mut out = Vec::new();
    for p in panels {
        let id = p["id"].as_u64().expect("panel id");
        assert!(ids.insert(id), "panel id {id} is unique");
        let pos = &p["gridPos"];
        let (x, w) = (pos["x"].as_u64().expect("x"), pos["w"].as_u64().expect("w"));
        assert!(x + w <= 24, "panel {id} fits Grafana's 24 columns");
        let title = p["title"].as_str().expect("title").to_owned();
        if p["type"] == "row" {
            continue;
        }
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title} queries something");
        for t in targets {
            let expr = t["expr"].as_str().expect("expr").to_owned();
            out.push((title.clone(), expr));
        }
    }
    let vars: Vec<&str> = dash["templating"]["list"]
        .as_array()
        .expect("templating")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert!(vars.contains(&"datasource") && vars.contains(&"database"));
    out
}

#[test]
fn the_rules_hold_the_alerts_operators_expect() {
    let rules = rules();
    let find = |metric: &str, text: &str| {
        rules
            .iter()
            .any(|(_, e)| e.contains(metric) && e.contains(text))
    };
    assert!(find("pgheal_heal_events_total", "outcome=\"refused\""));
    assert!(find(
        "pgheal_heal_events_total",
        "outcome=\"forwarded_in_transaction\""
    ));
    assert!(find("pgheal_pool_client_waiting_connections", ""));
    assert!(find(
        "pgheal_pool_size",
        "pgheal_pool_server_active_connections"
    ));
    assert!(find("pgheal_schema_watch_up", "== 0"));
    for (alert, expr) in &rules {
        assert!(!names_in(expr).is_empty(), "{alert} reads a pgheal metric");
    }
    if let Some(errors) = promtool_refusal() {
        panic!("promtool check rules refuses the rules:\n{errors}");
    }
}

/// `promtool check rules`, where promtool is installed: `Some(errors)` if it refuses them.
/// Not a test of its own: without promtool it would pass having checked nothing. It runs inside
/// [`the_rules_hold_the_alerts_operators_expect`], which always checks the rules itself.
fn promtool_refusal() -> Option<String> {
    let out = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(deploy("prometheus-rules.yml"))
        .output()
        .ok()?;
    (!out.status.success()).then(|| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_rules_and_the_dashboard_read_is_exported() {
    let pg = start_pg();
    let file: FileConfig = toml::from_str(&format!(
        "[pgheal]\npool_mode = \"transaction\"\nschema_watch = \"listen\"\n\
         [users]\n{USER} = \"{PASSWORD}\"\n"
    ))
    .expect("test TOML");
    let args = RunArgs {
        listen: Some("127.0.0.1:0".into()),
        upstream: Some(pg.url(USER, PASSWORD, DB)),
        metrics_listen: Some("127.0.0.1:0".into()),
        ..Default::default()
    };
    let p = start_proxy_with(file, &args).await;
    // Activity that makes every labelled family show: a pool with queries, a refused login,
    // a cancel request, the schema watch listening.
    let c = connect(&proxy_url(&p)).await;
    c.simple_query("SELECT 1").await.expect("query");
    let refused = try_connect(&proxy_url_as(&p, USER, "wrong", DB)).await;
    assert!(refused.is_err(), "a wrong password is refused");
    c.cancel_token()
        .cancel_query(tokio_postgres::NoTls)
        .await
        .expect("cancel request");
    let listening = eventually(Duration::from_secs(10), || async {
        scrape(&p)
            .await
            .contains("pgheal_schema_watch_up{database=\"appdb\"} 1")
    })
    .await;
    assert!(listening, "the schema watch listens");
    let live = metric_names(&scrape(&p).await);
    let exprs = rules()
        .into_iter()
        .map(|(a, e)| (format!("rule {a}"), e))
        .chain(
            panel_exprs()
                .into_iter()
                .map(|(t, e)| (format!("panel {t}"), e)),
        );
    let mut missing = Vec::new();
    for (what, expr) in exprs {
        for name in names_in(&expr) {
            if !live.contains(&name) {
                missing.push(format!("{what}: {name}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "metrics not exported: {missing:#?}\nexported: {live:#?}"
    );
}

#[test]
fn names_are_read_from_expressions() {
    let n = names_in(
        "sum by (database) (rate(pgheal_pool_queries_total{database=~\"$database\"}[5m])) > my_pgheal_x",
    );
    assert_eq!(
        n.into_iter().collect::<Vec<_>>(),
        ["pgheal_pool_queries_total"]
    );
}
