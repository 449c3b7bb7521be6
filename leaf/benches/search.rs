//! The leaf's in-process search against tantivy's own TopDocs + stored
//! fields + body snippet, side by side in one run, at shards of about 50k,
//! 200k and 800k documents (issue 17; BENCHMARKS.md "Leaf search against
//! tantivy"). One iteration runs the first `LEAF_BENCH_BATCH` (default 200)
//! queries of the query set, so a median divided by the batch is the mean
//! time per query. After each size, a plain timed loop over the whole batch
//! prints p50/p99 per query for each side.
//!
//! ```text
//! cargo bench -p leaf --bench search
//! ```

use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};

mod common;

fn side_by_side(c: &mut Criterion) {
    let batch: usize = std::env::var("LEAF_BENCH_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let queries = common::queries(batch);
    for size in common::sizes() {
        let index = common::open(&size);
        let searcher = common::tantivy_searcher(&index);
        let mut group = c.benchmark_group(format!("search_{size}"));
        group.throughput(Throughput::Elements(queries.len() as u64));
        group.sample_size(10);
        group.warm_up_time(Duration::from_secs(1));
        group.measurement_time(Duration::from_secs(4));
        group.bench_function("leaf", |b| {
            b.iter(|| {
                for query in &queries {
                    black_box(common::leaf_search(&index, query));
                }
            })
        });
        group.bench_function("tantivy", |b| {
            b.iter(|| {
                for query in &queries {
                    black_box(common::tantivy_search(&index, &searcher, query));
                }
            })
        });
        group.finish();

        let (mut leaf, mut tantivy) = (Vec::new(), Vec::new());
        for query in &queries {
            let started = Instant::now();
            black_box(common::leaf_search(&index, query));
            leaf.push(started.elapsed());
            let started = Instant::now();
            black_box(common::tantivy_search(&index, &searcher, query));
            tantivy.push(started.elapsed());
        }
        leaf.sort();
        tantivy.sort();
        let p = common::percentile;
        println!(
            "{size} per query: leaf p50 {:.1} µs p99 {:.1} µs | tantivy p50 {:.1} µs p99 {:.1} µs | ratio p50 {:.2} p99 {:.2}",
            p(&leaf, 50.0),
            p(&leaf, 99.0),
            p(&tantivy, 50.0),
            p(&tantivy, 99.0),
            p(&leaf, 50.0) / p(&tantivy, 50.0).max(1e-9),
            p(&leaf, 99.0) / p(&tantivy, 99.0).max(1e-9),
        );
    }
}

criterion_group!(benches, side_by_side);
criterion_main!(benches);
