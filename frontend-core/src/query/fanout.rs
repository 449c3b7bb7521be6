//! Fan-out of one query to one replica per shard, under a deadline.
//!
//! Per shard: pick a replica by the power of two choices on load (replicas
//! on probation only get occasional probes, stuck ones none: see
//! [`crate::query::replica`]), send it what is left of the request's budget
//! as the gRPC deadline, and when the call runs past the shard's recent high
//! percentile send a hedge to another replica, if the hedge budget allows.
//! The first answer wins; the loser is dropped, which cancels it at the
//! leaf, and its elapsed time is still recorded so that the percentile is
//! not biased low. A call that fails in a way another replica may not
//! (unavailable, shed) is retried elsewhere while time allows. At the
//! deadline every call still running is abandoned.
//!
//! The shard's latency window (hedge delay, stuck threshold) learns only
//! from healthy replicas: a call that ends on a replica that was stuck
//! while a peer was not is left out, so that a frozen process cannot push
//! the hedge delay into its freeze. When every replica is slow the samples
//! count, so that the window follows a real slowdown of the whole shard.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use proto::leaf::{SearchRequest, SearchResponse};
use tokio::time::Instant;

use crate::cluster::leaf_client::CallError;
use crate::cluster::load::LatencyWindow;
use crate::cluster::topology::{Replica, Routing};
use crate::metrics::{LeafCallOutcome, Metrics};
use crate::query::hedge::{sleep_until_opt, HedgeBudget};
use crate::query::replica::{self, ReplicaPolicy};

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
    /// The sliding window over which unused hedge allowance is kept: the
    /// budget may hold up to `ratio` × the primary calls of this window, so
    /// that a burst (every call stranded by one freeze) can be hedged.
    pub hedge_budget_window: Duration,
    /// The budget may always hold this many hedges, whatever the traffic.
    pub hedge_budget_min_burst: f64,
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
    /// Keep replicas that owe an answer for too long out of primary choice.
    pub stuck_replicas: bool,
    /// A replica that has owed an answer for longer than this factor × the
    /// shard's healthy high percentile…
    pub stuck_factor: f64,
    /// …and than this floor is stuck: no new primaries until it answers.
    pub stuck_floor: Duration,
    /// Rank replicas with the load they report themselves (C3 score).
    pub server_load: bool,
}

impl Default for FanoutConfig {
    fn default() -> Self {
        FanoutConfig {
            replica_choice: true,
            hedging: true,
            hedge_quantile: 0.95,
            hedge_budget_ratio: 0.1,
            hedge_budget_floor: 1.0,
            hedge_budget_window: Duration::from_secs(10),
            hedge_budget_min_burst: 10.0,
            hedge_min_delay: Duration::from_millis(1),
            retry: true,
            probation: true,
            probation_factor: 4.0,
            probation_min_gap: Duration::from_millis(10),
            probation_time: Duration::from_secs(10),
            probe_fraction: 0.02,
            stuck_replicas: true,
            stuck_factor: 4.0,
            stuck_floor: Duration::from_millis(5),
            server_load: true,
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

/// How one leaf call ended: the replica's index, the outcome, and how long
/// the replica had owed an answer when it gave this one.
type CallOutput = (usize, Result<SearchResponse, CallError>, Option<Duration>);
type CallFuture = Pin<Box<dyn std::future::Future<Output = CallOutput> + Send>>;

/// The stuck threshold before a shard has a latency percentile.
const STUCK_COLD: Duration = Duration::from_millis(100);

/// The fan-out stage; one per frontend, shared by every request.
pub struct Fanout {
    routing: Arc<Routing>,
    config: FanoutConfig,
    windows: Vec<LatencyWindow>,
    budget: HedgeBudget,
    policy: ReplicaPolicy,
    metrics: Arc<Metrics>,
}

impl Fanout {
    pub fn new(routing: Arc<Routing>, config: FanoutConfig, metrics: Arc<Metrics>) -> Self {
        let windows = (0..routing.shards())
            .map(|_| LatencyWindow::new(1000, config.hedge_quantile))
            .collect();
        let budget = HedgeBudget::new(config.hedge_budget_ratio, config.hedge_budget_floor)
            .with_window(config.hedge_budget_window, config.hedge_budget_min_burst);
        let policy = ReplicaPolicy {
            replica_choice: config.replica_choice,
            probation: config.probation,
            probation_factor: config.probation_factor,
            probation_min_gap: config.probation_min_gap,
            probation_time: config.probation_time,
            probe_fraction: config.probe_fraction,
            server_load: config.server_load,
        };
        Fanout {
            routing,
            policy,
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

    /// How long a replica of `shard` may owe an answer before it is stuck:
    /// `stuck_factor` × the shard's healthy percentile, at least
    /// `stuck_floor` (never, with `stuck_replicas` off).
    pub fn stuck_after(&self, shard: u32) -> Duration {
        if !self.config.stuck_replicas {
            return Duration::MAX;
        }
        match self
            .windows
            .get(shard as usize)
            .and_then(LatencyWindow::percentile)
        {
            Some(p) => p.mul_f64(self.config.stuck_factor.max(1.0)),
            None => STUCK_COLD,
        }
        .max(self.config.stuck_floor)
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
            self.metrics
                .leaf_call(shard, LeafCallOutcome::Unavailable, Duration::ZERO);
            return result(ShardOutcome::Unavailable, 0, false);
        }
        let mut tried = vec![false; replicas.len()];
        let mut pending: Vec<(usize, Instant)> = Vec::new();
        let mut calls: FuturesUnordered<CallFuture> = FuturesUnordered::new();
        let Some(primary) = replica::choose(
            &self.policy,
            &self.metrics,
            replicas,
            &tried,
            self.stuck_after(shard),
        ) else {
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
                Some((index, outcome, waited)) = calls.next() => {
                    let call_started = take_pending(&mut pending, index);
                    let latency = call_started.elapsed();
                    let stalled = waited.is_some_and(|w| self.stalled(shard, replicas, index, w));
                    self.observe(shard, &replicas[index], latency, stalled);
                    match outcome {
                        Ok(response) => {
                            replicas[index].load.observe_server(
                                response.queued.saturating_add(response.in_flight),
                                Duration::from_micros(response.service_us),
                            );
                            self.metrics.leaf_call(shard, LeafCallOutcome::Ok, latency);
                            let hedge_won = hedges > 0 && index != primary;
                            if hedge_won {
                                self.metrics.hedge_won(shard);
                            }
                            self.abandon(shard, replicas, &pending, LeafCallOutcome::Cancelled);
                            return result(ShardOutcome::Answered(response), hedges, hedge_won);
                        }
                        Err(error) => {
                            self.metrics.leaf_call(shard, error.outcome(), latency);
                            let retry = self.config.retry
                                && error.retryable()
                                && error != CallError::Timeout
                                && deadline.saturating_duration_since(Instant::now())
                                    > Duration::from_millis(1);
                            if retry {
                                if let Some(next) = replica::choose(&self.policy, &self.metrics, replicas, &tried, self.stuck_after(shard)) {
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
                        if let Some(next) = replica::choose(&self.policy, &self.metrics, replicas, &tried, self.stuck_after(shard)) {
                            hedges += 1;
                            self.metrics.hedge_sent(shard);
                            self.launch(replicas, next, request, deadline, &mut tried, &mut pending, &mut calls);
                        }
                    } else {
                        self.metrics.hedge_denied();
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    self.abandon(shard, replicas, &pending, LeafCallOutcome::Timeout);
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
            let in_flight = replica.load.start();
            let outcome = replica.client.search(request, budget).await;
            // A timeout is the caller giving up, not an answer: the replica
            // still owes one.
            let waited = replica.load.waiting_for(Instant::now());
            if !matches!(outcome, Err(CallError::Timeout)) {
                in_flight.answered();
            }
            (index, outcome, waited)
        }));
    }

    /// Records the calls still running when the shard's outcome is decided;
    /// dropping their futures cancels them at the leaf.
    fn abandon(
        &self,
        shard: u32,
        replicas: &[Arc<Replica>],
        pending: &[(usize, Instant)],
        outcome: LeafCallOutcome,
    ) {
        let now = Instant::now();
        for &(index, started) in pending {
            let latency = started.elapsed();
            let stalled = replicas[index]
                .load
                .waiting_for(now)
                .is_some_and(|w| self.stalled(shard, replicas, index, w));
            self.observe(shard, &replicas[index], latency, stalled);
            self.metrics.leaf_call(shard, outcome, latency);
        }
    }

    /// Whether a call of replica `index`, which had owed an answer for
    /// `waited`, ended in a stall: it was stuck while a peer was not.
    fn stalled(
        &self,
        shard: u32,
        replicas: &[Arc<Replica>],
        index: usize,
        waited: Duration,
    ) -> bool {
        let stuck_after = self.stuck_after(shard);
        let now = Instant::now();
        waited > stuck_after
            && replicas
                .iter()
                .enumerate()
                .any(|(j, r)| j != index && !replica::is_stuck(r, stuck_after, now))
    }

    /// Feeds a call's latency to the replica's estimate, and to the shard's
    /// window unless the call ended in a stall.
    fn observe(&self, shard: u32, replica: &Replica, latency: Duration, stalled: bool) {
        replica.load.observe(latency);
        if stalled {
            return;
        }
        if let Some(window) = self.windows.get(shard as usize) {
            window.record(latency);
        }
    }
}

fn take_pending(pending: &mut Vec<(usize, Instant)>, index: usize) -> Instant {
    match pending.iter().position(|&(i, _)| i == index) {
        Some(position) => pending.swap_remove(position).1,
        None => Instant::now(),
    }
}

#[cfg(test)]
mod tests;
