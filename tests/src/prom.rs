//! A real Prometheus for tests, and the Grafana dashboards it must answer.
//!
//! [`Prometheus::start`] runs the `prometheus` binary of the Debian package
//! on loopback, scraping the `(job, address)` targets it is given
//! ([`crate::TestCluster::metrics_targets`]); it is killed when dropped.
//! [`promtool_check_metrics`] lints one `/metrics` text with `promtool`.
//! [`dashboards`] reads every dashboard of `dashboards/` and lists the
//! queries that Grafana would send, ready for Prometheus's HTTP API.
//!
//! ```no_run
//! # async fn demo(cluster: &tests::TestCluster) {
//! let prometheus = tests::prom::Prometheus::start(&cluster.metrics_targets()).await;
//! prometheus.wait_for_targets().await;
//! let series = prometheus.query("up").await.expect("valid query");
//! # }
//! ```

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The workspace root: from the test runner's `CARGO_MANIFEST_DIR` when it
/// sets one (so that a test binary built in another checkout still reads
/// this one's files), else from the build's.
pub fn workspace_root() -> PathBuf {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest.join("..")
}

/// The workspace's `dashboards/` folder.
pub fn dashboards_dir() -> PathBuf {
    workspace_root().join("dashboards")
}

/// Panics with an install hint unless `binary` (from the Debian package
/// `prometheus`) is on the `PATH`.
pub fn require_binary(binary: &str) {
    let found = Command::new(binary)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        found,
        "`{binary}` not found on PATH: install the Debian package `prometheus` \
         (apt-get install prometheus), which .ci/run does"
    );
}

/// Runs `promtool check metrics` on `text`; the error is promtool's report.
pub fn promtool_check_metrics(text: &str) -> Result<(), String> {
    require_binary("promtool");
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| format!("cannot run promtool: {error}"))?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(text.as_bytes())
        .map_err(|error| format!("cannot write to promtool: {error}"))?;
    let output = child
        .wait_with_output()
        .map_err(|error| format!("promtool failed: {error}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// Runs `promtool check config` on a Prometheus configuration file.
pub fn promtool_check_config(path: &Path) -> Result<(), String> {
    require_binary("promtool");
    let output = Command::new("promtool")
        .args(["check", "config"])
        .arg(path)
        .output()
        .map_err(|error| format!("cannot run promtool: {error}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// A Prometheus server on a loopback port, with its own storage directory.
pub struct Prometheus {
    child: Child,
    addr: SocketAddr,
    targets: usize,
    dir: tempfile::TempDir,
    client: reqwest::Client,
}

impl Prometheus {
    /// Starts Prometheus scraping every target each second, and waits until
    /// it answers.
    pub async fn start(targets: &[(String, SocketAddr)]) -> Prometheus {
        require_binary("prometheus");
        let dir = tempfile::tempdir().expect("temporary directory");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, scrape_config(targets)).expect("write prometheus.yml");
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("http client");
        // A port found free here may be taken before Prometheus binds it:
        // try again with another.
        let mut failures = Vec::new();
        for attempt in 0..3 {
            let addr = free_port();
            let log_path = dir.path().join(format!("prometheus-{attempt}.log"));
            let log = std::fs::File::create(&log_path).expect("create log file");
            let mut child = Command::new("prometheus")
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .arg("--log.level=warn")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start prometheus");
            if wait_ready(&mut child, &client, addr).await {
                return Prometheus {
                    child,
                    addr,
                    targets: targets.len(),
                    dir,
                    client,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
            failures.push(std::fs::read_to_string(&log_path).unwrap_or_default());
        }
        panic!("prometheus did not start:\n{}", failures.join("\n---\n"));
    }

    /// The base URL of its HTTP API.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits until every target has been scraped successfully, or panics
    /// after 30 s with the targets' state.
    pub async fn wait_for_targets(&self) {
        let started = Instant::now();
        loop {
            let targets = self.targets().await;
            let up = targets
                .iter()
                .filter(|t| t["health"] == "up" && t["lastScrape"] != "0001-01-01T00:00:00Z")
                .count();
            if up == self.targets {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "prometheus scrapes {up} of {} targets up after 30 s: {targets:#?}",
                self.targets
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The active targets as `/api/v1/targets` describes them.
    pub async fn targets(&self) -> Vec<Value> {
        let body: Value = match self
            .client
            .get(format!("{}/api/v1/targets", self.url()))
            .send()
            .await
        {
            Ok(response) => response.json().await.unwrap_or_default(),
            Err(_) => Value::Null,
        };
        body["data"]["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Evaluates `expr` now (an instant query): the result's series, or
    /// Prometheus's error when it does not parse or cannot be evaluated.
    pub async fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let response = self
            .client
            .get(format!("{}/api/v1/query", self.url()))
            .query(&[("query", expr)])
            .send()
            .await
            .map_err(|error| format!("request failed: {error}"))?;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .map_err(|error| format!("response is not json (status {status}): {error}"))?;
        if body["status"] != "success" {
            return Err(format!(
                "{}: {}",
                body["errorType"].as_str().unwrap_or("error"),
                body["error"].as_str().unwrap_or("no message")
            ));
        }
        let data = &body["data"];
        Ok(match data["resultType"].as_str() {
            Some("vector") | Some("matrix") => {
                data["result"].as_array().cloned().unwrap_or_default()
            }
            // A scalar or a string is one value.
            _ => vec![data["result"].clone()],
        })
    }

    /// The single value of a query that returns one series, if it does.
    pub async fn value(&self, expr: &str) -> Option<f64> {
        let series = self.query(expr).await.ok()?;
        series.first()?["value"][1].as_str()?.parse().ok()
    }

    /// Prometheus's own log so far.
    pub fn log(&self) -> String {
        std::fs::read_dir(self.dir.path())
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
            .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `/-/ready` for up to 30 s; false when the process exits first or
/// never becomes ready.
async fn wait_ready(child: &mut Child, client: &reqwest::Client, addr: SocketAddr) -> bool {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if let Ok(response) = client.get(format!("http://{addr}/-/ready")).send().await {
            if response.status().is_success() {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// A scrape configuration with one job per distinct job name, every second.
pub fn scrape_config(targets: &[(String, SocketAddr)]) -> String {
    let mut jobs: Vec<&str> = targets.iter().map(|(job, _)| job.as_str()).collect();
    jobs.sort_unstable();
    jobs.dedup();
    let mut yaml = String::from("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nscrape_configs:\n");
    for job in jobs {
        yaml.push_str(&format!(
            "  - job_name: {job}\n    static_configs:\n      - targets:\n"
        ));
        for (_, addr) in targets.iter().filter(|(j, _)| j == job) {
            yaml.push_str(&format!("          - '{addr}'\n"));
        }
    }
    yaml
}

/// One query a dashboard sends to Prometheus.
#[derive(Clone, Debug)]
pub struct DashboardQuery {
    /// `file: panel title (refId)`, to name it in a failure.
    pub origin: String,
    /// The expression as written in the dashboard.
    pub expr: String,
    /// The expression with Grafana's variables replaced, as Prometheus
    /// would receive it.
    pub promql: String,
}

/// Every `*.json` dashboard of `dir`, parsed, by file name.
pub fn dashboards(dir: &Path) -> Vec<(String, Value)> {
    let mut found: Vec<(String, Value)> = std::fs::read_dir(dir)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", dir.display()))
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("read dashboard");
            let json = serde_json::from_str(&text)
                .unwrap_or_else(|error| panic!("{} is not json: {error}", path.display()));
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, json)
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

/// Every panel (rows' nested panels included) of a dashboard.
pub fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        out.push(panel);
        out.extend(panel["panels"].as_array().into_iter().flatten());
    }
    out
}

/// Every query of a dashboard: each panel target's `expr`, and each query
/// variable's `label_values(…)` as the PromQL that answers it.
pub fn dashboard_queries(file: &str, dashboard: &Value) -> Vec<DashboardQuery> {
    let variables: Vec<String> = dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str().map(str::to_string))
        .collect();
    let mut queries = Vec::new();
    for panel in panels(dashboard) {
        let title = panel["title"].as_str().unwrap_or("untitled");
        for target in panel["targets"].as_array().into_iter().flatten() {
            let Some(expr) = target["expr"].as_str() else {
                continue;
            };
            let ref_id = target["refId"].as_str().unwrap_or("?");
            queries.push(DashboardQuery {
                origin: format!("{file}: {title} ({ref_id})"),
                expr: expr.to_string(),
                promql: substitute(expr, &variables),
            });
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let query = match &variable["query"] {
            Value::String(q) => q.clone(),
            object => object["query"].as_str().unwrap_or_default().to_string(),
        };
        if let Some(promql) = label_values_promql(&query) {
            queries.push(DashboardQuery {
                origin: format!(
                    "{file}: variable ${}",
                    variable["name"].as_str().unwrap_or("?")
                ),
                expr: query.clone(),
                promql: substitute(&promql, &variables),
            });
        }
    }
    queries
}

/// Replaces Grafana's interval variables with `1m` (enough samples at a 1 s
/// scrape interval) and every dashboard variable with `.*`, as "All" does.
pub fn substitute(expr: &str, variables: &[String]) -> String {
    let mut promql = expr
        .replace("$__rate_interval", "1m")
        .replace("${__rate_interval}", "1m")
        .replace("$__interval", "1m")
        .replace("${__interval}", "1m")
        .replace("$__range", "1m")
        .replace("${__range}", "1m");
    // Longest names first, so `$shard` does not eat the start of `$shards`.
    let mut variables = variables.to_vec();
    variables.sort_by_key(|v| std::cmp::Reverse(v.len()));
    for name in &variables {
        promql = promql
            .replace(&format!("${{{name}}}"), ".*")
            .replace(&format!("${name}"), ".*");
    }
    promql
}

/// `label_values(metric, label)` as `count by (label) (metric)`; `None` for
/// anything else.
fn label_values_promql(query: &str) -> Option<String> {
    let inner = query
        .trim()
        .strip_prefix("label_values(")?
        .strip_suffix(')')?;
    match inner.rsplit_once(',') {
        Some((metric, label)) => Some(format!("count by ({}) ({})", label.trim(), metric.trim())),
        None => Some(format!("count by ({0}) ({{{0}!=\"\"}})", inner.trim())),
    }
}

/// A loopback address with a port that was free a moment ago.
fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind loopback")
}
