//! Cache tier (issue 4): 4 shards + 2 cache servers on the npm corpus;
//! Zipf(1.0)-sampled queries at a fixed open-loop rate for 60 s (hit rate per
//! 10 s, latency of hits and misses), then closed-loop throughput with and
//! without the cache tier (`nocache=true` bypasses it on the same frontend).
//!
//! ```text
//! cargo run --release -p tests --example bench_cache -- \
//!     [--corpus PATH] [--queries PATH] [--rate 200] [--seconds 60] \
//!     [--clients 16] [--closed-seconds 20] [--zipf 1.0]
//! ```

use std::time::Duration;

use tests::bench::{self, Load, Pick, Sample};
use tests::TestCluster;

/// `503: 12, 0: 3` for the answers that are not 200.
fn by_status(samples: &[Sample]) -> String {
    let mut counts = std::collections::BTreeMap::new();
    for s in samples.iter().filter(|s| s.status != 200) {
        *counts.entry(s.status).or_insert(0usize) += 1;
    }
    if counts.is_empty() {
        return "0".to_string();
    }
    counts
        .iter()
        .map(|(status, n)| format!("{status}: {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[tokio::main]
async fn main() {
    let corpus = bench::arg("--corpus", bench::DEFAULT_CORPUS);
    let queries = bench::load_queries(bench::arg("--queries", bench::DEFAULT_QUERIES));
    let rate: f64 = bench::arg_num("--rate", 200.0);
    let seconds: u64 = bench::arg_num("--seconds", 60);
    let clients: usize = bench::arg_num("--clients", 16);
    let closed_seconds: u64 = bench::arg_num("--closed-seconds", 20);
    let zipf: f64 = bench::arg_num("--zipf", 1.0);
    // Admission control off by default: this measures the cache tier's
    // throughput, not the shedding (see bench_overload).
    let admission = bench::arg("--admission", "off") == "on";
    let documents = bench::load_documents(&corpus);

    let cluster = TestCluster::builder()
        .shards(4)
        .replicas(1)
        .caches(2)
        .documents(documents)
        .frontend(|c| c.admission.enabled = admission)
        .build()
        .await;
    let client = bench::client();
    let pick = Pick::zipf(queries.len(), zipf, 11);
    let load = Load::new(cluster.url("/search"), queries.clone(), pick.clone());

    let samples = bench::open_loop(&client, &load, rate, Duration::from_secs(seconds), 0).await;

    println!(
        "### Cache tier: Zipf({zipf}) over {} queries, {rate:.0} req/s open loop for {seconds} s, \
         cold cache at start\n",
        queries.len()
    );
    println!("| seconds | requests | hit rate | p50 ms | p99 ms |\n|---|---|---|---|---|");
    for bucket in 0..seconds.div_ceil(10) {
        let part: Vec<Sample> = samples
            .iter()
            .filter(|s| s.at.as_secs() / 10 == bucket)
            .cloned()
            .collect();
        let hits = part.iter().filter(|s| s.cache == "hit").count() as f64;
        let all = bench::latencies(&part, |s| s.status == 200);
        println!(
            "| {}–{} | {} | {} | {} | {} |",
            bucket * 10,
            bucket * 10 + 10,
            part.len(),
            bench::pct(hits, part.len() as f64),
            bench::ms(bench::percentile(&all, 50.0)),
            bench::ms(bench::percentile(&all, 99.0)),
        );
    }
    println!("\n| answers | count | p50 ms | p99 ms | max ms |\n|---|---|---|---|---|");
    for kind in ["hit", "miss"] {
        let v = bench::latencies(&samples, |s| s.status == 200 && s.cache == kind);
        println!(
            "| cache {kind} | {} | {} | {} | {} |",
            v.len(),
            bench::ms(bench::percentile(&v, 50.0)),
            bench::ms(bench::percentile(&v, 99.0)),
            bench::ms(bench::percentile(&v, 100.0)),
        );
    }
    let errors = samples.iter().filter(|s| s.status != 200).count();
    let partial = samples.iter().filter(|s| s.partial).count();
    println!(
        "\n{errors} answers not 200 ({}), {partial} partial · {}",
        by_status(&samples),
        bench::machine_load()
    );

    println!(
        "\n### Closed-loop throughput: {clients} clients, {closed_seconds} s each, same Zipf queries, \
         admission control {}\n",
        if admission { "on" } else { "off" }
    );
    println!(
        "| cache tier | answers/s (200) | hit rate of 200s | p50 ms | p99 ms | not 200 (by status) |\n|---|---|---|---|---|---|"
    );
    for (name, load) in [
        ("on (warm from the run above)", load.clone()),
        (
            "off (`nocache=true`)",
            load.clone().param("nocache", "true"),
        ),
    ] {
        let samples = bench::closed_loop(
            &client,
            &load,
            clients,
            Duration::from_secs(closed_seconds),
            50_000_000,
        )
        .await;
        let ok = bench::latencies(&samples, |s| s.status == 200);
        let hits = samples
            .iter()
            .filter(|s| s.status == 200 && s.cache == "hit")
            .count() as f64;
        println!(
            "| {name} | {:.0} | {} | {} | {} | {} |",
            ok.len() as f64 / closed_seconds as f64,
            bench::pct(hits, ok.len() as f64),
            bench::ms(bench::percentile(&ok, 50.0)),
            bench::ms(bench::percentile(&ok, 99.0)),
            by_status(&samples),
        );
    }
    println!("\n{}", bench::machine_load());
}
