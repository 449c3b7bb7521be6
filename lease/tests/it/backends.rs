//! The lease behaviour, run against both membership backends: the embedded
//! registry over gRPC, and a real etcd server on loopback (the Debian
//! package `etcd-server`; a missing binary fails these tests, it never skips
//! them). Then what only etcd has: several frontends on one etcd, and etcd
//! paused, cut off or compacted.
//!
//! etcd terms are whole seconds with a minimum of about two, so the etcd
//! runs use 2 s terms. Every wait is a generous upper bound on a noisy
//! 2-core machine: the assertions are about what happens, never about how
//! fast, except that a revocation must beat a 30 s term.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lease::etcd::{EtcdConfig, EtcdMembership};
use lease::holder::{self, HolderConfig, HolderInfo, HolderSet};
use lease::registry::{Registry, RegistryConfig};
use lease::testing::{EtcdServer, TcpProxy};
use lease::{Member, MemberView, Membership, Role};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;

/// The longest any single wait may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(20);

/// A term no test outlives: a member gone before it ends was revoked.
const LONG_TTL: Duration = Duration::from_secs(30);

/// A backend: where holders hold leases, and the membership a frontend
/// would route by.
trait Backend: Sized {
    /// The shortest term the tests ask of this backend.
    const SHORT_TTL: Duration;
    async fn start() -> Self;
    /// What a holder is given as its endpoint.
    fn endpoint(&self) -> String;
    fn membership(&self) -> Arc<dyn Membership>;
    /// Ends a lease behind its holder's back.
    async fn revoke(&self, lease_id: u64);
}

/// The embedded registry served over gRPC on loopback.
struct Embedded {
    registry: Arc<Registry>,
    addr: SocketAddr,
    shutdown: CancellationToken,
    _task: JoinHandle<()>,
}

impl Backend for Embedded {
    const SHORT_TTL: Duration = Duration::from_millis(400);

    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = RegistryConfig {
            min_ttl: Duration::from_millis(100),
            max_ttl: Duration::from_secs(60),
            token: None,
        };
        let registry = Registry::new(config, &prometheus::Registry::new());
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
        Embedded {
            registry,
            addr,
            shutdown,
            _task: task,
        }
    }

    fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    fn membership(&self) -> Arc<dyn Membership> {
        self.registry.clone()
    }

    async fn revoke(&self, lease_id: u64) {
        assert!(self.registry.revoke(lease_id), "lease {lease_id} unknown");
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A real etcd server, and a frontend's membership on it.
struct Etcd {
    server: EtcdServer,
    membership: Arc<EtcdMembership>,
    prom: prometheus::Registry,
}

impl Etcd {
    async fn follow(url: &str) -> (Arc<EtcdMembership>, prometheus::Registry) {
        let prom = prometheus::Registry::new();
        let membership = EtcdMembership::connect(
            EtcdConfig::parse(url).unwrap(),
            &prom,
            CancellationToken::new(),
        )
        .await
        .unwrap();
        (membership, prom)
    }
}

impl Backend for Etcd {
    const SHORT_TTL: Duration = Duration::from_secs(2);

    async fn start() -> Self {
        let server = EtcdServer::start().await;
        let (membership, prom) = Etcd::follow(&server.url()).await;
        Etcd {
            server,
            membership,
            prom,
        }
    }

    fn endpoint(&self) -> String {
        self.server.url()
    }

    fn membership(&self) -> Arc<dyn Membership> {
        self.membership.clone()
    }

    async fn revoke(&self, lease_id: u64) {
        let mut client = self.server.client().await;
        client.lease_revoke(lease_id as i64).await.unwrap();
    }
}

fn info(role: Role, shard: u32, port: u16) -> HolderInfo {
    HolderInfo {
        role,
        shard,
        address: format!("127.0.0.1:{port}"),
        generation: 3,
    }
}

fn hold(
    endpoint: &str,
    ttl: Duration,
    info: HolderInfo,
    shutdown: CancellationToken,
) -> (HolderSet, prometheus::Registry) {
    let prom = prometheus::Registry::new();
    let config = HolderConfig {
        endpoints: vec![endpoint.to_owned()],
        token: None,
        ttl,
        info,
        live_token: None,
    };
    (holder::spawn(config, &prom, shutdown), prom)
}

fn metric(prom: &prometheus::Registry, name: &str, label: Option<(&str, &str)>) -> f64 {
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
        .map(|m| m.get_counter().value() + m.get_gauge().value())
        .sum()
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

async fn wait_held(holders: &HolderSet) -> u64 {
    let mut status = holders.watch();
    let wait = status.wait_for(|all| all.iter().all(|s| s.lease_id.is_some()));
    assert!(
        tokio::time::timeout(PATIENCE, wait).await.is_ok(),
        "holder never held its lease: {:?}",
        holders.status()
    );
    holders.lease_ids()[0].expect("held")
}

// The behaviour both backends share.

async fn a_holder_joins_and_revoke_all_removes_it_at_once<B: Backend>() {
    let backend = B::start().await;
    let mut view = backend.membership().watch();
    let (holders, prom) = hold(
        &backend.endpoint(),
        LONG_TTL,
        info(Role::Cache, 0, 7400),
        CancellationToken::new(),
    );
    let members = wait_members(&mut view, "the holder to join", |m| m.len() == 1).await;
    assert_eq!(members[0].role, Role::Cache);
    assert_eq!(members[0].shard, 0);
    assert_eq!(members[0].address, "127.0.0.1:7400");
    assert_eq!(members[0].generation, 3);
    assert_eq!(wait_held(&holders).await, members[0].lease_id);
    assert_eq!(metric(&prom, "lease_holder_grants_total", None), 1.0);

    holders.revoke_all().await;
    // Far sooner than the term: only the revocation explains it.
    wait_members(&mut view, "the revoked holder to leave", |m| m.is_empty()).await;
}

async fn a_killed_holder_expires_within_its_term<B: Backend>() {
    let backend = B::start().await;
    let mut view = backend.membership().watch();
    let (holders, _prom) = hold(
        &backend.endpoint(),
        B::SHORT_TTL,
        info(Role::Leaf, 1, 7401),
        CancellationToken::new(),
    );
    wait_members(&mut view, "the holder to join", |m| m.len() == 1).await;
    wait_held(&holders).await;
    // A crash: the tasks stop without revoking.
    let killed_at = tokio::time::Instant::now();
    holders.abort();
    wait_members(&mut view, "the killed holder to expire", |m| m.is_empty()).await;
    // The last renewal left at least two thirds of the term.
    assert!(
        killed_at.elapsed() >= B::SHORT_TTL / 2,
        "expired too early: {:?}",
        killed_at.elapsed()
    );
}

async fn a_holder_keeps_its_lease_across_many_terms<B: Backend>() {
    let backend = B::start().await;
    let mut view = backend.membership().watch();
    let (holders, prom) = hold(
        &backend.endpoint(),
        B::SHORT_TTL,
        info(Role::Leaf, 0, 7402),
        CancellationToken::new(),
    );
    wait_members(&mut view, "the holder to join", |m| m.len() == 1).await;
    eventually("six renewals", || {
        metric(
            &prom,
            "lease_holder_renewals_total",
            Some(("outcome", "ok")),
        ) >= 6.0
    })
    .await;
    // Six renewals at TTL/3 span two terms: without them the lease would
    // have expired. On a very slow tick it may have been granted again, but
    // the holder is a member again at once.
    wait_members(&mut view, "the holder to be a member", |m| m.len() == 1).await;
    holders.revoke_all().await;
}

async fn cancelling_the_shutdown_token_revokes<B: Backend>() {
    let backend = B::start().await;
    let mut view = backend.membership().watch();
    let shutdown = CancellationToken::new();
    let (holders, _prom) = hold(
        &backend.endpoint(),
        LONG_TTL,
        info(Role::Leaf, 2, 7403),
        shutdown.clone(),
    );
    wait_members(&mut view, "the holder to join", |m| m.len() == 1).await;
    shutdown.cancel();
    wait_members(&mut view, "the holder to leave", |m| m.is_empty()).await;
    eventually("the holder to release its lease", || !holders.is_held()).await;
}

async fn the_watch_tells_every_join_and_leave<B: Backend>() {
    let backend = B::start().await;
    let membership = backend.membership();
    let mut view = membership.watch();
    let (leaf, _) = hold(
        &backend.endpoint(),
        LONG_TTL,
        info(Role::Leaf, 0, 7404),
        CancellationToken::new(),
    );
    wait_members(&mut view, "the leaf to join", |m| m.len() == 1).await;
    let (cache, _) = hold(
        &backend.endpoint(),
        LONG_TTL,
        info(Role::Cache, 0, 7405),
        CancellationToken::new(),
    );
    let members = wait_members(&mut view, "the cache to join", |m| m.len() == 2).await;
    // Ordered by role, shard and address, like the registry's listing.
    assert_eq!(members[0].role, Role::Leaf);
    assert_eq!(members[1].role, Role::Cache);
    assert_eq!(membership.status().len(), 2);
    leaf.revoke_all().await;
    let members = wait_members(&mut view, "the leaf to leave", |m| m.len() == 1).await;
    assert_eq!(members[0].address, "127.0.0.1:7405");
    cache.revoke_all().await;
    wait_members(&mut view, "the cache to leave", |m| m.is_empty()).await;
}

async fn a_holder_grants_again_when_its_lease_is_gone<B: Backend>() {
    let backend = B::start().await;
    let mut view = backend.membership().watch();
    let (holders, prom) = hold(
        &backend.endpoint(),
        B::SHORT_TTL,
        info(Role::Leaf, 0, 7406),
        CancellationToken::new(),
    );
    let first = wait_members(&mut view, "the holder to join", |m| m.len() == 1).await[0].lease_id;
    backend.revoke(first).await;
    let members = wait_members(&mut view, "the holder to join again", |m| {
        m.len() == 1 && m[0].lease_id != first
    })
    .await;
    eventually("the holder to report its new lease", || {
        holders.lease_ids() == [Some(members[0].lease_id)]
    })
    .await;
    assert!(metric(&prom, "lease_holder_grants_total", None) >= 2.0);
    holders.revoke_all().await;
}

async fn a_new_generation_is_announced<B: Backend>() {
    let backend = B::start().await;
    let mut view = backend.membership().watch();
    let (holders, _prom) = hold(
        &backend.endpoint(),
        LONG_TTL,
        info(Role::Leaf, 1, 7407),
        CancellationToken::new(),
    );
    wait_members(&mut view, "the holder to join", |m| {
        m.len() == 1 && m[0].generation == 3
    })
    .await;
    holders.set_generation(4);
    assert_eq!(holders.generation(), 4);
    // One member, never two: the new announcement replaces the old one.
    let members = wait_members(&mut view, "the new generation", |m| {
        m.len() == 1 && m[0].generation == 4
    })
    .await;
    eventually("the holder to report the lease it holds", || {
        holders.lease_ids() == [Some(members[0].lease_id)]
    })
    .await;
    holders.revoke_all().await;
    wait_members(&mut view, "the holder to leave", |m| m.is_empty()).await;
}

macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test::<super::Embedded>().await;
                }
            )*
        }
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test::<super::Etcd>().await;
                }
            )*
        }
    };
}

on_both_backends!(
    a_holder_joins_and_revoke_all_removes_it_at_once,
    a_killed_holder_expires_within_its_term,
    a_holder_keeps_its_lease_across_many_terms,
    cancelling_the_shutdown_token_revokes,
    the_watch_tells_every_join_and_leave,
    a_holder_grants_again_when_its_lease_is_gone,
    a_new_generation_is_announced,
);

// What only etcd has.

const ETCD_TTL: Duration = Etcd::SHORT_TTL;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_frontends_on_one_etcd_see_the_same_members() {
    let etcd = Etcd::start().await;
    let (other, _) = Etcd::follow(&etcd.server.url()).await;
    let (mut first, mut second) = (etcd.membership.watch(), other.watch());
    let endpoint = etcd.endpoint();
    let (leaf0, _) = hold(
        &endpoint,
        ETCD_TTL,
        info(Role::Leaf, 0, 7410),
        CancellationToken::new(),
    );
    let (leaf1, _) = hold(
        &endpoint,
        ETCD_TTL,
        info(Role::Leaf, 1, 7411),
        CancellationToken::new(),
    );
    let (cache, _) = hold(
        &endpoint,
        ETCD_TTL,
        info(Role::Cache, 0, 7412),
        CancellationToken::new(),
    );
    let a = wait_members(&mut first, "three members on the first", |m| m.len() == 3).await;
    let b = wait_members(&mut second, "three members on the second", |m| m.len() == 3).await;
    assert_eq!(a, b);

    // Killed without revoking: gone from both within a term.
    leaf1.abort();
    let a = wait_members(&mut first, "the killed leaf to leave the first", |m| {
        m.len() == 2
    })
    .await;
    let b = wait_members(&mut second, "the killed leaf to leave the second", |m| {
        m.len() == 2
    })
    .await;
    assert_eq!(a, b);
    assert!(a.iter().all(|m| m.address != "127.0.0.1:7411"), "{a:?}");
    leaf0.revoke_all().await;
    cache.revoke_all().await;
    wait_members(&mut first, "the first to be empty", |m| m.is_empty()).await;
    wait_members(&mut second, "the second to be empty", |m| m.is_empty()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_etcd_keeps_the_last_membership_and_a_member_joined_meanwhile_is_seen() {
    let etcd = Etcd::start().await;
    let mut view = etcd.membership.watch();
    let endpoint = etcd.endpoint();
    let (first, _) = hold(
        &endpoint,
        ETCD_TTL,
        info(Role::Leaf, 0, 7420),
        CancellationToken::new(),
    );
    wait_members(&mut view, "the first leaf to join", |m| m.len() == 1).await;
    eventually("the membership to be connected", || {
        etcd.membership.connected()
    })
    .await;
    assert_eq!(metric(&etcd.prom, "lease_membership_connected", None), 1.0);

    etcd.server.pause();
    eventually("the membership to notice", || !etcd.membership.connected()).await;
    assert_eq!(metric(&etcd.prom, "lease_membership_connected", None), 0.0);
    // A holder that starts while etcd is frozen keeps trying.
    let (second, _) = hold(
        &endpoint,
        ETCD_TTL,
        info(Role::Leaf, 1, 7421),
        CancellationToken::new(),
    );
    // Longer than a term: the first leaf's lease would have expired.
    tokio::time::sleep(ETCD_TTL * 2).await;
    assert_eq!(
        view.borrow().len(),
        1,
        "the last membership seen was not kept: {:?}",
        view.borrow()
    );
    assert!(!etcd.membership.connected());
    assert!(!second.is_held());

    etcd.server.resume();
    wait_members(&mut view, "both leaves after etcd resumes", |m| {
        m.iter().any(|m| m.shard == 0) && m.iter().any(|m| m.shard == 1)
    })
    .await;
    eventually("the membership to be connected again", || {
        etcd.membership.connected()
    })
    .await;
    first.revoke_all().await;
    second.revoke_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_watch_resumes_from_the_next_revision() {
    let server = EtcdServer::start().await;
    let proxy = TcpProxy::start(server.addr()).await;
    // The frontend reaches etcd through the proxy, the holders directly.
    let (membership, prom) = Etcd::follow(&proxy.etcd_url()).await;
    let mut view = membership.watch();
    let (leaving, _) = hold(
        &server.url(),
        LONG_TTL,
        info(Role::Leaf, 0, 7430),
        CancellationToken::new(),
    );
    wait_members(&mut view, "the first leaf to join", |m| m.len() == 1).await;
    eventually("the membership to be connected", || membership.connected()).await;

    proxy.cut();
    eventually("the membership to notice", || !membership.connected()).await;
    let (joining, _) = hold(
        &server.url(),
        LONG_TTL,
        info(Role::Leaf, 1, 7431),
        CancellationToken::new(),
    );
    wait_held(&joining).await;
    leaving.revoke_all().await;
    assert_eq!(
        view.borrow()[0].address,
        "127.0.0.1:7430",
        "changed while cut off"
    );

    proxy.restore();
    let members = wait_members(&mut view, "the changes made while cut off", |m| {
        m.len() == 1 && m[0].address == "127.0.0.1:7431"
    })
    .await;
    assert_eq!(members[0].lease_id, joining.lease_ids()[0].unwrap());
    eventually("the membership to be connected again", || {
        membership.connected()
    })
    .await;
    assert_eq!(
        metric(&prom, "lease_membership_resyncs_total", None),
        0.0,
        "the watch should have resumed, not read everything again"
    );
    assert!(metric(&prom, "lease_membership_errors_total", None) >= 1.0);
    joining.revoke_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_revision_is_read_again_in_full() {
    let server = EtcdServer::start().await;
    let proxy = TcpProxy::start(server.addr()).await;
    let (membership, prom) = Etcd::follow(&proxy.etcd_url()).await;
    let mut view = membership.watch();
    let (leaving, _) = hold(
        &server.url(),
        LONG_TTL,
        info(Role::Leaf, 0, 7440),
        CancellationToken::new(),
    );
    wait_members(&mut view, "the first leaf to join", |m| m.len() == 1).await;
    eventually("the membership to be connected", || membership.connected()).await;

    proxy.cut();
    eventually("the membership to notice", || !membership.connected()).await;
    let (joining, _) = hold(
        &server.url(),
        LONG_TTL,
        info(Role::Cache, 0, 7441),
        CancellationToken::new(),
    );
    wait_held(&joining).await;
    leaving.revoke_all().await;
    // Compact away every revision the watch could resume from.
    let mut client = server.client().await;
    let revision = client
        .get("/", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    client.compact(revision, None).await.unwrap();

    proxy.restore();
    wait_members(&mut view, "the members read again", |m| {
        m.len() == 1 && m[0].address == "127.0.0.1:7441"
    })
    .await;
    assert!(metric(&prom, "lease_membership_resyncs_total", None) >= 1.0);
    eventually("the membership to be connected again", || {
        membership.connected()
    })
    .await;
    joining.revoke_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_the_lease_terms_read_from_etcd() {
    let etcd = Etcd::start().await;
    let mut view = etcd.membership.watch();
    let (holders, _) = hold(
        &etcd.endpoint(),
        LONG_TTL,
        info(Role::Leaf, 0, 7450),
        CancellationToken::new(),
    );
    let members = wait_members(&mut view, "the leaf to join", |m| m.len() == 1).await;
    // The first look starts the reading of terms.
    let status = etcd.membership.status();
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].member, members[0]);
    eventually("a term read from etcd", || {
        etcd.membership
            .status()
            .first()
            .is_some_and(|s| s.ttl_left > Duration::ZERO && s.ttl_left <= LONG_TTL)
    })
    .await;
    holders.revoke_all().await;
}

#[tokio::test]
async fn a_malformed_etcd_endpoint_is_reported_not_held() {
    let (holders, _) = hold(
        "etcd://no-port",
        ETCD_TTL,
        info(Role::Leaf, 0, 7460),
        CancellationToken::new(),
    );
    eventually("the error to be reported", || {
        holders.status()[0].last_error.is_some()
    })
    .await;
    let error = holders.status()[0].last_error.clone().unwrap();
    assert!(error.contains("invalid endpoint"), "{error}");
    assert!(!holders.is_held());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_watch_stays_connected() {
    let etcd = Etcd::start().await;
    eventually("the membership to be connected", || {
        etcd.membership.connected()
    })
    .await;
    // Nothing changes under the prefix: only the progress requests show
    // that etcd is alive.
    tokio::time::sleep(lease::etcd::SILENCE_LIMIT * 2).await;
    assert!(etcd.membership.connected());
    assert_eq!(
        metric(&etcd.prom, "lease_membership_errors_total", None),
        0.0
    );
}
