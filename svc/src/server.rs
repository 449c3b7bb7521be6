//! One server lifecycle, shared by every gRPC server of the project.
//!
//! A server builds a [`Lifecycle`] first, then, in this order:
//! 1. [`Lifecycle::serve_metrics`]: `/metrics`, `/healthz` and `/readyz` on
//!    an optional, already bound listener (served while the server still
//!    builds its state; `/readyz` says no until it serves);
//! 2. its own state (an index, a cache), cancellable by
//!    [`Lifecycle::stop_requested`];
//! 3. [`Lifecycle::health_service`] for the standard health service,
//!    SERVING for the server's gRPC service, and [`Lifecycle::incoming`]
//!    for killable connections on its already bound gRPC listener;
//! 4. [`Lifecycle::hold_leases`] when it holds a lease with the frontends;
//!    background loops with [`Lifecycle::spawn`] (tracked, and ended by
//!    [`Lifecycle::draining`] or a kill);
//! 5. [`Lifecycle::serve`] with the gRPC server's future, which returns a
//!    [`ServerHandle`].
//!
//! **Invariant:** a graceful stop (the caller's shutdown token, or
//! [`ServerHandle::stop`]) always runs in this order: health says
//! NOT_SERVING (and `/readyz` says no), the leases are revoked (so the
//! frontends stop routing here at once), in-flight calls drain under the
//! drain timeout, then background tasks and the metrics endpoint stop and
//! whatever connection is still open is cut. A gRPC server that ends on its
//! own takes the same path without the drain.
//!
//! [`ServerHandle::kill`] skips all of that, as a crash would: connections
//! are cut, tasks end, and the leases are not revoked (they expire at the
//! frontends). A kill is checked before anything else, so a killed server
//! never takes the failed-server path that revokes its leases.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use lease::holder::{EndpointStatus, HolderConfig, HolderInfo, HolderSet};
use lease::LeaseConfig;
use prometheus::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::server::NamedService;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::auth::AuthLayer;
use crate::metrics::Ready;
use crate::net::Killable;
use crate::security::Security;
use crate::tls::Conn;

/// How long background tasks and the metrics endpoint may take to stop
/// after the drain, before they are cut.
const TASKS_TIMEOUT: Duration = Duration::from_secs(1);

/// Streams a client may reset before this server accepted them, per
/// connection, before the server closes the connection (h2's guard against
/// rapid-reset floods, CVE-2023-44487; its default is 20). A process that
/// was frozen for a moment (SIGSTOP, CPU throttling, a long pause) finds on
/// waking every call its callers hedged or abandoned meanwhile already
/// reset: at 20 it closed the connection with GOAWAY and failed the calls
/// that came after them too, just as it came back. 1,024 holds about a
/// second of a busy frontend's calls and still bounds the guard.
pub const MAX_PENDING_ACCEPT_RESETS: usize = 1024;

/// The gRPC server builder every server of the cluster starts from.
pub fn grpc_server() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .http2_max_pending_accept_reset_streams(Some(MAX_PENDING_ACCEPT_RESETS))
}

/// Why a server stopped other than by a graceful stop.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("grpc server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("grpc server stopped unexpectedly")]
    Stopped,
    #[error("server task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// The parts of one server's lifecycle, before it serves. Dropping it
/// before [`Lifecycle::serve`] (a failed start) stops the metrics endpoint
/// and every task spawned so far.
pub struct Lifecycle {
    /// For logs: `leaf`, `cache`, `frontend`.
    name: &'static str,
    drain_timeout: Duration,
    registry: Registry,
    ready: Ready,
    /// Starts the graceful stop; a child of the caller's shutdown token.
    stop: CancellationToken,
    /// Cancelled once NOT_SERVING is reported and the leases are revoked:
    /// the gRPC server stops accepting, in-flight work finishes.
    draining: CancellationToken,
    /// Stops the metrics endpoint, last.
    metrics_stop: CancellationToken,
    /// Cuts every connection and ends every task at once.
    kill: CancellationToken,
    tasks: TaskTracker,
    health: Option<(HealthReporter, &'static str)>,
    /// One holder set per lease held (a leaf serving several shards holds
    /// one per shard).
    holders: Vec<HolderSet>,
    /// The holder metrics every holder set counts in (made by the first).
    holder_metrics: Option<lease::holder::HolderMetrics>,
    metrics_addr: Option<SocketAddr>,
    served: bool,
    /// Tokens and TLS of the internal plane (open and plain by default).
    security: Security,
}

impl Lifecycle {
    /// A lifecycle that stops gracefully when `shutdown` is cancelled, and
    /// whose metrics endpoint and lease holders use `registry`.
    pub fn new(
        name: &'static str,
        registry: Registry,
        drain_timeout: Duration,
        shutdown: &CancellationToken,
    ) -> Lifecycle {
        Lifecycle {
            name,
            drain_timeout,
            registry,
            ready: Ready::default(),
            stop: shutdown.child_token(),
            draining: CancellationToken::new(),
            metrics_stop: CancellationToken::new(),
            kill: CancellationToken::new(),
            tasks: TaskTracker::new(),
            health: None,
            holders: Vec::new(),
            holder_metrics: None,
            metrics_addr: None,
            served: false,
            security: Security::default(),
        }
    }

    /// Uses `security` for the gRPC listener ([`Lifecycle::incoming`]), the
    /// check of incoming calls ([`Lifecycle::auth_layer`]) and the lease
    /// holders. Call it before those.
    pub fn secure(&mut self, security: Security) {
        self.security = security;
    }

    /// The credentials in force.
    pub fn security(&self) -> &Security {
        &self.security
    }

    /// The check of every incoming call but health, for
    /// [`grpc_server`]`().layer(…)`; it passes everything on an open
    /// server.
    pub fn auth_layer(&self) -> AuthLayer {
        AuthLayer::new(self.name, self.security.tokens.clone(), &self.registry)
    }

    /// Cancelled when a graceful stop is asked for: for work that runs
    /// before serving (an index build) to give up.
    pub fn stop_requested(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Cancelled when in-flight work should finish: after NOT_SERVING and
    /// the revocation, before the drain. Background loops end on it, hung
    /// calls answer.
    pub fn draining(&self) -> CancellationToken {
        self.draining.clone()
    }

    /// Readiness, as `/readyz` reports it: true from [`Lifecycle::serve`]
    /// until the stop starts.
    pub fn ready(&self) -> &Ready {
        &self.ready
    }

    /// Serves `/metrics`, `/healthz` and `/readyz` on `listener` (none: no
    /// endpoint) until the stop's last step. Returns the bound address.
    pub fn serve_metrics(&mut self, listener: Option<TcpListener>) -> Option<SocketAddr> {
        let listener = listener?;
        let addr = listener.local_addr().ok();
        let serve = crate::metrics::serve(
            listener,
            self.registry.clone(),
            self.ready.clone(),
            self.metrics_stop.clone(),
        );
        self.spawn(async move {
            if let Err(error) = serve.await {
                tracing::error!(%error, "metrics endpoint failed");
            }
        });
        self.metrics_addr = addr;
        addr
    }

    /// The standard gRPC health service, SERVING for `S` until the stop.
    pub async fn health_service<S: NamedService>(&mut self) -> HealthServer<impl Health> {
        let (reporter, service) = tonic_health::server::health_reporter();
        reporter.set_serving::<S>().await;
        self.health = Some((reporter, S::NAME));
        service
    }

    /// The connections accepted on `listener` for the gRPC server, each cut
    /// by a kill (and by the stop's last step), after a TLS handshake when
    /// the server has a certificate.
    pub fn incoming(
        &self,
        listener: TcpListener,
    ) -> impl Stream<Item = std::io::Result<Conn<Killable>>> + Send + 'static {
        crate::tls::incoming(
            crate::net::incoming(listener, self.kill.clone()),
            self.security.acceptor.clone(),
        )
    }

    /// Holds `lease` (none: no lease) as `info` until the stop revokes it;
    /// a kill leaves it to expire. Each call adds one more lease (a leaf
    /// serving several shards holds one per shard); the first is the one
    /// [`ServerHandle::lease_status`] reports and the generation announcer
    /// speaks for.
    pub fn hold_leases(&mut self, lease: Option<&LeaseConfig>, info: HolderInfo) {
        let connect = self.security.client.clone().map(|tls| {
            lease::holder::Connect(std::sync::Arc::new(move |endpoint| tls.channel(endpoint)))
        });
        let tokens = self.security.tokens.clone();
        let registry = &self.registry;
        let metrics = lease.map(|_| {
            self.holder_metrics
                .get_or_insert_with(|| lease::holder::HolderMetrics::new(registry))
                .clone()
        });
        let holders = lease.zip(metrics).map(|(lease, metrics)| {
            // The lease's own token when it names one; else the one this
            // server sends, read live (a rotated token file takes effect on
            // the next keep-alive).
            let live_token = match (&lease.token, tokens) {
                (None, Some(tokens)) => {
                    Some(lease::holder::TokenSource(std::sync::Arc::new(move || {
                        tokens.current()
                    })))
                }
                _ => None,
            };
            lease::holder::spawn_counted(
                HolderConfig {
                    endpoints: lease.frontends.clone(),
                    token: lease.token.clone(),
                    ttl: lease.ttl,
                    info,
                    live_token,
                },
                connect,
                metrics,
                // Not the caller's token: the stop revokes explicitly, after
                // NOT_SERVING and before the drain.
                CancellationToken::new(),
            )
        });
        self.holders.extend(holders);
    }

    /// Announces a new index generation in the leases held (none: no
    /// leases); call after [`Lifecycle::hold_leases`].
    pub fn generation_announcer(&self) -> Option<lease::holder::GenerationAnnouncer> {
        self.holders.first().map(HolderSet::announcer)
    }

    /// Runs `task` in the background, tracked: the stop waits for it (it
    /// should end on [`Lifecycle::draining`]) and a kill ends it.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let kill = self.kill.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                () = task => {}
                () = kill.cancelled() => {}
            }
        });
    }

    /// Serves `grpc` (a tonic server built with [`Lifecycle::incoming`] and
    /// shut down by [`Lifecycle::draining`]) and supervises the stop.
    pub fn serve<F>(mut self, grpc: F) -> ServerHandle
    where
        F: Future<Output = Result<(), tonic::transport::Error>> + Send + 'static,
    {
        self.served = true;
        let kill = self.kill.clone();
        let grpc = tokio::spawn(async move {
            tokio::select! {
                result = grpc => result.map_err(ServeError::from),
                () = kill.cancelled() => Ok(()),
            }
        });
        self.ready.set(true);
        let holders = std::mem::take(&mut self.holders);
        let lease_status = holders.first().map(HolderSet::watch);
        let supervisor = tokio::spawn(supervise(Supervised {
            name: self.name,
            drain_timeout: self.drain_timeout,
            ready: self.ready.clone(),
            stop: self.stop.clone(),
            draining: self.draining.clone(),
            metrics_stop: self.metrics_stop.clone(),
            kill: self.kill.clone(),
            tasks: self.tasks.clone(),
            health: self.health.take(),
            holders,
            grpc,
        }));
        ServerHandle {
            stop: self.stop.clone(),
            kill: self.kill.clone(),
            supervisor,
            lease_status,
            metrics_addr: self.metrics_addr,
        }
    }
}

impl Drop for Lifecycle {
    fn drop(&mut self) {
        if !self.served {
            // A start that failed: nothing may outlive it.
            self.kill.cancel();
            self.tasks.close();
        }
    }
}

/// A running server's lifecycle: stop it gracefully, wait for it, kill it.
/// Dropping the handle leaves the server running until the caller's
/// shutdown token is cancelled.
pub struct ServerHandle {
    stop: CancellationToken,
    kill: CancellationToken,
    supervisor: JoinHandle<Result<(), ServeError>>,
    lease_status: Option<watch::Receiver<Vec<EndpointStatus>>>,
    metrics_addr: Option<SocketAddr>,
}

impl ServerHandle {
    /// The address of `/metrics`, when served.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The state of the lease at each endpoint, in the configured order
    /// (empty without leases).
    pub fn lease_status(&self) -> Vec<EndpointStatus> {
        self.lease_status
            .as_ref()
            .map(|status| status.borrow().clone())
            .unwrap_or_default()
    }

    /// The lease held at each endpoint, in the configured order.
    pub fn lease_ids(&self) -> Vec<Option<u64>> {
        self.lease_status
            .as_ref()
            .map(|status| status.borrow().iter().map(|s| s.lease_id).collect())
            .unwrap_or_default()
    }

    /// True when a lease is held at every endpoint (false without leases).
    pub fn leases_held(&self) -> bool {
        self.lease_status.as_ref().is_some_and(|status| {
            let status = status.borrow();
            !status.is_empty() && status.iter().all(|s| s.lease_id.is_some())
        })
    }

    /// Starts the graceful stop without waiting for it.
    pub fn begin_stop(&self) {
        self.stop.cancel();
    }

    /// Stops gracefully (NOT_SERVING, revoke, drain, stop) and waits.
    pub async fn stop(&mut self) -> Result<(), ServeError> {
        self.stop.cancel();
        self.wait().await
    }

    /// Waits until the server has stopped (after a stop was asked for, or
    /// the gRPC server failed). Call it once.
    pub async fn wait(&mut self) -> Result<(), ServeError> {
        (&mut self.supervisor).await?
    }

    /// A token that, cancelled, kills the server as [`ServerHandle::kill`]
    /// does (a crash from inside, e.g. a leaf's query-of-death hook).
    pub fn kill_switch(&self) -> CancellationToken {
        self.kill.clone()
    }

    /// Stops at once without revoking or draining, as a crash would.
    pub fn kill(&self) {
        self.kill.cancel();
        // Aborting drops the lease holders, which stop without revoking.
        self.supervisor.abort();
    }
}

/// What the supervisor owns.
struct Supervised {
    name: &'static str,
    drain_timeout: Duration,
    ready: Ready,
    stop: CancellationToken,
    draining: CancellationToken,
    metrics_stop: CancellationToken,
    kill: CancellationToken,
    tasks: TaskTracker,
    health: Option<(HealthReporter, &'static str)>,
    holders: Vec<HolderSet>,
    grpc: JoinHandle<Result<(), ServeError>>,
}

/// Waits for a stop, a kill or a failed gRPC server, and carries out the
/// stop in the order of the module's invariant.
async fn supervise(mut parts: Supervised) -> Result<(), ServeError> {
    let server = parts.name;
    // A kill also ends the gRPC server, so it is checked first: a killed
    // server must not look like a failed one and revoke its leases.
    let ended = tokio::select! {
        biased;
        () = parts.kill.cancelled() => return Ok(()),
        () = parts.stop.cancelled() => None,
        result = &mut parts.grpc => Some(flatten(result)),
    };
    if parts.kill.is_cancelled() {
        return Ok(());
    }
    let failure = ended.map(|result| {
        let error = result.err().unwrap_or(ServeError::Stopped);
        tracing::error!(server, %error, "grpc server stopped unexpectedly");
        error
    });
    tracing::info!(server, "stopping");

    // 1. Not serving: health checks and /readyz say so.
    parts.ready.set(false);
    if let Some((health, service)) = &parts.health {
        health
            .set_service_status(service, ServingStatus::NotServing)
            .await;
        health
            .set_service_status("", ServingStatus::NotServing)
            .await;
    }
    // 2. Revoke, so that frontends stop routing here at once; `revoke_all`
    // bounds its own time.
    let holders = std::mem::take(&mut parts.holders);
    if !holders.is_empty() {
        futures::future::join_all(holders.into_iter().map(HolderSet::revoke_all)).await;
        tracing::info!(server, "leases revoked");
    }
    // 3. Drain in-flight calls under the time limit.
    parts.draining.cancel();
    let mut result = Ok(());
    if failure.is_none() {
        match tokio::time::timeout(parts.drain_timeout, &mut parts.grpc).await {
            Ok(drained) => {
                result = flatten(drained);
                tracing::info!(server, "drained in-flight calls");
            }
            Err(_) => {
                tracing::warn!(server, limit = ?parts.drain_timeout, "drain did not finish in time, cutting connections")
            }
        }
    }
    // 4. Stop background tasks and the metrics endpoint, then cut whatever
    // is still open.
    parts.metrics_stop.cancel();
    parts.tasks.close();
    if tokio::time::timeout(TASKS_TIMEOUT, parts.tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(server, limit = ?TASKS_TIMEOUT, "background tasks did not stop in time, cutting them");
    }
    parts.kill.cancel();
    parts.grpc.abort();
    tracing::info!(server, "stopped");
    match failure {
        Some(error) => Err(error),
        None => result,
    }
}

fn flatten(
    result: Result<Result<(), ServeError>, tokio::task::JoinError>,
) -> Result<(), ServeError> {
    result?
}
