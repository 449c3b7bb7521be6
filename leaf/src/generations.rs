//! Index generations under an index root (`--index-root`): discovery,
//! opening, warming, the atomic swap to a newer one, and garbage collection.
//!
//! Layout, written by the `indexer` crate:
//!
//! ```text
//! ROOT/shard-<i>/<generation>/        a complete generation (tantivy files + manifest.json)
//! ROOT/shard-<i>/.tmp-<generation>-<pid>/   a build in progress, never served
//! ```
//!
//! A generation directory is named by its generation id (a decimal u64,
//! strictly increasing per root) and appears only by a rename once its
//! files and manifest are synced, so a directory with a numeric name is
//! complete. The leaf serves the newest one that opens; [`Generations::poll`]
//! looks for a newer one, opens and warms it off the serving path, and swaps
//! it into the [`ArcSwap`] the service reads: searches in flight keep the
//! `Arc` of the old index, new ones load the new one. A generation that does
//! not open (corrupt, another shard or shard count) is refused once, with
//! one log line and `leaf_generation_swaps_total{outcome="refused"}`, and
//! never retried. Generations older than the newest `keep` are removed once
//! `grace` has passed since the last swap.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

use crate::builtin::sample_queries;
use crate::corpus::{shard_of, Document};
use crate::error::{LeafError, Result};
use crate::index::ShardIndex;
use crate::metrics::Metrics;
use crate::search::Budget;
use crate::writer::ShardWriter;

/// The name of the manifest inside a generation directory.
pub const MANIFEST: &str = "manifest.json";
/// The prefix of a generation being built.
pub const TMP_PREFIX: &str = ".tmp-";
/// Queries run against a new generation before it serves.
const WARM_QUERIES: usize = 16;

/// Where a leaf finds its generations and how it keeps them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenerationsConfig {
    /// The index root; this shard's generations are in `shard-<i>/`.
    pub root: PathBuf,
    /// Complete generations kept on disk (the served one always is).
    pub keep: usize,
    /// Time after a swap before older generations are removed, so that
    /// searches in flight on the old one finish first.
    pub grace: Duration,
    /// How often the shard directory is scanned for a newer generation.
    pub poll: Duration,
}

impl GenerationsConfig {
    pub fn new(root: impl Into<PathBuf>) -> GenerationsConfig {
        GenerationsConfig {
            root: root.into(),
            keep: 2,
            grace: Duration::from_secs(30),
            poll: Duration::from_secs(1),
        }
    }
}

/// What is known about a generation without opening its index.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub generation: u64,
    pub shard: u32,
    pub shards: u32,
    pub documents: u64,
    pub bad_lines: u64,
    /// When the build finished, in milliseconds since the Unix epoch.
    pub built_at_unix_ms: u64,
    pub build_seconds: f64,
}

impl Manifest {
    /// Reads `dir/manifest.json`.
    pub fn read(dir: &Path) -> Result<Manifest> {
        let path = dir.join(MANIFEST);
        let text = std::fs::read(&path)?;
        serde_json::from_slice(&text).map_err(|error| LeafError::IndexMismatch {
            dir: dir.to_path_buf(),
            reason: format!("unreadable {MANIFEST}: {error}"),
        })
    }

    /// Writes `dir/manifest.json` and syncs it.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let text = serde_json::to_vec_pretty(self)
            .map_err(|error| LeafError::Internal(format!("cannot encode manifest: {error}")))?;
        let mut file = File::create(dir.join(MANIFEST))?;
        file.write_all(&text)?;
        file.sync_all()?;
        Ok(())
    }
}

/// The directory of shard `shard`'s generations.
pub fn shard_dir(root: &Path, shard: u32) -> PathBuf {
    root.join(format!("shard-{shard}"))
}

/// The complete generations in `shard_dir`, oldest first (directories named
/// by a number; temporary builds and other entries are skipped). A missing
/// directory has none.
pub fn list(shard_dir: &Path) -> Result<Vec<u64>> {
    let entries = match std::fs::read_dir(shard_dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error.into()),
    };
    let mut generations = Vec::new();
    for entry in entries {
        let entry = entry?;
        let Some(generation) = entry.file_name().to_str().and_then(parse_generation) else {
            continue;
        };
        if entry.file_type()?.is_dir() {
            generations.push(generation);
        }
    }
    generations.sort_unstable();
    Ok(generations)
}

/// A generation directory's name as a generation id (digits only, not 0).
fn parse_generation(name: &str) -> Option<u64> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse().ok().filter(|&generation| generation > 0)
}

/// Opens generation `generation` of shard `shard` of `shards` in
/// `shard_dir`, checks its manifest against the index and the leaf, and
/// warms it.
pub fn open(shard_dir: &Path, generation: u64, shard: u32, shards: u32) -> Result<ShardIndex> {
    let dir = shard_dir.join(generation.to_string());
    let mismatch = |reason: String| LeafError::IndexMismatch {
        dir: dir.clone(),
        reason,
    };
    let manifest = Manifest::read(&dir)?;
    if manifest.generation != generation {
        return Err(mismatch(format!(
            "manifest says generation {}",
            manifest.generation
        )));
    }
    if (manifest.shard, manifest.shards) != (shard, shards) {
        return Err(mismatch(format!(
            "manifest says shard {} of {}, not shard {shard} of {shards}",
            manifest.shard, manifest.shards
        )));
    }
    let opening = Instant::now();
    let index = ShardIndex::open_generation(&dir, shard, shards)?;
    let opened = opening.elapsed();
    if index.generation() != generation {
        return Err(mismatch(format!(
            "index payload says generation {}",
            index.generation()
        )));
    }
    warm(&index)?;
    tracing::info!(
        shard,
        generation,
        open_ms = opened.as_millis() as u64,
        warm_ms = (opening.elapsed() - opened).as_millis() as u64,
        "opened index generation"
    );
    Ok(index)
}

/// Runs a few queries so that the term dictionaries and postings the first
/// searches need are paged in before the generation serves.
fn warm(index: &ShardIndex) -> Result<()> {
    for query in sample_queries(WARM_QUERIES, index.generation()) {
        index.search_text(&query, 10, None, &Budget::unlimited())?;
    }
    Ok(())
}

pub use crate::metrics::SwapOutcome;

/// One shard's generations and the index being served.
pub struct Generations {
    config: GenerationsConfig,
    shard: u32,
    shards: u32,
    dir: PathBuf,
    current: Arc<ArcSwap<ShardIndex>>,
    /// Generations that failed to open: never retried.
    refused: BTreeSet<u64>,
    last_swap: Option<Instant>,
    metrics: Option<Metrics>,
}

impl std::fmt::Debug for Generations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generations")
            .field("dir", &self.dir)
            .field("generation", &self.current.load().generation())
            .field("refused", &self.refused)
            .finish()
    }
}

impl Generations {
    /// Opens the newest generation of `shard` that opens. Blocking. Fails
    /// when none does.
    pub fn open(
        config: GenerationsConfig,
        shard: u32,
        shards: u32,
        metrics: Option<Metrics>,
    ) -> Result<Generations> {
        let dir = shard_dir(&config.root, shard);
        let mut refused = BTreeSet::new();
        let Some(index) = open_newest(&dir, 0, shard, shards, &mut refused, metrics.as_ref())?
        else {
            return Err(LeafError::Config(format!(
                "no complete generation of shard {shard} under {}",
                dir.display()
            )));
        };
        Ok(Generations {
            config,
            shard,
            shards,
            dir,
            current: Arc::new(ArcSwap::from_pointee(index)),
            refused,
            last_swap: None,
            metrics,
        })
    }

    /// The served index, shared with the service.
    pub fn current(&self) -> &Arc<ArcSwap<ShardIndex>> {
        &self.current
    }

    /// How often [`Generations::poll`] should be called.
    pub fn poll_interval(&self) -> Duration {
        self.config.poll
    }

    /// Generations that were refused.
    pub fn refused(&self) -> &BTreeSet<u64> {
        &self.refused
    }

    /// Swaps to the newest generation newer than the served one, if one
    /// opens, then removes old generations when due. Blocking. Returns the
    /// new index when it swapped.
    pub fn poll(&mut self) -> Result<Option<Arc<ShardIndex>>> {
        let serving = self.current.load().generation();
        let newest = open_newest(
            &self.dir,
            serving,
            self.shard,
            self.shards,
            &mut self.refused,
            self.metrics.as_ref(),
        )?;
        let swapped = match newest {
            Some(index) => {
                let index = Arc::new(index);
                self.current.store(Arc::clone(&index));
                self.last_swap = Some(Instant::now());
                tracing::info!(
                    shard = self.shard,
                    from = serving,
                    to = index.generation(),
                    documents = index.num_docs(),
                    "swapped to a new index generation"
                );
                Some(index)
            }
            None => None,
        };
        if self
            .last_swap
            .is_none_or(|at| at.elapsed() >= self.config.grace)
        {
            self.collect_garbage()?;
        }
        Ok(swapped)
    }

    /// Removes the generations older than the newest `keep`, never the one
    /// served. Returns the removed ones.
    pub fn collect_garbage(&self) -> Result<Vec<u64>> {
        let serving = self.current.load().generation();
        let generations = list(&self.dir)?;
        let keep = self.config.keep.max(1);
        let old = generations.len().saturating_sub(keep);
        let mut removed = Vec::new();
        for &generation in &generations[..old] {
            if generation == serving {
                continue;
            }
            let dir = self.dir.join(generation.to_string());
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {
                    tracing::info!(
                        shard = self.shard,
                        generation,
                        "removed old index generation"
                    );
                    removed.push(generation);
                }
                Err(error) => {
                    tracing::warn!(shard = self.shard, generation, %error, "cannot remove old index generation")
                }
            }
        }
        Ok(removed)
    }
}

/// Opens the newest generation above `above` in `dir` that opens,
/// refusing (once each, remembered in `refused`) those that do not.
fn open_newest(
    dir: &Path,
    above: u64,
    shard: u32,
    shards: u32,
    refused: &mut BTreeSet<u64>,
    metrics: Option<&Metrics>,
) -> Result<Option<ShardIndex>> {
    let count = |outcome: SwapOutcome| {
        if let Some(metrics) = metrics {
            metrics
                .generation_swaps
                .with_label_values(&[outcome.label()])
                .inc();
        }
    };
    for generation in list(dir)?.into_iter().rev() {
        if generation <= above {
            break;
        }
        if refused.contains(&generation) {
            continue;
        }
        match open(dir, generation, shard, shards) {
            Ok(index) => {
                count(SwapOutcome::Ok);
                return Ok(Some(index));
            }
            Err(error) => {
                tracing::error!(
                    shard,
                    generation,
                    dir = %dir.display(),
                    %error,
                    "refusing index generation, serving the one it has"
                );
                refused.insert(generation);
                count(SwapOutcome::Refused);
            }
        }
    }
    Ok(None)
}

/// Builds generation `generation` of `shard` of `shards` from `docs` (those
/// of the shard; the others are skipped) under `root`, as the indexer does:
/// in a temporary directory with its manifest, then renamed into place.
/// For tools and tests that have their documents in memory; returns the
/// documents written.
pub fn publish(
    root: &Path,
    shard: u32,
    shards: u32,
    generation: u64,
    docs: &[Document],
) -> Result<u64> {
    let dir = shard_dir(root, shard);
    std::fs::create_dir_all(&dir)?;
    let tmp = dir.join(format!("{TMP_PREFIX}{generation}-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let mut writer = ShardWriter::create(&tmp, shard, shards, 1, 0)?;
    for doc in docs.iter().filter(|d| shard_of(&d.id, shards) == shard) {
        writer.add(doc)?;
    }
    let documents = writer.commit(generation, 0)?;
    Manifest {
        generation,
        shard,
        shards,
        documents,
        bad_lines: 0,
        built_at_unix_ms: 0,
        build_seconds: 0.0,
    }
    .write(&tmp)?;
    std::fs::rename(&tmp, dir.join(generation.to_string()))?;
    Ok(documents)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builtin::generate_corpus;
    use crate::corpus::Document;

    /// Writes generation `generation` of `shard` of `shards` under `root`.
    pub(crate) fn publish(
        root: &Path,
        shard: u32,
        shards: u32,
        generation: u64,
        docs: &[Document],
    ) {
        super::publish(root, shard, shards, generation, docs).unwrap();
    }

    fn config(root: &Path, keep: usize) -> GenerationsConfig {
        GenerationsConfig {
            keep,
            grace: Duration::ZERO,
            ..GenerationsConfig::new(root)
        }
    }

    #[test]
    fn lists_only_complete_generations() {
        let root = tempfile::tempdir().unwrap();
        let dir = shard_dir(root.path(), 0);
        assert!(list(&dir).unwrap().is_empty());
        for name in ["20", "3", ".tmp-40-1", "0", "x1", "100"] {
            std::fs::create_dir_all(dir.join(name)).unwrap();
        }
        std::fs::write(dir.join("7"), b"a file, not a generation").unwrap();
        assert_eq!(list(&dir).unwrap(), [3, 20, 100]);
    }

    #[test]
    fn serves_the_newest_and_swaps_to_a_newer_one() {
        let root = tempfile::tempdir().unwrap();
        let docs = generate_corpus(120, 1);
        publish(root.path(), 0, 1, 5, &docs[..60]);
        publish(root.path(), 0, 1, 7, &docs[..80]);
        let registry = prometheus::Registry::new();
        let metrics = Metrics::new(&registry, 0).unwrap();
        let mut generations =
            Generations::open(config(root.path(), 3), 0, 1, Some(metrics.clone())).unwrap();
        let current = Arc::clone(generations.current());
        assert_eq!(current.load().generation(), 7);
        assert_eq!(current.load().num_docs(), 80);
        let held = current.load_full();

        assert!(generations.poll().unwrap().is_none());
        publish(root.path(), 0, 1, 9, &docs);
        let swapped = generations.poll().unwrap().expect("swapped");
        assert_eq!(swapped.generation(), 9);
        assert_eq!(current.load().generation(), 9);
        assert_eq!(current.load().num_docs(), 120);
        // What was loaded before the swap stays usable.
        assert_eq!(held.generation(), 7);
        assert_eq!(held.num_docs(), 80);
        let ok = metrics.generation_swaps.with_label_values(&["ok"]).get();
        assert_eq!(ok, 2);
    }

    #[test]
    fn a_broken_generation_is_refused_and_serving_continues() {
        let root = tempfile::tempdir().unwrap();
        let docs = generate_corpus(100, 2);
        publish(root.path(), 0, 2, 10, &docs);
        let registry = prometheus::Registry::new();
        let metrics = Metrics::new(&registry, 0).unwrap();
        let mut generations =
            Generations::open(config(root.path(), 5), 0, 2, Some(metrics.clone())).unwrap();

        // Corrupt: a directory with garbage for a manifest and no index.
        let dir = shard_dir(root.path(), 0);
        std::fs::create_dir_all(dir.join("11")).unwrap();
        std::fs::write(dir.join("11").join(MANIFEST), b"{not json").unwrap();
        assert!(generations.poll().unwrap().is_none());
        // Another shard count in the manifest.
        publish(root.path(), 0, 3, 12, &docs);
        assert!(generations.poll().unwrap().is_none());
        assert_eq!(generations.current().load().generation(), 10);
        assert_eq!(
            generations.refused().iter().copied().collect::<Vec<_>>(),
            [11, 12]
        );
        let refused = metrics.generation_swaps.with_label_values(&["refused"]);
        assert_eq!(refused.get(), 2);
        // Refused once, not at every poll.
        assert!(generations.poll().unwrap().is_none());
        assert_eq!(refused.get(), 2);
        // A good newer one is still taken.
        publish(root.path(), 0, 2, 13, &docs);
        assert_eq!(generations.poll().unwrap().unwrap().generation(), 13);
    }

    #[test]
    fn no_generation_is_a_clear_error() {
        let root = tempfile::tempdir().unwrap();
        let error = Generations::open(config(root.path(), 2), 1, 2, None).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("no complete generation of shard 1"),
            "{error}"
        );
    }

    #[test]
    fn keeps_the_last_k_generations() {
        let root = tempfile::tempdir().unwrap();
        let docs = generate_corpus(40, 3);
        publish(root.path(), 0, 1, 1, &docs);
        let mut generations = Generations::open(config(root.path(), 2), 0, 1, None).unwrap();
        for generation in 2..=5 {
            publish(root.path(), 0, 1, generation, &docs);
            assert!(generations.poll().unwrap().is_some());
        }
        assert_eq!(list(&shard_dir(root.path(), 0)).unwrap(), [4, 5]);
        assert_eq!(generations.current().load().generation(), 5);
    }

    #[test]
    fn the_served_generation_is_never_removed() {
        let root = tempfile::tempdir().unwrap();
        let docs = generate_corpus(40, 4);
        publish(root.path(), 0, 1, 1, &docs);
        let generations = Generations::open(config(root.path(), 1), 0, 1, None).unwrap();
        // Newer but broken ones do not displace the served one.
        let dir = shard_dir(root.path(), 0);
        for broken in ["2", "3"] {
            std::fs::create_dir_all(dir.join(broken)).unwrap();
        }
        assert_eq!(generations.collect_garbage().unwrap(), [2]);
        assert!(list(&dir).unwrap().contains(&1));
    }
}
