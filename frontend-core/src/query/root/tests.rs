//! The root search over in-process fake leaves and logical time.

use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use lease::{Member, Role};
use proto::leaf::{Hit, InfoResponse, SearchResponse, TermStatsResponse};

use super::*;
use crate::cluster::leaf_client::{CallError, LeafService};
use crate::cluster::topology::{ClientFactory, Routing};
use crate::query::fanout::FanoutConfig;

/// A leaf that answers after `delay`.
struct Slow {
    delay: Duration,
    calls: AtomicUsize,
}

#[async_trait]
impl LeafService for Slow {
    async fn search(
        &self,
        request: SearchRequest,
        _budget: Duration,
    ) -> Result<SearchResponse, CallError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
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
        Ok(InfoResponse::default())
    }
}

/// A root over one shard served by one leaf that takes `delay`.
fn root_over_one_slow_leaf(delay: Duration) -> (Root, Arc<Slow>) {
    let leaf = Arc::new(Slow {
        delay,
        calls: AtomicUsize::new(0),
    });
    let config = RootConfig {
        global_stats: false,
        ..RootConfig::default()
    };
    (
        root_over(Arc::clone(&leaf) as Arc<dyn LeafService>, config),
        leaf,
    )
}

/// A root with `config` over one shard served by `leaf`, no hedging.
fn root_over(leaf: Arc<dyn LeafService>, config: RootConfig) -> Root {
    let factory: ClientFactory = Arc::new(move |_: &Member| Some(Arc::clone(&leaf)));
    let routing = Routing::new(1, factory);
    routing.apply(&[Member {
        lease_id: 1,
        role: Role::Leaf,
        shard: 0,
        address: "s0r0".into(),
        generation: 1,
    }]);
    let metrics = Arc::new(Metrics::new(prometheus::Registry::new()).unwrap());
    let fanout = Arc::new(Fanout::new(
        routing,
        FanoutConfig {
            hedging: false,
            ..FanoutConfig::default()
        },
        Arc::clone(&metrics),
    ));
    let stats = Arc::new(TermStatsCache::new(1 << 20, 100));
    Root::new(config, fanout, None, stats, metrics)
}

fn params(timeout_ms: u64) -> SearchParams {
    SearchParams {
        q: "json schema tool".into(),
        k: 10,
        timeout_ms,
        allow_partial: true,
        nocache: false,
    }
}

/// Runs `first` now and `second` 10 ms later through the coalescer, as two
/// identical cache misses would be.
async fn two_identical_misses(
    root: Arc<Root>,
    first: u64,
    second: u64,
) -> (Arc<Merged>, Arc<Merged>) {
    let run = |timeout_ms: u64| {
        let root = Arc::clone(&root);
        tokio::spawn(async move {
            let now = Instant::now();
            let window = Window::new(now, now + Duration::from_millis(timeout_ms));
            root.coalesced("key".into(), &params(timeout_ms), window)
                .await
                .unwrap()
        })
    };
    let a = run(first);
    tokio::time::sleep(Duration::from_millis(10)).await;
    let b = run(second);
    (a.await.unwrap(), b.await.unwrap())
}

#[tokio::test(start_paused = true)]
async fn a_longer_budget_is_not_cut_short_by_a_shorter_fan_out_in_flight() {
    let (root, leaf) = root_over_one_slow_leaf(Duration::from_millis(300));
    let (short, long) = two_identical_misses(Arc::new(root), 60, 3000).await;
    assert_eq!(
        short.coverage.shards_answered, 0,
        "60 ms cannot wait 300 ms"
    );
    assert_eq!(long.coverage.shards_answered, 1, "3 s is plenty for 300 ms");
    assert!(!long.partial);
    assert_eq!(
        leaf.calls.load(Ordering::SeqCst),
        2,
        "it ran its own fan-out"
    );
}

#[tokio::test(start_paused = true)]
async fn a_shorter_budget_joins_a_longer_fan_out() {
    let (root, leaf) = root_over_one_slow_leaf(Duration::from_millis(20));
    let (long, short) = two_identical_misses(Arc::new(root), 3000, 60).await;
    assert_eq!(long.coverage.shards_answered, 1);
    assert_eq!(short.coverage.shards_answered, 1);
    assert_eq!(leaf.calls.load(Ordering::SeqCst), 1, "one fan-out for both");
}

#[tokio::test(start_paused = true)]
async fn identical_budgets_a_little_apart_still_share_one_complete_fan_out() {
    let (root, leaf) = root_over_one_slow_leaf(Duration::from_millis(20));
    let (a, b) = two_identical_misses(Arc::new(root), 500, 500).await;
    assert_eq!(a.coverage.shards_answered, 1);
    assert_eq!(b.coverage.shards_answered, 1);
    assert_eq!(leaf.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_joiner_left_with_time_after_an_incomplete_shared_fan_out_carries_on() {
    // Both ask 100 ms; the second arrives 10 ms later and joins (same
    // budget). The leaf takes 105 ms: the shared fan-out gives up at its
    // deadline, and the joiner spends its last 10 ms on a fan-out of its
    // own rather than answering early.
    let (root, leaf) = root_over_one_slow_leaf(Duration::from_millis(105));
    let (a, b) = two_identical_misses(Arc::new(root), 100, 100).await;
    assert_eq!(a.coverage.shards_answered, 0);
    assert_eq!(b.coverage.shards_answered, 0);
    assert_eq!(leaf.calls.load(Ordering::SeqCst), 2);
}

/// A leaf with corpus-wide statistics for `json` (twelve listed body
/// matches) that records the floor of every search. `stale` makes it answer
/// a floored search as a shard on another generation than its statistics
/// would: with hits below the floor, without their snippets. Every search
/// takes [`FLOORED_LATENCY`].
struct Floored {
    stale: bool,
    floors: std::sync::Mutex<Vec<Option<f32>>>,
}

#[async_trait]
impl LeafService for Floored {
    async fn search(
        &self,
        request: SearchRequest,
        _budget: Duration,
    ) -> Result<SearchResponse, CallError> {
        self.floors.lock().unwrap().push(request.score_floor);
        tokio::time::sleep(FLOORED_LATENCY).await;
        let (score, snippet) = match request.score_floor {
            Some(floor) if self.stale => (floor / 2.0, ""),
            _ => (100.0, "<b>json</b>"),
        };
        Ok(SearchResponse {
            hits: (0..10)
                .map(|i| Hit {
                    id: format!("doc-{i}"),
                    score,
                    title: format!("title {i}"),
                    snippet: snippet.into(),
                    shard: 0,
                })
                .collect(),
            docs_searched: 100,
            docs_total: 100,
            generation: 1,
            global_stats: true,
            ..SearchResponse::default()
        })
    }

    async fn term_stats(&self, _: &str, _: Duration) -> Result<TermStatsResponse, CallError> {
        let top = (0..12)
            .map(|doc| proto::leaf::Impact {
                doc,
                term_freq: 1 + doc as u32 % 3,
                field_length: 10,
            })
            .collect();
        Ok(TermStatsResponse {
            shard: 0,
            generation: 1,
            stats: Some(proto::leaf::CorpusStats {
                num_docs: 100,
                fields: ["body", "title"]
                    .map(|field| proto::leaf::FieldStats {
                        field: field.into(),
                        total_tokens: 1000,
                    })
                    .into(),
                terms: vec![proto::leaf::TermStat {
                    field: "body".into(),
                    term: "json".into(),
                    doc_freq: 12,
                    top,
                }],
                layout: 7,
            }),
        })
    }

    async fn info(&self, _: Duration) -> Result<InfoResponse, CallError> {
        Ok(InfoResponse::default())
    }
}

const FLOORED_LATENCY: Duration = Duration::from_millis(50);

/// A root with corpus-wide statistics over one [`Floored`] leaf.
fn root_over_one_floored_leaf(stale: bool) -> (Root, Arc<Floored>) {
    let leaf = Arc::new(Floored {
        stale,
        floors: Default::default(),
    });
    let config = RootConfig {
        canary: CanaryConfig {
            enabled: false,
            ..CanaryConfig::default()
        },
        ..RootConfig::default()
    };
    (
        root_over(Arc::clone(&leaf) as Arc<dyn LeafService>, config),
        leaf,
    )
}

fn floor_count(root: &Root, result: FloorResult) -> u64 {
    root.metrics
        .score_floors
        .with_label_values(&[result.label()])
        .get()
}

/// `q` searched with a second of budget; the answer must come.
async fn search_q(root: &Root, q: &str) -> Answer {
    root.search(&SearchParams {
        q: q.into(),
        ..params(1000)
    })
    .await
    .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_query_of_free_words_sends_the_leaves_a_score_floor() {
    let (root, leaf) = root_over_one_floored_leaf(false);
    let answer = search_q(&root, "json").await;
    assert!(!answer.partial && answer.global_stats);
    let floors = leaf.floors.lock().unwrap().clone();
    assert_eq!(floors.len(), 1);
    assert!(floors[0].is_some_and(|floor| floor > 0.0), "{floors:?}");
    assert_eq!(floor_count(&root, FloorResult::Sent), 1);

    // Phrases, `+` and `-` get none.
    for q in ["\"json parser\"", "+json", "json -parser", "json^3"] {
        search_q(&root, q).await;
    }
    let floors = leaf.floors.lock().unwrap().clone();
    assert_eq!(floors[1..], [None; 4], "{floors:?}");
    assert_eq!(floor_count(&root, FloorResult::None), 4);
}

#[tokio::test(start_paused = true)]
async fn a_complete_answer_with_a_hit_below_the_floor_is_fetched_again_without_it() {
    let (root, leaf) = root_over_one_floored_leaf(true);
    let answer = search_q(&root, "json").await;
    assert!(!answer.partial);
    assert_eq!(answer.hits.len(), 10);
    assert!(answer.hits.iter().all(|hit| hit.snippet == "<b>json</b>"));
    let floors = leaf.floors.lock().unwrap().clone();
    assert_eq!(floors.len(), 2, "{floors:?}");
    assert!(floors[0].is_some() && floors[1].is_none(), "{floors:?}");
    assert_eq!(floor_count(&root, FloorResult::Missed), 1);
    // Both fan-outs were time spent waiting on the leaf, not the root's own
    // overhead (paused time: the root's own work takes none).
    assert_eq!(root.metrics.overhead.get_sample_count(), 1);
    let overhead = root.metrics.overhead.get_sample_sum();
    assert!(overhead < FLOORED_LATENCY.as_secs_f64() / 2.0, "{overhead}");
}

/// What a tracing subscriber wrote, for the slow-query log's tests.
#[derive(Clone, Default)]
struct Captured(Arc<parking_lot::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test(start_paused = true)]
async fn a_search_slower_than_the_threshold_is_logged_with_its_stages() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let config = RootConfig {
        global_stats: false,
        slow_query: Some(Duration::from_millis(60)),
        ..RootConfig::default()
    };
    let mut stage_counts = Vec::new();
    for (delay_ms, q) in [(5, "left pad"), (50, "json parser")] {
        let leaf = Arc::new(Slow {
            delay: Duration::from_millis(delay_ms),
            calls: AtomicUsize::new(0),
        });
        let root = root_over(leaf, config.clone());
        let params = SearchParams {
            q: q.into(),
            ..params(2000)
        };
        root.search(&params).await.unwrap();
        if delay_ms == 50 {
            // Known-good now: no canary, 50 ms, under the threshold.
            root.search(&params).await.unwrap();
        }
        let count = |stage: &str| {
            root.metrics
                .stages
                .with_label_values(&[stage])
                .get_sample_count()
        };
        stage_counts.push((count("canary"), count("stats"), count("gather")));
    }
    assert_eq!(
        stage_counts,
        vec![(1, 1, 1), (1, 2, 2)],
        "a known-good query has no canary stage"
    );
    let text = String::from_utf8(captured.0.lock().clone()).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("slow query")).collect();
    // The first-seen slow query: a 50 ms canary, then a 50 ms fan-out; the
    // fast one and the known-good one are under 60 ms.
    assert_eq!(lines.len(), 1, "{text}");
    let fingerprint = format!("{:016x}", crate::query::canary::fingerprint("json parser"));
    for line in lines {
        assert!(
            line.contains(&format!("fingerprint={fingerprint}")),
            "{line}"
        );
        assert!(line.contains("took_ms=100"), "{line}");
        assert!(line.contains("canary_ms=50"), "{line}");
        assert!(line.contains("gather_ms=50"), "{line}");
        assert!(!line.contains("json"), "the text is never logged: {line}");
    }
}
