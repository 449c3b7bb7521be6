//! `loadgen`: an open-loop load generator for the search API, built to hold
//! it to latency SLOs.
//!
//! Closed-loop tools send the next request only when the last one returned,
//! so a server stall delays the requests that would have measured it, and
//! the percentiles hide it (coordinated omission). `loadgen` fixes every
//! request's send time in advance from the stage's start and rate, sends it
//! then whatever the server is doing, opening as many connections as that
//! needs, and measures latency from the scheduled time. A request it could
//! not send within `--max-lag` of its time is counted as dropped, never sent
//! late and forgotten.
//!
//! # Usage
//!
//! ```text
//! loadgen --target http://127.0.0.1:8080 --queries queries.txt --zipf 1.0 \
//!         --warmup 5s --stage 30s@500 --stage 30s@2000 \
//!         --slo 'p99<=50ms' --slo 'p99.9<=100ms' --slo 'partial<=1%' --slo 'errors<=0.1%' \
//!         --report run.json --plot run.svg
//! ```
//!
//! - `--rate R --duration D` run one stage; `--stage D@R` (repeatable) run
//!   phases of different rates, each reported separately. `--warmup D` runs
//!   at the first stage's rate first, unmeasured.
//! - `--queries FILE` holds one query a line, most popular first; they are
//!   sampled by a Zipf law (`--zipf S`, default 1.0) or sent in order
//!   (`--replay`). `--query STRING` sends one fixed query. `--k`,
//!   `--timeout-ms` and `--nocache` set the search parameters.
//! - `--slo EXPR` (repeatable): `pN`, `max`, `mean` against a duration
//!   (`p99.9<=100ms`); `errors`, `drops`, `partial`, `cache_hit`, `coverage`,
//!   `recall` against a percentage (`errors<=0.1%`). With several stages each
//!   SLO is checked in every stage and over all of them.
//! - `--report FILE.json` writes every figure per stage ([`Report`]),
//!   `--plot FILE.svg` latency by percentile and over time; a progress line
//!   goes to stderr unless `--quiet`.
//! - Every run is bounded: at most an hour, 200k requests a second,
//!   `--max-requests` (default: what the stages schedule), and 16384
//!   requests in flight. Targets must be loopback unless `--allow-host HOST`.
//! - Exit codes: 0 every SLO passed, 1 an SLO failed, 2 usage error, 3 the
//!   target could not be reached.
//!
//! # How it is built
//!
//! [`config`] turns flags into a plain [`Config`]. [`run`] loads the queries
//! and prebuilds one request URI per query, checks the target, then starts
//! the schedule's dispatcher on its own thread (`schedule`). The dispatcher
//! spawns one task per request on the tokio runtime; the task takes a slot
//! among `max_in_flight`, sends the request on a pooled HTTP/1.1 keep-alive
//! connection (`client`), and hands the outcome to the recorder (`stats`): an
//! HDR histogram per stage and a time series. At the end the recorder's
//! figures become a [`Report`] (`report`), the SLOs ([`slo`]) are checked
//! against it, and the report is written as JSON and plotted as SVG
//! ([`plot`]).
//!
//! # As a library
//!
//! ```no_run
//! # async fn demo() -> loadgen::Result<()> {
//! use std::time::Duration;
//! use loadgen::{Config, QuerySource};
//!
//! let mut config = Config::new(
//!     "http://127.0.0.1:8080",
//!     500.0,
//!     Duration::from_secs(10),
//!     QuerySource::List(vec!["rust".into(), "tokio".into()]),
//! );
//! config.slos.push("p99<=50ms".parse()?);
//! let report = loadgen::run(config).await?;
//! println!("{}", report.summary());
//! assert!(report.passed());
//! # Ok(()) }
//! ```

mod client;
pub mod config;
mod error;
pub mod plot;
mod progress;
mod queries;
mod report;
mod schedule;
pub mod slo;
mod stats;
mod target;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::sync::Semaphore;

pub use config::{Cli, Config, Progress, QueryOrder, QuerySource, Stage};
pub use error::{Error, Result, EXIT_OK, EXIT_RUNTIME, EXIT_SLO_FAILED, EXIT_USAGE};
pub use report::{
    Answers, DistributionPoint, Latency, Report, SeriesPoint, SeriesReport, StageReport,
};
pub use slo::{ParseSloError, Slo, SloResult};

use client::Pool;
use schedule::{Dispatcher, Scheduled};
use stats::{Recorder, Sample};
use target::{SearchParams, Target};

/// How long the schedule starts after setup, so its first requests are not late.
const LEAD_IN: Duration = Duration::from_millis(20);
/// Batches of requests waiting to be launched, at most.
const BATCH_QUEUE: usize = 1024;
/// How long the pre-flight connection may take.
const PREFLIGHT_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs the load described by `config` to the end of its schedule.
pub async fn run(config: Config) -> Result<Report> {
    run_until(config, std::future::pending()).await
}

/// Like [`run`], but stops scheduling when `shutdown` completes (e.g. on
/// Ctrl-C); requests in flight still finish and the report says
/// `interrupted`.
pub async fn run_until(config: Config, shutdown: impl Future<Output = ()>) -> Result<Report> {
    config.validate()?;
    let target = Target::parse(&config.target)?;
    let queries = queries::load(&config.queries)?;
    let params = SearchParams {
        k: config.k,
        timeout_ms: config.timeout_ms,
        nocache: config.nocache,
    };
    let paths = queries
        .iter()
        .map(|q| target.path_for(q, params))
        .collect::<Result<Vec<String>>>()?;
    for path in [&config.report, &config.plot].into_iter().flatten() {
        check_writable(path)?;
    }
    let addrs = target.check_allowed(&config.allow_hosts).await?;
    let addr = preflight(&target, &addrs).await?;

    let plans = schedule::plan(&config);
    let seed = config.seed.unwrap_or_else(rand::random);
    let max_in_flight = config.in_flight_limit();
    let connect_timeout = config.request_timeout.min(Duration::from_secs(5));
    let length = plans.last().map(|p| p.end()).unwrap_or_default();
    let start = Instant::now() + LEAD_IN;
    let started_at = SystemTime::now() + LEAD_IN;
    let shared = Arc::new(Shared {
        pool: Pool::new(addr, &target.authority, connect_timeout).ok_or_else(|| {
            Error::usage(format!(
                "--target host `{}` is not a valid Host header",
                target.authority
            ))
        })?,
        paths,
        recorder: Arc::new(Recorder::new(plans.len(), length)),
        in_flight: Arc::new(Semaphore::new(max_in_flight)),
        outstanding: AtomicU64::new(0),
        max_lag: config.max_lag,
        request_timeout: config.request_timeout,
        start,
    });
    tracing::info!(
        target = %target.endpoint,
        stages = plans.len(),
        requests = plans.iter().map(|p| p.requests).sum::<u64>(),
        max_in_flight,
        seed,
        "starting run"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let dispatcher = Dispatcher {
        plans: plans.clone(),
        picker: queries::Picker::new(config.order, queries.len()),
        rng: StdRng::seed_from_u64(seed),
        start,
        max_lag: config.max_lag,
        stop: stop.clone(),
    };
    let progress = (config.progress == Progress::Auto)
        .then(|| tokio::spawn(progress::run(shared.recorder.clone(), plans.clone(), start)));
    // The dispatcher thread hands batches to a launcher task on the runtime,
    // which spawns each request locally: one cross-thread wakeup per batch
    // instead of one per request. When the channel is full the dispatcher
    // waits, falls behind, and the requests it then cannot send on time are
    // counted as dropped.
    let (batches, mut incoming) = tokio::sync::mpsc::channel::<Vec<Scheduled>>(BATCH_QUEUE);
    let launcher = tokio::spawn({
        let shared = shared.clone();
        async move {
            while let Some(batch) = incoming.recv().await {
                for scheduled in batch {
                    shared.outstanding.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(request(shared.clone(), scheduled));
                }
            }
        }
    });
    // Tokio wakes its own driver (a syscall) whenever a timer is set earlier
    // than the driver's next wakeup, which is every request's timeout when no
    // other timer is pending. A short timer always pending avoids that.
    let keeper = tokio::spawn(async {
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let for_dispatch = shared.clone();
    let mut dispatch = tokio::task::spawn_blocking(move || {
        dispatcher.run(
            |batch| {
                // The launcher ends only after this sender is dropped.
                let _ = batches.blocking_send(batch);
            },
            |stage, intended| {
                for_dispatch
                    .recorder
                    .dropped(stage, intended.saturating_duration_since(start));
            },
        );
    });
    tokio::pin!(shutdown);
    let interrupted = tokio::select! {
        _ = &mut dispatch => false,
        _ = &mut shutdown => {
            stop.store(true, Ordering::Relaxed);
            true
        }
    };
    if interrupted {
        tracing::warn!("interrupted: finishing the requests in flight");
        let _ = dispatch.await;
    }
    // Every batch is launched once the dispatcher's sender is gone.
    let _ = launcher.await;
    let drain_deadline =
        Instant::now() + config.max_lag + config.request_timeout + Duration::from_secs(1);
    while shared.outstanding.load(Ordering::SeqCst) > 0 && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    keeper.abort();
    if let Some(progress) = progress {
        progress.abort();
        progress::finish();
    }

    let (stats, sent, series) = shared.recorder.finish();
    let report = report::build(
        report::Context {
            target: target.endpoint.clone(),
            started_at: humantime::format_rfc3339_millis(started_at).to_string(),
            seed,
            queries: queries.len(),
            order: config.order,
            max_in_flight,
            connections_opened: shared.pool.opened(),
            interrupted,
            plans: &plans,
            slos: &config.slos,
        },
        &stats,
        &sent,
        &series,
    );
    tracing::info!(
        sent = report.stages.iter().map(|s| s.sent).sum::<u64>(),
        passed = report.passed(),
        "run finished"
    );
    if let Some(path) = &config.report {
        let json = serde_json::to_string_pretty(&report)
            .map_err(|e| Error::Runtime(format!("cannot encode the report: {e}")))?;
        if path == Path::new("-") {
            println!("{json}");
        } else {
            write_file(path, json.as_bytes())?;
        }
    }
    if let Some(path) = &config.plot {
        write_file(path, plot::svg(&report).as_bytes())?;
    }
    Ok(report)
}

/// What every request task needs.
struct Shared {
    pool: Pool,
    /// One prebuilt path and query string per query.
    paths: Vec<String>,
    recorder: Arc<Recorder>,
    /// Bounds the requests in flight, hence the connections.
    in_flight: Arc<Semaphore>,
    /// Tasks spawned and not yet finished, for the drain at the end.
    outstanding: AtomicU64,
    max_lag: Duration,
    request_timeout: Duration,
    start: Instant,
}

/// Decrements the outstanding count when a request task ends, however it ends.
struct Outstanding<'a>(&'a AtomicU64);

impl Drop for Outstanding<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One request, from its scheduled time to its recorded outcome.
async fn request(shared: Arc<Shared>, scheduled: Scheduled) {
    let _outstanding = Outstanding(&shared.outstanding);
    let started = Instant::now();
    let offset = scheduled.intended.saturating_duration_since(shared.start);
    let deadline = scheduled.intended + shared.max_lag;
    if started > deadline {
        shared.recorder.dropped(scheduled.stage, offset);
        return;
    }
    let permit = match shared.in_flight.clone().try_acquire_owned() {
        Ok(permit) => permit,
        Err(_) => {
            let waiting = shared.in_flight.clone().acquire_owned();
            match tokio::time::timeout_at(deadline.into(), waiting).await {
                Ok(Ok(permit)) => permit,
                _ => {
                    shared.recorder.dropped(scheduled.stage, offset);
                    return;
                }
            }
        }
    };
    let sent_at = Instant::now();
    if sent_at > deadline {
        // The timer that bounds the wait may fire late on a busy runtime.
        shared.recorder.dropped(scheduled.stage, offset);
        return;
    }
    shared.recorder.sent(scheduled.stage);
    let outcome = shared
        .pool
        .send(&shared.paths[scheduled.query], shared.request_timeout)
        .await;
    let done = Instant::now();
    drop(permit);
    shared.recorder.record(Sample {
        stage: scheduled.stage,
        offset,
        // From the scheduled time, or from the actual start when the
        // dispatcher released the request a little early.
        latency: done.saturating_duration_since(started.min(scheduled.intended)),
        send_lag: sent_at.saturating_duration_since(scheduled.intended),
        outcome,
    });
}

/// Finds the address that answers; fails fast, with exit code 3, when
/// nothing listens at the target.
async fn preflight(target: &Target, addrs: &[SocketAddr]) -> Result<SocketAddr> {
    let mut last = String::from("no address");
    for addr in addrs {
        match tokio::time::timeout(PREFLIGHT_TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(_)) => return Ok(*addr),
            Ok(Err(e)) => last = format!("{addr}: {e}"),
            Err(_) => last = format!("{addr}: connect timed out"),
        }
    }
    Err(Error::Unreachable {
        target: target.endpoint.clone(),
        reason: last,
    })
}

fn check_writable(path: &Path) -> Result<()> {
    if path == Path::new("-") {
        return Ok(());
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map(|_| ())
        .map_err(|e| Error::usage(format!("cannot write {}: {e}", path.display())))
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|source| Error::WriteFile {
        path: path.to_path_buf(),
        source,
    })
}
