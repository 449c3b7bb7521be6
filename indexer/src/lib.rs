//! The indexer: builds a new generation of every shard of a JSONL corpus
//! ahead of time, for leaves that serve an index root
//! (`leaf --index-root ROOT`).
//!
//! A build is a staged pipeline in the manner of SEDA (Welsh et al.,
//! SOSP 2001), one thread per stage and bounded queues between them, so a
//! slow stage back-pressures the ones before it instead of filling memory:
//!
//! ```text
//! read+parse ──queue──▶ route ──queue per shard──▶ index (one writer per shard) ──queue──▶ commit
//! ```
//!
//! - [`pipeline`] runs the stages and counts each one's documents, busy
//!   time, time blocked on a full queue, and queue depth ([`StageStats`]).
//! - [`publish`] names the generation (strictly above every generation in
//!   the root), builds each shard under `ROOT/shard-<i>/.tmp-<gen>-<pid>/`,
//!   syncs it and renames it into place, so that a generation directory is
//!   visible only when complete; it also removes what interrupted builds
//!   left behind.
//! - [`report`] is the final report (text and JSON); [`progress`] the live
//!   display on stderr.
//!
//! The schema, the document conversion and the shard routing are the
//! leaf's own ([`leaf::ShardWriter`], [`leaf::shard_of`]), so a leaf opens
//! exactly what the indexer builds.

pub mod error;
pub mod pipeline;
pub mod progress;
pub mod publish;
pub mod report;
pub mod stages;

use std::path::PathBuf;
use std::sync::Arc;

pub use error::{IndexerError, Result};
pub use pipeline::Hooks;
pub use report::{BadLine, BuildReport, ShardReport, StageReport};
pub use stages::StageStats;

/// What to build, and how.
#[derive(Clone, Debug, PartialEq)]
pub struct BuildConfig {
    /// A JSONL corpus, plain or gzip (detected by its magic bytes).
    pub corpus: PathBuf,
    pub shards: u32,
    /// The index root; shard `i` goes to `out/shard-<i>/<generation>/`.
    pub out: PathBuf,
    /// Capacity of each queue between stages, in batches.
    pub queue_capacity: usize,
    /// Documents per batch passed between stages.
    pub batch_size: usize,
    /// tantivy indexing threads per shard writer. With one, every build of
    /// a shard lays its documents out in corpus order.
    pub writer_threads: usize,
    /// tantivy memory budget per shard writer.
    pub writer_heap_bytes: usize,
    /// How many bad lines the report lists one by one (all are counted).
    pub bad_lines_listed: usize,
    /// Show the live progress display (stderr).
    pub progress: bool,
    /// Test hook: stop forever at this point (see [`HangAt`]).
    pub hang_at: Option<HangAt>,
}

impl BuildConfig {
    pub fn new(corpus: impl Into<PathBuf>, shards: u32, out: impl Into<PathBuf>) -> BuildConfig {
        BuildConfig {
            corpus: corpus.into(),
            shards,
            out: out.into(),
            queue_capacity: 16,
            batch_size: 256,
            writer_threads: 1,
            writer_heap_bytes: 64 * 1024 * 1024,
            bad_lines_listed: 20,
            progress: false,
            hang_at: None,
        }
    }
}

/// Where a build stops forever when asked to (tests of interrupted builds
/// kill it there).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum HangAt {
    /// After the first batch is indexed, while generations are half built.
    Index,
    /// After every shard is committed and synced, before any rename.
    Publish,
}

/// Builds every shard of `config.corpus` into a new generation under
/// `config.out`. Blocking; uses a thread per stage and per shard.
pub fn build(config: &BuildConfig) -> Result<BuildReport> {
    build_with_hooks(config, Hooks::default())
}

/// [`build`] with test hooks.
pub fn build_with_hooks(config: &BuildConfig, hooks: Hooks) -> Result<BuildReport> {
    validate(config)?;
    let target = publish::Target::prepare(&config.out, config.shards)?;
    pipeline::run(config, &target, Arc::new(hooks))
}

fn validate(config: &BuildConfig) -> Result<()> {
    if config.shards == 0 {
        return Err(IndexerError::Config(
            "shards must be at least 1".to_string(),
        ));
    }
    if config.queue_capacity == 0 || config.batch_size == 0 {
        return Err(IndexerError::Config(
            "queue capacity and batch size must be at least 1".to_string(),
        ));
    }
    match std::fs::metadata(&config.corpus) {
        Ok(meta) if meta.is_file() => Ok(()),
        Ok(_) => Err(IndexerError::Config(format!(
            "corpus {} is not a file",
            config.corpus.display()
        ))),
        Err(source) => Err(IndexerError::Corpus {
            path: config.corpus.clone(),
            source,
        }),
    }
}
