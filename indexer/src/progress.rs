//! The live progress display on stderr: one line per stage with its
//! documents, throughput and input queue depth, refreshed ten times a
//! second by a thread of its own. Off unless asked for (the binary asks
//! when stderr is a terminal and `--quiet` is absent).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::stages::{Shared, STAGES};

/// A running display; `Progress::finish` stops it.
pub struct Progress {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Progress {
    pub(crate) fn start(enabled: bool, shared: Arc<Shared>, capacity: usize) -> Progress {
        let stop = Arc::new(AtomicBool::new(false));
        if !enabled {
            return Progress { stop, thread: None };
        }
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("indexer-progress".into())
            .spawn(move || show(&shared, capacity, &flag))
            .ok();
        Progress { stop, thread }
    }

    pub(crate) fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn show(shared: &Shared, capacity: usize, stop: &AtomicBool) {
    let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
    let style = ProgressStyle::with_template("{prefix:>7} {spinner} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let bars: Vec<ProgressBar> = STAGES
        .iter()
        .map(|stage| {
            let bar = multi.add(ProgressBar::new_spinner());
            bar.set_style(style.clone());
            bar.set_prefix(*stage);
            bar
        })
        .collect();
    let started = Instant::now();
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        let seconds = started.elapsed().as_secs_f64().max(1e-9);
        for (bar, stats) in bars.iter().zip(&shared.stages) {
            let docs = stats.docs();
            let extra = if std::ptr::eq(stats, &shared.stages[0]) {
                format!(
                    ", {} MB read, {} bad",
                    shared.bytes.load(Ordering::Relaxed) / 1_000_000,
                    shared.bad_lines.load(Ordering::Relaxed)
                )
            } else {
                format!(
                    ", queue {}/{capacity}",
                    stats.queue_depth.load(Ordering::Relaxed)
                )
            };
            let state = if stats.done.load(Ordering::Relaxed) {
                " done"
            } else {
                ""
            };
            bar.set_message(format!(
                "{docs} docs, {:.0} docs/s{extra}{state}",
                docs as f64 / seconds
            ));
            bar.tick();
        }
        if stopping {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for bar in bars {
        bar.finish_and_clear();
    }
}
