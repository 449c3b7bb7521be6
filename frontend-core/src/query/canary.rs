//! Canary requests against queries of death (Dean & Barroso, "The Tail at
//! Scale"): a query the frontend has not seen answered goes first to one
//! replica of one shard, and the fan-out to every shard follows only when
//! that canary answers.
//!
//! The canary's verdict is one of three: it answered (the query is then
//! remembered as known-good and later requests skip the canary); it ended
//! with an ordinary error such as a deadline or a shed call (the fan-out
//! follows, nothing is remembered); or the replica died on it (the call
//! failed as a vanished process's does, and a probe of the same replica
//! finds nobody there). A query whose canary died is refused with
//! [`QueryError::QueryRejected`] for [`CanaryConfig::reject_for`], logged
//! with its [`fingerprint`] only, and counted.
//!
//! Identical first-seen queries in flight share one canary (a
//! [`Coalescer`] by fingerprint), so that a burst of a deadly query cannot
//! send two canaries.
//!
//! The probe and the canary are calls of the fan-out's ([`Fanout::call`]),
//! so that neither waits for a frozen replica: the replica is picked with
//! the stuck rule, the probe is hedged and retried like any call, and a
//! canary that runs past the search hedge delay is hedged to another
//! replica of its shard, but only once the first has answered nothing at
//! all for a hedge delay since the canary was sent (a frozen process; a
//! live one busy with the canary answers its other calls). A canary that is merely slow is
//! not a dead one: only a failure followed by a failed probe is.
//!
//! **Invariant:** a query of death takes down at most one replica in the
//! whole cluster: no leaf sees a query before its canary has answered, at
//! most one canary per query is in flight (plus its hedge, sent only to
//! replace a replica that has gone silent, i.e. looks frozen),
//! and a query whose canary died is refused without reaching any leaf.
//! The one exception: a query that makes a replica hang for longer than
//! the hedge delay, answering nothing else meanwhile, before it dies may
//! take its hedge's replica too.

use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;
use proto::leaf::SearchRequest;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use crate::cluster::cache_client::normalize;
use crate::cluster::leaf_client::CallError;
use crate::cluster::topology::{Replica, Topology};
use crate::metrics::Metrics;
use crate::query::coalesce::Coalescer;
use crate::query::error::QueryError;
use crate::query::fanout::{CallKind, CallPlan, Called, Fanout};

/// Whether and how canaries run.
#[derive(Clone, Debug)]
pub struct CanaryConfig {
    pub enabled: bool,
    /// Fingerprints of known-good queries kept (least recently used go).
    pub known_good: u64,
    /// How long a query whose canary died is refused.
    pub reject_for: Duration,
    /// The canary's share of the request's time left, so that the fan-out
    /// still fits after a slow canary.
    pub budget_fraction: f64,
    /// The longest wait for the probe that tells a dead replica from an
    /// ordinary failure.
    pub probe_budget: Duration,
}

impl Default for CanaryConfig {
    fn default() -> Self {
        CanaryConfig {
            enabled: true,
            known_good: 100_000,
            reject_for: Duration::from_secs(600),
            budget_fraction: 0.3,
            probe_budget: Duration::from_millis(100),
        }
    }
}

/// How a canary ended; the `outcome` label of `frontend_canaries_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// The replica answered: the query is known-good.
    Answered,
    /// An ordinary error (deadline, shed, bad query, no replica): the
    /// fan-out follows, but the query is not remembered.
    OrdinaryError,
    /// The replica vanished while serving it: a query of death.
    Died,
}

impl Verdict {
    pub const ALL: &'static [Verdict] = &[Verdict::Answered, Verdict::OrdinaryError, Verdict::Died];

    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Answered => "answered",
            Verdict::OrdinaryError => "ordinary_error",
            Verdict::Died => "died",
        }
    }
}

/// The fingerprint of a query: a hash of its normalized text (case and
/// white space folded), stable across processes and builds (FNV-1a), so
/// that logs of several frontends can be matched without the text.
pub fn fingerprint(query: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    normalize(query).bytes().fold(OFFSET, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    })
}

/// A bounded memory of fingerprints: known-good queries, and refused ones
/// until their time is up.
pub struct Memory {
    good: Cache<u64, ()>,
    refused: Cache<u64, ()>,
}

impl Memory {
    pub fn new(config: &CanaryConfig) -> Self {
        Memory {
            good: Cache::new(config.known_good),
            // A refusal is rare; the bound only stops a flood of distinct
            // deadly queries from growing it without limit.
            refused: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(config.reject_for.max(Duration::from_millis(1)))
                .build(),
        }
    }

    pub fn is_good(&self, fingerprint: u64) -> bool {
        self.good.contains_key(&fingerprint)
    }

    pub fn remember_good(&self, fingerprint: u64) {
        self.good.insert(fingerprint, ());
    }

    /// Known-good fingerprints held; with `settle`, after moka's pending
    /// bookkeeping (see `TermStatsCache::usage`).
    pub fn known_good(&self, settle: bool) -> u64 {
        if settle {
            self.good.run_pending_tasks();
        }
        self.good.entry_count()
    }

    pub fn is_refused(&self, fingerprint: u64) -> bool {
        self.refused.contains_key(&fingerprint)
    }

    pub fn refuse(&self, fingerprint: u64) {
        self.good.invalidate(&fingerprint);
        self.refused.insert(fingerprint, ());
    }
}

/// The canary stage of the root search.
pub struct Canaries {
    config: CanaryConfig,
    memory: Arc<Memory>,
    in_flight: Coalescer<Verdict, ()>,
    metrics: Arc<Metrics>,
}

impl Canaries {
    pub fn new(config: CanaryConfig, metrics: Arc<Metrics>) -> Self {
        Canaries {
            memory: Arc::new(Memory::new(&config)),
            config,
            in_flight: Coalescer::default(),
            metrics,
        }
    }

    /// Lets `query` go on to the fan-out, first sending a canary to one
    /// replica of `shard` when the query is not known-good; refuses it
    /// when its canary died, now or within `reject_for`. Waits no later
    /// than `deadline` (then the fan-out still has what is left of it).
    /// `Ok(true)` when the query waited for a canary (its own or one in
    /// flight), `Ok(false)` when it needed none.
    #[allow(clippy::too_many_arguments)]
    pub async fn admit(
        &self,
        query: &str,
        k: u32,
        fanout: &Arc<Fanout>,
        topology: &Topology,
        shard: usize,
        deadline: Instant,
        tasks: &TaskTracker,
    ) -> Result<bool, QueryError> {
        if !self.config.enabled {
            return Ok(false);
        }
        let fingerprint = fingerprint(query);
        if self.memory.is_refused(fingerprint) {
            return Err(self.rejected(fingerprint));
        }
        if self.memory.is_good(fingerprint) {
            return Ok(false);
        }
        let candidates = candidates(topology, shard);
        if candidates.is_empty() {
            // Nobody to ask (the fan-out then reports the shards
            // unavailable), or only this process's own leaves.
            return Ok(false);
        }
        let now = Instant::now();
        let budget = deadline
            .saturating_duration_since(now)
            .mul_f64(self.config.budget_fraction.clamp(0.0, 1.0));
        let request = SearchRequest {
            query: query.to_string(),
            k,
            stats: None,
            score_floor: None,
            shard: None,
        };
        let (verdict, leader) =
            self.in_flight
                .join_or_start(format!("{fingerprint:016x}"), (), tasks, || {
                    let (memory, metrics) = (Arc::clone(&self.memory), Arc::clone(&self.metrics));
                    let fanout = Arc::clone(fanout);
                    let probe_budget = self.config.probe_budget.min(budget);
                    // Checked again under the coalescer's lock: a canary that
                    // just ended updated the memory before leaving the map,
                    // so a query is never sent twice.
                    let known = if memory.is_refused(fingerprint) {
                        Some(Verdict::Died)
                    } else if memory.is_good(fingerprint) {
                        Some(Verdict::Answered)
                    } else {
                        None
                    };
                    async move {
                        if let Some(verdict) = known {
                            return verdict;
                        }
                        let Some((shard, replicas, first)) =
                            first_alive(&fanout, &candidates, probe_budget).await
                        else {
                            metrics
                                .canaries
                                .with_label_values(&[Verdict::OrdinaryError.label()])
                                .inc();
                            return Verdict::OrdinaryError;
                        };
                        let (verdict, judged) = run(
                            &fanout,
                            shard,
                            &replicas,
                            first,
                            request,
                            budget,
                            probe_budget,
                        )
                        .await;
                        let replica = &replicas[judged];
                        metrics.canaries.with_label_values(&[verdict.label()]).inc();
                        match verdict {
                            Verdict::Answered => memory.remember_good(fingerprint),
                            Verdict::Died => {
                                memory.refuse(fingerprint);
                                tracing::warn!(
                                    fingerprint = %format!("{fingerprint:016x}"),
                                    shard = replica.member.shard,
                                    replica = %replica.member.address,
                                    "canary replica died on a query: refusing it"
                                );
                            }
                            Verdict::OrdinaryError => {}
                        }
                        verdict
                    }
                });
        // A follower waits for the leader's verdict, never past its own
        // deadline: a query must not reach the other shards before it.
        let verdict = match tokio::time::timeout_at(deadline, verdict).await {
            Ok(Some(verdict)) => verdict,
            Ok(None) => return Err(QueryError::Internal("the canary task failed".into())),
            Err(_) => return Err(QueryError::NoShardAnswered { answer: None }),
        };
        if !leader {
            tracing::debug!(verdict = verdict.label(), "joined a canary in flight");
        }
        match verdict {
            Verdict::Died => Err(self.rejected(fingerprint)),
            Verdict::Answered | Verdict::OrdinaryError => Ok(true),
        }
    }

    /// Known-good fingerprints held (see [`Memory::known_good`]).
    pub fn known_good(&self, settle: bool) -> u64 {
        self.memory.known_good(settle)
    }

    /// Remembers a query answered by every shard (a fan-out is as good a
    /// test as a canary).
    pub fn answered(&self, query: &str) {
        if self.config.enabled {
            self.memory.remember_good(fingerprint(query));
        }
    }

    fn rejected(&self, fingerprint: u64) -> QueryError {
        self.metrics.queries_rejected.inc();
        tracing::info!(
            fingerprint = %format!("{fingerprint:016x}"),
            "refusing a query whose canary died"
        );
        QueryError::QueryRejected {
            fingerprint: format!("{fingerprint:016x}"),
            retry_after: self.config.reject_for,
        }
    }
}

/// The shards a canary may go to, in order: `shard`, then the others,
/// each with its replicas (replica choice picks among them).
///
/// A replica in this process (an embedded leaf) is never a candidate: a
/// query that kills it kills this frontend too, canary or not, so a canary
/// there protects nothing and only costs a search. Shards served only here
/// are skipped; with no replica elsewhere at all there is no canary.
fn candidates(topology: &Topology, shard: usize) -> Vec<(u32, Vec<Arc<Replica>>)> {
    let shards = topology.shards.len();
    (0..shards)
        .map(|offset| (shard + offset) % shards)
        .filter_map(|s| {
            let replicas: Vec<Arc<Replica>> = topology
                .shards
                .get(s)?
                .iter()
                .filter(|replica| !replica.client.in_process())
                .cloned()
                .collect();
            (!replicas.is_empty()).then_some((s as u32, replicas))
        })
        .collect()
}

/// The first replica that answers a probe, shard by shard: a canary must go
/// to a replica that is alive before it, or one already dead would pass for
/// one that died on the query. The probe is a call of the fan-out's:
/// replica choice with the stuck rule, hedged, retried on another replica.
async fn first_alive(
    fanout: &Fanout,
    candidates: &[(u32, Vec<Arc<Replica>>)],
    probe_budget: Duration,
) -> Option<(u32, Vec<Arc<Replica>>, usize)> {
    for (shard, replicas) in candidates {
        let plan = CallPlan::new(CallKind::Probe);
        let until = Instant::now() + probe_budget;
        let report = fanout
            .call(
                *shard,
                replicas,
                &plan,
                until,
                |replica, budget| async move { replica.client.info(budget).await },
            )
            .await;
        if let Called::Answered { replica, .. } = report.outcome {
            return Some((*shard, replicas.clone(), replica));
        }
    }
    None
}

/// Sends the canary, first to `replicas[first]`, and judges how it ended:
/// answered by any replica, or died when a call failed on a replica that
/// was alive before it and a probe finds nobody there after; with the
/// replica the verdict is about.
async fn run(
    fanout: &Fanout,
    shard: u32,
    replicas: &[Arc<Replica>],
    first: usize,
    request: SearchRequest,
    budget: Duration,
    probe_budget: Duration,
) -> (Verdict, usize) {
    let plan = CallPlan {
        retry: false,
        hedge_only_if_silent: true,
        first: Some(first),
        ..CallPlan::new(CallKind::Canary)
    };
    let until = Instant::now() + budget;
    let report = fanout
        .call(shard, replicas, &plan, until, |replica, budget| {
            let request = request.clone();
            async move { replica.client.search(request, budget).await }
        })
        .await;
    if let Called::Answered { replica, .. } = report.outcome {
        return (Verdict::Answered, replica);
    }
    for failure in &report.failures {
        if failure.alive_before
            && judge(&replicas[failure.replica], &failure.error, probe_budget).await
                == Verdict::Died
        {
            return (Verdict::Died, failure.replica);
        }
    }
    (Verdict::OrdinaryError, first)
}

/// Unavailable or an unknown failure may be a vanished process (a reset
/// connection) or an ordinary one (an injected fault, a leaf draining):
/// the probe tells them apart, as a dead process answers nothing.
async fn judge(replica: &Replica, error: &CallError, probe_budget: Duration) -> Verdict {
    match error {
        CallError::Timeout | CallError::Rejected(_) | CallError::InvalidQuery(_) => {
            Verdict::OrdinaryError
        }
        CallError::Unavailable(_) | CallError::Unreachable(_) | CallError::Failed(_) => {
            match replica.client.info(probe_budget).await {
                Ok(_) => Verdict::OrdinaryError,
                Err(_) => Verdict::Died,
            }
        }
    }
}

#[cfg(test)]
mod tests;
