//! Starting, running and stopping one cache server, on the lifecycle of
//! `svc::server`: the gRPC server (`Cache` Get/Put and standard health),
//! the optional HTTP endpoint (`/metrics`, `/healthz`, `/readyz`), a
//! housekeeping task that runs moka's pending maintenance every second, and,
//! when frontends are configured, a lease holder (role cache).
//!
//! Shutdown is `svc`'s one order: NOT_SERVING, revoke the leases, drain
//! in-flight calls under the drain timeout, stop. A kill skips all of that,
//! as a crash would.

use std::net::SocketAddr;
use std::time::Duration;

use lease::{HolderInfo, Role};
use proto::cache::cache_server::CacheServer;
use svc::{Lifecycle, ServerHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::CacheConfig;
use crate::error::{Error, Result};
use crate::metrics::{CacheMetrics, EvictionCause, SizeCollector, SizeSource};
use crate::service::CacheService;
use crate::store::Store;

/// How often moka's pending maintenance runs (evictions, expiry
/// notifications, exact counts for the size gauges).
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(1);
/// The smallest byte bound accepted.
const MIN_BYTES: u64 = 1024;

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
    advertised: String,
    store: Store,
    registry: prometheus::Registry,
    server: ServerHandle,
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

    let mut lifecycle = Lifecycle::new("cache", registry.clone(), config.drain_timeout, &shutdown);
    lifecycle.serve_metrics(metrics);
    lifecycle.secure(
        svc::Security::new(&config.auth, &config.tls)
            .map_err(|error| Error::Config(error.to_string()))?,
    );
    let health = lifecycle
        .health_service::<CacheServer<CacheService>>()
        .await;
    let grpc = svc::server::grpc_server()
        .layer(lifecycle.auth_layer())
        .add_service(health)
        .add_service(CacheService::new(store.clone()).server())
        .serve_with_incoming_shutdown(
            lifecycle.incoming(grpc),
            lifecycle.draining().cancelled_owned(),
        );
    lifecycle.spawn(housekeeping(store.clone(), lifecycle.draining()));
    lifecycle.hold_leases(
        config.lease.as_ref(),
        HolderInfo {
            role: Role::Cache,
            shard: 0,
            address: advertised.clone(),
            generation: 0,
        },
    );
    let server = lifecycle.serve(grpc);
    tracing::info!(
        %addr,
        advertised = %advertised,
        max_bytes = config.max_bytes,
        ttl = ?config.ttl,
        frontends = config.lease.as_ref().map_or(0, |lease| lease.frontends.len()),
        "cache server started"
    );
    Ok(CacheHandle {
        addr,
        advertised,
        store,
        registry,
        server,
    })
}

/// Runs a cache server until `shutdown` is cancelled, then stops it
/// gracefully: what `main` calls.
pub async fn run(
    config: CacheConfig,
    grpc: TcpListener,
    metrics: Option<TcpListener>,
    shutdown: CancellationToken,
) -> Result<()> {
    start(config, grpc, metrics, shutdown).await?.wait().await
}

impl CacheHandle {
    /// The gRPC address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The HTTP address of `/metrics`, when it serves one.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.server.metrics_addr()
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
        self.server.lease_ids()
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
            evictions: EvictionCause::ALL
                .iter()
                .map(|cause| metrics.evictions.with_label_values(&[cause.label()]).get())
                .sum(),
        }
    }

    /// Stops gracefully: NOT_SERVING, revoke the leases, drain in-flight
    /// calls (bounded by the drain timeout), stop.
    pub async fn stop(mut self) -> Result<()> {
        Ok(self.server.stop().await?)
    }

    /// Waits until the server has stopped (after `shutdown` was cancelled).
    pub async fn wait(mut self) -> Result<()> {
        Ok(self.server.wait().await?)
    }

    /// Stops at once without revoking or draining, as a crash would: open
    /// connections are cut and the leases expire at the frontends.
    pub fn kill(self) {
        drop(self);
    }
}

impl Drop for CacheHandle {
    fn drop(&mut self) {
        self.server.kill();
    }
}

/// Runs moka's pending maintenance every second, so that evictions and
/// expiries are counted and the size gauges are exact, even when idle.
async fn housekeeping(store: Store, draining: CancellationToken) {
    let mut tick = tokio::time::interval(HOUSEKEEPING_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = draining.cancelled() => return,
            _ = tick.tick() => store.sync().await,
        }
    }
}
