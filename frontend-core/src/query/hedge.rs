//! Hedging: a second call to another replica when the first runs past the
//! shard's recent high percentile, within a budget.
//!
//! The budget ([`HedgeBudget`]) is a token bucket whose capacity follows the
//! traffic: each primary call deposits `ratio`, time deposits `floor` per
//! second, a hedge withdraws one, and the balance is capped at
//! `max(min_burst, ratio × primary calls in the last window)`. A freeze
//! strands every call sent to the frozen replica at once; a large cap lets
//! them all be hedged, while the deposits bound what hedging adds over any
//! interval `I`:
//!
//! ```text
//! hedges(I) ≤ ratio × primaries(I) + floor × |I| + cap(start of I)
//! cap(t)    = max(min_burst, ratio × primaries in [t − window, t])
//! ```
//!
//! so over a long run hedges tend to `ratio` × primary calls, and over any
//! one window they are at most `ratio` × (its primaries + the previous
//! window's) + `min_burst` + `floor` × window. The fan-out
//! ([`crate::query::fanout`]) decides when to hedge and records the loser's
//! latency too, so that the percentile is not biased low.

use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// Sub-windows in which primary calls are counted; the window slides by
/// one of them at a time.
const SLOTS: usize = 10;

/// A token bucket for hedges whose capacity is `ratio` × the primary calls
/// of a sliding window (see the module documentation for the bound).
pub struct HedgeBudget {
    state: Mutex<BudgetState>,
    ratio: f64,
    floor_per_sec: f64,
    min_burst: f64,
    slot: Duration,
}

struct BudgetState {
    balance: f64,
    updated: Instant,
    epoch: Instant,
    /// Primary calls per slot: `(slot number, count)`.
    primaries: [(u64, u64); SLOTS],
}

impl HedgeBudget {
    /// A budget of `ratio` hedges per primary call and `floor_per_sec` a
    /// second, over a 10 s window with a burst of at least 10.
    pub fn new(ratio: f64, floor_per_sec: f64) -> Self {
        let now = Instant::now();
        HedgeBudget {
            state: Mutex::new(BudgetState {
                balance: 1.0,
                updated: now,
                epoch: now,
                primaries: [(0, 0); SLOTS],
            }),
            ratio: ratio.max(0.0),
            floor_per_sec: floor_per_sec.max(0.0),
            min_burst: 10.0_f64.max(floor_per_sec),
            slot: Duration::from_secs(1),
        }
    }

    /// Sets the sliding window and the smallest capacity.
    pub fn with_window(mut self, window: Duration, min_burst: f64) -> Self {
        self.slot = (window / SLOTS as u32).max(Duration::from_millis(1));
        self.min_burst = min_burst.max(1.0);
        self
    }

    /// A primary call was sent.
    pub fn deposit(&self) {
        let now = Instant::now();
        let mut state = self.state.lock();
        let slot = self.slot_of(&state, now);
        let entry = &mut state.primaries[slot as usize % SLOTS];
        if entry.0 != slot {
            *entry = (slot, 0);
        }
        entry.1 += 1;
        let cap = self.capacity(&state, slot);
        state.balance = (state.balance + self.ratio).min(cap);
    }

    /// Takes one hedge from the budget, if there is one.
    pub fn try_withdraw(&self) -> bool {
        let now = Instant::now();
        let mut state = self.state.lock();
        let elapsed = now.saturating_duration_since(state.updated).as_secs_f64();
        let cap = self.capacity(&state, self.slot_of(&state, now));
        state.balance = (state.balance + elapsed * self.floor_per_sec).min(cap);
        state.updated = now;
        if state.balance >= 1.0 {
            state.balance -= 1.0;
            true
        } else {
            false
        }
    }

    /// The most the budget may hold now.
    pub fn cap(&self) -> f64 {
        let now = Instant::now();
        let state = self.state.lock();
        self.capacity(&state, self.slot_of(&state, now))
    }

    fn slot_of(&self, state: &BudgetState, now: Instant) -> u64 {
        (now.saturating_duration_since(state.epoch).as_nanos() / self.slot.as_nanos().max(1)) as u64
    }

    fn capacity(&self, state: &BudgetState, slot: u64) -> f64 {
        let recent: u64 = state
            .primaries
            .iter()
            .filter(|&&(s, _)| s + SLOTS as u64 > slot && s <= slot)
            .map(|&(_, count)| count)
            .sum();
        (self.ratio * recent as f64).max(self.min_burst)
    }
}

/// Sleeps until `at`, or forever when there is no hedge to send.
pub async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_freeze_worth_of_hedges_is_allowed_after_steady_traffic() {
        let budget = HedgeBudget::new(0.1, 0.0).with_window(Duration::from_secs(10), 10.0);
        // 10 s at 450 primary calls a second, no hedges.
        for _ in 0..1000 {
            for _ in 0..45 {
                budget.deposit();
            }
            tokio::time::advance(Duration::from_millis(10)).await;
        }
        // A freeze strands 40 calls at once: all are hedged (a bucket
        // capped at 10 would deny 30).
        let granted = (0..40).filter(|_| budget.try_withdraw()).count();
        assert_eq!(granted, 40);
    }

    #[tokio::test(start_paused = true)]
    async fn hedges_stay_within_the_stated_bound_over_every_window() {
        const RATIO: f64 = 0.1;
        const FLOOR: f64 = 1.0;
        const MIN_BURST: f64 = 10.0;
        let window = Duration::from_secs(10);
        let budget = HedgeBudget::new(RATIO, FLOOR).with_window(window, MIN_BURST);
        // Bursty traffic in 10 ms ticks over 60 s, hedges asked for far
        // beyond the budget, in bursts.
        let ticks = 6000u64;
        let mut primaries = vec![0u64; ticks as usize];
        let mut hedges = vec![0u64; ticks as usize];
        for tick in 0..ticks {
            let second = tick / 100;
            let calls = match second % 7 {
                0 | 1 => 20,
                2 => 0,
                3 => 1,
                _ => 5,
            };
            for _ in 0..calls {
                budget.deposit();
            }
            primaries[tick as usize] = calls;
            let asks = if tick % 150 == 0 { 500 } else { calls / 2 };
            hedges[tick as usize] = (0..asks).filter(|_| budget.try_withdraw()).count() as u64;
            tokio::time::advance(Duration::from_millis(10)).await;
        }
        let w = (window.as_millis() / 10) as usize;
        let sum = |v: &[u64], from: usize, to: usize| {
            v[from.min(v.len())..to.min(v.len())].iter().sum::<u64>() as f64
        };
        let mut tightest = f64::INFINITY;
        for start in 0..ticks as usize {
            let end = start + w;
            let extra = sum(&hedges, start, end);
            let cap = (RATIO * sum(&primaries, start.saturating_sub(w), start)).max(MIN_BURST);
            let bound = RATIO * sum(&primaries, start, end) + FLOOR * window.as_secs_f64() + cap;
            assert!(
                extra <= bound + 1e-9,
                "window at tick {start}: {extra} hedges > bound {bound}"
            );
            tightest = tightest.min(bound - extra);
        }
        // The bursts drain the budget, so the bound is nearly reached.
        assert!(
            tightest < MIN_BURST + FLOOR * window.as_secs_f64(),
            "slack {tightest}"
        );
    }
}
