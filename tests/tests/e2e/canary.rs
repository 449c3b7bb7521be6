//! Canary requests against a query of death: in-process leaves whose
//! `crash_on` fault kills just that leaf (connections cut, lease left to
//! expire), as `leaf --fault-crash-on` aborts a real process.

use serde_json::Value;
use tests::TestCluster;

const POISON: &str = "zebrapoison";

fn crashes(cluster: &TestCluster) -> u64 {
    cluster.leaves().map(|leaf| leaf.faults().crashes()).sum()
}

async fn poisoned_cluster(caches: u32) -> TestCluster {
    let cluster = TestCluster::builder()
        .shards(3)
        .replicas(2)
        .caches(caches)
        .leaf(|config| config.faults.crash_on = Some(POISON.to_string()))
        .build()
        .await;
    for leaf in cluster.leaves() {
        leaf.kill_on_crash();
    }
    cluster
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_of_death_kills_one_replica_and_is_then_refused() {
    let cluster = poisoned_cluster(0).await;
    let deadly = format!("q=json+{POISON}&timeout_ms=2000");

    let (status, body) = cluster.search(&deadly).await;
    assert_eq!((status, code(&body)), (422, "query_rejected"), "{body}");
    assert_eq!(
        crashes(&cluster),
        1,
        "the canary killed exactly one replica"
    );

    for _ in 0..3 {
        let (status, body) = cluster.search(&deadly).await;
        assert_eq!((status, code(&body)), (422, "query_rejected"), "{body}");
    }
    // The same query spelled otherwise has the same fingerprint.
    let (status, body) = cluster
        .search(&format!(
            "q=JSON++{}&timeout_ms=2000",
            POISON.to_uppercase()
        ))
        .await;
    assert_eq!((status, code(&body)), (422, "query_rejected"), "{body}");
    assert_eq!(crashes(&cluster), 1, "repeating it killed nothing more");

    // Other queries keep being answered by the replicas left.
    for query in ["json+parser", "react", "http+client", "json+parser"] {
        let (status, body) = cluster.search(&format!("q={query}&timeout_ms=2000")).await;
        assert_eq!(status, 200, "{query}: {body}");
        assert!(
            !body["hits"].as_array().unwrap().is_empty(),
            "{query}: {body}"
        );
    }
    assert_eq!(crashes(&cluster), 1);

    let (_, metrics) = cluster.get_text("/metrics").await;
    assert!(
        metrics.contains("frontend_queries_rejected_total 5"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("rejected") || l.contains("canar"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(metrics.contains(r#"frontend_canaries_total{outcome="died"} 1"#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_requests_of_a_query_of_death_share_one_canary() {
    let cluster = poisoned_cluster(1).await;
    let deadly = format!("q={POISON}&timeout_ms=2000");
    let requests = (0..6).map(|_| cluster.search(&deadly));
    let answers = futures::future::join_all(requests).await;
    for (status, body) in &answers {
        assert_eq!((*status, code(body)), (422, "query_rejected"), "{body}");
    }
    assert_eq!(crashes(&cluster), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_canaries_a_query_of_death_reaches_every_shard() {
    // The baseline that shows what the canary prevents.
    let cluster = TestCluster::builder()
        .shards(3)
        .replicas(2)
        .frontend(|config| config.root.canary.enabled = false)
        .leaf(|config| config.faults.crash_on = Some(POISON.to_string()))
        .build()
        .await;
    for leaf in cluster.leaves() {
        leaf.kill_on_crash();
    }
    let (status, _) = cluster.search(&format!("q={POISON}&timeout_ms=1000")).await;
    assert_ne!(status, 200);
    assert!(
        crashes(&cluster) >= 3,
        "one replica of every shard at least"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_first_seen_requests_share_one_canary_and_one_fan_out() {
    let cluster = TestCluster::builder().shards(3).caches(1).build().await;
    for leaf in cluster.leaves() {
        leaf.faults()
            .set_delay(std::time::Duration::from_millis(200), 1.0);
    }
    let requests = (0..8).map(|_| cluster.search("q=stream+parser&timeout_ms=3000"));
    for (status, body) in futures::future::join_all(requests).await {
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["partial"], false, "{body}");
    }
    let searches: u64 = cluster.leaves().map(|l| l.stats().searches).sum();
    assert_eq!(searches, 3 + 1, "one call per shard and one canary");
}
