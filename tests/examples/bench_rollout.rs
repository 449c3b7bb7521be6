//! Rolling out a new index generation under load (issue 19), full size: the
//! npm corpus built by the indexer into an index root, 4 shards × 2
//! replicas serving it (in process, polling every second), one cache
//! server, an open-loop load at 200 queries/s (Zipf-sampled npm queries).
//! After a steady phase, a new generation (the corpus plus one document
//! with a word found nowhere else), built beforehand in a staging root as
//! an indexer on another machine would, is published into the served root
//! by one rename per shard. Reports errors, partial answers, p99 during the
//! rollout against steady state, how long the rollout took (first replica
//! to last on the new generation, as the frontend saw it) and the time until
//! every answer was of the new generation.
//!
//! ```text
//! cargo run --release -p tests --example bench_rollout -- \
//!     [--corpus PATH] [--queries PATH] [--rate 200] [--steady-seconds 30] \
//!     [--after-seconds 10] [--admission off]
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use leaf::Document;
use tests::bench::{self, Load, Pick, Sample};
use tests::index_root::{publish, serve_root};
use tests::TestCluster;

const SHARDS: u32 = 4;
const REPLICAS: u32 = 2;
const UNIQUE: &str = "zyqxrolloutword";

/// A sample with its send time from the start of the run.
struct Timed {
    sent: Duration,
    sample: Sample,
}

fn p99(samples: &[&Timed]) -> f64 {
    let latencies: Vec<f64> = samples.iter().map(|t| t.sample.ms()).collect();
    bench::percentile(&latencies, 99.0)
}

/// Counters of the whole cluster at one instant: the frontend's `/metrics`,
/// every leaf's registry summed, and this process's CPU time (every part
/// runs in it).
struct Snapshot {
    at: Duration,
    frontend: HashMap<String, f64>,
    leaves: HashMap<String, f64>,
    cpu: Duration,
}

async fn snapshot(cluster: &TestCluster, client: &reqwest::Client, at: Duration) -> Snapshot {
    let base = cluster.admin_url("");
    let frontend = bench::scrape(client, base.trim_end_matches('/')).await;
    let mut leaves: HashMap<String, f64> = HashMap::new();
    for leaf in cluster.leaves() {
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&leaf.registry().gather())
            .unwrap_or_default();
        for (key, value) in text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' '))
            .filter_map(|(k, v)| v.parse::<f64>().ok().map(|v| (k, v)))
        {
            // Leaves label by shard: sum across them.
            let key = strip_label(key, "shard");
            *leaves.entry(key).or_default() += value;
        }
    }
    Snapshot {
        at,
        frontend,
        leaves,
        cpu: bench::process_cpu(),
    }
}

/// `name{a="1",shard="2"}` without its `label` label.
fn strip_label(key: &str, label: &str) -> String {
    let Some((name, labels)) = key.split_once('{') else {
        return key.to_string();
    };
    let labels = labels.trim_end_matches('}');
    let kept: Vec<&str> = labels
        .split(',')
        .filter(|l| !l.starts_with(&format!("{label}=")) && !l.is_empty())
        .collect();
    if kept.is_empty() {
        name.to_string()
    } else {
        format!("{name}{{{}}}", kept.join(","))
    }
}

/// What happened per request between two snapshots, against the requests
/// sent in that span.
fn phase_row(name: &str, from: &Snapshot, to: &Snapshot, samples: &[&Timed]) {
    let n = samples.len().max(1) as f64;
    let f = |metric: &str, filters: &[&str]| {
        bench::metric(&to.frontend, metric, filters)
            - bench::metric(&from.frontend, metric, filters)
    };
    let l = |metric: &str, filters: &[&str]| {
        bench::metric(&to.leaves, metric, filters) - bench::metric(&from.leaves, metric, filters)
    };
    let hits = samples.iter().filter(|t| t.sample.cache == "hit").count() as f64;
    let lat = |keep: &dyn Fn(&Timed) -> bool| {
        let v: Vec<f64> = samples
            .iter()
            .filter(|t| keep(t))
            .map(|t| t.sample.ms())
            .collect();
        (
            bench::percentile(&v, 50.0),
            bench::percentile(&v, 99.0),
            v.len(),
        )
    };
    let (hit50, hit99, _) = lat(&|t| t.sample.cache == "hit");
    let (miss50, miss99, misses) = lat(&|t| t.sample.cache != "hit");
    let shard_ms: Vec<f64> = samples
        .iter()
        .filter(|t| t.sample.cache != "hit")
        .flat_map(|t| t.sample.shard_ms.iter().copied())
        .collect();
    let cpu = (to.cpu.saturating_sub(from.cpu)).as_secs_f64() * 1e3;
    let secs = (to.at.saturating_sub(from.at)).as_secs_f64().max(1e-3);
    println!(
        "| {name} | {} | {:.1} | {:.1}% | {:.2} / {:.2} | {misses}: {:.2} / {:.2} | {:.2} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.2} | {:.0}% |",
        samples.len(),
        secs,
        100.0 * hits / n,
        hit50,
        hit99,
        miss50,
        miss99,
        bench::percentile(&shard_ms, 99.0),
        f("frontend_term_stats_total", &["fetched"]) / n,
        f("frontend_term_stats_total", &["partial"]) / n,
        l("leaf_term_stats_requests_total", &[]) / n,
        l("leaf_search_requests_total", &[]) / n,
        f("frontend_canaries_total", &[]) / n,
        f("frontend_cache_stores_total", &["skipped_generation"]) / n,
        100.0 * cpu / (secs * 1e3),
    );
}

#[tokio::main]
async fn main() {
    let corpus = bench::arg("--corpus", bench::DEFAULT_CORPUS);
    let queries = bench::load_queries(bench::arg("--queries", bench::DEFAULT_QUERIES));
    let rate: f64 = bench::arg_num("--rate", 200.0);
    let steady_seconds: u64 = bench::arg_num("--steady-seconds", 30);
    let after_seconds: u64 = bench::arg_num("--after-seconds", 10);
    let admission = bench::arg("--admission", "off") == "on";
    let documents = bench::load_documents(&corpus);
    let dir = tempfile::tempdir().expect("temporary directory");
    let root = dir.path().join("root");
    let staging = dir.path().join("staging");

    let built = Instant::now();
    let old = {
        let (root, docs) = (root.clone(), Arc::clone(&documents));
        tokio::task::spawn_blocking(move || publish(&root, SHARDS, &docs))
            .await
            .expect("build")
    };
    let old_build = built.elapsed();
    // The next generation, built ahead in a staging root (its id is above
    // the served one's: the build starts later).
    let mut new_docs: Vec<Document> = documents.as_ref().clone();
    new_docs.push(Document {
        id: "rollout-new-document".to_string(),
        title: format!("{UNIQUE} arrives"),
        body: format!("only the new generation has {UNIQUE}"),
        popularity: None,
    });
    let new = {
        let staging = staging.clone();
        tokio::task::spawn_blocking(move || publish(&staging, SHARDS, &new_docs))
            .await
            .expect("build")
    };
    assert!(new.generation > old.generation);
    println!(
        "built generation {} ({} documents, {:.1} s) and staged {}",
        old.generation,
        old.documents,
        old_build.as_secs_f64(),
        new.generation
    );

    let cluster = TestCluster::builder()
        .shards(SHARDS)
        .replicas(REPLICAS)
        .caches(1)
        .documents(Arc::new(Vec::new()))
        .leaf(serve_root(&root, Duration::from_secs(1)))
        .frontend(|c| c.admission.enabled = admission)
        .build()
        .await;
    let load = Load::new(
        cluster.url("/search"),
        queries.clone(),
        Pick::zipf(queries.len(), 1.0, 11),
    );
    let client = bench::client();
    // Warm the caches (result and term statistics) as a serving tier is.
    bench::open_loop(&client, &load, rate, Duration::from_secs(10), 0).await;

    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let driver = {
        let (stop, load, client) = (Arc::clone(&stop), load.clone(), client.clone());
        tokio::spawn(async move {
            let mut timed = Vec::new();
            let mut first = 1_000_000;
            while !stop.load(Ordering::SeqCst) {
                let round = started.elapsed() + Duration::from_millis(20);
                let samples =
                    bench::open_loop(&client, &load, rate, Duration::from_secs(1), first).await;
                first += samples.len() as u64;
                timed.extend(samples.into_iter().map(|sample| Timed {
                    sent: round + sample.at,
                    sample,
                }));
            }
            timed
        })
    };
    tokio::time::sleep(Duration::from_secs(steady_seconds.saturating_sub(10))).await;
    let steady_from = snapshot(&cluster, &client, started.elapsed()).await;
    tokio::time::sleep(Duration::from_secs(steady_seconds.min(10))).await;
    let at_publish = snapshot(&cluster, &client, started.elapsed()).await;

    // Publish: one rename per shard, as `indexer build` does at its end.
    let published = started.elapsed();
    for shard in 0..SHARDS {
        let name = format!("shard-{shard}/{}", new.generation);
        std::fs::rename(staging.join(&name), root.join(&name)).expect("publish a shard");
    }
    let mut first_announced = None;
    let wanted = new.generation.to_string();
    // When each leaf swapped (seen from its handle, every 10 ms).
    let mut swapped: HashMap<(u32, u32), Duration> = HashMap::new();
    let mut polls = 0u64;
    let rolled_out = loop {
        for shard in 0..SHARDS {
            for replica in 0..REPLICAS {
                if cluster.leaf(shard, replica).generation() == new.generation {
                    swapped
                        .entry((shard, replica))
                        .or_insert_with(|| started.elapsed());
                }
            }
        }
        polls += 1;
        if polls % 5 != 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        let (_, view) = cluster.get_json("/cluster").await;
        let rollout = &view["rollout"];
        let on_new = rollout["replicas_on_newest"].as_u64().unwrap_or(0);
        if rollout["generation"] == wanted && first_announced.is_none() {
            first_announced = Some(started.elapsed());
        }
        if rollout["generation"] == wanted
            && rollout["in_progress"] == false
            && on_new == u64::from(SHARDS * REPLICAS)
        {
            break (started.elapsed(), rollout["last_duration_ms"].as_u64());
        }
        assert!(
            started.elapsed() < published + Duration::from_secs(300),
            "the rollout ends within 5 minutes"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    tokio::time::sleep((rolled_out.0 + Duration::from_secs(1)).saturating_sub(started.elapsed()))
        .await;
    let after_rollout = snapshot(&cluster, &client, started.elapsed()).await;
    tokio::time::sleep(Duration::from_secs(after_seconds.saturating_sub(1))).await;
    let at_end = snapshot(&cluster, &client, started.elapsed()).await;
    stop.store(true, Ordering::SeqCst);
    let timed = driver.await.expect("load");

    let new_generation = new.generation.to_string();
    let all: Vec<&Timed> = timed.iter().collect();
    let steady: Vec<&Timed> = all.iter().copied().filter(|t| t.sent < published).collect();
    let during: Vec<&Timed> = all
        .iter()
        .copied()
        .filter(|t| t.sent >= published && t.sent <= rolled_out.0 + Duration::from_secs(1))
        .collect();
    let errors = all.iter().filter(|t| t.sample.status != 200).count();
    let partial = all.iter().filter(|t| t.sample.partial).count();
    // An answer of an old generation: some shard answered from another
    // generation than the new one ("0" is a shard that did not answer).
    let old_answer = |t: &Timed| {
        t.sample.status == 200
            && t.sample
                .generations
                .iter()
                .any(|g| g != "0" && *g != new_generation)
    };
    let old_answers_after = |from: Duration| {
        all.iter()
            .filter(|t| t.sent >= from && old_answer(t))
            .count()
    };
    let last_old = all
        .iter()
        .filter(|t| old_answer(t))
        .map(|t| t.sent)
        .max()
        .unwrap_or_default();
    let since_publish = |t: &Timed| t.sent.as_secs_f64() - published.as_secs_f64();
    for t in all
        .iter()
        .filter(|t| t.sample.status != 200 || t.sample.partial)
    {
        println!(
            "  {:+.2} s after publish: status {}, partial {}, {:.0} ms, generations {:?}",
            since_publish(t),
            t.sample.status,
            t.sample.partial,
            t.sample.ms(),
            t.sample.generations
        );
    }
    // Where the time goes: per phase, per request.
    let window = |from: Duration, to: Duration| -> Vec<&Timed> {
        all.iter()
            .copied()
            .filter(|t| t.sent >= from && t.sent < to)
            .collect()
    };
    println!();
    println!("| phase | requests | seconds | cache hits | hit p50 / p99 ms | misses: p50 / p99 ms | shard call p99 ms (misses) | term stats fetched / req | stats partial / req | leaf stats RPCs / req | leaf searches / req | canaries / req | stores skipped (generation) / req | CPU (of 1 core) |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    phase_row(
        "steady (last 10 s)",
        &steady_from,
        &at_publish,
        &window(steady_from.at, at_publish.at),
    );
    phase_row(
        "rollout (publish → end + 1 s)",
        &at_publish,
        &after_rollout,
        &window(at_publish.at, after_rollout.at),
    );
    phase_row(
        "after",
        &after_rollout,
        &at_end,
        &window(after_rollout.at, at_end.at),
    );
    let mut swaps: Vec<((u32, u32), Duration)> = swapped.into_iter().collect();
    swaps.sort_by_key(|&(_, at)| at);
    println!();
    println!(
        "swaps (shard/replica at s after publish): {}",
        swaps
            .iter()
            .map(|((s, r), at)| format!(
                "{s}/{r} {:+.2}",
                at.as_secs_f64() - published.as_secs_f64()
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    // A timeline in 100 ms buckets around the rollout.
    println!("| from publish s | requests | hits | p50 ms | p99 ms | max ms | on new gen (shards answered) |");
    println!("|---|---|---|---|---|---|---|");
    let mut from = published.saturating_sub(Duration::from_millis(500));
    while from < rolled_out.0 + Duration::from_millis(1500) {
        let to = from + Duration::from_millis(100);
        let bucket = window(from, to);
        let v: Vec<f64> = bucket.iter().map(|t| t.sample.ms()).collect();
        let new_shards: usize = bucket
            .iter()
            .map(|t| {
                t.sample
                    .generations
                    .iter()
                    .filter(|g| **g == new_generation)
                    .count()
            })
            .sum();
        let shards: usize = bucket
            .iter()
            .map(|t| t.sample.generations.iter().filter(|g| *g != "0").count())
            .sum();
        println!(
            "| {:+.1} | {} | {} | {:.1} | {:.1} | {:.1} | {new_shards}/{shards} |",
            from.as_secs_f64() - published.as_secs_f64(),
            bucket.len(),
            bucket.iter().filter(|t| t.sample.cache == "hit").count(),
            bench::percentile(&v, 50.0),
            bench::percentile(&v, 99.0),
            v.iter().copied().fold(0.0, f64::max),
        );
        from = to;
    }
    let (status, unique) = cluster.search(&format!("q={UNIQUE}")).await;
    println!(
        "requests: {} at {rate}/s, errors: {errors}, partial: {partial} ({})",
        all.len(),
        bench::pct(partial as f64, all.len() as f64)
    );
    println!(
        "p99 steady: {} ({} requests); p99 during rollout: {} ({} requests, publish → rollout end + 1 s)",
        bench::ms(p99(&steady)),
        steady.len(),
        bench::ms(p99(&during)),
        during.len()
    );
    println!(
        "publish → first replica announced: {}; rollout (frontend's view, first → last replica): {} ms (status page: {:?} ms)",
        first_announced
            .map(|t| format!("{:.2} s", (t - published).as_secs_f64()))
            .unwrap_or_else(|| "–".into()),
        (rolled_out.0 - first_announced.unwrap_or(published)).as_millis(),
        rolled_out.1
    );
    println!(
        "publish → last answer of the old generation sent: {:.2} s; answers of an old generation sent after the rollout ended: {}",
        last_old.saturating_sub(published).as_secs_f64(),
        old_answers_after(rolled_out.0)
    );
    println!(
        "unique word after: status {status}, first hit {}",
        unique["hits"][0]["id"]
    );
    println!("{}", bench::machine_load());
}
