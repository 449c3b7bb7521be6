//! Partitions between hosts: each server in its own network namespace
//! (`tests::netns`), links cut with `nft` so that packets vanish instead of
//! being refused. The tests check behaviour, never timings: during a cut
//! every search is answered (partial at worst), and after the heal the
//! cut-off part takes calls again and holds its lease again. Where
//! namespaces cannot be made (not root) each test says so and passes.

use std::time::Duration;

use tests::netns::{Load, NetCluster, NetClusterConfig, TestBed, GRPC_PORT};

const RATE: u32 = 50;
const DEADLINE_MS: u64 = 200;
/// Longer than a lease term (3 s), so that leases expire during the cut.
const CUT: Duration = Duration::from_secs(8);
/// Generous bound for every condition polled (never a timing assertion).
const PATIENCE: Duration = Duration::from_secs(60);

/// Two shards: a search whose shard 0 call is caught on the cut link is a
/// partial answer (shard 1 answered), never a 503 "no shard answered".
/// Two shards × two replicas on the test bed (none without root), with the
/// hosts of the first frontend, of the replica the tests cut (replica 0 of
/// shard 0) and of its twin.
async fn two_by_two(test: &str) -> Option<(NetCluster, usize, usize, usize)> {
    let bed = TestBed::new(test)?;
    let config = NetClusterConfig {
        shards: 2,
        replicas: 2,
        ..NetClusterConfig::default()
    };
    let cluster = NetCluster::start(bed, config)
        .await
        .expect("cluster started on the test bed");
    let (frontend, cut, twin) = (
        cluster.frontends[0],
        cluster.leaves[0][0],
        cluster.leaves[0][1],
    );
    Some((cluster, frontend, cut, twin))
}

/// Waits until the leaf on `host` serves at least a fifth of the calls its
/// twin on `twin` serves (its normal share is a half), over 2 s windows.
async fn takes_its_share(cluster: &NetCluster, host: usize, twin: usize) {
    cluster
        .wait_for(PATIENCE, "the healed replica to take its share", || async {
            let (Ok(a0), Ok(b0)) = (
                cluster.leaf_searches(host).await,
                cluster.leaf_searches(twin).await,
            ) else {
                return false;
            };
            tokio::time::sleep(Duration::from_secs(2)).await;
            let (Ok(a1), Ok(b1)) = (
                cluster.leaf_searches(host).await,
                cluster.leaf_searches(twin).await,
            ) else {
                return false;
            };
            let (healed, other) = (a1 - a0, b1 - b0);
            healed > 0.0 && healed * 5.0 >= other
        })
        .await
        .expect("the healed replica takes calls again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_cut_off_from_the_frontend_takes_its_share_again_after_the_heal() {
    let Some((cluster, frontend, cut, twin)) = two_by_two("partitions::replica").await else {
        return;
    };
    let load = Load::start(cluster.frontend_url(0), RATE, DEADLINE_MS);
    takes_its_share(&cluster, cut, twin).await;

    cluster.bed.cut(frontend, cut).unwrap();
    cluster
        .wait_for(
            PATIENCE,
            "the cut-off replica's lease to expire",
            || async { cluster.routed_leaves(0).await.is_ok_and(|n| n == 3) },
        )
        .await
        .unwrap();
    tokio::time::sleep(CUT).await;
    cluster.bed.heal(frontend, cut).unwrap();
    cluster
        .wait_for(
            PATIENCE,
            "the healed replica's lease to be live again",
            || async { cluster.routed_leaves(0).await.is_ok_and(|n| n == 4) },
        )
        .await
        .unwrap();
    takes_its_share(&cluster, cut, twin).await;

    let all = load.stop().await;
    assert!(all.count() > 0);
    // The twin answers everything: no error, at worst a partial answer
    // for the calls caught on the link as it was cut.
    assert_eq!(all.errors(), 0, "{:?}", all.error_kinds());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaf_cut_off_from_its_registry_only_leaves_routing_and_returns_after_the_heal() {
    let Some((cluster, frontend, cut, twin)) = two_by_two("partitions::holder_registry").await
    else {
        return;
    };
    let load = Load::start(cluster.frontend_url(0), RATE, DEADLINE_MS);
    // Only the leaf's connections to the registry port are cut: the
    // frontend can still reach the leaf, but the lease expires, and a
    // replica without a live lease is not routed (it might be a stale or
    // stopping process the frontend can no longer vouch for).
    cluster.bed.cut_service(cut, frontend, GRPC_PORT).unwrap();
    cluster
        .wait_for(
            PATIENCE,
            "the lease to expire although the leaf serves",
            || async { cluster.routed_leaves(0).await.is_ok_and(|n| n == 3) },
        )
        .await
        .unwrap();
    let before = cluster.leaf_searches(cut).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = cluster.leaf_searches(cut).await.unwrap();
    assert_eq!(before, after, "an unrouted replica gets no searches");

    cluster.bed.heal_service(cut, frontend, GRPC_PORT).unwrap();
    cluster
        .wait_for(PATIENCE, "the holder's lease to be live again", || async {
            cluster.routed_leaves(0).await.is_ok_and(|n| n == 4)
        })
        .await
        .unwrap();
    takes_its_share(&cluster, cut, twin).await;
    let all = load.stop().await;
    assert_eq!(all.errors(), 0, "{:?}", all.error_kinds());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_way_cut_from_the_frontend_to_a_replica_heals_like_a_full_one() {
    let Some((cluster, frontend, cut, twin)) = two_by_two("partitions::one_way").await else {
        return;
    };
    let load = Load::start(cluster.frontend_url(0), RATE, DEADLINE_MS);
    takes_its_share(&cluster, cut, twin).await;
    // Searches to the replica vanish; its lease renewals still reach the
    // registry, but their answers do not come back, so it expires too.
    cluster.bed.cut_one_way(frontend, cut).unwrap();
    tokio::time::sleep(CUT).await;
    let during = load.window(load.now() - CUT, load.now());
    assert!(during.count() > 0);
    assert_eq!(during.errors(), 0, "{:?}", during.error_kinds());
    cluster.bed.heal(frontend, cut).unwrap();
    cluster
        .wait_for(PATIENCE, "both replicas routed again", || async {
            cluster.routed_leaves(0).await.is_ok_and(|n| n == 4)
        })
        .await
        .unwrap();
    takes_its_share(&cluster, cut, twin).await;
    let all = load.stop().await;
    assert_eq!(all.errors(), 0, "{:?}", all.error_kinds());
}
