//! The routing table: which replicas serve each shard and which cache
//! servers are live, rebuilt from the lease membership whenever it changes.
//!
//! **Invariant:** only holders of live leases appear here; a replica whose
//! lease expires or is revoked is gone from the next table.
//!
//! **Invariant:** a replica that joins or rejoins starts with its shard's
//! best latency estimate, so it is chosen (and measured) at once.
//!
//! It also follows index generations: the generation of each shard that
//! cache keys and term statistics name (the newest among its live replicas,
//! or a newer one already seen in an answer before its lease announced it),
//! and rollouts (from the first replica announcing a new generation to the
//! last live replica serving it).

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use proto::leaf::{
    InfoResponse, SearchRequest, SearchResponse, ShardAnswer, TermStatsAnswer, TermStatsResponse,
};

use lease::{Member, MemberView, Role};
use parking_lot::{Mutex, RwLock};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use proto::cache::cache_client::CacheClient;
use svc::auth::AuthChannel;

use crate::cluster::leaf_client::{
    clients_of, lazy_channel, CallError, Connect, LeafService, LocalLeaf,
};
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
    /// Generations seen in answers, shared by every snapshot of one
    /// [`Routing`].
    observed: Arc<Observed>,
}

impl Topology {
    /// The index generation of each shard: the highest among its live
    /// replicas, or a higher one that a replica of the shard answered with
    /// in the last [`OBSERVED_TTL`] (a leaf swaps before its lease announces
    /// the new generation); 0 when none is live. Cache keys and term
    /// statistics name these, so that nothing cached for an older
    /// generation is used once a replica of the shard has moved on.
    pub fn generations(&self) -> Vec<u64> {
        let now = Instant::now();
        self.shards
            .iter()
            .enumerate()
            .map(|(shard, replicas)| {
                let announced = replicas
                    .iter()
                    .map(|replica| replica.member.generation)
                    .max();
                match announced {
                    Some(announced) => announced.max(self.observed.floor(shard, now)),
                    None => 0,
                }
            })
            .collect()
    }

    /// The distinct generations that the live replicas of `shard` serve,
    /// oldest first: more than one while a rollout is under way.
    pub fn generations_in_service(&self, shard: usize) -> Vec<u64> {
        let mut generations: Vec<u64> = self
            .shards
            .get(shard)
            .map(|replicas| replicas.iter().map(|r| r.member.generation).collect())
            .unwrap_or_default();
        generations.sort_unstable();
        generations.dedup();
        generations
    }

    /// Notes that a replica of `shard` answered from `generation`.
    pub fn observe(&self, shard: usize, generation: u64) {
        self.observed.note(shard, generation, Instant::now());
    }
}

/// How long a generation seen in an answer counts without its lease
/// announcing it (normally the announcement follows within milliseconds; a
/// generation that then vanishes, say a rolled-back replica, stops
/// counting after this).
pub const OBSERVED_TTL: Duration = Duration::from_secs(10);

/// The newest generation seen in answers per shard, and when.
#[derive(Default)]
struct Observed {
    slots: parking_lot::Mutex<Vec<(u64, Instant)>>,
}

impl Observed {
    fn note(&self, shard: usize, generation: u64, now: Instant) {
        let mut slots = self.slots.lock();
        if slots.len() <= shard {
            slots.resize(shard + 1, (0, now));
        }
        let slot = &mut slots[shard];
        let expired = now.saturating_duration_since(slot.1) >= OBSERVED_TTL;
        if generation != 0 && (generation >= slot.0 || expired) {
            *slot = (generation, now);
        }
    }

    fn floor(&self, shard: usize, now: Instant) -> u64 {
        match self.slots.lock().get(shard) {
            Some(&(generation, seen)) if now.saturating_duration_since(seen) < OBSERVED_TTL => {
                generation
            }
            _ => 0,
        }
    }
}

/// Where the cluster is in rolling out an index generation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RolloutStatus {
    /// The newest generation any live replica serves (0: none seen yet).
    pub generation: u64,
    /// When the first replica announced `generation`, while some live
    /// replica still serves an older one.
    pub started: Option<Instant>,
    /// Replicas live and replicas on `generation`.
    pub replicas: usize,
    pub replicas_on_newest: usize,
    /// The last rollout that finished: its generation and how long it took.
    pub last: Option<(u64, Duration)>,
    /// Rollouts finished since the frontend started.
    pub completed: u64,
}

impl RolloutStatus {
    /// Follows one routing table: a rollout starts when a replica announces
    /// a generation newer than every one seen, and ends when every live
    /// replica serves it (the indexer gives every shard of one build the
    /// same generation id). The generations of the first table seen are
    /// taken as settled when its replicas agree.
    fn advance(&mut self, shards: &[Vec<Arc<Replica>>], now: Instant) {
        let all = || shards.iter().flatten().map(|r| r.member.generation);
        let newest = all().max().unwrap_or(0);
        self.replicas = all().count();
        self.replicas_on_newest = all().filter(|&g| g == newest).count();
        let everyone_on_newest = self.replicas == self.replicas_on_newest;
        if newest > self.generation {
            let first_table = self.generation == 0;
            self.generation = newest;
            if !(first_table && everyone_on_newest) && self.started.is_none() {
                self.started = Some(now);
            }
        }
        if let (Some(started), true) = (self.started, everyone_on_newest) {
            if self.replicas > 0 {
                self.last = Some((self.generation, now.saturating_duration_since(started)));
                self.completed += 1;
                self.started = None;
            }
        }
    }
}

/// Sets the generation gauges from `topology` and records every rollout
/// finished since `seen` (a count from [`RolloutStatus::completed`]);
/// returns the new count.
pub fn export_generations(
    routing: &Routing,
    topology: &Topology,
    metrics: &crate::metrics::Metrics,
    seen: u64,
) -> u64 {
    metrics.replica_generation.reset();
    for (shard, replicas) in topology.shards.iter().enumerate() {
        let label = shard.to_string();
        for replica in replicas {
            metrics
                .replica_generation
                .with_label_values(&[&label, &replica.member.address])
                .set(replica.member.generation as f64);
        }
        metrics
            .shard_generations
            .with_label_values(&[&label])
            .set(topology.generations_in_service(shard).len() as i64);
    }
    let rollout = routing.rollout();
    metrics
        .rollout_in_progress
        .set(i64::from(rollout.started.is_some()));
    if rollout.completed > seen {
        if let Some((_, took)) = rollout.last {
            metrics.rollout_duration.observe(took.as_secs_f64());
        }
    }
    rollout.completed
}

/// Makes the client for a new replica; tests swap in fakes.
pub type ClientFactory = Arc<dyn Fn(&Member) -> Option<Arc<dyn LeafService>> + Send + Sync>;

/// The gRPC client factory: clients that reach leaves with `connect`.
pub fn grpc_clients(connect: Connect) -> ClientFactory {
    clients(connect, Vec::new())
}

/// The client factory: an in-process client for a member at the address
/// of one of `local`, a gRPC client with `connect` for every other.
pub fn clients(connect: Connect, local: Vec<LocalLeaf>) -> ClientFactory {
    Arc::new(
        move |member: &Member| match clients_of(&member.address, &connect, &local) {
            Ok(clients) => Some(clients(Some(member.shard))),
            Err(error) => {
                tracing::warn!(address = %member.address, %error, "cannot build leaf client");
                None
            }
        },
    )
}

/// How long a replica must have answered nothing (every call failed or
/// timed out) to count as having been unreachable: as long as a dead
/// connection takes to be found (`svc::channel` pings every 2 s, 1 s to
/// answer). A replica that is merely slow answers some calls meanwhile.
pub const UNREACHABLE_AFTER: Duration = Duration::from_secs(3);

/// Wraps a replica's client to notice when it answers again after a
/// stretch of answering nothing (a cut link, a reconnect): its load
/// estimate, inflated by the calls that timed out, is then reset to the
/// latency of that answer and any probation lifted, so that it takes its
/// share of calls at once instead of after the estimate decays (which
/// happens only with the calls it no longer gets).
///
/// **Invariant:** a replica reachable again is routed on its current
/// latency, not on the timeouts of the cut.
struct Rejoining {
    inner: Arc<dyn LeafService>,
    replica: Weak<Replica>,
    /// When the current run of failed calls began (`None` after a success).
    failing_since: Mutex<Option<Instant>>,
}

impl Rejoining {
    fn new(inner: Arc<dyn LeafService>, replica: Weak<Replica>) -> Self {
        Rejoining {
            inner,
            replica,
            failing_since: Mutex::new(None),
        }
    }

    fn note<T>(&self, result: &Result<T, CallError>, started: Instant) {
        let now = Instant::now();
        match result {
            Err(CallError::Timeout | CallError::Unavailable(_) | CallError::Unreachable(_)) => {
                self.failing_since.lock().get_or_insert(started);
            }
            Err(_) => {}
            Ok(_) => {
                let Some(since) = self.failing_since.lock().take() else {
                    return;
                };
                if now.saturating_duration_since(since) < UNREACHABLE_AFTER {
                    return;
                }
                if let Some(replica) = self.replica.upgrade() {
                    replica.load.reset(now.saturating_duration_since(started));
                    replica.probation.lift();
                    tracing::info!(
                        address = %replica.member.address,
                        shard = replica.member.shard,
                        unreachable_for = ?now.saturating_duration_since(since),
                        "replica answers again, load estimate reset"
                    );
                }
            }
        }
    }
}

#[async_trait]
impl LeafService for Rejoining {
    fn in_process(&self) -> bool {
        self.inner.in_process()
    }

    fn note_shared(&self, outcome: Result<(), CallError>, started: Instant) {
        self.note(&outcome, started);
    }

    async fn search(
        &self,
        request: SearchRequest,
        budget: Duration,
    ) -> Result<SearchResponse, CallError> {
        let started = Instant::now();
        let result = self.inner.search(request, budget).await;
        self.note(&result, started);
        result
    }

    async fn term_stats(
        &self,
        query: &str,
        budget: Duration,
    ) -> Result<TermStatsResponse, CallError> {
        let started = Instant::now();
        let result = self.inner.term_stats(query, budget).await;
        self.note(&result, started);
        result
    }

    async fn info(&self, budget: Duration) -> Result<InfoResponse, CallError> {
        let started = Instant::now();
        let result = self.inner.info(budget).await;
        self.note(&result, started);
        result
    }

    async fn search_shards(
        &self,
        request: SearchRequest,
        shards: Vec<u32>,
        budget: Duration,
    ) -> Result<Vec<ShardAnswer>, CallError> {
        let started = Instant::now();
        let result = self.inner.search_shards(request, shards, budget).await;
        self.note(&result, started);
        result
    }

    async fn term_stats_shards(
        &self,
        query: &str,
        shards: Vec<u32>,
        budget: Duration,
    ) -> Result<Vec<TermStatsAnswer>, CallError> {
        let started = Instant::now();
        let result = self.inner.term_stats_shards(query, shards, budget).await;
        self.note(&result, started);
        result
    }
}

/// Holds the current [`Topology`] and rebuilds it from membership changes.
pub struct Routing {
    shards: u32,
    current: RwLock<Arc<Topology>>,
    factory: ClientFactory,
    initial_latency: Duration,
    decay: Duration,
    observed: Arc<Observed>,
    rollout: RwLock<RolloutStatus>,
    /// How cache servers are reached.
    connect: Connect,
}

impl Routing {
    pub fn new(shards: u32, factory: ClientFactory) -> Arc<Self> {
        Routing::with_connect(shards, factory, Connect::default())
    }

    /// A table whose cache clients reach cache servers with `connect`.
    pub fn with_connect(shards: u32, factory: ClientFactory, connect: Connect) -> Arc<Self> {
        let observed = Arc::new(Observed::default());
        Arc::new(Routing {
            shards,
            current: RwLock::new(Arc::new(Topology {
                shards: vec![Vec::new(); shards as usize],
                caches: Vec::new(),
                observed: Arc::clone(&observed),
            })),
            factory,
            initial_latency: Duration::from_millis(5),
            decay: Duration::from_secs(10),
            observed,
            rollout: RwLock::new(RolloutStatus::default()),
            connect,
        })
    }

    /// Where the current (or last) rollout of an index generation stands.
    pub fn rollout(&self) -> RolloutStatus {
        self.rollout.read().clone()
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
        // A replica new to the table (first join, or back after a lease gap:
        // a new lease is a new replica) starts at the best estimate of its
        // shard's peers, not at a fixed guess: with peak-EWMA choice, a
        // replica that starts costlier than a fast twin is never picked,
        // so never measured, and idles although healthy.
        let rejoin: Vec<Option<Duration>> = (0..self.shards as usize)
            .map(|shard| {
                old.shards
                    .get(shard)?
                    .iter()
                    .map(|replica| replica.load.estimate())
                    .min()
            })
            .collect();
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
                            Some(client) => Arc::new_cyclic(|replica| Replica {
                                member: member.clone(),
                                client: Arc::new(Rejoining::new(client, replica.clone())),
                                load: PeakEwma::new(
                                    rejoin[member.shard as usize].unwrap_or(self.initial_latency),
                                    self.decay,
                                ),
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
        self.rollout.write().advance(&shards, Instant::now());
        *self.current.write() = Arc::new(Topology {
            shards,
            caches,
            observed: Arc::clone(&self.observed),
        });
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Fails every call while `down`, answers at once otherwise.
    struct Flaky {
        down: AtomicBool,
    }

    #[async_trait]
    impl LeafService for Flaky {
        async fn search(&self, _: SearchRequest, _: Duration) -> Result<SearchResponse, CallError> {
            if self.down.load(Ordering::Relaxed) {
                Err(CallError::Timeout)
            } else {
                Ok(SearchResponse::default())
            }
        }
        async fn term_stats(&self, _: &str, _: Duration) -> Result<TermStatsResponse, CallError> {
            Err(CallError::Failed("unused".into()))
        }
        async fn info(&self, _: Duration) -> Result<InfoResponse, CallError> {
            Err(CallError::Failed("unused".into()))
        }
    }

    fn member() -> Member {
        Member {
            role: Role::Leaf,
            shard: 0,
            address: "10.0.0.1:7070".into(),
            lease_id: 1,
            generation: 1,
        }
    }

    fn routing(flaky: Arc<Flaky>) -> Arc<Routing> {
        Routing::new(
            1,
            Arc::new(move |_: &Member| Some(Arc::clone(&flaky) as Arc<dyn LeafService>)),
        )
    }

    /// The only replica of a one-shard table, on a leaf that is down.
    fn one_down_replica() -> (Arc<Flaky>, Arc<Replica>) {
        let flaky = Arc::new(Flaky {
            down: AtomicBool::new(true),
        });
        let routing = routing(Arc::clone(&flaky));
        routing.apply(&[member()]);
        let replica = Arc::clone(&routing.snapshot().shards[0][0]);
        (flaky, replica)
    }

    async fn answers(replica: &Replica) -> bool {
        replica
            .client
            .search(SearchRequest::default(), Duration::from_millis(200))
            .await
            .is_ok()
    }

    #[tokio::test(start_paused = true)]
    async fn a_replica_answering_again_after_a_long_silence_is_reset() {
        let (flaky, replica) = one_down_replica();
        assert!(!answers(&replica).await);
        replica.load.observe(Duration::from_millis(200));
        replica
            .probation
            .put_on(Instant::now() + Duration::from_secs(10));
        tokio::time::advance(UNREACHABLE_AFTER + Duration::from_millis(1)).await;
        flaky.down.store(false, Ordering::Relaxed);
        assert!(answers(&replica).await);
        assert!(
            replica.load.estimate() < Duration::from_millis(1),
            "{:?}",
            replica.load.estimate()
        );
        assert!(!replica.probation.active(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_replica_failing_briefly_keeps_its_estimate() {
        let (flaky, replica) = one_down_replica();
        assert!(!answers(&replica).await);
        replica.load.observe(Duration::from_millis(200));
        tokio::time::advance(Duration::from_millis(500)).await;
        flaky.down.store(false, Ordering::Relaxed);
        assert!(answers(&replica).await);
        assert_eq!(replica.load.estimate(), Duration::from_millis(200));
    }

    #[test]
    fn a_rejoining_replica_starts_at_its_peers_best_estimate() {
        let flaky = Arc::new(Flaky {
            down: AtomicBool::new(false),
        });
        let routing = routing(flaky);
        let twin = Member {
            address: "10.0.0.2:7070".into(),
            lease_id: 2,
            ..member()
        };
        routing.apply(std::slice::from_ref(&twin));
        routing.snapshot().shards[0][0]
            .load
            .reset(Duration::from_micros(700));
        routing.apply(&[twin, member()]);
        let snapshot = routing.snapshot();
        let joined = snapshot.shards[0]
            .iter()
            .find(|r| r.member.lease_id == 1)
            .unwrap();
        assert_eq!(joined.load.estimate(), Duration::from_micros(700));
    }

    fn leaf(shard: u32, replica: u32, generation: u64) -> Member {
        Member {
            lease_id: u64::from(shard * 10 + replica + 1) * 1000 + generation,
            role: Role::Leaf,
            shard,
            address: format!("127.0.0.1:{}", 1000 + shard * 10 + replica),
            generation,
        }
    }

    /// 2 shards × 2 replicas; `on_new` of them (in order) on generation 2.
    fn table(on_new: usize) -> Vec<Member> {
        (0..4)
            .map(|i| leaf(i / 2, i % 2, if (i as usize) < on_new { 2 } else { 1 }))
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_rollout_runs_from_the_first_announcement_to_the_last_replica() {
        let routing = Routing::new(2, grpc_clients(Connect::default()));
        routing.apply(&table(0));
        let settled = routing.rollout();
        assert_eq!(settled.generation, 1);
        assert_eq!(settled.started, None, "the first table is settled");
        assert_eq!(settled.completed, 0);

        tokio::time::advance(Duration::from_secs(5)).await;
        routing.apply(&table(1));
        let started = routing.rollout();
        assert_eq!(started.generation, 2);
        assert!(started.started.is_some());
        assert_eq!((started.replicas, started.replicas_on_newest), (4, 1));
        // The key names the newest generation of a shard whose replicas
        // disagree, so nothing cached from the old one is served.
        assert_eq!(routing.snapshot().generations(), vec![2, 1]);
        assert_eq!(routing.snapshot().generations_in_service(0), vec![1, 2]);

        // A whole shard on the new generation is not the end: shard 1 is not.
        tokio::time::advance(Duration::from_secs(2)).await;
        routing.apply(&table(2));
        assert!(routing.rollout().started.is_some());
        tokio::time::advance(Duration::from_secs(3)).await;
        routing.apply(&table(4));
        let done = routing.rollout();
        assert_eq!(done.started, None);
        assert_eq!(done.completed, 1);
        assert_eq!(done.last, Some((2, Duration::from_secs(5))));
        assert_eq!(routing.snapshot().generations(), vec![2, 2]);
        assert_eq!(routing.snapshot().generations_in_service(1), vec![2]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_generation_seen_in_an_answer_counts_before_its_lease_announces_it() {
        let routing = Routing::new(2, grpc_clients(Connect::default()));
        routing.apply(&table(0));
        routing.snapshot().observe(1, 2);
        assert_eq!(routing.snapshot().generations(), vec![1, 2]);
        // An older answer never lowers it.
        routing.snapshot().observe(1, 1);
        assert_eq!(routing.snapshot().generations(), vec![1, 2]);
        // One that the leases never confirm stops counting.
        tokio::time::advance(OBSERVED_TTL + Duration::from_secs(1)).await;
        assert_eq!(routing.snapshot().generations(), vec![1, 1]);
        // A shard with no live replica has generation 0.
        routing.apply(&table(0)[..2]);
        assert_eq!(routing.snapshot().generations(), vec![1, 0]);
    }
}
