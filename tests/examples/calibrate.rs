//! Answer quality, measured: how good partial answers are, how well
//! `estimated_recall` predicts it, what a deadline costs in accuracy, and
//! what global term statistics cost in latency.
//!
//! ```text
//! cargo run --release -p tests --example calibrate -- \
//!     --corpus ../shared/corpus/npm-packages.jsonl.gz \
//!     --queries ../shared/corpus/npm-packages.queries.txt \
//!     --shards 8 --queries-limit 2000
//! ```
//!
//! Three parts, each printed as a markdown table:
//!
//! 1. **Calibration** (in process, no sockets). The corpus is split into
//!    `--shards` in-RAM shard indexes. Per query, the frontend's own code
//!    computes what the server would: [`QueryStats::from_shards`] sums the
//!    shards' term statistics and gives each shard's share, every shard is
//!    searched with the global statistics, and [`merge::merge`] merges. That
//!    complete answer is the ground truth. Partial answers are then made by
//!    dropping each shard with probability r (`drop`), or by cutting each
//!    shard short with probability r after a uniformly random fraction of
//!    its documents (`cut`), and merged by the same function, which also
//!    computes `estimated_recall`. Measured: recall@k = |partial ∩ full| /
//!    |full| and NDCG@k with graded gains (a document at rank i of the full
//!    answer has gain k + 1 − i, others 0; discount log2(position + 1); the
//!    full answer is the ideal ordering).
//! 2. **Timing model** (a real cluster on loopback): `--timing-shards` ×
//!    2 replicas, one replica per shard slowed (`--slow-delay-ms` on
//!    `--slow-fraction` of its calls); per deadline (`--deadlines`), the
//!    partial rate and recall@k against full answers taken first with a
//!    long deadline, one query at a time.
//! 3. **Cost of global statistics**: on the same leaves, two fresh
//!    frontends (global statistics on, and shard-local scoring); per query,
//!    the global frontend's first request (cold statistics cache) and a
//!    repeat (warm), and the shard-local frontend before, between or after
//!    them in turn.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use frontend_core::query::estimate as quality;
use frontend_core::query::fanout::{ShardOutcome, ShardResult};
use frontend_core::query::merge::{self, Merged};
use frontend_core::query::term_stats::QueryStats;
use frontend_core::{Frontend, FrontendConfig};
use leaf::builtin::SplitMix64;
use leaf::{Budget, Document, SearchOutput, ShardIndex};
use proto::leaf::CorpusStats;
use serde_json::{json, Value};
use tests::TestCluster;
use tokio_util::sync::CancellationToken;

const USAGE: &str = "usage: calibrate [--corpus PATH] [--queries PATH] [--shards N] \
[--queries-limit N] [--k N] [--seed N] [--rates 0.1,0.25,0.5] [--no-exact-check] \
[--skip-calibration] [--skip-timing] [--timing-shards N] [--timing-queries N] \
[--deadlines 2,3,5,10,20,50,100] [--slow-delay-ms N] [--slow-fraction F]";

/// The command line, as plain data.
#[derive(Clone, Debug)]
struct Args {
    /// A JSONL corpus; the generated 20,000-document corpus when absent.
    corpus: Option<PathBuf>,
    /// One query a line; generated queries when absent.
    queries: Option<PathBuf>,
    shards: u32,
    queries_limit: usize,
    k: u32,
    seed: u64,
    rates: Vec<f64>,
    /// Also check complete answers against one unsharded index.
    exact_check: bool,
    calibration: bool,
    timing: bool,
    timing_shards: u32,
    timing_queries: usize,
    deadlines_ms: Vec<u64>,
    slow_delay_ms: u64,
    slow_fraction: f64,
}

impl Args {
    fn parse() -> Result<Args, String> {
        let mut args = Args {
            corpus: None,
            queries: None,
            shards: 8,
            queries_limit: 2000,
            k: 10,
            seed: 1,
            rates: vec![0.10, 0.25, 0.50],
            exact_check: true,
            calibration: true,
            timing: true,
            timing_shards: 4,
            timing_queries: 500,
            deadlines_ms: vec![2, 3, 5, 10, 20, 50, 100],
            slow_delay_ms: 50,
            slow_fraction: 0.1,
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            let mut value = || it.next().ok_or(format!("{flag} needs a value"));
            match flag.as_str() {
                "--corpus" => args.corpus = Some(value()?.into()),
                "--queries" => args.queries = Some(value()?.into()),
                "--shards" => args.shards = number(&value()?)?,
                "--queries-limit" => args.queries_limit = number(&value()?)?,
                "--k" => args.k = number(&value()?)?,
                "--seed" => args.seed = number(&value()?)?,
                "--rates" => args.rates = list(&value()?)?,
                "--no-exact-check" => args.exact_check = false,
                "--skip-calibration" => args.calibration = false,
                "--skip-timing" => args.timing = false,
                "--timing-shards" => args.timing_shards = number(&value()?)?,
                "--timing-queries" => args.timing_queries = number(&value()?)?,
                "--deadlines" => args.deadlines_ms = list(&value()?)?,
                "--slow-delay-ms" => args.slow_delay_ms = number(&value()?)?,
                "--slow-fraction" => args.slow_fraction = number(&value()?)?,
                "-h" | "--help" => return Err(USAGE.to_string()),
                other => return Err(format!("unknown flag {other}\n{USAGE}")),
            }
        }
        if args.shards == 0 || args.timing_shards == 0 || args.k == 0 {
            return Err("--shards, --timing-shards and --k must be at least 1".to_string());
        }
        Ok(args)
    }
}

fn number<T: std::str::FromStr>(text: &str) -> Result<T, String> {
    text.parse().map_err(|_| format!("not a number: {text}"))
}

fn list<T: std::str::FromStr>(text: &str) -> Result<Vec<T>, String> {
    text.split(',').map(|part| number(part.trim())).collect()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = match Args::parse() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    // Errors only, to stderr, so that stdout is the report (the test
    // cluster's own logger then stays out of the way).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let started = Instant::now();
    let docs = Arc::new(match &args.corpus {
        Some(path) => leaf::read_corpus(path)?.documents,
        None => leaf::generate_corpus(20_000, 42),
    });
    let mut queries: Vec<String> = match &args.queries {
        Some(path) => std::fs::read_to_string(path)?
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .map(str::to_string)
            .collect(),
        None => leaf::sample_queries(args.queries_limit.max(args.timing_queries * 2), 7),
    };
    eprintln!(
        "{} documents, {} queries ({:.1} s)",
        docs.len(),
        queries.len(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "corpus: {} documents; k = {}; seed {}\n",
        docs.len(),
        args.k,
        args.seed
    );
    if args.calibration {
        let limit = args.queries_limit.min(queries.len());
        calibration(&args, &docs, &queries[..limit]);
    }
    if args.timing {
        queries.truncate(args.timing_queries * 2);
        timing(&args, docs, &queries).await?;
    }
    eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

// ---------------------------------------------------------------------------
// Part 1: calibration, in process.

/// The two ways a shard's answer is degraded.
const VARIANTS: [&str; 2] = ["drop", "cut"];

/// One partial answer against its full answer.
#[derive(Clone, Debug)]
struct Sample {
    variant: usize,
    rate: usize,
    partial: bool,
    estimate: f64,
    /// The estimate with the share model alone, for comparison: each
    /// shard's share of all documents, and `answer_share`.
    baselines: [f64; 2],
    /// Time to compute the estimate of a partial answer, in nanoseconds:
    /// as the server does, and with the share model alone.
    cost_ns: Option<[u64; 2]>,
    recall: f64,
    ndcg: f64,
    /// Size of the full answer.
    full: usize,
}

/// What one query gave.
#[derive(Debug, Default)]
struct QueryResult {
    samples: Vec<Sample>,
    /// Whether the complete merged answer equalled the unsharded one, and
    /// the largest relative score difference, when checked.
    exact: Option<(bool, f64)>,
}

fn calibration(args: &Args, docs: &Arc<Vec<Document>>, queries: &[String]) {
    let started = Instant::now();
    let (shards, whole) = build_indexes(docs, args.shards, args.exact_check);
    eprintln!(
        "built {} shards{} in {:.1} s",
        shards.len(),
        if whole.is_some() {
            " and one unsharded index"
        } else {
            ""
        },
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let known_docs: Vec<u64> = shards.iter().map(ShardIndex::num_docs).collect();
    let results: Vec<QueryResult> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..2)
            .map(|worker| {
                let (shards, whole, known_docs) = (&shards, whole.as_ref(), &known_docs);
                scope.spawn(move || {
                    queries
                        .iter()
                        .enumerate()
                        .filter(|(index, _)| index % 2 == worker)
                        .filter_map(|(index, query)| {
                            evaluate(args, shards, whole, known_docs, index, query)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().expect("worker panicked"))
            .collect()
    });
    eprintln!(
        "evaluated {} queries in {:.1} s",
        queries.len(),
        started.elapsed().as_secs_f64()
    );
    let checked: Vec<(bool, f64)> = results.iter().filter_map(|r| r.exact).collect();
    println!(
        "## Calibration: {} shards, {} queries with a non-empty full answer (of {})\n",
        args.shards,
        results.len(),
        queries.len()
    );
    if !checked.is_empty() {
        let equal = checked.iter().filter(|(equal, _)| *equal).count();
        let worst = checked.iter().map(|&(_, diff)| diff).fold(0.0, f64::max);
        println!(
            "Exact merge: {equal} of {} complete answers equal the unsharded index's top {} \
             (ids and order); largest relative score difference {worst:.2e}.\n",
            checked.len(),
            args.k
        );
    }
    let samples: Vec<&Sample> = results.iter().flat_map(|r| &r.samples).collect();
    println!(
        "| variant | rate | answers | partial | recall@{k} | NDCG@{k} | est. recall | MAE | MAE (partial only) | bias | ECE | binomial noise | MAE, document share | MAE, share model |",
        k = args.k
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (variant, name) in VARIANTS.iter().enumerate() {
        for (rate, r) in args.rates.iter().enumerate() {
            let group: Vec<&Sample> = samples
                .iter()
                .copied()
                .filter(|s| s.variant == variant && s.rate == rate)
                .collect();
            print_row(name, *r, &group);
        }
    }
    println!(
        "\nMAE: mean over answers of |estimated − measured recall|. bias: mean estimate − \
         mean measured recall. ECE: answers binned by estimate (tenths), the bins' \
         |mean estimate − mean recall| weighted by size. binomial noise: the MAE that a \
         perfectly calibrated estimate e would have if each of the full answer's n documents \
         were in the searched part independently with probability e (E|Binomial(n, e)/n − e|); \
         the floor of any estimate that knows only each shard's probability of holding a \
         document of the answer. The last two columns: the same answers estimated with the \
         share model alone (each shard's share of all documents; its share of the query's best \
         documents from per-shard document frequencies, `answer_share`).\n"
    );
    let costs: Vec<[u64; 2]> = samples.iter().filter_map(|s| s.cost_ns).collect();
    let quantile = |model: usize, q: f64| {
        let mut times: Vec<u64> = costs.iter().map(|c| c[model]).collect();
        times.sort_unstable();
        let index = ((times.len() as f64 * q) as usize).min(times.len().saturating_sub(1));
        times.get(index).copied().unwrap_or(0) as f64 / 1000.0
    };
    println!(
        "Cost of the estimate per partial answer ({} answers, in process): median {:.1} µs, \
         p99 {:.1} µs; the share model alone: median {:.2} µs, p99 {:.2} µs.\n",
        costs.len(),
        quantile(0, 0.5),
        quantile(0, 0.99),
        quantile(1, 0.5),
        quantile(1, 0.99),
    );
    champion_list_cost(&shards[0], queries);
}

/// What champion lists add to a `TermStats` answer on one shard: time
/// (in process, lists and no lists alternating per query) and encoded size.
fn champion_list_cost(shard: &ShardIndex, queries: &[String]) {
    use prost::Message;
    let mut times: [Vec<u64>; 2] = [Vec::new(), Vec::new()];
    let mut bytes = [0usize; 2];
    for (index, query) in queries.iter().enumerate() {
        for turn in 0..2 {
            // Alternate which runs first, so that neither always finds the
            // postings in the CPU cache.
            let with_lists = (index + turn) % 2 == 0;
            let depth = if with_lists {
                leaf::stats::IMPACT_DEPTH
            } else {
                0
            };
            let started = Instant::now();
            let Ok(stats) = shard.term_stats_at_depth(query, depth) else {
                continue;
            };
            times[usize::from(with_lists)].push(started.elapsed().as_nanos() as u64);
            bytes[usize::from(with_lists)] += stats.encoded_len();
        }
    }
    let median = |times: &mut Vec<u64>| {
        times.sort_unstable();
        times.get(times.len() / 2).copied().unwrap_or(0) as f64 / 1000.0
    };
    let p99 = |times: &Vec<u64>| {
        times
            .get((times.len() as f64 * 0.99) as usize)
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    let (without, with) = (median(&mut times[0]), median(&mut times[1]));
    let n = queries.len().max(1);
    println!(
        "Champion lists in `TermStats` (shard 0, {} documents, the same {n} queries, in \
         process): median {with:.1} µs (p99 {:.1} µs) with lists of {} against {without:.1} µs \
         (p99 {:.1} µs) with document frequencies only; {} against {} bytes encoded per answer \
         on average.\n",
        shard.num_docs(),
        p99(&times[1]),
        leaf::stats::IMPACT_DEPTH,
        p99(&times[0]),
        bytes[1] / n,
        bytes[0] / n,
    );
}

fn print_row(variant: &str, rate: f64, group: &[&Sample]) {
    let n = group.len().max(1) as f64;
    let mean = |f: &dyn Fn(&Sample) -> f64| group.iter().map(|s| f(s)).sum::<f64>() / n;
    let partial: Vec<&&Sample> = group.iter().filter(|s| s.partial).collect();
    let mae_partial = partial
        .iter()
        .map(|s| (s.estimate - s.recall).abs())
        .sum::<f64>()
        / partial.len().max(1) as f64;
    let recall = mean(&|s| s.recall);
    let estimate = mean(&|s| s.estimate);
    println!(
        "| {variant} | {:.0}% | {} | {:.1}% | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:+.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
        rate * 100.0,
        group.len(),
        100.0 * partial.len() as f64 / n,
        recall,
        mean(&|s| s.ndcg),
        estimate,
        mean(&|s| (s.estimate - s.recall).abs()),
        mae_partial,
        estimate - recall,
        ece(group),
        mean(&|s| binomial_mad(s.full, s.estimate)),
        mean(&|s| (s.baselines[0] - s.recall).abs()),
        mean(&|s| (s.baselines[1] - s.recall).abs()),
    );
}

/// Expected calibration error over tenths of the estimate.
fn ece(group: &[&Sample]) -> f64 {
    // Per bin: the sums of estimates and of recalls. The bins' gaps between
    // means, weighted by size, add up to their gaps between sums over the
    // total count.
    let mut bins: HashMap<usize, (f64, f64)> = HashMap::new();
    for s in group {
        let bin = ((s.estimate * 10.0).floor() as usize).min(9);
        let entry = bins.entry(bin).or_default();
        entry.0 += s.estimate;
        entry.1 += s.recall;
    }
    let total = group.len().max(1) as f64;
    bins.values()
        .map(|&(estimate, recall)| (estimate - recall).abs() / total)
        .sum()
}

/// E|X/n − p| for X ~ Binomial(n, p).
fn binomial_mad(n: usize, p: f64) -> f64 {
    if n == 0 || p <= 0.0 || p >= 1.0 {
        return 0.0;
    }
    let mut total = 0.0;
    let mut coefficient = 1.0f64;
    for x in 0..=n {
        if x > 0 {
            coefficient *= (n - x + 1) as f64 / x as f64;
        }
        let probability = coefficient * p.powi(x as i32) * (1.0 - p).powi((n - x) as i32);
        total += probability * (x as f64 / n as f64 - p).abs();
    }
    total
}

/// The shards (and, for the exactness check, one unsharded index), built
/// on two threads.
fn build_indexes(
    docs: &Arc<Vec<Document>>,
    shards: u32,
    whole: bool,
) -> (Vec<ShardIndex>, Option<ShardIndex>) {
    // Job `shards` is the unsharded index; it is the biggest, so it goes
    // first.
    let mut jobs: Vec<u32> = (0..shards).collect();
    if whole {
        jobs.insert(0, shards);
    }
    let built: Vec<(u32, ShardIndex)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..2)
            .map(|worker| {
                let jobs = &jobs;
                scope.spawn(move || {
                    jobs.iter()
                        .enumerate()
                        .filter(|(index, _)| index % 2 == worker)
                        .map(|(_, &job)| {
                            let index = if job == shards {
                                ShardIndex::build_in_ram(0, 1, docs)
                            } else {
                                ShardIndex::build_in_ram(job, shards, docs)
                            };
                            (job, index.expect("index builds"))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().expect("build panicked"))
            .collect()
    });
    let mut by_job: Vec<Option<ShardIndex>> = (0..=shards).map(|_| None).collect();
    for (job, index) in built {
        by_job[job as usize] = Some(index);
    }
    let whole = by_job.pop().flatten();
    (
        by_job.into_iter().map(|i| i.expect("built")).collect(),
        whole,
    )
}

/// The full answer of one query and its degraded variants.
fn evaluate(
    args: &Args,
    shards: &[ShardIndex],
    whole: Option<&ShardIndex>,
    known_docs: &[u64],
    index: usize,
    query: &str,
) -> Option<QueryResult> {
    let k = args.k;
    let parts: Vec<CorpusStats> = shards
        .iter()
        .map(|shard| shard.term_stats(query))
        .collect::<Result<_, _>>()
        .ok()?;
    let stats = QueryStats::from_shards(query, &parts);
    let global = stats.stats.as_ref()?;
    let evidence = stats.evidence.as_deref();
    let search = |shard: &ShardIndex, budget: &Budget| {
        shard
            .search_text(query, k, Some(global), budget)
            .expect("a query that parsed for statistics searches")
    };
    let outputs: Vec<SearchOutput> = shards
        .iter()
        .map(|shard| search(shard, &Budget::unlimited()))
        .collect();
    let answered = |shard: usize, output: &SearchOutput| ShardResult {
        shard: shard as u32,
        outcome: ShardOutcome::Answered(output.clone().into_response(shard as u32, 1)),
        hedges: 0,
        hedge_won: false,
        latency: Duration::ZERO,
    };
    let full = merge::merge(
        outputs
            .iter()
            .enumerate()
            .map(|(s, o)| answered(s, o))
            .collect(),
        k as usize,
        known_docs,
        evidence,
    );
    if full.hits.is_empty() {
        return None;
    }
    let mut result = QueryResult {
        exact: whole.map(|whole| {
            let reference = whole
                .search_text(query, k, None, &Budget::unlimited())
                .expect("the unsharded index parses it too");
            compare(&full, &reference)
        }),
        ..QueryResult::default()
    };
    let full_rank: HashMap<&str, usize> = full
        .hits
        .iter()
        .enumerate()
        .map(|(rank, hit)| (hit.id.as_str(), rank))
        .collect();
    for (variant, _) in VARIANTS.iter().enumerate() {
        for (rate_index, &rate) in args.rates.iter().enumerate() {
            let mut rng = SplitMix64::new(
                args.seed
                    ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
                    ^ ((variant * 16 + rate_index) as u64).wrapping_mul(0xbf58_476d_1ce4_e5b9),
            );
            let results: Vec<ShardResult> = shards
                .iter()
                .enumerate()
                .map(|(s, shard)| {
                    if rng.next_f64() >= rate {
                        return answered(s, &outputs[s]);
                    }
                    if variant == 0 {
                        return ShardResult {
                            shard: s as u32,
                            outcome: ShardOutcome::TimedOut,
                            hedges: 0,
                            hedge_won: false,
                            latency: Duration::ZERO,
                        };
                    }
                    let limit = (shard.num_docs() as f64 * rng.next_f64()) as u64;
                    answered(
                        s,
                        &search(shard, &Budget::unlimited().with_doc_limit(limit)),
                    )
                })
                .collect();
            let partial = merge::merge(results, k as usize, known_docs, evidence);
            let (recall, ndcg) = measure(&partial, &full_rank, k as usize);
            let cost_ns = partial.partial.then(|| {
                let timed = |f: &dyn Fn() -> f64| {
                    let started = Instant::now();
                    std::hint::black_box(f());
                    started.elapsed().as_nanos() as u64
                };
                [
                    timed(&|| {
                        quality::estimated_recall(
                            &partial.shards,
                            &partial.hits,
                            k as usize,
                            evidence,
                        )
                    }),
                    timed(&|| {
                        quality::share_recall(&partial.shards, evidence.map(|e| e.share.as_slice()))
                    }),
                ]
            });
            let baseline = |share: Option<&[f64]>| {
                if partial.partial {
                    quality::share_recall(&partial.shards, share)
                } else {
                    1.0
                }
            };
            result.samples.push(Sample {
                variant,
                rate: rate_index,
                partial: partial.partial,
                estimate: partial.estimated_recall,
                baselines: [
                    baseline(None),
                    baseline(evidence.map(|e| e.share.as_slice())),
                ],
                cost_ns,
                recall,
                ndcg,
                full: full.hits.len(),
            });
        }
    }
    Some(result)
}

/// Recall and NDCG of `answer` against the full answer's ranks.
fn measure(answer: &Merged, full_rank: &HashMap<&str, usize>, k: usize) -> (f64, f64) {
    let n = full_rank.len();
    let gain = |rank: usize| (k - rank) as f64;
    let discount = |position: usize| 1.0 / ((position + 2) as f64).log2();
    let mut found = 0;
    let mut dcg = 0.0;
    for (position, hit) in answer.hits.iter().enumerate() {
        if let Some(&rank) = full_rank.get(hit.id.as_str()) {
            found += 1;
            dcg += gain(rank) * discount(position);
        }
    }
    let ideal: f64 = (0..n).map(|rank| gain(rank) * discount(rank)).sum();
    (found as f64 / n as f64, dcg / ideal)
}

/// Whether a merged answer equals an unsharded one (ids and order), and the
/// largest relative score difference.
fn compare(merged: &Merged, reference: &SearchOutput) -> (bool, f64) {
    let same = merged.hits.len() == reference.hits.len()
        && merged
            .hits
            .iter()
            .zip(&reference.hits)
            .all(|(a, b)| a.id == b.id);
    let worst = merged
        .hits
        .iter()
        .zip(&reference.hits)
        .map(|(a, b)| relative(a.score, b.score))
        .fold(0.0, f64::max);
    (same, worst)
}

fn relative(a: f32, b: f32) -> f64 {
    let (a, b) = (f64::from(a), f64::from(b));
    (a - b).abs() / a.abs().max(b.abs()).max(1e-12)
}

// ---------------------------------------------------------------------------
// Parts 2 and 3: a real cluster.

async fn timing(args: &Args, docs: Arc<Vec<Document>>, queries: &[String]) -> anyhow::Result<()> {
    let started = Instant::now();
    let cluster = TestCluster::builder()
        .shards(args.timing_shards)
        .replicas(2)
        .documents(docs)
        .build()
        .await;
    eprintln!(
        "cluster of {} shards × 2 replicas up in {:.1} s",
        args.timing_shards,
        started.elapsed().as_secs_f64()
    );
    let client = Client::new();
    let url = cluster.url("/search");
    let n = args.timing_queries.min(queries.len());
    let timing_queries = &queries[..n];
    let k = args.k;

    // Ground truth: a long deadline, no slow replica yet. This also warms
    // the frontend's statistics cache, as steady traffic would.
    let mut full: Vec<Option<Vec<String>>> = Vec::with_capacity(n);
    for query in timing_queries {
        let answer = client.search(&url, query, k, 5000).await?;
        let complete = answer.status == 200 && answer.body["partial"] == false;
        full.push((complete && !answer.ids.is_empty()).then_some(answer.ids));
    }
    let usable = full.iter().filter(|f| f.is_some()).count();

    let delay = Duration::from_millis(args.slow_delay_ms);
    for shard in 0..args.timing_shards {
        cluster
            .leaf(shard, 1)
            .faults()
            .set_delay(delay, args.slow_fraction);
    }
    println!(
        "## Timing model: {} shards × 2 replicas, one replica per shard slowed by {} ms on {:.0}% of its calls; {usable} queries\n",
        args.timing_shards,
        args.slow_delay_ms,
        args.slow_fraction * 100.0
    );
    println!(
        "| deadline | partial | recall@{k} | est. recall | MAE | p50 | p99 | over deadline + 2 ms | hedges per query |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &deadline in &args.deadlines_ms {
        let (mut partial, mut hedges) = (0usize, 0u64);
        let (mut recall, mut estimate, mut error) = (0.0, 0.0, 0.0);
        let mut latencies = Vec::with_capacity(n);
        for (query, full) in timing_queries.iter().zip(&full) {
            let Some(full) = full else { continue };
            let answer = client.search(&url, query, k, deadline).await?;
            latencies.push(answer.latency);
            let found = answer.ids.iter().filter(|id| full.contains(id)).count();
            let measured = found as f64 / full.len() as f64;
            let estimated = answer.body["estimated_recall"].as_f64().unwrap_or(0.0);
            partial += usize::from(answer.status != 200 || answer.body["partial"] != false);
            hedges += answer.body["hedges"]["sent"].as_u64().unwrap_or(0);
            recall += measured;
            estimate += estimated;
            error += (measured - estimated).abs();
        }
        let count = latencies.len().max(1) as f64;
        let late = latencies
            .iter()
            .filter(|l| **l > Duration::from_millis(deadline + 2))
            .count();
        latencies.sort();
        println!(
            "| {deadline} ms | {:.1}% | {:.3} | {:.3} | {:.3} | {:.1} ms | {:.1} ms | {:.1}% | {:.3} |",
            100.0 * partial as f64 / count,
            recall / count,
            estimate / count,
            error / count,
            ms(percentile(&latencies, 0.50)),
            ms(percentile(&latencies, 0.99)),
            100.0 * late as f64 / count,
            hedges as f64 / count,
        );
    }
    println!(
        "\nLatency is measured by the client (HTTP on loopback included); recall@{k} against \
         the complete answer of the same query; a 503 (no shard in time) counts as partial \
         with recall 0.\n"
    );
    for shard in 0..args.timing_shards {
        cluster.leaf(shard, 1).faults().clear();
    }

    stats_cost(args, &cluster, &client, &queries[n.min(queries.len())..]).await
}

/// Latency of global statistics: cold cache, warm cache, shard-local.
async fn stats_cost(
    args: &Args,
    cluster: &TestCluster,
    client: &Client,
    queries: &[String],
) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let leaves: Vec<String> = cluster
        .leaves()
        .map(|leaf| leaf.advertised().to_string())
        .collect();
    let start = |global_stats: bool| {
        let mut config = FrontendConfig::new(args.timing_shards);
        config.static_leaves = leaves.clone();
        config.cache = false;
        config.root.global_stats = global_stats;
        let shutdown = shutdown.child_token();
        async move { Frontend::start(config, tests::bind().await, None, shutdown).await }
    };
    let global = start(true).await?;
    let local = start(false).await?;
    for frontend in [&global, &local] {
        anyhow::ensure!(
            tests::wait_routed(frontend, 2).await,
            "static leaves not routed"
        );
    }
    let global_url = format!("http://{}/search", global.http_addr);
    let local_url = format!("http://{}/search", local.http_addr);
    let fetched = || {
        global
            .metrics
            .term_stats
            .with_label_values(&["fetched"])
            .get()
    };
    let (mut shard_local, mut cold, mut cold_fetched, mut warm) = (
        Timings::default(),
        Timings::default(),
        Timings::default(),
        Timings::default(),
    );
    for (i, query) in queries.iter().enumerate() {
        // Per query: the global frontend's first sight of it (cold), then a
        // repeat (warm), and the shard-local frontend before, between or
        // after them in turn, so that no setting always touches a query's
        // postings first.
        let mut seen = false;
        for step in 0..3 {
            if step == i % 3 {
                shard_local.push(&client.search(&local_url, query, args.k, 1000).await?);
            } else if !seen {
                seen = true;
                let before = fetched();
                let answer = client.search(&global_url, query, args.k, 1000).await?;
                cold.push(&answer);
                if fetched() > before {
                    cold_fetched.push(&answer);
                }
            } else {
                warm.push(&client.search(&global_url, query, args.k, 1000).await?);
            }
        }
    }
    println!(
        "## Cost of global statistics: {} shards, {} queries, one at a time\n",
        args.timing_shards,
        queries.len()
    );
    println!("| scoring | requests | p50 (client) | p90 (client) | p50 took_ms |");
    println!("|---|---:|---:|---:|---:|");
    for (name, timings) in [
        ("shard-local statistics", &mut shard_local),
        ("global, first sight of the query (cold)", &mut cold),
        (
            "global, first sight with a TermStats round trip",
            &mut cold_fetched,
        ),
        ("global, repeated query (warm)", &mut warm),
    ] {
        timings.client.sort();
        timings.took.sort();
        println!(
            "| {name} | {} | {:.2} ms | {:.2} ms | {:.2} ms |",
            timings.client.len(),
            ms(percentile(&timings.client, 0.5)),
            ms(percentile(&timings.client, 0.9)),
            ms(percentile(&timings.took, 0.5)),
        );
    }
    println!(
        "\nA query seen for the first time whose terms are all cached already is served warm; \
         the third row counts only first sights that made the TermStats round trip.\n"
    );
    shutdown.cancel();
    Ok(())
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Latencies of successful answers: at the client, and the frontend's own
/// `took_ms`.
#[derive(Default)]
struct Timings {
    client: Vec<Duration>,
    took: Vec<Duration>,
}

impl Timings {
    fn push(&mut self, answer: &Answer) {
        if answer.status == 200 {
            self.client.push(answer.latency);
            self.took.push(answer.took());
        }
    }
}

/// One answer as the client saw it.
struct Answer {
    status: u16,
    body: Value,
    ids: Vec<String>,
    latency: Duration,
}

impl Answer {
    fn took(&self) -> Duration {
        Duration::from_secs_f64(self.body["took_ms"].as_f64().unwrap_or(0.0) / 1000.0)
    }
}

/// A plain HTTP client for `POST /search`.
struct Client(reqwest::Client);

impl Client {
    fn new() -> Client {
        Client(
            reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client"),
        )
    }

    async fn search(
        &self,
        url: &str,
        query: &str,
        k: u32,
        timeout_ms: u64,
    ) -> anyhow::Result<Answer> {
        let body = json!({"q": query, "k": k, "timeout_ms": timeout_ms, "nocache": true});
        let started = Instant::now();
        let response = self
            .0
            .post(url)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await?;
        let status = response.status().as_u16();
        let body: Value = response.json().await?;
        let latency = started.elapsed();
        let ids = body["hits"]
            .as_array()
            .map(|hits| {
                hits.iter()
                    .filter_map(|hit| hit["id"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Answer {
            status,
            body,
            ids,
            latency,
        })
    }
}
