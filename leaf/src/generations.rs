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
//! looks for a newer one, opens and warms it off the serving path (the
//! watcher runs it on a low-priority thread, replaying the queries this
//! leaf served recently, [`RecentQueries`]), and swaps it into the
//! [`ArcSwap`] the service reads: searches in flight keep the `Arc` of the
//! old index, new ones load the new one.
//!
//! **A staggered rollout.** A leaf does not open a new generation as soon
//! as it sees it but at its slot, `slot = replica × shards + shard`
//! ([`rollout_slot`]): slot 0 at once, slot `k` one poll (every leaf has
//! seen the generation by then) plus `k × stagger` after the generation
//! appeared (the change time of its directory, which the publishing rename
//! sets, so leaves that noticed it at different polls keep their order).
//! At its slot it opens, warms and swaps. So the first replica of every
//! shard moves, one shard after the other, before any second replica
//! does; two replicas of one shard are `shards × stagger` apart and never
//! open, warm or swap together, and no two leaves compete for the CPU
//! with a warm-up at the same time (as long as a warm-up takes less than
//! a stagger). A generation that does
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
/// Generated queries run against a new generation when the leaf has served
/// none yet (nothing to replay).
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
    /// Time between two rollout slots (see [`rollout_slot`]); zero swaps
    /// as soon as a generation is warm.
    pub stagger: Duration,
    /// This leaf's replica number among its shard's replicas, which orders
    /// its swap after the lower replicas of every shard; `None` derives one
    /// from a hash of the leaf's address (see [`fallback_replica`]).
    pub replica: Option<u32>,
    /// Recent queries replayed against a new generation before it serves.
    pub warm_queries: usize,
}

impl GenerationsConfig {
    pub fn new(root: impl Into<PathBuf>) -> GenerationsConfig {
        GenerationsConfig {
            root: root.into(),
            keep: 2,
            grace: Duration::from_secs(30),
            poll: Duration::from_secs(1),
            stagger: Duration::from_millis(500),
            replica: None,
            warm_queries: 128,
        }
    }
}

/// A leaf's place in a rollout: every shard's replica 0 (shard by shard),
/// then every shard's replica 1, and so on. Two replicas of one shard are
/// `shards` slots apart.
pub fn rollout_slot(shard: u32, shards: u32, replica: u32) -> u32 {
    replica.saturating_mul(shards).saturating_add(shard)
}

/// A replica number for a leaf started without `--replica`: a stable hash
/// of its advertised address into 0..8. Two replicas of one shard may then
/// draw the same number (and swap together); `--replica` rules that out.
pub fn fallback_replica(address: &str) -> u32 {
    (xxhash_rust::xxh3::xxh3_64(address.as_bytes()) % 8) as u32
}

/// The queries a leaf served lately, a bounded ring that keeps one in
/// [`RecentQueries::SAMPLE`] (a memory of the traffic, not a log; taking
/// every query would cost each search a lock), replayed to warm a new
/// generation with real work: the posting lists, norms and stored fields
/// that the traffic needs are paged in before it serves.
#[derive(Debug)]
pub struct RecentQueries {
    capacity: usize,
    seen: std::sync::atomic::AtomicU64,
    ring: parking_lot::Mutex<std::collections::VecDeque<String>>,
}

impl RecentQueries {
    /// One query in this many is kept.
    pub const SAMPLE: u64 = 4;

    pub fn new(capacity: usize) -> RecentQueries {
        RecentQueries {
            capacity,
            seen: std::sync::atomic::AtomicU64::new(0),
            ring: parking_lot::Mutex::new(std::collections::VecDeque::with_capacity(capacity)),
        }
    }

    /// Notes a query that parsed (sampled; never waits for the lock).
    pub fn note(&self, query: &str) {
        let n = self.seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if self.capacity == 0 || n % Self::SAMPLE != 0 {
            return;
        }
        if let Some(mut ring) = self.ring.try_lock() {
            if ring.iter().any(|q| q == query) {
                return;
            }
            if ring.len() == self.capacity {
                ring.pop_front();
            }
            ring.push_back(query.to_string());
        }
    }

    /// The kept queries, oldest first.
    pub fn snapshot(&self) -> Vec<String> {
        self.ring.lock().iter().cloned().collect()
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
/// warms it with generated queries.
pub fn open(shard_dir: &Path, generation: u64, shard: u32, shards: u32) -> Result<ShardIndex> {
    open_warmed(shard_dir, generation, shard, shards, &[]).map(|(index, _)| index)
}

/// [`open`], warming with `queries` (those that parse; generated ones when
/// there are none). Returns the index and the queries run.
fn open_warmed(
    shard_dir: &Path,
    generation: u64,
    shard: u32,
    shards: u32,
    queries: &[String],
) -> Result<(ShardIndex, usize)> {
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
    let warmed = warm(&index, queries)?;
    tracing::info!(
        shard,
        generation,
        open_ms = opened.as_millis() as u64,
        warm_ms = (opening.elapsed() - opened).as_millis() as u64,
        warm_queries = warmed,
        "opened index generation"
    );
    Ok((index, warmed))
}

/// Runs `queries` (generated ones when empty) so that the term
/// dictionaries, postings and stored fields the first searches need are
/// paged in before the generation serves. Returns the queries run.
fn warm(index: &ShardIndex, queries: &[String]) -> Result<usize> {
    let generated;
    let queries = if queries.is_empty() {
        generated = sample_queries(WARM_QUERIES, index.generation());
        &generated[..]
    } else {
        queries
    };
    let mut run = 0;
    for query in queries {
        // A recent query that no longer parses is skipped, not an error.
        let Ok(parsed) = index.parse_query(query) else {
            continue;
        };
        index.search(&parsed, 10, None, &Budget::unlimited())?;
        run += 1;
    }
    Ok(run)
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
    /// A newer generation seen, waiting for this leaf's slot to be opened.
    waiting: Option<Waiting>,
    /// Queries run to warm the generation swapped in last.
    last_warmed: Option<usize>,
    /// What this leaf served lately, replayed to warm a new generation.
    recent: Arc<RecentQueries>,
}

/// A newer generation and when this leaf is due to open, warm and swap to
/// it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Waiting {
    generation: u64,
    due: Instant,
}

/// Where a leaf stands in a rollout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RolloutState {
    /// Serving its newest generation.
    Serving,
    /// A newer generation is there; at `due` this leaf opens it, warms it
    /// and swaps to it.
    Waiting { generation: u64, due: Instant },
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
        let Some((index, _)) =
            open_newest(&dir, 0, shard, shards, &[], &mut refused, metrics.as_ref())?
        else {
            return Err(LeafError::Config(format!(
                "no complete generation of shard {shard} under {}",
                dir.display()
            )));
        };
        let recent = Arc::new(RecentQueries::new(config.warm_queries));
        Ok(Generations {
            config,
            shard,
            shards,
            dir,
            current: Arc::new(ArcSwap::from_pointee(index)),
            refused,
            last_swap: None,
            metrics,
            waiting: None,
            last_warmed: None,
            recent,
        })
    }

    /// The queries the service notes as it serves, replayed at warm-up.
    pub fn recent_queries(&self) -> &Arc<RecentQueries> {
        &self.recent
    }

    /// This leaf's rollout slot (see [`rollout_slot`]).
    pub fn slot(&self) -> u32 {
        rollout_slot(self.shard, self.shards, self.config.replica.unwrap_or(0))
    }

    /// Where this leaf stands in a rollout.
    pub fn state(&self) -> RolloutState {
        match self.waiting {
            Some(Waiting { generation, due }) => RolloutState::Waiting { generation, due },
            None => RolloutState::Serving,
        }
    }

    /// When this leaf is due to open a waiting generation, if one waits.
    pub fn due(&self) -> Option<Instant> {
        self.waiting.map(|waiting| waiting.due)
    }

    /// The queries run to warm the generation swapped in last (none before
    /// the first swap).
    pub fn last_warmed(&self) -> Option<usize> {
        self.last_warmed
    }

    /// When this leaf's slot comes for a generation that appeared at
    /// `appeared`: slot 0 at once; slot `k` one poll (by then every leaf has
    /// seen the generation) plus `k` staggers later.
    fn due_after(&self, appeared: Instant) -> Instant {
        let slot = self.slot();
        if slot == 0 || self.config.stagger.is_zero() {
            return appeared;
        }
        appeared + self.config.poll + self.config.stagger.saturating_mul(slot)
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

    /// Looks for a generation newer than the served one; when this leaf's
    /// rollout slot for it has come, opens it, warms it (replaying recent
    /// queries) and swaps it in. Then removes old generations when due.
    /// Blocking. Returns the new index when it swapped: the caller
    /// announces it only then, after the warm-up.
    pub fn poll(&mut self) -> Result<Option<Arc<ShardIndex>>> {
        self.poll_at(Instant::now())
    }

    /// [`Generations::poll`] at `now` (tests step time by hand).
    pub fn poll_at(&mut self, now: Instant) -> Result<Option<Arc<ShardIndex>>> {
        let serving = self.current.load().generation();
        let newest = list(&self.dir)?
            .into_iter()
            .rev()
            .find(|g| *g > serving && !self.refused.contains(g));
        self.waiting = match (newest, self.waiting) {
            (None, _) => None,
            (Some(generation), Some(waiting)) if waiting.generation == generation => Some(waiting),
            (Some(generation), _) => {
                // The slot counts from when the generation appeared (its
                // directory's change time), so that leaves that noticed it
                // at different polls keep their order; one that appeared
                // long ago is due at once.
                let ago = appeared_ago(&self.dir.join(generation.to_string()));
                let appeared = ago.map_or(now, |ago| now.checked_sub(ago).unwrap_or(now));
                let due = self.due_after(appeared);
                tracing::info!(
                    shard = self.shard,
                    generation,
                    slot = self.slot(),
                    due_in_ms = due.saturating_duration_since(now).as_millis() as u64,
                    "new index generation seen, waiting for this leaf's rollout slot"
                );
                Some(Waiting { generation, due })
            }
        };
        let swapped = match self.waiting {
            Some(waiting) if waiting.due <= now => {
                let queries = self.recent.snapshot();
                let opened = open_newest(
                    &self.dir,
                    serving,
                    self.shard,
                    self.shards,
                    &queries,
                    &mut self.refused,
                    self.metrics.as_ref(),
                )?;
                self.waiting = None;
                match opened {
                    Some((index, warmed)) => {
                        let index = Arc::new(index);
                        self.current.store(Arc::clone(&index));
                        self.last_swap = Some(now);
                        self.last_warmed = Some(warmed);
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
                }
            }
            _ => None,
        };
        if self
            .last_swap
            .is_none_or(|at| now.saturating_duration_since(at) >= self.config.grace)
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

/// Opens the newest generation above `above` in `dir` that opens (warmed
/// with `queries`), refusing (once each, remembered in `refused`) those
/// that do not. Returns it with the queries that warmed it.
fn open_newest(
    dir: &Path,
    above: u64,
    shard: u32,
    shards: u32,
    queries: &[String],
    refused: &mut BTreeSet<u64>,
    metrics: Option<&Metrics>,
) -> Result<Option<(ShardIndex, usize)>> {
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
        match open_warmed(dir, generation, shard, shards, queries) {
            Ok((index, warmed)) => {
                count(SwapOutcome::Ok);
                return Ok(Some((index, warmed)));
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

/// How long ago `dir` appeared: its change time, which the rename that
/// publishes a generation sets.
fn appeared_ago(dir: &Path) -> Option<Duration> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(dir).ok()?;
    let changed = std::time::UNIX_EPOCH
        + Duration::new(
            u64::try_from(meta.ctime()).ok()?,
            u32::try_from(meta.ctime_nsec()).ok()?,
        );
    std::time::SystemTime::now().duration_since(changed).ok()
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
    fn a_new_generation_is_warmed_with_recent_queries_before_its_slot_swaps_it_in() {
        let root = tempfile::tempdir().unwrap();
        let docs = generate_corpus(200, 5);
        publish(root.path(), 1, 2, 5, &docs);
        let hour = Duration::from_secs(3600);
        let config = GenerationsConfig {
            stagger: hour,
            replica: Some(1),
            ..config(root.path(), 3)
        };
        let mut generations = Generations::open(config, 1, 2, None).unwrap();
        // Slot 1 × 2 + 1: three stagger periods after the generation appears.
        assert_eq!(generations.slot(), 3);
        let served: Vec<String> = docs
            .iter()
            .take(12)
            .filter_map(|d| d.title.split_whitespace().next().map(str::to_lowercase))
            .collect();
        for query in &served {
            for _ in 0..RecentQueries::SAMPLE {
                generations.recent_queries().note(query);
            }
        }
        generations.recent_queries().note("title:(unbalanced");
        let replayed = generations.recent_queries().snapshot();
        assert!(!replayed.is_empty());

        publish(root.path(), 1, 2, 6, &docs);
        let now = Instant::now();
        assert!(generations.poll_at(now).unwrap().is_none());
        let RolloutState::Waiting { generation, due } = generations.state() else {
            panic!("the new generation waits: {:?}", generations.state());
        };
        assert_eq!(generation, 6);
        assert!(due >= now + 2 * hour, "due in {:?}", due - now);
        // Until its slot, the old generation serves and nothing was warmed.
        assert!(generations
            .poll_at(due - Duration::from_millis(1))
            .unwrap()
            .is_none());
        assert_eq!(generations.current().load().generation(), 5);
        assert_eq!(generations.last_warmed(), None);
        // At it, the new generation is opened, warmed, then swapped in (and
        // only then returned, for the watcher to announce).
        let swapped = generations
            .poll_at(due)
            .unwrap()
            .expect("swapped at its slot");
        assert_eq!(swapped.generation(), 6);
        assert_eq!(generations.state(), RolloutState::Serving);
        assert_eq!(generations.current().load().generation(), 6);
        // Every recent query that parses ran on it before it served.
        let parsing = replayed
            .iter()
            .filter(|q| swapped.parse_query(q).is_ok())
            .count();
        assert!(parsing > 0 && parsing < replayed.len());
        assert_eq!(generations.last_warmed(), Some(parsing));
    }

    #[test]
    fn two_replicas_of_a_shard_never_swap_together() {
        let root = tempfile::tempdir().unwrap();
        let docs = generate_corpus(100, 6);
        let shards = 2;
        publish(root.path(), 0, shards, 1, &docs);
        let hour = Duration::from_secs(3600);
        let replica = |replica| {
            let config = GenerationsConfig {
                stagger: hour,
                replica: Some(replica),
                ..config(root.path(), 3)
            };
            Generations::open(config, 0, shards, None).unwrap()
        };
        let (mut first, mut second) = (replica(0), replica(1));
        publish(root.path(), 0, shards, 2, &docs);
        let now = Instant::now();
        // Replica 0 (slot 0) opens, warms and swaps at once; replica 1
        // (slot 2) does not even open the new generation for two stagger
        // periods, while replica 0 serves it.
        assert!(first.poll_at(now).unwrap().is_some());
        assert_eq!(first.last_warmed(), Some(WARM_QUERIES));
        assert!(second.poll_at(now).unwrap().is_none());
        let Some(due) = second.due() else {
            panic!("replica 1 waits: {:?}", second.state());
        };
        assert!(due >= now + 2 * hour, "due in {:?}", due - now);
        for step in [now + hour / 2, now + hour, due - Duration::from_secs(1)] {
            assert!(second.poll_at(step).unwrap().is_none());
            assert_eq!(second.last_warmed(), None, "not opened before its slot");
            assert_eq!(second.current().load().generation(), 1);
            assert_eq!(first.current().load().generation(), 2);
        }
        assert!(second.poll_at(due).unwrap().is_some());
        assert_eq!(second.current().load().generation(), 2);
    }

    #[test]
    fn rollout_slots_keep_replicas_of_a_shard_apart() {
        for shards in 1..6 {
            let mut slots = Vec::new();
            for replica in 0..4 {
                for shard in 0..shards {
                    slots.push((rollout_slot(shard, shards, replica), shard, replica));
                }
            }
            let mut distinct: Vec<u32> = slots.iter().map(|s| s.0).collect();
            distinct.sort_unstable();
            distinct.dedup();
            assert_eq!(distinct.len(), slots.len(), "one leaf per slot");
            for &(a, shard_a, replica_a) in &slots {
                for &(b, shard_b, replica_b) in &slots {
                    if shard_a == shard_b && replica_a < replica_b {
                        assert!(b - a >= shards, "replicas of a shard are a round apart");
                    }
                }
            }
        }
    }

    #[test]
    fn recent_queries_are_sampled_distinct_and_bounded() {
        let recent = RecentQueries::new(3);
        for n in 0..(RecentQueries::SAMPLE * 10) {
            recent.note(&format!("q{}", n / RecentQueries::SAMPLE));
        }
        assert_eq!(recent.snapshot(), ["q7", "q8", "q9"]);
        for _ in 0..RecentQueries::SAMPLE * 4 {
            recent.note("q9");
        }
        assert_eq!(
            recent.snapshot(),
            ["q7", "q8", "q9"],
            "a repeat is kept once"
        );
        let none = RecentQueries::new(0);
        none.note("x");
        assert!(none.snapshot().is_empty());
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
