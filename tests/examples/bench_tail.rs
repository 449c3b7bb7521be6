//! Tail tolerance (issue 5): 4 shards × 2 replicas of the npm corpus, one
//! replica of each shard making 1% of its calls 50× slower than the median
//! leaf call, the same open-loop rate offered to three frontends over the
//! same leaves, one after the other: (a) wait for every shard, (b) deadline
//! only, (c) deadline + replica choice + hedging + probation.
//!
//! ```text
//! cargo run --release -p tests --example bench_tail -- \
//!     [--corpus PATH] [--queries PATH] [--rate 150] [--seconds 40] \
//!     [--timeout-ms 100] [--delay-ms <50 × median leaf call>]
//! ```
//!
//! Stalls (issue 16), with `--stalls`: 3 shards × 2 replicas as real `leaf`
//! processes (build them first: `cargo build --release -p leaf`), the same
//! three frontends in process, and whole processes frozen with SIGSTOP /
//! SIGCONT: replica 0 of every shard 60 ms of every 600 ms (all at once),
//! 200 ms of every 2 s, and replica 0 of shard 0 frozen for good, after a
//! no-fault baseline, one config after the other in one run:
//!
//! ```text
//! cargo run --release -p tests --example bench_tail -- --stalls \
//!     [--rate 150] [--seconds 20] [--timeout-ms 500] [--only-defaults]
//!     [--with-silence-off] [--scenarios 0,1,2,3] [--diagnose] [--slow-query-ms N]
//! ```
//!
//! With `--interleave [--phase-seconds 2.4]`, each fault scenario runs as
//! one stretch of `--seconds` in which no-fault and fault phases alternate
//! (a periodic freeze's phase is whole periods, at least two; frozen for
//! good, at least 6 s per phase, past the keep-alive's 3 s), and each
//! request counts as a fault sample when it ran during a fault phase or
//! shortly after one, else as a no-fault sample. Both percentiles then come
//! from the same seconds of the machine's life, so a noisy neighbour moves
//! both, where separate rows measured seconds apart see different machines.

use std::time::Duration;

use frontend_core::FrontendConfig;
use tests::bench::{self, ExtraFrontend, LeafProcesses, Load, Pick};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--stalls") {
        return stalls().await;
    }
    let corpus = bench::arg("--corpus", bench::DEFAULT_CORPUS);
    let queries = bench::load_queries(bench::arg("--queries", bench::DEFAULT_QUERIES));
    let rate: f64 = bench::arg_num("--rate", 150.0);
    let seconds: f64 = bench::arg_num("--seconds", 40.0);
    let timeout_ms: u64 = bench::arg_num("--timeout-ms", 100);
    let documents = bench::load_documents(&corpus);

    let (cluster, leaves) = bench::uncached_cluster(documents, 2).await;

    let config = |wait_for_all: bool, tolerant: bool| {
        let mut config = FrontendConfig::new(4);
        config.cache = false;
        config.admission.enabled = false;
        config.root.wait_for_all = wait_for_all;
        config.fanout.hedging = tolerant;
        config.fanout.replica_choice = tolerant;
        config.fanout.probation = tolerant;
        config.fanout.stuck_replicas = tolerant;
        config.fanout.server_load = tolerant;
        config
    };
    let configs = [
        ("(a) wait for every shard", config(true, false)),
        ("(b) deadline only", config(false, false)),
        (
            "(c) deadline + replica choice + hedging + probation",
            config(false, true),
        ),
    ];
    let mut frontends = Vec::new();
    for (name, config) in configs {
        frontends.push((name, ExtraFrontend::start(config, leaves.clone(), 2).await));
    }

    let client = bench::client();
    let load_for = |fe: &ExtraFrontend| {
        Load::new(
            fe.search_url(),
            queries.clone(),
            Pick::zipf(queries.len(), 0.0, 7),
        )
        .param("nocache", true)
        .param("timeout_ms", timeout_ms)
    };

    // The median leaf call without faults, through frontend (b).
    let calm = bench::open_loop(
        &client,
        &load_for(&frontends[1].1),
        rate,
        Duration::from_secs(5),
        0,
    )
    .await;
    let shard_ms: Vec<f64> = calm.iter().flat_map(|s| s.shard_ms.clone()).collect();
    let leaf_median = bench::median(&shard_ms);
    let delay_ms: f64 = bench::arg_num("--delay-ms", (50.0 * leaf_median).max(1.0));
    eprintln!(
        "median leaf call {leaf_median:.2} ms; delay {delay_ms:.1} ms on 1% of replica 0's calls"
    );
    println!(
        "### Tail tolerance: {rate:.0} req/s open loop for {seconds:.0} s per config, \
         timeout_ms={timeout_ms}, nocache=true\n"
    );
    println!(
        "Median leaf call without faults: {leaf_median:.2} ms; replica 0 of every shard adds \
         {delay_ms:.0} ms to 1% of its calls.\n"
    );
    println!(
        "| config | answers | p50 ms | p99 ms | p99.9 ms | max ms | p99.9 ÷ p50 | partial | \
         errors | later than deadline + 2 ms | hedges ÷ shard queries | \
         extra leaf calls ÷ shard queries |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    // The floor first: config (c) with no slow replica, then every config
    // with the slow replicas.
    let floor = format!("{} — no slow replica (floor)", frontends[2].0);
    let runs = [
        (floor.as_str(), 2, false),
        (frontends[0].0, 0, true),
        (frontends[1].0, 1, true),
        (frontends[2].0, 2, true),
    ];
    for (i, &(name, which, slow)) in runs.iter().enumerate() {
        if slow {
            for shard in 0..4 {
                cluster
                    .leaf(shard, 0)
                    .faults()
                    .set_delay(Duration::from_secs_f64(delay_ms / 1e3), 0.01);
            }
        }
        let fe = &frontends[which].1;
        let load = load_for(fe);
        // Warm up: connections, latency windows for the hedge delay.
        bench::open_loop(&client, &load, rate, Duration::from_secs(5), 1_000_000).await;
        let before = bench::scrape(&client, &fe.admin_base()).await;
        let samples = bench::open_loop(
            &client,
            &load,
            rate,
            Duration::from_secs_f64(seconds),
            10_000_000 * (i as u64 + 1),
        )
        .await;
        let after = bench::scrape(&client, &fe.admin_base()).await;
        let diff = |name: &str, filters: &[&str]| {
            bench::metric(&after, name, filters) - bench::metric(&before, name, filters)
        };
        let shard_queries = diff("frontend_shard_results_total", &[]);
        let calls = diff("frontend_leaf_calls_total", &[])
            - diff("frontend_leaf_calls_total", &["outcome=\"unavailable\""]);
        let hedges = diff("frontend_hedges_total", &[]);
        let all = bench::latencies(&samples, |s| s.status != 0);
        let p50 = bench::percentile(&all, 50.0);
        let p999 = bench::percentile(&all, 99.9);
        let partial = samples.iter().filter(|s| s.partial).count() as f64;
        let errors = samples.iter().filter(|s| s.status != 200).count() as f64;
        let late = all.iter().filter(|&&l| l > timeout_ms as f64 + 2.0).count() as f64;
        let n = samples.len() as f64;
        println!(
            "| {name} | {} | {} | {} | {} | {} | {:.1} | {} | {} | {} | {} | {} |",
            samples.len(),
            bench::ms(p50),
            bench::ms(bench::percentile(&all, 99.0)),
            bench::ms(p999),
            bench::ms(bench::percentile(&all, 100.0)),
            p999 / p50,
            bench::pct(partial, n),
            bench::pct(errors, n),
            bench::pct(late, n),
            bench::pct(hedges, shard_queries),
            bench::pct(calls - shard_queries, shard_queries),
        );
    }
    println!(
        "\nLatency is client-side from each request's scheduled send time · {}",
        bench::machine_load()
    );
}

/// How leaf processes are frozen during a run.
#[derive(Clone, Copy)]
enum Freeze {
    None,
    /// Replica 0 of every shard, `frozen` of every `period`, all at once.
    Periodic {
        frozen: Duration,
        period: Duration,
    },
    /// Replica 0 of shard 0 for the whole run.
    ForGood,
}

async fn stalls() {
    const SHARDS: u32 = 3;
    let corpus = bench::arg("--corpus", bench::DEFAULT_CORPUS);
    let queries = bench::load_queries(bench::arg("--queries", bench::DEFAULT_QUERIES));
    let rate: f64 = bench::arg_num("--rate", 150.0);
    let seconds: f64 = bench::arg_num("--seconds", 20.0);
    let timeout_ms: u64 = bench::arg_num("--timeout-ms", 500);
    let leaves = LeafProcesses::start(&corpus, SHARDS, 2).await;
    // `--slow-query-ms N`: the frontends' slow-query log (stage times of
    // every search slower than N ms) on stderr.
    let slow_query: u64 = bench::arg_num("--slow-query-ms", 0);
    if slow_query > 0 {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("frontend_core=warn"))
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .try_init();
    }

    let config = |wait_for_all: bool, tolerant: bool| {
        let mut config = FrontendConfig::new(SHARDS);
        config.cache = false;
        config.admission.enabled = false;
        config.root.wait_for_all = wait_for_all;
        config.fanout.hedging = tolerant;
        config.fanout.replica_choice = tolerant;
        config.fanout.probation = tolerant;
        config.fanout.stuck_replicas = tolerant;
        config.fanout.server_load = tolerant;
        config.root.slow_query = (slow_query > 0).then(|| Duration::from_millis(slow_query));
        config
    };
    let diagnose = std::env::args().any(|a| a == "--diagnose");
    let configs = if diagnose {
        // Which stage before the fan-out waits for a frozen replica: the
        // defaults with canaries and/or global statistics turned off.
        let without = |canary: bool, stats: bool| {
            let mut config = config(false, true);
            config.root.canary.enabled = canary;
            config.root.global_stats = stats;
            config
        };
        vec![
            ("(c) tail-tolerant (defaults)", without(true, true)),
            ("(c) without canaries", without(false, true)),
            ("(c) without global statistics", without(true, false)),
            ("(c) without either", without(false, false)),
        ]
    } else {
        vec![
            ("(a) wait for every shard", config(true, false)),
            ("(b) deadline only", config(false, false)),
            ("(c) tail-tolerant (defaults)", config(false, true)),
        ]
    };
    let mut configs = configs;
    if std::env::args().any(|a| a == "--with-silence-off") {
        // The defaults with only the silence rule off, side by side.
        let mut without_silence = config(false, true);
        without_silence.fanout.silent_replicas = false;
        configs.push(("(c) tail-tolerant, silence rule off", without_silence));
    }
    if std::env::args().any(|a| a == "--only-defaults") {
        configs.retain(|(name, _)| name.starts_with("(c) tail-tolerant"));
    }
    let mut frontends = Vec::new();
    for (name, config) in configs {
        frontends.push((
            name,
            ExtraFrontend::start(config, leaves.addresses(), 2).await,
        ));
    }
    let client = bench::client();
    let load_for = |fe: &ExtraFrontend| {
        Load::new(
            fe.search_url(),
            queries.clone(),
            Pick::zipf(queries.len(), 0.0, 11),
        )
        .param("nocache", true)
        .param("timeout_ms", timeout_ms)
    };
    let scenarios = [
        ("no fault", Freeze::None),
        (
            "replica 0 of every shard frozen 60 ms every 600 ms",
            Freeze::Periodic {
                frozen: Duration::from_millis(60),
                period: Duration::from_millis(600),
            },
        ),
        (
            "replica 0 of every shard frozen 200 ms every 2 s",
            Freeze::Periodic {
                frozen: Duration::from_millis(200),
                period: Duration::from_secs(2),
            },
        ),
        ("replica 0 of shard 0 frozen for good", Freeze::ForGood),
    ];
    // `--scenarios 0,1` runs only those rows of the list above;
    // `--only-defaults` only config (c).
    let picked: Vec<usize> = bench::arg("--scenarios", if diagnose { "0,1" } else { "0,1,2,3" })
        .split(',')
        .filter_map(|i| i.trim().parse().ok())
        .collect();
    let scenarios: Vec<_> = picked
        .iter()
        .filter_map(|&i| scenarios.get(i).copied())
        .collect();
    let every_replica_0: Vec<(u32, u32)> = (0..SHARDS).map(|s| (s, 0)).collect();
    if std::env::args().any(|a| a == "--interleave") {
        println!(
            "### Stalls, interleaved: {SHARDS} shards × 2 replicas as leaf processes, {rate:.0} \
             req/s open loop for about {seconds:.0} s per config and scenario, \
             timeout_ms={timeout_ms}, nocache=true"
        );
        let phase = Duration::from_secs_f64(bench::arg_num("--phase-seconds", 2.4));
        let mut slowest = Vec::new();
        let faulty = scenarios.iter().filter(|(_, f)| !matches!(f, Freeze::None));
        for (stretch, &(scenario, freeze)) in faulty.enumerate() {
            println!("\n#### {scenario}\n");
            println!("{}", Interleaved::HEADER);
            for (name, fe) in &frontends {
                let load = load_for(fe);
                let row = interleaved(
                    &leaves,
                    &every_replica_0,
                    fe,
                    &load,
                    freeze,
                    phase,
                    seconds,
                    rate,
                    &client,
                    // The same queries for every config of a stretch, new
                    // ones (mostly first-seen) for the next stretch.
                    7_000_000 + stretch as u64 * 1_000_000,
                )
                .await;
                println!("{}", row.line(name));
                slowest.extend(row.slowest.iter().map(|s| format!("- {name}: {s}")));
            }
            if !slowest.is_empty() {
                println!("\nSlowest samples:\n\n{}", slowest.join("\n"));
                slowest.clear();
            }
        }
        println!(
            "\nLatency is client-side from each request's scheduled send time; a request \
             is a fault sample when it ran during a fault phase or within {} ms after one \
             ({} ms after a freeze for good), a no-fault sample otherwise · {}",
            grace(Freeze::None).as_millis(),
            grace(Freeze::ForGood).as_millis(),
            bench::machine_load()
        );
        return;
    }
    println!(
        "### Stalls: {SHARDS} shards × 2 replicas as leaf processes, {rate:.0} req/s open loop \
         for {seconds:.0} s per row, timeout_ms={timeout_ms}, nocache=true\n"
    );
    println!(
        "| scenario | config | answers | p50 ms | p99 ms | p99.9 ms | max ms | p99 ÷ no-fault | \
         p99.9 ÷ no-fault | partial | errors | hedges ÷ shard queries | \
         extra leaf calls ÷ shard queries |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut baseline = vec![(f64::NAN, f64::NAN); frontends.len()];
    let mut run = 0u64;
    let mut notes = Vec::new();
    for &(scenario, freeze) in &scenarios {
        for (which, (name, fe)) in frontends.iter().enumerate() {
            run += 1;
            let load = load_for(fe);
            // Warm up without faults: connections, latency windows.
            bench::open_loop(
                &client,
                &load,
                rate,
                Duration::from_secs(2),
                run * 1_000_000,
            )
            .await;
            let before = bench::scrape(&client, &fe.admin_base()).await;
            let stop = CancellationToken::new();
            let measured = bench::open_loop(
                &client,
                &load,
                rate,
                Duration::from_secs_f64(seconds),
                run * 1_000_000 + 100_000,
            );
            let samples = match freeze {
                Freeze::None => measured.await,
                Freeze::Periodic { frozen, period } => {
                    let freezer =
                        leaves.freeze_periodically(&every_replica_0, frozen, period, stop.clone());
                    let (samples, ()) = tokio::join!(
                        async {
                            let samples = measured.await;
                            stop.cancel();
                            samples
                        },
                        freezer
                    );
                    samples
                }
                Freeze::ForGood => {
                    leaves.freeze(&[(0, 0)]);
                    let samples = measured.await;
                    leaves.thaw(&[(0, 0)]);
                    samples
                }
            };
            let after = bench::scrape(&client, &fe.admin_base()).await;
            let diff = |name: &str, filters: &[&str]| {
                bench::metric(&after, name, filters) - bench::metric(&before, name, filters)
            };
            let shard_queries = diff("frontend_shard_results_total", &[]);
            let calls = diff("frontend_leaf_calls_total", &[])
                - diff("frontend_leaf_calls_total", &["outcome=\"unavailable\""]);
            // Hedges and retries of the calls before the fan-out (term
            // statistics, canary probes and canaries) count as extra too.
            let side_hedges = diff("frontend_side_calls_total", &["role=\"hedge\""]);
            let side_extra = side_hedges + diff("frontend_side_calls_total", &["role=\"retry\""]);
            let hedges = diff("frontend_hedges_total", &[]) + side_hedges;
            let calls = calls + side_extra;
            let all = bench::latencies(&samples, |s| s.status != 0);
            let p99 = bench::percentile(&all, 99.0);
            let p999 = bench::percentile(&all, 99.9);
            if matches!(freeze, Freeze::None) {
                baseline[which] = (p99, p999);
            }
            let partial = samples.iter().filter(|s| s.partial).count() as f64;
            let errors = samples.iter().filter(|s| s.status != 200).count() as f64;
            let n = samples.len() as f64;
            println!(
                "| {scenario} | {name} | {} | {} | {} | {} | {} | {:.2} | {:.2} | {} | {} | {} | {} |",
                samples.len(),
                bench::ms(bench::percentile(&all, 50.0)),
                bench::ms(p99),
                bench::ms(p999),
                bench::ms(bench::percentile(&all, 100.0)),
                p99 / baseline[which].0,
                p999 / baseline[which].1,
                bench::pct(partial, n),
                bench::pct(errors, n),
                bench::pct(hedges, shard_queries),
                bench::pct(calls - shard_queries, shard_queries),
            );
            notes.push(format!(
                "- {scenario}, {name}: term statistics warm {} fetched {} partial {} local {}; \
                 canaries answered {} ordinary_error {}; hedges denied {}; \
                 hedges of stats {} canaries {} probes {}",
                diff("frontend_term_stats_total", &["source=\"warm\""]),
                diff("frontend_term_stats_total", &["source=\"fetched\""]),
                diff("frontend_term_stats_total", &["source=\"partial\""]),
                diff("frontend_term_stats_total", &["source=\"local\""]),
                diff("frontend_canaries_total", &["outcome=\"answered\""]),
                diff("frontend_canaries_total", &["outcome=\"ordinary_error\""]),
                diff("frontend_hedges_denied_total", &[]),
                diff(
                    "frontend_side_calls_total",
                    &["call=\"stats\"", "role=\"hedge\""]
                ),
                diff(
                    "frontend_side_calls_total",
                    &["call=\"canary\"", "role=\"hedge\""]
                ),
                diff(
                    "frontend_side_calls_total",
                    &["call=\"probe\"", "role=\"hedge\""]
                ),
            ));
            // Let the thawed leaves drain before the next row.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    println!(
        "\nLatency is client-side from each request's scheduled send time; ratios are \
         against the same config's no-fault row · {}",
        bench::machine_load()
    );
    println!("\nBefore the fan-out, per row:\n\n{}", notes.join("\n"));
}

/// Requests after a thaw still count as fault samples for this long: the
/// thawed process drains what queued while it was frozen and, after a long
/// freeze, its callers reconnect (the keep-alive closed their connections).
fn grace(freeze: Freeze) -> Duration {
    match freeze {
        Freeze::ForGood => Duration::from_secs(2),
        Freeze::Periodic { .. } | Freeze::None => Duration::from_millis(500),
    }
}

/// One config's interleaved stretch: no-fault and fault samples of the
/// same seconds.
struct Interleaved {
    clean: Vec<f64>,
    fault: Vec<f64>,
    /// The same without the requests that ran through a steal spike.
    clean_calm: Vec<f64>,
    fault_calm: Vec<f64>,
    /// The stretch's mean CPU steal (the hypervisor's share of the cores).
    steal: f64,
    partial_fault: usize,
    errors: usize,
    answers: usize,
    extra_calls: f64,
    shard_queries: f64,
    phases: usize,
    phase: Duration,
    /// The `--slowest N` slowest samples, described.
    slowest: Vec<String>,
}

impl Interleaved {
    const HEADER: &'static str =
        "| config | phases | no-fault / fault samples | no-fault p50 / p99 / p99.9 ms | \
        fault p50 / p99 / p99.9 ms | p99 ÷ no-fault | p99.9 ÷ no-fault | partial (fault samples) | \
        errors | extra leaf calls ÷ shard queries, whole stretch | CPU steal, mean | \
        without steal spikes: samples, p99 ÷ no-fault, p99.9 ÷ no-fault |\n\
        |---|---|---|---|---|---|---|---|---|---|---|---|";

    fn line(&self, name: &str) -> String {
        let p = |v: &[f64], q: f64| bench::percentile(v, q);
        format!(
            "| {name} | {} × {:.1} s | {} / {} | {} / {} / {} | {} / {} / {} | {:.2} | {:.2} | {} | {} | {} | {} | {} / {}, {:.2}, {:.2} |",
            self.phases,
            self.phase.as_secs_f64(),
            self.clean.len(),
            self.fault.len(),
            bench::ms(p(&self.clean, 50.0)),
            bench::ms(p(&self.clean, 99.0)),
            bench::ms(p(&self.clean, 99.9)),
            bench::ms(p(&self.fault, 50.0)),
            bench::ms(p(&self.fault, 99.0)),
            bench::ms(p(&self.fault, 99.9)),
            p(&self.fault, 99.0) / p(&self.clean, 99.0),
            p(&self.fault, 99.9) / p(&self.clean, 99.9),
            bench::pct(self.partial_fault as f64, self.fault.len() as f64),
            bench::pct(self.errors as f64, self.answers as f64),
            bench::pct(self.extra_calls, self.shard_queries),
            bench::pct(self.steal, 1.0),
            self.clean_calm.len(),
            self.fault_calm.len(),
            p(&self.fault_calm, 99.0) / p(&self.clean_calm, 99.0),
            p(&self.fault_calm, 99.9) / p(&self.clean_calm, 99.9),
        )
    }
}

/// CPU steal on this machine (time the hypervisor gave the cores to other
/// guests), from `/proc/stat`, per window of `STEAL_WINDOW`.
const STEAL_WINDOW: Duration = Duration::from_millis(100);

/// A window whose steal share is at least this is a spike.
const STEAL_SPIKE: f64 = 0.6;

/// The machine's (steal, total) jiffies so far, or zeros where there is no
/// `/proc/stat`.
fn steal_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let values: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|v| v.parse().ok())
        .collect();
    (values.get(7).copied().unwrap_or(0), values.iter().sum())
}

/// Samples the steal share of every `STEAL_WINDOW` from `start` until
/// `stop`.
async fn sample_steal(start: tokio::time::Instant, stop: CancellationToken) -> Vec<f64> {
    let mut shares = Vec::new();
    tokio::time::sleep_until(start).await;
    let mut last = steal_jiffies();
    let mut tick = tokio::time::interval_at(start + STEAL_WINDOW, STEAL_WINDOW);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let now = steal_jiffies();
        let (steal, total) = (now.0 - last.0, now.1 - last.1);
        shares.push(if total == 0 {
            0.0
        } else {
            steal as f64 / total as f64
        });
        last = now;
    }
    shares
}

/// Runs `freeze` in every other phase of one open-loop stretch of about
/// `seconds` against `fe`, and splits the requests into no-fault and fault
/// samples by when they ran.
#[allow(clippy::too_many_arguments)]
async fn interleaved(
    leaves: &LeafProcesses,
    every_replica_0: &[(u32, u32)],
    fe: &ExtraFrontend,
    load: &Load,
    freeze: Freeze,
    phase: Duration,
    seconds: f64,
    rate: f64,
    client: &reqwest::Client,
    seed: u64,
) -> Interleaved {
    let phase = match freeze {
        Freeze::Periodic { period, .. } => {
            let periods = (phase.as_secs_f64() / period.as_secs_f64()).ceil().max(2.0);
            period.mul_f64(periods)
        }
        Freeze::ForGood | Freeze::None => phase.max(Duration::from_secs(6)),
    };
    let phases = ((seconds / phase.as_secs_f64()).round() as usize).max(2) & !1;
    bench::open_loop(client, load, rate, Duration::from_secs(2), seed).await;
    let before = bench::scrape(client, &fe.admin_base()).await;
    let start = tokio::time::Instant::now() + Duration::from_millis(20);
    let measured = bench::open_loop_from(
        client,
        load,
        rate,
        phase * phases as u32,
        seed + 100_000,
        start,
    );
    // Odd phases are the fault phases: [start + i × phase, start + (i+1) × phase).
    let faults: Vec<(Duration, Duration)> = (0..phases)
        .filter(|i| i % 2 == 1)
        .map(|i| (phase * i as u32, phase * (i as u32 + 1)))
        .collect();
    let freezer = async {
        for &(from, to) in &faults {
            tokio::time::sleep_until(start + from).await;
            match freeze {
                Freeze::Periodic { frozen, period } => {
                    let stop = CancellationToken::new();
                    let stopper = {
                        let stop = stop.clone();
                        async move {
                            tokio::time::sleep_until(start + to).await;
                            stop.cancel();
                        }
                    };
                    tokio::join!(
                        leaves.freeze_periodically(every_replica_0, frozen, period, stop),
                        stopper
                    );
                }
                Freeze::ForGood => {
                    leaves.freeze(&[(0, 0)]);
                    tokio::time::sleep_until(start + to).await;
                    leaves.thaw(&[(0, 0)]);
                }
                Freeze::None => {}
            }
        }
    };
    let stop_steal = CancellationToken::new();
    let steal = sample_steal(start, stop_steal.clone());
    let measured = async {
        let samples = measured.await;
        stop_steal.cancel();
        samples
    };
    let (samples, (), steal) = tokio::join!(measured, freezer, steal);
    // A request ran through a spike when any window it overlapped was one.
    let spiked = |s: &bench::Sample| {
        let first = (s.at.as_secs_f64() / STEAL_WINDOW.as_secs_f64()) as usize;
        let last = ((s.at + s.latency).as_secs_f64() / STEAL_WINDOW.as_secs_f64()) as usize;
        steal
            .get(first..=last.min(steal.len().saturating_sub(1)))
            .is_some_and(|w| w.iter().any(|&share| share >= STEAL_SPIKE))
    };
    let after = bench::scrape(client, &fe.admin_base()).await;
    let diff = |name: &str, filters: &[&str]| {
        bench::metric(&after, name, filters) - bench::metric(&before, name, filters)
    };
    let shard_queries = diff("frontend_shard_results_total", &[]);
    let calls = diff("frontend_leaf_calls_total", &[])
        - diff("frontend_leaf_calls_total", &["outcome=\"unavailable\""])
        + diff("frontend_side_calls_total", &["role=\"hedge\""])
        + diff("frontend_side_calls_total", &["role=\"retry\""]);
    let in_fault = |s: &bench::Sample| {
        let (sent, ended) = (s.at, s.at + s.latency);
        faults
            .iter()
            .any(|&(from, to)| sent < to + grace(freeze) && ended > from)
    };
    let note = format!(
        "canaries answered {} ordinary_error {}; term statistics fetched {} partial {}; \
         hedges denied {}; probations {}",
        diff("frontend_canaries_total", &["outcome=\"answered\""]),
        diff("frontend_canaries_total", &["outcome=\"ordinary_error\""]),
        diff("frontend_term_stats_total", &["source=\"fetched\""]),
        diff("frontend_term_stats_total", &["source=\"partial\""]),
        diff("frontend_hedges_denied_total", &[]),
        diff("frontend_probations_total", &[]),
    );
    let mut row = Interleaved {
        clean: Vec::new(),
        fault: Vec::new(),
        clean_calm: Vec::new(),
        fault_calm: Vec::new(),
        steal: steal.iter().sum::<f64>() / steal.len().max(1) as f64,
        partial_fault: 0,
        errors: samples.iter().filter(|s| s.status != 200).count(),
        answers: samples.len(),
        extra_calls: calls - shard_queries,
        shard_queries,
        phases,
        phase,
        slowest: Vec::new(),
    };
    for sample in samples.iter().filter(|s| s.status != 0) {
        let calm = !spiked(sample);
        if in_fault(sample) {
            row.fault.push(sample.ms());
            row.partial_fault += usize::from(sample.partial);
            if calm {
                row.fault_calm.push(sample.ms());
            }
        } else {
            row.clean.push(sample.ms());
            if calm {
                row.clean_calm.push(sample.ms());
            }
        }
    }
    // Where in the fault cycle the slowest requests were sent, and how
    // much of their time the frontend's handler saw.
    let mut slow: Vec<&bench::Sample> = samples.iter().collect();
    slow.sort_by_key(|s| std::cmp::Reverse(s.latency));
    let since_freeze = |s: &bench::Sample| {
        let Some(&(from, _)) = faults.iter().rev().find(|(from, _)| *from <= s.at) else {
            return "before the first fault phase".to_string();
        };
        let into = (s.at - from).as_secs_f64() * 1e3;
        match freeze {
            Freeze::Periodic { frozen, period } => {
                let (period, frozen) = (period.as_secs_f64() * 1e3, frozen.as_secs_f64() * 1e3);
                format!(
                    "{:.1} ms after a freeze began",
                    (into - (period - frozen)).rem_euclid(period)
                )
            }
            _ => format!("{into:.0} ms into a fault phase"),
        }
    };
    row.slowest = std::iter::once(note)
        .chain(slow.iter().take(bench::arg_num("--slowest", 0)).map(|s| {
            format!(
                "{} {:.1} ms (status {}, took_ms {:.1}, slowest shard {:.1} ms{}), sent {}",
                if in_fault(s) { "fault" } else { "no-fault" },
                s.ms(),
                s.status,
                s.took_ms,
                s.max_shard_ms,
                if spiked(s) {
                    ", through a steal spike"
                } else {
                    ""
                },
                since_freeze(s)
            )
        }))
        .collect();
    // Let the thawed leaves drain before the next stretch.
    tokio::time::sleep(Duration::from_secs(1)).await;
    row
}
