//! Fan-out behaviour over in-process fake leaves and logical time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lease::{Member, Role};
use proto::leaf::{Hit, InfoResponse, SearchRequest, SearchResponse, TermStatsResponse};
use tokio::time::Instant;

use super::*;
use crate::cluster::leaf_client::{CallError, LeafService};
use crate::cluster::topology::{ClientFactory, Routing};

#[derive(Default)]
struct Fake {
    delay: parking_lot::Mutex<Duration>,
    hang: std::sync::atomic::AtomicBool,
    fail: parking_lot::Mutex<Option<CallError>>,
    calls: AtomicUsize,
    cancelled: AtomicUsize,
}

struct CancelGuard<'a>(&'a AtomicUsize, bool);

impl Drop for CancelGuard<'_> {
    fn drop(&mut self) {
        if !self.1 {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[async_trait]
impl LeafService for Fake {
    async fn search(
        &self,
        request: SearchRequest,
        _budget: Duration,
    ) -> Result<SearchResponse, CallError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut guard = CancelGuard(&self.cancelled, false);
        // Hangs (a frozen process) until `hang` is cleared.
        while self.hang.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let delay = *self.delay.lock();
        tokio::time::sleep(delay).await;
        guard.1 = true;
        if let Some(error) = self.fail.lock().clone() {
            return Err(error);
        }
        Ok(SearchResponse {
            hits: vec![Hit {
                id: format!("doc-{}", request.query),
                score: 1.0,
                ..Hit::default()
            }],
            docs_searched: 10,
            docs_total: 10,
            ..SearchResponse::default()
        })
    }

    async fn term_stats(&self, _: &str, _: Duration) -> Result<TermStatsResponse, CallError> {
        Err(CallError::Failed("not used".into()))
    }

    async fn info(&self, _: Duration) -> Result<InfoResponse, CallError> {
        Err(CallError::Failed("not used".into()))
    }
}

/// A cluster of fakes: `shards` × `replicas`, addressed `s{shard}r{replica}`.
fn cluster(
    shards: u32,
    replicas: u32,
    config: FanoutConfig,
) -> (Fanout, HashMap<String, Arc<Fake>>) {
    let mut fakes = HashMap::new();
    let mut members = Vec::new();
    for shard in 0..shards {
        for replica in 0..replicas {
            let address = format!("s{shard}r{replica}");
            fakes.insert(address.clone(), Arc::new(Fake::default()));
            members.push(Member {
                lease_id: u64::from(shard * 100 + replica + 1),
                role: Role::Leaf,
                shard,
                address,
                generation: 1,
            });
        }
    }
    let lookup = fakes.clone();
    let factory: ClientFactory = Arc::new(move |member: &Member| {
        lookup
            .get(&member.address)
            .map(|fake| Arc::clone(fake) as Arc<dyn LeafService>)
    });
    let routing = Routing::new(shards, factory);
    routing.apply(&members);
    let metrics = Arc::new(Metrics::new(prometheus::Registry::new()).unwrap());
    (Fanout::new(routing, config, metrics), fakes)
}

fn request() -> SearchRequest {
    SearchRequest {
        query: "q".into(),
        k: 10,
        stats: None,
        score_floor: None,
        shard: None,
    }
}

fn set_delay(fake: &Fake, delay: Duration) {
    *fake.delay.lock() = delay;
}

/// Sends `n` queries so that every shard has a latency percentile.
async fn warm_up(fanout: &Fanout, n: usize) {
    for _ in 0..n {
        fanout
            .search(&request(), Instant::now() + Duration::from_secs(1))
            .await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_hanging_replica_is_answered_by_the_hedge() {
    let config = FanoutConfig {
        replica_choice: false,
        probation: false,
        hedge_budget_floor: 1000.0,
        ..FanoutConfig::default()
    };
    let (fanout, fakes) = cluster(1, 2, config);
    for fake in fakes.values() {
        set_delay(fake, Duration::from_millis(2));
    }
    warm_up(&fanout, 40).await;
    fakes["s0r0"].hang.store(true, Ordering::SeqCst);
    let mut hedge_wins = 0;
    for _ in 0..20 {
        let started = Instant::now();
        let results = fanout
            .search(&request(), started + Duration::from_millis(100))
            .await;
        let result = &results[0];
        assert!(
            matches!(result.outcome, ShardOutcome::Answered(_)),
            "{result:?}"
        );
        // Answered long before the deadline: after the hedge delay plus the
        // hedge's own latency.
        assert!(
            started.elapsed() < Duration::from_millis(20),
            "{:?}",
            started.elapsed()
        );
        hedge_wins += u32::from(result.hedge_won);
    }
    assert!(hedge_wins > 0);
    // Every call that reached the hanging replica was cancelled by the win.
    let hung = &fakes["s0r0"];
    assert_eq!(hung.cancelled.load(Ordering::SeqCst), hedge_wins as usize);
}

#[tokio::test(start_paused = true)]
async fn the_hedge_budget_holds_when_every_replica_slows_down() {
    let config = FanoutConfig {
        probation: false,
        hedge_budget_ratio: 0.05,
        hedge_budget_floor: 0.0,
        ..FanoutConfig::default()
    };
    let (fanout, fakes) = cluster(2, 2, config);
    for fake in fakes.values() {
        set_delay(fake, Duration::from_millis(2));
    }
    warm_up(&fanout, 40).await;
    for fake in fakes.values() {
        set_delay(fake, Duration::from_millis(30));
    }
    let mut hedges = 0;
    let queries = 400;
    for _ in 0..queries {
        let results = fanout
            .search(&request(), Instant::now() + Duration::from_millis(100))
            .await;
        hedges += results.iter().map(|r| r.hedges).sum::<u32>();
    }
    let primaries = queries * 2;
    // 5% of primary calls plus what the budget held when the slowdown began
    // (at most its smallest capacity, 10: the warm-up was too short to
    // raise it).
    assert!(
        hedges as f64 <= 0.05 * primaries as f64 + 10.0,
        "{hedges} hedges for {primaries} calls"
    );
    assert!(hedges > 0, "the budget should allow some hedges");
}

#[tokio::test(start_paused = true)]
async fn a_shard_without_replicas_is_unavailable_at_once() {
    let (fanout, _fakes) = cluster(2, 1, FanoutConfig::default());
    fanout.routing().apply(&[Member {
        lease_id: 1,
        role: Role::Leaf,
        shard: 0,
        address: "s0r0".into(),
        generation: 1,
    }]);
    let started = Instant::now();
    let results = fanout
        .search(&request(), started + Duration::from_millis(100))
        .await;
    assert!(matches!(results[0].outcome, ShardOutcome::Answered(_)));
    assert!(matches!(results[1].outcome, ShardOutcome::Unavailable));
    assert!(started.elapsed() < Duration::from_millis(10));
}

#[tokio::test(start_paused = true)]
async fn a_slow_shard_is_abandoned_at_the_deadline() {
    let config = FanoutConfig {
        hedging: false,
        ..FanoutConfig::default()
    };
    let (fanout, fakes) = cluster(2, 1, config);
    set_delay(&fakes["s1r0"], Duration::from_secs(5));
    let started = Instant::now();
    let results = fanout
        .search(&request(), started + Duration::from_millis(50))
        .await;
    assert_eq!(started.elapsed(), Duration::from_millis(50));
    assert!(matches!(results[0].outcome, ShardOutcome::Answered(_)));
    assert!(matches!(results[1].outcome, ShardOutcome::TimedOut));
    assert_eq!(fakes["s1r0"].cancelled.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_failed_call_is_retried_on_another_replica() {
    let config = FanoutConfig {
        hedging: false,
        replica_choice: false,
        ..FanoutConfig::default()
    };
    let (fanout, fakes) = cluster(1, 2, config);
    *fakes["s0r0"].fail.lock() = Some(CallError::Rejected("full".into()));
    for _ in 0..20 {
        let results = fanout
            .search(&request(), Instant::now() + Duration::from_millis(50))
            .await;
        assert!(
            matches!(results[0].outcome, ShardOutcome::Answered(_)),
            "{:?}",
            results[0]
        );
    }
    // With retries off, the failure shows.
    let config = FanoutConfig {
        hedging: false,
        retry: false,
        ..FanoutConfig::default()
    };
    let (fanout, fakes) = cluster(1, 1, config);
    *fakes["s0r0"].fail.lock() = Some(CallError::Unavailable("down".into()));
    let results = fanout
        .search(&request(), Instant::now() + Duration::from_millis(50))
        .await;
    assert!(matches!(
        results[0].outcome,
        ShardOutcome::Failed(CallError::Unavailable(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn a_slow_replica_goes_on_probation_and_comes_back() {
    // Random choice, so that the slow replica gets calls at first.
    let config = FanoutConfig {
        hedging: false,
        replica_choice: false,
        probation_time: Duration::from_secs(5),
        probe_fraction: 0.0,
        ..FanoutConfig::default()
    };
    let (fanout, fakes) = cluster(1, 2, config);
    set_delay(&fakes["s0r0"], Duration::from_millis(1));
    set_delay(&fakes["s0r1"], Duration::from_millis(60));
    for _ in 0..30 {
        fanout
            .search(&request(), Instant::now() + Duration::from_millis(200))
            .await;
    }
    let topology = fanout.routing().snapshot();
    let slow = topology.shards[0]
        .iter()
        .find(|r| r.member.address == "s0r1")
        .unwrap()
        .clone();
    assert!(
        slow.probation.active(Instant::now()),
        "the slow replica is on probation"
    );
    let before = fakes["s0r1"].calls.load(Ordering::SeqCst);
    for _ in 0..50 {
        fanout
            .search(&request(), Instant::now() + Duration::from_millis(200))
            .await;
    }
    assert_eq!(
        fakes["s0r1"].calls.load(Ordering::SeqCst),
        before,
        "no primary calls while on probation"
    );
    // It recovers; after its probation it serves again and stays restored.
    set_delay(&fakes["s0r1"], Duration::from_millis(1));
    tokio::time::advance(Duration::from_secs(6)).await;
    for _ in 0..100 {
        fanout
            .search(&request(), Instant::now() + Duration::from_millis(200))
            .await;
    }
    assert!(fakes["s0r1"].calls.load(Ordering::SeqCst) > before + 10);
    assert!(!slow.probation.active(Instant::now()));
}

fn replica_of(fanout: &Fanout, address: &str) -> Arc<Replica> {
    fanout.routing().snapshot().shards[0]
        .iter()
        .find(|r| r.member.address == address)
        .unwrap()
        .clone()
}

/// One shard, two replicas answering in 2 ms, random choice, no hedges
/// and no probation, warmed up; then replica `s0r0` hangs (a frozen
/// process) and queries go out in the background, one every `step`, until
/// one is stranded on it. Returns the stranded queries' tasks too.
async fn strand_a_call_on_a_frozen_replica(
    step: Duration,
) -> (
    Arc<Fanout>,
    HashMap<String, Arc<Fake>>,
    Vec<tokio::task::JoinHandle<Vec<ShardResult>>>,
) {
    let config = FanoutConfig {
        hedging: false,
        replica_choice: false,
        probation: false,
        ..FanoutConfig::default()
    };
    let (fanout, fakes) = cluster(1, 2, config);
    let fanout = Arc::new(fanout);
    for fake in fakes.values() {
        set_delay(fake, Duration::from_millis(2));
    }
    warm_up(&fanout, 40).await;
    let frozen = &fakes["s0r0"];
    frozen.hang.store(true, Ordering::SeqCst);
    let before = frozen.calls.load(Ordering::SeqCst);
    let mut stranded = Vec::new();
    while frozen.calls.load(Ordering::SeqCst) == before {
        let fanout = Arc::clone(&fanout);
        stranded.push(tokio::spawn(async move {
            fanout
                .search(&request(), Instant::now() + Duration::from_secs(2))
                .await
        }));
        tokio::time::sleep(step).await;
    }
    (fanout, fakes, stranded)
}

#[tokio::test(start_paused = true)]
async fn a_replica_owing_an_answer_past_the_threshold_gets_no_primaries() {
    // Random choice, so that only the stuck rule keeps calls away from the
    // frozen replica; no hedges, so that its call stays outstanding.
    let (fanout, fakes, stranded) =
        strand_a_call_on_a_frozen_replica(Duration::from_millis(1)).await;
    let frozen = &fakes["s0r0"];
    let stuck_after = fanout.stuck_after(0);
    assert!(stuck_after < Duration::from_millis(50), "{stuck_after:?}");
    tokio::time::sleep(stuck_after + Duration::from_millis(1)).await;
    assert!(replica::is_stuck(
        &replica_of(&fanout, "s0r0"),
        StuckRule::owing(stuck_after),
        Instant::now()
    ));
    let calls = frozen.calls.load(Ordering::SeqCst);
    for _ in 0..50 {
        let results = fanout
            .search(&request(), Instant::now() + Duration::from_secs(1))
            .await;
        assert!(matches!(results[0].outcome, ShardOutcome::Answered(_)));
    }
    assert_eq!(
        frozen.calls.load(Ordering::SeqCst),
        calls,
        "no primary calls to a replica that owes an answer"
    );
    // It thaws: the stranded call is answered, and the replica is chosen
    // again.
    frozen.hang.store(false, Ordering::SeqCst);
    for task in stranded {
        let results = task.await.unwrap();
        assert!(matches!(results[0].outcome, ShardOutcome::Answered(_)));
    }
    for _ in 0..50 {
        fanout
            .search(&request(), Instant::now() + Duration::from_secs(1))
            .await;
    }
    assert!(frozen.calls.load(Ordering::SeqCst) > calls + 10);
}

#[tokio::test(start_paused = true)]
async fn a_call_that_broke_at_the_transport_is_no_answer() {
    // A frozen replica's connection closed by the keep-alive fails its
    // calls on this side: the process said nothing, so it still owes an
    // answer. An error status it sent itself is an answer.
    for (error, still_owing) in [
        (CallError::Unreachable("connection closed".into()), true),
        (CallError::Unavailable("draining".into()), false),
    ] {
        let (fanout, fakes, stranded) =
            strand_a_call_on_a_frozen_replica(Duration::from_millis(1)).await;
        let frozen = &fakes["s0r0"];
        *frozen.fail.lock() = Some(error.clone());
        frozen.hang.store(false, Ordering::SeqCst);
        for task in stranded {
            task.await.unwrap();
        }
        let owing = replica_of(&fanout, "s0r0")
            .load
            .waiting_for(Instant::now())
            .is_some();
        assert_eq!(owing, still_owing, "{error:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_replica_silent_for_one_healthy_latency_is_stuck_a_busy_one_is_not() {
    let (fanout, fakes) = cluster(1, 2, FanoutConfig::default());
    for fake in fakes.values() {
        set_delay(fake, Duration::from_millis(2));
    }
    warm_up(&fanout, 40).await;
    let rule = fanout.stuck_rule(0);
    assert!(
        rule.silent_after < rule.after,
        "silence is noticed before the owing rule: {rule:?}"
    );
    let step = rule.silent_after + Duration::from_micros(500);
    assert!(step * 2 < rule.after, "{rule:?}");
    let replica = replica_of(&fanout, "s0r0");
    let owing = StuckRule::owing(rule.after);
    tokio::time::advance(rule.after).await;

    // One call outstanding and nothing answered for longer than a healthy
    // latency: silent, so stuck, though the owing rule alone would wait.
    let outstanding = replica.load.start();
    tokio::time::advance(step).await;
    assert!(replica::is_stuck(&replica, rule, Instant::now()));
    assert!(!replica::is_stuck(&replica, owing, Instant::now()));

    // It answers another call: busy with the first, not frozen.
    replica.load.start().answered();
    assert!(!replica::is_stuck(&replica, rule, Instant::now()));
    // Quiet again for as long: silent again.
    tokio::time::advance(step).await;
    assert!(replica::is_stuck(&replica, rule, Instant::now()));
    // However busy, owing past the owing rule's threshold is stuck.
    tokio::time::advance(rule.after).await;
    replica.load.start().answered();
    assert!(replica::is_stuck(&replica, owing, Instant::now()));
    // Answering the call it owed clears it.
    outstanding.answered();
    assert!(!replica::is_stuck(&replica, rule, Instant::now()));

    // With the silence rule off, only the owing rule counts.
    let config = FanoutConfig {
        silent_replicas: false,
        ..FanoutConfig::default()
    };
    let (fanout, _) = cluster(1, 2, config);
    assert_eq!(
        fanout.stuck_rule(0),
        StuckRule::owing(fanout.stuck_after(0))
    );
}

#[tokio::test(start_paused = true)]
async fn a_frozen_replica_gets_no_primaries_after_one_healthy_latency() {
    // Random choice and no hedges, so that only the stuck rules keep calls
    // away from the frozen replica and its call stays outstanding.
    let (fanout, fakes, stranded) =
        strand_a_call_on_a_frozen_replica(Duration::from_micros(100)).await;
    let frozen = &fakes["s0r0"];
    let rule = fanout.stuck_rule(0);
    tokio::time::sleep(rule.silent_after + Duration::from_micros(200)).await;
    let replica = replica_of(&fanout, "s0r0");
    let now = Instant::now();
    assert!(
        !replica::is_stuck(&replica, StuckRule::owing(rule.after), now),
        "the owing rule alone would still send it primaries"
    );
    let replicas = fanout.routing().snapshot().shards[0].clone();
    let frozen_index = replicas
        .iter()
        .position(|r| r.member.address == "s0r0")
        .unwrap();
    for _ in 0..200 {
        let pick = replica::choose(
            &fanout.policy,
            &fanout.metrics,
            &replicas,
            &[false, false],
            rule,
        );
        assert_ne!(pick, Some(frozen_index), "a silent replica was chosen");
    }
    frozen.hang.store(false, Ordering::SeqCst);
    for task in stranded {
        let results = task.await.unwrap();
        assert!(matches!(results[0].outcome, ShardOutcome::Answered(_)));
    }
    // Thawed, it answers and is chosen again.
    let picks = (0..200)
        .filter(|_| {
            replica::choose(
                &fanout.policy,
                &fanout.metrics,
                &replicas,
                &[false, false],
                fanout.stuck_rule(0),
            ) == Some(frozen_index)
        })
        .count();
    assert!(picks > 50, "{picks} of 200 picks after the thaw");
}

#[tokio::test(start_paused = true)]
async fn light_sequential_traffic_still_reaches_both_replicas() {
    // One query at a time: neither replica is ever busy, so only the idle
    // decay of the passed-over replica's estimate sends it calls again.
    let config = FanoutConfig {
        hedging: false,
        probation: false,
        ..FanoutConfig::default()
    };
    let (fanout, fakes) = cluster(1, 2, config);
    for fake in fakes.values() {
        set_delay(fake, Duration::from_millis(1));
    }
    for _ in 0..600 {
        fanout
            .search(&request(), Instant::now() + Duration::from_secs(1))
            .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let calls: Vec<usize> = ["s0r0", "s0r1"]
        .iter()
        .map(|a| fakes[*a].calls.load(Ordering::SeqCst))
        .collect();
    assert!(
        calls.iter().all(|&n| n >= 3),
        "calls per replica over a minute of light traffic: {calls:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stall_does_not_push_the_hedge_delay_into_it() {
    // No silence rule, which would notice the stall within one healthy
    // latency and leave too few calls ending in it for this test's premise.
    let config = FanoutConfig {
        hedging: false,
        replica_choice: false,
        probation: false,
        silent_replicas: false,
        ..FanoutConfig::default()
    };
    let (fanout, fakes) = cluster(1, 2, config);
    let fanout = Arc::new(fanout);
    for fake in fakes.values() {
        set_delay(fake, Duration::from_millis(2));
    }
    warm_up(&fanout, 20).await;
    let healthy = fanout.hedge_delay(0).unwrap();
    // Replica 0 stalls for 300 ms; four queries a millisecond arrive
    // meanwhile, so that many calls end in the stall before it is noticed.
    set_delay(&fakes["s0r0"], Duration::from_millis(300));
    let mut tasks = Vec::new();
    for _ in 0..20 {
        for _ in 0..4 {
            let fanout = Arc::clone(&fanout);
            tasks.push(tokio::spawn(async move {
                fanout
                    .search(&request(), Instant::now() + Duration::from_secs(1))
                    .await
            }));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for task in tasks {
        task.await.unwrap();
    }
    let stalled = fakes["s0r0"].calls.load(Ordering::SeqCst);
    assert!(stalled > 20 / 2 + 5, "{stalled} calls to replica 0 in all");
    let delay = fanout.hedge_delay(0).unwrap();
    assert!(
        delay < healthy * 2,
        "hedge delay {delay:?}, healthy {healthy:?}"
    );
}

/// A fake leaf process serving every shard: single searches and
/// `SearchShards` calls, counted; `fail` makes every call fail.
#[derive(Default)]
struct Process {
    singles: AtomicUsize,
    batches: parking_lot::Mutex<Vec<Vec<u32>>>,
    fail: std::sync::atomic::AtomicBool,
}

fn process_answer(shard: u32, query: &str) -> SearchResponse {
    SearchResponse {
        hits: vec![Hit {
            id: format!("{query}-{shard}"),
            score: 1.0,
            shard,
            ..Hit::default()
        }],
        docs_searched: 10,
        docs_total: 10,
        shard,
        ..SearchResponse::default()
    }
}

/// One shard's client of a [`Process`].
struct OnShard(Arc<Process>, u32);

#[async_trait]
impl LeafService for OnShard {
    async fn search(
        &self,
        request: SearchRequest,
        _budget: Duration,
    ) -> Result<SearchResponse, CallError> {
        self.0.singles.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(1)).await;
        if self.0.fail.load(Ordering::SeqCst) {
            return Err(CallError::Unavailable("down".into()));
        }
        Ok(process_answer(self.1, &request.query))
    }

    async fn search_shards(
        &self,
        request: SearchRequest,
        shards: Vec<u32>,
        _budget: Duration,
    ) -> Result<Vec<proto::leaf::ShardAnswer>, CallError> {
        self.0.batches.lock().push(shards.clone());
        tokio::time::sleep(Duration::from_millis(1)).await;
        if self.0.fail.load(Ordering::SeqCst) {
            return Err(CallError::Unavailable("down".into()));
        }
        Ok(shards
            .into_iter()
            .map(|shard| proto::leaf::ShardAnswer {
                shard,
                response: Some(process_answer(shard, &request.query)),
                ..Default::default()
            })
            .collect())
    }

    async fn term_stats(&self, _: &str, _: Duration) -> Result<TermStatsResponse, CallError> {
        Err(CallError::Failed("not used".into()))
    }

    async fn info(&self, _: Duration) -> Result<InfoResponse, CallError> {
        Err(CallError::Failed("not used".into()))
    }
}

/// `shards` shards, each served by both processes `p0` and `p1`.
fn co_hosted(shards: u32, config: FanoutConfig) -> (Fanout, [Arc<Process>; 2]) {
    let processes = [Arc::new(Process::default()), Arc::new(Process::default())];
    let mut members = Vec::new();
    for shard in 0..shards {
        for p in 0..2u32 {
            members.push(Member {
                lease_id: u64::from(shard * 100 + p + 1),
                role: Role::Leaf,
                shard,
                address: format!("p{p}"),
                generation: 1,
            });
        }
    }
    let lookup = processes.clone();
    let factory: ClientFactory = Arc::new(move |member: &Member| {
        let p: usize = member.address[1..].parse().ok()?;
        Some(Arc::new(OnShard(Arc::clone(&lookup[p]), member.shard)) as Arc<dyn LeafService>)
    });
    let routing = Routing::new(shards, factory);
    routing.apply(&members);
    let metrics = Arc::new(Metrics::new(prometheus::Registry::new()).unwrap());
    (Fanout::new(routing, config, metrics), processes)
}

fn batches(processes: &[Arc<Process>; 2]) -> Vec<Vec<u32>> {
    processes
        .iter()
        .flat_map(|p| p.batches.lock().clone())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn shards_of_one_process_are_searched_with_one_call() {
    let (fanout, processes) = co_hosted(3, FanoutConfig::default());
    for i in 0..40 {
        let results = fanout
            .search(
                &SearchRequest {
                    query: format!("q{i}"),
                    ..request()
                },
                Instant::now() + Duration::from_millis(100),
            )
            .await;
        for (shard, result) in results.iter().enumerate() {
            match &result.outcome {
                ShardOutcome::Answered(response) => {
                    assert_eq!(response.hits[0].id, format!("q{i}-{shard}"))
                }
                other => panic!("shard {shard}: {other:?}"),
            }
        }
    }
    let sent = batches(&processes);
    assert_eq!(sent.len(), 40, "one call per search");
    assert!(sent.iter().all(|shards| shards == &[0, 1, 2]), "{sent:?}");
    assert_eq!(
        processes
            .iter()
            .map(|p| p.singles.load(Ordering::SeqCst))
            .sum::<usize>(),
        0
    );
    assert_eq!(fanout.metrics.shard_batches.get(), 40);
    assert_eq!(fanout.metrics.shard_batch_shards.get(), 120);

    // Off: a call per shard.
    let (fanout, processes) = co_hosted(
        3,
        FanoutConfig {
            batch_shards: false,
            ..FanoutConfig::default()
        },
    );
    for _ in 0..10 {
        fanout
            .search(&request(), Instant::now() + Duration::from_millis(100))
            .await;
    }
    assert!(batches(&processes).is_empty());
    assert_eq!(
        processes
            .iter()
            .map(|p| p.singles.load(Ordering::SeqCst))
            .sum::<usize>(),
        30
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_shared_call_is_retried_shard_by_shard_elsewhere() {
    // Uniform choice: the failing process is picked about every other time.
    let config = FanoutConfig {
        replica_choice: false,
        probation: false,
        ..FanoutConfig::default()
    };
    let (fanout, processes) = co_hosted(3, config);
    processes[0].fail.store(true, Ordering::SeqCst);
    let mut batched_on_failing = 0;
    for _ in 0..20 {
        let before = processes[0].batches.lock().len();
        let results = fanout
            .search(&request(), Instant::now() + Duration::from_millis(100))
            .await;
        assert!(
            results
                .iter()
                .all(|r| matches!(r.outcome, ShardOutcome::Answered(_))),
            "{results:?}"
        );
        batched_on_failing += processes[0].batches.lock().len() - before;
    }
    // Whenever the shared call went to the failing process, each shard was
    // retried alone on the other.
    assert!(
        batched_on_failing > 0,
        "the failing process was never chosen"
    );
    assert_eq!(
        processes[1].singles.load(Ordering::SeqCst),
        3 * batched_on_failing
    );
}

#[tokio::test(start_paused = true)]
async fn every_shard_of_a_shared_call_learns_that_its_process_answers_again() {
    let config = FanoutConfig {
        probation: false,
        ..FanoutConfig::default()
    };
    let (fanout, processes) = co_hosted(3, config);
    // Both processes cut off: every call fails, shared or single.
    for process in &processes {
        process.fail.store(true, Ordering::SeqCst);
    }
    fanout
        .search(&request(), Instant::now() + Duration::from_millis(100))
        .await;
    tokio::time::advance(crate::cluster::topology::UNREACHABLE_AFTER + Duration::from_millis(1))
        .await;
    for process in &processes {
        process.fail.store(false, Ordering::SeqCst);
    }
    // Load estimates inflated by the cut, then one search after the heal.
    let topology = fanout.routing().snapshot();
    for replica in topology.shards.iter().flatten() {
        replica.load.observe(Duration::from_millis(200));
    }
    let before: Vec<usize> = processes.iter().map(|p| p.batches.lock().len()).collect();
    let results = fanout
        .search(&request(), Instant::now() + Duration::from_millis(100))
        .await;
    assert!(results
        .iter()
        .all(|r| matches!(r.outcome, ShardOutcome::Answered(_))));
    let healed = (0..2)
        .find(|&p| processes[p].batches.lock().len() > before[p])
        .expect("one shared call after the heal");
    // Every shard's replica in the process that answered is reset, not
    // only the one whose client made the call.
    for (shard, replicas) in topology.shards.iter().enumerate() {
        let replica = replicas
            .iter()
            .find(|r| r.member.address == format!("p{healed}"))
            .unwrap();
        assert!(
            replica.load.estimate() < Duration::from_millis(50),
            "shard {shard}: {:?}",
            replica.load.estimate()
        );
    }
}
