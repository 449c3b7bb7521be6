//! Index roots for tests and benchmarks: a corpus written as JSONL, built
//! into generations by the `indexer` library, and leaves configured to
//! serve the root (`TestClusterBuilder::leaf(serve_root(...))`).

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use leaf::{Document, GenerationsConfig, LeafConfig};

/// Writes `docs` as one JSON object a line.
pub fn write_jsonl(path: &Path, docs: &[Document]) {
    let file = std::fs::File::create(path)
        .unwrap_or_else(|error| panic!("create {}: {error}", path.display()));
    let mut out = std::io::BufWriter::new(file);
    for doc in docs {
        serde_json::to_writer(&mut out, doc).expect("serialize a document");
        out.write_all(b"\n").expect("write the corpus");
    }
    out.flush().expect("write the corpus");
}

/// Builds a new generation of every shard of `docs` under `root` (the
/// corpus file goes beside it, as `<root>.generation-<n>.jsonl`) and
/// returns the indexer's report.
pub fn publish(root: &Path, shards: u32, docs: &[Document]) -> indexer::BuildReport {
    std::fs::create_dir_all(root).expect("create the index root");
    let n = std::fs::read_dir(root).map(|d| d.count()).unwrap_or(0);
    let corpus = root.with_extension(format!(
        "generation-{n}-{}.jsonl",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    ));
    write_jsonl(&corpus, docs);
    let config = indexer::BuildConfig {
        writer_heap_bytes: 32 << 20,
        ..indexer::BuildConfig::new(&corpus, shards, root)
    };
    let report = indexer::build(&config).expect("indexer build");
    let _ = std::fs::remove_file(&corpus);
    report
}

/// A leaf configuration change: serve `root`, polling every `poll`.
pub fn serve_root(root: &Path, poll: Duration) -> impl Fn(&mut LeafConfig) + Send + Sync + 'static {
    let generations = GenerationsConfig {
        poll,
        grace: Duration::from_secs(2),
        ..GenerationsConfig::new(root)
    };
    move |config: &mut LeafConfig| config.generations = Some(generations.clone())
}
