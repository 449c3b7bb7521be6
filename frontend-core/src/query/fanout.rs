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
//! The same machinery ([`Fanout::call`]) carries every other leaf call on
//! the query path: the term-statistics round trip, a first-seen query's
//! `Info` probe and canary. So no stage before the fan-out waits for a
//! frozen replica either: each picks its replica with the stuck rule, is
//! hedged after the delay learned for its kind of call (its own window per
//! shard), and draws on the same hedge budget.
//!
//! The shard's latency window (hedge delay, stuck threshold) learns only
//! from healthy replicas: a call that ends on a replica that was stuck
//! while a peer was not is left out, so that a frozen process cannot push
//! the hedge delay into its freeze. When every replica is slow the samples
//! count, so that the window follows a real slowdown of the whole shard.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt, Shared};
use futures::stream::{FuturesUnordered, StreamExt};
use proto::leaf::{SearchRequest, SearchResponse};
use tokio::time::Instant;

use crate::cluster::leaf_client::{shard_answer, CallError, LeafService};
use crate::cluster::load::LatencyWindow;
use crate::cluster::topology::{Replica, Routing};
use crate::metrics::{LeafCallOutcome, Metrics};
use crate::query::hedge::{sleep_until_opt, HedgeBudget};
use crate::query::replica::{self, ReplicaPolicy, StuckRule};

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
    /// Also keep out a replica that is silent: it has owed an answer for
    /// longer than `silent_factor` × the shard's healthy high percentile
    /// (and `silent_floor`) and answered nothing at all for as long.
    pub silent_replicas: bool,
    pub silent_factor: f64,
    pub silent_floor: Duration,
    /// Rank replicas with the load they report themselves (C3 score).
    pub server_load: bool,
    /// Search the shards whose primaries are one process (a leaf serving
    /// several shards) with one `SearchShards` call, and prefer, for a
    /// shard, a replica in a process already chosen for another shard.
    pub batch_shards: bool,
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
            silent_replicas: true,
            silent_factor: 1.0,
            silent_floor: Duration::from_millis(2),
            server_load: true,
            batch_shards: true,
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

/// Which leaf RPC a call on the query path is. Each kind has its own
/// latency window per shard, so that its hedge delay is learned from calls
/// of its own kind; every kind gets the same replica choice, stuck rule,
/// hedging and budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallKind {
    /// A shard's part of the fan-out.
    Search,
    /// A first-seen query's canary (a search; the search window).
    Canary,
    /// `TermStats` for global term statistics.
    Stats,
    /// `Info`, telling a live replica before a canary.
    Probe,
}

impl CallKind {
    /// The `call` label of `frontend_side_calls_total`.
    pub fn label(self) -> &'static str {
        match self {
            CallKind::Search => "search",
            CallKind::Canary => "canary",
            CallKind::Stats => "stats",
            CallKind::Probe => "probe",
        }
    }

    fn window(self) -> usize {
        match self {
            CallKind::Search | CallKind::Canary => 0,
            CallKind::Stats => 1,
            CallKind::Probe => 2,
        }
    }
}

/// Latency windows per shard: search, stats, probe.
const WINDOWS: usize = 3;

/// How a call to one shard may go, beyond what every call gets (replica
/// choice with the stuck rule, hedging within the budget).
#[derive(Clone, Debug)]
pub struct CallPlan {
    pub kind: CallKind,
    /// Retry a failure another replica may not have on another replica.
    pub retry: bool,
    /// Hedge only when every replica called has answered nothing at all
    /// for the last hedge delay (and since its call was sent): it looks
    /// frozen, not busy with this very call (a canary: a query of death
    /// that takes a while to kill must not reach a second replica).
    pub hedge_only_if_silent: bool,
    /// Replicas that must not be called (`true`), e.g. on another
    /// generation.
    pub excluded: Vec<bool>,
    /// The replica of the first call, instead of replica choice's pick.
    pub first: Option<usize>,
}

impl CallPlan {
    pub fn new(kind: CallKind) -> Self {
        CallPlan {
            kind,
            retry: true,
            hedge_only_if_silent: false,
            excluded: Vec::new(),
            first: None,
        }
    }
}

/// How a call to one shard ended.
#[derive(Debug)]
pub enum Called<T> {
    Answered {
        replica: usize,
        value: T,
    },
    TimedOut,
    Failed(CallError),
    /// No replica to call.
    Unavailable,
}

/// A call to one shard: its outcome and what it took.
#[derive(Debug)]
pub struct CallReport<T> {
    pub outcome: Called<T>,
    pub hedges: u32,
    pub hedge_won: bool,
    /// The calls that failed (timeouts aside), in the order they ended.
    pub failures: Vec<Failure>,
}

/// One call that failed.
#[derive(Debug)]
pub struct Failure {
    pub replica: usize,
    pub error: CallError,
    /// Whether the replica had answered some call in the second before this
    /// one was sent (so that it was alive then).
    pub alive_before: bool,
}

/// How long before a call an answer shows that the replica was alive.
const ALIVE_WINDOW: Duration = Duration::from_secs(1);

/// How one leaf call ended: the replica's index, the outcome, and how long
/// the replica had owed an answer when it gave this one.
type CallOutput<T> = (usize, Result<T, CallError>, Option<Duration>);
type CallFuture<T> = Pin<Box<dyn std::future::Future<Output = CallOutput<T>> + Send>>;

/// A call sent and not ended: replica, when, whether that replica had
/// answered within [`ALIVE_WINDOW`] before.
type Pending = (usize, Instant, bool);

/// What a call shared by several shards of one process (`SearchShards`,
/// `TermStatsShards`) gives: each shard's outcome, by shard.
pub type BatchOutput<T> = Result<Arc<Vec<(u32, Result<T, CallError>)>>, CallError>;

/// How `shard`'s part of a shared call ended: the call's error, or its
/// part's (a shard the answer leaves out counts as answered with it).
fn part_outcome<T>(output: &BatchOutput<T>, shard: u32) -> Result<(), CallError> {
    match output {
        Err(error) => Err(error.clone()),
        Ok(parts) => parts
            .iter()
            .find(|(id, _)| *id == shard)
            .map_or(Ok(()), |(_, part)| {
                part.as_ref().map(|_| ()).map_err(Clone::clone)
            }),
    }
}

/// A shard's part in a call shared by several shards of one process: the
/// call is made once, awaited by each, and cancelled when every one of
/// them has dropped its part.
#[derive(Clone)]
pub struct Batched<T> {
    /// The shard's primary, whose call this is.
    primary: Arc<Replica>,
    shared: Shared<BoxFuture<'static, BatchOutput<T>>>,
}

impl<T: Clone + Send + Sync + 'static> Batched<T> {
    /// The call to `replica` when it is the shard's primary: its part of
    /// the shared call. Any other replica (a hedge, a retry) gets None and
    /// a call of its own.
    pub fn part(
        &self,
        replica: &Arc<Replica>,
        shard: u32,
    ) -> Option<BoxFuture<'static, Result<T, CallError>>> {
        if !Arc::ptr_eq(replica, &self.primary) {
            return None;
        }
        let shared = self.shared.clone();
        Some(
            async move {
                let parts = shared.await?;
                parts
                    .iter()
                    .find(|(s, _)| *s == shard)
                    .map(|(_, outcome)| outcome.clone())
                    .unwrap_or_else(|| {
                        Err(CallError::Failed(format!("no answer for shard {shard}")))
                    })
            }
            .boxed(),
        )
    }
}

/// The stuck threshold before a shard has a latency percentile.
const STUCK_COLD: Duration = Duration::from_millis(100);

/// The fan-out stage; one per frontend, shared by every request.
pub struct Fanout {
    routing: Arc<Routing>,
    config: FanoutConfig,
    /// Per kind of call (see [`CallKind`]), per shard.
    windows: [Vec<LatencyWindow>; WINDOWS],
    budget: HedgeBudget,
    policy: ReplicaPolicy,
    metrics: Arc<Metrics>,
}

impl Fanout {
    pub fn new(routing: Arc<Routing>, config: FanoutConfig, metrics: Arc<Metrics>) -> Self {
        let windows = std::array::from_fn(|_| {
            (0..routing.shards())
                .map(|_| LatencyWindow::new(1000, config.hedge_quantile))
                .collect()
        });
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

    /// The hedge delay of `shard`'s searches now, if hedging would happen.
    pub fn hedge_delay(&self, shard: u32) -> Option<Duration> {
        self.hedge_delay_of(CallKind::Search, shard)
    }

    /// The hedge delay of `kind` calls to `shard`: their own percentile, or
    /// before it is known the searches'.
    pub fn hedge_delay_of(&self, kind: CallKind, shard: u32) -> Option<Duration> {
        self.percentile(kind, shard)
            .or_else(|| self.percentile(CallKind::Search, shard))
            .map(|p| p.max(self.config.hedge_min_delay))
    }

    fn percentile(&self, kind: CallKind, shard: u32) -> Option<Duration> {
        self.windows[kind.window()]
            .get(shard as usize)
            .and_then(LatencyWindow::percentile)
    }

    /// How long a replica of `shard` may owe an answer before it is stuck:
    /// `stuck_factor` × the shard's healthy percentile (the highest of its
    /// kinds of call), at least `stuck_floor` (never, with `stuck_replicas`
    /// off).
    pub fn stuck_after(&self, shard: u32) -> Duration {
        if !self.config.stuck_replicas {
            return Duration::MAX;
        }
        self.healthy_percentile(shard)
            .map_or(STUCK_COLD, |p| p.mul_f64(self.config.stuck_factor.max(1.0)))
            .max(self.config.stuck_floor)
    }

    /// The stuck rule of replica choice for `shard`: [`Self::stuck_after`],
    /// and silence after `silent_factor` × the healthy percentile (at least
    /// `silent_floor`, never later than `stuck_after`).
    pub fn stuck_rule(&self, shard: u32) -> StuckRule {
        let after = self.stuck_after(shard);
        if !(self.config.stuck_replicas && self.config.silent_replicas) {
            return StuckRule::owing(after);
        }
        let silent_after = self
            .healthy_percentile(shard)
            .map_or(STUCK_COLD, |p| {
                p.mul_f64(self.config.silent_factor.max(0.0))
            })
            .max(self.config.silent_floor)
            .min(after);
        StuckRule {
            after,
            silent_after,
        }
    }

    /// The highest of `shard`'s healthy percentiles over the kinds of call
    /// a replica answers at once (not canaries, which may be slow queries).
    fn healthy_percentile(&self, shard: u32) -> Option<Duration> {
        [CallKind::Search, CallKind::Stats, CallKind::Probe]
            .into_iter()
            .filter_map(|kind| self.percentile(kind, shard))
            .max()
    }

    /// Queries every shard in parallel and returns one result per shard,
    /// no later than `deadline`. Shards whose primaries are one process
    /// share one `SearchShards` call ([`FanoutConfig::batch_shards`]); a
    /// hedge or a retry is always a call to one shard.
    pub async fn search(&self, request: &SearchRequest, deadline: Instant) -> Vec<ShardResult> {
        let topology = self.routing.snapshot();
        let started = Instant::now();
        let primaries = self.primaries(&topology.shards, &[]);
        let budget = deadline.saturating_duration_since(started);
        let batches = self.batches(&topology.shards, &primaries, |client, shards| {
            let request = request.clone();
            async move {
                let answers = client.search_shards(request, shards, budget).await?;
                Ok(Arc::new(
                    answers
                        .into_iter()
                        .map(|answer| (answer.shard, shard_answer(answer)))
                        .collect(),
                ))
            }
            .boxed()
        });
        let calls = topology.shards.iter().enumerate().map(|(shard, replicas)| {
            let plan = CallPlan {
                first: primaries[shard],
                ..CallPlan::new(CallKind::Search)
            };
            let batch = batches[shard].clone();
            self.search_shard(
                shard as u32,
                replicas,
                request,
                (plan, batch),
                started,
                deadline,
            )
        });
        futures::future::join_all(calls).await
    }

    /// Each shard's primary by replica choice, never one `excluded` (per
    /// shard, per replica; missing: none). With batching, a shard whose
    /// choice is a process no earlier shard chose takes instead a replica
    /// in a process already chosen, when that replica is neither excluded,
    /// stuck nor on probation: the process is the unit of load, and one
    /// call to it costs less than one per shard.
    pub fn primaries(
        &self,
        shards: &[Vec<Arc<Replica>>],
        excluded: &[Vec<bool>],
    ) -> Vec<Option<usize>> {
        let now = Instant::now();
        let mut chosen: Vec<Option<usize>> = Vec::with_capacity(shards.len());
        // The processes chosen so far, by address.
        let mut processes: HashSet<&str> = HashSet::new();
        for (shard, replicas) in shards.iter().enumerate() {
            let rule = self.stuck_rule(shard as u32);
            let tried: Vec<bool> = (0..replicas.len())
                .map(|i| {
                    excluded
                        .get(shard)
                        .and_then(|e| e.get(i))
                        .copied()
                        .unwrap_or(false)
                })
                .collect();
            let pick = replica::choose(&self.policy, &self.metrics, replicas, &tried, rule);
            let pick = match pick {
                Some(i)
                    if self.config.batch_shards
                        && !processes.contains(replicas[i].member.address.as_str()) =>
                {
                    replicas
                        .iter()
                        .enumerate()
                        .position(|(j, r)| {
                            !tried[j]
                                && processes.contains(r.member.address.as_str())
                                && !replica::is_stuck(r, rule, now)
                                && !r.probation.active(now)
                        })
                        .or(Some(i))
                }
                pick => pick,
            };
            if let Some(i) = pick {
                processes.insert(replicas[i].member.address.as_str());
            }
            chosen.push(pick);
        }
        chosen
    }

    /// One shared call, made by `call` with the process's client and the
    /// shards it carries, per process that is the primary of two shards or
    /// more; each of those shards gets it (None elsewhere, and everywhere
    /// with batching off).
    pub fn batches<T, F>(
        &self,
        shards: &[Vec<Arc<Replica>>],
        primaries: &[Option<usize>],
        call: F,
    ) -> Vec<Option<Batched<T>>>
    where
        T: Clone + Send + Sync + 'static,
        F: Fn(Arc<dyn LeafService>, Vec<u32>) -> BoxFuture<'static, BatchOutput<T>>,
    {
        let mut batches: Vec<Option<Batched<T>>> = vec![None; shards.len()];
        if !self.config.batch_shards {
            return batches;
        }
        // The shards of each process chosen, in shard order.
        let mut groups: Vec<(&Arc<Replica>, Vec<usize>)> = Vec::new();
        let mut group_of: HashMap<&str, usize> = HashMap::new();
        for (shard, pick) in primaries.iter().enumerate() {
            let Some(replica) = pick.map(|i| &shards[shard][i]) else {
                continue;
            };
            match group_of.get(replica.member.address.as_str()) {
                Some(&group) => groups[group].1.push(shard),
                None => {
                    group_of.insert(replica.member.address.as_str(), groups.len());
                    groups.push((replica, vec![shard]));
                }
            }
        }
        for (replica, members) in groups {
            if members.len() < 2 {
                continue;
            }
            self.metrics.shard_batches.inc();
            self.metrics.shard_batch_shards.inc_by(members.len() as u64);
            let ids = members.iter().map(|&s| s as u32).collect();
            // The call goes through the first shard's client; every other
            // shard's replica learns from its part too (a long silence
            // ended, say), as from a call of its own.
            let others: Vec<Arc<Replica>> = members[1..]
                .iter()
                .filter_map(|&member| primaries[member].map(|i| Arc::clone(&shards[member][i])))
                .collect();
            let started = Instant::now();
            let call = call(Arc::clone(&replica.client), ids);
            let shared = async move {
                let output = call.await;
                for other in &others {
                    other
                        .client
                        .note_shared(part_outcome(&output, other.member.shard), started);
                }
                output
            }
            .boxed()
            .shared();
            for member in members {
                batches[member] = primaries[member].map(|i| Batched {
                    primary: Arc::clone(&shards[member][i]),
                    shared: shared.clone(),
                });
            }
        }
        batches
    }

    async fn search_shard(
        &self,
        shard: u32,
        replicas: &[Arc<Replica>],
        request: &SearchRequest,
        (plan, batch): (CallPlan, Option<Batched<SearchResponse>>),
        started: Instant,
        deadline: Instant,
    ) -> ShardResult {
        let report = self
            .call(shard, replicas, &plan, deadline, |replica, budget| {
                if let Some(part) = batch.as_ref().and_then(|b| b.part(&replica, shard)) {
                    return part;
                }
                let request = request.clone();
                async move { replica.client.search(request, budget).await }.boxed()
            })
            .await;
        let outcome = match report.outcome {
            Called::Answered { replica, value } => {
                replicas[replica].load.observe_server(
                    value.queued.saturating_add(value.in_flight),
                    Duration::from_micros(value.service_us),
                );
                ShardOutcome::Answered(value)
            }
            Called::TimedOut => ShardOutcome::TimedOut,
            Called::Failed(error) => ShardOutcome::Failed(error),
            Called::Unavailable => ShardOutcome::Unavailable,
        };
        ShardResult {
            shard,
            outcome,
            hedges: report.hedges,
            hedge_won: report.hedge_won,
            latency: started.elapsed(),
        }
    }

    /// One call to one replica of `shard`, no later than `deadline`: the
    /// replica by choice (or `plan.first`), a hedge to another when the call
    /// runs past the hedge delay of its kind and the budget allows, a retry
    /// elsewhere of a failure another replica may not have. The first answer
    /// wins; the others are dropped, which cancels them at the leaf. Every
    /// call on the query path (search, stats, canary, probe) goes through
    /// here, so that none waits for a frozen replica.
    pub async fn call<T, F, Fut>(
        &self,
        shard: u32,
        replicas: &[Arc<Replica>],
        plan: &CallPlan,
        deadline: Instant,
        call: F,
    ) -> CallReport<T>
    where
        T: Send + 'static,
        F: Fn(Arc<Replica>, Duration) -> Fut,
        Fut: std::future::Future<Output = Result<T, CallError>> + Send + 'static,
    {
        let kind = plan.kind;
        let started = Instant::now();
        let mut report = CallReport {
            outcome: Called::Unavailable,
            hedges: 0,
            hedge_won: false,
            failures: Vec::new(),
        };
        if replicas.is_empty() {
            self.count(
                kind,
                shard,
                "primary",
                Some((LeafCallOutcome::Unavailable, Duration::ZERO)),
            );
            return report;
        }
        let mut tried: Vec<bool> = (0..replicas.len())
            .map(|i| plan.excluded.get(i).copied().unwrap_or(false))
            .collect();
        let primary = plan
            .first
            .filter(|&i| i < replicas.len() && !tried[i])
            .or_else(|| {
                replica::choose(
                    &self.policy,
                    &self.metrics,
                    replicas,
                    &tried,
                    self.stuck_rule(shard),
                )
            });
        let Some(primary) = primary else {
            return report;
        };
        let mut pending: Vec<Pending> = Vec::new();
        let mut calls: FuturesUnordered<CallFuture<T>> = FuturesUnordered::new();
        self.budget.deposit();
        self.count(kind, shard, "primary", None);
        self.launch(
            replicas,
            primary,
            &call,
            deadline,
            &mut tried,
            &mut pending,
            &mut calls,
        );
        // Before a shard has enough samples for a percentile, hedge once
        // half of the budget is gone.
        let delay = || {
            self.hedge_delay_of(kind, shard)
                .unwrap_or_else(|| deadline.saturating_duration_since(started) / 2)
        };
        let mut hedge_at = self.config.hedging.then(|| started + delay());
        loop {
            let can_hedge = hedge_at.is_some() && tried.iter().any(|t| !t);
            tokio::select! {
                biased;
                Some((index, outcome, waited)) = calls.next() => {
                    let (call_started, alive_before) = take_pending(&mut pending, index);
                    let latency = call_started.elapsed();
                    let stalled = waited.is_some_and(|w| self.stalled(shard, replicas, index, w));
                    self.observe(kind, shard, &replicas[index], latency, stalled);
                    match outcome {
                        Ok(value) => {
                            self.count(kind, shard, "", Some((LeafCallOutcome::Ok, latency)));
                            report.hedge_won = report.hedges > 0 && index != primary;
                            if report.hedge_won && kind == CallKind::Search {
                                self.metrics.hedge_won(shard);
                            }
                            self.abandon(kind, shard, replicas, &pending, LeafCallOutcome::Cancelled);
                            report.outcome = Called::Answered { replica: index, value };
                            return report;
                        }
                        Err(error) => {
                            self.count(kind, shard, "", Some((error.outcome(), latency)));
                            let retry = plan.retry
                                && self.config.retry
                                && error.retryable()
                                && error != CallError::Timeout
                                && deadline.saturating_duration_since(Instant::now())
                                    > Duration::from_millis(1);
                            if retry {
                                if let Some(next) = replica::choose(&self.policy, &self.metrics, replicas, &tried, self.stuck_rule(shard)) {
                                    self.count(kind, shard, "retry", None);
                                    self.launch(replicas, next, &call, deadline, &mut tried, &mut pending, &mut calls);
                                }
                            }
                            if error != CallError::Timeout {
                                report.failures.push(Failure { replica: index, error: error.clone(), alive_before });
                            }
                            if calls.is_empty() {
                                report.outcome = match error {
                                    CallError::Timeout => Called::TimedOut,
                                    error => Called::Failed(error),
                                };
                                return report;
                            }
                        }
                    }
                }
                () = sleep_until_opt(hedge_at), if can_hedge => {
                    hedge_at = None;
                    // Silent: no answer at all for the last hedge delay
                    // (nor since the call was sent).
                    let silence = delay().max(self.config.hedge_min_delay);
                    let now = Instant::now();
                    let busy = plan.hedge_only_if_silent
                        && pending.iter().any(|&(i, sent, _)| {
                            let since = now.checked_sub(silence).map_or(sent, |t| t.max(sent));
                            replicas[i].load.answered_since(since)
                        });
                    if busy {
                        // Answering other calls, so busy with this one
                        // rather than frozen: look again a delay later.
                        hedge_at = Some(now + silence);
                    } else if self.budget.try_withdraw() {
                        if let Some(next) = replica::choose(&self.policy, &self.metrics, replicas, &tried, self.stuck_rule(shard)) {
                            report.hedges += 1;
                            if kind == CallKind::Search {
                                self.metrics.hedge_sent(shard);
                            }
                            self.count(kind, shard, "hedge", None);
                            self.launch(replicas, next, &call, deadline, &mut tried, &mut pending, &mut calls);
                        }
                    } else {
                        self.metrics.hedge_denied();
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    self.abandon(kind, shard, replicas, &pending, LeafCallOutcome::Timeout);
                    report.outcome = Called::TimedOut;
                    return report;
                }
            }
        }
    }

    /// Counts a call: searches in `frontend_leaf_calls_total` (by outcome,
    /// when it ended), the other kinds in `frontend_side_calls_total` (by
    /// role, when it was sent).
    fn count(
        &self,
        kind: CallKind,
        shard: u32,
        role: &str,
        ended: Option<(LeafCallOutcome, Duration)>,
    ) {
        match (kind, ended) {
            (CallKind::Search, Some((outcome, latency))) => {
                self.metrics.leaf_call(shard, outcome, latency)
            }
            (CallKind::Search, None) | (_, Some(_)) => {}
            (kind, None) => self
                .metrics
                .side_calls
                .with_label_values(&[kind.label(), role])
                .inc(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn launch<T, F, Fut>(
        &self,
        replicas: &[Arc<Replica>],
        index: usize,
        call: &F,
        deadline: Instant,
        tried: &mut [bool],
        pending: &mut Vec<Pending>,
        calls: &mut FuturesUnordered<CallFuture<T>>,
    ) where
        T: Send + 'static,
        F: Fn(Arc<Replica>, Duration) -> Fut,
        Fut: std::future::Future<Output = Result<T, CallError>> + Send + 'static,
    {
        tried[index] = true;
        let now = Instant::now();
        let replica = Arc::clone(&replicas[index]);
        let alive_before = replica
            .load
            .answered_since(now.checked_sub(ALIVE_WINDOW).unwrap_or(now));
        pending.push((index, now, alive_before));
        let budget = deadline.saturating_duration_since(now);
        let call = call(Arc::clone(&replica), budget);
        calls.push(Box::pin(async move {
            let in_flight = replica.load.start();
            let outcome = call.await;
            // A timeout is the caller giving up, and a transport failure
            // (a connection closed by its keep-alive, a connect that failed)
            // no word from the process: the replica still owes an answer.
            let waited = replica.load.waiting_for(Instant::now());
            if outcome.as_ref().err().is_none_or(CallError::from_replica) {
                in_flight.answered();
            }
            (index, outcome, waited)
        }));
    }

    /// Records the calls still running when the shard's outcome is decided;
    /// dropping their futures cancels them at the leaf.
    fn abandon(
        &self,
        kind: CallKind,
        shard: u32,
        replicas: &[Arc<Replica>],
        pending: &[Pending],
        outcome: LeafCallOutcome,
    ) {
        let now = Instant::now();
        for &(index, started, _) in pending {
            let latency = started.elapsed();
            let stalled = replicas[index]
                .load
                .waiting_for(now)
                .is_some_and(|w| self.stalled(shard, replicas, index, w));
            self.observe(kind, shard, &replicas[index], latency, stalled);
            self.count(kind, shard, "", Some((outcome, latency)));
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
            && replicas.iter().enumerate().any(|(j, r)| {
                j != index && !replica::is_stuck(r, StuckRule::owing(stuck_after), now)
            })
    }

    /// Feeds a search's latency to the replica's estimate, and any call's
    /// to the shard's window of its kind unless the call ended in a stall.
    fn observe(
        &self,
        kind: CallKind,
        shard: u32,
        replica: &Replica,
        latency: Duration,
        stalled: bool,
    ) {
        if matches!(kind, CallKind::Search | CallKind::Canary) {
            replica.load.observe(latency);
        }
        if stalled {
            return;
        }
        if let Some(window) = self.windows[kind.window()].get(shard as usize) {
            window.record(latency);
        }
    }
}

fn take_pending(pending: &mut Vec<Pending>, index: usize) -> (Instant, bool) {
    match pending.iter().position(|&(i, _, _)| i == index) {
        Some(position) => {
            let (_, started, alive_before) = pending.swap_remove(position);
            (started, alive_before)
        }
        None => (Instant::now(), false),
    }
}

#[cfg(test)]
mod tests;
