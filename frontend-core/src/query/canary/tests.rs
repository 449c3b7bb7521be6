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
    searches: AtomicUsize,
}

#[async_trait]
impl LeafService for Fake {
    async fn search(&self, _: SearchRequest, _: Duration) -> Result<SearchResponse, CallError> {
        self.searches.fetch_add(1, Ordering::SeqCst);
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

fn one_replica() -> (Arc<Topology>, Arc<Fake>) {
    let fake = Arc::new(Fake::default());
    let client = Arc::clone(&fake);
    let factory: ClientFactory =
        Arc::new(move |_: &Member| Some(Arc::clone(&client) as Arc<dyn LeafService>));
    let routing = Routing::new(1, factory);
    routing.apply(&[Member {
        lease_id: 1,
        role: Role::Leaf,
        shard: 0,
        address: "s0r0".into(),
        generation: 1,
    }]);
    (routing.snapshot(), fake)
}

fn canaries() -> (Canaries, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new(prometheus::Registry::new()).unwrap());
    (Canaries::new(config(), Arc::clone(&metrics)), metrics)
}

async fn admit(canaries: &Canaries, topology: &Topology, query: &str) -> Result<(), QueryError> {
    let deadline = Instant::now() + Duration::from_secs(1);
    canaries
        .admit(query, 10, topology, 0, deadline, &TaskTracker::new())
        .await
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
