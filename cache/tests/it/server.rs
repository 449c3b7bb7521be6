//! The cache server over real gRPC on loopback, started in-process.
//!
//! Moka keeps its own clock, so expiry is tested with a short TTL and
//! generous polling; every wait is an upper bound, never a speed claim.

use std::sync::Arc;
use std::time::Duration;

use cache::{CacheConfig, CacheHandle, LeaseConfig};
use lease::registry::{Registry, RegistryConfig};
use lease::{Member, MemberView, Membership, Role};
use proto::cache::cache_client::CacheClient;
use proto::cache::{GetRequest, PutRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

const PATIENCE: Duration = Duration::from_secs(15);

fn config(max_bytes: u64, ttl: Duration) -> CacheConfig {
    CacheConfig {
        max_bytes,
        ttl,
        ..CacheConfig::default()
    }
}

async fn start(config: CacheConfig) -> CacheHandle {
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics = TcpListener::bind("127.0.0.1:0").await.unwrap();
    cache::start(config, grpc, Some(metrics), CancellationToken::new())
        .await
        .unwrap()
}

async fn client(handle: &CacheHandle) -> CacheClient<Channel> {
    CacheClient::connect(format!("http://{}", handle.addr()))
        .await
        .unwrap()
}

async fn get(
    client: &mut CacheClient<Channel>,
    key: &str,
) -> Result<Option<Vec<u8>>, tonic::Status> {
    let response = client
        .get(GetRequest { key: key.into() })
        .await?
        .into_inner();
    Ok(response.found.then_some(response.value))
}

async fn put(
    client: &mut CacheClient<Channel>,
    key: &str,
    value: Vec<u8>,
) -> Result<(), tonic::Status> {
    client
        .put(PutRequest {
            key: key.into(),
            value,
        })
        .await
        .map(drop)
}

/// Polls `condition` every 20 ms; panics after [`PATIENCE`].
async fn eventually<F: std::future::Future<Output = bool>>(
    what: &str,
    mut condition: impl FnMut() -> F,
) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `GET path` on the metrics endpoint, returning the body.
async fn http_get(handle: &CacheHandle, path: &str) -> String {
    let addr = handle.metrics_addr().unwrap();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test]
async fn put_and_get_round_trip() {
    let handle = start(config(1 << 20, Duration::from_secs(60))).await;
    let mut client = client(&handle).await;
    assert_eq!(get(&mut client, "q=rust k=10 g=1").await.unwrap(), None);
    put(&mut client, "q=rust k=10 g=1", b"answer".to_vec())
        .await
        .unwrap();
    assert_eq!(
        get(&mut client, "q=rust k=10 g=1").await.unwrap(),
        Some(b"answer".to_vec())
    );
    // An empty value is a value.
    put(&mut client, "empty", Vec::new()).await.unwrap();
    assert_eq!(get(&mut client, "empty").await.unwrap(), Some(Vec::new()));
    let stats = handle.stats().await;
    assert_eq!(
        (stats.hits, stats.misses, stats.inserts, stats.entries),
        (2, 1, 2, 2)
    );
    assert_eq!(
        stats.bytes,
        ("q=rust k=10 g=1".len() + "answer".len() + "empty".len()) as u64
    );
    handle.stop().await.unwrap();
}

#[tokio::test]
async fn the_byte_bound_evicts() {
    let max_bytes = 64 * 1024;
    let handle = start(config(max_bytes, Duration::from_secs(60))).await;
    let mut client = client(&handle).await;
    for i in 0..100 {
        put(&mut client, &format!("key-{i}"), vec![7u8; 4 * 1024])
            .await
            .unwrap();
    }
    let stats = handle.stats().await;
    assert!(
        stats.bytes <= max_bytes,
        "{} bytes over the bound {max_bytes}",
        stats.bytes
    );
    assert!(stats.entries < 100 && stats.entries > 0, "{stats:?}");
    assert!(stats.evictions > 0);
    let metrics = http_get(&handle, "/metrics").await;
    assert!(
        metrics.contains("cache_evictions_total{cause=\"size\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("cache_bytes {}", stats.bytes)),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("cache_entries {}", stats.entries)),
        "{metrics}"
    );
    handle.stop().await.unwrap();
}

#[tokio::test]
async fn entries_expire_after_the_ttl() {
    let handle = start(config(1 << 20, Duration::from_millis(300))).await;
    let mut client = client(&handle).await;
    put(&mut client, "k", b"v".to_vec()).await.unwrap();
    eventually("the entry to expire", || {
        let mut client = client.clone();
        async move { get(&mut client, "k").await.unwrap().is_none() }
    })
    .await;
    eventually("the expiry to be counted", || async {
        let stats = handle.stats().await;
        stats.evictions >= 1 && stats.entries == 0
    })
    .await;
    handle.stop().await.unwrap();
}

#[tokio::test]
async fn oversized_and_empty_requests_are_invalid() {
    // A 1 MiB cache takes values up to 128 KiB.
    let handle = start(config(1 << 20, Duration::from_secs(60))).await;
    let mut client = client(&handle).await;
    let limit = cache::max_value_bytes(1 << 20);
    assert_eq!(limit, 128 * 1024);
    put(&mut client, "fits", vec![0; limit]).await.unwrap();
    let status = put(&mut client, "big", vec![0; limit + 1])
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("exceeds"), "{}", status.message());
    let long_key = "k".repeat(cache::MAX_KEY_BYTES + 1);
    let status = put(&mut client, &long_key, b"v".to_vec())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = get(&mut client, &long_key).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = get(&mut client, "").await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(get(&mut client, "big").await.unwrap(), None);
    let metrics = http_get(&handle, "/metrics").await;
    assert!(
        metrics.contains("cache_rejections_total{reason=\"value_too_large\"} 1"),
        "{metrics}"
    );
    handle.stop().await.unwrap();
}

#[tokio::test]
async fn health_and_readiness_follow_the_lifecycle() {
    let handle = start(config(1 << 20, Duration::from_secs(60))).await;
    let channel = Channel::from_shared(format!("http://{}", handle.addr()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    for service in ["", "search.cache.v1.Cache"] {
        let response = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            response.status(),
            ServingStatus::Serving,
            "service {service:?}"
        );
    }
    assert!(http_get(&handle, "/readyz").await.contains("200 OK"));
    assert!(http_get(&handle, "/healthz").await.contains("200 OK"));
    let addr = handle.addr();
    handle.stop().await.unwrap();
    // Stopped: new connections are refused.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn shutdown_token_stops_the_server() {
    let shutdown = CancellationToken::new();
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let run = tokio::spawn(cache::run(
        config(1 << 20, Duration::from_secs(60)),
        grpc,
        Some(metrics),
        shutdown.clone(),
    ));
    shutdown.cancel();
    let result = tokio::time::timeout(PATIENCE, run).await.unwrap().unwrap();
    assert!(result.is_ok(), "{result:?}");
}

#[tokio::test]
async fn a_bad_config_is_an_error() {
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let result = cache::start(
        config(10, Duration::from_secs(1)),
        grpc,
        None,
        CancellationToken::new(),
    )
    .await;
    assert!(matches!(result, Err(cache::Error::Config(_))));
}

/// A lease registry served over gRPC on loopback.
struct LeaseServer {
    registry: Arc<Registry>,
    prom: prometheus::Registry,
    addr: String,
    shutdown: CancellationToken,
}

impl LeaseServer {
    async fn start(token: Option<&str>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let prom = prometheus::Registry::new();
        let registry = Registry::new(
            RegistryConfig {
                min_ttl: Duration::from_millis(100),
                max_ttl: Duration::from_secs(30),
                token: token.map(str::to_owned),
            },
            &prom,
        );
        let shutdown = CancellationToken::new();
        let service = registry.service();
        let signal = shutdown.clone().cancelled_owned();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), signal)
                .await
        });
        Self {
            registry,
            prom,
            addr,
            shutdown,
        }
    }

    fn watch(&self) -> MemberView {
        self.registry.watch()
    }

    fn counter(&self, name: &str, role: &str) -> f64 {
        self.prom
            .gather()
            .iter()
            .filter(|family| family.name() == name)
            .flat_map(|family| family.get_metric().iter())
            .filter(|m| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == "role" && l.value() == role)
            })
            .map(|m| m.get_counter().value())
            .sum()
    }
}

impl Drop for LeaseServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn leased(frontend: &LeaseServer, token: Option<&str>, ttl: Duration) -> CacheConfig {
    CacheConfig {
        lease: Some(LeaseConfig {
            frontends: vec![frontend.addr.clone()],
            token: token.map(str::to_owned),
            ttl,
        }),
        ..config(1 << 20, Duration::from_secs(60))
    }
}

async fn wait_members(
    view: &mut MemberView,
    what: &str,
    predicate: impl Fn(&[Member]) -> bool,
) -> Vec<Member> {
    let result = tokio::time::timeout(PATIENCE, view.wait_for(|members| predicate(members)))
        .await
        .map(|members| members.map(|members| members.as_ref().clone()));
    match result {
        Ok(Ok(members)) => members,
        _ => panic!("timed out waiting for {what}: {:?}", view.borrow()),
    }
}

#[tokio::test]
async fn the_lease_joins_and_is_revoked_on_stop() {
    let frontend = LeaseServer::start(Some("cluster-token")).await;
    let mut view = frontend.watch();
    // A long term: only a revocation can remove the member within the test.
    let handle = start(leased(
        &frontend,
        Some("cluster-token"),
        Duration::from_secs(20),
    ))
    .await;
    let members = wait_members(&mut view, "the cache to join", |m| m.len() == 1).await;
    assert_eq!(members[0].role, Role::Cache);
    assert_eq!(members[0].address, handle.advertised());
    assert_eq!(members[0].address, handle.addr().to_string());
    let lease_id = members[0].lease_id;
    eventually("the handle to report its lease", || {
        let reported = handle.lease_ids() == [Some(lease_id)];
        async move { reported }
    })
    .await;
    let metrics = http_get(&handle, "/metrics").await;
    assert!(metrics.contains("lease_holder_grants_total 1"), "{metrics}");

    handle.stop().await.unwrap();
    assert!(
        frontend.watch().borrow().is_empty(),
        "stop returned before the lease was revoked"
    );
    assert_eq!(frontend.counter("lease_revocations_total", "cache"), 1.0);
}

#[tokio::test]
async fn a_killed_cache_is_cut_off_and_its_lease_expires() {
    let frontend = LeaseServer::start(None).await;
    let mut view = frontend.watch();
    let handle = start(leased(&frontend, None, Duration::from_millis(400))).await;
    wait_members(&mut view, "the cache to join", |m| m.len() == 1).await;
    let mut client = client(&handle).await;
    put(&mut client, "k", b"v".to_vec()).await.unwrap();
    handle.kill();
    // The open connection is cut: a crashed server does not answer.
    eventually("calls to the killed cache to fail", || {
        let mut client = client.clone();
        async move { get(&mut client, "k").await.is_err() }
    })
    .await;
    wait_members(&mut view, "the killed cache's lease to expire", |m| {
        m.is_empty()
    })
    .await;
    assert_eq!(frontend.counter("lease_expirations_total", "cache"), 1.0);
    assert_eq!(frontend.counter("lease_revocations_total", "cache"), 0.0);
}
