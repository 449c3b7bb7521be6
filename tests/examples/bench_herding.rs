//! Herding (issue 16, point 3): two frontends sharing the same leaves
//! through etcd membership, each offered the same open-loop rate at the
//! same time, with and without the leaf-reported load (in flight, queued,
//! service time) in replica choice. Without it each frontend ranks
//! replicas by its own view only, and both may pile onto the replica that
//! looks fastest; with it a replica that is busy with the other frontend's
//! calls looks busy to both.
//!
//! Every replica has a bounded capacity, as a real one on its own host
//! does: one search slot (`max_concurrent = 1`) that each search holds for
//! `--hold-ms` (the leaf's `hold` fault knob, a sleep, so the four
//! replicas in this process do not compete for the 2 cores); calls beyond
//! it queue at the leaf. Herding then shows as queueing: the calls both
//! frontends send to one replica in the same short window. Every
//! `--window-ms` the bench reads each leaf's call counters and reports how
//! far the windows' split between a shard's two replicas strays from even.
//!
//! ```text
//! cargo build --release -p tests --example bench_herding
//! cd tests && ../target/release/examples/bench_herding \
//!     [--corpus PATH] [--queries PATH] [--docs 50000] [--rate 150] [--seconds 10] \
//!     [--hold-ms 1] [--window-ms 100] [--rounds 4]
//! ```
//!
//! Needs `etcd` on the PATH (Debian `etcd-server`).

use std::sync::Arc;
use std::time::Duration;

use frontend_core::{Frontend, FrontendConfig};
use leaf::{CorpusSource, LeafConfig, LeafHandle, LeaseConfig};
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
    let seconds: u64 = bench::arg_num("--seconds", 10);
    let hold = Duration::from_secs_f64(bench::arg_num::<f64>("--hold-ms", 1.0) / 1e3);
    let window = Duration::from_millis(bench::arg_num("--window-ms", 100));
    let rounds: usize = bench::arg_num("--rounds", 4);
    let mut documents = bench::load_documents(&corpus).as_ref().clone();
    documents.truncate(docs);
    let documents = Arc::new(documents);

    let etcd = EtcdServer::start().await;
    let shutdown = CancellationToken::new();
    let mut leaves = Vec::new();
    for shard in 0..SHARDS {
        for _replica in 0..REPLICAS {
            let mut config = LeafConfig::new(shard, SHARDS);
            config.lease = Some(LeaseConfig {
                frontends: vec![etcd.url()],
                token: None,
                ttl: Duration::from_secs(3),
            });
            config.limits.max_concurrent = 1;
            config.faults.hold = hold;
            let leaf = leaf::start(
                config,
                CorpusSource::Documents(Arc::clone(&documents)),
                tests::bind().await,
                None,
                shutdown.child_token(),
            )
            .await
            .expect("leaf starts");
            leaves.push(leaf);
        }
    }

    let client = bench::client();
    println!(
        "### Herding: 2 frontends on etcd membership over {SHARDS} shards × {REPLICAS} replicas \
         ({} documents), each replica one slot held {:.1} ms per search (≤ {:.0} searches/s), \
         {rate:.0} req/s open loop to each frontend at once for {seconds} s, windows of {} ms\n",
        documents.len(),
        hold.as_secs_f64() * 1e3,
        1.0 / hold.as_secs_f64().max(1e-9),
        window.as_millis(),
    );
    println!(
        "| leaf-reported load | frontend | answers | p50 ms | p99 ms | p99.9 ms | not 200 | \
         replica calls, shard 0 (a / b) | shard 1 (a / b) | busier replica's share per window | \
         windows ≥ 75% on one replica | one frontend's busier share | both frontends on the same replica |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut configs = Vec::new();
    for _ in 0..rounds {
        configs.extend([false, true]);
    }
    for feedback in configs {
        let frontends = start_frontends(&etcd, feedback, &shutdown).await;
        for frontend in &frontends {
            assert!(
                tests::wait_routed(frontend, REPLICAS as usize).await,
                "frontend never routed every replica"
            );
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
        // Warm-up, then the measured stretch with calls counted per
        // replica every window.
        futures::future::join_all(
            loads
                .iter()
                .map(|l| bench::open_loop(&client, l, rate, Duration::from_secs(3), 1_000_000)),
        )
        .await;
        let stop = CancellationToken::new();
        let measured = async {
            let samples: Vec<Vec<Sample>> =
                futures::future::join_all(loads.iter().enumerate().map(|(i, l)| {
                    bench::open_loop(&client, l, rate, Duration::from_secs(seconds), i as u64 * 7)
                }))
                .await;
            stop.cancel();
            samples
        };
        let (samples, windows) =
            tokio::join!(measured, sample_calls(&leaves, &frontends, window, &stop));
        let balance = Balance::of(&windows);
        for (index, samples) in samples.iter().enumerate() {
            let ok: Vec<f64> = samples
                .iter()
                .filter(|s| s.status == 200)
                .map(Sample::ms)
                .collect();
            let not_ok = samples.len() - ok.len();
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {:.0} / {:.0} | {:.0} / {:.0} | {} | {} | {} | {} |",
                if feedback { "on" } else { "off" },
                index + 1,
                ok.len(),
                bench::ms(bench::percentile(&ok, 50.0)),
                bench::ms(bench::percentile(&ok, 99.0)),
                bench::ms(bench::percentile(&ok, 99.9)),
                not_ok,
                balance.totals[0],
                balance.totals[1],
                balance.totals[2],
                balance.totals[3],
                bench::pct(balance.mean_busier_share, 1.0),
                bench::pct(balance.lopsided_windows, 1.0),
                bench::pct(balance.frontend_busier_share, 1.0),
                bench::pct(balance.same_choice, 1.0),
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

/// Calls per window: what each leaf received (every outcome), and what
/// each frontend sent each leaf, in the order of `leaves` (shard 0
/// replica a, shard 0 replica b, shard 1 …).
struct Window {
    leaves: Vec<u64>,
    frontends: Vec<Vec<u64>>,
}

async fn sample_calls(
    leaves: &[LeafHandle],
    frontends: &[Frontend],
    window: Duration,
    stop: &CancellationToken,
) -> Vec<Window> {
    let received = || -> Vec<u64> {
        leaves
            .iter()
            .map(|l| {
                let s = l.stats();
                s.searches
                    + s.early_stops
                    + s.cancelled
                    + s.deadline_exceeded
                    + s.rejected
                    + s.invalid
                    + s.errors
            })
            .collect()
    };
    let sent = || -> Vec<Vec<u64>> {
        frontends
            .iter()
            .map(|f| {
                let topology = f.root.fanout.routing().snapshot();
                leaves
                    .iter()
                    .map(|l| {
                        topology
                            .shards
                            .get(l.shard() as usize)
                            .and_then(|replicas| {
                                replicas.iter().find(|r| r.member.address == l.advertised())
                            })
                            .map_or(0, |r| r.load.calls_started())
                    })
                    .collect()
            })
            .collect()
    };
    let minus = |now: &[u64], last: &[u64]| -> Vec<u64> {
        now.iter()
            .zip(last)
            .map(|(n, l)| n.saturating_sub(*l))
            .collect()
    };
    let mut windows = Vec::new();
    let (mut last_received, mut last_sent) = (received(), sent());
    let mut ticks = tokio::time::interval(window);
    ticks.tick().await;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = stop.cancelled() => break,
        }
        let (now_received, now_sent) = (received(), sent());
        windows.push(Window {
            leaves: minus(&now_received, &last_received),
            frontends: now_sent
                .iter()
                .zip(&last_sent)
                .map(|(n, l)| minus(n, l))
                .collect(),
        });
        (last_received, last_sent) = (now_received, now_sent);
    }
    windows
}

/// How evenly a run's calls fell between each shard's two replicas.
struct Balance {
    /// Calls per leaf over the run.
    totals: Vec<u64>,
    /// Mean over (window, shard) of the busier replica's share of the
    /// shard's calls in that window (50% = even).
    mean_busier_share: f64,
    /// Share of (window, shard) pairs where one replica took ≥ 75%.
    lopsided_windows: f64,
    /// Mean over (window, shard, frontend) of the share of a frontend's
    /// calls to the shard that went to its own busier replica.
    frontend_busier_share: f64,
    /// Share of (window, shard) pairs, where each frontend sent one
    /// replica ≥ 75% of its calls, in which both chose the same replica:
    /// herding (independent choices would agree about half the time).
    same_choice: f64,
}

/// Windows with fewer calls to a shard say nothing about balance.
const MIN_CALLS: u64 = 4;

/// The busier replica of `calls` (one shard's replicas) and its share.
fn busier(calls: &[u64]) -> Option<(usize, f64)> {
    let sum: u64 = calls.iter().sum();
    let (index, most) = calls.iter().enumerate().max_by_key(|(_, c)| **c)?;
    (sum >= MIN_CALLS).then(|| (index, *most as f64 / sum as f64))
}

impl Balance {
    fn of(windows: &[Window]) -> Balance {
        let replicas = REPLICAS as usize;
        let mut totals = vec![0u64; (SHARDS * REPLICAS) as usize];
        let (mut shares, mut lopsided, mut counted) = (0.0, 0usize, 0usize);
        let (mut frontend_shares, mut frontend_counted) = (0.0, 0usize);
        let (mut same, mut both_decided) = (0usize, 0usize);
        for window in windows {
            for (total, calls) in totals.iter_mut().zip(&window.leaves) {
                *total += calls;
            }
            for (shard, calls) in window.leaves.chunks(replicas).enumerate() {
                if let Some((_, share)) = busier(calls) {
                    shares += share;
                    lopsided += usize::from(share >= 0.75);
                    counted += 1;
                }
                let choices: Vec<Option<(usize, f64)>> = window
                    .frontends
                    .iter()
                    .map(|sent| busier(&sent[shard * replicas..(shard + 1) * replicas]))
                    .collect();
                for (_, share) in choices.iter().flatten() {
                    frontend_shares += share;
                    frontend_counted += 1;
                }
                let decided: Vec<usize> = choices
                    .iter()
                    .filter_map(|c| c.filter(|(_, share)| *share >= 0.75).map(|(i, _)| i))
                    .collect();
                if decided.len() == window.frontends.len() && decided.len() > 1 {
                    both_decided += 1;
                    same += usize::from(decided.iter().all(|&i| i == decided[0]));
                }
            }
        }
        let ratio = |part: f64, whole: usize| part / whole.max(1) as f64;
        Balance {
            totals,
            mean_busier_share: ratio(shares, counted),
            lopsided_windows: ratio(lopsided as f64, counted),
            frontend_busier_share: ratio(frontend_shares, frontend_counted),
            same_choice: ratio(same as f64, both_decided),
        }
    }
}
