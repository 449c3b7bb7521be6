//! The routing table: which replicas serve each shard and which cache
//! servers are live, rebuilt from the lease membership whenever it changes.
//!
//! **Invariant:** only holders of live leases appear here; a replica whose
//! lease expires or is revoked is gone from the next table.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use lease::{Member, MemberView, Role};
use parking_lot::RwLock;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use proto::cache::cache_client::CacheClient;
use svc::auth::AuthChannel;

use crate::cluster::leaf_client::{lazy_channel, Connect, GrpcLeaf, LeafService};
use crate::cluster::load::PeakEwma;

/// One live leaf replica and what the frontend has learned about it.
pub struct Replica {
    pub member: Member,
    pub client: Arc<dyn LeafService>,
    pub load: PeakEwma,
    pub probation: Probation,
}

/// A live cache server.
pub struct CacheNode {
    pub member: Member,
    pub client: CacheClient<AuthChannel>,
}

/// A replica that stays much slower than its peers is kept out of primary
/// selection until `until`, then restored; meanwhile it gets probe calls.
#[derive(Default)]
pub struct Probation {
    until: RwLock<Option<Instant>>,
}

impl Probation {
    pub fn active(&self, now: Instant) -> bool {
        matches!(*self.until.read(), Some(until) if until > now)
    }

    pub fn put_on(&self, until: Instant) {
        *self.until.write() = Some(until);
    }

    /// True when a probation was set and its time is up.
    pub fn expired(&self, now: Instant) -> bool {
        matches!(*self.until.read(), Some(until) if until <= now)
    }

    pub fn lift(&self) {
        *self.until.write() = None;
    }

    /// Time left on probation, for status pages.
    pub fn remaining(&self, now: Instant) -> Option<Duration> {
        self.until
            .read()
            .and_then(|until| until.checked_duration_since(now))
    }
}

/// A snapshot of the cluster as the fan-out sees it.
#[derive(Default)]
pub struct Topology {
    /// Replicas by shard id; a shard with no entry has no live replica.
    pub shards: Vec<Vec<Arc<Replica>>>,
    pub caches: Vec<Arc<CacheNode>>,
}

impl Topology {
    /// The index generation of each shard (the highest among its live
    /// replicas; 0 when none is live).
    pub fn generations(&self) -> Vec<u64> {
        self.shards
            .iter()
            .map(|replicas| {
                replicas
                    .iter()
                    .map(|replica| replica.member.generation)
                    .max()
                    .unwrap_or(0)
            })
            .collect()
    }
}

/// Makes the client for a new replica; tests swap in fakes.
pub type ClientFactory = Arc<dyn Fn(&Member) -> Option<Arc<dyn LeafService>> + Send + Sync>;

/// The gRPC client factory: clients that reach leaves with `connect`.
pub fn grpc_clients(connect: Connect) -> ClientFactory {
    Arc::new(
        move |member: &Member| match GrpcLeaf::with_connect(&member.address, &connect) {
            Ok(client) => Some(Arc::new(client) as Arc<dyn LeafService>),
            Err(error) => {
                tracing::warn!(address = %member.address, %error, "cannot build leaf client");
                None
            }
        },
    )
}

/// Holds the current [`Topology`] and rebuilds it from membership changes.
pub struct Routing {
    shards: u32,
    current: RwLock<Arc<Topology>>,
    factory: ClientFactory,
    initial_latency: Duration,
    decay: Duration,
    /// How cache servers are reached.
    connect: Connect,
}

impl Routing {
    pub fn new(shards: u32, factory: ClientFactory) -> Arc<Self> {
        Routing::with_connect(shards, factory, Connect::default())
    }

    /// A table whose cache clients reach cache servers with `connect`.
    pub fn with_connect(shards: u32, factory: ClientFactory, connect: Connect) -> Arc<Self> {
        Arc::new(Routing {
            shards,
            current: RwLock::new(Arc::new(Topology {
                shards: vec![Vec::new(); shards as usize],
                caches: Vec::new(),
            })),
            factory,
            initial_latency: Duration::from_millis(5),
            decay: Duration::from_secs(10),
            connect,
        })
    }

    pub fn shards(&self) -> u32 {
        self.shards
    }

    /// The table in force now.
    pub fn snapshot(&self) -> Arc<Topology> {
        self.current.read().clone()
    }

    /// Rebuilds the table from `members`, keeping the state of replicas
    /// that were already known (same address and lease).
    pub fn apply(&self, members: &[Member]) {
        let old = self.snapshot();
        let known_caches: HashMap<&str, &Arc<CacheNode>> = old
            .caches
            .iter()
            .map(|node| (node.member.address.as_str(), node))
            .collect();
        let mut known: HashMap<(&str, u64), &Arc<Replica>> = HashMap::new();
        for replica in old.shards.iter().flatten() {
            known.insert(
                (replica.member.address.as_str(), replica.member.lease_id),
                replica,
            );
        }
        let mut shards: Vec<Vec<Arc<Replica>>> = vec![Vec::new(); self.shards as usize];
        let mut caches = Vec::new();
        for member in members {
            match member.role {
                Role::Leaf => {
                    let Some(slot) = shards.get_mut(member.shard as usize) else {
                        tracing::warn!(
                            address = %member.address,
                            shard = member.shard,
                            shards = self.shards,
                            "leaf serves a shard outside the configured range, not routed"
                        );
                        continue;
                    };
                    let key = (member.address.as_str(), member.lease_id);
                    let replica = match known.get(&key) {
                        Some(replica) if replica.member == *member => Arc::clone(replica),
                        _ => match (self.factory)(member) {
                            Some(client) => Arc::new(Replica {
                                member: member.clone(),
                                client,
                                load: PeakEwma::new(self.initial_latency, self.decay),
                                probation: Probation::default(),
                            }),
                            None => continue,
                        },
                    };
                    slot.push(replica);
                }
                Role::Cache => match known_caches.get(member.address.as_str()) {
                    Some(node) if node.member == *member => caches.push(Arc::clone(node)),
                    _ => match lazy_channel(&member.address, &self.connect) {
                        Ok(channel) => caches.push(Arc::new(CacheNode {
                            member: member.clone(),
                            client: CacheClient::new(channel),
                        })),
                        Err(error) => {
                            tracing::warn!(address = %member.address, %error, "cannot build cache client");
                        }
                    },
                },
                Role::Unspecified => {}
            }
        }
        for replicas in &mut shards {
            replicas.sort_by(|a, b| a.member.address.cmp(&b.member.address));
        }
        caches.sort_by(|a, b| a.member.address.cmp(&b.member.address));
        *self.current.write() = Arc::new(Topology { shards, caches });
    }

    /// Follows `view` until `shutdown`, applying every change.
    pub fn follow(self: &Arc<Self>, mut view: MemberView, shutdown: CancellationToken) {
        let routing = Arc::clone(self);
        let initial = view.borrow_and_update().clone();
        routing.apply(&initial);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    changed = view.changed() => {
                        if changed.is_err() {
                            break;
                        }
                        let members = view.borrow_and_update().clone();
                        routing.apply(&members);
                        tracing::debug!(members = members.len(), "routing table rebuilt");
                    }
                }
            }
        });
    }
}
