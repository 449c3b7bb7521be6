//! What canary requests cost (issue 16): the same Zipf-sampled query stream,
//! open loop, against two frontends over the same leaves (4 shards, npm
//! corpus, no cache tier, admission off), one with canaries off and one
//! with them on. A request pays for a canary when its query is first seen
//! by the frontend (later ones are known-good); the figures are the share
//! of such requests and their latency with and without canaries.
//!
//! Both frontends are warmed first with queries from the second half of
//! the query file (leaves' caches and code paths, not the measured
//! stream's fingerprints), then the measured stream runs in `--rounds`
//! slices, alternating which frontend goes first, so that neither config
//! gets the machine's quiet or busy stretch alone.
//!
//! ```text
//! cargo run --release -p tests --example bench_canary -- \
//!     [--corpus PATH] [--queries PATH] [--rate 200] [--seconds 30] [--zipf 1.0] \
//!     [--rounds 6] [--warmup-seconds 5]
//! ```

use std::collections::HashSet;
use std::time::Duration;

use frontend_core::config::FrontendConfig;
use tests::bench::{self, ExtraFrontend, Load, Pick, Sample};
use tests::TestCluster;

#[tokio::main]
async fn main() {
    let corpus = bench::arg("--corpus", bench::DEFAULT_CORPUS);
    let queries = bench::load_queries(bench::arg("--queries", bench::DEFAULT_QUERIES));
    let rate: f64 = bench::arg_num("--rate", 200.0);
    let seconds: u64 = bench::arg_num("--seconds", 30);
    let zipf: f64 = bench::arg_num("--zipf", 1.0);
    let rounds: u64 = bench::arg_num("--rounds", 6).max(1);
    let warmup: u64 = bench::arg_num("--warmup-seconds", 5);
    let shards = 4;
    let documents = bench::load_documents(&corpus);

    let cluster = TestCluster::builder()
        .shards(shards)
        .replicas(1)
        .documents(documents)
        .frontend(|c| {
            c.admission.enabled = false;
            c.root.canary.enabled = false;
        })
        .build()
        .await;
    let leaves: Vec<String> = cluster
        .leaves()
        .map(|leaf| leaf.advertised().to_string())
        .collect();
    let mut config = FrontendConfig::new(shards);
    config.admission.enabled = false;
    let with_canaries = ExtraFrontend::start(config, leaves, 1).await;

    let client = bench::client();
    let pick = Pick::zipf(queries.len(), zipf, 16);
    let count = (rate * seconds as f64).round() as u64;
    // Which requests carry a query not seen before in the stream.
    let mut seen = HashSet::new();
    let first_seen: Vec<bool> = (0..count)
        .map(|i| seen.insert(pick.index(i, queries.len())))
        .collect();

    // Warm-up on queries the measured stream never sends.
    let tail = std::sync::Arc::new(queries[queries.len() / 2..].to_vec());
    let warm_pick = Pick::zipf(tail.len(), zipf, 17);
    for url in [cluster.url("/search"), with_canaries.search_url()] {
        let load = Load::new(url, tail.clone(), warm_pick.clone());
        bench::open_loop(&client, &load, rate, Duration::from_secs(warmup), 0).await;
    }

    let off_load = Load::new(cluster.url("/search"), queries.clone(), pick.clone());
    let on_load = Load::new(with_canaries.search_url(), queries.clone(), pick.clone());
    let per_round = count / rounds;
    let slice = Duration::from_secs_f64(per_round as f64 / rate);
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let first = round * per_round;
        let order = if round % 2 == 0 {
            [(&off_load, false), (&on_load, true)]
        } else {
            [(&on_load, true), (&off_load, false)]
        };
        for (load, canaries) in order {
            let samples = bench::open_loop(&client, load, rate, slice, first).await;
            if canaries {
                on.extend(samples);
            } else {
                off.extend(samples);
            }
        }
    }
    let count = per_round * rounds;
    let first_seen = &first_seen[..count as usize];

    let share = first_seen.iter().filter(|&&f| f).count() as f64;
    println!(
        "### Canary requests: Zipf({zipf}) over {} queries, {rate:.0} req/s open loop for \
         {seconds} s per config in {rounds} alternated rounds after {warmup} s of warm-up each, \
         {shards} shards × 1 replica, no cache tier\n",
        queries.len()
    );
    println!(
        "{} of {count} requests carry a first-seen query and pay for a canary \
         ({} in the last 10 s)\n",
        bench::pct(share, count as f64),
        bench::pct(
            first_seen
                .iter()
                .skip(count.saturating_sub((rate * 10.0) as u64) as usize)
                .filter(|&&f| f)
                .count() as f64,
            (rate * 10.0).min(count as f64),
        ),
    );
    println!("| requests | canaries | count | p50 ms | p90 ms | p99 ms | p99.9 ms |");
    println!("|---|---|---|---|---|---|---|");
    for (name, keep) in [("first-seen", true), ("known-good (repeats)", false)] {
        for (label, samples) in [("off", &off), ("on", &on)] {
            let v = select(samples, first_seen, Some(keep));
            row(name, label, &v);
        }
    }
    for (label, samples) in [("off", &off), ("on", &on)] {
        row("all", label, &select(samples, first_seen, None));
    }
    let errors = |s: &[Sample]| s.iter().filter(|s| s.status != 200).count();
    let (_, metrics) = get(&client, &format!("{}/metrics", with_canaries.admin_base())).await;
    let canary_lines: Vec<&str> = metrics
        .lines()
        .filter(|l| {
            l.starts_with("frontend_canaries_total")
                || l.starts_with("frontend_queries_rejected_total")
        })
        .collect();
    println!(
        "\nnot 200: {} off, {} on · canaries: {} · {}",
        errors(&off),
        errors(&on),
        canary_lines.join(", "),
        bench::machine_load()
    );
}

fn select(samples: &[Sample], first_seen: &[bool], keep: Option<bool>) -> Vec<f64> {
    samples
        .iter()
        .zip(first_seen)
        .filter(|(s, &f)| s.status == 200 && keep.is_none_or(|k| k == f))
        .map(|(s, _)| s.ms())
        .collect()
}

fn row(name: &str, label: &str, v: &[f64]) {
    println!(
        "| {name} | {label} | {} | {} | {} | {} | {} |",
        v.len(),
        bench::ms(bench::percentile(v, 50.0)),
        bench::ms(bench::percentile(v, 90.0)),
        bench::ms(bench::percentile(v, 99.0)),
        bench::ms(bench::percentile(v, 99.9)),
    );
}

async fn get(client: &reqwest::Client, url: &str) -> (u16, String) {
    match client.get(url).send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            (status, response.text().await.unwrap_or_default())
        }
        Err(_) => (0, String::new()),
    }
}
