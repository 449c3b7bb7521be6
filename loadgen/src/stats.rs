//! Recording: one HDR histogram of latency per stage (microseconds, three
//! significant digits), counters for errors and for what the search answers
//! said, and a time series of coarser histograms for the plot.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::client::{Answer, CacheState, Outcome};

/// Latencies above this (an hour, in microseconds) are recorded as this.
pub(crate) const MAX_LATENCY_US: u64 = 3_600_000_000;
/// Significant digits of the per-stage histograms.
const SIGFIG: u8 = 3;
/// Significant digits of the time series' histograms, which are many.
const SERIES_SIGFIG: u8 = 2;
/// The time series never has more points than this.
const MAX_POINTS: f64 = 300.0;

pub(crate) fn new_histogram(sigfig: u8) -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, sigfig).expect("valid histogram bounds")
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// One finished request.
#[derive(Debug)]
pub(crate) struct Sample {
    pub stage: usize,
    /// Scheduled time, from the run's start.
    pub offset: Duration,
    /// From the scheduled time (or the actual start, if earlier) to the end.
    pub latency: Duration,
    /// How late the request actually went out.
    pub send_lag: Duration,
    pub outcome: Outcome,
}

/// Everything recorded for one stage.
#[derive(Debug, Clone)]
pub(crate) struct StageStats {
    pub latency: Histogram<u64>,
    pub send_lag: Histogram<u64>,
    /// Requests that finished, with a response or a transport failure.
    pub completed: u64,
    /// Requests answered with an HTTP response.
    pub responses: u64,
    pub ok: u64,
    pub errors: u64,
    pub dropped: u64,
    /// Errors by HTTP status, or `timeout`, `connect`, `transport`.
    pub by_status: BTreeMap<String, u64>,
    /// Error bodies' `error.code`, e.g. `overloaded`.
    pub error_codes: BTreeMap<String, u64>,
    pub answers: AnswerTotals,
}

/// Sums over the search answers of a stage.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct AnswerTotals {
    pub partial_known: u64,
    pub partial: u64,
    pub coverage_n: u64,
    pub coverage_sum: f64,
    pub recall_n: u64,
    pub recall_sum: f64,
    pub cache_hit: u64,
    pub cache_miss: u64,
    pub cache_bypass: u64,
    pub took_n: u64,
    pub took_sum: f64,
}

impl AnswerTotals {
    fn record(&mut self, a: &Answer) {
        if let Some(partial) = a.partial {
            self.partial_known += 1;
            self.partial += u64::from(partial);
        }
        if let Some(c) = a.coverage_percent {
            self.coverage_n += 1;
            self.coverage_sum += c;
        }
        if let Some(r) = a.recall {
            self.recall_n += 1;
            self.recall_sum += r;
        }
        match a.cache {
            Some(CacheState::Hit) => self.cache_hit += 1,
            Some(CacheState::Miss) => self.cache_miss += 1,
            Some(CacheState::Bypass) => self.cache_bypass += 1,
            None => {}
        }
        if let Some(t) = a.took_ms {
            self.took_n += 1;
            self.took_sum += t;
        }
    }

    fn add(&mut self, o: &AnswerTotals) {
        self.partial_known += o.partial_known;
        self.partial += o.partial;
        self.coverage_n += o.coverage_n;
        self.coverage_sum += o.coverage_sum;
        self.recall_n += o.recall_n;
        self.recall_sum += o.recall_sum;
        self.cache_hit += o.cache_hit;
        self.cache_miss += o.cache_miss;
        self.cache_bypass += o.cache_bypass;
        self.took_n += o.took_n;
        self.took_sum += o.took_sum;
    }

    pub fn partial_rate(&self) -> Option<f64> {
        ratio(self.partial, self.partial_known)
    }

    pub fn coverage_mean(&self) -> Option<f64> {
        ratio_f(self.coverage_sum, self.coverage_n)
    }

    pub fn recall_mean(&self) -> Option<f64> {
        ratio_f(self.recall_sum, self.recall_n)
    }

    /// Hits over hits and misses; bypassed requests do not count.
    pub fn cache_hit_rate(&self) -> Option<f64> {
        ratio(self.cache_hit, self.cache_hit + self.cache_miss)
    }

    pub fn took_mean(&self) -> Option<f64> {
        ratio_f(self.took_sum, self.took_n)
    }
}

fn ratio(n: u64, d: u64) -> Option<f64> {
    (d > 0).then(|| n as f64 / d as f64)
}

fn ratio_f(sum: f64, n: u64) -> Option<f64> {
    (n > 0).then(|| sum / n as f64)
}

impl StageStats {
    pub fn new() -> StageStats {
        StageStats {
            latency: new_histogram(SIGFIG),
            send_lag: new_histogram(SIGFIG),
            completed: 0,
            responses: 0,
            ok: 0,
            errors: 0,
            dropped: 0,
            by_status: BTreeMap::new(),
            error_codes: BTreeMap::new(),
            answers: AnswerTotals::default(),
        }
    }

    fn record(&mut self, sample: &Sample) -> bool {
        self.latency.saturating_record(micros(sample.latency));
        self.send_lag.saturating_record(micros(sample.send_lag));
        self.completed += 1;
        let error = match &sample.outcome {
            Outcome::Response { status, answer } => {
                self.responses += 1;
                self.answers.record(answer);
                if let Some(code) = &answer.error_code {
                    *self.error_codes.entry(code.clone()).or_default() += 1;
                }
                if (200..300).contains(status) {
                    None
                } else {
                    Some(status.to_string())
                }
            }
            Outcome::Timeout => Some("timeout".to_string()),
            Outcome::Connect => Some("connect".to_string()),
            Outcome::Transport => Some("transport".to_string()),
        };
        match error {
            Some(key) => {
                self.errors += 1;
                *self.by_status.entry(key).or_default() += 1;
                true
            }
            None => {
                self.ok += 1;
                false
            }
        }
    }

    /// Adds another stage's figures into this one.
    pub fn merge(&mut self, other: &StageStats) {
        // Both histograms share bounds, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
        let _ = self.send_lag.add(&other.send_lag);
        self.completed += other.completed;
        self.responses += other.responses;
        self.ok += other.ok;
        self.errors += other.errors;
        self.dropped += other.dropped;
        for (k, v) in &other.by_status {
            *self.by_status.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.error_codes {
            *self.error_codes.entry(k.clone()).or_default() += v;
        }
        self.answers.add(&other.answers);
    }
}

/// One point of the time series: requests scheduled in one interval.
#[derive(Debug, Clone)]
pub(crate) struct Bucket {
    pub latency: Histogram<u64>,
    pub errors: u64,
    pub dropped: u64,
}

/// Latency over time, bucketed by scheduled time so a stall shows where it
/// began rather than where it ended.
#[derive(Debug, Clone)]
pub(crate) struct Series {
    pub width: Duration,
    pub buckets: Vec<Bucket>,
}

impl Series {
    /// A series over a run of `length`, with a round bucket width.
    pub fn new(length: Duration) -> Series {
        let wanted = length.as_secs_f64() / MAX_POINTS;
        let width = [0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0]
            .into_iter()
            .find(|&w| w >= wanted)
            .unwrap_or(60.0);
        Series {
            width: Duration::from_secs_f64(width),
            buckets: Vec::new(),
        }
    }

    fn bucket(&mut self, offset: Duration) -> &mut Bucket {
        let i = (offset.as_secs_f64() / self.width.as_secs_f64()) as usize;
        // The schedule is bounded to an hour, so this stays small.
        let i = i.min(MAX_POINTS as usize * 4);
        while self.buckets.len() <= i {
            self.buckets.push(Bucket {
                latency: new_histogram(SERIES_SIGFIG),
                errors: 0,
                dropped: 0,
            });
        }
        &mut self.buckets[i]
    }
}

struct Inner {
    stages: Vec<StageStats>,
    series: Series,
}

/// Shared by all request tasks; each finished request takes the lock once.
pub(crate) struct Recorder {
    inner: Mutex<Inner>,
    /// Requests sent per stage, read by the progress line without the lock.
    sent: Vec<AtomicU64>,
}

/// What the progress line shows.
pub(crate) struct Snapshot {
    pub sent: u64,
    pub errors: u64,
    pub dropped: u64,
    /// p99 of the given stage so far, in microseconds.
    pub p99_us: Option<u64>,
}

impl Recorder {
    pub fn new(stages: usize, length: Duration) -> Recorder {
        Recorder {
            inner: Mutex::new(Inner {
                stages: (0..stages).map(|_| StageStats::new()).collect(),
                series: Series::new(length),
            }),
            sent: (0..stages).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves counters that are still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn sent(&self, stage: usize) {
        self.sent[stage].fetch_add(1, Ordering::Relaxed);
    }

    pub fn record(&self, sample: Sample) {
        let mut inner = self.lock();
        let error = inner.stages[sample.stage].record(&sample);
        let bucket = inner.series.bucket(sample.offset);
        bucket.latency.saturating_record(micros(sample.latency));
        bucket.errors += u64::from(error);
    }

    pub fn dropped(&self, stage: usize, offset: Duration) {
        let mut inner = self.lock();
        inner.stages[stage].dropped += 1;
        inner.series.bucket(offset).dropped += 1;
    }

    pub fn snapshot(&self, stage: usize) -> Snapshot {
        let sent = self.sent.iter().map(|s| s.load(Ordering::Relaxed)).sum();
        let inner = self.lock();
        let sum = |f: fn(&StageStats) -> u64| inner.stages.iter().map(f).sum();
        let current = &inner.stages[stage].latency;
        Snapshot {
            sent,
            errors: sum(|s| s.errors),
            dropped: sum(|s| s.dropped),
            p99_us: (!current.is_empty()).then(|| current.value_at_quantile(0.99)),
        }
    }

    /// The final figures: per-stage stats, sent counts and the series.
    pub fn finish(&self) -> (Vec<StageStats>, Vec<u64>, Series) {
        let inner = self.lock();
        let sent = self
            .sent
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .collect();
        (inner.stages.clone(), sent, inner.series.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(stage: usize, ms: u64, outcome: Outcome) -> Sample {
        Sample {
            stage,
            offset: Duration::from_millis(ms),
            latency: Duration::from_millis(ms),
            send_lag: Duration::ZERO,
            outcome,
        }
    }

    fn ok(answer: Answer) -> Outcome {
        Outcome::Response {
            status: 200,
            answer,
        }
    }

    #[test]
    fn counts_errors_and_answers() {
        let rec = Recorder::new(2, Duration::from_secs(10));
        rec.record(sample(
            0,
            10,
            ok(Answer {
                partial: Some(true),
                coverage_percent: Some(50.0),
                cache: Some(CacheState::Hit),
                ..Answer::default()
            }),
        ));
        rec.record(sample(
            0,
            20,
            ok(Answer {
                partial: Some(false),
                coverage_percent: Some(100.0),
                cache: Some(CacheState::Miss),
                ..Answer::default()
            }),
        ));
        rec.record(sample(
            0,
            30,
            Outcome::Response {
                status: 503,
                answer: Answer {
                    error_code: Some("overloaded".into()),
                    ..Answer::default()
                },
            },
        ));
        rec.record(sample(1, 40, Outcome::Timeout));
        rec.dropped(1, Duration::from_millis(50));
        let (stages, _, series) = rec.finish();
        let s = &stages[0];
        assert_eq!((s.completed, s.ok, s.errors), (3, 2, 1));
        assert_eq!(s.by_status["503"], 1);
        assert_eq!(s.error_codes["overloaded"], 1);
        assert_eq!(s.answers.partial_rate(), Some(0.5));
        assert_eq!(s.answers.coverage_mean(), Some(75.0));
        assert_eq!(s.answers.cache_hit_rate(), Some(0.5));
        assert_eq!(stages[1].by_status["timeout"], 1);
        assert_eq!(stages[1].dropped, 1);
        assert_eq!(series.width, Duration::from_millis(100));
        assert_eq!(series.buckets[0].latency.len(), 4);
        assert_eq!(series.buckets[0].errors, 2);
        assert_eq!(series.buckets[0].dropped, 1);

        let mut total = stages[0].clone();
        total.merge(&stages[1]);
        assert_eq!((total.completed, total.errors, total.dropped), (4, 2, 1));
        assert_eq!(
            total.latency.max(),
            total.latency.highest_equivalent(40_000)
        );
    }

    #[test]
    fn series_width_keeps_points_bounded() {
        assert_eq!(
            Series::new(Duration::from_secs(10)).width,
            Duration::from_millis(100)
        );
        assert_eq!(
            Series::new(Duration::from_secs(120)).width,
            Duration::from_millis(500)
        );
        assert_eq!(
            Series::new(Duration::from_secs(3600)).width,
            Duration::from_secs(15)
        );
    }
}
