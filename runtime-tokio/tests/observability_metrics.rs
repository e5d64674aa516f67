//! The shipped observability assets against running processes: every metric the Grafana
//! dashboards and the Prometheus alert rules in `deploy/observability/` reference is exported
//! by a fresh `hypergate up` (its gateway over plain HTTP, its escrow over mutual TLS); the
//! rule file has the structure Prometheus loads (and passes `promtool check rules` where
//! promtool is installed); every alert has a runbook entry; and `--log-format json` logs one
//! JSON object per line, with relay fields and without any secret of the data directory.
// Test helpers: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hypergate_tokio::escrow::client::ClientTls;
use hypergate_tokio::escrow::{EscrowClient, EscrowClientConfig};
use serde::Deserialize;
use serde_json::Value;

/// Series Prometheus writes itself for every target.
const SYNTHETIC: [&str; 1] = ["up"];
/// How long the relay, its worker link and its mirror may take to show up in a scrape.
const SETTLE: Duration = Duration::from_secs(60);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn assets() -> PathBuf {
    repo().join("deploy/observability")
}

// ---- PromQL and the assets ----

/// The metric names a PromQL expression selects: identifiers that are not functions,
/// aggregations, keywords, grouping labels, label matchers, strings, ranges or numbers.
fn metric_names(expr: &str) -> BTreeSet<String> {
    const KEYWORDS: [&str; 7] = ["and", "or", "unless", "bool", "offset", "inf", "nan"];
    const GROUPING: [&str; 6] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let skip_to = |from: usize, close: char| {
        let mut j = from;
        while j < chars.len() && chars[j] != close {
            j += if chars[j] == '\\' { 2 } else { 1 };
        }
        j + 1
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_to(i + 1, c);
        } else if c == '{' {
            i = skip_to(i + 1, '}');
        } else if c == '[' {
            i = skip_to(i + 1, ']');
        } else if c.is_ascii_digit() || c == '$' {
            // A number, a duration (`5m`) or a dashboard variable.
            i += 1;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "_.".contains(chars[i])) {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "_:".contains(chars[i])) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut next = i;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            // A call, or an aggregation with its grouping first (`sum by (le) (…)`).
            let rest: String = chars[next..].iter().take(8).collect();
            let grouped_first = ["by", "without"].iter().any(|kw| {
                rest.strip_prefix(kw)
                    .is_some_and(|after| after.starts_with([' ', '(']))
            });
            let called = chars.get(next) == Some(&'(') || grouped_first;
            if GROUPING.contains(&word.as_str()) {
                if called {
                    i = skip_to(next + 1, ')');
                }
            } else if !called && !KEYWORDS.contains(&word.to_lowercase().as_str()) {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// A Grafana variable query `label_values(<selector>, <label>)`, or a plain PromQL query.
fn variable_metric_names(query: &str) -> BTreeSet<String> {
    match query
        .trim()
        .strip_prefix("label_values(")
        .and_then(|rest| rest.strip_suffix(')'))
        .and_then(|args| args.rsplit_once(','))
    {
        Some((selector, _label)) => metric_names(selector),
        None => metric_names(query),
    }
}

fn read_dashboard(name: &str) -> Value {
    let path = assets().join("grafana").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?} is not JSON: {e}"))
}

const DASHBOARDS: [&str; 2] = ["gateway.json", "escrow-workers.json"];

/// Every `expr` of every panel target, and every variable query.
fn dashboard_queries(board: &Value) -> Vec<String> {
    fn walk(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, value) in map {
                    if let ("expr", Value::String(expr)) = (key.as_str(), value) {
                        out.push(expr.clone());
                    }
                    walk(value, out);
                }
            }
            Value::Array(items) => items.iter().for_each(|item| walk(item, out)),
            _ => {}
        }
    }
    let mut queries = Vec::new();
    walk(&board["panels"], &mut queries);
    for variable in board["templating"]["list"].as_array().into_iter().flatten() {
        if let Some(query) = variable["query"]["query"].as_str() {
            queries.push(query.to_owned());
        }
    }
    queries
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    groups: Vec<RuleGroup>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleGroup {
    name: String,
    rules: Vec<AlertRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertRule {
    alert: String,
    expr: String,
    #[serde(rename = "for")]
    for_: Option<String>,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

fn alert_rules_path() -> PathBuf {
    assets().join("prometheus/alerts.yaml")
}

fn alert_rules() -> RuleFile {
    let path = alert_rules_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

/// Every metric name the dashboards and the alert rules select, with where it is used.
fn referenced_metrics() -> BTreeMap<String, String> {
    let mut names = BTreeMap::new();
    for name in DASHBOARDS {
        for query in dashboard_queries(&read_dashboard(name)) {
            for metric in variable_metric_names(&query) {
                names
                    .entry(metric)
                    .or_insert_with(|| format!("{name}: {query}"));
            }
        }
    }
    for rule in alert_rules().groups.iter().flat_map(|g| &g.rules) {
        for metric in metric_names(&rule.expr) {
            names
                .entry(metric)
                .or_insert_with(|| format!("alert {}: {}", rule.alert, rule.expr));
        }
    }
    names
}

/// The sample names an OpenMetrics exposition can have, from its `# TYPE` lines (a family
/// without samples still has one) and its sample lines.
fn exported_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(declared) = line.strip_prefix("# TYPE ") {
            let mut parts = declared.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total", "_created"],
                "histogram" => &["_bucket", "_sum", "_count", "_created"],
                "summary" => &["_sum", "_count", "_created"],
                "info" => &["_info"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|suffix| format!("{name}{suffix}")));
        } else if !line.starts_with('#') {
            if let Some(name) = line.split(['{', ' ']).next().filter(|n| !n.is_empty()) {
                names.insert(name.to_owned());
            }
        }
    }
    names
}

// ---- `hypergate up` as a real process ----

/// A running `hypergate up`, killed on drop.
struct Up {
    child: Child,
    data: tempfile::TempDir,
    announced: Value,
}

impl Up {
    fn start(extra: &[&str], env: &[(&str, &str)], stderr: Stdio) -> Up {
        let data = tempfile::tempdir().unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_hypergate"));
        command
            .args(["up", "--json", "--data-dir"])
            .arg(data.path().join("d"))
            .args(["--listen", "127.0.0.1:0", "--peer-listen", "127.0.0.1:0"])
            .args(extra)
            .env_remove("RUST_LOG")
            .env_remove("HYPERGATE_LOG_FORMAT")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        let mut child = command.spawn().expect("the hypergate binary starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (lines, announced) = mpsc::channel();
        // Reads stdout to its end, so the process never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(value) = serde_json::from_str::<Value>(&line)
                    && value.get("gateway").is_some()
                {
                    let _ = lines.send(value);
                }
            }
        });
        let mut up = Up {
            child,
            data,
            announced: Value::Null,
        };
        up.announced = announced
            .recv_timeout(SETTLE)
            .unwrap_or_else(|_| panic!("`hypergate up` printed no JSON line in {SETTLE:?}"));
        up
    }

    fn dir(&self) -> PathBuf {
        self.data.path().join("d")
    }

    /// `host:port` of the gateway's HTTP listener.
    fn gateway(&self) -> String {
        let url = self.announced["gateway"].as_str().unwrap();
        url.strip_prefix("http://").unwrap().to_owned()
    }

    fn scrape_gateway(&self) -> String {
        let mut stream = std::net::TcpStream::connect(self.gateway()).unwrap();
        stream.set_read_timeout(Some(SETTLE)).unwrap();
        write!(
            stream,
            "GET /metrics HTTP/1.0\r\nHost: {}\r\n\r\n",
            self.gateway()
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
            "{head}"
        );
        assert!(
            head.to_lowercase()
                .contains("content-type: application/openmetrics-text"),
            "{head}"
        );
        body.to_owned()
    }

    /// The escrow's root `/metrics`, over mutual TLS with the operator certificate `up` minted.
    async fn scrape_escrow(&self) -> String {
        let escrow = self.announced["escrow"].as_str().unwrap();
        let root = escrow.strip_suffix("/api/escrow").unwrap();
        let pki = self.dir().join("pki");
        let mut tls = ClientTls::from_pem_files(
            &pki.join("ca.pem"),
            Some((&pki.join("operator.pem"), &pki.join("operator-key.pem"))),
        )
        .unwrap();
        tls.server_name = Some("localhost".into());
        let client = EscrowClient::new(
            EscrowClientConfig {
                base_url: root.to_owned(),
                client_id: "operator".into(),
                // /metrics needs the client certificate, not a request signature.
                secret: zeroize::Zeroizing::new(b"unused".to_vec()),
                tls: Some(tls),
                request_timeout: Duration::from_secs(10),
            },
            hypergate_tokio::tokio_spawner(),
        )
        .unwrap();
        let response = client
            .send_raw(hyper::Method::GET, "/metrics", &[], bytes::Bytes::new())
            .await
            .unwrap();
        assert_eq!(response.status, 200);
        assert!(
            response
                .content_type
                .as_deref()
                .is_some_and(|t| t.starts_with("application/openmetrics-text")),
            "{:?}",
            response.content_type
        );
        String::from_utf8(response.body.to_vec()).unwrap()
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- tests ----

#[test]
fn promql_metric_names_are_found_without_functions_labels_keywords_or_variables() {
    let names = metric_names(
        r#"histogram_quantile(0.95, sum by (le, route) (rate(escrow_http_request_duration_seconds_bucket{instance=~"$escrow", route!="a_b"}[5m] offset 1h)))
           and on (relay) (gateway_escrow_lease_time_to_expiry_seconds < 60) or vector(0) unless bool up"#,
    );
    let expected: BTreeSet<String> = [
        "escrow_http_request_duration_seconds_bucket",
        "gateway_escrow_lease_time_to_expiry_seconds",
        "up",
    ]
    .map(String::from)
    .into();
    assert_eq!(names, expected);
    assert_eq!(
        variable_metric_names("label_values(gateway_pending_writes{relay!=\"\"}, relay)"),
        ["gateway_pending_writes".to_owned()].into()
    );
    // A typo is a name too, so the scrape check catches it.
    assert!(
        metric_names("rate(gatway_relay_fallback_writes_total[5m])")
            .contains("gatway_relay_fallback_writes_total")
    );
}

#[test]
fn alert_rules_have_the_structure_prometheus_loads_and_a_runbook_entry_each() {
    let file = alert_rules();
    let runbook = std::fs::read_to_string(repo().join("docs/operations.md")).unwrap();
    let mut seen = BTreeSet::new();
    assert!(!file.groups.is_empty());
    for group in &file.groups {
        assert!(
            !group.name.is_empty() && !group.rules.is_empty(),
            "{group:?}"
        );
        for rule in &group.rules {
            assert!(
                seen.insert(rule.alert.clone()),
                "duplicate alert {}",
                rule.alert
            );
            assert!(
                rule.alert.chars().all(|c| c.is_ascii_alphanumeric())
                    && rule.alert.starts_with(|c: char| c.is_ascii_uppercase()),
                "alert names are CamelCase: {}",
                rule.alert
            );
            assert!(
                !metric_names(&rule.expr).is_empty(),
                "{}: selects nothing",
                rule.alert
            );
            if let Some(pending) = &rule.for_ {
                let (number, unit) = pending.split_at(pending.len() - 1);
                assert!(
                    number.parse::<u32>().is_ok() && "smh".contains(unit),
                    "{}: `for: {pending}` is not a duration",
                    rule.alert
                );
            }
            let severity = rule.labels.get("severity").map(String::as_str);
            assert!(
                matches!(severity, Some("info" | "warning" | "critical")),
                "{}: severity {severity:?}",
                rule.alert
            );
            for annotation in ["summary", "description"] {
                assert!(
                    rule.annotations
                        .get(annotation)
                        .is_some_and(|a| !a.is_empty()),
                    "{}: no {annotation}",
                    rule.alert
                );
            }
            assert!(
                runbook.contains(&format!("`{}`", rule.alert)),
                "docs/operations.md does not explain alert {}",
                rule.alert
            );
        }
    }
    // What the rules must cover (issue 9): each by the metric that shows it.
    let selected: BTreeSet<String> = file
        .groups
        .iter()
        .flat_map(|g| &g.rules)
        .flat_map(|r| metric_names(&r.expr))
        .collect();
    for metric in [
        "gateway_relay_fallback_writes_total",
        "gateway_escrow_lease_time_to_expiry_seconds",
        "escrow_policy_rejections_total",
        "gateway_blind_peer_mirror_lag_ms",
        "gateway_pending_writes_oldest_seconds",
        "gateway_pending_write_push_total",
        "escrow_audit_failures_total",
    ] {
        assert!(selected.contains(metric), "no alert on {metric}");
    }
}

#[test]
fn alert_rules_pass_promtool_where_it_is_installed() {
    let Ok(version) = Command::new("promtool").arg("--version").output() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI needs promtool (scripts/test unpacks it from Debian's prometheus package)"
        );
        eprintln!(
            "promtool is not installed (Debian: apt-get install prometheus): structure checked by the parser test only"
        );
        return;
    };
    assert!(version.status.success());
    let output = Command::new("promtool")
        .args(["check", "rules"])
        .arg(alert_rules_path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "promtool check rules failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let config = Command::new("promtool")
        .args(["check", "config", "--syntax-only"])
        .arg(assets().join("prometheus/prometheus.yml"))
        .output()
        .unwrap();
    assert!(
        config.status.success(),
        "promtool check config failed:\n{}{}",
        String::from_utf8_lossy(&config.stdout),
        String::from_utf8_lossy(&config.stderr)
    );
}

#[test]
fn dashboards_take_their_prometheus_datasource_as_an_input_on_every_query() {
    for name in DASHBOARDS {
        let board = read_dashboard(name);
        let inputs = board["__inputs"].as_array().unwrap();
        assert!(
            inputs
                .iter()
                .any(|i| i["name"] == "DS_PROMETHEUS" && i["pluginId"] == "prometheus"),
            "{name}: no DS_PROMETHEUS input"
        );
        assert!(
            board["uid"].as_str().is_some_and(|u| !u.is_empty()),
            "{name}: uid"
        );
        let mut ids = BTreeSet::new();
        for panel in board["panels"].as_array().unwrap() {
            assert!(
                ids.insert(panel["id"].as_u64().unwrap()),
                "{name}: duplicate panel id"
            );
            if panel["type"] == "row" {
                continue;
            }
            assert_eq!(
                panel["datasource"]["uid"], "${DS_PROMETHEUS}",
                "{name}: {panel}"
            );
            let targets = panel["targets"].as_array().unwrap();
            assert!(
                !targets.is_empty(),
                "{name}: {} has no query",
                panel["title"]
            );
            for target in targets {
                assert_eq!(target["datasource"]["uid"], "${DS_PROMETHEUS}");
                assert!(!metric_names(target["expr"].as_str().unwrap()).is_empty());
            }
        }
        assert!(ids.len() > 5, "{name}: {} panels", ids.len());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboards_and_alerts_reference_is_exported_by_a_fresh_up() {
    let referenced = referenced_metrics();
    assert!(referenced.len() > 20, "{referenced:?}");
    let up = Up::start(&[], &[], Stdio::null());
    // Relay-labelled families fill in once the worker has linked and its cores are mirrored.
    let deadline = Instant::now() + SETTLE;
    loop {
        let mut exported = exported_names(&up.scrape_gateway());
        exported.extend(exported_names(&up.scrape_escrow().await));
        exported.extend(SYNTHETIC.map(String::from));
        let missing: Vec<String> = referenced
            .iter()
            .filter(|(name, _)| !exported.contains(*name))
            .map(|(name, used)| format!("{name} (in {used})"))
            .collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "referenced but not exported after {SETTLE:?}:\n{}\nexported: {exported:?}",
            missing.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Secret values under `up`'s data directory: the escrow's shared secret, the private keys of
/// the PKI (their base64 lines), and every secret key of the identity, keypair and relay-key
/// files.
fn secrets_of(dir: &Path) -> Vec<String> {
    let mut secrets = vec![
        std::fs::read_to_string(dir.join("escrow-secret"))
            .unwrap()
            .trim()
            .to_owned(),
    ];
    for entry in std::fs::read_dir(dir.join("pki")).unwrap() {
        let path = entry.unwrap().path();
        if path.to_string_lossy().ends_with("-key.pem") {
            let pem = std::fs::read_to_string(&path).unwrap();
            secrets.extend(
                pem.lines()
                    .filter(|l| !l.starts_with("-----") && l.len() >= 16)
                    .map(str::to_owned),
            );
        }
    }
    for file in [
        "gateway/identity.json",
        "worker/identity.json",
        "escrow/keypair.json",
    ] {
        let json: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join(file)).unwrap()).unwrap();
        secrets.push(json["secretKey"].as_str().unwrap().to_owned());
    }
    for relay in std::fs::read_dir(dir.join("worker/relays")).unwrap() {
        let keys = relay.unwrap().path().join("keys/relay-keys.json");
        let json: Value = serde_json::from_str(&std::fs::read_to_string(keys).unwrap()).unwrap();
        secrets.push(json["owner"].as_str().unwrap().to_owned());
        secrets.extend(
            json["writers"]
                .as_object()
                .unwrap()
                .values()
                .map(|secret| secret.as_str().unwrap().to_owned()),
        );
    }
    assert!(
        secrets.iter().all(|s| s.len() >= 16),
        "{} secrets",
        secrets.len()
    );
    secrets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line_with_relay_fields_and_no_secrets() {
    let log_dir = tempfile::tempdir().unwrap();
    let log_path = log_dir.path().join("stderr.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let up = Up::start(
        &["--log-format", "json"],
        &[("RUST_LOG", "debug")],
        Stdio::from(log),
    );
    let relay_short = up.announced["relayKey"].as_str().unwrap()[..8].to_owned();
    // Wait until the worker's deposit and link are logged.
    let deadline = Instant::now() + SETTLE;
    let text = loop {
        let text = std::fs::read_to_string(&log_path).unwrap();
        if text.contains("\"worker linked\"") && text.contains("\"gateway writer deposited\"") {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "start-up not logged in {SETTLE:?}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let lines: Vec<Value> = text
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    for line in &lines {
        for field in ["timestamp", "level", "target"] {
            assert!(line.get(field).is_some(), "no {field}: {line}");
        }
    }
    assert!(
        lines
            .iter()
            .any(|l| l["relay"] == relay_short.as_str() && l["escrow_id"].is_string()),
        "no deposit line with the relay and escrow id as fields:\n{text}"
    );
    for secret in secrets_of(&up.dir()) {
        assert!(
            !text.contains(&secret),
            "a secret of the data directory is in the log"
        );
    }
}
