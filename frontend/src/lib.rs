//! The root frontend: answers HTTP search queries by fanning each one out to
//! one replica of every shard, merging what arrives before the deadline, and
//! saying exactly how complete the answer is.
//!
//! A query flows through these parts, top to bottom:
//! - [`http`]: the axum router; [`api`] parses and validates requests and
//!   shapes responses; [`error`] maps every failure to a status and a code.
//! - [`admission`]: an adaptive concurrency limit with a bounded queue that
//!   sheds load with 503 rather than letting latency collapse.
//! - [`root`]: cache lookup ([`cache_tier`]), coalescing of identical
//!   misses, corpus-wide term statistics ([`stats`]), then:
//! - [`fanout`]: one call per shard under the deadline, replica choice by
//!   load ([`load`]), hedging within a budget, probation of slow replicas;
//! - [`merge`]: top-k by score, coverage and the accuracy estimate
//!   ([`quality`]).
//!
//! Membership comes from leases: [`topology`] rebuilds the routing table
//! from the live holders of the embedded lease registry (served over gRPC
//! for leaves and cache servers) or from a fixed list ([`membership`]).
//! [`demo`] starts a whole cluster in one process.

pub mod admission;
pub mod api;
pub mod cache_tier;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod error;
pub mod fanout;
pub mod http;
pub mod leaf_client;
pub mod load;
pub mod membership;
pub mod merge;
pub mod metrics;
pub mod quality;
pub mod root;
pub mod stats;
pub mod topology;
pub mod web;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use lease::etcd::{EtcdConfig, EtcdMembership};
use lease::registry::Registry;
use lease::Membership;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;

pub use config::FrontendConfig;

use crate::admission::Admission;
use crate::cache_tier::CacheTier;
use crate::fanout::Fanout;
use crate::http::AppState;
use crate::membership::StaticMembership;
use crate::metrics::Metrics;
use crate::root::Root;
use crate::stats::TermStatsCache;
use crate::topology::Routing;

/// A running frontend.
pub struct Frontend {
    pub http_addr: SocketAddr,
    /// Where leaves and cache servers hold their leases, when served.
    pub grpc_addr: Option<SocketAddr>,
    /// The embedded lease registry (absent with a static leaf list).
    pub registry: Option<Arc<Registry>>,
    pub root: Arc<Root>,
    pub metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<anyhow::Result<()>>>,
}

impl Frontend {
    /// Starts serving HTTP on `http` and, when given, the lease registry on
    /// `grpc`, until `shutdown` is cancelled.
    pub async fn start(
        config: FrontendConfig,
        http: TcpListener,
        grpc: Option<TcpListener>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Frontend> {
        anyhow::ensure!(config.shards > 0, "--shards must be at least 1");
        let metrics = Arc::new(Metrics::new(prometheus::Registry::new()).context("metrics")?);
        metrics.init(&config);
        let (membership, registry): (Arc<dyn Membership>, Option<Arc<Registry>>) =
            if let Some(url) = &config.membership {
                anyhow::ensure!(
                    config.static_leaves.is_empty(),
                    "a static leaf list and --membership exclude each other"
                );
                let etcd = EtcdConfig::parse(url).context("--membership")?;
                let membership = EtcdMembership::connect(etcd, &metrics.registry, shutdown.clone())
                    .await
                    .context("membership on etcd")?;
                (membership, None)
            } else if config.static_leaves.is_empty() {
                let registry = Registry::with_shutdown(
                    config.registry.clone(),
                    &metrics.registry,
                    shutdown.clone(),
                );
                (registry.clone(), Some(registry))
            } else {
                (
                    StaticMembership::start(config.static_leaves.clone(), shutdown.clone()),
                    None,
                )
            };
        let routing = Routing::new(config.shards, topology::grpc_clients());
        routing.follow(membership.watch(), shutdown.clone());
        spawn_live_gauge(Arc::clone(&routing), Arc::clone(&metrics), shutdown.clone());

        let fanout = Arc::new(Fanout::new(
            Arc::clone(&routing),
            config.fanout.clone(),
            Arc::clone(&metrics),
        ));
        let cache = config
            .cache
            .then(|| Arc::new(CacheTier::new(Arc::clone(&routing), Arc::clone(&metrics))));
        let root = Arc::new(Root::new(
            config.root.clone(),
            fanout,
            cache,
            Arc::new(TermStatsCache::new(config.root.stats_cache_bytes, 100_000)),
            Arc::clone(&metrics),
        ));
        let admission = Admission::new(config.admission.clone(), Arc::clone(&metrics));
        let state = AppState {
            root: Arc::clone(&root),
            admission,
            metrics: Arc::clone(&metrics),
            membership,
        };

        let http_addr = http.local_addr()?;
        let mut tasks = Vec::new();
        let app = http::router(state);
        let http_shutdown = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            axum::serve(http, app)
                .with_graceful_shutdown(http_shutdown.cancelled_owned())
                .await
                .context("http server")
        }));
        tracing::info!(url = %format!("http://{http_addr}/"), metrics = %format!("http://{http_addr}/metrics"), "frontend serving http");

        let mut grpc_addr = None;
        if let (Some(listener), Some(registry)) = (grpc, registry.as_ref()) {
            grpc_addr = Some(listener.local_addr()?);
            let (reporter, health) = tonic_health::server::health_reporter();
            reporter
                .set_serving::<proto::lease::lease_server::LeaseServer<lease::service::LeaseService>>()
                .await;
            let service = registry.service();
            let grpc_shutdown = shutdown.clone();
            tasks.push(tokio::spawn(async move {
                tonic::transport::Server::builder()
                    .add_service(health)
                    .add_service(service)
                    .serve_with_incoming_shutdown(
                        TcpListenerStream::new(listener),
                        grpc_shutdown.cancelled_owned(),
                    )
                    .await
                    .context("lease grpc server")
            }));
            tracing::info!(addr = %grpc_addr.unwrap_or(http_addr), "frontend serving the lease registry over grpc");
        }
        Ok(Frontend {
            http_addr,
            grpc_addr,
            registry,
            root,
            metrics,
            shutdown,
            tasks,
        })
    }

    /// Asks the frontend to stop.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Waits until the servers stop, draining in-flight requests for at
    /// most `drain`.
    pub async fn wait(self, drain: Duration) -> anyhow::Result<()> {
        self.shutdown.cancelled().await;
        let mut result = Ok(());
        let joined = tokio::time::timeout(drain, async {
            for task in self.tasks {
                match task.await {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => result = Err(error),
                    Err(error) => result = Err(anyhow::anyhow!("server task failed: {error}")),
                }
            }
        })
        .await;
        if joined.is_err() {
            tracing::warn!(?drain, "in-flight requests did not drain in time");
        }
        result
    }
}

/// Keeps `frontend_shard_replicas_live` current.
fn spawn_live_gauge(routing: Arc<Routing>, metrics: Arc<Metrics>, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {
                    let topology = routing.snapshot();
                    for (shard, replicas) in topology.shards.iter().enumerate() {
                        metrics
                            .shards_live
                            .with_label_values(&[&shard.to_string()])
                            .set(replicas.len() as i64);
                    }
                }
            }
        }
    });
}
