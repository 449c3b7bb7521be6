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
    tokio::time::sleep(Duration::from_secs(steady_seconds)).await;

    // Publish: one rename per shard, as `indexer build` does at its end.
    let published = started.elapsed();
    for shard in 0..SHARDS {
        let name = format!("shard-{shard}/{}", new.generation);
        std::fs::rename(staging.join(&name), root.join(&name)).expect("publish a shard");
    }
    let mut first_announced = None;
    let wanted = new.generation.to_string();
    let rolled_out = loop {
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
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_secs(after_seconds)).await;
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
