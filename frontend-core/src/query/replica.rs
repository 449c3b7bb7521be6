//! Replica choice and probation: which replica of a shard gets a call.
//!
//! Power of two choices on load among the replicas neither stuck nor on
//! probation; a small fraction of calls probe one on probation. The load is
//! peak-EWMA × calls in flight, or with `server_load` the C3 score that adds
//! what the replica reports about its own queue and service time. A replica
//! whose latency estimate is much worse than the best of its peers' goes on
//! probation for a while, unless it is the last healthy one.
//!
//! A replica is **stuck** while it has owed an answer for longer than
//! [`StuckRule::after`] (the fan-out sets it from the shard's healthy
//! latency), or for longer than [`StuckRule::silent_after`] (about one
//! hedge delay) without answering anything at all for as long: it gets no
//! new primary calls, and a hedge only when no other replica is left, until
//! it answers again. The first notices a frozen process within a few
//! healthy latencies from the calls that did not come back, where the
//! latency estimate would learn of it only from the answers after the
//! freeze; the second within one, because a busy process keeps answering
//! its other calls and a frozen one answers none, so that a query's later
//! stages (statistics after a probe, the fan-out after statistics) do not
//! pick a replica that one of its earlier stages has just waited for.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use crate::cluster::topology::Replica;
use crate::metrics::Metrics;

/// The figures of replica choice and probation (from the fan-out's
/// configuration, `FanoutConfig`, which documents each).
#[derive(Clone, Debug)]
pub struct ReplicaPolicy {
    pub replica_choice: bool,
    pub probation: bool,
    pub probation_factor: f64,
    pub probation_min_gap: Duration,
    pub probation_time: Duration,
    pub probe_fraction: f64,
    /// Rank replicas by the C3 score with their own reported load.
    pub server_load: bool,
}

/// When a replica that owes an answer is kept out of primary choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StuckRule {
    /// Owing an answer for longer than this: stuck, however busy.
    pub after: Duration,
    /// Owing one for longer than this, and no answer to any call for as
    /// long: silent, so frozen rather than busy.
    pub silent_after: Duration,
}

impl StuckRule {
    /// The rule without the silence test: stuck only past `after`.
    pub fn owing(after: Duration) -> Self {
        StuckRule {
            after,
            silent_after: Duration::MAX,
        }
    }
}

/// Whether `replica` is stuck by `rule`: it has owed an answer for longer
/// than `rule.after`, or for longer than `rule.silent_after` while
/// answering nothing for as long.
pub fn is_stuck(replica: &Replica, rule: StuckRule, now: Instant) -> bool {
    let Some(waited) = replica.load.waiting_for(now) else {
        return false;
    };
    waited > rule.after
        || (waited > rule.silent_after
            && now
                .checked_sub(rule.silent_after)
                .is_some_and(|since| !replica.load.answered_since(since)))
}

/// Picks an untried replica: power of two choices among those neither
/// stuck nor on probation (a small fraction of calls probe one on
/// probation); a stuck replica only when no other is left, the one that has
/// waited least first.
pub fn choose(
    policy: &ReplicaPolicy,
    metrics: &Metrics,
    replicas: &[Arc<Replica>],
    tried: &[bool],
    stuck: StuckRule,
) -> Option<usize> {
    let now = Instant::now();
    if policy.probation {
        update_probation(policy, metrics, replicas, now);
    }
    let (untried, stuck): (Vec<usize>, Vec<usize>) = (0..replicas.len())
        .filter(|&i| !tried[i])
        .partition(|&i| !is_stuck(&replicas[i], stuck, now));
    if untried.is_empty() {
        return stuck
            .into_iter()
            .min_by_key(|&i| replicas[i].load.waiting_for(now).unwrap_or_default());
    }
    let mut rng = rand::rng();
    let (healthy, on_probation): (Vec<usize>, Vec<usize>) = untried
        .iter()
        .partition(|&&i| !replicas[i].probation.active(now));
    let candidates = if healthy.is_empty()
        || (!on_probation.is_empty() && rng.random_bool(policy.probe_fraction.clamp(0.0, 1.0)))
    {
        if !healthy.is_empty() {
            metrics.probe();
        }
        on_probation
    } else {
        healthy
    };
    let pick = |rng: &mut rand::rngs::ThreadRng| candidates[rng.random_range(0..candidates.len())];
    if !policy.replica_choice || candidates.len() == 1 {
        return Some(pick(&mut rng));
    }
    let a = pick(&mut rng);
    let mut b = pick(&mut rng);
    while b == a {
        b = pick(&mut rng);
    }
    let load = |i: usize| {
        if policy.server_load {
            replicas[i].load.score()
        } else {
            replicas[i].load.cost()
        }
    };
    if load(a) <= load(b) {
        Some(a)
    } else {
        Some(b)
    }
}

/// Puts a replica much slower than the best of its peers on probation,
/// and lifts probation from one that has recovered.
pub fn update_probation(
    policy: &ReplicaPolicy,
    metrics: &Metrics,
    replicas: &[Arc<Replica>],
    now: Instant,
) {
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
        let slow = estimates[i].as_secs_f64() > best_peer.as_secs_f64() * policy.probation_factor
            && estimates[i] > best_peer + policy.probation_min_gap;
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
            replica.probation.put_on(now + policy.probation_time);
            metrics.probation_started();
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
