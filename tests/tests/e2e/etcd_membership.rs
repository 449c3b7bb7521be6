//! Membership on etcd through whole clusters: two frontends following one
//! etcd route to the same leaves, a killed leaf leaves both, and a frozen
//! etcd neither empties routing nor stops serving.
//!
//! Needs the `etcd` binary (Debian package `etcd-server`): without it these
//! tests fail, saying so.

use std::time::Duration;

use tests::etcd::EtcdCluster;

/// etcd terms are whole seconds, at least about two.
const TTL: Duration = Duration::from_secs(2);

/// A generous bound for anything that should take about one term.
const PATIENCE: Duration = Duration::from_secs(30);

fn all_frontends(cluster: &EtcdCluster, routed: &[usize]) -> bool {
    (0..cluster.frontends()).all(|f| cluster.routed(f) == routed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_frontends_on_one_etcd_route_to_the_same_leaves() {
    let mut cluster = EtcdCluster::start(2, 2, TTL).await;
    cluster.add_leaf(0).await;
    cluster.add_leaf(0).await;
    let doomed = cluster.add_leaf(1).await;
    cluster
        .wait_until(PATIENCE, "both frontends to route every leaf", |c| {
            all_frontends(c, &[2, 1])
        })
        .await;
    assert_eq!(cluster.routed_members(0), cluster.routed_members(1));
    for frontend in 0..2 {
        let (status, body) = cluster
            .get_json(frontend, "/search?q=json&timeout_ms=5000")
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["partial"], false, "{body}");
        let (_, view) = cluster.get_json(frontend, "/cluster").await;
        assert_eq!(view["membership_connected"], true, "{view}");
        assert_eq!(view["holders"].as_array().map(Vec::len), Some(3), "{view}");
    }

    // A crash: no revocation, so the lease runs out on etcd and both
    // frontends drop the leaf.
    cluster.kill_leaf(doomed);
    cluster
        .wait_until(PATIENCE, "the killed leaf to leave both frontends", |c| {
            all_frontends(c, &[2, 0])
        })
        .await;
    assert_eq!(cluster.routed_members(0), cluster.routed_members(1));
    let (_, body) = cluster.get_json(1, "/search?q=json&timeout_ms=5000").await;
    assert_eq!(body["coverage"]["shards_unavailable"], 1, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_etcd_keeps_routing_and_a_leaf_that_joined_meanwhile_is_seen() {
    let mut cluster = EtcdCluster::start(2, 2, TTL).await;
    cluster.add_leaf(0).await;
    cluster.add_leaf(1).await;
    cluster
        .wait_until(PATIENCE, "both frontends to route both leaves", |c| {
            all_frontends(c, &[1, 1])
        })
        .await;

    cluster.etcd.pause();
    cluster
        .wait_until(PATIENCE, "both frontends to see etcd gone", |c| {
            (0..c.frontends()).all(|f| !c.membership_connected(f))
        })
        .await;
    // A leaf that starts while etcd is frozen keeps trying to join.
    let late = cluster.add_leaf(0).await;
    // Longer than a term: leases would have run out if etcd were counting.
    tokio::time::sleep(TTL * 2).await;
    assert!(
        all_frontends(&cluster, &[1, 1]),
        "routing changed while etcd was frozen: {:?} {:?}",
        cluster.routed(0),
        cluster.routed(1)
    );
    for frontend in 0..2 {
        let (_, view) = cluster.get_json(frontend, "/cluster").await;
        assert_eq!(view["membership_connected"], false, "{view}");
        // Serving does not need etcd.
        let (status, body) = cluster
            .get_json(frontend, "/search?q=json&timeout_ms=5000")
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["partial"], false, "{body}");
    }
    assert_eq!(cluster.leaf(late).lease_status()[0].lease_id, None);

    cluster.etcd.resume();
    cluster
        .wait_until(
            PATIENCE,
            "the late leaf to be routed by both frontends",
            |c| all_frontends(c, &[2, 1]),
        )
        .await;
    cluster
        .wait_until(PATIENCE, "both frontends to be connected again", |c| {
            (0..c.frontends()).all(|f| c.membership_connected(f))
        })
        .await;
    assert_eq!(cluster.routed_members(0), cluster.routed_members(1));
}
