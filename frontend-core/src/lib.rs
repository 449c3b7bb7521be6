//! The root frontend as a library: answers HTTP search queries by fanning
//! each one out to one replica of every shard, merging what arrives before
//! the deadline, and saying exactly how complete the answer is.
//!
//! Three layers, each importing only the ones below it:
//! - [`http`]: the edge. The axum router, the API's request and response
//!   types ([`http::api`]), the mapping of every failure to a status and a
//!   code ([`http::error`]), the pages and the cluster view. The only layer
//!   that knows JSON and status codes.
//! - [`query`]: the core. Admission control, the root search (cache
//!   lookup, coalescing, term statistics), fan-out with replica choice,
//!   probation and hedging, merge and the recall estimate. Its results and
//!   its [`query::QueryError`] are plain Rust types.
//! - [`cluster`]: the plumbing. The routing table rebuilt from lease
//!   membership, load estimates, and the leaf and cache clients.
//!
//! [`metrics`] is below all three (every layer records into it); [`config`]
//! and [`Frontend`] (this file) assemble the layers into a server. The
//! binary and the one-process demo live in the `frontend` package, which
//! alone depends on the `leaf` and `cache` crates.

pub mod cluster;
pub mod config;
pub mod http;
pub mod metrics;
pub mod query;
mod security;

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
use tokio_util::task::TaskTracker;

pub use config::FrontendConfig;

use crate::cluster::cache_client::CacheTier;
use crate::cluster::membership::StaticMembership;
use crate::cluster::topology::{self, Routing};
use crate::http::AppState;
use crate::metrics::Metrics;
use crate::query::admission::Admission;
use crate::query::fanout::Fanout;
use crate::query::root::Root;
use crate::query::term_stats::TermStatsCache;

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
    /// Work that requests leave behind (cache stores, term statistics
    /// round trips, coalesced fan-outs), drained on shutdown.
    background: TaskTracker,
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
        init_metrics(&metrics, &config);
        let (config, plane) = security::prepare(config)?;
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
                    StaticMembership::start(
                        config.static_leaves.clone(),
                        plane.connect.clone(),
                        shutdown.clone(),
                    ),
                    None,
                )
            };
        let routing = Routing::with_connect(
            config.shards,
            topology::grpc_clients(plane.connect.clone()),
            plane.connect.clone(),
        );
        routing.follow(membership.watch(), shutdown.clone());
        spawn_live_gauge(Arc::clone(&routing), Arc::clone(&metrics), shutdown.clone());

        let fanout = Arc::new(Fanout::new(
            Arc::clone(&routing),
            config.fanout.clone(),
            Arc::clone(&metrics),
        ));
        let background = TaskTracker::new();
        let cache = config.cache.then(|| {
            Arc::new(
                CacheTier::new(Arc::clone(&routing), Arc::clone(&metrics))
                    .with_signer(plane.signer.clone())
                    .with_tasks(background.clone()),
            )
        });
        let root = Arc::new(
            Root::new(
                config.root.clone(),
                fanout,
                cache,
                Arc::new(
                    TermStatsCache::new(config.root.stats_cache_bytes, 100_000)
                        .with_tasks(background.clone()),
                ),
                Arc::clone(&metrics),
            )
            .with_tasks(background.clone()),
        );
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
        if let Some(acceptor) = plane.http_tls.clone() {
            tasks.push(tokio::spawn(security::serve_https(
                http,
                acceptor,
                app,
                http_shutdown,
            )));
        } else {
            tasks.push(tokio::spawn(async move {
                axum::serve(http, app)
                    .with_graceful_shutdown(http_shutdown.cancelled_owned())
                    .await
                    .context("http server")
            }));
        }
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
            let auth = plane.auth_layer(&metrics.registry);
            let acceptor = plane.security.acceptor.clone();
            tasks.push(tokio::spawn(async move {
                tonic::transport::Server::builder()
                    .layer(auth)
                    .add_service(health)
                    .add_service(service)
                    .serve_with_incoming_shutdown(
                        svc::tls::incoming(TcpListenerStream::new(listener), acceptor),
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
            background,
        })
    }

    /// Asks the frontend to stop.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Waits until the servers stop, draining in-flight requests and the
    /// work they left behind for at most `drain`.
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
            self.background.close();
            self.background.wait().await;
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

/// Sets what the configuration fixes in the metrics and pre-registers every
/// series a dashboard reads (each layer registers its own labels), so that
/// a panel sees zeros rather than no series before the first event.
pub fn init_metrics(metrics: &Metrics, config: &FrontendConfig) {
    metrics.init(config.shards, config.admission.latency_target);
    query::preregister(metrics, config.shards);
    http::preregister(metrics);
}

#[cfg(test)]
mod tests {
    use prometheus::proto::MetricType;

    use prometheus::Registry;

    use super::*;
    use crate::metrics::LATENCY_BUCKETS;

    #[test]
    fn names_follow_prometheus_conventions() {
        let metrics = Metrics::new(Registry::new()).unwrap();
        init_metrics(&metrics, &FrontendConfig::new(2));
        for family in metrics.registry.gather() {
            let name = family.name();
            assert!(name.starts_with("frontend_"), "{name}");
            match family.get_field_type() {
                MetricType::COUNTER => assert!(name.ends_with("_total"), "{name}"),
                MetricType::HISTOGRAM => assert!(
                    name.ends_with("_seconds") || name.ends_with("_ratio"),
                    "{name}"
                ),
                _ => assert!(!name.ends_with("_total"), "{name}"),
            }
        }
        assert!(
            LATENCY_BUCKETS.contains(&0.1),
            "the objective is a bucket bound"
        );
    }

    #[test]
    fn every_series_a_dashboard_reads_exists_from_the_start() {
        let metrics = Metrics::new(Registry::new()).unwrap();
        init_metrics(&metrics, &FrontendConfig::new(2));
        let text = svc::metrics::encode(&metrics.registry);
        for series in [
            "frontend_search_requests_total{outcome=\"partial\"} 0",
            "frontend_search_requests_total{outcome=\"overloaded\"} 0",
            "frontend_admission_rejections_total{reason=\"queue_full\"} 0",
            "frontend_leaf_calls_total{outcome=\"timeout\",shard=\"1\"} 0",
            "frontend_hedge_wins_total{shard=\"1\"} 0",
            "frontend_shard_results_total{shard=\"0\",state=\"timed_out\"} 0",
            "frontend_shard_replicas_live{shard=\"1\"} 0",
            "frontend_latency_objective_seconds 0.1",
            "frontend_cache_lookups_total{result=\"hit\"} 0",
            "frontend_search_duration_seconds_count{cache=\"miss\"} 0",
            "frontend_leaf_call_duration_seconds_bucket{shard=\"0\",le=\"0.1\"} 0",
        ] {
            assert!(text.contains(series), "missing {series} in\n{text}");
        }
    }
}
