//! The HTTP edge under attack (issue 18): what a client on the network
//! with no credential can reach and how much of the frontend it can hold.
//!
//! - the membership, the status page and the metrics are not on the
//!   public port, and the admin listener's ids survive JavaScript;
//! - slowloris at a lowered descriptor limit: 5,000 half-open connections
//!   neither exhaust the frontend's descriptors nor keep a well-formed
//!   query from being answered, and the server closes them itself;
//! - a flood from one address does not starve a polite client at another.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tests::TestCluster;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_port_serves_no_membership_status_or_metrics() {
    let cluster = TestCluster::builder().shards(2).build().await;
    let client = reqwest::Client::new();
    for path in ["/cluster", "/status", "/metrics", "/assets/status.js"] {
        let public = client.get(cluster.url(path)).send().await.unwrap();
        assert_eq!(public.status().as_u16(), 404, "{path} on the public port");
        let admin = client.get(cluster.admin_url(path)).send().await.unwrap();
        assert_eq!(admin.status().as_u16(), 200, "{path} on the admin port");
    }
    for path in [
        "/",
        "/healthz",
        "/readyz",
        "/search?q=json",
        "/assets/app.js",
    ] {
        let public = client.get(cluster.url(path)).send().await.unwrap();
        assert_eq!(public.status().as_u16(), 200, "{path} on the public port");
    }
    assert!(
        cluster.admin_addr().ip().is_loopback(),
        "the admin listener is on loopback"
    );

    // u64 ids are strings: exact in JavaScript above 2^53.
    let view: serde_json::Value = client
        .get(cluster.admin_url("/cluster"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let holder = &view["holders"][0];
    for field in ["lease_id", "generation"] {
        let id = holder[field]
            .as_str()
            .unwrap_or_else(|| panic!("{field} in {holder}"));
        id.parse::<u64>().expect("a decimal u64");
    }
    let replica = &view["shards"][0]["replicas"][0];
    assert!(replica["generation"].is_string(), "{replica}");
    assert!(replica["lease_id"].is_string(), "{replica}");
}

/// The small cluster in its own process under `prlimit --nofile=N`.
struct EdgeProcess {
    child: Child,
    http: SocketAddr,
}

impl EdgeProcess {
    async fn start(nofile: u32, header_timeout: Duration) -> EdgeProcess {
        let mut child = Command::new("prlimit")
            .arg(format!("--nofile={nofile}:{nofile}"))
            .arg(env!("CARGO_BIN_EXE_edge-cluster"))
            .env(
                "EDGE_HEADER_TIMEOUT_MS",
                header_timeout.as_millis().to_string(),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("prlimit and edge-cluster run");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let http = tokio::time::timeout(Duration::from_secs(120), async {
            while let Some(line) = lines.next_line().await.expect("stdout") {
                if let Some(rest) = line.strip_prefix("http=") {
                    let addr = rest.split_whitespace().next().unwrap();
                    return addr.parse::<SocketAddr>().unwrap();
                }
                eprintln!("edge-cluster: {line}");
            }
            panic!("edge-cluster ended before serving");
        })
        .await
        .expect("edge-cluster serves within 120 s");
        // Keep its stdout drained (its logs), so it never blocks on a pipe.
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("edge-cluster: {line}");
            }
        });
        EdgeProcess { child, http }
    }
}

/// Connects and sends half a request line, then nothing.
async fn half_open(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(b"GET /search?q=jso").await?;
    Ok(stream)
}

/// True once the server has closed `stream` (EOF or reset; a 408 before
/// the close counts as closed too).
async fn closed_by_server(mut stream: TcpStream) -> bool {
    let mut buffer = [0u8; 512];
    loop {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return true,
            Ok(_) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_at_a_lowered_descriptor_limit_neither_blocks_a_query_nor_holds_connections() {
    const HALF_OPEN: usize = 5_000;
    let header_timeout = Duration::from_secs(1);
    let mut server = EdgeProcess::start(4096, header_timeout).await;
    let addr = server.http;

    // 5,000 half-open connections, 100 at a time. The server must accept
    // them all (a refusal would leave them in its backlog, not tested).
    let mut streams = Vec::with_capacity(HALF_OPEN);
    for _ in 0..HALF_OPEN / 100 {
        let batch = futures::future::join_all((0..100).map(|_| half_open(addr))).await;
        for stream in batch {
            streams.push(stream.expect("connected and sent half a request line"));
        }
    }
    let opened = Instant::now();

    // A well-formed query is still answered (the time is printed for
    // BENCHMARKS.md, not asserted).
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let started = Instant::now();
    let response = client
        .get(format!(
            "http://{addr}/search?q=json+parser&k=5&timeout_ms=2000"
        ))
        .send()
        .await
        .expect("a well-formed query is answered beside 5,000 half-open connections");
    let took = started.elapsed();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    assert_eq!(status, 200, "{text}");
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(body["hits"].is_array(), "{body}");
    eprintln!("query beside {HALF_OPEN} half-open connections answered in {took:?}");

    // Every half-open connection is closed by the server: within its
    // header timeout (or earlier, evicted for newer ones). The bound here
    // is generous for a busy machine; without the timeout they stay open.
    let all_closed = tokio::time::timeout(
        Duration::from_secs(60),
        futures::future::join_all(streams.into_iter().map(closed_by_server)),
    )
    .await
    .expect("the server closes every half-open connection");
    assert!(all_closed.into_iter().all(|closed| closed));
    eprintln!(
        "all {HALF_OPEN} half-open connections closed by the server {:?} after the last was opened (header timeout {header_timeout:?})",
        opened.elapsed()
    );

    // Still serving afterwards.
    let response = client
        .get(format!("http://{addr}/search?q=json&timeout_ms=2000"))
        .send()
        .await
        .expect("answered after the attack");
    assert_eq!(response.status().as_u16(), 200);
    drop(server.child.stdin.take());
    let _ = server.child.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_address_does_not_starve_a_polite_client_at_another() {
    let cluster = TestCluster::builder()
        .shards(2)
        .frontend(|c| {
            c.admission.initial_limit = 16;
            c.admission.min_limit = 16;
            c.admission.max_limit = 16;
            c.admission.queue_timeout = Duration::from_millis(20);
        })
        .build()
        .await;
    // Each search holds its slot a few milliseconds, so 48 flooding
    // connections far exceed 16 slots.
    for leaf in cluster.leaves() {
        leaf.faults().set_delay(Duration::from_millis(5), 1.0);
    }
    let addr = cluster.http_addr();
    let flood_client = reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)))
        .pool_max_idle_per_host(64)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let polite_client = reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let flooders: Vec<_> = (0..48)
        .map(|worker| {
            let client = flood_client.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let (mut ok, mut shed) = (0u64, 0u64);
                let mut i = 0u64;
                while !stop.is_cancelled() {
                    i += 1;
                    let url = format!(
                        "http://{addr}/search?q=json+{}&timeout_ms=2000&nocache=true",
                        (worker * 7919 + i) % 50
                    );
                    match client.get(url).send().await.map(|r| r.status().as_u16()) {
                        Ok(200) => ok += 1,
                        Ok(503) => shed += 1,
                        _ => {}
                    }
                }
                (ok, shed)
            })
        })
        .collect();
    // Let the flood fill the slots and the queue first.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The polite client: 20 queries a second for 5 s.
    const POLITE: usize = 100;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut polite = Vec::with_capacity(POLITE);
    for i in 0..POLITE {
        tick.tick().await;
        let client = polite_client.clone();
        let url = format!(
            "http://{addr}/search?q=parser+{}&timeout_ms=2000&nocache=true",
            i % 20
        );
        polite.push(tokio::spawn(async move {
            match client.get(url).send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let body = response.text().await.unwrap_or_default();
                    (Some(status), body)
                }
                Err(error) => (None, error.to_string()),
            }
        }));
    }
    let mut answered = 0;
    let mut failures = std::collections::BTreeMap::new();
    for request in polite {
        match request.await.unwrap() {
            (Some(200), _) => answered += 1,
            (status, body) => {
                let code = serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["error"]["code"].as_str().map(str::to_string))
                    .unwrap_or(body);
                *failures.entry(format!("{status:?} {code}")).or_insert(0) += 1;
            }
        }
    }
    eprintln!("polite failures: {failures:?}");
    stop.cancel();
    let (mut flood_ok, mut flood_shed) = (0, 0);
    for flooder in flooders {
        let (ok, shed) = flooder.await.unwrap();
        flood_ok += ok;
        flood_shed += shed;
    }
    eprintln!(
        "polite client: {answered}/{POLITE} answered; flood: {flood_ok} answered, {flood_shed} shed"
    );
    assert!(
        flood_shed > 0,
        "the flood overloads the frontend (else the test proves nothing)"
    );
    assert!(
        answered * 100 >= POLITE * 95,
        "only {answered} of {POLITE} polite queries answered beside the flood"
    );
}
