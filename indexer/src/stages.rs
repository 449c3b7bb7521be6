//! The live counters every stage of a build updates, shared by the
//! pipeline, the progress display and the final report.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The names of the stages, in pipeline order.
pub const STAGES: [&str; 4] = ["read", "route", "index", "commit"];

/// Live counters of one stage, shared with the progress display.
#[derive(Debug, Default)]
pub struct StageStats {
    /// Documents that left the stage (for `read`: parsed documents).
    pub docs: AtomicU64,
    /// Time spent working: neither waiting for input nor for room in the
    /// next queue.
    pub busy_nanos: AtomicU64,
    /// Time spent waiting for room in the next queue (back-pressure).
    pub blocked_nanos: AtomicU64,
    /// Sends that found the next queue full.
    pub blocked_sends: AtomicU64,
    /// The most batches seen waiting in the stage's input queue.
    pub max_queue_depth: AtomicU64,
    /// Batches waiting in the stage's input queue now (sampled).
    pub queue_depth: AtomicU64,
    /// Wall time from the stage's start to its end.
    pub elapsed_nanos: AtomicU64,
    pub done: AtomicBool,
}

impl StageStats {
    pub(crate) fn add_busy(&self, since: Instant) {
        self.busy_nanos
            .fetch_add(nanos(since.elapsed()), Ordering::Relaxed);
    }

    pub(crate) fn saw_depth(&self, depth: usize) {
        let depth = depth as u64;
        self.queue_depth.store(depth, Ordering::Relaxed);
        self.max_queue_depth.fetch_max(depth, Ordering::Relaxed);
    }

    pub(crate) fn finish(&self, started: Instant) {
        self.elapsed_nanos
            .store(nanos(started.elapsed()), Ordering::Relaxed);
        self.queue_depth.store(0, Ordering::Relaxed);
        self.done.store(true, Ordering::Relaxed);
    }

    pub fn docs(&self) -> u64 {
        self.docs.load(Ordering::Relaxed)
    }
}

/// Everything the stages share.
#[derive(Debug, Default)]
pub struct Shared {
    pub stages: [StageStats; 4],
    /// Lines read (bad and blank ones included).
    pub lines: AtomicU64,
    /// Compressed bytes read from the corpus file.
    pub bytes: AtomicU64,
    pub bad_lines: AtomicU64,
    /// The most documents read but not yet indexed at any moment: bounded
    /// by the queues, whatever the corpus size.
    pub max_in_flight: AtomicU64,
    /// Documents handed to the writers.
    pub indexed: AtomicU64,
    /// Set when a stage failed: the others stop at their next batch.
    pub failed: AtomicBool,
}

impl Shared {
    pub fn stage(&self, name: &str) -> &StageStats {
        let index = STAGES.iter().position(|s| *s == name).unwrap_or(0);
        &self.stages[index]
    }
}

pub(crate) fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}
