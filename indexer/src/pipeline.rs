//! The stages of a build and the bounded queues between them.
//!
//! One thread per stage (and one per shard for indexing). Every queue is a
//! bounded crossbeam channel of batches: a sender that finds its queue full
//! waits (counted as `blocked`), so the slowest stage sets the pace and at
//! most `queue_capacity` batches wait before each stage. When a stage fails
//! it drops its queues; the stages before it then fail to send and stop,
//! those after it see their input end.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use leaf::{shard_of, Document, Manifest, ShardWriter};

use crate::error::{IndexerError, Result};
use crate::progress::Progress;
use crate::publish::{now_ms, Target};
use crate::report::{BadLine, BuildReport, ShardReport};
use crate::stages::{nanos, Shared, StageStats};
use crate::{BuildConfig, HangAt};

/// Test hooks into the stages.
#[derive(Clone, Default)]
pub struct Hooks {
    /// Called by the index stage of a shard before each batch.
    pub before_index_batch: Option<Arc<dyn Fn(u32) + Send + Sync>>,
}

type Batch = Vec<Document>;

/// Sends `item`, counting the time blocked on a full queue.
fn send<T>(tx: &Sender<T>, item: T, stats: &StageStats) -> std::result::Result<(), ()> {
    match tx.try_send(item) {
        Ok(()) => Ok(()),
        Err(TrySendError::Disconnected(_)) => Err(()),
        Err(TrySendError::Full(item)) => {
            stats.blocked_sends.fetch_add(1, Ordering::Relaxed);
            let waited = Instant::now();
            let sent = tx.send(item).map_err(|_| ());
            stats
                .blocked_nanos
                .fetch_add(nanos(waited.elapsed()), Ordering::Relaxed);
            sent
        }
    }
}

/// Runs the pipeline into `target` and publishes the generation.
pub(crate) fn run(config: &BuildConfig, target: &Target, hooks: Arc<Hooks>) -> Result<BuildReport> {
    let started = Instant::now();
    let shared = Arc::new(Shared::default());
    let progress = Progress::start(config.progress, Arc::clone(&shared), config.queue_capacity);
    let outcome = run_stages(config, target, &shared, &hooks);
    progress.finish();
    let (bad_lines, shards) = match outcome {
        Ok(done) => done,
        Err(error) => {
            target.abandon();
            return Err(error);
        }
    };
    if config.hang_at == Some(HangAt::Publish) {
        hang("publish");
    }
    if let Err(error) = target.publish() {
        target.abandon();
        return Err(error);
    }
    Ok(BuildReport::new(
        config,
        target,
        &shared,
        bad_lines,
        shards,
        started.elapsed(),
    ))
}

/// The stages' threads; returns the bad lines listed and each shard's
/// result once every shard has committed.
fn run_stages(
    config: &BuildConfig,
    target: &Target,
    shared: &Arc<Shared>,
    hooks: &Arc<Hooks>,
) -> Result<(Vec<BadLine>, Vec<ShardReport>)> {
    let capacity = config.queue_capacity;
    let shards = config.shards;
    let (parsed_tx, parsed_rx) = bounded::<Batch>(capacity);
    let mut shard_txs = Vec::new();
    let mut shard_rxs = Vec::new();
    for _ in 0..shards {
        let (tx, rx) = bounded::<Batch>(capacity);
        shard_txs.push(tx);
        shard_rxs.push(rx);
    }
    let (commit_tx, commit_rx) = bounded::<ShardWriter>(capacity.min(shards as usize).max(1));

    thread::scope(|scope| {
        let reader = {
            let shared = Arc::clone(shared);
            thread::Builder::new()
                .name("indexer-read".into())
                .spawn_scoped(scope, move || read_stage(config, parsed_tx, &shared))
                .map_err(spawn_error)?
        };
        let router = {
            let shared = Arc::clone(shared);
            thread::Builder::new()
                .name("indexer-route".into())
                .spawn_scoped(scope, move || {
                    route_stage(shards, parsed_rx, shard_txs, &shared)
                })
                .map_err(spawn_error)?
        };
        let index_started = Instant::now();
        let mut indexers = Vec::new();
        for (shard, rx) in shard_rxs.into_iter().enumerate() {
            let shard = shard as u32;
            let (shared, hooks, tx) = (Arc::clone(shared), Arc::clone(hooks), commit_tx.clone());
            let dir = target.tmp[shard as usize].clone();
            let handle = thread::Builder::new()
                .name(format!("indexer-index-{shard}"))
                .spawn_scoped(scope, move || {
                    index_stage(config, shard, &dir, rx, tx, &shared, &hooks)
                })
                .map_err(spawn_error)?;
            indexers.push(handle);
        }
        drop(commit_tx);
        let committer = {
            let shared = Arc::clone(shared);
            thread::Builder::new()
                .name("indexer-commit".into())
                .spawn_scoped(scope, move || {
                    commit_stage(config, target, commit_rx, &shared)
                })
                .map_err(spawn_error)?
        };

        let mut first_error = None;
        let mut keep = |result: Result<()>| {
            if let Err(error) = result {
                first_error.get_or_insert(error);
            }
        };
        let bad = join(reader);
        let bad_lines = match bad {
            Ok(bad) => bad,
            Err(error) => {
                keep(Err(error));
                Vec::new()
            }
        };
        keep(join(router));
        for indexer in indexers {
            keep(join(indexer));
        }
        shared.stage("index").finish(index_started);
        let committed = join(committer);
        if let Some(error) = first_error {
            return Err(error);
        }
        Ok((bad_lines, committed?))
    })
}

fn spawn_error(error: std::io::Error) -> IndexerError {
    IndexerError::Pipeline(format!("cannot start a stage thread: {error}"))
}

fn join<T>(handle: thread::ScopedJoinHandle<'_, Result<T>>) -> Result<T> {
    handle.join().unwrap_or_else(|_| {
        Err(IndexerError::Pipeline(
            "a stage thread panicked".to_string(),
        ))
    })
}

/// Marks the build failed when a stage returns an error.
fn failing<T>(shared: &Shared, result: Result<T>) -> Result<T> {
    if result.is_err() {
        shared.failed.store(true, Ordering::Relaxed);
    }
    result
}

/// Read+parse: lines to documents, in batches. Returns the bad lines listed.
fn read_stage(config: &BuildConfig, tx: Sender<Batch>, shared: &Shared) -> Result<Vec<BadLine>> {
    let started = Instant::now();
    let result = failing(shared, read_lines(config, &tx, shared));
    shared.stage("read").finish(started);
    result
}

fn read_lines(config: &BuildConfig, tx: &Sender<Batch>, shared: &Shared) -> Result<Vec<BadLine>> {
    let stats = shared.stage("read");
    let corpus_error = |source| IndexerError::Corpus {
        path: config.corpus.clone(),
        source,
    };
    let file = File::open(&config.corpus).map_err(corpus_error)?;
    let counted = CountingReader {
        inner: file,
        bytes: &shared.bytes,
    };
    let mut reader = BufReader::with_capacity(1 << 16, counted);
    let head = reader.fill_buf().map_err(corpus_error)?;
    let mut lines: Box<dyn BufRead + '_> = if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(BufReader::with_capacity(
            1 << 16,
            flate2::bufread::MultiGzDecoder::new(reader),
        ))
    } else {
        Box::new(reader)
    };
    let mut listed = Vec::new();
    let mut batch = Vec::with_capacity(config.batch_size);
    let mut line = Vec::new();
    let mut number = 0u64;
    let mut sent = 0u64;
    let mut busy = Instant::now();
    loop {
        line.clear();
        if lines.read_until(b'\n', &mut line).map_err(corpus_error)? == 0 {
            break;
        }
        number += 1;
        shared.lines.fetch_add(1, Ordering::Relaxed);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match parse_line(&line) {
            Ok(doc) => batch.push(doc),
            Err(reason) => {
                shared.bad_lines.fetch_add(1, Ordering::Relaxed);
                if listed.len() < config.bad_lines_listed {
                    listed.push(BadLine {
                        line: number,
                        reason,
                    });
                }
            }
        }
        if batch.len() >= config.batch_size {
            sent += batch.len() as u64;
            stats.docs.fetch_add(batch.len() as u64, Ordering::Relaxed);
            let full = std::mem::replace(&mut batch, Vec::with_capacity(config.batch_size));
            stats.add_busy(busy);
            if send(tx, full, stats).is_err() || shared.failed.load(Ordering::Relaxed) {
                return Err(IndexerError::Pipeline("a later stage stopped".to_string()));
            }
            busy = Instant::now();
            let in_flight = sent.saturating_sub(shared.indexed.load(Ordering::Relaxed));
            shared.max_in_flight.fetch_max(in_flight, Ordering::Relaxed);
        }
    }
    if !batch.is_empty() {
        stats.docs.fetch_add(batch.len() as u64, Ordering::Relaxed);
        stats.add_busy(busy);
        if send(tx, batch, stats).is_err() {
            return Err(IndexerError::Pipeline("a later stage stopped".to_string()));
        }
    } else {
        stats.add_busy(busy);
    }
    Ok(listed)
}

/// One corpus line as a document, with the leaf's rules.
fn parse_line(line: &[u8]) -> std::result::Result<Document, String> {
    let doc: Document = serde_json::from_slice(line).map_err(|error| error.to_string())?;
    if doc.id.trim().is_empty() {
        return Err("empty id".to_string());
    }
    if doc.title.is_empty() && doc.body.is_empty() {
        return Err("no title and no body".to_string());
    }
    Ok(doc)
}

/// Counts the bytes read from the file, for the progress display.
struct CountingReader<'a, R> {
    inner: R,
    bytes: &'a AtomicU64,
}

impl<R: Read> Read for CountingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.bytes.fetch_add(read as u64, Ordering::Relaxed);
        Ok(read)
    }
}

/// Route: splits each batch by [`shard_of`] into per-shard batches.
fn route_stage(
    shards: u32,
    rx: Receiver<Batch>,
    txs: Vec<Sender<Batch>>,
    shared: &Shared,
) -> Result<()> {
    let started = Instant::now();
    let stats = shared.stage("route");
    let mut result = Ok(());
    for batch in rx.iter() {
        stats.saw_depth(rx.len());
        let busy = Instant::now();
        let mut split: Vec<Batch> = (0..shards).map(|_| Vec::new()).collect();
        let count = batch.len() as u64;
        for doc in batch {
            split[shard_of(&doc.id, shards) as usize].push(doc);
        }
        stats.add_busy(busy);
        stats.docs.fetch_add(count, Ordering::Relaxed);
        let mut stopped = false;
        for (tx, part) in txs.iter().zip(split) {
            if !part.is_empty() && send(tx, part, stats).is_err() {
                stopped = true;
            }
        }
        if stopped || shared.failed.load(Ordering::Relaxed) {
            result = Err(IndexerError::Pipeline("a later stage stopped".to_string()));
            break;
        }
    }
    stats.finish(started);
    failing(shared, result)
}

/// Index: one tantivy writer per shard, fed batch by batch; the writer goes
/// to the commit stage when the shard's input ends.
fn index_stage(
    config: &BuildConfig,
    shard: u32,
    dir: &std::path::Path,
    rx: Receiver<Batch>,
    tx: Sender<ShardWriter>,
    shared: &Shared,
    hooks: &Hooks,
) -> Result<()> {
    let result = (|| {
        let stats = shared.stage("index");
        let mut writer = ShardWriter::create(
            dir,
            shard,
            config.shards,
            config.writer_threads,
            config.writer_heap_bytes,
        )?;
        let mut batches = 0u64;
        for batch in rx.iter() {
            stats.saw_depth(rx.len());
            if let Some(hook) = &hooks.before_index_batch {
                hook(shard);
            }
            if shared.failed.load(Ordering::Relaxed) {
                return Err(IndexerError::Pipeline("another stage failed".to_string()));
            }
            let busy = Instant::now();
            let count = batch.len() as u64;
            for doc in &batch {
                writer.add(doc)?;
            }
            stats.add_busy(busy);
            stats.docs.fetch_add(count, Ordering::Relaxed);
            shared.indexed.fetch_add(count, Ordering::Relaxed);
            batches += 1;
            if batches == 1 && config.hang_at == Some(HangAt::Index) {
                hang("index");
            }
        }
        send(&tx, writer, stats)
            .map_err(|()| IndexerError::Pipeline("the commit stage stopped".to_string()))
    })();
    failing(shared, result)
}

/// Commit: commits each shard's writer with the generation, writes and
/// syncs its manifest.
fn commit_stage(
    config: &BuildConfig,
    target: &Target,
    rx: Receiver<ShardWriter>,
    shared: &Shared,
) -> Result<Vec<ShardReport>> {
    let started = Instant::now();
    let stats = shared.stage("commit");
    let mut reports = Vec::new();
    let mut result = Ok(());
    for writer in rx.iter() {
        stats.saw_depth(rx.len());
        let busy = Instant::now();
        let shard = writer.shard();
        let bad_lines = shared.bad_lines.load(Ordering::Relaxed);
        let committed = writer
            .commit(target.generation, bad_lines)
            .map_err(IndexerError::from)
            .and_then(|documents| {
                let manifest = Manifest {
                    generation: target.generation,
                    shard,
                    shards: config.shards,
                    documents,
                    bad_lines,
                    built_at_unix_ms: now_ms(),
                    build_seconds: started.elapsed().as_secs_f64(),
                };
                manifest.write(&target.tmp[shard as usize])?;
                Ok(documents)
            });
        stats.add_busy(busy);
        match committed {
            Ok(documents) => {
                stats.docs.fetch_add(documents, Ordering::Relaxed);
                reports.push(ShardReport {
                    shard,
                    documents,
                    dir: target.finals[shard as usize].clone(),
                });
            }
            Err(error) => {
                result = Err(error);
                break;
            }
        }
    }
    stats.finish(started);
    if result.is_ok()
        && reports.len() != config.shards as usize
        && !shared.failed.load(Ordering::Relaxed)
    {
        result = Err(IndexerError::Pipeline("a shard did not commit".to_string()));
    }
    reports.sort_by_key(|report| report.shard);
    failing(shared, result.map(|()| reports))
}

fn hang(stage: &str) -> ! {
    eprintln!("indexer: hanging at {stage} (debug)");
    loop {
        thread::sleep(Duration::from_secs(3600));
    }
}
