//! Starting, running and stopping one leaf server, on the lifecycle of
//! `svc::server`.
//!
//! [`start`] serves `/metrics` (when given a listener) while it builds (or
//! reopens) the index on a blocking thread, then serves gRPC (the `Leaf`
//! service and standard health) on the given listener, takes its leases,
//! and returns a [`LeafHandle`]. Shutdown, from the token or
//! [`LeafHandle::stop`], is `svc`'s one order: report NOT_SERVING, revoke
//! leases, drain in-flight calls under `drain_timeout` (hung calls answer
//! at once), then reset whatever is left. [`LeafHandle::kill`] simulates a
//! crash: connections are reset and leases are left to expire.

use std::net::SocketAddr;
use std::sync::Arc;

use lease::{HolderInfo, Role};
use prometheus::Registry;
use proto::leaf::leaf_server::LeafServer;
use svc::{Lifecycle, ServerHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::LeafConfig;
use crate::corpus::CorpusSource;
use crate::error::{LeafError, Result};
use crate::faults::Faults;
use crate::index::ShardIndex;
use crate::limits::Admission;
use crate::metrics::Metrics;
use crate::service::{ArrivalLayer, Counters, LeafService, LeafStats, Shared};

/// A running leaf.
pub struct LeafHandle {
    addr: SocketAddr,
    advertised: String,
    index: Arc<ShardIndex>,
    faults: Faults,
    counters: Arc<Counters>,
    registry: Registry,
    /// The lifecycle: stop, wait, kill, leases.
    server: ServerHandle,
}

impl LeafHandle {
    /// The bound gRPC address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address announced in leases.
    pub fn advertised(&self) -> &str {
        &self.advertised
    }

    /// The fault knobs, adjustable while the leaf runs.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Search counters (answered, cancelled, rejected, …).
    pub fn stats(&self) -> LeafStats {
        self.counters.snapshot()
    }

    pub fn shard(&self) -> u32 {
        self.index.shard()
    }

    pub fn generation(&self) -> u64 {
        self.index.generation()
    }

    pub fn num_docs(&self) -> u64 {
        self.index.num_docs()
    }

    /// The shard's index, for in-process searches.
    pub fn index(&self) -> &Arc<ShardIndex> {
        &self.index
    }

    /// This leaf's metrics registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The state of the lease at each frontend (empty without leases).
    pub fn lease_status(&self) -> Vec<lease::holder::EndpointStatus> {
        self.server.lease_status()
    }

    /// True when a lease is held at every frontend (false without leases).
    pub fn leases_held(&self) -> bool {
        self.server.leases_held()
    }

    /// The address of `/metrics`, when served.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.server.metrics_addr()
    }

    /// Stops gracefully (NOT_SERVING, revoke leases, drain) and waits.
    pub async fn stop(self) {
        self.server.begin_stop();
        self.wait().await;
    }

    /// Waits until the leaf has shut down (after its token was cancelled).
    pub async fn wait(self) {
        if let Err(error) = self.join().await {
            tracing::error!(%error, "leaf stopped with an error");
        }
    }

    /// Stops abruptly, like a crash: open connections are reset, tasks are
    /// aborted, and leases are not revoked (their keep-alives stop, so they
    /// expire at the end of their term).
    pub fn kill(self) {
        self.server.kill();
        tracing::info!(shard = self.index.shard(), "leaf killed");
    }

    /// Waits until the leaf has shut down, with the reason when it stopped
    /// on its own (what `main` turns into its exit code).
    pub async fn join(mut self) -> Result<()> {
        Ok(self.server.wait().await?)
    }
}

/// Builds the index, serves until `shutdown` is cancelled, shuts down
/// gracefully. What `main` calls.
pub async fn run(
    config: LeafConfig,
    corpus: CorpusSource,
    grpc: TcpListener,
    metrics: Option<TcpListener>,
    shutdown: CancellationToken,
) -> Result<()> {
    match start(config, corpus, grpc, metrics, shutdown).await {
        Ok(handle) => handle.join().await,
        // Asked to stop while building: a clean exit.
        Err(LeafError::ShuttingDown) => Ok(()),
        Err(error) => Err(error),
    }
}

/// Builds (or reopens) the index off the runtime, starts serving on `grpc`
/// (and `/metrics` on `metrics`), and returns once the leaf is ready; its
/// leases are granted in the background (see [`LeafHandle::leases_held`]).
pub async fn start(
    config: LeafConfig,
    corpus: CorpusSource,
    grpc: TcpListener,
    metrics: Option<TcpListener>,
    shutdown: CancellationToken,
) -> Result<LeafHandle> {
    config.validate()?;
    let addr = grpc.local_addr()?;
    let registry = Registry::new();
    let leaf_metrics = Metrics::new(&registry, config.shard)
        .map_err(|error| LeafError::Internal(format!("cannot register metrics: {error}")))?;
    // Dropped on any error below, which stops the metrics endpoint.
    let mut lifecycle = Lifecycle::new("leaf", registry.clone(), config.drain_timeout, &shutdown);
    // Metrics are served while the index builds, with /readyz saying no.
    lifecycle.serve_metrics(metrics);

    let index = {
        let (shard, shards, index_config) = (config.shard, config.shards, config.index.clone());
        let cancel = lifecycle.stop_requested();
        tokio::task::spawn_blocking(move || {
            ShardIndex::open_or_build(shard, shards, &index_config, &corpus, &cancel)
        })
        .await
        .map_err(|error| LeafError::Internal(format!("index build task failed: {error}")))
    };
    let index = Arc::new(index.and_then(|built| built)?);
    let report = index.build_report();
    leaf_metrics
        .index_documents
        .set(saturating_i64(index.num_docs()));
    leaf_metrics
        .index_generation
        .set(saturating_i64(index.generation()));
    leaf_metrics
        .index_build_duration
        .set(report.duration.as_secs_f64());
    leaf_metrics
        .corpus_bad_lines
        .set(saturating_i64(report.bad_lines));

    let faults = Faults::new(&config.faults);
    let counters = Arc::new(Counters::default());
    let shared = Arc::new(Shared {
        index: Arc::clone(&index),
        faults: faults.clone(),
        admission: Admission::new(config.limits.clone(), leaf_metrics.clone()),
        metrics: leaf_metrics,
        counters: Arc::clone(&counters),
        // Hung calls answer once the drain starts.
        stopping: lifecycle.draining(),
        reply_margin: config.reply_margin,
    });

    lifecycle.secure(
        svc::Security::new(&config.auth, &config.tls)
            .map_err(|error| LeafError::Config(error.to_string()))?,
    );
    let health = lifecycle.health_service::<LeafServer<LeafService>>().await;
    let grpc = tonic::transport::Server::builder()
        .layer(ArrivalLayer)
        .layer(lifecycle.auth_layer())
        .add_service(health)
        .add_service(LeafServer::new(LeafService::new(shared)))
        .serve_with_incoming_shutdown(
            lifecycle.incoming(grpc),
            lifecycle.draining().cancelled_owned(),
        );

    let advertised = config.advertise.clone().unwrap_or_else(|| addr.to_string());
    if config.advertise.is_none() && addr.ip().is_unspecified() {
        tracing::warn!(%addr, "advertising an unspecified address; set --advertise");
    }
    lifecycle.hold_leases(
        config.lease.as_ref(),
        HolderInfo {
            role: Role::Leaf,
            shard: config.shard,
            address: advertised.clone(),
            generation: index.generation(),
        },
    );
    let server = lifecycle.serve(grpc);
    tracing::info!(
        %addr,
        advertised,
        shard = config.shard,
        shards = config.shards,
        documents = index.num_docs(),
        generation = index.generation(),
        leases = config.lease.as_ref().map_or(0, |lease| lease.frontends.len()),
        "leaf serving"
    );
    Ok(LeafHandle {
        addr,
        advertised,
        index,
        faults,
        counters,
        registry,
        server,
    })
}

fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
