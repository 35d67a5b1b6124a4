//! The Grafana dashboard and the Prometheus alerts name only metrics the relay exports: the
//! constants of `polyai_relay::telemetry::names`. A renamed metric fails here, not on a dashboard
//! that quietly goes blank.

use std::collections::BTreeSet;

use polyai_relay::telemetry::names;

/// Read at compile time, so editing any of them rebuilds this test.
const TELEMETRY: &str = include_str!("../../crates/service/src/telemetry.rs");
const DASHBOARD: &str = include_str!("../../deploy/grafana/polyai-relay.json");
const ALERTS: &str = include_str!("../../deploy/prometheus/alerts.yaml");

/// The series a histogram adds to its name.
const HISTOGRAM_SUFFIXES: [&str; 3] = ["_bucket", "_sum", "_count"];

/// Words of PromQL that look like metric names: keywords, aggregations and literals.
const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "inf",
    "nan",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

/// Keywords followed by a parenthesised list of label names, not expressions.
const LABEL_LISTS: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right"];

/// The value of every `pub const` in `mod names` of crates/service/src/telemetry.rs.
fn exported() -> BTreeSet<String> {
    let start = TELEMETRY.find("pub mod names {").expect("crates/service/src/telemetry.rs has `pub mod names`");
    let module = &TELEMETRY[start..];
    let module = &module[..module.find("\n}").expect("`mod names` ends")];
    let values: BTreeSet<String> = module
        .split("pub const ")
        .skip(1)
        .filter_map(|item| item.split(';').next()?.split('"').nth(1).map(str::to_owned))
        .collect();
    // The source read is the module the crate compiles.
    for name in [names::REQUESTS, names::ACK_SECONDS, names::READY, names::WORKER_PAUSED] {
        assert!(values.contains(name), "`{name}` not read from crates/service/src/telemetry.rs: {values:?}");
    }
    values
}

/// Index just past the quoted string that starts at `i`.
fn skip_quoted(chars: &[char], mut i: usize) -> usize {
    let quote = chars[i];
    i += 1;
    while i < chars.len() && chars[i] != quote {
        i += if chars[i] == '\\' && quote != '`' { 2 } else { 1 };
    }
    i + 1
}

/// Index just past the `close` that ends the group opened at `i`, skipping quoted strings.
fn skip_group(chars: &[char], mut i: usize, close: char) -> usize {
    i += 1;
    while i < chars.len() && chars[i] != close {
        i = if matches!(chars[i], '"' | '\'' | '`') { skip_quoted(chars, i) } else { i + 1 };
    }
    i + 1
}

fn next_non_space(chars: &[char], i: usize) -> Option<char> {
    chars[i..].iter().copied().find(|c| !c.is_whitespace())
}

/// Metric names in a PromQL expression (Grafana's `$variables` allowed): identifiers outside
/// label matchers, ranges and strings that are not functions, keywords or label lists.
fn metric_names(expr: &str) -> Vec<String> {
    let chars: Vec<char> = expr.chars().collect();
    let is_name_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut found = Vec::new();
    let mut label_list_next = false;
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' | '`' => i = skip_quoted(&chars, i),
            '{' => i = skip_group(&chars, i, '}'),
            '[' => i = skip_group(&chars, i, ']'),
            '(' if label_list_next => {
                i = skip_group(&chars, i, ')');
                label_list_next = false;
            }
            '$' if chars.get(i + 1) == Some(&'{') => i = skip_group(&chars, i + 1, '}'),
            '$' => {
                i += 1;
                while i < chars.len() && is_name_char(chars[i]) {
                    i += 1;
                }
            }
            // Numbers and durations: 0.99, 1e3, 5m, 1h30m.
            c if c.is_ascii_digit() || c == '.' => {
                while i < chars.len() && (is_name_char(chars[i]) || chars[i] == '.') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len() && is_name_char(chars[i]) {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let next = next_non_space(&chars, i);
                if LABEL_LISTS.contains(&word.as_str()) {
                    label_list_next = next == Some('(');
                } else if !KEYWORDS.contains(&word.to_ascii_lowercase().as_str()) && next != Some('(') {
                    found.push(word);
                }
            }
            _ => i += 1,
        }
    }
    found
}

/// The names in `exprs` that the relay does not export (a histogram's series count as its name).
fn unknown(exprs: &[String], exported: &BTreeSet<String>) -> BTreeSet<String> {
    let known = |name: &str| {
        exported.contains(name)
            || HISTOGRAM_SUFFIXES.iter().any(|s| name.strip_suffix(s).is_some_and(|base| exported.contains(base)))
    };
    exprs.iter().flat_map(|e| metric_names(e)).filter(|name| !known(name)).collect()
}

/// The PromQL expressions of the dashboard's panels.
fn panel_exprs() -> Vec<String> {
    fn walk(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("expr", serde_json::Value::String(expr)) => out.push(expr.clone()),
                        _ => walk(value, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|item| walk(item, out)),
            _ => {}
        }
    }
    let dashboard: serde_json::Value = serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    walk(&dashboard["panels"], &mut exprs);
    exprs
}

/// Every PromQL expression of the dashboard: panel targets, and the template variables' queries.
fn dashboard_exprs() -> Vec<String> {
    let dashboard: serde_json::Value = serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
    let mut exprs = panel_exprs();
    for variable in dashboard["templating"]["list"].as_array().into_iter().flatten() {
        let query = variable["query"].get("query").unwrap_or(&variable["query"]);
        // `label_values(selector, label)`: the selector is PromQL, the label is not.
        if let Some(args) = query.as_str().and_then(|q| q.trim().strip_prefix("label_values(")) {
            if let Some((selector, _label)) = args.rsplit_once(',') {
                exprs.push(selector.to_owned());
            }
        }
    }
    exprs
}

/// Every `expr:` of the alert rules, inline or as a YAML block scalar (`|`, `>`).
fn alert_exprs() -> Vec<String> {
    exprs_in(ALERTS)
}

/// The `expr:` of each alert rule that fires at once, with no `for:` to wait through: those
/// that must see the first event they are for.
fn immediate_alert_exprs() -> Vec<String> {
    let rules = ALERTS.split("- alert:").skip(1);
    rules.filter(|rule| !rule.lines().any(|l| l.trim_start().starts_with("for:"))).flat_map(exprs_in).collect()
}

/// Every `expr:` in `yaml`, inline or as a YAML block scalar (`|`, `>`).
fn exprs_in(yaml: &str) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut exprs = Vec::new();
    for (n, line) in lines.iter().enumerate() {
        let Some(value) = line.trim_start().trim_start_matches("- ").strip_prefix("expr:") else { continue };
        let value = value.trim();
        if value.starts_with('|') || value.starts_with('>') {
            let indent = line.len() - line.trim_start().len();
            let block = lines[n + 1..]
                .iter()
                .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
                .copied()
                .collect::<Vec<_>>()
                .join("\n");
            exprs.push(block);
        } else {
            exprs.push(value.trim_matches(|c| c == '"' || c == '\'').to_owned());
        }
    }
    exprs
}

#[test]
fn the_name_check_finds_metric_names_and_refuses_unknown_ones() {
    let expr = r#"histogram_quantile(0.99, sum by (le, job) (rate(relay_nope_bucket{job=~"$job",le="1"}[$__rate_interval])))
        / on (instance) group_left max without (pod) (relay_ready offset 5m) > bool 0.5 and up{x="a{b"}"#;
    assert_eq!(metric_names(expr), ["relay_nope_bucket", "relay_ready", "up"]);
    let exported = exported();
    let exprs = [expr.to_owned(), "relay_ack_duration_seconds_count / relay_ack_duration_seconds_sum".to_owned()];
    assert_eq!(unknown(&exprs, &exported), BTreeSet::from(["relay_nope_bucket".to_owned(), "up".to_owned()]));
    assert!(exported.len() >= 14, "{exported:?}");
}

#[test]
fn every_metric_on_the_dashboard_is_one_the_relay_exports() {
    let exprs = dashboard_exprs();
    assert!(exprs.len() >= 20, "only {} expressions found on the dashboard", exprs.len());
    let unknown = unknown(&exprs, &exported());
    assert!(unknown.is_empty(), "the dashboard queries metrics the relay does not export: {unknown:?}");
}

#[test]
fn every_metric_in_the_alerts_is_one_the_relay_exports() {
    let exprs = alert_exprs();
    let rules = ALERTS.lines().filter(|l| l.trim_start().starts_with("- alert:")).count();
    assert!(rules >= 5 && exprs.len() == rules, "{} expressions for {rules} alerts", exprs.len());
    assert!(exprs.iter().all(|e| !metric_names(e).is_empty()), "an alert names no metric: {exprs:#?}");
    let unknown = unknown(&exprs, &exported());
    assert!(unknown.is_empty(), "the alerts use metrics the relay does not export: {unknown:?}");
}

#[test]
fn the_dashboard_shows_every_metric_the_relay_exports() {
    let shown: BTreeSet<String> = dashboard_exprs()
        .iter()
        .flat_map(|e| metric_names(e))
        .map(|name| HISTOGRAM_SUFFIXES.iter().find_map(|s| name.strip_suffix(s)).unwrap_or(&name).to_owned())
        .collect();
    let missing: Vec<_> = exported().into_iter().filter(|name| !shown.contains(name)).collect();
    assert!(missing.is_empty(), "add these to deploy/grafana/polyai-relay.json: {missing:?}");
}

/// The receiver's metrics that carry a `project` label (design §12).
const PROJECT_LABELLED: [&str; 4] = [names::REQUESTS, names::VERIFY_FAILURES, names::VERIFIED, names::IGNORED];

#[test]
fn the_dashboard_picks_projects_and_every_receiver_panel_follows_the_pick() {
    let dashboard: serde_json::Value = serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
    let variables = dashboard["templating"]["list"].as_array().expect("template variables");
    let project = variables.iter().find(|v| v["name"] == "project").expect("a `project` variable");
    let query = project["query"]["query"].as_str().unwrap_or_default();
    assert!(query.starts_with("label_values(") && query.ends_with(", project)"), "{query}");
    assert!(PROJECT_LABELLED.iter().any(|name| query.contains(name)), "{query} lists no project-labelled metric");
    assert_eq!(project["includeAll"], true, "`All` must be a choice");

    let receiver: Vec<String> = panel_exprs()
        .into_iter()
        .filter(|expr| metric_names(expr).iter().any(|name| PROJECT_LABELLED.contains(&name.as_str())))
        .collect();
    assert!(receiver.len() >= 5, "{receiver:#?}");
    for expr in receiver {
        assert!(expr.contains(r#"project=~"$project""#), "a receiver panel ignores the project pick: {expr}");
    }
}

/// The series an alert watches the `increase()` of, one per label value its selector names:
/// `name` alone, or `name` with `label="value"` for each `label="value"` and each alternative of
/// a `label=~"a|b"`.
fn increase_selectors(expr: &str) -> Vec<(String, Vec<String>)> {
    let mut selectors = Vec::new();
    for after in expr.split("increase(").skip(1) {
        let end = after.find('[').expect("increase() takes a range");
        let selector = &after[..end];
        let (name, matchers) = selector.split_once('{').unwrap_or((selector, ""));
        let mut series = vec![Vec::new()];
        for matcher in matchers.trim_end_matches('}').split(',').filter(|m| !m.trim().is_empty()) {
            let (label, values) = matcher.split_once('=').expect("a label matcher");
            let values = values.trim_start_matches('~').trim_matches('"');
            series = series
                .into_iter()
                .flat_map(|labels: Vec<String>| {
                    values
                        .split('|')
                        .map(move |value| [labels.clone(), vec![format!(r#"{}="{value}""#, label.trim())]].concat())
                })
                .collect();
        }
        selectors.extend(series.into_iter().map(|labels| (name.trim().to_owned(), labels)));
    }
    selectors
}

#[test]
fn the_selector_check_reads_names_and_each_label_value() {
    let expr = r#"sum(increase(relay_a_total[1h])) > 0 or sum(increase(relay_b_total{status=~"401|403",x="y"}[5m]))"#;
    let series: Vec<(String, Vec<String>)> = vec![
        ("relay_a_total".into(), vec![]),
        ("relay_b_total".into(), vec![r#"status="401""#.into(), r#"x="y""#.into()]),
        ("relay_b_total".into(), vec![r#"status="403""#.into(), r#"x="y""#.into()]),
    ];
    assert_eq!(increase_selectors(expr), series);
}

/// Every counter an alert that fires at once watches the increase of exists at 0 in a relay
/// just started, with each label value the alert names: `increase()` sees a series only from its second sample, so
/// one created at 1 by the very event the alert is for (a queue deleted, a misdelivered return
/// lost, the calls reconciled in the first round after a restart) would never fire it.
#[tokio::test]
async fn every_counter_an_alert_watches_exists_from_the_start() {
    use std::time::Duration;

    use crate::{
        backend::{Backend, TempDir, TestQueue},
        fake_polyai::FakePolyai,
        helpers::http,
        process::{as_refs, RelayProcess},
    };

    let selectors: Vec<(String, Vec<String>)> =
        immediate_alert_exprs().iter().flat_map(|e| increase_selectors(e)).collect();
    assert!(selectors.len() >= 8, "{selectors:?}");
    let queue = TestQueue::new(Backend::Amqp, polyai_relay::config::EventTypes::All).await;
    let polyai = FakePolyai::start().await;
    let spool = TempDir::new();
    let spool_dir = spool.0.join("spool").display().to_string();
    let extra = [("RELAY_SPOOL_DIR", spool_dir.as_str()), ("RELAY_RECONCILE_EVERY", "1h")];
    let env = queue.relay_env(&polyai.base_url, &extra);
    let mut relay = RelayProcess::spawn(&["run"], &as_refs(&env)).await;
    relay.wait_ready().await;
    let metrics = http().get(relay.admin_url("/metrics")).send().await.unwrap().text().await.unwrap();
    // Nothing has happened yet, so a series there now was registered, not counted; its value
    // is not looked at (the first reconciliation round may already have run).
    let series = |name: &str, labels: &[String]| {
        metrics
            .lines()
            .filter(|line| {
                line.strip_prefix(name).is_some_and(|rest| rest.starts_with(['{', ' ']))
                    && labels.iter().all(|label| line.contains(label.as_str()))
            })
            .count()
    };
    for (name, labels) in &selectors {
        assert!(series(name, labels) > 0, "no {name} {labels:?} in a fresh relay's metrics:\n{metrics}");
    }
    // The alerts group these by a label they do not name: every value must be there.
    assert_eq!(series("relay_dead_letters_total", &[]), 9, "8 reasons, and the unknown project's:\n{metrics}");
    let TestQueue::Amqp(broker) = &queue else { unreachable!("made on RabbitMQ") };
    let topology = &broker.topology;
    let conversations = topology.conversations_queue.clone().expect("tests keep the downstream queue");
    let log = topology.conversations_log.clone().expect("tests keep the log");
    for watched in [&topology.enrich_queue, &topology.dead_queue, &conversations, &log] {
        let label = format!(r#"queue="{watched}""#);
        assert_eq!(series("relay_queues_declared_again_total", &[label]), 1, "{watched}:\n{metrics}");
    }
    relay.terminate();
    assert_eq!(relay.wait_for_exit(Duration::from_secs(10)).await, Some(0), "{}", relay.logs());
}
