//! The serving path end to end: a sharded index behind the frontend, under
//! deadlines, with slow and dead leaves, and every kind of bad input.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;
use tests::TestCluster;

/// Ids of documents whose title or body contains `term` as a token, by a
/// brute-force scan (the same tokenization rule as the index: split on
/// non-alphanumeric characters, lowercase).
fn brute_force(docs: &[leaf::Document], term: &str) -> BTreeSet<String> {
    let has = |text: &str| {
        text.split(|c: char| !c.is_alphanumeric())
            .any(|token| token.to_lowercase() == term)
    };
    docs.iter()
        .filter(|d| has(&d.title) || has(&d.body))
        .map(|d| d.id.clone())
        .collect()
}

fn ids(body: &Value) -> BTreeSet<String> {
    body["hits"]
        .as_array()
        .expect("hits")
        .iter()
        .map(|h| h["id"].as_str().expect("id").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_answers_hold_exactly_the_matching_documents() {
    let cluster = TestCluster::builder().shards(4).build().await;
    let docs = cluster.documents().clone();
    let mut checked = 0;
    for term in [
        "json", "parser", "http", "server", "logger", "react", "stream", "color",
    ] {
        let expected = brute_force(&docs, term);
        assert!(
            expected.len() <= 1000,
            "{term} matches too much for one page"
        );
        let (status, body) = cluster
            .search(&format!("q={term}&k=1000&timeout_ms=5000"))
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["partial"], false, "{body}");
        assert_eq!(ids(&body), expected, "query {term}");
        checked += expected.len();
        // Hits come from the shard their id hashes to.
        for hit in body["hits"].as_array().unwrap() {
            let id = hit["id"].as_str().unwrap();
            assert_eq!(hit["shard"].as_u64().unwrap() as u32, leaf::shard_of(id, 4));
        }
    }
    assert!(
        checked > 50,
        "the queries should match something ({checked})"
    );

    // Required and excluded terms.
    let (status, body) = cluster
        .search("q=%2Bjson+-parser&k=1000&timeout_ms=5000")
        .await;
    assert_eq!(status, 200);
    let expected: BTreeSet<_> = brute_force(&docs, "json")
        .difference(&brute_force(&docs, "parser"))
        .cloned()
        .collect();
    assert_eq!(ids(&body), expected);

    // Scores descend, ties broken by id.
    let (_, body) = cluster.search("q=json+parser&k=50&timeout_ms=5000").await;
    let hits = body["hits"].as_array().unwrap();
    for pair in hits.windows(2) {
        let (a, b) = (
            pair[0]["score"].as_f64().unwrap(),
            pair[1]["score"].as_f64().unwrap(),
        );
        assert!(a > b || (a == b && pair[0]["id"].as_str() < pair[1]["id"].as_str()));
    }
    let coverage = &body["coverage"];
    assert_eq!(coverage["shards_total"], 4);
    assert_eq!(coverage["shards_answered"], 4);
    assert_eq!(coverage["docs_total"], docs.len() as u64);
    assert_eq!(coverage["docs_searched"], docs.len() as u64);
    assert_eq!(coverage["percent"], 100.0);
    assert_eq!(body["estimated_recall"], 1.0);
    assert!(
        hits[0]["snippet"].as_str().unwrap().contains("<b>"),
        "{}",
        hits[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaf_slower_than_the_deadline_makes_a_partial_answer_without_waiting() {
    let cluster = TestCluster::builder()
        .shards(4)
        .frontend(|c| c.fanout.hedging = false)
        .build()
        .await;
    cluster
        .leaf(2, 0)
        .faults()
        .set_delay(Duration::from_secs(3), 1.0);
    let started = std::time::Instant::now();
    let (status, body) = cluster.search("q=json&timeout_ms=200").await;
    let elapsed = started.elapsed();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["partial"], true);
    let coverage = &body["coverage"];
    assert_eq!(coverage["shards_timed_out"], 1, "{body}");
    assert_eq!(coverage["shards_answered"], 3);
    assert!(coverage["percent"].as_f64().unwrap() < 100.0);
    assert!(body["estimated_recall"].as_f64().unwrap() < 1.0);
    // It did not wait for the 3 s leaf (generous bound for a busy machine).
    assert!(elapsed < Duration::from_millis(2500), "{elapsed:?}");
    let shard = body["shards"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["shard"] == 2)
        .unwrap()
        .clone();
    assert_eq!(shard["state"], "timed_out");

    // allow_partial=false turns it into a 503 carrying the coverage.
    let (status, body) = cluster
        .search("q=json&timeout_ms=200&allow_partial=false")
        .await;
    assert_eq!(status, 503);
    assert_eq!(body["error"]["code"], "partial");
    assert_eq!(body["coverage"]["shards_timed_out"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_leaf_is_a_failed_shard() {
    // A static leaf list: the dead leaf stays routed and its calls fail.
    let mut cluster = TestCluster::builder().shards(3).leases(false).build().await;
    cluster.kill_leaf(1, 0);
    let (status, body) = cluster.search("q=json&timeout_ms=1000").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["partial"], true);
    assert_eq!(body["coverage"]["shards_failed"], 1, "{body}");
    assert_eq!(body["coverage"]["shards_answered"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_shard_answering_is_a_503_with_the_same_shape() {
    let mut cluster = TestCluster::builder().shards(2).leases(false).build().await;
    cluster.kill_leaf(0, 0);
    cluster.kill_leaf(1, 0);
    let (status, body) = cluster.search("q=json&timeout_ms=300").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "unavailable");
    assert_eq!(body["coverage"]["shards_answered"], 0);
    assert_eq!(body["partial"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_gets_a_400_naming_the_problem() {
    let cluster = TestCluster::builder().shards(2).build().await;
    let long = "a".repeat(2049);
    let cases: Vec<(String, &str)> = vec![
        ("".into(), "missing_query"),
        ("q=".into(), "empty_query"),
        ("q=json&k=0".into(), "invalid_k"),
        ("q=json&k=1001".into(), "invalid_k"),
        ("q=json&k=abc".into(), "invalid_k"),
        ("q=json&timeout_ms=0".into(), "invalid_timeout"),
        ("q=json&timeout_ms=10001".into(), "invalid_timeout"),
        ("q=json&timeout_ms=soon".into(), "invalid_timeout"),
        (format!("q={long}"), "query_too_long"),
        ("q=%C3%28".into(), "invalid_utf8"),
        ("q=%22unterminated".into(), "invalid_query"),
        ("q=title%3A".into(), "invalid_query"),
    ];
    for (query, code) in cases {
        let (status, body) = cluster.search(&query).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["code"], code, "{query}: {body}");
        assert!(body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    let posts: Vec<(&[u8], &str)> = vec![
        (b"{not json", "malformed_json"),
        (b"\xff\xfe", "malformed_json"),
        (br#"{"q":"json","k":"many"}"#, "invalid_k"),
        (br#"{"k":5}"#, "missing_query"),
        (br#"{"q":"json","timeout_ms":0}"#, "invalid_timeout"),
    ];
    for (body, code) in posts {
        let (status, answer) = cluster.post(body.to_vec()).await;
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["error"]["code"], code, "{answer}");
    }
    let (status, body) = cluster.post(vec![b' '; 64 * 1024]).await;
    assert_eq!(status, 400, "{body}");
    // A good POST works.
    let (status, body) = cluster.post(r#"{"q":"json parser","k":3}"#).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["hits"].as_array().unwrap().len(), 3);
    // Health, readiness and metrics answer.
    assert_eq!(cluster.get_text("/healthz").await.0, 200);
    assert_eq!(cluster.get_text("/readyz").await.0, 200);
    let (status, metrics) = cluster.get_text("/metrics").await;
    assert_eq!(status, 200);
    assert!(metrics.contains("frontend_search_requests_total{outcome=\"bad_request\"}"));
}

/// The gauges of what the frontend's bounded caches hold (issue 17's soak
/// reads them next to RSS) start at zero and grow with distinct queries,
/// not with repeats of one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_fill_gauges_count_distinct_queries() {
    let cluster = TestCluster::builder().shards(2).build().await;
    let gauges = |metrics: &str| {
        [
            "frontend_term_stats_cache_bytes",
            "frontend_term_stats_cache_terms",
            "frontend_term_stats_cache_queries",
            "frontend_canary_known_good_queries",
        ]
        .map(|name| tests::netns::metric_sum(metrics, name))
    };
    let (_, before) = cluster.get_text("/metrics").await;
    assert!(
        before.contains("frontend_canary_known_good_queries 0"),
        "exported from the start"
    );
    assert_eq!(gauges(&before), [0.0; 4], "nothing cached before a query");

    let queries = ["json", "json+parser", "http+client", "react", "date+format"];
    for query in queries {
        let (status, body) = cluster
            .search(&format!("q={query}&timeout_ms=5000&nocache=true"))
            .await;
        assert_eq!(status, 200, "{query}: {body}");
    }
    let (_, after) = cluster.get_text("/metrics").await;
    let [bytes, terms, lists, good] = gauges(&after);
    assert!(bytes > 0.0, "statistics bytes held: {bytes}");
    assert!(
        terms >= 6.0,
        "at least one (field, term) pair per word: {terms}"
    );
    assert_eq!(lists, 5.0, "one term list per distinct query");
    assert_eq!(good, 5.0, "one known-good fingerprint per distinct query");

    for _ in 0..5 {
        let (status, _) = cluster.search("q=json&timeout_ms=5000&nocache=true").await;
        assert_eq!(status, 200);
    }
    let (_, again) = cluster.get_text("/metrics").await;
    assert_eq!(gauges(&again), gauges(&after), "repeats hold nothing more");
}

/// `--stats-cache-queries` bounds the term lists the statistics cache
/// keeps: past it, older queries' lists are evicted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_statistics_cache_keeps_at_most_its_query_bound() {
    let cluster = TestCluster::builder()
        .shards(2)
        .frontend(|c| c.root.stats_cache_queries = 2)
        .build()
        .await;
    for query in ["json", "json+parser", "http+client", "react", "date+format"] {
        let (status, body) = cluster
            .search(&format!("q={query}&timeout_ms=5000&nocache=true"))
            .await;
        assert_eq!(status, 200, "{query}: {body}");
    }
    let (_, metrics) = cluster.get_text("/metrics").await;
    let lists = tests::netns::metric_sum(&metrics, "frontend_term_stats_cache_queries");
    assert!((1.0..=2.0).contains(&lists), "term lists held: {lists}");
}
