//! Tail tolerance through real gRPC: hedges around a hanging replica, the
//! loser cancelled at the leaf, and deadlines that reach the leaf and cut a
//! slow search short.

use std::time::Duration;

use frontend_core::FrontendConfig;
use tests::bench::{ExtraFrontend, LeafProcesses};
use tests::netns::metric_sum;
use tests::TestCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_replica_is_answered_by_the_hedge_and_the_loser_is_cancelled() {
    let cluster = TestCluster::builder()
        .shards(2)
        .replicas(2)
        .frontend(|c| {
            // Random choice, no probation and no stuck-replica rule, so
            // that primaries keep going to the hanging replica and only
            // hedges can save them; no canaries, which would meet the
            // hang first (the fan-out unit tests cover the stuck rule).
            c.fanout.replica_choice = false;
            c.fanout.probation = false;
            c.fanout.stuck_replicas = false;
            c.root.canary.enabled = false;
            c.fanout.retry = false;
            c.fanout.hedge_budget_floor = 1000.0;
        })
        .build()
        .await;
    for i in 0..40 {
        cluster
            .search(&format!("q=json+{i}&nocache=true&timeout_ms=2000"))
            .await;
    }
    let hung = cluster.leaf(0, 0);
    hung.faults().set_hang(true);
    let mut hedges_won = 0;
    for i in 0..20 {
        let (status, body) = cluster
            .search(&format!("q=parser+{i}&nocache=true&timeout_ms=3000"))
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body["partial"], false,
            "the hedge answers for the hung replica: {body}"
        );
        // Hedges won on shard 0, whose replica 0 hangs.
        let shard0 = body["shards"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["shard"] == 0)
            .unwrap();
        hedges_won += u64::from(shard0["hedge_won"] == true);
    }
    assert!(hedges_won > 0, "some primaries went to the hung replica");
    // Every call the hedge beat was cancelled at the hung leaf.
    cluster
        .wait_until(Duration::from_secs(5), "the losers to be cancelled", |c| {
            c.leaf(0, 0).stats().cancelled >= hedges_won
        })
        .await;
    let (_, metrics) = cluster.get_text("/metrics").await;
    assert!(metrics.contains("frontend_hedge_wins_total{shard=\"0\"}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaf_short_of_time_returns_early_and_the_answer_is_partial() {
    let cluster = TestCluster::builder()
        .shards(2)
        .frontend(|c| c.fanout.hedging = false)
        // Room to load snippets and reply after scoring stops, even in an
        // unoptimised build on a busy machine.
        .leaf(|c| c.reply_margin = Duration::from_millis(30))
        .build()
        .await;
    // A slow scan: every budget check of shard 1's scoring loop takes 40 ms.
    cluster
        .leaf(1, 0)
        .faults()
        .set_slow_scan(Duration::from_millis(40));
    let (status, body) = cluster
        .search("q=for+with+and+the+a+of&k=10&timeout_ms=150&nocache=true")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["partial"], true, "{body}");
    let shard = body["shards"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["shard"] == 1)
        .unwrap()
        .clone();
    assert_eq!(shard["state"], "partial", "{body}");
    let searched = shard["docs_searched"].as_u64().unwrap();
    let total = shard["docs_total"].as_u64().unwrap();
    assert!(searched < total, "{searched} of {total}");
    // The shard answered (with what it had), it did not time out.
    assert_eq!(body["coverage"]["shards_answered"], 2, "{body}");
    assert_eq!(body["coverage"]["shards_timed_out"], 0);
    assert!(body["coverage"]["percent"].as_f64().unwrap() < 100.0);
    assert!(body["estimated_recall"].as_f64().unwrap() < 1.0);
    assert!(cluster.leaf(1, 0).stats().early_stops >= 1);
}

/// A frontend for the SIGSTOP tests: no cache, no admission, no canary,
/// random replica choice without probation, so that without the stuck
/// rules half of the calls would go to a frozen replica.
fn random_choice_without_cache(shards: u32) -> FrontendConfig {
    let mut config = FrontendConfig::new(shards);
    config.cache = false;
    config.admission.enabled = false;
    config.root.canary.enabled = false;
    config.fanout.replica_choice = false;
    config.fanout.probation = false;
    config
}

/// Query `json {i}` with a 3 s budget: its status and JSON body.
async fn frozen_search(
    client: &reqwest::Client,
    frontend: &ExtraFrontend,
    i: usize,
) -> (u16, serde_json::Value) {
    let response = client
        .get(frontend.search_url())
        .query(&[("q", format!("json {i}")), ("timeout_ms", "3000".into())])
        .send()
        .await
        .expect("answered");
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.expect("json body");
    (status, body)
}

/// A real leaf process frozen with SIGSTOP (as a long pause of a real
/// host): the frontend notices it from the calls it owes (the stuck and
/// silence rules) and sends it no new primaries, so sequential queries are
/// answered in full by its twin and the frozen process is sent at most the
/// first few calls of the freeze. Random replica choice, so that without
/// those rules half of the calls would go to it. Behaviour, not timings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaf_process_frozen_with_sigstop_gets_no_new_primaries() {
    let leaves = LeafProcesses::start("builtin", 1, 2).await;
    let config = random_choice_without_cache(1);
    let frontend = ExtraFrontend::start(config, leaves.addresses(), 2).await;
    let client = reqwest::Client::new();
    let search = |i: usize| frozen_search(&client, &frontend, i);
    // A learned latency percentile, and both replicas in use.
    for i in 0..40 {
        let (status, body) = search(i).await;
        assert_eq!(status, 200, "{body}");
    }
    let before = (leaves.searches(0, 0).await, leaves.searches(0, 1).await);
    assert!(before.0 > 0.0 && before.1 > 0.0, "both served: {before:?}");
    // Every primary sent to the frozen replica is hedged (it never
    // answers), so the frontend's hedges count the calls it was sent.
    let metrics = format!("{}/metrics", frontend.admin_base());
    let hedges = || async {
        let text = client
            .get(&metrics)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        metric_sum(&text, "frontend_hedges_total")
    };
    let hedges_before = hedges().await;

    const QUERIES: usize = 40;
    leaves.freeze(&[(0, 0)]);
    let mut answers = Vec::new();
    for i in 0..QUERIES {
        answers.push(search(i).await);
    }
    let sent_to_frozen = hedges().await - hedges_before;
    leaves.thaw(&[(0, 0)]);
    for (status, body) in answers {
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["partial"], false, "{body}");
    }
    assert!(
        sent_to_frozen <= 5.0,
        "the frozen process was sent {sent_to_frozen} of {QUERIES} searches"
    );
    let twin_served = leaves.searches(0, 1).await - before.1;
    assert!(
        twin_served >= QUERIES as f64,
        "its twin served {twin_served} of {QUERIES}"
    );
}

/// The same with each replica one process serving both shards
/// (`leaf --shard 0,1`), searched with one `SearchShards` call: when that
/// process is frozen with SIGSTOP, both shards move to the other process
/// after the first few calls, every answer stays complete, and the shared
/// calls go on to the healthy process. Behaviour, not timings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_process_serving_several_shards_loses_its_primaries_for_all_of_them() {
    let leaves =
        LeafProcesses::start_co_hosted(&LeafProcesses::binary(), "builtin", 2, 2, &[]).await;
    let config = random_choice_without_cache(2);
    // Two processes, each the replica of both shards.
    let frontend = ExtraFrontend::start(config, leaves.addresses(), 2).await;
    let client = reqwest::Client::new();
    let search = |i: usize| frozen_search(&client, &frontend, i);
    for i in 0..40 {
        let (status, body) = search(i).await;
        assert_eq!(status, 200, "{body}");
    }
    let metrics = format!("{}/metrics", frontend.admin_base());
    let scrape = |name: &'static str| {
        let request = client.get(&metrics);
        async move {
            let text = request.send().await.unwrap().text().await.unwrap();
            metric_sum(&text, name)
        }
    };
    assert!(
        scrape("frontend_shard_batches_total").await >= 40.0,
        "searches share one call"
    );
    let (hedges_before, batches_before) = (
        scrape("frontend_hedges_total").await,
        scrape("frontend_shard_batches_total").await,
    );

    const QUERIES: usize = 40;
    leaves.freeze(&[(0, 0)]);
    let mut answers = Vec::new();
    for i in 0..QUERIES {
        answers.push(search(i).await);
    }
    let sent_to_frozen = scrape("frontend_hedges_total").await - hedges_before;
    let batches = scrape("frontend_shard_batches_total").await - batches_before;
    leaves.thaw(&[(0, 0)]);
    for (status, body) in answers {
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["partial"], false, "{body}");
    }
    // Each of the two shards' calls to the frozen process is hedged.
    assert!(
        sent_to_frozen <= 10.0,
        "the frozen process was sent {sent_to_frozen} shard searches in {QUERIES} queries"
    );
    assert!(
        batches >= (QUERIES - 10) as f64,
        "the healthy process took shared calls: {batches}"
    );
}

/// One raw gRPC `Search` request for `json` on an HTTP/2 connection.
fn raw_search(
    client: &mut h2::client::SendRequest<bytes::Bytes>,
) -> (h2::client::ResponseFuture, h2::SendStream<bytes::Bytes>) {
    use prost::Message;
    let message = proto::leaf::SearchRequest {
        query: "json".into(),
        k: 10,
        ..Default::default()
    }
    .encode_to_vec();
    let mut body = vec![0u8];
    body.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
    body.extend_from_slice(&message);
    let request = http::Request::post("http://leaf/search.leaf.v1.Leaf/Search")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("authorization", format!("Bearer {}", tests::TOKEN))
        .body(())
        .unwrap();
    let (response, mut stream) = client.send_request(request, false).expect("stream opens");
    stream
        .send_data(bytes::Bytes::from(body), true)
        .expect("body sent");
    (response, stream)
}

/// A real `leaf` process frozen with SIGSTOP while a frontend's calls on
/// one connection time out and are cancelled (RST_STREAM), as hedged and
/// abandoned calls are during a freeze: once thawed, the leaf meets more
/// streams reset before it accepted them than h2's default allows (20,
/// its rapid-reset guard) and would close the connection with GOAWAY,
/// failing every call on it just as the replica comes back. The leaf
/// allows a freeze's worth, so the connection and a call after the thaw
/// survive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thawed_leaf_keeps_the_connection_its_cancelled_calls_came_on() {
    let leaves = LeafProcesses::start("builtin", 1, 1).await;
    let tcp = tokio::net::TcpStream::connect(&leaves.addresses()[0])
        .await
        .expect("connects");
    let (client, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let connection = tokio::spawn(connection);
    let mut client = client.ready().await.expect("ready");
    let (response, _stream) = raw_search(&mut client);
    assert_eq!(response.await.expect("answered").status(), 200);

    leaves.freeze(&[(0, 0)]);
    for _ in 0..60 {
        client = client.ready().await.expect("ready");
        // Dropping both halves resets the stream (CANCEL).
        drop(raw_search(&mut client));
    }
    // The frames reach the frozen process's socket buffer.
    tokio::time::sleep(Duration::from_millis(300)).await;
    leaves.thaw(&[(0, 0)]);

    client = client.ready().await.expect("ready after the thaw");
    let (response, _stream) = raw_search(&mut client);
    let response = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .expect("an answer after the thaw");
    assert_eq!(
        response.expect("the connection survived the thaw").status(),
        200
    );
    assert!(!connection.is_finished(), "the leaf closed the connection");
}
