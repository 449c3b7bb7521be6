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
use lease::service::LeaseService;
use lease::Membership;
use proto::lease::lease_server::LeaseServer;
use svc::{Lifecycle, ServerHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::FrontendConfig;

use crate::cluster::cache_client::CacheTier;
pub use crate::cluster::leaf_client::LocalLeaf;
use crate::cluster::membership::StaticMembership;
use crate::cluster::topology::{self, Routing};
use crate::http::serve::{HttpMetrics, Listener};
use crate::http::state::ApiKeys;
use crate::http::AppState;
use crate::metrics::Metrics;
use crate::query::admission::Admission;
use crate::query::fanout::Fanout;
use crate::query::root::Root;
use crate::query::term_stats::TermStatsCache;

/// The listeners a frontend serves, all already bound.
pub struct Listeners {
    /// The public API: `/search`, the search page, `/healthz`, `/readyz`.
    pub http: TcpListener,
    /// The admin surface: `/cluster`, `/status`, `/metrics` (none: not
    /// served).
    pub admin: Option<TcpListener>,
    /// The lease registry (none: not served; unused with a static leaf
    /// list or etcd membership).
    pub grpc: Option<TcpListener>,
    /// `svc`'s own `/metrics`, `/healthz`, `/readyz` endpoint (`--metrics`).
    pub metrics: Option<TcpListener>,
}

/// A running frontend.
pub struct Frontend {
    pub http_addr: SocketAddr,
    /// Where `/cluster`, `/status` and `/metrics` are served (loopback by
    /// default), when served.
    pub admin_addr: Option<SocketAddr>,
    /// Where leaves and cache servers hold their leases, when served.
    pub grpc_addr: Option<SocketAddr>,
    /// The embedded lease registry (absent with a static leaf list).
    pub registry: Option<Arc<Registry>>,
    pub root: Arc<Root>,
    pub metrics: Arc<Metrics>,
    /// The lifecycle: stop, wait, kill.
    server: ServerHandle,
}

impl Frontend {
    /// Starts serving HTTP on `http`, the admin surface on a free loopback
    /// port and, when given, the lease registry on `grpc`, until `shutdown`
    /// is cancelled. See [`Frontend::start_with`].
    pub async fn start(
        config: FrontendConfig,
        http: TcpListener,
        grpc: Option<TcpListener>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Frontend> {
        let admin = TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot bind admin address 127.0.0.1:0")?;
        let listeners = Listeners {
            http,
            admin: Some(admin),
            grpc,
            metrics: None,
        };
        Frontend::start_with(config, listeners, shutdown).await
    }

    /// Starts serving on `listeners` until `shutdown` is cancelled (or
    /// [`Frontend::shutdown`]), through `svc`'s one server lifecycle: on a
    /// stop, `/readyz` and gRPC health say not serving, the listeners stop
    /// accepting, in-flight requests and the work they left behind drain
    /// under the drain timeout, then what is still open is cut.
    pub async fn start_with(
        config: FrontendConfig,
        listeners: Listeners,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Frontend> {
        Frontend::start_embedding(config, listeners, Vec::new(), shutdown).await
    }

    /// [`Frontend::start_with`], calling the leaves of `local` (served by
    /// this process) in process instead of over gRPC. They join the
    /// routing table as every leaf does, by lease or static list, under
    /// their advertised address; only the client made for them differs.
    pub async fn start_embedding(
        config: FrontendConfig,
        listeners: Listeners,
        local: Vec<LocalLeaf>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Frontend> {
        anyhow::ensure!(config.shards > 0, "--shards must be at least 1");
        let metrics = Arc::new(Metrics::new(prometheus::Registry::new()).context("metrics")?);
        init_metrics(&metrics, &config);
        let (config, plane) = security::prepare(config)?;
        let http_metrics = HttpMetrics::new(&metrics.registry).context("metrics")?;
        let mut lc = Lifecycle::new(
            "frontend",
            metrics.registry.clone(),
            config.drain_timeout,
            &shutdown,
        );
        lc.serve_metrics(listeners.metrics);
        // Everything below ends on the lifecycle's stop, not the caller's
        // token alone, so that `Frontend::shutdown` stops it too.
        let stopping = lc.stop_requested();
        let (membership, registry): (Arc<dyn Membership>, Option<Arc<Registry>>) =
            if let Some(url) = &config.membership {
                anyhow::ensure!(
                    config.static_leaves.is_empty(),
                    "a static leaf list and --membership exclude each other"
                );
                let etcd = EtcdConfig::parse(url).context("--membership")?;
                let membership = EtcdMembership::connect(etcd, &metrics.registry, stopping.clone())
                    .await
                    .context("membership on etcd")?;
                (membership, None)
            } else if config.static_leaves.is_empty() {
                let registry = Registry::with_shutdown(
                    config.registry.clone(),
                    &metrics.registry,
                    stopping.clone(),
                );
                (registry.clone(), Some(registry))
            } else {
                (
                    StaticMembership::start(
                        config.static_leaves.clone(),
                        plane.connect.clone(),
                        &local,
                        stopping.clone(),
                    ),
                    None,
                )
            };
        let routing = Routing::with_connect(
            config.shards,
            topology::clients(plane.connect.clone(), local),
            plane.connect.clone(),
        );
        routing.follow(membership.watch(), stopping.clone());

        let fanout = Arc::new(Fanout::new(
            Arc::clone(&routing),
            config.fanout.clone(),
            Arc::clone(&metrics),
        ));
        // Work that requests leave behind (cache stores, term statistics
        // round trips, coalesced fan-outs), drained by the lifecycle.
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
                    TermStatsCache::new(
                        config.root.stats_cache_bytes,
                        config.root.stats_cache_queries,
                    )
                    .with_tasks(background.clone()),
                ),
                Arc::clone(&metrics),
            )
            .with_tasks(background.clone()),
        );
        spawn_live_gauge(
            Arc::clone(&routing),
            Arc::clone(&root),
            Arc::clone(&metrics),
            stopping.clone(),
        );
        let admission = Admission::new(config.admission.clone(), Arc::clone(&metrics));
        let state = AppState {
            root: Arc::clone(&root),
            admission,
            metrics: Arc::clone(&metrics),
            membership,
            api_keys: Arc::new(ApiKeys::new(config.api_keys.iter().cloned())),
            max_body_bytes: config.http.max_body_bytes,
        };

        // The HTTP connections, drained as part of the served future so that
        // the drain timeout bounds them like in-flight gRPC calls.
        let connections = TaskTracker::new();
        let http_addr = listeners.http.local_addr()?;
        let admin_addr = match &listeners.admin {
            Some(admin) => Some(admin.local_addr()?),
            None => None,
        };
        let http_listeners = std::iter::once((
            Listener::Public,
            listeners.http,
            http::public_router(state.clone()),
        ))
        .chain(
            listeners
                .admin
                .map(|admin| (Listener::Admin, admin, http::admin_router(state.clone()))),
        );
        for (which, listener, app) in http_listeners {
            // TLS, when configured, is the public API's: the admin
            // listener stays on loopback in plain HTTP.
            let tls = match which {
                Listener::Public => plane.http_tls.clone(),
                Listener::Admin => None,
            };
            lc.spawn(http::serve::accept_loop(
                http::serve::with_peers(lc.incoming(listener)),
                http::serve::Endpoint {
                    app,
                    listener: which,
                    tls,
                },
                config.http.clone(),
                http_metrics.clone(),
                lc.draining(),
                connections.clone(),
            ));
        }
        {
            let draining = lc.draining();
            let background = background.clone();
            lc.spawn(async move {
                draining.cancelled().await;
                background.close();
                background.wait().await;
            });
        }
        tracing::info!(
            url = %format!("http://{http_addr}/"),
            admin = %admin_addr.map_or_else(|| "none".to_string(), |addr| format!("http://{addr}/status")),
            metrics = %admin_addr.map_or_else(|| "none".to_string(), |addr| format!("http://{addr}/metrics")),
            "frontend serving http"
        );

        let mut grpc_addr = None;
        let served: std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<(), tonic::transport::Error>> + Send>,
        > = match (listeners.grpc, registry.as_ref()) {
            (Some(listener), Some(registry)) => {
                grpc_addr = Some(listener.local_addr()?);
                let health = lc.health_service::<LeaseServer<LeaseService>>().await;
                // From here on the lifecycle's connections are the internal
                // plane's: TLS with its certificate when configured (the
                // HTTP listeners above were taken before, in plain).
                lc.secure(plane.security.clone());
                let grpc = svc::server::grpc_server()
                    .layer(lc.auth_layer())
                    .add_service(health)
                    .add_service(registry.service())
                    .serve_with_incoming_shutdown(
                        lc.incoming(listener),
                        lc.draining().cancelled_owned(),
                    );
                tracing::info!(addr = %grpc_addr.unwrap_or(http_addr), "frontend serving the lease registry over grpc");
                Box::pin(drained(grpc, connections))
            }
            _ => {
                let draining = lc.draining();
                Box::pin(drained(
                    async move {
                        draining.cancelled().await;
                        Ok(())
                    },
                    connections,
                ))
            }
        };
        let server = lc.serve(served);
        Ok(Frontend {
            http_addr,
            admin_addr,
            grpc_addr,
            registry,
            root,
            metrics,
            server,
        })
    }

    /// Asks the frontend to stop gracefully, without waiting.
    pub fn shutdown(&self) {
        self.server.begin_stop();
    }

    /// Stops gracefully and waits.
    pub async fn stop(mut self) -> Result<(), svc::ServeError> {
        self.server.stop().await
    }

    /// Waits until the frontend has stopped (after a stop was asked for,
    /// or a server ended on its own: an error).
    pub async fn wait(mut self) -> Result<(), svc::ServeError> {
        self.server.wait().await
    }

    /// Stops at once, as a crash would: connections are cut.
    pub fn kill(&self) {
        self.server.kill();
    }
}

/// `server`, then the HTTP connections' drain: what the lifecycle waits
/// for, under its drain timeout, once draining starts.
async fn drained<F>(server: F, connections: TaskTracker) -> Result<(), tonic::transport::Error>
where
    F: std::future::Future<Output = Result<(), tonic::transport::Error>>,
{
    let result = server.await;
    connections.close();
    connections.wait().await;
    result
}

/// Keeps `frontend_shard_replicas_live`, the generation gauges and the
/// cache-fill gauges current (the latter also on every admin scrape, for
/// `svc`'s `--metrics` listener), and records finished rollouts.
fn spawn_live_gauge(
    routing: Arc<Routing>,
    root: Arc<Root>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let mut rollouts_seen = 0;
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
                    rollouts_seen =
                        crate::cluster::topology::export_generations(&routing, &topology, &metrics, rollouts_seen);
                    root.export_memory(false);
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
