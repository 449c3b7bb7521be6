//! Serving path (issue 2): index build rate of 4 shards of the npm corpus, and
//! the frontend's overhead per answer: `took_ms − max(shards[].took_ms)`.
//!
//! ```text
//! cargo run --release -p tests --example bench_serving -- \
//!     [--corpus PATH] [--queries PATH] [--rate 100] [--count 2000]
//! ```

use std::time::{Duration, Instant};

use tests::bench::{self, Load, Pick};
use tests::TestCluster;

#[tokio::main]
async fn main() {
    let corpus = bench::arg("--corpus", bench::DEFAULT_CORPUS);
    let queries = bench::load_queries(bench::arg("--queries", bench::DEFAULT_QUERIES));
    let rate: f64 = bench::arg_num("--rate", 100.0);
    let count: u64 = bench::arg_num("--count", 2000);
    let documents = bench::load_documents(&corpus);

    let started = Instant::now();
    let cluster = TestCluster::builder()
        .shards(4)
        .replicas(1)
        .documents(documents.clone())
        .build()
        .await;
    let wall = started.elapsed();
    let mut indexed = 0u64;
    let mut build_time = Duration::ZERO;
    for leaf in cluster.leaves() {
        let index = leaf.index();
        let report = index.build_report();
        indexed += report.documents;
        build_time += report.duration;
        eprintln!(
            "shard {}: {} docs in {:.2?}",
            leaf.shard(),
            report.documents,
            report.duration
        );
    }

    let client = bench::client();
    let load = Load::new(cluster.url("/search"), queries, Pick::Replay(0)).param("nocache", true);
    // Warm up connections and caches of the OS, unmeasured.
    bench::open_loop(&client, &load, rate, Duration::from_secs(3), 100_000).await;
    let before = bench::scrape(&client, &cluster.admin_url("")).await;
    let duration = Duration::from_secs_f64(count as f64 / rate);
    let samples = bench::open_loop(&client, &load, rate, duration, 0).await;
    let after = bench::scrape(&client, &cluster.admin_url("")).await;

    let ok: Vec<_> = samples
        .iter()
        .filter(|s| s.status == 200 && !s.shard_ms.is_empty())
        .collect();
    let overhead: Vec<f64> = ok.iter().map(|s| s.took_ms - s.max_shard_ms).collect();
    let took: Vec<f64> = ok.iter().map(|s| s.took_ms).collect();
    let slowest: Vec<f64> = ok.iter().map(|s| s.max_shard_ms).collect();
    let client_ms = bench::latencies(&samples, |s| s.status == 200);
    let partial = samples.iter().filter(|s| s.partial).count();
    let errors = samples.iter().filter(|s| s.status != 200).count();
    let mut delta = after.clone();
    for (k, v) in delta.iter_mut() {
        *v -= before.get(k).copied().unwrap_or(0.0);
    }
    let hist50 = bench::histogram_quantile(&delta, "frontend_overhead_seconds", 0.5) * 1e3;
    let hist99 = bench::histogram_quantile(&delta, "frontend_overhead_seconds", 0.99) * 1e3;

    println!(
        "### Index build (4 shards, {} documents)\n",
        documents.len()
    );
    println!("| figure | value |\n|---|---|");
    println!("| documents indexed (sum over shards) | {indexed} |");
    println!(
        "| summed shard build time (`build_report().duration`) | {:.2} s |",
        build_time.as_secs_f64()
    );
    println!(
        "| build rate per leaf (docs indexed ÷ summed build time) | {:.0} docs/s |",
        indexed as f64 / build_time.as_secs_f64()
    );
    println!(
        "| cluster start, wall (4 leaves one after another, frontend, leases) | {:.2} s |",
        wall.as_secs_f64()
    );
    println!(
        "| corpus rate over the cluster start (corpus docs ÷ wall) | {:.0} docs/s |",
        documents.len() as f64 / wall.as_secs_f64()
    );
    println!();
    println!(
        "### Frontend overhead ({} queries in file order at {rate:.0} req/s, nocache=true)\n",
        samples.len()
    );
    println!("| figure | p50 ms | p99 ms | max ms |\n|---|---|---|---|");
    let row = |name: &str, v: &[f64]| {
        println!(
            "| {name} | {} | {} | {} |",
            bench::ms(bench::percentile(v, 50.0)),
            bench::ms(bench::percentile(v, 99.0)),
            bench::ms(bench::percentile(v, 100.0))
        )
    };
    row("overhead: `took_ms − max(shards[].took_ms)`", &overhead);
    row("frontend `took_ms`", &took);
    row("slowest shard `took_ms`", &slowest);
    row("client latency (loopback HTTP included)", &client_ms);
    println!(
        "| `frontend_overhead_seconds` histogram (bucket upper bound) | ≤{} | ≤{} | |",
        bench::ms(hist50),
        bench::ms(hist99)
    );
    println!(
        "\nanswers: {} ok, {partial} partial, {errors} not 200 · {}",
        ok.len(),
        bench::machine_load()
    );
}
