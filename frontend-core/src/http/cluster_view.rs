//! `GET /cluster` (admin listener): the live holders and every shard's
//! state, as JSON.
//!
//! Lease ids and index generations are full 64-bit numbers, written as
//! decimal strings: JavaScript numbers are exact only up to 2^53, and the
//! status page would show a rounded generation.

use serde::Serialize;
use tokio::time::Instant;

use crate::http::state::AppState;

#[derive(Serialize)]
pub struct ClusterView {
    /// `connected` is false when the membership backend cannot be reached
    /// and routing uses the last membership seen.
    pub membership_connected: bool,
    pub holders: Vec<HolderView>,
    pub shards: Vec<ShardView>,
    pub caches: Vec<String>,
    /// Where the rollout of the newest index generation stands.
    pub rollout: RolloutView,
}

/// [`crate::cluster::topology::RolloutStatus`] as JSON; generations are
/// strings (a u64 above 2^53 loses precision in JavaScript).
#[derive(Serialize)]
pub struct RolloutView {
    /// The newest generation any live replica serves ("0": none yet).
    pub generation: String,
    /// True while some live replica serves an older one.
    pub in_progress: bool,
    /// Since the first replica announced `generation`, while in progress.
    pub elapsed_ms: Option<u64>,
    pub replicas: usize,
    pub replicas_on_newest: usize,
    /// The last finished rollout: its generation and how long it took.
    pub last_generation: Option<String>,
    pub last_duration_ms: Option<u64>,
    pub completed: u64,
}

#[derive(Serialize)]
pub struct HolderView {
    pub role: &'static str,
    pub shard: u32,
    pub address: String,
    #[serde(serialize_with = "as_string")]
    pub lease_id: u64,
    pub ttl_left_ms: u64,
    pub since_renewal_ms: u64,
    #[serde(serialize_with = "as_string")]
    pub generation: u64,
}

#[derive(Serialize)]
pub struct ShardView {
    pub shard: u32,
    /// `ok` or `unavailable` (no live replica).
    pub state: &'static str,
    pub replicas_live: usize,
    pub replicas: Vec<ReplicaView>,
    /// The current hedge delay, when enough latencies are known.
    pub hedge_after_ms: Option<f64>,
    /// The distinct generations its live replicas serve, oldest first, as
    /// strings: two while a rolling swap is under way.
    pub generations_in_service: Vec<String>,
}

#[derive(Serialize)]
pub struct ReplicaView {
    pub address: String,
    #[serde(serialize_with = "as_string")]
    pub lease_id: u64,
    #[serde(serialize_with = "as_string")]
    pub generation: u64,
    pub latency_ms: f64,
    pub in_flight: usize,
    pub probation_ms: Option<u64>,
}

/// A u64 as a decimal string.
fn as_string<S: serde::Serializer>(value: &u64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

pub fn cluster_view(app: &AppState) -> ClusterView {
    let now = Instant::now();
    let holders = app
        .membership
        .status()
        .into_iter()
        .map(|status| HolderView {
            role: match status.member.role {
                lease::Role::Leaf => "leaf",
                lease::Role::Cache => "cache",
                lease::Role::Unspecified => "unspecified",
            },
            shard: status.member.shard,
            address: status.member.address,
            lease_id: status.member.lease_id,
            ttl_left_ms: status.ttl_left.as_millis() as u64,
            since_renewal_ms: status.since_renewal.as_millis() as u64,
            generation: status.member.generation,
        })
        .collect();
    let fanout = &app.root.fanout;
    let topology = fanout.routing().snapshot();
    let shards = topology
        .shards
        .iter()
        .enumerate()
        .map(|(shard, replicas)| ShardView {
            shard: shard as u32,
            state: if replicas.is_empty() {
                "unavailable"
            } else {
                "ok"
            },
            replicas_live: replicas.len(),
            replicas: replicas
                .iter()
                .map(|r| ReplicaView {
                    address: r.member.address.clone(),
                    lease_id: r.member.lease_id,
                    generation: r.member.generation,
                    latency_ms: r.load.estimate().as_secs_f64() * 1000.0,
                    in_flight: r.load.in_flight(),
                    probation_ms: r.probation.remaining(now).map(|d| d.as_millis() as u64),
                })
                .collect(),
            hedge_after_ms: fanout
                .hedge_delay(shard as u32)
                .map(|d| d.as_secs_f64() * 1000.0),
            generations_in_service: topology
                .generations_in_service(shard)
                .iter()
                .map(u64::to_string)
                .collect(),
        })
        .collect();
    let rollout = fanout.routing().rollout();
    let rollout = RolloutView {
        generation: rollout.generation.to_string(),
        in_progress: rollout.started.is_some(),
        elapsed_ms: rollout
            .started
            .map(|started| now.saturating_duration_since(started).as_millis() as u64),
        replicas: rollout.replicas,
        replicas_on_newest: rollout.replicas_on_newest,
        last_generation: rollout.last.map(|(generation, _)| generation.to_string()),
        last_duration_ms: rollout.last.map(|(_, took)| took.as_millis() as u64),
        completed: rollout.completed,
    };
    ClusterView {
        membership_connected: app.membership.connected(),
        holders,
        shards,
        caches: topology
            .caches
            .iter()
            .map(|c| c.member.address.clone())
            .collect(),
        rollout,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_above_two_to_the_53_survive_as_strings() {
        let replica = ReplicaView {
            address: "127.0.0.1:1".into(),
            lease_id: u64::MAX,
            generation: 8029160293666267482,
            latency_ms: 1.0,
            in_flight: 0,
            probation_ms: None,
        };
        let json = serde_json::to_value(&replica).unwrap();
        assert_eq!(json["generation"], "8029160293666267482");
        assert_eq!(json["lease_id"], u64::MAX.to_string());
    }
}
