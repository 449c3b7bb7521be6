//! The open-loop schedule: every request's send time is fixed in advance from
//! its stage's start and rate, and a dedicated thread releases requests at
//! those times whatever the server does.
//!
//! The dispatcher runs on its own OS thread and sleeps with the kernel's
//! high-resolution timer, not tokio's millisecond wheel, so at rates up to a
//! thousand a second requests leave within tens of microseconds of their
//! time. Above that it releases every request due within [`EARLY`] at once
//! rather than sleep for less, which bounds its wakeups to a thousand a
//! second; a request released early has its latency measured from its
//! actual start, so this never flatters the figures. A request that cannot
//! be released within `max_lag` of its time is dropped and counted.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;

use crate::config::{stage_requests, Config};
use crate::queries::Picker;

/// How early a request may be released instead of sleeping for a shorter time.
pub(crate) const EARLY: Duration = Duration::from_millis(1);
/// How much sooner than asked `thread::sleep` is told to wake, to make up for
/// the kernel's timer slack (50 us by default on Linux).
const SLACK: Duration = Duration::from_micros(50);
/// The longest single sleep, so a stop request is seen promptly.
const MAX_NAP: Duration = Duration::from_millis(50);

/// One phase of the run, its position fixed relative to the run's start.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StagePlan {
    pub name: String,
    pub warmup: bool,
    pub rate: f64,
    /// Offset of the stage's first request from the run's start.
    pub start: Duration,
    pub duration: Duration,
    /// Requests scheduled, after the run's request cap.
    pub requests: u64,
    /// Whether the request cap cut this stage short.
    pub truncated: bool,
}

impl StagePlan {
    /// Offset of the stage's `i`-th request from the run's start. Computed from
    /// the stage start each time, so rounding never accumulates into drift.
    pub fn offset(&self, i: u64) -> Duration {
        self.start + Duration::from_secs_f64(i as f64 / self.rate)
    }

    pub fn end(&self) -> Duration {
        self.start + self.duration
    }
}

/// Lays the warmup and the stages end to end, capping the total requests.
pub(crate) fn plan(config: &Config) -> Vec<StagePlan> {
    let mut budget = config.max_requests.unwrap_or(u64::MAX);
    let mut start = Duration::ZERO;
    let mut plans = Vec::with_capacity(config.stages.len() + 1);
    let warmup = config
        .warmup
        .zip(config.stages.first())
        .map(|(d, first)| ("warmup".to_string(), true, d, first.rate));
    let stages = config
        .stages
        .iter()
        .enumerate()
        .map(|(i, s)| ((i + 1).to_string(), false, s.duration, s.rate));
    for (name, warmup, duration, rate) in warmup.into_iter().chain(stages) {
        let wanted = stage_requests(duration, rate);
        let requests = wanted.min(budget);
        budget -= requests;
        plans.push(StagePlan {
            name,
            warmup,
            rate,
            start,
            duration,
            requests,
            truncated: requests < wanted,
        });
        start += duration;
    }
    plans
}

/// A request released by the dispatcher.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scheduled {
    /// Index into the plans.
    pub stage: usize,
    pub intended: Instant,
    pub query: usize,
}

/// Releases requests on schedule; see the module docs.
pub(crate) struct Dispatcher {
    pub plans: Vec<StagePlan>,
    pub picker: Picker,
    pub rng: StdRng,
    /// The instant offsets are measured from.
    pub start: Instant,
    pub max_lag: Duration,
    pub stop: Arc<AtomicBool>,
}

/// The most requests handed over in one batch.
const MAX_BATCH: usize = 512;

impl Dispatcher {
    /// Runs the whole schedule on the calling thread. Requests due are handed
    /// to `deliver` in batches, one batch per wakeup, so that the runtime is
    /// woken at most once per batch; a request too late is reported to
    /// `dropped` with its stage index and time instead. Returns early when
    /// `stop` is set.
    pub fn run(
        mut self,
        mut deliver: impl FnMut(Vec<Scheduled>),
        mut dropped: impl FnMut(usize, Instant),
    ) {
        let mut seq = 0u64;
        let mut batch = Vec::new();
        for (stage, plan) in self.plans.iter().enumerate() {
            for i in 0..plan.requests {
                let intended = self.start + plan.offset(i);
                let due_now = intended <= Instant::now() + EARLY;
                if !due_now || batch.len() >= MAX_BATCH {
                    if !batch.is_empty() {
                        deliver(std::mem::take(&mut batch));
                    }
                    if !wait_until(intended, &self.stop) {
                        return;
                    }
                }
                if Instant::now().saturating_duration_since(intended) > self.max_lag {
                    dropped(stage, intended);
                } else {
                    let query = self.picker.pick(seq, &mut self.rng);
                    batch.push(Scheduled {
                        stage,
                        intended,
                        query,
                    });
                }
                seq += 1;
            }
        }
        if !batch.is_empty() {
            deliver(batch);
        }
    }
}

/// Sleeps until `EARLY` before `when`; false if asked to stop meanwhile.
fn wait_until(when: Instant, stop: &AtomicBool) -> bool {
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let now = Instant::now();
        let Some(gap) = when.checked_duration_since(now) else {
            return true;
        };
        if gap <= EARLY {
            return true;
        }
        std::thread::sleep(gap.saturating_sub(SLACK).min(MAX_NAP));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{QueryOrder, QuerySource, Stage};
    use rand::SeedableRng;

    fn config(stages: &[(u64, f64)], warmup_ms: Option<u64>) -> Config {
        let mut c = Config::new(
            "http://127.0.0.1:1",
            1.0,
            Duration::from_secs(1),
            QuerySource::Fixed("q".into()),
        );
        c.stages = stages
            .iter()
            .map(|&(ms, rate)| Stage {
                duration: Duration::from_millis(ms),
                rate,
            })
            .collect();
        c.warmup = warmup_ms.map(Duration::from_millis);
        c
    }

    fn dispatcher(plans: Vec<StagePlan>, start: Instant) -> Dispatcher {
        Dispatcher {
            plans,
            picker: Picker::new(QueryOrder::Replay, 3),
            rng: StdRng::seed_from_u64(1),
            start,
            max_lag: Duration::from_millis(500),
            stop: Arc::new(AtomicBool::new(false)),
        }
    }

    #[test]
    fn plans_lay_stages_end_to_end() {
        let plans = plan(&config(&[(1000, 10.0), (500, 100.0)], Some(300)));
        assert_eq!(plans.len(), 3);
        assert_eq!(
            plans
                .iter()
                .map(|p| (p.name.as_str(), p.requests))
                .collect::<Vec<_>>(),
            [("warmup", 3), ("1", 10), ("2", 50)]
        );
        assert!(plans[0].warmup && !plans[1].warmup);
        assert_eq!(plans[1].start, Duration::from_millis(300));
        assert_eq!(plans[2].start, Duration::from_millis(1300));
        assert_eq!(plans[2].offset(0), Duration::from_millis(1300));
        assert_eq!(plans[2].offset(49), Duration::from_millis(1790));
        assert_eq!(plans[2].end(), Duration::from_millis(1800));
        // Offsets are computed, not accumulated: the millionth is exact.
        let fast = StagePlan {
            rate: 3.0,
            start: Duration::ZERO,
            ..plans[1].clone()
        };
        assert_eq!(fast.offset(3_000_000).as_secs(), 1_000_000);
    }

    #[test]
    fn the_request_cap_truncates_later_stages() {
        let mut c = config(&[(1000, 10.0), (1000, 10.0)], None);
        c.max_requests = Some(15);
        let plans = plan(&c);
        assert_eq!((plans[0].requests, plans[0].truncated), (10, false));
        assert_eq!((plans[1].requests, plans[1].truncated), (5, true));
    }

    #[test]
    fn releases_each_request_at_its_time() {
        let plans = plan(&config(&[(100, 100.0), (100, 200.0)], None));
        let start = Instant::now() + Duration::from_millis(5);
        let mut launched = Vec::new();
        let mut drops = 0;
        dispatcher(plans, start).run(
            |batch| {
                let now = Instant::now();
                launched.extend(batch.iter().map(|s| (s.stage, s.query, s.intended, now)));
            },
            |_, _| drops += 1,
        );
        assert_eq!(drops, 0);
        assert_eq!(launched.len(), 30);
        assert_eq!(launched.iter().filter(|l| l.0 == 1).count(), 20);
        assert_eq!(
            launched.iter().take(4).map(|l| l.1).collect::<Vec<_>>(),
            [0, 1, 2, 0]
        );
        assert_eq!(launched[10].2 - start, Duration::from_millis(100));
        assert_eq!(launched[11].2 - start, Duration::from_millis(105));
        for (_, _, intended, at) in &launched {
            // Never earlier than allowed; lateness is only bounded loosely
            // because the test machine may be busy.
            assert!(*at + EARLY >= *intended);
        }
    }

    #[test]
    fn requests_too_late_are_dropped_not_sent() {
        // The schedule started 2 s ago: the first 1.5 s of it is past the
        // 500 ms lag allowance.
        let plans = plan(&config(&[(2100, 10.0)], None));
        let start = Instant::now() - Duration::from_secs(2);
        let mut launched = 0;
        let mut drops = 0;
        dispatcher(plans, start).run(|b| launched += b.len(), |_, _| drops += 1);
        assert_eq!(launched + drops, 21);
        assert!((14..=16).contains(&drops), "{drops} dropped");
    }

    #[test]
    fn stop_ends_the_schedule() {
        let plans = plan(&config(&[(60_000, 10.0)], None));
        let d = dispatcher(plans, Instant::now());
        let stop = d.stop.clone();
        let mut launched = 0;
        let handle = std::thread::spawn(move || {
            d.run(|b| launched += b.len(), |_, _| {});
            launched
        });
        std::thread::sleep(Duration::from_millis(120));
        stop.store(true, Ordering::Relaxed);
        let launched = handle.join().unwrap();
        assert!((1..=10).contains(&launched), "{launched}");
    }
}
