//! Runs the library against a fake search API with known latency.

use std::time::{Duration, Instant};

use crate::common::{serve, Behaviour};
use loadgen::{Config, QueryOrder, QuerySource, Stage};

fn config(url: &str, rate: f64, duration_ms: u64, queries: &[&str]) -> Config {
    let mut c = Config::new(
        url,
        rate,
        Duration::from_millis(duration_ms),
        QuerySource::List(queries.iter().map(|q| q.to_string()).collect()),
    );
    c.order = QueryOrder::Replay;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn percentiles_match_a_server_of_known_latency() {
    // Nine in ten queries take 10 ms, one in ten takes 60 ms.
    let url = serve(Behaviour {
        delay: Duration::from_millis(10),
        slow: Duration::from_millis(60),
        ..Behaviour::default()
    })
    .await;
    let queries = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "slow"];
    let mut c = config(&url, 100.0, 2000, &queries);
    c.slos = vec![
        "p50<=40ms".parse().unwrap(),
        "p50>=10ms".parse().unwrap(),
        "p99>=60ms".parse().unwrap(),
        "errors<=0%".parse().unwrap(),
        "partial<=5%".parse().unwrap(),
    ];
    let report = loadgen::run(c).await.unwrap();
    let t = &report.total;
    assert_eq!(
        (t.scheduled, t.sent, t.completed, t.dropped),
        (200, 200, 200, 0)
    );
    assert_eq!((t.ok, t.errors), (200, 0));
    let l = &t.latency_ms;
    // Lower bounds are exact up to the histogram's 0.1% precision; upper
    // bounds only allow for a busy machine.
    assert!(l.min >= 10.0 * 0.999, "min {}", l.min);
    assert!(l.p50 >= 10.0 * 0.999 && l.p50 < 40.0, "p50 {}", l.p50);
    assert!(l.p99 >= 60.0 * 0.999 && l.p99 < 120.0, "p99 {}", l.p99);
    assert!(l.max >= 60.0 * 0.999, "max {}", l.max);
    // What the answers said: every tenth partial at 50% coverage, half hits.
    let a = &t.answers;
    assert_eq!((a.with_partial, a.partial), (200, 20));
    assert_eq!(a.cache_hit_rate, Some(0.5));
    assert!((a.coverage_mean_percent.unwrap() - 95.0).abs() < 1e-9);
    assert!((a.estimated_recall_mean.unwrap() - 0.9).abs() < 1e-9);
    let verdicts: Vec<bool> = report.slos.iter().map(|s| s.pass).collect();
    assert_eq!(
        verdicts,
        [true, true, true, true, false],
        "{:?}",
        report.slos
    );
    assert_eq!(report.exit_code(), 1);
    assert!(report.connections_opened >= 1);
    assert!(!report.series.points.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_second_stall_shows_in_the_p99() {
    let stall = Behaviour {
        delay: Duration::from_millis(1),
        stall: Some((Duration::from_millis(500), Duration::from_secs(1))),
        ..Behaviour::default()
    };
    let url = serve(stall.clone()).await;
    let mut c = config(&url, 200.0, 2500, &["q"]);
    c.slos = vec!["p99<=100ms".parse().unwrap()];
    let report = loadgen::run(c).await.unwrap();
    let t = &report.total;
    assert_eq!((t.completed, t.errors, t.dropped), (500, 0, 0));
    // Two fifths of the requests were scheduled during the stall, waiting
    // from 0 to 1 s: the p99 is near a second.
    assert!(t.latency_ms.p99 >= 800.0, "p99 {}", t.latency_ms.p99);
    assert!(t.latency_ms.max >= 900.0 && t.latency_ms.max < 2000.0);
    assert!(!report.passed());
    // It kept sending during the stall, on new connections.
    assert!(
        report.connections_opened > 10,
        "{}",
        report.connections_opened
    );
    let peak = report
        .series
        .points
        .iter()
        .filter_map(|p| p.max_ms)
        .fold(0.0, f64::max);
    assert!(peak >= 900.0);

    // A closed loop over one connection against the same server sends one
    // request into the stall and waits: its p99 does not see the stall.
    let url = serve(stall).await;
    let closed = closed_loop_p99(&format!("{url}/search?q=q"), Duration::from_millis(2500)).await;
    assert!(
        closed < Duration::from_millis(100),
        "closed-loop p99 {closed:?}"
    );
}

/// What a closed-loop tool with one connection would report as p99.
async fn closed_loop_p99(url: &str, length: Duration) -> Duration {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client: Client<_, Empty<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let uri: http::Uri = url.parse().unwrap();
    let mut latencies = Vec::new();
    let end = Instant::now() + length;
    while Instant::now() < end {
        let t0 = Instant::now();
        let response = client.get(uri.clone()).await.unwrap();
        response.into_body().collect().await.unwrap();
        latencies.push(t0.elapsed());
    }
    latencies.sort();
    latencies[latencies.len() * 99 / 100]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stages_are_reported_separately_and_checked_each() {
    let url = serve(Behaviour {
        delay: Duration::from_millis(2),
        ..Behaviour::default()
    })
    .await;
    let mut c = config(&url, 1.0, 1, &["q"]);
    c.stages = vec![
        Stage {
            duration: Duration::from_millis(800),
            rate: 50.0,
        },
        Stage {
            duration: Duration::from_millis(800),
            rate: 100.0,
        },
    ];
    c.warmup = Some(Duration::from_millis(300));
    c.slos = vec!["p99<=1s".parse().unwrap()];
    let report = loadgen::run(c).await.unwrap();
    let names: Vec<&str> = report.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["warmup", "1", "2"]);
    let counts: Vec<u64> = report.stages.iter().map(|s| s.completed).collect();
    assert_eq!(counts, [15, 40, 80]);
    assert_eq!(report.total.completed, 120, "the warmup is not measured");
    assert!((report.total.rate - 75.0).abs() < 1e-9);
    let scopes: Vec<&str> = report.slos.iter().map(|s| s.scope.as_str()).collect();
    assert_eq!(scopes, ["stage 1", "stage 2", "total"]);
    assert_eq!(report.exit_code(), 0);
    let summary = report.summary();
    assert!(
        summary.contains("stage 2") && summary.contains("PASS"),
        "{summary}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_counted_by_status_and_code() {
    let url = serve(Behaviour::default()).await;
    let mut c = config(&url, 100.0, 500, &["ok", "overload"]);
    c.slos = vec!["errors<=0.1%".parse().unwrap()];
    let report = loadgen::run(c).await.unwrap();
    let t = &report.total;
    assert_eq!((t.completed, t.ok, t.errors), (50, 25, 25));
    assert_eq!(t.errors_by_status.get("503"), Some(&25));
    assert_eq!(t.error_codes.get("overloaded"), Some(&25));
    assert_eq!(t.error_rate, Some(0.5));
    assert_eq!(report.exit_code(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_cannot_go_out_on_time_are_dropped() {
    // One request at a time, each taking 200 ms, asked for at 50/s: most
    // requests wait for a slot past the 100 ms allowance and are dropped.
    let url = serve(Behaviour {
        delay: Duration::from_millis(200),
        ..Behaviour::default()
    })
    .await;
    let mut c = config(&url, 50.0, 1000, &["q"]);
    c.max_in_flight = Some(1);
    c.max_lag = Duration::from_millis(100);
    c.slos = vec!["drops<=0%".parse().unwrap()];
    let report = loadgen::run(c).await.unwrap();
    let t = &report.total;
    assert_eq!(t.sent + t.dropped, 50);
    assert!(t.dropped >= 30, "{} dropped", t.dropped);
    assert_eq!(t.completed, t.sent);
    assert!(!report.passed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_cap_bounds_the_run() {
    let url = serve(Behaviour::default()).await;
    let mut c = config(&url, 200.0, 1000, &["q"]);
    c.max_requests = Some(30);
    let started = Instant::now();
    let report = loadgen::run(c).await.unwrap();
    assert_eq!(report.total.sent, 30);
    assert!(report.total.truncated);
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn a_target_with_nothing_listening_is_a_runtime_failure() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = loadgen::run(config(&format!("http://{addr}"), 10.0, 100, &["q"]))
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), loadgen::EXIT_RUNTIME, "{err}");
}

#[tokio::test]
async fn a_remote_target_is_refused_as_a_usage_error() {
    let err = loadgen::run(config("http://192.0.2.1:80", 10.0, 100, &["q"]))
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), loadgen::EXIT_USAGE);
    assert!(err.to_string().contains("not loopback"), "{err}");
}
