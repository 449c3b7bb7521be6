//! Answer quality end to end: with global term statistics a sharded answer
//! equals the answer of one unsharded index over the same corpus, and a
//! partial answer says how good it is.

use std::collections::HashSet;
use std::sync::Arc;

use frontend_core::query::canary::Verdict;
use futures::stream::{self, StreamExt};
use leaf::{Budget, Document, SearchOutput, ShardIndex};
use serde_json::{json, Value};
use tests::{TestCluster, TestClusterBuilder};

const K: u32 = 10;
/// Documents of the corpus every test here uses.
const DOCUMENTS: usize = 3000;
const CORPUS_SEED: u64 = 11;
/// Queries compared per shard count.
const QUERIES: usize = 200;

fn corpus() -> Arc<Vec<Document>> {
    Arc::new(leaf::generate_corpus(DOCUMENTS, CORPUS_SEED))
}

/// One unsharded index over `docs`, built off the async workers.
async fn unsharded(docs: &Arc<Vec<Document>>) -> Arc<ShardIndex> {
    let docs = Arc::clone(docs);
    let index = tokio::task::spawn_blocking(move || ShardIndex::build_in_ram(0, 1, &docs))
        .await
        .expect("build task")
        .expect("unsharded index builds");
    Arc::new(index)
}

/// `POST /search` with a generous deadline and no result cache.
async fn search(cluster: &TestCluster, query: &str, timeout_ms: u64) -> (u16, Value) {
    let body = json!({"q": query, "k": K, "timeout_ms": timeout_ms, "nocache": true});
    cluster.post(body.to_string()).await
}

fn hit_ids(body: &Value) -> Vec<String> {
    body["hits"]
        .as_array()
        .expect("hits")
        .iter()
        .map(|hit| hit["id"].as_str().expect("id").to_string())
        .collect()
}

fn term_stats_fetched(cluster: &TestCluster, source: &str) -> u64 {
    cluster
        .frontend()
        .metrics
        .term_stats
        .with_label_values(&[source])
        .get()
}

/// Asserts that the frontend's answer equals the unsharded index's for a
/// few hundred queries: same ids in the same order, scores within 1e-4
/// relative, global statistics used, `estimated_recall` 1.0.
async fn sharded_equals_unsharded(shards: u32) {
    sharded_equals_unsharded_in(shards, true, |cluster| cluster).await;
}

/// As [`sharded_equals_unsharded`], on the cluster `layout` makes of the
/// builder (every shard in one process, say: the frontend then searches
/// them with one call per query).
async fn sharded_equals_unsharded_in(
    shards: u32,
    leases: bool,
    layout: fn(TestClusterBuilder) -> TestClusterBuilder,
) -> TestCluster {
    let docs = corpus();
    let whole = unsharded(&docs).await;
    let cluster = layout(TestCluster::builder())
        .shards(shards)
        .leases(leases)
        .documents(Arc::clone(&docs))
        .build()
        .await;
    let queries = leaf::sample_queries(QUERIES, 5);
    let mut hits_compared = 0;
    for query in &queries {
        let expected: SearchOutput = whole
            .search_text(query, K, None, &Budget::unlimited())
            .expect("the sample queries parse");
        let (status, body) = search(&cluster, query, 10_000).await;
        assert_eq!(status, 200, "{query}: {body}");
        assert_eq!(body["partial"], false, "{query}: {body}");
        assert_eq!(body["global_stats"], true, "{query}: {body}");
        assert_eq!(body["estimated_recall"], 1.0, "{query}: {body}");
        let expected_ids: Vec<&str> = expected.hits.iter().map(|h| h.id.as_str()).collect();
        assert_eq!(
            hit_ids(&body),
            expected_ids,
            "{shards} shards, query {query:?}: ids or order differ"
        );
        for (hit, reference) in body["hits"].as_array().unwrap().iter().zip(&expected.hits) {
            let score = hit["score"].as_f64().unwrap();
            let reference = f64::from(reference.score);
            let relative = (score - reference).abs() / reference.abs().max(1e-12);
            assert!(
                relative <= 1e-4,
                "{shards} shards, query {query:?}, {}: score {score} vs {reference}",
                hit["id"]
            );
        }
        hits_compared += expected.hits.len();
    }
    assert!(
        hits_compared > QUERIES * K as usize / 2,
        "the queries should find plenty ({hits_compared} hits)"
    );

    // Statistics are cached per term: a second pass costs no TermStats
    // round trip.
    let fetched = term_stats_fetched(&cluster, "fetched");
    let warm = term_stats_fetched(&cluster, "warm");
    for query in &queries {
        let (status, body) = search(&cluster, query, 10_000).await;
        assert_eq!(status, 200, "{query}: {body}");
        assert_eq!(body["global_stats"], true, "{query}: {body}");
    }
    assert_eq!(term_stats_fetched(&cluster, "fetched"), fetched);
    assert_eq!(
        term_stats_fetched(&cluster, "warm"),
        warm + queries.len() as u64
    );
    cluster
}

/// With leases (one per shard) and with a static `--leaf` list (the
/// process's shards found through `Info.served`, each with its own
/// generation, so that statistics are complete and cached).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_shards_in_one_process_equal_the_unsharded_index() {
    for leases in [true, false] {
        four_shards_in_one_process(leases).await;
    }
}

/// Every fan-out of the four shards of `cluster`'s one leaf process was one
/// SearchShards call (and every statistics round trip one TermStatsShards
/// call), and the process answered every shard's search.
fn assert_one_call_per_query(cluster: &TestCluster) {
    let metrics = &cluster.frontend().metrics;
    let (batches, shards) = (
        metrics.shard_batches.get(),
        metrics.shard_batch_shards.get(),
    );
    assert!(batches >= QUERIES as u64, "{batches} batched calls");
    assert_eq!(shards, 4 * batches);
    let calls = cluster.leaf(0, 0).stats().searches;
    assert!(
        calls >= 4 * QUERIES as u64,
        "the process answered {calls} shard searches"
    );
}

async fn four_shards_in_one_process(leases: bool) {
    let cluster = sharded_equals_unsharded_in(4, leases, |cluster| cluster.co_hosted(true)).await;
    assert_one_call_per_query(&cluster);
    let metrics = &cluster.frontend().metrics;
    // A leaf in another process gets canaries (first-seen queries).
    let answered = metrics.canaries.with_label_values(&["answered"]).get();
    assert!(answered >= QUERIES as u64 / 2, "{answered} canaries");
}

/// The four shards served by the frontend's own process (`frontend serve
/// --embed-leaf`), called in process: with leases and with a static list,
/// the same answers as the unsharded index, one in-process call per query
/// for the four shards. The leaf advertises an address no gRPC call can
/// reach, so every answer came without the transport.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_shards_embedded_in_the_frontend_equal_the_unsharded_index() {
    for leases in [true, false] {
        let cluster =
            sharded_equals_unsharded_in(4, leases, |cluster| cluster.embedded(true)).await;
        assert_one_call_per_query(&cluster);
        assert_eq!(cluster.leaf(0, 0).advertised(), "127.0.0.1:1");
        let metrics = &cluster.frontend().metrics;
        // No canary goes to a leaf of the frontend's own process.
        let canaries: u64 = Verdict::ALL
            .iter()
            .map(|verdict| metrics.canaries.with_label_values(&[verdict.label()]).get())
            .sum();
        assert_eq!(canaries, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shard_equals_the_unsharded_index() {
    sharded_equals_unsharded(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shards_equal_the_unsharded_index() {
    sharded_equals_unsharded(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_shards_equal_the_unsharded_index() {
    sharded_equals_unsharded(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seven_shards_equal_the_unsharded_index() {
    sharded_equals_unsharded(7).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_missing_shard_of_four_is_estimated_close_to_the_measured_recall() {
    const MISSING: u32 = 1;
    let docs = corpus();
    let cluster = TestCluster::builder()
        .shards(4)
        .documents(Arc::clone(&docs))
        .frontend(|c| {
            c.fanout.hedging = false;
            // Every request here waits out its deadline on the hung shard;
            // that is not overload, and nothing may be shed.
            c.admission.enabled = false;
        })
        .build()
        .await;
    let queries = leaf::sample_queries(300, 9);

    // The full answers, while every shard answers.
    let mut full: Vec<(String, Vec<String>)> = Vec::new();
    for query in &queries {
        let (status, body) = search(&cluster, query, 10_000).await;
        assert_eq!(status, 200, "{query}: {body}");
        assert_eq!(body["partial"], false, "{query}: {body}");
        let ids = hit_ids(&body);
        if !ids.is_empty() {
            full.push((query.clone(), ids));
        }
    }
    assert!(full.len() > 200, "too few queries find anything");

    cluster.leaf(MISSING, 0).faults().set_hang(true);
    // The hung shard costs each request its whole deadline, so requests go
    // out a few at a time.
    let answers: Vec<(u16, Value)> = stream::iter(&full)
        .map(|(query, _)| search(&cluster, query, 1000))
        .buffered(16)
        .collect()
        .await;

    let (mut estimated, mut measured, mut strictly_between) = (0.0, 0.0, 0);
    let mut absolute_error = 0.0;
    for ((query, full_ids), (status, body)) in full.iter().zip(&answers) {
        assert_eq!(status, &200, "{query}: {body}");
        assert_eq!(body["partial"], true, "{query}: {body}");
        let shard = body["shards"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["shard"] == MISSING)
            .unwrap();
        assert_eq!(shard["state"], "timed_out", "{query}: {body}");
        let estimate = body["estimated_recall"].as_f64().unwrap();
        let ids: HashSet<String> = hit_ids(body).into_iter().collect();
        let found = full_ids.iter().filter(|id| ids.contains(*id)).count();
        let recall = found as f64 / full_ids.len() as f64;
        // When the missing shard held part of the full answer and the
        // others held the rest, the estimate is neither "all" nor "none".
        let in_missing = full_ids
            .iter()
            .filter(|id| leaf::shard_of(id, 4) == MISSING)
            .count();
        if in_missing > 0 && in_missing < full_ids.len() {
            assert!(
                estimate > 0.0 && estimate < 1.0,
                "{query}: estimate {estimate} with {in_missing} of {} hits missing",
                full_ids.len()
            );
            strictly_between += 1;
        }
        if in_missing == 0 {
            assert_eq!(recall, 1.0, "{query}: {body}");
        }
        estimated += estimate;
        measured += recall;
        absolute_error += (estimate - recall).abs();
    }
    assert!(
        strictly_between > 100,
        "only {strictly_between} queries lost part of their answer"
    );
    let n = full.len() as f64;
    let (estimated, measured, absolute_error) = (estimated / n, measured / n, absolute_error / n);
    eprintln!("mean estimate {estimated:.3}, mean recall {measured:.3}, MAE {absolute_error:.3}");
    assert!(
        measured > 0.5 && measured < 0.95,
        "one shard of four should cost about a quarter: {measured}"
    );
    assert!(
        (estimated - measured).abs() <= 0.03,
        "mean estimate {estimated:.3} vs mean measured recall {measured:.3}"
    );
    // Per answer too: the champion lists tell which of the missing shard's
    // documents would have made the top k (the share model alone, which
    // knows only where the query's terms are, is off by about 0.1 here).
    assert!(
        absolute_error <= 0.05,
        "mean absolute error of the estimate {absolute_error:.3}"
    );
    // Operators see which model estimated: the champion lists for the plain
    // queries, the share model for phrases (which do not score as sums).
    let (_, metrics) = cluster.get_text("/metrics").await;
    let count = |model: &str| {
        let prefix = format!("frontend_recall_estimates_total{{model=\"{model}\"}} ");
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(&prefix)?.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert!(count("champion") > 100.0, "{metrics}");
    assert!(count("share") > 0.0, "{metrics}");
    assert_eq!(count("documents"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statistics_that_cannot_be_had_fall_back_to_shard_local_scoring_and_say_so() {
    // A static leaf list: a dead leaf stays routed, so its TermStats call
    // fails rather than the shard leaving the table.
    let mut cluster = TestCluster::builder()
        .shards(3)
        .leases(false)
        .documents(corpus())
        .build()
        .await;
    let (status, body) = search(&cluster, "json parser", 5000).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["global_stats"], true, "{body}");

    cluster.kill_leaf(2, 0);
    // A query whose terms were never seen: statistics from two shards of
    // three are not corpus-wide, and the answer says so.
    let (status, body) = search(&cluster, "react component", 5000).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["partial"], true, "{body}");
    assert_eq!(body["global_stats"], false, "{body}");
    assert!(!hit_ids(&body).is_empty(), "{body}");

    // Cached statistics are still corpus-wide.
    let (status, body) = search(&cluster, "json parser", 5000).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["partial"], true, "{body}");
    assert_eq!(body["global_stats"], true, "{body}");
}
