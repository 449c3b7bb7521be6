//! The cache server: complete search answers held by key in moka, bounded
//! in bytes and by a time to live, served over gRPC.
//!
//! - [`start`] takes bound listeners and a [`CacheConfig`], and runs:
//!   the gRPC server (`Cache` Get/Put and standard health), the HTTP
//!   endpoint (`/metrics`, `/healthz`, `/readyz`, see `svc::metrics`), a
//!   housekeeping task that runs moka's pending maintenance every second,
//!   and, when frontends are configured, a lease holder (role cache).
//!   It returns a [`CacheHandle`] to stop the server gracefully or kill it.
//! - `store.rs` holds the moka cache and its limits (key ≤ 4 KiB, value ≤
//!   an eighth of the capacity and ≤ 4 MiB); `service.rs` is the tonic
//!   service over it; `metrics.rs` has every metric; `error.rs` maps errors
//!   to gRPC codes in one place.
//! - [`config`] parses the command line of the `cache` binary.
//!
//! Shutdown, in order: health says NOT_SERVING, leases are revoked (so the
//! frontends stop routing here at once), in-flight calls drain under a time
//! limit, then the metrics endpoint stops. A kill skips all of that, as a
//! crash would: connections are cut and the leases expire on their own.
//!
//! **Invariant:** the cache server never interprets values; it stores and
//! returns bytes.

pub mod config;
mod error;
mod metrics;
mod net;
mod service;
mod store;

use std::net::SocketAddr;
use std::time::Duration;

use lease::holder::{self, EndpointStatus, HolderConfig, HolderInfo, HolderSet};
use proto::cache::cache_server::CacheServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic_health::server::HealthReporter;

pub use error::{Error, Result};
pub use service::CacheService;
pub use store::{max_value_bytes, MAX_KEY_BYTES, MAX_VALUE_BYTES};

use crate::metrics::{CacheMetrics, SizeCollector};
use crate::store::Store;

/// How often moka's pending maintenance runs (evictions, expiry
/// notifications, exact counts for the size gauges).
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(1);
/// The smallest byte bound accepted.
const MIN_BYTES: u64 = 1024;

/// What a cache server needs to know.
#[derive(Clone, Debug)]
pub struct CacheConfig {
    /// The byte bound of keys plus values.
    pub max_bytes: u64,
    /// How long an entry lives after it is stored.
    pub ttl: Duration,
    /// The lease to hold with the frontends; none when unset.
    pub lease: Option<LeaseConfig>,
    /// The `host:port` the frontends should call, when it differs from the
    /// gRPC listener's address (e.g. behind NAT or when bound to 0.0.0.0).
    pub advertise: Option<String>,
    /// How long in-flight calls may take to finish on shutdown.
    pub drain_timeout: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_bytes: 256 * 1024 * 1024,
            ttl: Duration::from_secs(60),
            lease: None,
            advertise: None,
            drain_timeout: Duration::from_secs(5),
        }
    }
}

/// The lease a cache server holds with each frontend.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// gRPC addresses of the frontends ("host:port" or "http://host:port").
    pub endpoints: Vec<String>,
    /// The cluster token, sent as `authorization: Bearer …`.
    pub token: Option<String>,
    /// The term asked for.
    pub ttl: Duration,
}

/// Counters of a running cache server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub inserts: u64,
    pub entries: u64,
    /// Weighted size: key plus value bytes of every entry.
    pub bytes: u64,
    /// Entries evicted for size or expired.
    pub evictions: u64,
}

/// A running cache server. Dropping the handle kills the server (as
/// [`CacheHandle::kill`] does); call [`CacheHandle::stop`] for a graceful
/// stop.
pub struct CacheHandle {
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    advertised: String,
    store: Store,
    registry: prometheus::Registry,
    lease_status: Option<watch::Receiver<Vec<EndpointStatus>>>,
    /// Starts the graceful stop; a child of the caller's shutdown token.
    stop: CancellationToken,
    /// Cuts every connection and stops every task at once.
    kill: CancellationToken,
    supervisor: JoinHandle<Result<()>>,
}

/// Starts a cache server on already bound listeners. It runs until
/// `shutdown` is cancelled or the handle stops it.
pub async fn start(
    config: CacheConfig,
    grpc: TcpListener,
    metrics: Option<TcpListener>,
    shutdown: CancellationToken,
) -> Result<CacheHandle> {
    if config.max_bytes < MIN_BYTES {
        return Err(Error::Config(format!(
            "max bytes must be at least {MIN_BYTES}, got {}",
            config.max_bytes
        )));
    }
    if config.ttl.is_zero() {
        return Err(Error::Config("ttl must be positive".into()));
    }
    let addr = grpc.local_addr()?;
    let metrics_addr = metrics.as_ref().map(TcpListener::local_addr).transpose()?;
    let advertised = config.advertise.clone().unwrap_or_else(|| {
        if addr.ip().is_unspecified() {
            tracing::warn!(%addr, "listening on an unspecified address without --advertise, frontends may not reach it");
        }
        addr.to_string()
    });

    let registry = prometheus::Registry::new();
    let cache_metrics =
        CacheMetrics::new(&registry).map_err(|error| Error::Config(format!("metrics: {error}")))?;
    let store = Store::new(config.max_bytes, config.ttl, cache_metrics);
    SizeCollector::register(&registry, store.entries())
        .map_err(|error| Error::Config(format!("metrics: {error}")))?;

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<CacheServer<CacheService>>().await;
    let ready = svc::metrics::Ready::default();
    let stop = shutdown.child_token();
    let kill = CancellationToken::new();
    let drain = CancellationToken::new();

    let grpc_task = {
        let server = tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(CacheService::new(store.clone()).server());
        let incoming = net::incoming(grpc, kill.clone());
        let (drain, kill) = (drain.clone(), kill.clone());
        tokio::spawn(async move {
            tokio::select! {
                result = server.serve_with_incoming_shutdown(incoming, drain.cancelled_owned()) => result.map_err(Error::from),
                () = kill.cancelled() => Ok(()),
            }
        })
    };
    let metrics_stop = CancellationToken::new();
    let metrics_task = metrics.map(|listener| {
        let serve = svc::metrics::serve(
            listener,
            registry.clone(),
            ready.clone(),
            metrics_stop.clone(),
        );
        let kill = kill.clone();
        tokio::spawn(async move {
            tokio::select! {
                result = serve => result.map_err(Error::from),
                () = kill.cancelled() => Ok(()),
            }
        })
    });
    tokio::spawn(housekeeping(store.clone(), drain.clone(), kill.clone()));

    let holders = config.lease.as_ref().map(|lease| {
        holder::spawn(
            HolderConfig {
                endpoints: lease.endpoints.clone(),
                token: lease.token.clone(),
                ttl: lease.ttl,
                info: HolderInfo {
                    role: lease::Role::Cache,
                    shard: 0,
                    address: advertised.clone(),
                    generation: 0,
                },
            },
            &registry,
            // Not the caller's token: the supervisor revokes explicitly,
            // before the gRPC server stops.
            CancellationToken::new(),
        )
    });
    let lease_status = holders.as_ref().map(HolderSet::watch);
    ready.set(true);
    tracing::info!(
        %addr,
        advertised = %advertised,
        max_bytes = config.max_bytes,
        ttl = ?config.ttl,
        frontends = config.lease.as_ref().map_or(0, |lease| lease.endpoints.len()),
        "cache server started"
    );

    let supervisor = tokio::spawn(supervise(Parts {
        stop: stop.clone(),
        kill: kill.clone(),
        drain,
        metrics_stop,
        drain_timeout: config.drain_timeout,
        health,
        ready,
        holders,
        grpc_task,
        metrics_task,
    }));
    Ok(CacheHandle {
        addr,
        metrics_addr,
        advertised,
        store,
        registry,
        lease_status,
        stop,
        kill,
        supervisor,
    })
}

/// Runs a cache server until `shutdown` is cancelled, then stops it
/// gracefully: what `main` calls.
pub async fn run(
    config: CacheConfig,
    grpc: TcpListener,
    metrics: TcpListener,
    shutdown: CancellationToken,
) -> Result<()> {
    start(config, grpc, Some(metrics), shutdown)
        .await?
        .wait()
        .await
}

impl CacheHandle {
    /// The gRPC address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The HTTP address of `/metrics`, when it serves one.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The address it announces in its lease.
    pub fn advertised(&self) -> &str {
        &self.advertised
    }

    /// Its Prometheus registry (what `/metrics` serves).
    pub fn registry(&self) -> &prometheus::Registry {
        &self.registry
    }

    /// The leases held, one per frontend in the configured order; empty
    /// without a lease config.
    pub fn lease_ids(&self) -> Vec<Option<u64>> {
        self.lease_status.as_ref().map_or_else(Vec::new, |status| {
            status.borrow().iter().map(|s| s.lease_id).collect()
        })
    }

    /// Exact counters, after moka's pending maintenance has run.
    pub async fn stats(&self) -> CacheStats {
        self.store.sync().await;
        let (entries, bytes) = self.store.entries().counts();
        let metrics = self.store.metrics();
        CacheStats {
            hits: metrics.hits.get(),
            misses: metrics.misses.get(),
            inserts: metrics.inserts.get(),
            entries,
            bytes,
            evictions: ["size", "expired"]
                .iter()
                .map(|cause| metrics.evictions.with_label_values(&[*cause]).get())
                .sum(),
        }
    }

    /// Stops gracefully: NOT_SERVING, revoke the leases, drain in-flight
    /// calls (bounded by the drain timeout), stop.
    pub async fn stop(self) -> Result<()> {
        self.stop.cancel();
        self.wait().await
    }

    /// Waits until the server has stopped (after `shutdown` was cancelled).
    pub async fn wait(mut self) -> Result<()> {
        (&mut self.supervisor).await?
    }

    /// Stops at once without revoking or draining, as a crash would: open
    /// connections are cut and the leases expire at the frontends.
    pub fn kill(self) {
        drop(self);
    }
}

impl Drop for CacheHandle {
    fn drop(&mut self) {
        self.kill.cancel();
        // Aborting drops the lease holders, which stop without revoking.
        self.supervisor.abort();
    }
}

/// What the supervisor owns.
struct Parts {
    stop: CancellationToken,
    kill: CancellationToken,
    drain: CancellationToken,
    metrics_stop: CancellationToken,
    drain_timeout: Duration,
    health: HealthReporter,
    ready: svc::metrics::Ready,
    holders: Option<HolderSet>,
    grpc_task: JoinHandle<Result<()>>,
    metrics_task: Option<JoinHandle<Result<()>>>,
}

/// Waits for a stop, a kill or a failed server, and carries out the stop.
async fn supervise(mut parts: Parts) -> Result<()> {
    // A kill also ends the gRPC server, so it is checked first: a killed
    // server must not look like a failed one and revoke its leases.
    let failure = tokio::select! {
        biased;
        () = parts.kill.cancelled() => return Ok(()),
        () = parts.stop.cancelled() => None,
        result = &mut parts.grpc_task => Some(flatten(result)),
    };
    if parts.kill.is_cancelled() {
        return Ok(());
    }
    if let Some(result) = failure {
        // The gRPC server ended on its own: nothing left to serve.
        tracing::error!(result = ?result, "grpc server stopped unexpectedly");
        parts.ready.set(false);
        if let Some(holders) = parts.holders.take() {
            holders.revoke_all().await;
        }
        parts.metrics_stop.cancel();
        parts.kill.cancel();
        return result.and(Err(Error::ServerStopped));
    }

    tracing::info!("cache server stopping");
    parts.ready.set(false);
    parts
        .health
        .set_not_serving::<CacheServer<CacheService>>()
        .await;
    parts
        .health
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    if let Some(holders) = parts.holders.take() {
        holders.revoke_all().await;
    }
    parts.drain.cancel();
    let drained = tokio::time::timeout(parts.drain_timeout, &mut parts.grpc_task).await;
    let result = match drained {
        Ok(result) => flatten(result),
        Err(_) => {
            tracing::warn!(limit = ?parts.drain_timeout, "drain did not finish in time, cutting connections");
            Ok(())
        }
    };
    parts.metrics_stop.cancel();
    if let Some(task) = parts.metrics_task.as_mut() {
        match tokio::time::timeout(Duration::from_secs(1), task).await {
            Ok(result) => {
                if let Err(error) = flatten(result) {
                    tracing::warn!(%error, "metrics endpoint failed");
                }
            }
            Err(_) => tracing::warn!("metrics endpoint did not stop in time"),
        }
    }
    // Whatever is still open after the drain is cut.
    parts.kill.cancel();
    tracing::info!("cache server stopped");
    result
}

fn flatten(result: std::result::Result<Result<()>, tokio::task::JoinError>) -> Result<()> {
    result?
}

/// Runs moka's pending maintenance every second, so that evictions and
/// expiries are counted and the size gauges are exact, even when idle.
async fn housekeeping(store: Store, drain: CancellationToken, kill: CancellationToken) {
    let mut tick = tokio::time::interval(HOUSEKEEPING_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = drain.cancelled() => return,
            () = kill.cancelled() => return,
            _ = tick.tick() => store.sync().await,
        }
    }
}
