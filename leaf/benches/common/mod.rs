//! Shared by `benches/search.rs` and `examples/search_bench.rs`: the npm
//! corpus at three shard sizes (indexes built once into a temporary
//! directory and reopened afterwards), the query set, and the two sides of
//! the comparison: the leaf's `ShardIndex::search_text`, and tantivy's own
//! `TopDocs::with_limit(10)` plus stored fields and a body snippet per hit
//! on the same searcher and the same parsed query.
//!
//! Environment: `LEAF_BENCH_CORPUS` (default `../shared/corpus/npm-packages.jsonl.gz`
//! from the workspace root), `LEAF_BENCH_QUERIES` (the `.queries.txt`
//! beside it), `LEAF_BENCH_DIR` (default `$TMPDIR/leaf-bench-indexes`),
//! `LEAF_BENCH_SIZES` (default `50k,200k,800k`).
//!
//! Sizes: `50k` is shard 0 of 4 of the npm corpus (48,914 documents),
//! `200k` the whole corpus as one shard (194,978), `800k` the corpus four
//! times as one shard (779,912): copy 0 as is, copy c = 1..3 with the id
//! `<id>#c` and every (5 + c)-th word of the body left out, so that term
//! frequencies and lengths differ between copies.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use leaf::{Budget, CorpusSource, Document, IndexConfig, SearchOutput, ShardIndex};
use tantivy::collector::TopDocs;
use tantivy::schema::Value;
use tantivy::snippet::SnippetGenerator;
use tantivy::{IndexReader, ReloadPolicy, Searcher, TantivyDocument};
use tokio_util::sync::CancellationToken;

pub const K: u32 = 10;

fn shared_corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus")
}

pub fn corpus_path() -> PathBuf {
    std::env::var_os("LEAF_BENCH_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| shared_corpus_dir().join("npm-packages.jsonl.gz"))
}

pub fn queries(limit: usize) -> Vec<String> {
    let path = std::env::var_os("LEAF_BENCH_QUERIES")
        .map(PathBuf::from)
        .unwrap_or_else(|| shared_corpus_dir().join("npm-packages.queries.txt"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .take(limit)
        .map(str::to_string)
        .collect()
}

pub fn sizes() -> Vec<String> {
    std::env::var("LEAF_BENCH_SIZES")
        .unwrap_or_else(|_| "50k,200k,800k".to_string())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The corpus four times over, lightly altered (see the module comment).
pub fn replicated(documents: &[Document], copies: usize) -> Vec<Document> {
    let mut out = Vec::with_capacity(documents.len() * copies);
    for copy in 0..copies {
        for doc in documents {
            if copy == 0 {
                out.push(doc.clone());
                continue;
            }
            let body = doc
                .body
                .split_whitespace()
                .enumerate()
                .filter(|(i, _)| (i + 1) % (5 + copy) != 0)
                .map(|(_, word)| word)
                .collect::<Vec<_>>()
                .join(" ");
            out.push(Document {
                id: format!("{}#{copy}", doc.id),
                title: doc.title.clone(),
                body,
                popularity: doc.popularity,
            });
        }
    }
    out
}

/// Opens (or builds, the first time) the index of `size`.
pub fn open(size: &str) -> ShardIndex {
    let base = std::env::var_os("LEAF_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("leaf-bench-indexes"));
    let dir = base.join(size);
    let config = IndexConfig {
        dir: Some(dir.clone()),
        ..IndexConfig::default()
    };
    let (shard, shards, corpus) = match size {
        "50k" => (0, 4, CorpusSource::File(corpus_path())),
        "200k" => (0, 1, CorpusSource::File(corpus_path())),
        "800k" => {
            let corpus = if dir.join("meta.json").exists() {
                // Reopened without reading the corpus.
                CorpusSource::Documents(Arc::new(Vec::new()))
            } else {
                let read = leaf::read_corpus(corpus_path()).expect("corpus");
                CorpusSource::Documents(Arc::new(replicated(&read.documents, 4)))
            };
            (0, 1, corpus)
        }
        other => panic!("unknown size {other} (50k, 200k or 800k)"),
    };
    let started = std::time::Instant::now();
    let index =
        ShardIndex::open_or_build(shard, shards, &config, &corpus, &CancellationToken::new())
            .expect("index");
    eprintln!(
        "{size}: {} documents in {} segments ({} in {:.1} s) at {}",
        index.num_docs(),
        index.searcher().segment_readers().len(),
        if index.build_report().reopened {
            "reopened"
        } else {
            "built"
        },
        started.elapsed().as_secs_f64(),
        dir.display()
    );
    index
}

/// The leaf's side: parse, search, titles and snippets.
pub fn leaf_search(index: &ShardIndex, text: &str) -> SearchOutput {
    index
        .search_text(text, K, None, &Budget::unlimited())
        .expect("leaf search")
}

/// What tantivy's side returns per hit: score, id, title, snippet.
pub type Row = (f32, String, String, String);

/// tantivy's own searcher over the leaf's index: same segments, but its
/// own doc-store block cache (of the leaf's size), so that neither side
/// reads documents the other just decompressed.
pub fn tantivy_searcher(index: &ShardIndex) -> Searcher {
    let reader: IndexReader = index
        .searcher()
        .index()
        .reader_builder()
        .reload_policy(ReloadPolicy::Manual)
        // The leaf's doc-store cache size, so that the comparison is of the
        // search, not of how many decompressed blocks each side keeps.
        .doc_store_cache_num_blocks(leaf::DOC_STORE_CACHE_BLOCKS)
        .try_into()
        .expect("reader");
    reader.searcher()
}

/// tantivy's side: the same parsed query through `TopDocs::with_limit(10)`,
/// then the stored document and a body snippet for each hit.
pub fn tantivy_search(index: &ShardIndex, searcher: &Searcher, text: &str) -> Vec<Row> {
    let query = index.parse_query(text).expect("query");
    let (title, body) = index.text_fields();
    let id_field = searcher.schema().get_field("id").expect("id");
    let top = searcher
        .search(
            query.query(),
            &TopDocs::with_limit(K as usize).order_by_score(),
        )
        .expect("tantivy search");
    let mut snippets = SnippetGenerator::create(searcher, query.query(), body).expect("snippets");
    snippets.set_max_num_chars(160);
    let mut rows = Vec::with_capacity(top.len());
    for (score, address) in top {
        let doc: TantivyDocument = searcher.doc(address).expect("doc");
        let text = |field| {
            doc.get_first(field)
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        };
        let body_text = text(body);
        let snippet = snippets.snippet(&body_text).to_html();
        rows.push((score, text(id_field), text(title), snippet));
    }
    rows
}

/// p-th percentile (0..=100) of sorted durations, in µs.
pub fn percentile(sorted: &[std::time::Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)].as_secs_f64() * 1e6
}
