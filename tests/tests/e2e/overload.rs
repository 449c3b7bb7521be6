//! Admission control through HTTP: excess load gets 503 `overloaded` with
//! `Retry-After` at once, admitted requests succeed, nobody is left hanging.

use std::time::Duration;

use tests::TestCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiny_limit_sheds_excess_requests_at_once_and_answers_everyone() {
    let cluster = TestCluster::builder()
        .shards(2)
        .frontend(|c| {
            c.admission.initial_limit = 1;
            c.admission.min_limit = 1;
            c.admission.max_limit = 1;
            c.admission.max_queue = Some(1);
            c.admission.queue_timeout = Duration::from_millis(10);
        })
        .build()
        .await;
    for leaf in cluster.leaves() {
        leaf.faults().set_delay(Duration::from_millis(300), 1.0);
    }
    let client = reqwest::Client::new();
    let requests = (0..12).map(|i| {
        let client = client.clone();
        let url = cluster.url(&format!("/search?q=json+{i}&timeout_ms=2000&nocache=true"));
        async move {
            let started = std::time::Instant::now();
            let response = client.get(url).send().await.expect("answered");
            let status = response.status().as_u16();
            let retry_after = response.headers().get("retry-after").cloned();
            let body: serde_json::Value = response.json().await.expect("json");
            (status, retry_after, body, started.elapsed())
        }
    });
    let answers = futures::future::join_all(requests).await;
    let ok = answers.iter().filter(|a| a.0 == 200).count();
    let shed: Vec<_> = answers.iter().filter(|a| a.0 == 503).collect();
    assert_eq!(
        ok + shed.len(),
        answers.len(),
        "every request is answered 200 or 503"
    );
    assert!(ok >= 1, "admitted requests succeed");
    assert!(!shed.is_empty(), "excess requests are shed");
    for (_, retry_after, body, elapsed) in &shed {
        assert_eq!(body["error"]["code"], "overloaded", "{body}");
        assert!(retry_after.is_some(), "503 carries Retry-After");
        // Shed long before the 300 ms the admitted ones take.
        assert!(*elapsed < Duration::from_millis(250), "{elapsed:?}");
    }
    let (_, metrics) = cluster.get_text("/metrics").await;
    assert!(
        metrics.contains("frontend_admission_rejections_total"),
        "{metrics}"
    );
    assert!(metrics.contains("frontend_search_requests_total{outcome=\"overloaded\"}"));
    // The limit holds no leaked slot: a lone request is admitted again.
    for leaf in cluster.leaves() {
        leaf.faults().set_delay(Duration::ZERO, 0.0);
    }
    let (status, body) = cluster.search("q=json&timeout_ms=2000").await;
    assert_eq!(status, 200, "{body}");
}
