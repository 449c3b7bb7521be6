//! A leaf holding a lease with an embedded registry on loopback: it joins
//! once ready, revokes on a graceful stop, and leaves its lease to expire
//! when killed.

use std::sync::Arc;
use std::time::Duration;

use leaf::{generate_corpus, CorpusSource, LeafConfig, LeafHandle, LeaseConfig};
use lease::registry::{Registry, RegistryConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "test-cluster-token";
const PATIENCE: Duration = Duration::from_secs(30);

async fn registry() -> (Arc<Registry>, String) {
    let registry = Registry::new(
        RegistryConfig {
            token: Some(TOKEN.to_string()),
            ..RegistryConfig::default()
        },
        &prometheus::Registry::new(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = registry.service();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (registry, addr.to_string())
}

async fn start_leaf(frontend: &str, ttl: Duration) -> LeafHandle {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = LeafConfig {
        lease: Some(LeaseConfig {
            frontends: vec![frontend.to_string()],
            token: Some(TOKEN.to_string()),
            ttl,
        }),
        ..LeafConfig::new(2, 4)
    };
    let corpus = CorpusSource::Documents(Arc::new(generate_corpus(800, 5)));
    leaf::start(config, corpus, listener, None, CancellationToken::new())
        .await
        .unwrap()
}

async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let start = tokio::time::Instant::now();
    while !condition() {
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn joins_when_ready_and_revokes_on_stop() {
    let (registry, frontend) = registry().await;
    let handle = start_leaf(&frontend, Duration::from_secs(3)).await;
    eventually("the lease", || registry.list().len() == 1).await;
    let member = registry.list().remove(0).member;
    assert_eq!(member.role, lease::Role::Leaf);
    assert_eq!(member.shard, 2);
    assert_eq!(member.address, handle.addr().to_string());
    assert_eq!(member.address, handle.advertised());
    assert_eq!(member.generation, handle.generation());
    eventually("the holder to see its lease", || handle.leases_held()).await;

    handle.stop().await;
    // Revoked before stop returned: no waiting for the term to run out.
    assert!(registry.list().is_empty());
}

#[tokio::test]
async fn a_killed_leaf_is_dropped_when_its_lease_expires() {
    let (registry, frontend) = registry().await;
    let handle = start_leaf(&frontend, Duration::from_secs(3)).await;
    eventually("the lease", || registry.list().len() == 1).await;
    handle.kill();
    // Not revoked: the lease is still live right after the crash…
    assert_eq!(registry.list().len(), 1);
    // …and expires without keep-alives.
    eventually("the lease to expire", || registry.list().is_empty()).await;
}
