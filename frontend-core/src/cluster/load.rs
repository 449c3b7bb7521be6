//! Per-replica load estimates and per-shard latency windows: the inputs of
//! replica choice (power of two choices on peak-EWMA × in-flight, or the C3
//! score when leaves report their own load) and of the hedge delay (a
//! shard's recent high percentile).
//!
//! A replica also remembers since when it has owed an answer
//! ([`PeakEwma::waiting_for`]): the start of its oldest call that has not
//! been answered, counting calls the fan-out abandoned (a hedge won, the
//! deadline passed), because a frozen process answers none of them. Any
//! answer clears it down to the oldest call still running.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// Peak-sensitive moving average of a replica's latency (Finagle's
/// peak EWMA): a slow call raises the estimate at once, fast calls bring it
/// down with a time constant of `decay`.
pub struct PeakEwma {
    state: Mutex<EwmaState>,
    decay: Duration,
    in_flight: AtomicUsize,
    /// Calls started over the replica's life in this frontend.
    started: AtomicU64,
    outstanding: Mutex<Outstanding>,
    server: Mutex<ServerLoad>,
}

struct EwmaState {
    estimate_ns: f64,
    updated: Instant,
}

/// The calls a replica owes an answer for.
#[derive(Default)]
struct Outstanding {
    next_id: u64,
    /// Calls still running, by id (ids grow with start time, so the first
    /// entry is the oldest).
    running: BTreeMap<u64, Instant>,
    /// The start of the oldest unanswered call, abandoned ones included;
    /// `None` when the replica owes nothing.
    waiting_since: Option<Instant>,
    /// When the replica last answered a call (any kind, an error included).
    last_answer: Option<Instant>,
}

/// What the replica itself last reported about its load, smoothed.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ServerLoad {
    /// Moving average of searches running or queued at the leaf.
    pub queue: f64,
    /// Moving average of the leaf's own service time, in nanoseconds.
    pub service_ns: f64,
    /// Reports received.
    pub reports: u64,
}

/// Weight of a new server report in [`ServerLoad`]'s moving averages
/// (Elasticsearch's adaptive replica selection uses 0.3).
const SERVER_ALPHA: f64 = 0.3;

impl PeakEwma {
    pub fn new(initial: Duration, decay: Duration) -> Self {
        PeakEwma {
            state: Mutex::new(EwmaState {
                estimate_ns: initial.as_nanos() as f64,
                updated: Instant::now(),
            }),
            decay,
            in_flight: AtomicUsize::new(0),
            started: AtomicU64::new(0),
            outstanding: Mutex::new(Outstanding::default()),
            server: Mutex::new(ServerLoad::default()),
        }
    }

    /// Records one observed latency.
    pub fn observe(&self, latency: Duration) {
        let sample = latency.as_nanos() as f64;
        let now = Instant::now();
        let mut state = self.state.lock();
        if sample > state.estimate_ns {
            state.estimate_ns = sample;
        } else {
            let elapsed = now.saturating_duration_since(state.updated).as_secs_f64();
            let weight = (-elapsed / self.decay.as_secs_f64().max(1e-9)).exp();
            state.estimate_ns = state.estimate_ns * weight + sample * (1.0 - weight);
        }
        state.updated = now;
    }

    /// Forgets the history: the estimate becomes `latency`.
    pub fn reset(&self, latency: Duration) {
        let mut state = self.state.lock();
        state.estimate_ns = latency.as_nanos() as f64;
        state.updated = Instant::now();
        drop(state);
        *self.server.lock() = ServerLoad::default();
    }

    /// Records the load the replica reported with an answer: searches
    /// running and queued there, and its own service time for the call.
    pub fn observe_server(&self, queue: u32, service: Duration) {
        let mut server = self.server.lock();
        let service_ns = service.as_nanos() as f64;
        if server.reports == 0 {
            server.queue = f64::from(queue);
            server.service_ns = service_ns;
        } else {
            server.queue += SERVER_ALPHA * (f64::from(queue) - server.queue);
            server.service_ns += SERVER_ALPHA * (service_ns - server.service_ns);
        }
        server.reports += 1;
    }

    /// The smoothed load the replica reported, if it ever did.
    pub fn server_load(&self) -> Option<ServerLoad> {
        let server = *self.server.lock();
        (server.reports > 0).then_some(server)
    }

    /// The C3 score (Suresh et al., NSDI 2015, as Elasticsearch's adaptive
    /// replica selection computes it): `R − S + S × q̂³` with `R` the
    /// frontend's latency estimate, `S` the replica's reported service time
    /// and `q̂ = 1 + calls this frontend has in flight there × concurrency
    /// compensation + the queue it reported`. Falls back to [`Self::cost`]
    /// before the first report.
    pub fn score(&self) -> f64 {
        let Some(server) = self.server_load() else {
            return self.cost();
        };
        let response_ns = self.choice_estimate_ns();
        let service_ns = server.service_ns.min(response_ns);
        let q = 1.0 + self.in_flight() as f64 + server.queue;
        response_ns - service_ns + service_ns * q.powi(3)
    }

    /// How long the replica has owed an answer: since the start of its
    /// oldest unanswered call, or `None` when it owes none.
    pub fn waiting_for(&self, now: Instant) -> Option<Duration> {
        self.outstanding
            .lock()
            .waiting_since
            .map(|since| now.saturating_duration_since(since))
    }

    /// Whether the replica has answered any call after `since`: a frozen
    /// process answers none, a busy one answers its other calls.
    pub fn answered_since(&self, since: Instant) -> bool {
        self.outstanding
            .lock()
            .last_answer
            .is_some_and(|at| at > since)
    }

    /// The estimate in seconds.
    pub fn estimate(&self) -> Duration {
        Duration::from_nanos(self.state.lock().estimate_ns as u64)
    }

    /// The load that replica choice compares: latency × (calls in flight + 1).
    pub fn cost(&self) -> f64 {
        let in_flight = self.in_flight.load(Ordering::Relaxed) as f64;
        self.choice_estimate_ns() * (in_flight + 1.0)
    }

    /// The estimate as replica choice sees it: while the replica has no
    /// call in flight it decays toward zero with the time constant `decay`
    /// since its last observation (as tower's and Finagle's peak EWMA do),
    /// so that a replica passed over for a while is tried again and learns
    /// its real latency, instead of keeping a stale estimate (the initial
    /// one, or one slow answer) for good when traffic is light enough that
    /// the other replica is never busy. A replica with calls in flight does
    /// not decay: a frozen one stays as costly as it last was (and the
    /// stuck rule keeps it out). Probation compares the undecayed estimate.
    fn choice_estimate_ns(&self) -> f64 {
        let state = self.state.lock();
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return state.estimate_ns;
        }
        let idle = Instant::now()
            .saturating_duration_since(state.updated)
            .as_secs_f64();
        state.estimate_ns * (-idle / self.decay.as_secs_f64().max(1e-9)).exp()
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Calls this frontend has sent the replica (every kind), for load
    /// balance figures.
    pub fn calls_started(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }

    /// Counts a call in flight until the guard drops; the replica owes an
    /// answer for it until [`InFlight::answered`] (a dropped guard leaves
    /// the debt standing until the replica answers some later call).
    pub fn start(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.started.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut outstanding = self.outstanding.lock();
        let id = outstanding.next_id;
        outstanding.next_id += 1;
        outstanding.running.insert(id, now);
        outstanding.waiting_since.get_or_insert(now);
        InFlight {
            load: self,
            id,
            answered: false,
        }
    }
}

/// Decrements the in-flight count when dropped (also on cancellation).
pub struct InFlight<'a> {
    load: &'a PeakEwma,
    id: u64,
    answered: bool,
}

impl InFlight<'_> {
    /// The replica answered this call (any answer, an error included, shows
    /// that the process runs): it owes only the calls still running.
    pub fn answered(mut self) {
        self.answered = true;
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.load.in_flight.fetch_sub(1, Ordering::Relaxed);
        let mut outstanding = self.load.outstanding.lock();
        outstanding.running.remove(&self.id);
        if self.answered {
            outstanding.waiting_since = outstanding.running.values().next().copied();
            outstanding.last_answer = Some(Instant::now());
        }
    }
}

/// A rolling window of a shard's recent call latencies with a cached high
/// percentile, recomputed every few samples so that reading it is cheap.
pub struct LatencyWindow {
    samples: Mutex<Window>,
    quantile: f64,
    /// The cached percentile in microseconds; 0 until enough samples.
    cached_us: AtomicU64,
}

struct Window {
    ring: Vec<u64>,
    next: usize,
    filled: bool,
    since_recompute: usize,
}

/// Samples needed before the percentile is trusted for hedging.
const MIN_SAMPLES: usize = 20;
const RECOMPUTE_EVERY: usize = 16;

impl LatencyWindow {
    pub fn new(size: usize, quantile: f64) -> Self {
        LatencyWindow {
            samples: Mutex::new(Window {
                ring: Vec::with_capacity(size.max(MIN_SAMPLES)),
                next: 0,
                filled: false,
                since_recompute: 0,
            }),
            quantile: quantile.clamp(0.0, 1.0),
            cached_us: AtomicU64::new(0),
        }
    }

    pub fn record(&self, latency: Duration) {
        let us = latency.as_micros().min(u64::MAX as u128) as u64;
        let mut window = self.samples.lock();
        let capacity = window.ring.capacity();
        if window.ring.len() < capacity {
            window.ring.push(us);
        } else {
            let next = window.next;
            window.ring[next] = us;
            window.next = (next + 1) % capacity;
            window.filled = true;
        }
        window.since_recompute += 1;
        let count = window.ring.len();
        if count >= MIN_SAMPLES
            && (window.since_recompute >= RECOMPUTE_EVERY || count == MIN_SAMPLES)
        {
            window.since_recompute = 0;
            let mut sorted = window.ring.clone();
            drop(window);
            sorted.sort_unstable();
            let rank = ((sorted.len() as f64 - 1.0) * self.quantile).round() as usize;
            self.cached_us
                .store(sorted[rank.min(sorted.len() - 1)], Ordering::Relaxed);
        }
    }

    /// The recent high percentile, or `None` before enough samples.
    pub fn percentile(&self) -> Option<Duration> {
        match self.cached_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn peak_ewma_jumps_up_and_decays_down() {
        let ewma = PeakEwma::new(Duration::from_millis(1), Duration::from_secs(1));
        ewma.observe(Duration::from_millis(100));
        assert_eq!(ewma.estimate(), Duration::from_millis(100));
        tokio::time::advance(Duration::from_secs(5)).await;
        ewma.observe(Duration::from_millis(1));
        assert!(
            ewma.estimate() < Duration::from_millis(5),
            "{:?}",
            ewma.estimate()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn calls_started_counts_every_call_answered_or_not() {
        let ewma = PeakEwma::new(Duration::from_millis(5), Duration::from_secs(10));
        ewma.start().answered();
        drop(ewma.start());
        let running = ewma.start();
        assert_eq!(ewma.calls_started(), 3);
        assert_eq!(ewma.in_flight(), 1);
        drop(running);
        assert_eq!(ewma.calls_started(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_replica_looks_cheaper_with_time_until_it_is_tried() {
        let busy = PeakEwma::new(Duration::from_millis(5), Duration::from_secs(10));
        let idle = PeakEwma::new(Duration::from_millis(5), Duration::from_secs(10));
        // Twenty seconds of answers of 1 ms from one replica, none from
        // the other: the idle one's estimate, untouched, has decayed for as
        // long toward zero, the busy one's only toward 1 ms.
        for _ in 0..200 {
            tokio::time::advance(Duration::from_millis(100)).await;
            busy.observe(Duration::from_millis(1));
        }
        assert!(
            idle.cost() < busy.cost(),
            "{} vs {}",
            idle.cost(),
            busy.cost()
        );
        // The decay is choice's view only: probation sees the estimate.
        assert_eq!(idle.estimate(), Duration::from_millis(5));
        // A replica with a call in flight does not decay (a frozen one
        // stays as costly as it was).
        let _call = idle.start();
        assert!((idle.cost() - 5e6 * 2.0).abs() < 1.0, "{}", idle.cost());
    }

    #[tokio::test(start_paused = true)]
    async fn in_flight_raises_cost_until_dropped() {
        let ewma = PeakEwma::new(Duration::from_millis(1), Duration::from_secs(1));
        let idle = ewma.cost();
        let guard = ewma.start();
        assert!(ewma.cost() > idle);
        drop(guard);
        assert_eq!(ewma.cost(), idle);
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_call_is_owed_until_the_replica_answers_another() {
        let ewma = PeakEwma::new(Duration::from_millis(1), Duration::from_secs(1));
        assert_eq!(ewma.waiting_for(Instant::now()), None);
        let first = ewma.start();
        tokio::time::advance(Duration::from_millis(10)).await;
        // Abandoned (a hedge won): still owed.
        drop(first);
        assert_eq!(
            ewma.waiting_for(Instant::now()),
            Some(Duration::from_millis(10))
        );
        let second = ewma.start();
        let third = ewma.start();
        tokio::time::advance(Duration::from_millis(5)).await;
        // An answer clears the debt down to the oldest call still running.
        second.answered();
        assert_eq!(
            ewma.waiting_for(Instant::now()),
            Some(Duration::from_millis(5))
        );
        third.answered();
        assert_eq!(ewma.waiting_for(Instant::now()), None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_c3_score_weighs_the_reported_queue() {
        let a = PeakEwma::new(Duration::from_millis(2), Duration::from_secs(1));
        let b = PeakEwma::new(Duration::from_millis(2), Duration::from_secs(1));
        // Before any report the score is the frontend's own view.
        assert_eq!(a.score(), a.cost());
        a.observe_server(0, Duration::from_millis(1));
        b.observe_server(4, Duration::from_millis(1));
        assert!(a.score() < b.score(), "{} vs {}", a.score(), b.score());
        // Idle, the score is the latency estimate.
        assert!((a.score() - 2e6).abs() < 1.0, "{}", a.score());
        // Outstanding calls of this frontend count like queued ones.
        let _calls: Vec<_> = (0..4).map(|_| a.start()).collect();
        assert!((a.score() - b.score()).abs() < 1.0);
    }

    #[test]
    fn window_percentile_tracks_the_tail() {
        let window = LatencyWindow::new(100, 0.95);
        assert_eq!(window.percentile(), None);
        for i in 1..=100 {
            window.record(Duration::from_millis(i));
        }
        let p95 = window.percentile().unwrap();
        assert!(
            p95 >= Duration::from_millis(90) && p95 <= Duration::from_millis(97),
            "{p95:?}"
        );
    }
}
