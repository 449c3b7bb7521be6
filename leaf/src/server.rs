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
//!
//! With `--index-root`, the index comes from the newest complete generation
//! (`generations`), and a tracked task watches the root, swaps newer
//! generations in and announces each in the leases.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

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
use crate::generations::Generations;
use crate::index::ShardIndex;
use crate::limits::Admission;
use crate::metrics::Metrics;
use crate::service::{ArrivalLayer, Counters, LeafService, LeafStats, Shared};

/// A running leaf.
pub struct LeafHandle {
    addr: SocketAddr,
    advertised: String,
    /// The served index, swapped by the generation watcher.
    index: Arc<ArcSwap<ShardIndex>>,
    faults: Faults,
    counters: Arc<Counters>,
    registry: Registry,
    /// The gRPC service itself, for callers in this process.
    service: LeafService,
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
        self.index.load().shard()
    }

    pub fn generation(&self) -> u64 {
        self.index.load().generation()
    }

    pub fn num_docs(&self) -> u64 {
        self.index.load().num_docs()
    }

    /// The shard's index served now, for in-process searches.
    pub fn index(&self) -> Arc<ShardIndex> {
        self.index.load_full()
    }

    /// The `Leaf` service this leaf serves over gRPC, to call in process
    /// (a frontend that embeds the leaf): the same routing by shard,
    /// admission, deadlines and metrics, without the transport. Deadlines
    /// come from the request's `grpc-timeout` metadata, as over the wire.
    pub fn service(&self) -> LeafService {
        self.service.clone()
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
        tracing::info!(shard = self.shard(), "leaf killed");
    }

    /// Makes a crash fault (`crash_on`) kill this leaf, as [`LeafHandle::kill`]
    /// does, instead of aborting the whole process: for harnesses that run
    /// leaves in process.
    pub fn kill_on_crash(&self) {
        let kill = self.server.kill_switch();
        let shard = self.shard();
        self.faults.set_crash_hook(move || {
            tracing::info!(shard, "leaf killed by a query of death");
            kill.cancel();
        });
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
    let served = config.served_shards();
    let mut shard_metrics = Vec::with_capacity(served.len());
    for &shard in &served {
        shard_metrics.push(
            Metrics::new(&registry, shard).map_err(|error| {
                LeafError::Internal(format!("cannot register metrics: {error}"))
            })?,
        );
    }
    let leaf_metrics = shard_metrics[0].clone();
    // Dropped on any error below, which stops the metrics endpoint.
    let mut lifecycle = Lifecycle::new("leaf", registry.clone(), config.drain_timeout, &shutdown);
    // Metrics are served while the index builds, with /readyz saying no.
    lifecycle.serve_metrics(metrics);

    let advertised = config.advertise.clone().unwrap_or_else(|| addr.to_string());
    let index = {
        let (shards, index_config) = (config.shards, config.index.clone());
        let mut generations_config = config.generations.clone();
        if let Some(generations) = &mut generations_config {
            generations
                .replica
                .get_or_insert_with(|| crate::generations::fallback_replica(&advertised));
        }
        let (cancel, metrics) = (lifecycle.stop_requested(), leaf_metrics.clone());
        let served = served.clone();
        tokio::task::spawn_blocking(move || match generations_config {
            Some(generations) => Generations::open(generations, served[0], shards, Some(metrics))
                .map(|generations| vec![Source::Root(generations)]),
            // Several shards in one process: each its own index, in its own
            // directory under `--index-dir`.
            None => served
                .iter()
                .map(|&shard| {
                    let mut index_config = index_config.clone();
                    if served.len() > 1 {
                        index_config.dir = index_config
                            .dir
                            .map(|dir| dir.join(format!("shard-{shard}")));
                    }
                    ShardIndex::open_or_build(shard, shards, &index_config, &corpus, &cancel)
                        .map(Source::Built)
                })
                .collect(),
        })
        .await
        .map_err(|error| LeafError::Internal(format!("index build task failed: {error}")))
    };
    let mut generations = None;
    let mut indexes = Vec::with_capacity(served.len());
    for source in index.and_then(|built| built)? {
        indexes.push(match source {
            Source::Built(index) => Arc::new(ArcSwap::from_pointee(index)),
            Source::Root(root) => {
                let current = Arc::clone(root.current());
                generations = Some(root);
                current
            }
        });
    }
    let current = Arc::clone(&indexes[0]);
    let index = current.load_full();
    for (served, metrics) in indexes.iter().zip(&shard_metrics) {
        let index = served.load();
        let report = index.build_report();
        publish_index(metrics, &index);
        metrics
            .index_build_duration
            .set(report.duration.as_secs_f64());
        metrics
            .corpus_bad_lines
            .set(saturating_i64(report.bad_lines));
    }

    let faults = Faults::new(&config.faults);
    let counters = Arc::new(Counters::default());
    let recent = generations
        .as_ref()
        .map(|generations| Arc::clone(generations.recent_queries()));
    // Every shard of the process shares the fault knobs and the counters;
    // each has its own admission limits and metrics.
    let shards = indexes
        .iter()
        .zip(&served)
        .zip(shard_metrics)
        .map(|((index, &shard), metrics)| {
            Arc::new(Shared {
                shard,
                index: Arc::clone(index),
                recent: recent.clone(),
                faults: faults.clone(),
                admission: Admission::new(config.limits.clone(), metrics.clone()),
                metrics,
                counters: Arc::clone(&counters),
                // Hung calls answer once the drain starts.
                stopping: lifecycle.draining(),
                reply_margin: config.reply_margin,
                inline_postings: config.inline_postings,
            })
        })
        .collect();

    lifecycle.secure(
        svc::Security::new(&config.auth, &config.tls)
            .map_err(|error| LeafError::Config(error.to_string()))?,
    );
    let health = lifecycle.health_service::<LeafServer<LeafService>>().await;
    let service = LeafService::new(shards);
    let grpc = svc::server::grpc_server()
        .layer(ArrivalLayer)
        .layer(lifecycle.auth_layer())
        .add_service(health)
        .add_service(LeafServer::new(service.clone()))
        .serve_with_incoming_shutdown(
            lifecycle.incoming(grpc),
            lifecycle.draining().cancelled_owned(),
        );

    if config.advertise.is_none() && addr.ip().is_unspecified() {
        tracing::warn!(%addr, "advertising an unspecified address; set --advertise");
    }
    // One lease per shard served, all on this address.
    for (shard, index) in served.iter().zip(&indexes) {
        lifecycle.hold_leases(
            config.lease.as_ref(),
            HolderInfo {
                role: Role::Leaf,
                shard: *shard,
                address: advertised.clone(),
                generation: index.load().generation(),
            },
        );
    }
    if let Some(generations) = generations {
        lifecycle.spawn(watch_generations(Watch {
            generations,
            metrics: leaf_metrics,
            announcer: lifecycle.generation_announcer(),
            draining: lifecycle.draining(),
        }));
    }
    let server = lifecycle.serve(grpc);
    tracing::info!(
        %addr,
        advertised,
        shard = config.shard,
        also_serves = ?config.also_serve,
        shards = config.shards,
        documents = index.num_docs(),
        generation = index.generation(),
        leases = config.lease.as_ref().map_or(0, |lease| lease.frontends.len()),
        "leaf serving"
    );
    Ok(LeafHandle {
        addr,
        advertised,
        index: current,
        faults,
        counters,
        registry,
        service,
        server,
    })
}

/// Where the served index came from.
enum Source {
    Built(ShardIndex),
    Root(Generations),
}

/// What the generation watcher needs.
struct Watch {
    generations: Generations,
    metrics: Metrics,
    /// Announces a new generation in every lease (none without leases).
    announcer: Option<lease::holder::GenerationAnnouncer>,
    /// The watcher ends when the drain starts.
    draining: CancellationToken,
}

/// Polls the index root every `poll` (or sooner, when a warmed generation
/// is due) and, after a swap, publishes the new generation in the metrics
/// and the leases. Each poll runs on its own thread at a low CPU priority:
/// opening and warming a new generation yields to the searches being served.
async fn watch_generations(watch: Watch) {
    let Watch {
        generations,
        metrics,
        announcer,
        draining,
    } = watch;
    let poll = generations.poll_interval().max(Duration::from_millis(10));
    let generations = Arc::new(parking_lot::Mutex::new(generations));
    let mut due = None;
    loop {
        let wait = due
            .map_or(poll, |due: std::time::Instant| {
                due.saturating_duration_since(std::time::Instant::now())
            })
            .min(poll);
        tokio::select! {
            () = draining.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        let polled = {
            let generations = Arc::clone(&generations);
            let (sender, receiver) = tokio::sync::oneshot::channel();
            let spawned = std::thread::Builder::new()
                .name("leaf-generations".to_string())
                .spawn(move || {
                    lower_thread_priority();
                    let mut generations = generations.lock();
                    let polled = generations.poll();
                    let _ = sender.send((polled, generations.due()));
                });
            if let Err(error) = spawned {
                tracing::error!(%error, "cannot start the generation poll thread");
                continue;
            }
            receiver.await
        };
        let swapped = match polled {
            Ok((Ok(swapped), next)) => {
                due = next;
                swapped
            }
            Ok((Err(error), _)) => {
                tracing::warn!(%error, "cannot scan the index root");
                continue;
            }
            Err(error) => {
                tracing::error!(%error, "generation poll thread failed");
                continue;
            }
        };
        if let Some(index) = swapped {
            publish_index(&metrics, &index);
            if let Some(announcer) = &announcer {
                announcer.announce(index.generation());
            }
        }
    }
}

/// Gives the calling thread the lowest CPU priority (nice 19; on Linux a
/// thread's nice value is its own). Used on a thread that ends after its
/// work, since an unprivileged thread cannot raise its priority back.
fn lower_thread_priority() {
    // SAFETY: setpriority has no memory effects; `who` 0 is the calling
    // thread on Linux.
    let result = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
    if result != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "cannot lower the generation thread's priority");
    }
}

/// The served index's size and generation, in the shard's metrics.
fn publish_index(metrics: &Metrics, index: &ShardIndex) {
    metrics
        .index_documents
        .set(saturating_i64(index.num_docs()));
    metrics
        .index_generation
        .set(saturating_i64(index.generation()));
}

fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
