//! A real leaf on loopback, called with tonic clients: Search, Info,
//! TermStats, health, deadlines, cancellation, faults, restart and kill.
//!
//! Nothing here asserts on wall-clock speed: waits poll counters with
//! generous limits, so a busy 2-core machine is slow, not flaky.

use std::sync::Arc;
use std::time::Duration;

use leaf::{generate_corpus, CorpusSource, Document, LeafConfig, LeafHandle};
use proto::leaf::leaf_client::LeafClient;
use proto::leaf::{InfoRequest, SearchRequest, SearchResponse, TermStatsRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Code, Request};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

const LEAF_SERVICE: &str = "search.leaf.v1.Leaf";
/// The longest any wait in these tests may take before failing.
const PATIENCE: Duration = Duration::from_secs(30);

fn corpus() -> CorpusSource {
    static DOCS: std::sync::OnceLock<Arc<Vec<Document>>> = std::sync::OnceLock::new();
    CorpusSource::Documents(Arc::clone(
        DOCS.get_or_init(|| Arc::new(generate_corpus(2000, 99))),
    ))
}

async fn start_leaf(config: LeafConfig) -> LeafHandle {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    leaf::start(config, corpus(), listener, None, CancellationToken::new())
        .await
        .unwrap()
}

async fn channel(addr: std::net::SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

async fn client(handle: &LeafHandle) -> LeafClient<Channel> {
    LeafClient::new(channel(handle.addr()).await)
}

fn search(query: &str, k: u32) -> SearchRequest {
    SearchRequest {
        query: query.to_string(),
        k,
        stats: None,
        score_floor: None,
        shard: None,
    }
}

/// Polls `condition` until it holds, failing after [`PATIENCE`].
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let start = tokio::time::Instant::now();
    while !condition() {
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn metric(handle: &LeafHandle, line_prefix: &str) -> Option<f64> {
    svc::metrics::encode(handle.registry())
        .lines()
        .find(|line| line.starts_with(line_prefix))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

#[tokio::test]
async fn search_info_term_stats_and_health() {
    let handle = start_leaf(LeafConfig::new(0, 2)).await;
    let mut leaf = client(&handle).await;

    let info = leaf
        .info(InfoRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!((info.shard, info.shards), (0, 2));
    assert_eq!(info.num_docs, handle.num_docs());
    assert!(info.num_docs > 500 && info.num_docs < 1500);
    assert_eq!(info.generation, handle.generation());

    let found: SearchResponse = leaf
        .search(search("json parser", 10))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.hits.len(), 10);
    assert!(found.hits[0].snippet.contains("<b>"));
    assert!(found.hits.iter().all(|hit| hit.shard == 0));
    assert_eq!(found.docs_searched, found.docs_total);
    assert_eq!(found.docs_total, info.num_docs);
    assert!(!found.early_terminated && !found.global_stats);
    assert_eq!(found.generation, info.generation);

    // Scoring with the shard's own statistics sent back is the same search.
    let stats = leaf
        .term_stats(TermStatsRequest {
            query: "json parser".to_string(),
            shard: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((stats.shard, stats.generation), (0, info.generation));
    let stats = stats.stats.unwrap();
    assert_eq!(stats.num_docs, info.num_docs);
    assert!(stats
        .terms
        .iter()
        .any(|t| t.term == "parser" && t.doc_freq > 0));
    let global = leaf
        .search(SearchRequest {
            stats: Some(stats),
            ..search("json parser", 10)
        })
        .await
        .unwrap()
        .into_inner();
    assert!(global.global_stats);
    let ids = |r: &SearchResponse| r.hits.iter().map(|h| h.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&global), ids(&found));

    // Bad input is INVALID_ARGUMENT, never INTERNAL.
    for request in [
        search("json", 0),
        search("json", 1001),
        search("", 10),
        search("nosuchfield:json", 10),
    ] {
        let status = leaf.search(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    }
    let status = leaf
        .term_stats(TermStatsRequest {
            query: "(".repeat(100),
            shard: None,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(handle.stats().invalid, 4);
    assert_eq!(handle.stats().searches, 2);

    let mut health = HealthClient::new(channel(handle.addr()).await);
    for service in ["", LEAF_SERVICE] {
        let status = health
            .check(HealthCheckRequest {
                service: service.to_string(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }

    assert_eq!(
        metric(&handle, "leaf_search_requests_total{outcome=\"ok\""),
        Some(2.0)
    );
    assert_eq!(
        metric(&handle, "leaf_index_documents"),
        Some(info.num_docs as f64)
    );
    handle.stop().await;
}

#[tokio::test]
async fn deadlines_from_the_grpc_timeout_header() {
    // A reply margin longer than the deadline makes the scoring budget
    // already spent when the search starts: a deterministic early stop.
    let handle = start_leaf(LeafConfig {
        reply_margin: Duration::from_secs(3600),
        ..LeafConfig::new(0, 1)
    })
    .await;
    let mut leaf = client(&handle).await;

    let mut request = Request::new(search("with", 10));
    request.set_timeout(Duration::from_secs(20));
    let partial = leaf.search(request).await.unwrap().into_inner();
    assert!(partial.early_terminated);
    assert!(partial.docs_searched < partial.docs_total);
    assert_eq!(handle.stats().early_stops, 1);

    // Without a deadline the same search covers everything.
    let full = leaf.search(search("with", 10)).await.unwrap().into_inner();
    assert!(!full.early_terminated);
    assert_eq!(full.docs_searched, full.docs_total);

    // Less than a millisecond left: refused without starting work. (tonic's
    // own timeout layer answers CANCELLED if it fires first.)
    let mut request = Request::new(search("with", 10));
    request.set_timeout(Duration::from_micros(100));
    let status = leaf.search(request).await.unwrap_err();
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{status:?}"
    );
    eventually("deadline counted", || handle.stats().deadline_exceeded == 1).await;
    handle.stop().await;
}

#[tokio::test]
async fn delay_that_outlasts_the_deadline_is_deadline_exceeded() {
    let handle = start_leaf(LeafConfig::new(0, 1)).await;
    handle.faults().set_delay(Duration::from_secs(3600), 1.0);
    let mut leaf = client(&handle).await;
    let mut request = Request::new(search("json", 10));
    request.set_timeout(Duration::from_millis(300));
    let status = leaf.search(request).await.unwrap_err();
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{status:?}"
    );
    eventually("deadline counted", || handle.stats().deadline_exceeded == 1).await;
    assert_eq!(handle.stats().searches, 0);
    handle.faults().clear();
    leaf.search(search("json", 10)).await.unwrap();
    handle.stop().await;
}

#[tokio::test]
async fn a_cancelled_call_is_counted_as_cancelled() {
    let handle = start_leaf(LeafConfig::new(0, 1)).await;
    handle.faults().set_hang(true);
    let mut leaf = client(&handle).await;
    let call = tokio::spawn(async move { leaf.search(search("json", 10)).await });
    eventually("the call to hang", || {
        metric(&handle, "leaf_faults_injected_total{kind=\"hang\"") == Some(1.0)
    })
    .await;
    // Dropping the client future resets the stream, as a lost hedge does.
    call.abort();
    eventually("the leaf to see the cancellation", || {
        handle.stats().cancelled == 1
    })
    .await;
    assert_eq!(
        metric(&handle, "leaf_search_requests_total{outcome=\"cancelled\""),
        Some(1.0)
    );

    // Released, the leaf answers again.
    handle.faults().set_hang(false);
    let mut leaf = client(&handle).await;
    leaf.search(search("json", 10)).await.unwrap();
    assert_eq!(handle.stats().searches, 1);
    handle.stop().await;
}

#[tokio::test]
async fn held_searches_queue_behind_the_slots() {
    // One slot held 1 s by every search: three calls at once run one at a
    // time, the other two wait in the leaf's queue, and all three answer.
    let mut config = LeafConfig::new(0, 1);
    config.limits.max_concurrent = 1;
    config.limits.max_queue_wait = Duration::from_secs(20);
    config.faults.hold = Duration::from_secs(1);
    let handle = start_leaf(config).await;
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let addr = handle.addr();
            tokio::spawn(async move {
                let mut leaf = LeafClient::new(channel(addr).await);
                leaf.search(search("json", 10)).await
            })
        })
        .collect();
    eventually("two searches to queue behind the held slot", || {
        metric(&handle, "leaf_queue_depth") == Some(2.0)
            && metric(&handle, "leaf_searches_in_flight") == Some(1.0)
    })
    .await;
    let mut most_queued = 0;
    for call in calls {
        let response = call.await.unwrap().unwrap().into_inner();
        assert!(!response.hits.is_empty());
        most_queued = most_queued.max(response.queued);
    }
    // The first answer reports a queue the others were still in.
    assert!(most_queued >= 1, "no answer reported a queue");
    assert_eq!(handle.stats().searches, 3);
    handle.stop().await;
}

#[tokio::test]
async fn injected_errors_are_unavailable() {
    let handle = start_leaf(LeafConfig::new(0, 1)).await;
    let mut leaf = client(&handle).await;
    handle.faults().set_error_fraction(1.0);
    let status = leaf.search(search("json", 10)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(status.message(), "injected fault");
    // Info keeps answering: faults only act on Search.
    leaf.info(InfoRequest::default()).await.unwrap();
    handle.faults().set_error_fraction(0.0);
    leaf.search(search("json", 10)).await.unwrap();
    assert_eq!(handle.stats().errors, 1);
    handle.stop().await;
}

#[tokio::test]
async fn graceful_stop_reports_not_serving() {
    let handle = start_leaf(LeafConfig {
        drain_timeout: Duration::from_millis(500),
        ..LeafConfig::new(0, 1)
    })
    .await;
    let mut health = HealthClient::new(channel(handle.addr()).await);
    let mut watch = health
        .watch(HealthCheckRequest {
            service: LEAF_SERVICE.to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);
    let addr = handle.addr();
    let stopping = tokio::spawn(handle.stop());
    let next = tokio::time::timeout(PATIENCE, watch.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(next.status, ServingStatus::NotServing as i32);
    // The open watch stream outlives the drain timeout; stop still returns.
    tokio::time::timeout(PATIENCE, stopping)
        .await
        .unwrap()
        .unwrap();
    assert!(LeafClient::connect(format!("http://{addr}")).await.is_err());
}

#[tokio::test]
async fn killed_leaf_resets_its_connections() {
    let handle = start_leaf(LeafConfig::new(0, 1)).await;
    let addr = handle.addr();
    let mut leaf = client(&handle).await;
    leaf.info(InfoRequest::default()).await.unwrap();
    handle.kill();
    let status = tokio::time::timeout(PATIENCE, async {
        loop {
            // The reset may race with a call already on the wire.
            if let Err(status) = leaf.info(InfoRequest::default()).await {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    // tonic reports a reset connection as UNKNOWN "transport error".
    assert!(
        matches!(status.code(), Code::Unavailable | Code::Unknown),
        "{status:?}"
    );
    // The listener goes away too (aborting a task takes effect when the
    // runtime next schedules it).
    tokio::time::timeout(PATIENCE, async {
        while tokio::net::TcpStream::connect(addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn restart_from_index_dir_keeps_the_generation() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = LeafConfig::new(1, 3);
    config.index.dir = Some(dir.path().join("leaf-1-of-3"));
    let first = start_leaf(config.clone()).await;
    let generation = first.generation();
    let num_docs = first.num_docs();
    first.stop().await;

    let again = start_leaf(config).await;
    assert_eq!(again.generation(), generation);
    let info = client(&again)
        .await
        .info(InfoRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!((info.generation, info.num_docs), (generation, num_docs));
    again.stop().await;
}

#[tokio::test]
async fn metrics_endpoint_serves_prometheus_text() {
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_addr = metrics.local_addr().unwrap();
    let handle = leaf::start(
        LeafConfig::new(0, 1),
        corpus(),
        grpc,
        Some(metrics),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let get = |path: &'static str| async move {
        let mut stream = tokio::net::TcpStream::connect(metrics_addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.0\r\nHost: leaf\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    };
    let text = get("/metrics").await;
    assert!(text.starts_with("HTTP/1.0 200"), "{text}");
    for name in [
        "leaf_search_requests_total",
        "leaf_search_duration_seconds_bucket",
        "leaf_docs_searched_total",
        "leaf_early_stops_total",
        "leaf_searches_in_flight",
        "leaf_queue_depth",
        "leaf_rejections_total",
        "leaf_index_documents",
        "leaf_index_generation",
        "leaf_index_build_duration_seconds",
    ] {
        assert!(text.contains(name), "{name} missing");
    }
    assert!(get("/readyz").await.starts_with("HTTP/1.0 200"));
    handle.stop().await;
}

/// A search run on the gRPC task (few postings) answers exactly as one
/// handed to the blocking pool: same hits, scores, titles, snippets and
/// accounting, with shard-local and with corpus-wide statistics; and each
/// leaf really took the path it was configured for.
#[tokio::test]
async fn inline_searches_answer_as_handed_off_ones() {
    let inline = start_leaf(LeafConfig {
        inline_postings: u64::MAX,
        ..LeafConfig::new(0, 2)
    })
    .await;
    let handed_off = start_leaf(LeafConfig {
        inline_postings: 0,
        ..LeafConfig::new(0, 2)
    })
    .await;
    let (mut a, mut b) = (client(&inline).await, client(&handed_off).await);
    let mut queries = leaf::sample_queries(60, 5);
    queries.extend(["\"json parser\"".to_string(), "+json -xml".to_string()]);
    let mut searches = 0.0;
    for query in &queries {
        let stats = a
            .term_stats(TermStatsRequest {
                query: query.clone(),
                shard: None,
            })
            .await
            .unwrap()
            .into_inner()
            .stats;
        assert_eq!(
            stats,
            b.term_stats(TermStatsRequest {
                query: query.clone(),
                shard: None,
            })
            .await
            .unwrap()
            .into_inner()
            .stats,
            "{query}"
        );
        for stats in [None, stats] {
            let request = SearchRequest {
                stats,
                ..search(query, 10)
            };
            let one = a.search(request.clone()).await.unwrap().into_inner();
            let two = b.search(request).await.unwrap().into_inner();
            let plain = |r: SearchResponse| SearchResponse {
                in_flight: 0,
                queued: 0,
                service_us: 0,
                ..r
            };
            assert_eq!(plain(one), plain(two), "{query}");
            searches += 1.0;
        }
    }
    assert!(searches > 100.0);
    assert_eq!(
        metric(&inline, "leaf_inline_searches_total"),
        Some(searches)
    );
    assert_eq!(metric(&handed_off, "leaf_inline_searches_total"), Some(0.0));
    inline.stop().await;
    handed_off.stop().await;
}

#[tokio::test]
async fn hits_below_the_score_floor_come_without_snippets() {
    let handle = start_leaf(LeafConfig::new(0, 2)).await;
    let mut leaf = client(&handle).await;
    let stats = leaf
        .term_stats(TermStatsRequest {
            query: "json parser".to_string(),
            shard: None,
        })
        .await
        .unwrap()
        .into_inner()
        .stats;
    let request = SearchRequest {
        stats,
        ..search("json parser", 10)
    };
    let full = leaf.search(request.clone()).await.unwrap().into_inner();
    assert_eq!(full.hits.len(), 10);
    assert!(full.hits.iter().all(|hit| !hit.snippet.is_empty()));
    let floor = full.hits[3].score;
    let below = full.hits.iter().filter(|hit| hit.score < floor).count();
    assert!(below > 0);
    let floored = leaf
        .search(SearchRequest {
            score_floor: Some(floor),
            ..request
        })
        .await
        .unwrap()
        .into_inner();
    for (got, want) in floored.hits.iter().zip(&full.hits) {
        assert_eq!(
            (&got.id, got.score, &got.title),
            (&want.id, want.score, &want.title)
        );
        if want.score < floor {
            assert_eq!(got.snippet, "");
        } else {
            assert_eq!(got.snippet, want.snippet);
        }
    }
    assert_eq!(floored.hits.len(), full.hits.len());
    assert_eq!(
        metric(&handle, "leaf_snippets_skipped_total"),
        Some(below as f64)
    );
    assert_eq!(metric(&handle, "leaf_hits_total"), Some(20.0));
}
