//! Every server's `/metrics` passes `promtool check metrics` (the Debian
//! package `prometheus`), and `docs/metrics.md` describes every metric the
//! servers export.

use std::collections::BTreeSet;
use std::time::Duration;

use tests::prom::promtool_check_metrics;
use tests::TestCluster;

/// A cluster with a frontend, two leaves and a cache server, each serving
/// `/metrics`, that has answered some queries: misses, hits, a bypass and a
/// bad request.
async fn cluster_with_traffic() -> TestCluster {
    let cluster = TestCluster::builder()
        .shards(2)
        .replicas(1)
        .caches(1)
        .metrics(true)
        .build()
        .await;
    for query in ["json+parser", "http+server", "json+parser", "logger"] {
        let (status, body) = cluster.search(&format!("q={query}&timeout_ms=2000")).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, _) = cluster.search("q=logger&nocache=true").await;
    assert_eq!(status, 200);
    let (status, _) = cluster.search("k=5").await;
    assert_eq!(status, 400);
    cluster
}

/// `(job, text)` of every server's `/metrics`.
async fn scrape_all(cluster: &TestCluster) -> Vec<(String, String)> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client");
    let mut scraped = Vec::new();
    for (job, addr) in cluster.metrics_targets() {
        let response = client
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .unwrap_or_else(|error| panic!("GET {job} {addr}/metrics: {error}"));
        assert!(
            response.status().is_success(),
            "GET {job} {addr}/metrics: {}",
            response.status()
        );
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        assert!(
            content_type.starts_with("text/plain"),
            "{job} {addr}/metrics has content type {content_type:?}"
        );
        scraped.push((job, response.text().await.expect("metrics body")));
    }
    let jobs: BTreeSet<&str> = scraped.iter().map(|(job, _)| job.as_str()).collect();
    assert_eq!(
        jobs,
        BTreeSet::from(["cache", "frontend", "leaf"]),
        "every kind of server is scraped"
    );
    scraped
}

/// The metric family names of a text exposition (its `# TYPE` lines).
fn families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_server_passes_promtool_check_metrics() {
    let cluster = cluster_with_traffic().await;
    let mut failures = Vec::new();
    for (job, text) in scrape_all(&cluster).await {
        assert!(!families(&text).is_empty(), "{job} exports no metric");
        if let Err(report) = promtool_check_metrics(&text) {
            failures.push(format!("{job}:\n{report}"));
        }
    }
    assert!(
        failures.is_empty(),
        "promtool check metrics failed:\n{}",
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docs_describe_every_exported_metric() {
    let docs_path = tests::prom::workspace_root().join("docs/metrics.md");
    let docs = std::fs::read_to_string(docs_path).expect("docs/metrics.md exists");
    let cluster = cluster_with_traffic().await;
    let mut missing = BTreeSet::new();
    for (job, text) in scrape_all(&cluster).await {
        for family in families(&text) {
            if !docs.contains(&format!("`{family}`")) {
                missing.insert(format!("{family} ({job})"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs/metrics.md does not describe: {missing:?}"
    );
}
