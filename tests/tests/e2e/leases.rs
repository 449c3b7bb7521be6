//! Membership by leases through the whole cluster: joining, crashing,
//! leaving gracefully, restarting, and refusing strangers.

use std::time::Duration;

use tests::TestCluster;

const TTL: Duration = Duration::from_millis(600);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leaf_leaves_routing_within_one_ttl_and_its_shard_becomes_unavailable() {
    let mut cluster = TestCluster::builder()
        .shards(2)
        .lease_ttl(TTL)
        .build()
        .await;
    assert_eq!(cluster.routed(), vec![1, 1]);
    let killed_at = tokio::time::Instant::now();
    cluster.kill_leaf(1, 0);
    // Gone within one term (plus the reaper's and the rebuild's slack).
    cluster
        .wait_until(TTL * 3, "the killed leaf to leave routing", |c| {
            c.routed() == vec![1, 0]
        })
        .await;
    assert!(
        killed_at.elapsed() >= TTL / 2,
        "expired too early: {:?}",
        killed_at.elapsed()
    );
    let started = std::time::Instant::now();
    let (status, body) = cluster.search("q=json&timeout_ms=2000").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["coverage"]["shards_unavailable"], 1, "{body}");
    assert_eq!(body["partial"], true);
    // Reported at once, not after spending the 2 s deadline.
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    let (_, view) = cluster.get_json("/cluster").await;
    assert_eq!(view["shards"][1]["state"], "unavailable", "{view}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gracefully_stopped_leaf_is_gone_at_once_and_a_restarted_one_serves_again() {
    // A long term: only the revocation can remove the leaf quickly.
    let mut cluster = TestCluster::builder()
        .shards(2)
        .lease_ttl(Duration::from_secs(30))
        .build()
        .await;
    cluster.stop_leaf(0, 0).await;
    cluster
        .wait_until(
            Duration::from_secs(2),
            "the revoked leaf to leave routing",
            |c| c.routed() == vec![0, 1],
        )
        .await;
    let (_, body) = cluster.search("q=json").await;
    assert_eq!(body["coverage"]["shards_unavailable"], 1);

    cluster.restart_leaf(0, 0).await;
    cluster
        .wait_until(Duration::from_secs(5), "the restarted leaf to join", |c| {
            c.routed() == vec![1, 1]
        })
        .await;
    let (status, body) = cluster.search("q=json&timeout_ms=2000").await;
    assert_eq!(status, 200);
    assert_eq!(body["partial"], false, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_death_costs_no_failed_queries_while_a_peer_is_live() {
    let mut cluster = TestCluster::builder()
        .shards(2)
        .replicas(2)
        .lease_ttl(TTL)
        .build()
        .await;
    for _ in 0..20 {
        cluster.search("q=json").await;
    }
    cluster.kill_leaf(0, 1);
    let until = tokio::time::Instant::now() + TTL * 2;
    let mut queries = 0;
    while tokio::time::Instant::now() < until {
        let (status, body) = cluster
            .search("q=json+parser&timeout_ms=1000&nocache=true")
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body["partial"], false,
            "query {queries} after the kill: {body}"
        );
        queries += 1;
    }
    assert!(queries > 5);
    assert_eq!(cluster.routed(), vec![1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_view_lists_every_holder_with_its_lease() {
    let cluster = TestCluster::builder()
        .shards(2)
        .replicas(2)
        .caches(1)
        .build()
        .await;
    let (status, view) = cluster.get_json("/cluster").await;
    assert_eq!(status, 200);
    let holders = view["holders"].as_array().unwrap();
    assert_eq!(holders.len(), 5, "{view}");
    for holder in holders {
        let lease_id: u64 = holder["lease_id"].as_str().unwrap().parse().unwrap();
        assert!(lease_id > 0);
        assert!(holder["ttl_left_ms"].as_u64().unwrap() > 0);
        assert!(holder["address"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"));
    }
    assert_eq!(holders.iter().filter(|h| h["role"] == "cache").count(), 1);
    assert_eq!(view["shards"][0]["replicas_live"], 2);
    let (_, metrics) = cluster.get_text("/metrics").await;
    assert!(metrics.contains("lease_live{role=\"leaf\"} 4"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_with_a_wrong_token_is_refused_and_never_routed() {
    let cluster = TestCluster::builder().shards(1).build().await;
    let registry = cluster.grpc_addr().unwrap().to_string();
    let mut config = leaf::LeafConfig::new(0, 1);
    config.lease = Some(leaf::LeaseConfig {
        frontends: vec![registry],
        token: Some("wrong".into()),
        ttl: Duration::from_secs(1),
    });
    let intruder = leaf::start(
        config,
        leaf::CorpusSource::Documents(cluster.documents().clone()),
        tests::bind().await,
        None,
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .unwrap();
    cluster
        .wait_until(Duration::from_secs(10), "a refusal to be counted", |c| {
            c.frontend()
                .metrics
                .registry
                .gather()
                .iter()
                .any(|family| family.name() == "lease_refusals_total")
        })
        .await;
    let (_, metrics) = cluster.get_text("/metrics").await;
    assert!(
        metrics.contains("lease_refusals_total{reason=\"unauthenticated\"}"),
        "{metrics}"
    );
    assert_eq!(cluster.routed(), vec![1], "the intruder is not routed");
    let (_, view) = cluster.get_json("/cluster").await;
    let addresses: Vec<&str> = view["holders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["address"].as_str().unwrap())
        .collect();
    assert!(!addresses.contains(&intruder.advertised()));
    intruder.kill();
}
