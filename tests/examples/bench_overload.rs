//! Overload (issue 7): 4 shards of the npm corpus; a quick open-loop ramp
//! finds the capacity (highest rate with p99 ≤ the objective and ≤ 1% not
//! 200), then 0.5×, 1×, 2×, 4× of it are offered to two frontends over the
//! same leaves, admission control on and off, side by side.
//!
//! ```text
//! cargo run --release -p tests --example bench_overload -- \
//!     [--corpus PATH] [--queries PATH] [--objective-ms 100] [--start-rate 100] \
//!     [--capacity R (skip the ramp)] [--seconds 10]
//! ```

use std::time::Duration;

use frontend_core::FrontendConfig;
use tests::bench::{self, ExtraFrontend, Load, Pick, Sample};

fn within(samples: &[Sample], objective_ms: f64) -> usize {
    samples
        .iter()
        .filter(|s| s.status == 200 && s.ms() <= objective_ms)
        .count()
}

#[tokio::main]
async fn main() {
    let corpus = bench::arg("--corpus", bench::DEFAULT_CORPUS);
    let queries = bench::load_queries(bench::arg("--queries", bench::DEFAULT_QUERIES));
    let objective_ms: f64 = bench::arg_num("--objective-ms", 100.0);
    let start_rate: f64 = bench::arg_num("--start-rate", 100.0);
    let seconds: f64 = bench::arg_num("--seconds", 10.0);
    let documents = bench::load_documents(&corpus);

    // Kept alive to the end: the extra frontends search its leaves.
    let (_cluster, leaves) = bench::uncached_cluster(documents, 1).await;
    let config = |admission: bool| {
        let mut config = FrontendConfig::new(4);
        config.admission.enabled = admission;
        config.admission.latency_target = Duration::from_secs_f64(objective_ms / 1e3);
        config
    };
    let on = ExtraFrontend::start(config(true), leaves.clone(), 1).await;
    let off = ExtraFrontend::start(config(false), leaves, 1).await;
    let client = bench::client();
    let load_for = |fe: &ExtraFrontend| {
        let mut load = Load::new(
            fe.search_url(),
            queries.clone(),
            Pick::zipf(queries.len(), 0.0, 3),
        )
        .param("nocache", true)
        .param("timeout_ms", objective_ms as u64);
        load.request_timeout = Duration::from_secs(2);
        load
    };
    let mut n = 0u64;

    // The ramp, on the frontend without admission control.
    let mut capacity: f64 = bench::arg_num("--capacity", 0.0);
    if capacity == 0.0 {
        println!("### Capacity ramp (admission off), objective p99 ≤ {objective_ms} ms\n");
        println!("| offered req/s | p50 ms | p99 ms | not 200 | partial | holds |\n|---|---|---|---|---|---|");
        let mut rate = start_rate;
        bench::open_loop(&client, &load_for(&off), rate, Duration::from_secs(3), n).await;
        loop {
            n += 1_000_000;
            let samples =
                bench::open_loop(&client, &load_for(&off), rate, Duration::from_secs(5), n).await;
            let all = bench::latencies(&samples, |s| s.status != 0);
            let bad = samples.iter().filter(|s| s.status != 200).count() as f64;
            let partial = samples.iter().filter(|s| s.partial).count() as f64;
            let p99 = bench::percentile(&all, 99.0);
            let holds = p99 <= objective_ms && bad <= 0.01 * samples.len() as f64;
            println!(
                "| {rate:.0} | {} | {} | {} | {} | {} |",
                bench::ms(bench::percentile(&all, 50.0)),
                bench::ms(p99),
                bench::pct(bad, samples.len() as f64),
                bench::pct(partial, samples.len() as f64),
                if holds { "yes" } else { "no" }
            );
            if !holds || rate > 5000.0 {
                break;
            }
            capacity = rate;
            rate *= 1.25;
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        println!(
            "\ncapacity: {capacity:.0} req/s · {}\n",
            bench::machine_load()
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
    }

    println!(
        "### Offered load against capacity {capacity:.0} req/s, {seconds:.0} s each, \
         objective {objective_ms} ms\n"
    );
    println!(
        "| offered | admission | goodput/s (200 within objective) | goodput ÷ peak | p99 of 200s ms | \
         partial | 503s | p99 of 503s ms | no answer (2 s) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut rows = Vec::new();
    let mut peak = [0.0f64; 2];
    for factor in [0.5, 1.0, 2.0, 4.0] {
        for (which, fe) in [(0usize, &on), (1, &off)] {
            n += 1_000_000;
            let rate = capacity * factor;
            let samples = bench::open_loop(
                &client,
                &load_for(fe),
                rate,
                Duration::from_secs_f64(seconds),
                n,
            )
            .await;
            let goodput = within(&samples, objective_ms) as f64 / seconds;
            peak[which] = peak[which].max(goodput);
            rows.push((factor, which, goodput, samples));
            // Let a backlog drain before the next run.
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
    }
    for (factor, which, goodput, samples) in &rows {
        let ok = bench::latencies(samples, |s| s.status == 200);
        let rejected = bench::latencies(samples, |s| s.status == 503);
        let partial = samples.iter().filter(|s| s.partial).count() as f64;
        let none = samples.iter().filter(|s| s.status == 0).count();
        let n = samples.len() as f64;
        println!(
            "| {factor}× ({:.0}/s) | {} | {goodput:.0} | {:.0}% | {} | {} | {} | {} | {none} |",
            capacity * factor,
            if *which == 0 { "on" } else { "off" },
            100.0 * goodput / peak[*which],
            bench::ms(bench::percentile(&ok, 99.0)),
            bench::pct(partial, n),
            bench::pct(rejected.len() as f64, n),
            bench::ms(bench::percentile(&rejected, 99.0)),
        );
    }
    println!(
        "\nLatency is client-side from each request's scheduled send time (the load \
         generator shares the 2 cores) · {}",
        bench::machine_load()
    );
}
