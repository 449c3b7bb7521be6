//! The server lifecycle over real gRPC on loopback, with the standard
//! health service as the server. Every wait is an upper bound, never a
//! speed claim.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus::Registry;
use svc::{CancellationToken, Lifecycle, ServerHandle};
use tokio::net::TcpListener;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

const PATIENCE: Duration = Duration::from_secs(15);

/// A named service for the health reporter to report on.
struct Demo;

impl tonic::server::NamedService for Demo {
    const NAME: &'static str = "svc.test.Demo";
}

struct Started {
    handle: ServerHandle,
    addr: std::net::SocketAddr,
    draining: CancellationToken,
    /// Set by a tracked task once it saw the drain start.
    task_done: Arc<AtomicBool>,
}

async fn start(shutdown: &CancellationToken) -> Started {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut lifecycle = Lifecycle::new("test", Registry::new(), PATIENCE, shutdown);
    let health = lifecycle.health_service::<Demo>().await;
    let grpc = tonic::transport::Server::builder()
        .add_service(health)
        .serve_with_incoming_shutdown(
            lifecycle.incoming(listener),
            lifecycle.draining().cancelled_owned(),
        );
    let task_done = Arc::new(AtomicBool::new(false));
    let draining = lifecycle.draining();
    {
        let (draining, done) = (draining.clone(), Arc::clone(&task_done));
        lifecycle.spawn(async move {
            draining.cancelled().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            done.store(true, Ordering::SeqCst);
        });
    }
    let handle = lifecycle.serve(grpc);
    Started {
        handle,
        addr,
        draining,
        task_done,
    }
}

async fn client(addr: std::net::SocketAddr) -> HealthClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    HealthClient::new(channel)
}

async fn status(client: &mut HealthClient<Channel>) -> Result<i32, tonic::Status> {
    let request = HealthCheckRequest {
        service: "svc.test.Demo".into(),
    };
    Ok(client.check(request).await?.into_inner().status)
}

#[tokio::test]
async fn a_stop_drains_and_waits_for_tracked_tasks() {
    let shutdown = CancellationToken::new();
    let mut started = start(&shutdown).await;
    let mut client = client(started.addr).await;
    assert_eq!(
        status(&mut client).await.unwrap(),
        ServingStatus::Serving as i32
    );
    tokio::time::timeout(PATIENCE, started.handle.stop())
        .await
        .expect("stop within the patience")
        .unwrap();
    assert!(started.draining.is_cancelled());
    assert!(
        started.task_done.load(Ordering::SeqCst),
        "stop returned before its tracked task ended"
    );
    assert!(tokio::net::TcpStream::connect(started.addr).await.is_err());
}

#[tokio::test]
async fn the_callers_shutdown_token_stops_the_server() {
    let shutdown = CancellationToken::new();
    let mut started = start(&shutdown).await;
    shutdown.cancel();
    tokio::time::timeout(PATIENCE, started.handle.wait())
        .await
        .expect("stopped within the patience")
        .unwrap();
    assert!(started.task_done.load(Ordering::SeqCst));
}

#[tokio::test]
async fn a_kill_cuts_connections_and_skips_the_graceful_stop() {
    let shutdown = CancellationToken::new();
    let started = start(&shutdown).await;
    let mut client = client(started.addr).await;
    assert!(status(&mut client).await.is_ok());
    started.handle.kill();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while status(&mut client).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the killed server still answers"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The graceful path (NOT_SERVING, revoke, drain) never ran.
    assert!(!started.draining.is_cancelled());
    assert!(!started.task_done.load(Ordering::SeqCst));
}

#[tokio::test]
async fn a_failed_start_stops_the_metrics_endpoint() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let shutdown = CancellationToken::new();
    let mut lifecycle = Lifecycle::new("test", Registry::new(), PATIENCE, &shutdown);
    let addr = lifecycle.serve_metrics(Some(listener)).unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_ok());
    // A start that fails drops its lifecycle before serving.
    drop(lifecycle);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the metrics endpoint outlived a failed start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn without_a_listener_no_metrics_endpoint_is_served() {
    let shutdown = CancellationToken::new();
    let mut lifecycle = Lifecycle::new("test", Registry::new(), PATIENCE, &shutdown);
    assert_eq!(lifecycle.serve_metrics(None), None);
}
