//! Herding (issue 16, point 3): two frontends sharing the same leaves
//! through etcd membership, each offered the same open-loop rate at the
//! same time, with and without the leaf-reported load (in flight, queued,
//! service time) in replica choice. Without it each frontend ranks
//! replicas by its own view only, and both may pile onto the replica that
//! looks fastest; with it a replica that is busy with the other frontend's
//! calls looks busy to both.
//!
//! ```text
//! cargo build --release -p tests --example bench_herding
//! cd tests && ../target/release/examples/bench_herding \
//!     [--corpus PATH] [--queries PATH] [--docs 50000] [--rate 150] [--seconds 15]
//! ```
//!
//! Needs `etcd` on the PATH (Debian `etcd-server`).

use std::sync::Arc;
use std::time::Duration;

use frontend_core::{Frontend, FrontendConfig};
use leaf::{CorpusSource, LeafConfig, LeaseConfig};
use lease::testing::EtcdServer;
use tests::bench::{self, Load, Pick, Sample};
use tokio_util::sync::CancellationToken;

const SHARDS: u32 = 2;
const REPLICAS: u32 = 2;

#[tokio::main]
async fn main() {
    let corpus = bench::arg("--corpus", bench::DEFAULT_CORPUS);
    let queries = bench::load_queries(bench::arg("--queries", bench::DEFAULT_QUERIES));
    let docs: usize = bench::arg_num("--docs", 50_000);
    let rate: f64 = bench::arg_num("--rate", 150.0);
    let seconds: u64 = bench::arg_num("--seconds", 15);
    let mut documents = bench::load_documents(&corpus).as_ref().clone();
    documents.truncate(docs);
    let documents = Arc::new(documents);

    let etcd = EtcdServer::start().await;
    let shutdown = CancellationToken::new();
    let mut leaves = Vec::new();
    for shard in 0..SHARDS {
        for replica in 0..REPLICAS {
            let mut config = LeafConfig::new(shard, SHARDS);
            config.lease = Some(LeaseConfig {
                frontends: vec![etcd.url()],
                token: None,
                ttl: Duration::from_secs(3),
            });
            let leaf = leaf::start(
                config,
                CorpusSource::Documents(Arc::clone(&documents)),
                tests::bind().await,
                None,
                shutdown.child_token(),
            )
            .await
            .expect("leaf starts");
            leaves.push((shard, replica, leaf));
        }
    }

    let client = bench::client();
    println!(
        "### Herding: 2 frontends on etcd membership over {SHARDS} shards × {REPLICAS} replicas \
         ({} documents), {rate:.0} req/s open loop to each at once for {seconds} s\n",
        documents.len()
    );
    println!(
        "| leaf-reported load | frontend | answers | p50 ms | p99 ms | p99.9 ms | not 200 | \
         shard 0 replica calls (a / b) | shard 1 replica calls (a / b) | largest replica share of its shard |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for feedback in [false, true, false, true] {
        let frontends = start_frontends(&etcd, feedback, &shutdown).await;
        // Both frontends route every replica before the load starts.
        for frontend in &frontends {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while frontend
                .root
                .fanout
                .routing()
                .snapshot()
                .shards
                .iter()
                .any(|replicas| replicas.len() < REPLICAS as usize)
            {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "frontend never routed every replica"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let pick = Pick::zipf(queries.len(), 1.0, 23);
        let loads: Vec<Load> = frontends
            .iter()
            .map(|f| {
                Load::new(
                    format!("http://{}/search", f.http_addr),
                    queries.clone(),
                    pick.clone(),
                )
            })
            .collect();
        // Warm-up, then the measured stretch with calls counted per replica.
        let warm = Duration::from_secs(3);
        futures::future::join_all(
            loads
                .iter()
                .map(|l| bench::open_loop(&client, l, rate, warm, 1_000_000)),
        )
        .await;
        let before: Vec<f64> = leaves.iter().map(|(_, _, l)| searches(l)).collect();
        let samples: Vec<Vec<Sample>> =
            futures::future::join_all(loads.iter().enumerate().map(|(i, l)| {
                bench::open_loop(&client, l, rate, Duration::from_secs(seconds), i as u64 * 7)
            }))
            .await;
        let calls: Vec<f64> = leaves
            .iter()
            .zip(&before)
            .map(|((_, _, l), b)| searches(l) - b)
            .collect();
        let per_shard: Vec<(f64, f64)> = (0..SHARDS as usize)
            .map(|s| (calls[s * 2], calls[s * 2 + 1]))
            .collect();
        let largest = per_shard
            .iter()
            .map(|&(a, b)| a.max(b) / (a + b).max(1.0))
            .fold(0.0, f64::max);
        for (index, samples) in samples.iter().enumerate() {
            let ok: Vec<f64> = samples
                .iter()
                .filter(|s| s.status == 200)
                .map(Sample::ms)
                .collect();
            let not_ok = samples.len() - ok.len();
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {:.0} / {:.0} | {:.0} / {:.0} | {} |",
                if feedback { "on" } else { "off" },
                index + 1,
                ok.len(),
                bench::ms(bench::percentile(&ok, 50.0)),
                bench::ms(bench::percentile(&ok, 99.0)),
                bench::ms(bench::percentile(&ok, 99.9)),
                not_ok,
                per_shard[0].0,
                per_shard[0].1,
                per_shard[1].0,
                per_shard[1].1,
                bench::pct(largest, 1.0),
            );
        }
        for frontend in frontends {
            let _ = frontend.stop().await;
        }
    }
    println!("\n{}", bench::machine_load());
    shutdown.cancel();
}

async fn start_frontends(
    etcd: &EtcdServer,
    feedback: bool,
    shutdown: &CancellationToken,
) -> Vec<Frontend> {
    let mut frontends = Vec::new();
    for _ in 0..2 {
        let mut config = FrontendConfig::new(SHARDS);
        config.membership = Some(etcd.url());
        config.cache = false;
        config.admission.enabled = false;
        config.fanout.server_load = feedback;
        frontends.push(
            Frontend::start(config, tests::bind().await, None, shutdown.child_token())
                .await
                .expect("frontend starts"),
        );
    }
    frontends
}

/// Search calls a leaf has answered (every outcome).
fn searches(leaf: &leaf::LeafHandle) -> f64 {
    svc::metrics::encode(leaf.registry())
        .lines()
        .filter(|l| l.starts_with("leaf_search_requests_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}
