//! Hedging: a second call to another replica when the first runs past the
//! shard's recent high percentile, within a budget.
//!
//! The budget is a token bucket ([`HedgeBudget`]), so that hedging cannot
//! double the load when every replica slows down at once. The fan-out
//! ([`crate::query::fanout`]) decides when to hedge and records the loser's
//! latency too, so that the percentile is not biased low.

use parking_lot::Mutex;
use tokio::time::Instant;

/// A token bucket for hedges: each primary call deposits `ratio`, time
/// deposits `floor` per second, a hedge withdraws one. It holds when every
/// replica slows down at once, which is when unbounded hedging would double
/// the load on an already overloaded tier.
pub struct HedgeBudget {
    state: Mutex<(f64, Instant)>,
    ratio: f64,
    floor_per_sec: f64,
    max_balance: f64,
}

impl HedgeBudget {
    pub fn new(ratio: f64, floor_per_sec: f64) -> Self {
        HedgeBudget {
            state: Mutex::new((1.0, Instant::now())),
            ratio: ratio.max(0.0),
            floor_per_sec: floor_per_sec.max(0.0),
            max_balance: 10.0_f64.max(floor_per_sec),
        }
    }

    pub fn deposit(&self) {
        let mut state = self.state.lock();
        state.0 = (state.0 + self.ratio).min(self.max_balance);
    }

    pub fn try_withdraw(&self) -> bool {
        let now = Instant::now();
        let mut state = self.state.lock();
        let elapsed = now.saturating_duration_since(state.1).as_secs_f64();
        state.0 = (state.0 + elapsed * self.floor_per_sec).min(self.max_balance);
        state.1 = now;
        if state.0 >= 1.0 {
            state.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Sleeps until `at`, or forever when there is no hedge to send.
pub async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
