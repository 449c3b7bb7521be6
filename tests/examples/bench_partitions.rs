//! Partitions between hosts (issue 20): each server in its own network
//! namespace on one bridge (`tests::netns`), a steady search load from the
//! root namespace, one link cut for a while, then healed. For each scenario:
//! errors, partial answers and p99 during the cut, and the time from the
//! heal until the cut-off part is back (the healed replica takes its normal
//! share, the lease is live again, the membership reconnected).
//!
//! Needs root (network namespaces), `ip` and `nft`, and the built servers:
//!
//! ```text
//! cargo build --release -p leaf -p frontend -p cache
//! cargo run --release -p tests --example bench_partitions -- \
//!     [--rate 80] [--deadline-ms 200] [--cut-secs 20] [--scenario all|replica|…]
//! ```

use std::time::{Duration, Instant};

use tests::bench;
use tests::netns::{
    metric_sum, Load, NetCluster, NetClusterConfig, TestBed, Window, GRPC_PORT, HTTP_PORT,
};

struct Settings {
    rate: u32,
    deadline_ms: u64,
    cut: Duration,
}

/// What was cut, and how to tell it is back.
#[derive(Clone, Copy, PartialEq)]
enum Scenario {
    /// frontend ↔ one replica of shard 0, both ways.
    Replica,
    /// The same, for less than a lease term (no lease gap).
    ReplicaShort,
    /// frontend → one replica only.
    OneWay,
    /// frontend ↔ both replicas of shard 1.
    Shard,
    /// A leaf's connections to the registry only (the leaf still reachable).
    HolderRegistry,
    /// frontend 0 ↔ etcd, two frontends on an etcd membership.
    Etcd,
    /// frontend ↔ the cache server.
    Cache,
}

const ALL: &[(&str, Scenario)] = &[
    ("replica", Scenario::Replica),
    ("replica-short", Scenario::ReplicaShort),
    ("one-way", Scenario::OneWay),
    ("shard", Scenario::Shard),
    ("holder-registry", Scenario::HolderRegistry),
    ("etcd", Scenario::Etcd),
    ("cache", Scenario::Cache),
];

#[tokio::main]
async fn main() {
    let settings = Settings {
        rate: bench::arg_num("--rate", 80),
        deadline_ms: bench::arg_num("--deadline-ms", 200),
        cut: Duration::from_secs(bench::arg_num("--cut-secs", 20)),
    };
    let only = bench::arg("--scenario", "all");
    println!(
        "### Partitions ({} queries/s, {} ms deadline, {} s cuts unless noted; 2 shards × 2 replicas, lease TTL 3 s)\n",
        settings.rate,
        settings.deadline_ms,
        settings.cut.as_secs()
    );
    println!("| scenario | cut | queries in the cut | non-200 | partial | p99 before | p99 in the cut | heal → back | back means |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for &(name, scenario) in ALL {
        if only != "all" && only != name {
            continue;
        }
        let Some(bed) = TestBed::new("bench_partitions") else {
            std::process::exit(1);
        };
        let config = NetClusterConfig {
            frontends: if scenario == Scenario::Etcd { 2 } else { 1 },
            caches: u32::from(scenario == Scenario::Cache),
            etcd: scenario == Scenario::Etcd,
            ..NetClusterConfig::default()
        };
        let cluster = NetCluster::start(bed, config)
            .await
            .expect("cluster started");
        run(&cluster, name, scenario, &settings).await;
    }
}

async fn run(cluster: &NetCluster, name: &str, scenario: Scenario, settings: &Settings) {
    let frontend = cluster.frontends[0];
    let (victim, twin) = (cluster.leaves[0][0], cluster.leaves[0][1]);
    let load = Load::start(cluster.frontend_url(0), settings.rate, settings.deadline_ms);
    // Warm up: every replica measured, the cache filled.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let before = load.window(load.now() - Duration::from_secs(5), load.now());
    let cut = if scenario == Scenario::ReplicaShort {
        Duration::from_secs(2)
    } else {
        settings.cut
    };
    let bed = &cluster.bed;
    let cut_at = load.now();
    match scenario {
        Scenario::Replica | Scenario::ReplicaShort => bed.cut(frontend, victim).unwrap(),
        Scenario::OneWay => bed.cut_one_way(frontend, victim).unwrap(),
        Scenario::Shard => {
            for &leaf in &cluster.leaves[1] {
                bed.cut(frontend, leaf).unwrap();
            }
        }
        Scenario::HolderRegistry => bed.cut_service(victim, frontend, GRPC_PORT).unwrap(),
        Scenario::Etcd => bed.cut(frontend, cluster.etcd.unwrap()).unwrap(),
        Scenario::Cache => bed.cut(frontend, cluster.caches[0]).unwrap(),
    }
    tokio::time::sleep(cut).await;
    bed.heal_all().unwrap();
    let during = load.window(cut_at, load.now());
    let (back, means) = match scenario {
        Scenario::Replica
        | Scenario::ReplicaShort
        | Scenario::OneWay
        | Scenario::HolderRegistry => (
            share_back(cluster, victim, twin).await,
            "healed replica serves ≥ ½ its twin's calls (1 s window)",
        ),
        Scenario::Shard => (
            share_back(cluster, cluster.leaves[1][0], cluster.leaves[0][0]).await,
            "shard 1 replica serves ≥ ½ a shard 0 replica's calls",
        ),
        Scenario::Etcd => (
            poll(|| async {
                frontend_metric(cluster, 0, "lease_membership_connected").await >= 1.0
            })
            .await,
            "frontend 0's membership connected again",
        ),
        Scenario::Cache => (
            poll(|| async {
                frontend_metric(cluster, 0, "frontend_cache_lookups_total").await > 0.0
            })
            .await,
            "(cache lookups resume at once; see p99)",
        ),
    };
    let _ = load.stop().await;
    println!(
        "| {name} | {} s | {} | {} | {} | {} | {} | {} | {means} |",
        cut.as_secs(),
        during.count(),
        errors(&during),
        during.partial(),
        ms(before.quantile(0.99)),
        ms(during.quantile(0.99)),
        back.map_or("not within 60 s".into(), |d| format!(
            "{:.1} s",
            d.as_secs_f64()
        )),
    );
}

fn errors(window: &Window) -> String {
    let kinds = window.error_kinds();
    if kinds.is_empty() {
        return "0".into();
    }
    kinds
        .iter()
        .map(|(status, n)| format!("{n}×{status}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// Polls `condition` every 100 ms for up to 60 s; the time it took.
async fn poll<F, Fut>(condition: F) -> Option<Duration>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        if condition().await {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// The time until, over a 1 s window, the leaf on `host` serves at least
/// half as many searches as the one on `peer` (the time of the window's
/// start, so that the window itself is not counted).
async fn share_back(cluster: &NetCluster, host: usize, peer: usize) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        let window_start = started.elapsed();
        let a0 = cluster.leaf_searches(host).await.unwrap_or(0.0);
        let b0 = cluster.leaf_searches(peer).await.unwrap_or(0.0);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let a1 = cluster.leaf_searches(host).await.unwrap_or(0.0);
        let b1 = cluster.leaf_searches(peer).await.unwrap_or(0.0);
        let (a, b) = (a1 - a0, b1 - b0);
        if a > 0.0 && a * 2.0 >= b {
            return Some(window_start);
        }
    }
    None
}

async fn frontend_metric(cluster: &NetCluster, i: usize, name: &str) -> f64 {
    let url = format!(
        "http://{}/metrics",
        cluster.bed.host(cluster.frontends[i]).addr(HTTP_PORT)
    );
    match reqwest::get(url).await {
        Ok(response) => metric_sum(&response.text().await.unwrap_or_default(), name),
        Err(_) => 0.0,
    }
}
