//! Plain timed loop over the query set, side by side: the leaf's
//! `ShardIndex::search_text` against tantivy's own TopDocs + stored fields
//! + body snippet, alternating query by query on the same index, printing
//!   p50/p99 per side at each shard size. Also checks that both sides give
//!   the same scores (ids may differ only among equal scores: tantivy breaks
//!   ties by doc address, the leaf by id).
//!
//! ```text
//! cargo run --release -p leaf --example search_bench -- [--queries N] [--rounds R]
//!     [--only leaf|tantivy] [--handoff]
//! ```
//!
//! `--only` runs one side (for `perf record`); `--handoff` also times each
//! leaf search run inline in a tokio task against a `spawn_blocking`
//! hand-off from one. Sizes and paths: see `benches/common/mod.rs`.

use std::time::{Duration, Instant};

#[path = "../benches/common/mod.rs"]
mod common;

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut limit, mut rounds, mut only, mut handoff) = (2000usize, 1usize, None, false);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--queries" => {
                limit = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--queries N")
            }
            "--rounds" => {
                rounds = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--rounds R")
            }
            "--only" => only = args.next(),
            "--handoff" => handoff = true,
            other => panic!("unknown argument {other}"),
        }
    }
    let queries = common::queries(limit);
    for size in common::sizes() {
        let index = common::open(&size);
        let searcher = common::tantivy_searcher(&index);
        // Warm-up: one pass of each side (page cache, allocator), which also
        // compares their scores; skipped with `--only`, for clean profiles.
        let mut mismatches = 0usize;
        for query in queries.iter().filter(|_| only.is_none()) {
            let leaf = common::leaf_search(&index, query);
            let tantivy = common::tantivy_search(&index, &searcher, query);
            let a: Vec<f32> = leaf.hits.iter().map(|h| h.score).collect();
            let b: Vec<f32> = tantivy.iter().map(|r| r.0).collect();
            let same = a.len() == b.len()
                && a.iter()
                    .zip(&b)
                    .all(|(x, y)| (x - y).abs() <= 1e-5 * x.abs().max(1.0));
            if !same {
                mismatches += 1;
            }
        }
        let (mut leaf_times, mut tantivy_times) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            for query in &queries {
                if only.as_deref() != Some("tantivy") {
                    let started = Instant::now();
                    std::hint::black_box(common::leaf_search(&index, query));
                    leaf_times.push(started.elapsed());
                }
                if only.as_deref() != Some("leaf") {
                    let started = Instant::now();
                    std::hint::black_box(common::tantivy_search(&index, &searcher, query));
                    tantivy_times.push(started.elapsed());
                }
            }
        }
        leaf_times.sort();
        tantivy_times.sort();
        let p = |times: &[Duration], q| common::percentile(times, q);
        println!(
            "{size}: {} docs, {} queries x {rounds}: leaf p50 {:.1} µs p99 {:.1} µs | tantivy p50 {:.1} µs p99 {:.1} µs | ratio p50 {:.2} p99 {:.2} | score mismatches {mismatches}",
            index.num_docs(),
            queries.len(),
            p(&leaf_times, 50.0),
            p(&leaf_times, 99.0),
            p(&tantivy_times, 50.0),
            p(&tantivy_times, 99.0),
            p(&leaf_times, 50.0) / p(&tantivy_times, 50.0).max(1e-9),
            p(&leaf_times, 99.0) / p(&tantivy_times, 99.0).max(1e-9),
        );
        if handoff {
            handoff_costs(index, &queries);
        }
    }
}

/// Per search, from a task on a 2-worker tokio runtime: inline on the
/// worker, against a `spawn_blocking` hand-off (the service's path).
fn handoff_costs(index: leaf::ShardIndex, queries: &[String]) {
    let index = std::sync::Arc::new(index);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let queries = queries.to_vec();
    let (inline, blocking) = runtime.block_on(async move {
        tokio::spawn(async move {
            // Whole passes, alternating, so that neither way reads documents
            // the other just decompressed.
            let (mut inline, mut blocking) = (Vec::new(), Vec::new());
            for _ in 0..2 {
                for query in &queries {
                    let started = Instant::now();
                    std::hint::black_box(common::leaf_search(&index, query));
                    inline.push(started.elapsed());
                }
                for query in &queries {
                    let started = Instant::now();
                    let (index2, query2) = (index.clone(), query.clone());
                    let out =
                        tokio::task::spawn_blocking(move || common::leaf_search(&index2, &query2))
                            .await
                            .expect("join");
                    std::hint::black_box(out);
                    blocking.push(started.elapsed());
                }
            }
            (inline, blocking)
        })
        .await
        .expect("task")
    });
    let (mut inline, mut blocking) = (inline, blocking);
    inline.sort();
    blocking.sort();
    println!(
        "  hand-off: inline p50 {:.1} µs p99 {:.1} µs | spawn_blocking p50 {:.1} µs p99 {:.1} µs",
        common::percentile(&inline, 50.0),
        common::percentile(&inline, 99.0),
        common::percentile(&blocking, 50.0),
        common::percentile(&blocking, 99.0),
    );
}
