//! The final report of a build: per stage throughput and queue depth, per
//! shard documents, and the bad lines, as text and as JSON.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;

use crate::publish::Target;
use crate::stages::{Shared, STAGES};
use crate::BuildConfig;

/// A corpus line that was not a valid document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BadLine {
    /// 1-based.
    pub line: u64,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StageReport {
    pub stage: String,
    /// Documents that left the stage.
    pub docs: u64,
    /// Wall time from the stage's start to its end.
    pub seconds: f64,
    /// Time working (summed over the shards' threads for `index`).
    pub busy_seconds: f64,
    /// Time waiting for room in the next queue: the stage was back-pressured.
    pub blocked_seconds: f64,
    pub blocked_sends: u64,
    /// `docs / seconds`.
    pub docs_per_second: f64,
    /// The most batches seen waiting in the stage's input queue.
    pub max_queue_depth: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ShardReport {
    pub shard: u32,
    pub documents: u64,
    /// The published generation directory.
    pub dir: PathBuf,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BuildReport {
    pub generation: u64,
    pub root: PathBuf,
    pub corpus: PathBuf,
    pub shards: u32,
    pub lines: u64,
    pub documents: u64,
    pub bad_lines: u64,
    /// The first bad lines, in order (all are counted in `bad_lines`).
    pub bad_lines_listed: Vec<BadLine>,
    pub seconds: f64,
    pub docs_per_second: f64,
    pub queue_capacity: usize,
    pub batch_size: usize,
    /// The most documents read but not yet indexed at any moment.
    pub max_in_flight: u64,
    /// Temporary directories of interrupted builds removed first.
    pub stale_builds_removed: usize,
    pub stages: Vec<StageReport>,
    pub per_shard: Vec<ShardReport>,
}

impl BuildReport {
    pub(crate) fn new(
        config: &BuildConfig,
        target: &Target,
        shared: &Shared,
        bad_lines_listed: Vec<BadLine>,
        per_shard: Vec<ShardReport>,
        elapsed: Duration,
    ) -> BuildReport {
        let documents = per_shard.iter().map(|s| s.documents).sum();
        BuildReport {
            generation: target.generation,
            root: target.root.clone(),
            corpus: config.corpus.clone(),
            shards: config.shards,
            lines: shared.lines.load(Ordering::Relaxed),
            documents,
            bad_lines: shared.bad_lines.load(Ordering::Relaxed),
            bad_lines_listed,
            seconds: elapsed.as_secs_f64(),
            docs_per_second: documents as f64 / elapsed.as_secs_f64().max(1e-9),
            queue_capacity: config.queue_capacity,
            batch_size: config.batch_size,
            max_in_flight: shared.max_in_flight.load(Ordering::Relaxed),
            stale_builds_removed: target.cleaned,
            stages: stage_reports(shared, elapsed),
            per_shard,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a build report serializes")
    }

    /// The report as a few lines of text.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "generation {} of {} shard(s) in {}: {} documents from {} lines in {:.2} s ({:.0} docs/s), {} bad line(s)",
            self.generation,
            self.shards,
            self.root.display(),
            self.documents,
            self.lines,
            self.seconds,
            self.docs_per_second,
            self.bad_lines,
        );
        let _ = writeln!(
            out,
            "{:<7} {:>10} {:>9} {:>12} {:>8} {:>9} {:>9}",
            "stage", "docs", "seconds", "docs/s", "busy s", "blocked s", "max queue"
        );
        for stage in &self.stages {
            let _ = writeln!(
                out,
                "{:<7} {:>10} {:>9.2} {:>12.0} {:>8.2} {:>9.2} {:>5}/{:<3}",
                stage.stage,
                stage.docs,
                stage.seconds,
                stage.docs_per_second,
                stage.busy_seconds,
                stage.blocked_seconds,
                stage.max_queue_depth,
                self.queue_capacity,
            );
        }
        for shard in &self.per_shard {
            let _ = writeln!(
                out,
                "shard {}: {} documents in {}",
                shard.shard,
                shard.documents,
                shard.dir.display()
            );
        }
        for bad in &self.bad_lines_listed {
            let _ = writeln!(out, "bad line {}: {}", bad.line, bad.reason);
        }
        let unlisted = self
            .bad_lines
            .saturating_sub(self.bad_lines_listed.len() as u64);
        if unlisted > 0 {
            let _ = writeln!(out, "… and {unlisted} more bad line(s)");
        }
        out
    }
}

/// Per-stage figures from the live counters.
pub(crate) fn stage_reports(shared: &Shared, total: Duration) -> Vec<StageReport> {
    STAGES
        .iter()
        .zip(&shared.stages)
        .map(|(name, stats)| {
            let elapsed = match stats.elapsed_nanos.load(Ordering::Relaxed) {
                0 => total,
                nanos => Duration::from_nanos(nanos),
            };
            let busy = Duration::from_nanos(stats.busy_nanos.load(Ordering::Relaxed));
            let docs = stats.docs();
            StageReport {
                stage: (*name).to_string(),
                docs,
                seconds: elapsed.as_secs_f64(),
                busy_seconds: busy.as_secs_f64(),
                blocked_seconds: Duration::from_nanos(stats.blocked_nanos.load(Ordering::Relaxed))
                    .as_secs_f64(),
                blocked_sends: stats.blocked_sends.load(Ordering::Relaxed),
                docs_per_second: docs as f64 / elapsed.as_secs_f64().max(1e-9),
                max_queue_depth: stats.max_queue_depth.load(Ordering::Relaxed),
            }
        })
        .collect()
}
