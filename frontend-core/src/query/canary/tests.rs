//! The fingerprint memory and the canary's verdicts, over in-process fakes.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;
use lease::{Member, Role};
use proto::leaf::{InfoResponse, SearchResponse, TermStatsResponse};

use super::*;
use crate::cluster::leaf_client::LeafService;
use crate::cluster::topology::{ClientFactory, Routing};

fn config() -> CanaryConfig {
    CanaryConfig {
        known_good: 4,
        reject_for: Duration::from_secs(600),
        ..CanaryConfig::default()
    }
}

#[test]
fn equivalent_spellings_share_a_fingerprint_and_others_do_not() {
    assert_eq!(
        fingerprint("JSON  schema\ttool"),
        fingerprint("json schema tool")
    );
    assert_ne!(fingerprint("json schema tool"), fingerprint("json schema"));
    // Stable across builds: logs of different frontends can be matched.
    assert_eq!(fingerprint(""), 0xcbf2_9ce4_8422_2325);
}

#[test]
fn the_memory_of_known_good_queries_is_bounded() {
    let memory = Memory::new(&config());
    for i in 0..1000u64 {
        memory.remember_good(i);
    }
    memory.good.run_pending_tasks();
    assert!(
        memory.good.entry_count() <= 4,
        "{}",
        memory.good.entry_count()
    );
    assert!(!memory.is_good(5_000));
}

#[test]
fn a_refused_query_is_no_longer_known_good() {
    let memory = Memory::new(&config());
    memory.remember_good(7);
    assert!(memory.is_good(7) && !memory.is_refused(7));
    memory.refuse(7);
    assert!(!memory.is_good(7) && memory.is_refused(7));
    assert!(!memory.is_refused(8));
}

#[test]
fn a_refusal_expires() {
    let memory = Memory::new(&CanaryConfig {
        reject_for: Duration::from_millis(20),
        ..config()
    });
    memory.refuse(1);
    assert!(memory.is_refused(1));
    // moka's expiry follows its own clock, not tokio's.
    std::thread::sleep(Duration::from_millis(50));
    assert!(!memory.is_refused(1));
}

/// A leaf that answers, fails UNAVAILABLE while staying up, or dies.
#[derive(Default)]
struct Fake {
    unavailable: AtomicBool,
    dead: AtomicBool,
    /// The next search kills it.
    dies_on_search: AtomicBool,
    /// Searches hang (a frozen process, or one busy dying on the query).
    hangs: AtomicBool,
    /// Runs in the frontend's own process (an embedded leaf).
    local: AtomicBool,
    searches: AtomicUsize,
}

#[async_trait]
impl LeafService for Fake {
    fn in_process(&self) -> bool {
        self.local.load(Ordering::SeqCst)
    }

    async fn search(&self, _: SearchRequest, _: Duration) -> Result<SearchResponse, CallError> {
        self.searches.fetch_add(1, Ordering::SeqCst);
        if self.hangs.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if self.dies_on_search.load(Ordering::SeqCst) {
            self.dead.store(true, Ordering::SeqCst);
        }
        if self.dead.load(Ordering::SeqCst) || self.unavailable.load(Ordering::SeqCst) {
            return Err(CallError::Unavailable("connection reset".into()));
        }
        Ok(SearchResponse::default())
    }

    async fn term_stats(&self, _: &str, _: Duration) -> Result<TermStatsResponse, CallError> {
        Err(CallError::Failed("not used".into()))
    }

    async fn info(&self, _: Duration) -> Result<InfoResponse, CallError> {
        if self.dead.load(Ordering::SeqCst) {
            return Err(CallError::Unavailable("connection refused".into()));
        }
        Ok(InfoResponse::default())
    }
}

/// A cluster as the canary sees it: the fan-out (its calls) and a
/// topology snapshot.
struct Net {
    fanout: Arc<Fanout>,
    topology: Arc<Topology>,
}

/// `replicas` fakes of shard 0, addressed `s0r{i}`.
fn replicas(count: usize) -> (Net, Vec<Arc<Fake>>) {
    let fakes: Vec<Arc<Fake>> = (0..count).map(|_| Arc::new(Fake::default())).collect();
    let lookup = fakes.clone();
    let factory: ClientFactory = Arc::new(move |member: &Member| {
        let index: usize = member.address.strip_prefix("s0r")?.parse().ok()?;
        Some(Arc::clone(lookup.get(index)?) as Arc<dyn LeafService>)
    });
    let routing = Routing::new(1, factory);
    routing.apply(
        &(0..count)
            .map(|i| Member {
                lease_id: i as u64 + 1,
                role: Role::Leaf,
                shard: 0,
                address: format!("s0r{i}"),
                generation: 1,
            })
            .collect::<Vec<_>>(),
    );
    let metrics = Arc::new(Metrics::new(prometheus::Registry::new()).unwrap());
    let fanout = Arc::new(Fanout::new(
        Arc::clone(&routing),
        crate::query::fanout::FanoutConfig::default(),
        metrics,
    ));
    let topology = routing.snapshot();
    (Net { fanout, topology }, fakes)
}

fn one_replica() -> (Net, Arc<Fake>) {
    let (net, mut fakes) = replicas(1);
    (net, fakes.remove(0))
}

fn canaries() -> (Canaries, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new(prometheus::Registry::new()).unwrap());
    (Canaries::new(config(), Arc::clone(&metrics)), metrics)
}

async fn admit(canaries: &Canaries, net: &Net, query: &str) -> Result<(), QueryError> {
    let deadline = Instant::now() + Duration::from_secs(1);
    canaries
        .admit(
            query,
            10,
            &net.fanout,
            &net.topology,
            0,
            deadline,
            &TaskTracker::new(),
        )
        .await
        .map(|_| ())
}

#[tokio::test]
async fn a_canary_never_goes_to_a_leaf_in_this_process() {
    let (net, fakes) = replicas(2);
    fakes[0].local.store(true, Ordering::SeqCst);
    let (canaries, metrics) = canaries();
    // One replica here, one elsewhere: the canary goes elsewhere, each time.
    for query in ["json parser", "yaml loader", "http client"] {
        admit(&canaries, &net, query).await.unwrap();
    }
    assert_eq!(fakes[0].searches.load(Ordering::SeqCst), 0);
    assert_eq!(fakes[1].searches.load(Ordering::SeqCst), 3);
    assert_eq!(metrics.canaries.with_label_values(&["answered"]).get(), 3);
    // Only replicas here: no canary at all (it would protect nothing).
    fakes[1].local.store(true, Ordering::SeqCst);
    admit(&canaries, &net, "xml writer").await.unwrap();
    let searches: usize = fakes
        .iter()
        .map(|f| f.searches.load(Ordering::SeqCst))
        .sum();
    assert_eq!(searches, 3);
    assert_eq!(metrics.canaries.with_label_values(&["answered"]).get(), 3);
}

#[tokio::test]
async fn a_known_good_query_skips_the_canary() {
    let (topology, fake) = one_replica();
    let (canaries, metrics) = canaries();
    admit(&canaries, &topology, "json parser").await.unwrap();
    admit(&canaries, &topology, "JSON parser").await.unwrap();
    assert_eq!(fake.searches.load(Ordering::SeqCst), 1);
    assert_eq!(metrics.canaries.with_label_values(&["answered"]).get(), 1);
}

#[tokio::test]
async fn an_unavailable_replica_that_is_still_up_is_an_ordinary_error() {
    let (topology, fake) = one_replica();
    fake.unavailable.store(true, Ordering::SeqCst);
    let (canaries, metrics) = canaries();
    admit(&canaries, &topology, "json parser").await.unwrap();
    // Not remembered: the next request sends a canary again.
    admit(&canaries, &topology, "json parser").await.unwrap();
    assert_eq!(fake.searches.load(Ordering::SeqCst), 2);
    assert_eq!(
        metrics
            .canaries
            .with_label_values(&["ordinary_error"])
            .get(),
        2
    );
    assert_eq!(metrics.queries_rejected.get(), 0);
}

#[tokio::test]
async fn a_query_whose_canary_died_is_refused_without_reaching_a_leaf_again() {
    let (topology, fake) = one_replica();
    fake.dies_on_search.store(true, Ordering::SeqCst);
    let (canaries, metrics) = canaries();
    for _ in 0..3 {
        let error = admit(&canaries, &topology, "deadly query")
            .await
            .unwrap_err();
        let QueryError::QueryRejected {
            fingerprint: named,
            retry_after,
        } = error
        else {
            panic!("{error:?}");
        };
        assert_eq!(named, format!("{:016x}", fingerprint("deadly query")));
        assert_eq!(retry_after, Duration::from_secs(600));
    }
    assert_eq!(fake.searches.load(Ordering::SeqCst), 1, "one canary only");
    assert_eq!(metrics.canaries.with_label_values(&["died"]).get(), 1);
    assert_eq!(metrics.queries_rejected.get(), 3);
}

#[tokio::test]
async fn a_replica_already_dead_is_not_taken_for_a_query_of_death() {
    let (topology, fake) = one_replica();
    let (canaries, metrics) = canaries();
    // Dead before the canary: the probe before it finds nobody, so nothing
    // is sent and nothing refused.
    fake.dead.store(true, Ordering::SeqCst);
    admit(&canaries, &topology, "json parser").await.unwrap();
    assert_eq!(fake.searches.load(Ordering::SeqCst), 0);
    assert_eq!(metrics.queries_rejected.get(), 0);
}

#[tokio::test]
async fn turned_off_it_sends_nothing() {
    let (topology, fake) = one_replica();
    let metrics = Arc::new(Metrics::new(prometheus::Registry::new()).unwrap());
    let canaries = Canaries::new(
        CanaryConfig {
            enabled: false,
            ..config()
        },
        metrics,
    );
    fake.dead.store(true, Ordering::SeqCst);
    admit(&canaries, &topology, "deadly query").await.unwrap();
    assert_eq!(fake.searches.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn a_canary_to_a_hung_replica_is_hedged_to_another() {
    let (net, fakes) = replicas(2);
    // Replica 0 answers probes but never a search: as if it froze right
    // after the probe.
    fakes[0].hangs.store(true, Ordering::SeqCst);
    let (canaries, metrics) = canaries();
    for i in 0..10 {
        admit(&canaries, &net, &format!("json q{i}")).await.unwrap();
    }
    // Every canary answered: none waited out its budget on replica 0.
    assert_eq!(metrics.canaries.with_label_values(&["answered"]).get(), 10);
    assert_eq!(
        metrics
            .canaries
            .with_label_values(&["ordinary_error"])
            .get(),
        0
    );
    // Replica 0, once it owes an answer, gets no more canaries.
    assert!(fakes[0].searches.load(Ordering::SeqCst) <= 1);
    assert_eq!(fakes[1].searches.load(Ordering::SeqCst), 10);
}

#[tokio::test(start_paused = true)]
async fn a_canary_on_a_replica_that_answers_other_calls_is_not_hedged() {
    let (net, fakes) = replicas(2);
    // Both replicas hang on the query (a query that takes its replica down
    // slowly) while answering other calls: the canary must not reach a
    // second replica.
    for fake in &fakes {
        fake.hangs.store(true, Ordering::SeqCst);
    }
    let (canaries, metrics) = canaries();
    let busy = tokio::spawn({
        let fanout = Arc::clone(&net.fanout);
        let replicas = net.topology.shards[0].clone();
        async move {
            // Other traffic: probes of both replicas, answered, every ms.
            loop {
                for index in 0..replicas.len() {
                    let plan = CallPlan {
                        first: Some(index),
                        ..CallPlan::new(CallKind::Probe)
                    };
                    fanout
                        .call(
                            0,
                            &replicas,
                            &plan,
                            Instant::now() + Duration::from_millis(50),
                            |replica, budget| async move { replica.client.info(budget).await },
                        )
                        .await;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    });
    admit(&canaries, &net, "slow query").await.unwrap();
    busy.abort();
    let searches: usize = fakes
        .iter()
        .map(|f| f.searches.load(Ordering::SeqCst))
        .sum();
    assert_eq!(searches, 1, "one canary, no hedge");
    assert_eq!(
        metrics
            .canaries
            .with_label_values(&["ordinary_error"])
            .get(),
        1
    );
}
