//! Holders and the registry over real gRPC on loopback, in real time.
//!
//! Terms are short (a few hundred milliseconds) so the tests are quick, and
//! every wait is a generous upper bound on a noisy 2-core machine: the
//! assertions are about what happens, never about how fast.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lease::holder::{self, HolderConfig, HolderInfo, HolderSet};
use lease::registry::{Registry, RegistryConfig};
use lease::{Member, MemberView, Membership, Role};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;

/// The longest any single wait may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(15);

/// A registry served over gRPC on loopback.
struct Server {
    registry: Arc<Registry>,
    prom: prometheus::Registry,
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Server {
    async fn start(config: RegistryConfig) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_on(config, listener)
    }

    fn start_on(config: RegistryConfig, listener: TcpListener) -> Self {
        let prom = prometheus::Registry::new();
        let registry = Registry::new(config, &prom);
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let service = registry.service();
        let signal = shutdown.clone();
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(
                    TcpListenerStream::new(listener),
                    signal.cancelled_owned(),
                )
                .await
                .unwrap();
        });
        Self {
            registry,
            prom,
            addr,
            shutdown,
            task,
        }
    }

    /// Stops serving and waits until the port is free.
    async fn stop(self) {
        self.shutdown.cancel();
        let abort = self.task.abort_handle();
        if tokio::time::timeout(PATIENCE, self.task).await.is_err() {
            abort.abort();
        }
    }

    fn watch(&self) -> MemberView {
        self.registry.watch()
    }

    fn counter(&self, name: &str, label: Option<(&str, &str)>) -> f64 {
        counter(&self.prom, name, label)
    }
}

fn counter(prom: &prometheus::Registry, name: &str, label: Option<(&str, &str)>) -> f64 {
    prom.gather()
        .iter()
        .filter(|family| family.name() == name)
        .flat_map(|family| family.get_metric().iter())
        .filter(|m| {
            label.is_none_or(|(key, value)| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == key && l.value() == value)
            })
        })
        .map(|m| m.get_counter().value())
        .sum()
}

fn registry_config(token: Option<&str>) -> RegistryConfig {
    RegistryConfig {
        min_ttl: Duration::from_millis(100),
        max_ttl: Duration::from_secs(30),
        token: token.map(str::to_owned),
    }
}

fn holder_config(endpoints: &[SocketAddr], token: Option<&str>, ttl: Duration) -> HolderConfig {
    HolderConfig {
        endpoints: endpoints.iter().map(ToString::to_string).collect(),
        token: token.map(str::to_owned),
        ttl,
        info: HolderInfo {
            role: Role::Cache,
            shard: 0,
            address: "127.0.0.1:7400".into(),
            generation: 3,
        },
        live_token: None,
    }
}

/// Waits until the members satisfy `predicate`; panics after [`PATIENCE`].
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

/// Polls `condition` every 20 ms; panics after [`PATIENCE`].
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_held(holders: &HolderSet) -> Vec<u64> {
    let mut status = holders.watch();
    let wait = status.wait_for(|all| all.iter().all(|s| s.lease_id.is_some()));
    assert!(
        tokio::time::timeout(PATIENCE, wait).await.is_ok(),
        "holder never held its leases: {:?}",
        holders.status()
    );
    holders.lease_ids().into_iter().flatten().collect()
}

#[tokio::test]
async fn holder_joins_and_revoke_all_removes_at_once() {
    let server = Server::start(registry_config(None)).await;
    let mut view = server.watch();
    let prom = prometheus::Registry::new();
    // A long term: only a revocation can remove the member within the test.
    let holders = holder::spawn(
        holder_config(&[server.addr], None, Duration::from_secs(20)),
        &prom,
        CancellationToken::new(),
    );
    let members = wait_members(&mut view, "the holder to join", |m| m.len() == 1).await;
    assert_eq!(members[0].role, Role::Cache);
    assert_eq!(members[0].address, "127.0.0.1:7400");
    assert_eq!(members[0].generation, 3);
    assert_eq!(wait_held(&holders).await, [members[0].lease_id]);
    assert!(holders.is_held());
    assert_eq!(counter(&prom, "lease_holder_grants_total", None), 1.0);

    holders.revoke_all().await;
    assert!(
        server.watch().borrow().is_empty(),
        "revoke_all returned before the lease was gone"
    );
    assert_eq!(
        server.counter("lease_revocations_total", Some(("role", "cache"))),
        1.0
    );
    assert_eq!(
        server.counter("lease_expirations_total", Some(("role", "cache"))),
        0.0
    );
    server.stop().await;
}

#[tokio::test]
async fn holder_keeps_its_lease_alive_across_many_terms() {
    let server = Server::start(registry_config(None)).await;
    let mut view = server.watch();
    let prom = prometheus::Registry::new();
    let holders = holder::spawn(
        holder_config(&[server.addr], None, Duration::from_millis(600)),
        &prom,
        CancellationToken::new(),
    );
    wait_members(&mut view, "the holder to join", |m| m.len() == 1).await;
    eventually("several renewals", || {
        counter(
            &prom,
            "lease_holder_renewals_total",
            Some(("outcome", "ok")),
        ) >= 6.0
    })
    .await;
    // Six renewals at TTL/3 span two terms: without them the lease would have
    // expired. It may have been re-granted on a very slow tick, but the
    // holder is a member again at once.
    assert!(server.counter("lease_renewals_total", None) >= 6.0);
    wait_members(&mut view, "the holder to be a member", |m| m.len() == 1).await;
    holders.revoke_all().await;
    server.stop().await;
}

#[tokio::test]
async fn a_killed_holder_expires_within_its_term() {
    let server = Server::start(registry_config(None)).await;
    let mut view = server.watch();
    let holders = holder::spawn(
        holder_config(&[server.addr], None, Duration::from_millis(400)),
        &prometheus::Registry::new(),
        CancellationToken::new(),
    );
    wait_members(&mut view, "the holder to join", |m| m.len() == 1).await;
    // A crash: the tasks stop without revoking.
    holders.abort();
    wait_members(&mut view, "the killed holder to expire", |m| m.is_empty()).await;
    assert_eq!(
        server.counter("lease_expirations_total", Some(("role", "cache"))),
        1.0
    );
    assert_eq!(
        server.counter("lease_revocations_total", Some(("role", "cache"))),
        0.0
    );
    server.stop().await;
}

#[tokio::test]
async fn cancelling_the_shutdown_token_revokes() {
    let server = Server::start(registry_config(None)).await;
    let mut view = server.watch();
    let shutdown = CancellationToken::new();
    let holders = holder::spawn(
        holder_config(&[server.addr], None, Duration::from_secs(20)),
        &prometheus::Registry::new(),
        shutdown.clone(),
    );
    wait_members(&mut view, "the holder to join", |m| m.len() == 1).await;
    shutdown.cancel();
    // Far sooner than the 20 s term: only a revocation explains it.
    wait_members(&mut view, "the holder to leave", |m| m.is_empty()).await;
    assert_eq!(
        server.counter("lease_revocations_total", Some(("role", "cache"))),
        1.0
    );
    eventually("the holder to release its lease", || !holders.is_held()).await;
    server.stop().await;
}

#[tokio::test]
async fn a_holder_grants_again_after_a_registry_restart() {
    let first = Server::start(registry_config(None)).await;
    let addr = first.addr;
    let mut view = first.watch();
    let holders = holder::spawn(
        holder_config(&[addr], None, Duration::from_millis(600)),
        &prometheus::Registry::new(),
        CancellationToken::new(),
    );
    wait_members(&mut view, "the holder to join", |m| m.len() == 1).await;
    let old = wait_held(&holders).await;
    first.stop().await;

    // A new registry on the same port knows nothing of the old lease: the
    // holder's keep-alive gets NOT_FOUND (or its lease runs out) and it
    // grants again.
    let listener = TcpListener::bind(addr).await.unwrap();
    let second = Server::start_on(registry_config(None), listener);
    let mut view = second.watch();
    let members = wait_members(&mut view, "the holder to join the new registry", |m| {
        m.len() == 1
    })
    .await;
    assert_ne!(members[0].lease_id, old[0]);
    eventually("the holder to report its new lease", || {
        holders.lease_ids() == [Some(members[0].lease_id)]
    })
    .await;
    holders.revoke_all().await;
    assert!(second.watch().borrow().is_empty());
    second.stop().await;
}

#[tokio::test]
async fn a_holder_retries_until_the_registry_is_up() {
    // Reserve a port, then leave it closed for a while.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let holders = holder::spawn(
        holder_config(&[addr], None, Duration::from_millis(600)),
        &prometheus::Registry::new(),
        CancellationToken::new(),
    );
    eventually("a failed grant", || {
        holders.status()[0].last_error.is_some()
    })
    .await;
    assert!(!holders.is_held());
    let server = Server::start_on(
        registry_config(None),
        TcpListener::bind(addr).await.unwrap(),
    );
    let mut view = server.watch();
    wait_members(&mut view, "the holder to join", |m| m.len() == 1).await;
    holders.revoke_all().await;
    server.stop().await;
}

#[tokio::test]
async fn one_lease_per_endpoint() {
    let a = Server::start(registry_config(None)).await;
    let b = Server::start(registry_config(None)).await;
    let holders = holder::spawn(
        holder_config(&[a.addr, b.addr], None, Duration::from_secs(5)),
        &prometheus::Registry::new(),
        CancellationToken::new(),
    );
    let ids = wait_held(&holders).await;
    assert_eq!(ids.len(), 2);
    assert_eq!(a.watch().borrow()[0].lease_id, ids[0]);
    assert_eq!(b.watch().borrow()[0].lease_id, ids[1]);
    holders.revoke_all().await;
    assert!(a.watch().borrow().is_empty());
    assert!(b.watch().borrow().is_empty());
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn the_token_is_required_and_checked() {
    let server = Server::start(registry_config(Some("right-token"))).await;
    let wrong = holder::spawn(
        holder_config(&[server.addr], Some("wrong-token"), Duration::from_secs(5)),
        &prometheus::Registry::new(),
        CancellationToken::new(),
    );
    eventually("the wrong token to be refused", || {
        server.counter("lease_refusals_total", Some(("reason", "unauthenticated"))) >= 2.0
    })
    .await;
    let error = wrong.status()[0].last_error.clone().unwrap_or_default();
    assert!(
        error.contains("Unauthenticated"),
        "unexpected error: {error}"
    );
    assert!(!wrong.is_held());
    assert!(server.watch().borrow().is_empty());
    wrong.abort();

    let mut view = server.watch();
    let right = holder::spawn(
        holder_config(&[server.addr], Some("right-token"), Duration::from_secs(5)),
        &prometheus::Registry::new(),
        CancellationToken::new(),
    );
    wait_members(&mut view, "the holder with the token to join", |m| {
        m.len() == 1
    })
    .await;
    right.revoke_all().await;
    assert!(
        server.watch().borrow().is_empty(),
        "revoke with the token must work"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_live_token_source_is_read_again_before_every_call() {
    let server = Server::start(registry_config(Some("next-token"))).await;
    let token = Arc::new(std::sync::Mutex::new("old-token".to_string()));
    let mut config = holder_config(&[server.addr], Some("ignored"), Duration::from_secs(5));
    let source = Arc::clone(&token);
    config.live_token = Some(holder::TokenSource(Arc::new(move || {
        Some(source.lock().unwrap().clone())
    })));
    let holders = holder::spawn(
        config,
        &prometheus::Registry::new(),
        CancellationToken::new(),
    );
    eventually("the old token to be refused", || {
        server.counter("lease_refusals_total", Some(("reason", "unauthenticated"))) >= 1.0
    })
    .await;
    assert!(!holders.is_held());

    // The token file was rotated: the same holder, without a restart,
    // sends the new token on its next attempt and joins.
    *token.lock().unwrap() = "next-token".to_string();
    let mut view = server.watch();
    wait_members(
        &mut view,
        "the holder to join with the rotated token",
        |m| m.len() == 1,
    )
    .await;
    holders.revoke_all().await;
    assert!(
        server.watch().borrow().is_empty(),
        "revoked with the new token"
    );
    server.stop().await;
}
