//! The operator's files in `config/`: the Grafana dashboard, the Prometheus alert
//! rules and scrape config, and the systemd units.
//!
//! Every metric the dashboard and the rules name must be one the real pool or the
//! real miner exports: the test mines with both and reads their `/metrics`.
//! `promtool` checks the Prometheus files and `systemd-analyze verify` the units
//! when those programs are installed (CI sets `QUARRY_REQUIRE_OPS_TOOLS` so they
//! cannot be skipped there).

use std::collections::{BTreeSet, HashMap};
use std::io::ErrorKind;
use std::process::{Command, Output};
use std::time::Duration;

use quarry_tests::miner::{accepted_above, poll, POOL_ARGS};
use quarry_tests::postgres::TestDatabase;
use quarry_tests::process::binary;
use quarry_tests::workspace;
use quarry_tests::{skip_unless_required, MinerProcess, PoolProcess};
use serde_json::Value;

const REQUIRE_TOOLS: &str = "QUARRY_REQUIRE_OPS_TOOLS";
const DASHBOARD: &str = "config/grafana/quarry.json";
const RULES: &str = "config/prometheus/quarry-alerts.yml";
const SCRAPE_CONFIG: &str = "config/prometheus/prometheus.yml";
const WORKER: &str = "ops.rig1";
const WAIT: Duration = Duration::from_secs(60);

/// Series Prometheus makes itself rather than scrapes.
const SYNTHETIC: &[&str] = &["up"];

/// PromQL words that look like metric names: aggregations, binary operators and
/// modifiers. (Functions are recognized by the parenthesis after them.)
const KEYWORDS: &[&str] = &[
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
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "atan2",
    "offset",
    "inf",
    "nan",
];

/// Keywords followed by a parenthesized list of label names, not an expression.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The metric names a PromQL expression reads: identifiers outside label
/// matchers, ranges, strings and grouping lists, that are neither keywords nor
/// function calls.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    // After `by`, `on`, ...: the next parenthesized list holds label names.
    let mut label_list_next = false;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(&chars, i);
        } else if c == '{' {
            i = skip_to(&chars, i, '}');
        } else if c == '[' {
            i = skip_to(&chars, i, ']');
        } else if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '$' {
            // A Grafana variable: $name, ${name} or $__rate_interval.
            i += 1;
            if chars.get(i) == Some(&'{') {
                i = skip_to(&chars, i, '}');
            } else {
                while i < chars.len() && is_name_char(chars[i]) {
                    i += 1;
                }
            }
        } else if c == '(' && label_list_next {
            label_list_next = false;
            i = skip_to(&chars, i, ')');
        } else if c.is_ascii_digit() || c == '.' {
            // A number or a duration (1e-3, 0.99, 5m, 0x1f).
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && is_name_char(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = chars[i..].iter().find(|c| !c.is_whitespace());
            if LABEL_LISTS.contains(&word.as_str()) {
                label_list_next = true;
            } else if KEYWORDS.contains(&word.as_str()) || next == Some(&'(') {
                // An aggregation, an operator or a function call.
            } else {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// The index after the quoted string starting at `start`.
fn skip_string(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() && chars[i] != quote {
        if chars[i] == '\\' && quote != '`' {
            i += 1;
        }
        i += 1;
    }
    i + 1
}

/// The index after the `close` that ends the bracket at `start`, skipping strings.
fn skip_to(chars: &[char], start: usize, close: char) -> usize {
    let mut i = start + 1;
    while i < chars.len() && chars[i] != close {
        if matches!(chars[i], '"' | '\'' | '`') {
            i = skip_string(chars, i);
        } else {
            i += 1;
        }
    }
    i + 1
}

#[test]
fn metric_names_skip_functions_labels_and_keywords() {
    let expr = r#"histogram_quantile(0.99, sum by (instance, le) (rate(a_bucket{job="x", le!="+Inf"}[5m] offset 1h)))
        > 0.5 * sum without (thread) (b_total{instance=~"$rig"}) or on (instance) c:recorded
        and ignoring (status) group_left (pool) d # e_not_a_metric
        + count(label_replace(f, "dst", "$1", "src", "(.*)")) + up{job=~"${job}"} + 1e-3"#;
    let expected = ["a_bucket", "b_total", "c:recorded", "d", "f", "up"];
    assert_eq!(metric_names(expr), expected.map(String::from).into());
    assert_eq!(
        metric_names("quarry_miner_pool{state!=\"mining\"} == 1"),
        ["quarry_miner_pool".to_owned()].into()
    );
}

/// The Grafana dashboard, parsed.
fn dashboard() -> Value {
    serde_json::from_str(&workspace::read(DASHBOARD)).expect("the dashboard is JSON")
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        all.push(panel);
        if let Some(nested) = panel["panels"].as_array() {
            all.extend(nested);
        }
    }
    all
}

/// Every PromQL expression of the dashboard: its panels' targets and the metric
/// queries of its variables (`label_values(metric, label)` reads `metric`).
fn dashboard_exprs(dashboard: &Value) -> Vec<String> {
    let mut exprs = Vec::new();
    for panel in panels(dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.extend(target["expr"].as_str().map(str::to_owned));
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .expect("variables")
    {
        if variable["type"] != "query" {
            continue;
        }
        let query = variable["query"]["query"]
            .as_str()
            .or(variable["query"].as_str())
            .expect("a query variable has a query");
        let query = match query.strip_prefix("label_values(") {
            Some(args) => {
                args.rsplit_once(',')
                    .expect("label_values(metric, label)")
                    .0
            }
            None => query,
        };
        exprs.push(query.to_owned());
    }
    exprs
}

/// The `expr:` of every rule in a Prometheus rules file, single-line or block
/// scalar (`expr: |`).
fn rule_exprs(yaml: &str) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut exprs = Vec::new();
    for (n, line) in lines.iter().enumerate() {
        let Some(rest) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let indent = line.len() - line.trim_start().len();
        let rest = rest.trim();
        if rest.starts_with('|') || rest.starts_with('>') {
            let block: Vec<&str> = lines[n + 1..]
                .iter()
                .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
                .copied()
                .collect();
            exprs.push(block.join("\n"));
        } else {
            let unquoted = rest
                .strip_prefix('"')
                .and_then(|r| r.strip_suffix('"'))
                .or_else(|| rest.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')))
                .unwrap_or(rest);
            exprs.push(unquoted.to_owned());
        }
    }
    exprs
}

#[test]
fn dashboard_has_the_panels_with_prometheus_queries() {
    let dashboard = dashboard();
    assert!(
        dashboard["schemaVersion"].as_u64() >= Some(39),
        "schemaVersion {}",
        dashboard["schemaVersion"]
    );
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("variables");
    assert!(
        variables.iter().any(|v| v["name"] == "DS_PROMETHEUS"
            && v["type"] == "datasource"
            && v["query"] == "prometheus"),
        "a Prometheus datasource variable DS_PROMETHEUS"
    );
    let datasource = serde_json::json!({"type": "prometheus", "uid": "${DS_PROMETHEUS}"});
    let mut ids = BTreeSet::new();
    let mut titles = BTreeSet::new();
    for panel in panels(&dashboard) {
        let title = panel["title"].as_str().expect("every panel has a title");
        assert!(ids.insert(panel["id"].as_u64()), "duplicate id in {title}");
        for key in ["h", "w", "x", "y"] {
            assert!(panel["gridPos"][key].is_u64(), "{title}: gridPos.{key}");
        }
        titles.insert(title);
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"], datasource, "{title}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title} has no targets");
        for target in targets {
            let expr = target["expr"].as_str().unwrap_or_default();
            assert!(!expr.trim().is_empty(), "{title}: a target without expr");
            assert_eq!(target["datasource"], datasource, "{title}: {expr}");
            assert!(target["refId"].is_string(), "{title}: {expr}");
        }
    }
    for wanted in [
        "Pool hashrate",
        "Workers by status",
        "Shares by result and reason",
        "Job fan-out latency",
        "Store commit latency",
        "Rig hashrate",
        "Rigs",
        "Blocks found",
        "Sessions",
    ] {
        assert!(titles.contains(wanted), "no panel {wanted:?} in {titles:?}");
    }
    // Quantiles read the histograms' buckets, and nothing else.
    for expr in dashboard_exprs(&dashboard) {
        if expr.contains("histogram_quantile") {
            let names = metric_names(&expr);
            assert!(names.iter().all(|n| n.ends_with("_bucket")), "{expr}");
        }
    }
}

/// The sample names of a `/metrics` document, and the type of each family.
struct Exposition {
    samples: BTreeSet<String>,
    types: HashMap<String, String>,
}

fn scrape(addr: &str) -> Exposition {
    let url = format!("http://{addr}/metrics");
    let text = ureq::get(&url)
        .timeout(Duration::from_secs(30))
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .into_string()
        .expect("metrics text");
    let mut samples = BTreeSet::new();
    let mut types = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (family, kind) = rest.split_once(' ').expect("# TYPE name type");
            types.insert(family.to_owned(), kind.to_owned());
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            samples.insert(line[..end].to_owned());
        }
    }
    assert!(!samples.is_empty(), "no samples at {url}:\n{text}");
    Exposition { samples, types }
}

#[test]
fn every_metric_in_the_dashboard_and_rules_is_exported() {
    let dir = tempfile::tempdir().unwrap();
    // A one-node cluster where PostgreSQL is at hand, so the cluster's metrics are
    // exported too; without it, the rules about them go unchecked.
    let db = TestDatabase::create("ops_metrics");
    let mut args = POOL_ARGS.to_vec();
    if let Some(db) = &db {
        args.extend(["--database", db.url.as_str()]);
    }
    let pool = PoolProcess::start(dir.path(), &args);
    // The miner as the unit runs it: everything from a config file, the API
    // enabled by its `api` key.
    let config = dir.path().join("miner.toml");
    std::fs::write(
        &config,
        format!(
            "url = [\"stratum+tcp://{}\"]\nuser = \"{WORKER}\"\nthreads = 1\napi = \"127.0.0.1:0\"\n",
            pool.tcp
        ),
    )
    .unwrap();
    let mut miner = MinerProcess::start(&["--config", config.to_str().unwrap()]);
    let miner_api = miner.api_address(WAIT);
    accepted_above(&pool, WORKER, 0, WAIT).unwrap_or_else(|| {
        miner.drain();
        panic!("no accepted share\n{}", miner.transcript())
    });
    // The health check of the unit's header: /status says the rig is mining.
    let status = poll(WAIT, || {
        let status: Value = ureq::get(&format!("http://{miner_api}/status"))
            .timeout(Duration::from_secs(10))
            .call()
            .ok()?
            .into_json()
            .ok()?;
        (status["accepted"].as_u64() >= Some(1)).then_some(status)
    })
    .expect("the miner's /status counts an accepted share");
    assert_eq!(status["connection"], "mining", "{status}");

    let pool_metrics = scrape(&pool.api.to_string());
    let miner_metrics = scrape(&miner_api);
    let exported: BTreeSet<&String> = pool_metrics
        .samples
        .iter()
        .chain(&miner_metrics.samples)
        .collect();
    let types: HashMap<&String, &String> = pool_metrics
        .types
        .iter()
        .chain(&miner_metrics.types)
        .collect();

    let dashboard = dashboard();
    let sources = [
        (DASHBOARD, dashboard_exprs(&dashboard)),
        (RULES, rule_exprs(&workspace::read(RULES))),
    ];
    let mut used = BTreeSet::new();
    for (file, exprs) in &sources {
        assert!(
            exprs.len() >= 8,
            "only {} expressions in {file}",
            exprs.len()
        );
        for expr in exprs {
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{file}: no metric in {expr}");
            for name in names {
                used.insert(name.clone());
                if SYNTHETIC.contains(&name.as_str())
                    || (db.is_none() && name.starts_with("quarry_cluster_"))
                {
                    continue;
                }
                assert!(
                    exported.contains(&name),
                    "{file} uses {name}, which neither the pool nor the miner exports \
                     (in `{expr}`); they export {exported:?}"
                );
                // A bucket is only ever a histogram's.
                if let Some(family) = name.strip_suffix("_bucket") {
                    assert_eq!(
                        types.get(&family.to_owned()).map(|t| t.as_str()),
                        Some("histogram"),
                        "{file}: {name}"
                    );
                }
            }
        }
    }
    // What the issue asks the files to show, read from both programs.
    for wanted in [
        "quarry_accepted_difficulty_total",
        "quarry_workers",
        "quarry_shares_total",
        "quarry_job_fanout_seconds_bucket",
        "quarry_store_commit_seconds_bucket",
        "quarry_blocks_found_total",
        "quarry_sessions",
        "quarry_miner_hashes_total",
        "quarry_cluster_nodes",
        "up",
    ] {
        assert!(used.contains(wanted), "nothing uses {wanted}: {used:?}");
    }
}

/// Runs a checking tool; `None` when it is not installed.
fn run_tool(program: &str, args: &[&str]) -> Option<Output> {
    match Command::new(program)
        .args(args)
        .current_dir(workspace::path(""))
        .output()
    {
        Ok(output) => Some(output),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => panic!("running {program}: {e}"),
    }
}

fn show(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn prometheus_files_pass_promtool() {
    let checks: [&[&str]; 2] = [
        &["check", "rules", RULES],
        &["check", "config", SCRAPE_CONFIG],
    ];
    for args in checks {
        let Some(output) = run_tool("promtool", args) else {
            skip_unless_required(
                REQUIRE_TOOLS,
                "promtool is not installed (Debian: apt-get install prometheus)",
            );
            return;
        };
        eprintln!("promtool {}:\n{}", args.join(" "), show(&output));
        assert!(
            output.status.success(),
            "promtool {args:?}: {}",
            show(&output)
        );
    }
    // The dashboard's queries are PromQL too: check them as recording rules, with
    // Grafana's variables replaced by values they take.
    let dir = tempfile::tempdir().unwrap();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    let exprs = dashboard_exprs(&dashboard());
    for (n, expr) in exprs.iter().enumerate() {
        let expr = expr
            .replace("$__rate_interval", "1m")
            .replace("$__range", "6h")
            .replace("$rig", ".*");
        let quoted = serde_json::to_string(&expr).unwrap();
        rules.push_str(&format!(
            "      - record: dashboard:query_{n}\n        expr: {quoted}\n"
        ));
    }
    let path = dir.path().join("dashboard-queries.yml");
    std::fs::write(&path, rules).unwrap();
    let output = run_tool("promtool", &["check", "rules", path.to_str().unwrap()]).unwrap();
    eprintln!(
        "promtool check rules (dashboard queries):\n{}",
        show(&output)
    );
    assert!(output.status.success(), "{}", show(&output));
    let expected = format!("{} rules found", exprs.len());
    assert!(show(&output).contains(&expected), "{}", show(&output));

    // The scrape config loads the rules, and every rule was read.
    let config = run_tool("promtool", &["check", "config", SCRAPE_CONFIG]).unwrap();
    assert!(
        show(&config).contains("1 rule files found"),
        "{}",
        show(&config)
    );
    let rules = run_tool("promtool", &["check", "rules", RULES]).unwrap();
    let expected = format!("{} rules found", rule_exprs(&workspace::read(RULES)).len());
    assert!(show(&rules).contains(&expected), "{}", show(&rules));
}

/// Unit tests for the alert rules, for `promtool test rules`: each alert fires
/// on the series that should fire it, and not before.
const ALERT_TESTS: &str = r#"rule_files: [quarry-alerts.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'up{job="quarry-pool", instance="pool"}'
        values: '1x10 0x10'
      - series: 'up{job="quarry-miner", instance="rig1"}'
        values: '1x30'
      - series: 'up{job="quarry-miner", instance="rig3"}'
        values: '1x5 0x25'
      - series: 'quarry_miner_pool{job="quarry-miner", instance="rig1", pool="p", state="connecting"}'
        values: '1x30'
      - series: 'quarry_miner_pool{job="quarry-miner", instance="rig2", pool="p", state="mining"}'
        values: '1x30'
      - series: 'quarry_workers{job="quarry-pool", instance="pool", status="offline"}'
        values: '0x10 2x20'
      - series: 'quarry_workers{job="quarry-pool", instance="pool", status="drop"}'
        values: '0x30'
      - series: 'quarry_store_commit_seconds_bucket{job="quarry-pool", instance="pool", le="0.1"}'
        values: '0+10x5 50x25'
      - series: 'quarry_store_commit_seconds_bucket{job="quarry-pool", instance="pool", le="0.5"}'
        values: '0+10x30'
      - series: 'quarry_store_commit_seconds_bucket{job="quarry-pool", instance="pool", le="+Inf"}'
        values: '0+10x30'
      - series: 'quarry_store_failed_commits_total{job="quarry-pool", instance="pool"}'
        values: '0x15 1x15'
    alert_rule_test:
      - eval_time: 5m
        alertname: QuarryWorkerOffline
        exp_alerts: []
      - eval_time: 20m
        alertname: QuarryWorkerOffline
        exp_alerts:
          - exp_labels: {instance: pool, severity: warning}
      - eval_time: 20m
        alertname: QuarryWorkerHashrateDrop
        exp_alerts: []
      - eval_time: 20m
        alertname: QuarryPoolDown
        exp_alerts:
          - exp_labels: {job: quarry-pool, instance: pool, severity: critical}
      - eval_time: 20m
        alertname: QuarryMinerDown
        exp_alerts:
          - exp_labels: {job: quarry-miner, instance: rig3, severity: warning}
      - eval_time: 20m
        alertname: QuarryMinerNotMining
        exp_alerts:
          - exp_labels: {instance: rig1, severity: warning}
      - eval_time: 3m
        alertname: QuarryStoreCommitSlow
        exp_alerts: []
      - eval_time: 25m
        alertname: QuarryStoreCommitSlow
        exp_alerts:
          - exp_labels: {instance: pool, severity: warning}
      - eval_time: 10m
        alertname: QuarryStoreCommitFailures
        exp_alerts: []
      - eval_time: 20m
        alertname: QuarryStoreCommitFailures
        exp_alerts:
          - exp_labels: {instance: pool, severity: critical}
  - interval: 1m
    input_series:
      # 10 difficulty a minute for an hour, then 1 a minute.
      - series: 'quarry_accepted_difficulty_total{job="quarry-pool", instance="pool"}'
        values: '0+10x60 600+1x30'
      # Shares for an hour, then none.
      - series: 'quarry_shares_total{job="quarry-pool", instance="pool", result="accepted", reason=""}'
        values: '0+10x60 600x30'
    alert_rule_test:
      - eval_time: 50m
        alertname: QuarryPoolHashrateDrop
        exp_alerts: []
      - eval_time: 85m
        alertname: QuarryPoolHashrateDrop
        exp_alerts:
          - exp_labels: {instance: pool, severity: warning}
      - eval_time: 50m
        alertname: QuarryNoSharesAccepted
        exp_alerts: []
      - eval_time: 85m
        alertname: QuarryNoSharesAccepted
        exp_alerts:
          - exp_labels: {instance: pool, severity: critical}
  - interval: 1m
    input_series:
      # Two nodes report the same cluster: one node dead from minute 10 to 30,
      # one lagging from minute 40 on.
      - series: 'quarry_cluster_nodes{job="quarry-pool", instance="a", status="dead"}'
        values: '0x9 1x20 0x30'
      - series: 'quarry_cluster_nodes{job="quarry-pool", instance="b", status="dead"}'
        values: '0x9 1x20 0x30'
      - series: 'quarry_cluster_nodes{job="quarry-pool", instance="a", status="lagging"}'
        values: '0x39 1x20'
    alert_rule_test:
      - eval_time: 8m
        alertname: QuarryClusterNodeDead
        exp_alerts: []
      - eval_time: 20m
        alertname: QuarryClusterNodeDead
        exp_alerts:
          - exp_labels: {severity: critical}
      - eval_time: 38m
        alertname: QuarryClusterNodeDead
        exp_alerts: []
      - eval_time: 41m
        alertname: QuarryClusterNodeLagging
        exp_alerts: []
      - eval_time: 50m
        alertname: QuarryClusterNodeLagging
        exp_alerts:
          - exp_labels: {severity: warning}
"#;

/// The rules file without its annotations, which `promtool test rules` would
/// otherwise compare word for word.
fn without_annotations(yaml: &str) -> String {
    let mut out = String::new();
    let mut skipping_deeper_than = None;
    for line in yaml.lines() {
        let indent = line.len() - line.trim_start().len();
        if let Some(depth) = skipping_deeper_than {
            if line.trim().is_empty() || indent > depth {
                continue;
            }
            skipping_deeper_than = None;
        }
        if line.trim() == "annotations:" {
            skipping_deeper_than = Some(indent);
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[test]
fn alert_rules_fire_when_they_should() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("quarry-alerts.yml"),
        without_annotations(&workspace::read(RULES)),
    )
    .unwrap();
    let tests = dir.path().join("quarry-alerts.test.yml");
    std::fs::write(&tests, ALERT_TESTS).unwrap();
    let Some(output) = run_tool("promtool", &["test", "rules", tests.to_str().unwrap()]) else {
        skip_unless_required(
            REQUIRE_TOOLS,
            "promtool is not installed (Debian: apt-get install prometheus)",
        );
        return;
    };
    eprintln!("promtool test rules:\n{}", show(&output));
    assert!(output.status.success(), "{}", show(&output));
    // Every alert has a test.
    for line in workspace::read(RULES).lines() {
        if let Some(alert) = line.trim().strip_prefix("- alert:") {
            let alert = alert.trim();
            assert!(
                ALERT_TESTS.contains(&format!("alertname: {alert}\n")),
                "no promtool test for {alert}"
            );
        }
    }
}

/// The `Key=value` lines of a unit, in order.
fn directives(unit: &str) -> Vec<(String, String)> {
    unit.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

#[test]
fn miner_unit_is_hardened_like_the_pools() {
    let miner = directives(&workspace::read("config/quarry-miner.service"));
    let pool = directives(&workspace::read("config/quarry-pool.service"));
    let has = |unit: &[(String, String)], key: &str, value: &str| {
        unit.iter().any(|(k, v)| k == key && v == value)
    };
    for (key, value) in [
        (
            "ExecStart",
            "/usr/local/bin/quarry-miner --config /etc/quarry/miner.toml",
        ),
        ("Restart", "on-failure"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", ""),
        ("SystemCallFilter", "@system-service"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("MemoryDenyWriteExecute", "yes"),
    ] {
        assert!(
            has(&miner, key, value),
            "the miner's unit lacks {key}={value}"
        );
    }
    assert!(miner
        .iter()
        .any(|(k, v)| k == "RestartSec" && !v.is_empty()));
    // The same unprivileged user as the pool's unit.
    for key in ["User", "Group"] {
        let of = |unit: &[(String, String)]| {
            unit.iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("no {key}="))
        };
        assert_eq!(of(&miner), of(&pool), "{key}");
        assert_ne!(of(&miner), "root");
    }
    // The option the unit passes is one the miner has.
    let help = Command::new(binary("quarry-miner", "quarry-miner"))
        .arg("--help")
        .output()
        .expect("quarry-miner --help");
    assert!(String::from_utf8_lossy(&help.stdout).contains("--config <FILE>"));
}

#[test]
fn systemd_units_pass_verify() {
    if run_tool("systemd-analyze", &["--version"]).is_none() {
        skip_unless_required(
            REQUIRE_TOOLS,
            "systemd-analyze is not installed (Debian: apt-get install systemd)",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (package, name) in [
        ("quarry-miner", "quarry-miner"),
        ("quarry-pool", "quarry-pool"),
    ] {
        // `verify` fails on an ExecStart binary that does not exist: point the unit
        // at the one just built instead of /usr/local/bin.
        let built = binary(package, name);
        let unit_name = format!("{name}.service");
        let installed = format!("/usr/local/bin/{name}");
        let unit = workspace::read(&format!("config/{unit_name}"));
        assert!(
            unit.contains(&format!("ExecStart={installed} ")),
            "{unit_name}"
        );
        let path = dir.path().join(&unit_name);
        std::fs::write(&path, unit.replace(&installed, built.to_str().unwrap())).unwrap();
        let output = run_tool("systemd-analyze", &["verify", path.to_str().unwrap()])
            .expect("systemd-analyze");
        eprintln!("systemd-analyze verify {unit_name}:\n{}", show(&output));
        assert!(output.status.success(), "{unit_name}: {}", show(&output));
        // Unknown keys and bad values are only warnings: none may name the unit.
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !stderr.lines().any(|l| l.contains(&unit_name)),
            "{unit_name}: {stderr}"
        );
    }
}
