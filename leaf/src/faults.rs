//! Fault knobs: added latency, injected errors and hangs, and a query of
//! death, set from flags and changed at runtime through a cloneable
//! [`Faults`] handle.
//!
//! Faults act on the `Search` RPC only, before admission: `Info`,
//! `TermStats` and health keep answering, so a faulty leaf keeps its lease
//! and stays routable, which is what hedging and deadline tests need. They
//! are applied in this order: crash, hang, delay, error.
//!
//! A crash (`--fault-crash-on TERM`, a query containing TERM) runs the
//! crash hook, which aborts the process as a real query of death would. A
//! harness that runs leaves inside its own process replaces the hook (see
//! [`Faults::set_crash_hook`]) with one that kills only that leaf: its
//! connections are cut as a vanished process's would be.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::error::{LeafError, Result};
use crate::metrics::{FaultKind, Metrics};

/// The fault knobs as plain data (flags, or a snapshot of [`Faults`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultConfig {
    /// Latency added to a fraction of calls.
    pub delay: Duration,
    /// Fraction (0..=1) of calls that get `delay`.
    pub delay_fraction: f64,
    /// Fraction (0..=1) of calls answered UNAVAILABLE "injected fault".
    pub error_fraction: f64,
    /// Calls wait, without answering, until the caller gives up, the knob is
    /// turned off or the server shuts down.
    pub hang: bool,
    /// Time added at every budget check of the scoring loop (every few
    /// hundred matches): a slow disk or a cold cache, so that deadlines cut
    /// searches short.
    pub slow_scan: Duration,
    /// Every search holds its slot (`--max-concurrent`) for at least this
    /// long, answering only then: a replica of bounded capacity (with N
    /// slots it serves at most N / `hold` searches a second, and calls
    /// beyond that queue), without spending CPU, for benchmarks of replica
    /// choice on one machine.
    pub hold: Duration,
    /// A search whose query contains this text (ignoring case) crashes the
    /// leaf (see [`Faults::set_crash_hook`]).
    pub crash_on: Option<String>,
}

/// What a crash does: abort the process, or, inside a test harness, kill
/// one in-process leaf.
pub type CrashHook = Arc<dyn Fn() + Send + Sync>;

/// Runtime handle on the fault knobs; clones share the same state.
#[derive(Clone, Debug)]
pub struct Faults {
    inner: Arc<Inner>,
}

struct Inner {
    delay_nanos: AtomicU64,
    /// f64 bits.
    delay_fraction: AtomicU64,
    /// f64 bits.
    error_fraction: AtomicU64,
    /// A watch rather than a flag, so that hung calls resume when the knob
    /// is turned off.
    hang: watch::Sender<bool>,
    slow_scan_nanos: AtomicU64,
    hold_nanos: AtomicU64,
    /// Lowercase.
    crash_on: RwLock<Option<String>>,
    crash_hook: RwLock<CrashHook>,
    /// Crashes run, for harnesses whose hook does not end the process.
    crashes: AtomicU64,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faults")
            .field("crash_on", &*self.crash_on.read())
            .field("crashes", &self.crashes.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Default for Faults {
    fn default() -> Self {
        Faults::new(&FaultConfig::default())
    }
}

impl Faults {
    pub fn new(config: &FaultConfig) -> Faults {
        let faults = Faults {
            inner: Arc::new(Inner {
                delay_nanos: AtomicU64::new(0),
                delay_fraction: AtomicU64::new(0f64.to_bits()),
                error_fraction: AtomicU64::new(0f64.to_bits()),
                hang: watch::Sender::new(false),
                slow_scan_nanos: AtomicU64::new(0),
                hold_nanos: AtomicU64::new(0),
                crash_on: RwLock::new(None),
                crash_hook: RwLock::new(Arc::new(|| std::process::abort())),
                crashes: AtomicU64::new(0),
            }),
        };
        faults.set(config);
        faults
    }

    /// Replaces every knob at once.
    pub fn set(&self, config: &FaultConfig) {
        self.set_delay(config.delay, config.delay_fraction);
        self.set_error_fraction(config.error_fraction);
        self.set_hang(config.hang);
        self.set_slow_scan(config.slow_scan);
        self.set_hold(config.hold);
        self.set_crash_on(config.crash_on.as_deref());
    }

    /// Turns every fault off.
    pub fn clear(&self) {
        self.set(&FaultConfig::default());
    }

    /// Adds `delay` to a `fraction` (clamped to 0..=1) of calls.
    pub fn set_delay(&self, delay: Duration, fraction: f64) {
        let nanos = u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX);
        self.inner.delay_nanos.store(nanos, Ordering::Relaxed);
        store_fraction(&self.inner.delay_fraction, fraction);
    }

    /// Fails a `fraction` (clamped to 0..=1) of calls with UNAVAILABLE.
    pub fn set_error_fraction(&self, fraction: f64) {
        store_fraction(&self.inner.error_fraction, fraction);
    }

    /// Makes calls hang (true) or releases them (false).
    pub fn set_hang(&self, hang: bool) {
        self.inner.hang.send_replace(hang);
    }

    /// Adds `delay` at every budget check of the scoring loop.
    pub fn set_slow_scan(&self, delay: Duration) {
        let nanos = u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX);
        self.inner.slow_scan_nanos.store(nanos, Ordering::Relaxed);
    }

    /// The slow-scan delay alone (cheaper than [`Self::config`]).
    pub fn slow_scan(&self) -> Duration {
        Duration::from_nanos(self.inner.slow_scan_nanos.load(Ordering::Relaxed))
    }

    /// Makes every search hold its slot for at least `hold` (zero: off).
    pub fn set_hold(&self, hold: Duration) {
        let nanos = u64::try_from(hold.as_nanos()).unwrap_or(u64::MAX);
        self.inner.hold_nanos.store(nanos, Ordering::Relaxed);
    }

    /// How long every search holds its slot at least (zero: off).
    pub fn hold(&self) -> Duration {
        Duration::from_nanos(self.inner.hold_nanos.load(Ordering::Relaxed))
    }

    /// Crashes the leaf on queries containing `term` (ignoring case);
    /// `None` or an empty term turns it off.
    pub fn set_crash_on(&self, term: Option<&str>) {
        *self.inner.crash_on.write() = term.filter(|t| !t.is_empty()).map(str::to_lowercase);
    }

    /// Replaces what a crash does (by default `std::process::abort`). An
    /// in-process harness sets a hook that kills just this leaf; the search
    /// that crashed never answers.
    pub fn set_crash_hook(&self, hook: impl Fn() + Send + Sync + 'static) {
        *self.inner.crash_hook.write() = Arc::new(hook);
    }

    /// Crashes run so far (only ever seen when the hook does not abort).
    pub fn crashes(&self) -> u64 {
        self.inner.crashes.load(Ordering::Relaxed)
    }

    /// True when `query` is one that crashes this leaf.
    pub fn crashes_on(&self, query: &str) -> bool {
        self.inner
            .crash_on
            .read()
            .as_deref()
            .is_some_and(|term| query.to_lowercase().contains(term))
    }

    /// The current knobs.
    pub fn config(&self) -> FaultConfig {
        FaultConfig {
            delay: Duration::from_nanos(self.inner.delay_nanos.load(Ordering::Relaxed)),
            delay_fraction: load_fraction(&self.inner.delay_fraction),
            error_fraction: load_fraction(&self.inner.error_fraction),
            hang: *self.inner.hang.borrow(),
            slow_scan: self.slow_scan(),
            hold: self.hold(),
            crash_on: self.inner.crash_on.read().clone(),
        }
    }

    /// Applies the knobs to one call of `query`: crash, hang, then delay
    /// (never past the deadline), then error.
    pub(crate) async fn apply(
        &self,
        query: &str,
        deadline: Option<Instant>,
        shutdown: &CancellationToken,
        metrics: &Metrics,
    ) -> Result<()> {
        if self.crashes_on(query) {
            self.crash(shutdown).await;
            return Err(LeafError::ShuttingDown);
        }
        let mut hang = self.inner.hang.subscribe();
        if *hang.borrow_and_update() {
            metrics.fault(FaultKind::Hang);
            tracing::debug!("injected fault: hanging");
            tokio::select! {
                // The sender lives as long as `self`, so this only returns
                // when the knob is turned off.
                _ = hang.wait_for(|hang| !*hang) => {}
                () = shutdown.cancelled() => return Err(LeafError::ShuttingDown),
            }
        }

        let config = self.config();
        if !config.delay.is_zero() && roll(config.delay_fraction) {
            metrics.fault(FaultKind::Delay);
            let delay = match deadline {
                Some(deadline) => config
                    .delay
                    .min(deadline.saturating_duration_since(Instant::now())),
                None => config.delay,
            };
            tracing::debug!(?delay, "injected fault: delay");
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shutdown.cancelled() => return Err(LeafError::ShuttingDown),
            }
        }

        if roll(config.error_fraction) {
            metrics.fault(FaultKind::Error);
            tracing::debug!("injected fault: error");
            return Err(LeafError::InjectedFault);
        }
        Ok(())
    }
}

impl Faults {
    /// Runs the crash hook; when it returns (an in-process leaf), the call
    /// never answers, as a vanished process's would not, until shutdown.
    async fn crash(&self, shutdown: &CancellationToken) {
        self.inner.crashes.fetch_add(1, Ordering::Relaxed);
        // The query's text stays at debug level, like every query's.
        tracing::error!("injected fault: crashing on a query of death");
        tracing::debug!(crash_on = ?self.inner.crash_on.read(), "crash");
        let hook = Arc::clone(&*self.inner.crash_hook.read());
        hook();
        shutdown.cancelled().await;
    }
}

fn store_fraction(cell: &AtomicU64, fraction: f64) {
    let fraction = if fraction.is_nan() {
        0.0
    } else {
        fraction.clamp(0.0, 1.0)
    };
    cell.store(fraction.to_bits(), Ordering::Relaxed);
}

fn load_fraction(cell: &AtomicU64) -> f64 {
    f64::from_bits(cell.load(Ordering::Relaxed))
}

/// True with probability `fraction`; exactly never at 0 and always at 1.
fn roll(fraction: f64) -> bool {
    fraction > 0.0 && rand::random::<f64>() < fraction
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> Metrics {
        Metrics::new(&prometheus::Registry::new(), 0).unwrap()
    }

    #[test]
    fn knobs_round_trip_and_clamp() {
        let faults = Faults::default();
        assert_eq!(faults.config(), FaultConfig::default());
        let shared = faults.clone();
        shared.set_delay(Duration::from_millis(50), 2.0);
        shared.set_error_fraction(-1.0);
        shared.set_hang(true);
        let config = faults.config();
        assert_eq!(config.delay, Duration::from_millis(50));
        assert_eq!(config.delay_fraction, 1.0);
        assert_eq!(config.error_fraction, 0.0);
        assert!(config.hang);
        faults.clear();
        assert_eq!(faults.config(), FaultConfig::default());
    }

    #[tokio::test]
    async fn error_fraction_one_always_fails_and_zero_never() {
        let metrics = metrics();
        let token = CancellationToken::new();
        let faults = Faults::default();
        for _ in 0..20 {
            assert!(faults.apply("q", None, &token, &metrics).await.is_ok());
        }
        faults.set_error_fraction(1.0);
        for _ in 0..20 {
            let error = faults.apply("q", None, &token, &metrics).await.unwrap_err();
            assert!(matches!(error, LeafError::InjectedFault));
        }
        assert_eq!(
            metrics.faults_injected.with_label_values(&["error"]).get(),
            20
        );
    }

    #[tokio::test(start_paused = true)]
    async fn delay_is_capped_by_the_deadline() {
        let metrics = metrics();
        let token = CancellationToken::new();
        let faults = Faults::new(&FaultConfig {
            delay: Duration::from_secs(3600),
            delay_fraction: 1.0,
            ..FaultConfig::default()
        });
        let start = tokio::time::Instant::now();
        let deadline = Instant::now() + Duration::from_secs(2);
        faults
            .apply("q", Some(deadline), &token, &metrics)
            .await
            .unwrap();
        // Logical time: the sleep ended at the deadline, not after an hour.
        assert!(start.elapsed() < Duration::from_secs(60));
        assert_eq!(
            metrics.faults_injected.with_label_values(&["delay"]).get(),
            1
        );
    }

    #[tokio::test]
    async fn hang_waits_until_released_or_shutdown() {
        let metrics = metrics();
        let token = CancellationToken::new();
        let faults = Faults::new(&FaultConfig {
            hang: true,
            ..FaultConfig::default()
        });
        let call = {
            let (faults, token, metrics) = (faults.clone(), token.clone(), metrics.clone());
            tokio::spawn(async move { faults.apply("q", None, &token, &metrics).await })
        };
        // The call stays pending while the knob is on.
        tokio::task::yield_now().await;
        assert!(!call.is_finished());
        faults.set_hang(false);
        assert!(call.await.unwrap().is_ok());

        faults.set_hang(true);
        let call = {
            let (faults, token, metrics) = (faults.clone(), token.clone(), metrics.clone());
            tokio::spawn(async move { faults.apply("q", None, &token, &metrics).await })
        };
        token.cancel();
        let error = call.await.unwrap().unwrap_err();
        assert!(matches!(error, LeafError::ShuttingDown));
    }

    #[tokio::test]
    async fn a_query_containing_the_term_runs_the_crash_hook_and_never_answers() {
        let metrics = metrics();
        let token = CancellationToken::new();
        let faults = Faults::new(&FaultConfig {
            crash_on: Some("Poison".into()),
            ..FaultConfig::default()
        });
        assert_eq!(faults.config().crash_on.as_deref(), Some("poison"));
        let (killed, mut kills) = tokio::sync::mpsc::unbounded_channel();
        faults.set_crash_hook(move || {
            let _ = killed.send(());
        });
        assert!(faults
            .apply("json parser", None, &token, &metrics)
            .await
            .is_ok());
        assert_eq!(faults.crashes(), 0);
        let call = {
            let (faults, token, metrics) = (faults.clone(), token.clone(), metrics.clone());
            tokio::spawn(async move {
                faults
                    .apply("a POISONed pill", None, &token, &metrics)
                    .await
            })
        };
        kills.recv().await.unwrap();
        assert_eq!(faults.crashes(), 1);
        tokio::task::yield_now().await;
        assert!(!call.is_finished(), "a crashed call never answers");
        token.cancel();
        assert!(call.await.unwrap().is_err());
        faults.clear();
        assert!(!faults.crashes_on("poison"));
    }
}
