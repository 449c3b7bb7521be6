//! Fan-out of one query to one replica per shard, under a deadline.
//!
//! Per shard: pick a replica by the power of two choices on peak-EWMA load
//! (replicas on probation only get occasional probes), send it what is left
//! of the request's budget as the gRPC deadline, and when the call runs past
//! the shard's recent high percentile send a hedge to another replica, if
//! the hedge budget allows. The first answer wins; the loser is dropped,
//! which cancels it at the leaf, and its elapsed time is still recorded so
//! that the percentile is not biased low. A call that fails in a way another
//! replica may not (unavailable, shed) is retried elsewhere while time
//! allows. At the deadline every call still running is abandoned.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use parking_lot::Mutex;
use proto::leaf::{SearchRequest, SearchResponse};
use rand::Rng;
use tokio::time::Instant;

use crate::leaf_client::CallError;
use crate::load::LatencyWindow;
use crate::metrics::Metrics;
use crate::topology::{Replica, Routing};

/// Switches and figures of the tail-tolerance mechanisms; each can be
/// turned off so that its effect can be measured.
#[derive(Clone, Debug)]
pub struct FanoutConfig {
    /// Power of two choices on load; off means a uniformly random replica.
    pub replica_choice: bool,
    pub hedging: bool,
    /// The shard latency percentile after which a hedge is sent.
    pub hedge_quantile: f64,
    /// Hedges allowed per primary call, on average.
    pub hedge_budget_ratio: f64,
    /// Hedges per second allowed whatever the traffic (the floor).
    pub hedge_budget_floor: f64,
    /// Never hedge earlier than this (protects against a tiny percentile).
    pub hedge_min_delay: Duration,
    /// Retry a failed or shed call on another replica while time allows.
    pub retry: bool,
    pub probation: bool,
    /// A replica whose latency estimate exceeds its peers' by this factor…
    pub probation_factor: f64,
    /// …and by at least this much goes on probation for `probation_time`.
    pub probation_min_gap: Duration,
    pub probation_time: Duration,
    /// Fraction of calls that probe a replica on probation.
    pub probe_fraction: f64,
}

impl Default for FanoutConfig {
    fn default() -> Self {
        FanoutConfig {
            replica_choice: true,
            hedging: true,
            hedge_quantile: 0.95,
            hedge_budget_ratio: 0.05,
            hedge_budget_floor: 1.0,
            hedge_min_delay: Duration::from_millis(1),
            retry: true,
            probation: true,
            probation_factor: 4.0,
            probation_min_gap: Duration::from_millis(10),
            probation_time: Duration::from_secs(10),
            probe_fraction: 0.02,
        }
    }
}

/// How one shard's part of a query ended.
#[derive(Debug)]
pub enum ShardOutcome {
    Answered(SearchResponse),
    TimedOut,
    Failed(CallError),
    /// No replica holds a live lease.
    Unavailable,
}

#[derive(Debug)]
pub struct ShardResult {
    pub shard: u32,
    pub outcome: ShardOutcome,
    pub hedges: u32,
    pub hedge_won: bool,
    /// Time from the start of the fan-out to this shard's outcome.
    pub latency: Duration,
}

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

type CallFuture =
    Pin<Box<dyn std::future::Future<Output = (usize, Result<SearchResponse, CallError>)> + Send>>;

/// The fan-out stage; one per frontend, shared by every request.
pub struct Fanout {
    routing: Arc<Routing>,
    config: FanoutConfig,
    windows: Vec<LatencyWindow>,
    budget: HedgeBudget,
    metrics: Arc<Metrics>,
}

impl Fanout {
    pub fn new(routing: Arc<Routing>, config: FanoutConfig, metrics: Arc<Metrics>) -> Self {
        let windows = (0..routing.shards())
            .map(|_| LatencyWindow::new(1000, config.hedge_quantile))
            .collect();
        let budget = HedgeBudget::new(config.hedge_budget_ratio, config.hedge_budget_floor);
        Fanout {
            routing,
            config,
            windows,
            budget,
            metrics,
        }
    }

    pub fn routing(&self) -> &Arc<Routing> {
        &self.routing
    }

    /// The hedge delay of `shard` now, if hedging would happen.
    pub fn hedge_delay(&self, shard: u32) -> Option<Duration> {
        self.windows
            .get(shard as usize)
            .and_then(LatencyWindow::percentile)
            .map(|p| p.max(self.config.hedge_min_delay))
    }

    /// Queries every shard in parallel and returns one result per shard,
    /// no later than `deadline`.
    pub async fn search(&self, request: &SearchRequest, deadline: Instant) -> Vec<ShardResult> {
        let topology = self.routing.snapshot();
        let started = Instant::now();
        let calls = topology.shards.iter().enumerate().map(|(shard, replicas)| {
            self.search_shard(shard as u32, replicas, request, started, deadline)
        });
        futures::future::join_all(calls).await
    }

    async fn search_shard(
        &self,
        shard: u32,
        replicas: &[Arc<Replica>],
        request: &SearchRequest,
        started: Instant,
        deadline: Instant,
    ) -> ShardResult {
        let result = |outcome, hedges, hedge_won| ShardResult {
            shard,
            outcome,
            hedges,
            hedge_won,
            latency: started.elapsed(),
        };
        if replicas.is_empty() {
            self.metrics.leaf_call(shard, "unavailable", Duration::ZERO);
            return result(ShardOutcome::Unavailable, 0, false);
        }
        let mut tried = vec![false; replicas.len()];
        let mut pending: Vec<(usize, Instant)> = Vec::new();
        let mut calls: FuturesUnordered<CallFuture> = FuturesUnordered::new();
        let Some(primary) = self.choose(replicas, &tried) else {
            return result(ShardOutcome::Unavailable, 0, false);
        };
        self.budget.deposit();
        self.launch(
            replicas,
            primary,
            request,
            deadline,
            &mut tried,
            &mut pending,
            &mut calls,
        );
        // Before a shard has enough samples for a percentile, hedge once
        // half of the budget is gone.
        let mut hedge_at = self.config.hedging.then(|| {
            let delay = self
                .hedge_delay(shard)
                .unwrap_or_else(|| deadline.saturating_duration_since(started) / 2);
            started + delay
        });
        let mut hedges = 0;
        loop {
            let can_hedge = hedge_at.is_some() && tried.iter().any(|t| !t);
            tokio::select! {
                biased;
                Some((index, outcome)) = calls.next() => {
                    let call_started = take_pending(&mut pending, index);
                    let latency = call_started.elapsed();
                    self.observe(shard, &replicas[index], latency);
                    match outcome {
                        Ok(response) => {
                            self.metrics.leaf_call(shard, "ok", latency);
                            let hedge_won = hedges > 0 && index != primary;
                            if hedge_won {
                                self.metrics.hedge_won(shard);
                            }
                            self.abandon(shard, replicas, &pending, "cancelled");
                            return result(ShardOutcome::Answered(response), hedges, hedge_won);
                        }
                        Err(error) => {
                            self.metrics.leaf_call(shard, error.label(), latency);
                            let retry = self.config.retry
                                && error.retryable()
                                && error != CallError::Timeout
                                && deadline.saturating_duration_since(Instant::now())
                                    > Duration::from_millis(1);
                            if retry {
                                if let Some(next) = self.choose(replicas, &tried) {
                                    self.launch(replicas, next, request, deadline, &mut tried, &mut pending, &mut calls);
                                }
                            }
                            if calls.is_empty() {
                                let outcome = match error {
                                    CallError::Timeout => ShardOutcome::TimedOut,
                                    error => ShardOutcome::Failed(error),
                                };
                                return result(outcome, hedges, false);
                            }
                        }
                    }
                }
                () = sleep_until_opt(hedge_at), if can_hedge => {
                    hedge_at = None;
                    if self.budget.try_withdraw() {
                        if let Some(next) = self.choose(replicas, &tried) {
                            hedges += 1;
                            self.metrics.hedge_sent(shard);
                            self.launch(replicas, next, request, deadline, &mut tried, &mut pending, &mut calls);
                        }
                    } else {
                        self.metrics.hedge_denied();
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    self.abandon(shard, replicas, &pending, "timeout");
                    return result(ShardOutcome::TimedOut, hedges, false);
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn launch(
        &self,
        replicas: &[Arc<Replica>],
        index: usize,
        request: &SearchRequest,
        deadline: Instant,
        tried: &mut [bool],
        pending: &mut Vec<(usize, Instant)>,
        calls: &mut FuturesUnordered<CallFuture>,
    ) {
        tried[index] = true;
        let now = Instant::now();
        pending.push((index, now));
        let replica = Arc::clone(&replicas[index]);
        let request = request.clone();
        let budget = deadline.saturating_duration_since(now);
        calls.push(Box::pin(async move {
            let _in_flight = replica.load.start();
            let outcome = replica.client.search(request, budget).await;
            (index, outcome)
        }));
    }

    /// Records the calls still running when the shard's outcome is decided;
    /// dropping their futures cancels them at the leaf.
    fn abandon(
        &self,
        shard: u32,
        replicas: &[Arc<Replica>],
        pending: &[(usize, Instant)],
        label: &str,
    ) {
        for &(index, started) in pending {
            let latency = started.elapsed();
            self.observe(shard, &replicas[index], latency);
            self.metrics.leaf_call(shard, label, latency);
        }
    }

    fn observe(&self, shard: u32, replica: &Replica, latency: Duration) {
        replica.load.observe(latency);
        if let Some(window) = self.windows.get(shard as usize) {
            window.record(latency);
        }
    }

    /// Picks an untried replica: power of two choices among those not on
    /// probation (a small fraction of calls probe one that is).
    fn choose(&self, replicas: &[Arc<Replica>], tried: &[bool]) -> Option<usize> {
        let now = Instant::now();
        if self.config.probation {
            self.update_probation(replicas, now);
        }
        let untried: Vec<usize> = (0..replicas.len()).filter(|&i| !tried[i]).collect();
        if untried.is_empty() {
            return None;
        }
        let mut rng = rand::rng();
        let (healthy, on_probation): (Vec<usize>, Vec<usize>) = untried
            .iter()
            .partition(|&&i| !replicas[i].probation.active(now));
        let candidates = if healthy.is_empty()
            || (!on_probation.is_empty()
                && rng.random_bool(self.config.probe_fraction.clamp(0.0, 1.0)))
        {
            if !healthy.is_empty() {
                self.metrics.probe();
            }
            on_probation
        } else {
            healthy
        };
        let pick =
            |rng: &mut rand::rngs::ThreadRng| candidates[rng.random_range(0..candidates.len())];
        if !self.config.replica_choice || candidates.len() == 1 {
            return Some(pick(&mut rng));
        }
        let a = pick(&mut rng);
        let mut b = pick(&mut rng);
        while b == a {
            b = pick(&mut rng);
        }
        if replicas[a].load.cost() <= replicas[b].load.cost() {
            Some(a)
        } else {
            Some(b)
        }
    }

    /// Puts a replica much slower than the best of its peers on probation,
    /// and lifts probation from one that has recovered.
    fn update_probation(&self, replicas: &[Arc<Replica>], now: Instant) {
        if replicas.len() < 2 {
            return;
        }
        let estimates: Vec<Duration> = replicas.iter().map(|r| r.load.estimate()).collect();
        for (i, replica) in replicas.iter().enumerate() {
            let best_peer = estimates
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .map(|(_, &e)| e)
                .min()
                .unwrap_or_default();
            let slow = estimates[i].as_secs_f64()
                > best_peer.as_secs_f64() * self.config.probation_factor
                && estimates[i] > best_peer + self.config.probation_min_gap;
            if replica.probation.expired(now) {
                // Time served: the replica gets a fresh estimate and real
                // traffic again; one slow answer puts it back.
                replica.probation.lift();
                replica.load.reset(best_peer);
                tracing::info!(address = %replica.member.address, "replica probation ended");
                continue;
            }
            let active = replica.probation.active(now);
            let others_healthy = replicas
                .iter()
                .enumerate()
                .any(|(j, r)| j != i && !r.probation.active(now));
            if slow && !active && others_healthy {
                replica.probation.put_on(now + self.config.probation_time);
                self.metrics.probation_started();
                tracing::warn!(
                    address = %replica.member.address,
                    shard = replica.member.shard,
                    estimate = ?estimates[i],
                    peer = ?best_peer,
                    "replica put on probation"
                );
            } else if !slow && active {
                replica.probation.lift();
                tracing::info!(address = %replica.member.address, "replica restored from probation");
            }
        }
    }
}

fn take_pending(pending: &mut Vec<(usize, Instant)>, index: usize) -> Instant {
    match pending.iter().position(|&(i, _)| i == index) {
        Some(position) => pending.swap_remove(position).1,
        None => Instant::now(),
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
