//! Replica choice and probation: which replica of a shard gets a call.
//!
//! Power of two choices on peak-EWMA load among the replicas not on
//! probation; a small fraction of calls probe one that is. A replica whose
//! latency estimate is much worse than the best of its peers' goes on
//! probation for a while, unless it is the last healthy one.

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
}

/// Picks an untried replica: power of two choices among those not on
/// probation (a small fraction of calls probe one that is).
pub fn choose(
    policy: &ReplicaPolicy,
    metrics: &Metrics,
    replicas: &[Arc<Replica>],
    tried: &[bool],
) -> Option<usize> {
    let now = Instant::now();
    if policy.probation {
        update_probation(policy, metrics, replicas, now);
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
    if replicas[a].load.cost() <= replicas[b].load.cost() {
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
