//! The Grafana dashboards of `dashboards/`, proven against a real
//! Prometheus: a cluster under load from the load generator (with a hung
//! replica and a briefly unreachable shard, so that hedges, timeouts and
//! partial answers happen), scraped by the Debian package's `prometheus`;
//! then every panel query of every dashboard is evaluated through
//! Prometheus's HTTP API and must parse and return data.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use tests::prom::{dashboard_queries, dashboards, dashboards_dir, panels, Prometheus};
use tests::TestCluster;

/// The dashboards the issue asks for.
const DASHBOARDS: &[&str] = &["cache.json", "leaves.json", "overview.json"];

/// Queries the load generator sends, most popular first; Zipf sampling
/// repeats the first ones, so the cache has hits.
const QUERIES: &[&str] = &[
    "json parser",
    "http server",
    "logger",
    "command line tool",
    "react component",
    "date format",
    "test runner",
    "color",
    "stream",
    "promise",
    "markdown",
    "database driver",
];

#[test]
fn dashboards_are_provisionable_grafana_json() {
    let dir = dashboards_dir();
    let found = dashboards(&dir);
    let names: Vec<&str> = found.iter().map(|(name, _)| name.as_str()).collect();
    for name in DASHBOARDS {
        assert!(names.contains(name), "no dashboards/{name} among {names:?}");
    }
    let mut uids = BTreeSet::new();
    for (file, dashboard) in &found {
        let uid = dashboard["uid"].as_str().expect("a uid");
        assert!(uids.insert(uid.to_string()), "{file}: uid {uid} repeated");
        assert!(dashboard["title"].is_string(), "{file}: no title");
        assert!(
            dashboard["schemaVersion"].as_u64().unwrap_or(0) >= 36,
            "{file}: schemaVersion"
        );
        let panels = panels(dashboard);
        assert!(!panels.is_empty(), "{file}: no panels");
        let mut ids = BTreeSet::new();
        for panel in panels {
            let title = panel["title"].as_str().unwrap_or_default();
            assert!(!title.is_empty(), "{file}: a panel without a title");
            assert!(
                ids.insert(panel["id"].as_u64()),
                "{file}: {title}: id repeated"
            );
            assert!(panel["gridPos"]["w"].is_u64(), "{file}: {title}: gridPos");
            let kind = panel["type"].as_str().unwrap_or_default();
            if kind == "row" {
                continue;
            }
            assert!(
                ["timeseries", "stat"].contains(&kind),
                "{file}: {title}: panel type {kind}"
            );
            assert_eq!(
                panel["datasource"]["uid"], "prometheus",
                "{file}: {title}: data source"
            );
            let targets = panel["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{file}: {title}: no query");
            for target in targets {
                assert!(
                    target["expr"].as_str().is_some_and(|e| !e.is_empty()),
                    "{file}: {title}: a target without expr"
                );
                assert_eq!(
                    target["datasource"]["uid"], "prometheus",
                    "{file}: {title}: target data source"
                );
            }
        }
    }
    // Latency panels draw the objective.
    let (_, overview) = found.iter().find(|(f, _)| f == "overview.json").unwrap();
    let latency = panels(overview)
        .into_iter()
        .find(|p| p["title"] == "Latency percentiles against the objective")
        .expect("a latency panel");
    let exprs: Vec<&str> = latency["targets"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["expr"].as_str())
        .collect();
    assert!(exprs.iter().any(|e| e.contains("histogram_quantile(0.99,")));
    assert!(exprs
        .iter()
        .any(|e| e.contains("frontend_latency_objective_seconds")));

    let provisioning = dir.join("provisioning");
    let datasource = read(&provisioning.join("datasources/prometheus.yml"));
    for line in [
        "type: prometheus",
        "uid: prometheus",
        "url: http://127.0.0.1:9090",
    ] {
        assert!(datasource.contains(line), "datasource lacks `{line}`");
    }
    let provider = read(&provisioning.join("dashboards/search.yml"));
    for line in ["type: file", "path:"] {
        assert!(provider.contains(line), "dashboard provider lacks `{line}`");
    }
}

#[test]
fn the_demo_scrape_config_is_valid_and_matches_the_demo_defaults() {
    let path = dashboards_dir().join("prometheus/prometheus.yml");
    if let Err(report) = tests::prom::promtool_check_config(&path) {
        panic!("promtool check config {}:\n{report}", path.display());
    }
    let config = read(&path);
    for job in ["job_name: frontend", "job_name: leaf", "job_name: cache"] {
        assert!(config.contains(job), "no `{job}`");
    }
    // `frontend demo` defaults: the admin listener (the frontend's
    // /metrics) on --metrics-base 9100; 4 shards x 2 replicas with /metrics
    // from 9100 + 1; 2 caches from 9100 + 51.
    assert!(
        !config.contains("127.0.0.1:8080"),
        "the public port serves no /metrics"
    );
    let ports = std::iter::once(9100).chain(9101..=9108).chain(9151..=9152);
    for port in ports {
        assert!(
            config.contains(&format!("127.0.0.1:{port}")),
            "no target 127.0.0.1:{port}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_returns_data_from_a_real_prometheus() {
    let queries: Vec<_> = dashboards(&dashboards_dir())
        .iter()
        .flat_map(|(file, dashboard)| dashboard_queries(file, dashboard))
        .collect();
    assert!(queries.len() > 20, "only {} queries", queries.len());

    let cluster = TestCluster::builder()
        .shards(2)
        .replicas(2)
        .caches(1)
        .metrics(true)
        .build()
        .await;
    let targets = cluster.metrics_targets();
    assert_eq!(targets.len(), 6, "{targets:?}");
    let prometheus = Prometheus::start(&targets).await;
    prometheus.wait_for_targets().await;

    // Load from the load generator, open loop, with faults beside it.
    let mut config = loadgen::Config::new(
        cluster.url(""),
        40.0,
        Duration::from_secs(12),
        loadgen::QuerySource::List(QUERIES.iter().map(|q| q.to_string()).collect()),
    );
    config.timeout_ms = 300;
    config.seed = Some(7);
    let (report, ()) = tokio::join!(loadgen::run(config), side_traffic(&cluster));
    let report = report.expect("the load generator runs");
    assert!(report.total.ok > 0, "{}", report.summary());

    // Wait until Prometheus has scraped the final count of requests.
    let answered = requests_answered(&cluster);
    let started = std::time::Instant::now();
    loop {
        let seen = prometheus
            .value("sum(frontend_search_requests_total)")
            .await;
        if seen == Some(answered) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "prometheus saw {seen:?} requests, the frontend answered {answered}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // What the faults made happen, for the log (not asserted: admission
    // control may shed any of it on a busy machine).
    for (what, expr) in [
        ("requests", "sum(frontend_search_requests_total)"),
        (
            "partial answers",
            r#"sum(frontend_search_requests_total{outcome="partial"})"#,
        ),
        (
            "shed",
            r#"sum(frontend_search_requests_total{outcome="overloaded"})"#,
        ),
        (
            "leaf call timeouts",
            r#"sum(frontend_leaf_calls_total{outcome="timeout"})"#,
        ),
        ("hedges sent", "sum(frontend_hedges_total)"),
        ("hedges won", "sum(frontend_hedge_wins_total)"),
        ("cache hits", "sum(cache_hits_total)"),
    ] {
        eprintln!("{what}: {:?}", prometheus.value(expr).await);
    }

    let mut failures = Vec::new();
    for query in &queries {
        match prometheus.query(&query.promql).await {
            Ok(series) if series.is_empty() => {
                failures.push(format!("{}: no data: {}", query.origin, query.promql));
            }
            Ok(_) => {}
            Err(error) => {
                failures.push(format!("{}: {error}: {}", query.origin, query.promql));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} dashboard queries failed:\n{}\n\nprometheus log:\n{}",
        failures.len(),
        queries.len(),
        failures.join("\n"),
        prometheus.log()
    );
}

/// Beside the load: uncached queries, a bad request, a hung replica (hedges
/// and cancelled calls), failing calls, then a shard hung on both replicas
/// (timeouts and partial answers). Their answers are not checked: they are
/// here to make the metrics move, and admission control may shed some.
async fn side_traffic(cluster: &TestCluster) {
    async fn queries(cluster: &TestCluster, query: &str, count: usize) {
        for _ in 0..count {
            cluster.search(query).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    queries(cluster, "q=json+parser&nocache=true", 10).await;
    cluster.search("k=5").await;
    let faults = |shard, replica| cluster.leaf(shard, replica).faults();
    faults(0, 0).set_hang(true);
    queries(cluster, "q=http+server&nocache=true&timeout_ms=300", 20).await;
    faults(0, 0).set_hang(false);
    faults(1, 0).set_error_fraction(1.0);
    queries(cluster, "q=logger&nocache=true&timeout_ms=300", 10).await;
    faults(1, 0).set_error_fraction(0.0);
    faults(1, 0).set_hang(true);
    faults(1, 1).set_hang(true);
    queries(cluster, "q=color&nocache=true&timeout_ms=150", 10).await;
    faults(1, 0).set_hang(false);
    faults(1, 1).set_hang(false);
}

/// Search requests the frontend has counted, every outcome.
fn requests_answered(cluster: &TestCluster) -> f64 {
    cluster
        .frontend()
        .metrics
        .registry
        .gather()
        .iter()
        .filter(|family| family.name() == "frontend_search_requests_total")
        .flat_map(|family| family.get_metric().iter())
        .map(|metric| metric.get_counter().value())
        .sum()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}
