//! Starting, running and stopping one leaf server.
//!
//! [`start`] builds (or reopens) the index on a blocking thread, then serves
//! gRPC (the `Leaf` service and standard health) on the given listener,
//! marks itself ready, takes its leases, and returns a [`LeafHandle`].
//! Shutdown, from the token or [`LeafHandle::stop`], is one path: revoke
//! leases, report NOT_SERVING, stop accepting, drain in-flight calls under
//! `drain_timeout`, then reset whatever is left. [`LeafHandle::kill`]
//! simulates a crash: connections are reset and leases are left to expire.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use prometheus::Registry;
use proto::leaf::leaf_server::LeafServer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::config::LeafConfig;
use crate::corpus::CorpusSource;
use crate::error::{LeafError, Result};
use crate::faults::Faults;
use crate::generations::Generations;
use crate::index::ShardIndex;
use crate::limits::Admission;
use crate::metrics::Metrics;
use crate::service::{ArrivalLayer, Counters, LeafService, LeafStats, Shared};

/// The lease holder, shared by the handle (whose `kill` drops it without
/// revoking) and the supervisor (which revokes it on a graceful stop).
type Holders = Arc<parking_lot::Mutex<Option<lease::holder::HolderSet>>>;

/// A running leaf.
pub struct LeafHandle {
    addr: SocketAddr,
    advertised: String,
    /// The served index, swapped by the generation watcher.
    index: Arc<arc_swap::ArcSwap<ShardIndex>>,
    faults: Faults,
    counters: Arc<Counters>,
    registry: Registry,
    /// Starts the graceful shutdown (a child of the caller's token).
    stop: CancellationToken,
    /// Resets every open connection.
    kill: CancellationToken,
    holders: Holders,
    supervisor: JoinHandle<Result<()>>,
    server: tokio::task::AbortHandle,
    metrics_server: Option<tokio::task::AbortHandle>,
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

    /// The generation served now.
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

    /// This leaf's metrics registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The state of the lease at each frontend (empty without leases).
    pub fn lease_status(&self) -> Vec<lease::holder::EndpointStatus> {
        self.holders
            .lock()
            .as_ref()
            .map(lease::holder::HolderSet::status)
            .unwrap_or_default()
    }

    /// True when a lease is held at every frontend (false without leases).
    pub fn leases_held(&self) -> bool {
        self.holders
            .lock()
            .as_ref()
            .is_some_and(lease::holder::HolderSet::is_held)
    }

    /// Stops gracefully (revoke leases, NOT_SERVING, drain) and waits.
    pub async fn stop(self) {
        self.stop.cancel();
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
        if let Some(holders) = self.holders.lock().take() {
            holders.abort();
        }
        self.kill.cancel();
        self.supervisor.abort();
        self.server.abort();
        if let Some(metrics) = &self.metrics_server {
            metrics.abort();
        }
        tracing::info!(shard = self.shard(), "leaf killed");
    }

    async fn join(self) -> Result<()> {
        match self.supervisor.await {
            Ok(result) => result,
            Err(error) => Err(LeafError::Internal(format!("supervisor failed: {error}"))),
        }
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
/// (and `/metrics` on `metrics`), and returns once the leaf is ready and
/// holds its leases.
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
    let ready = svc::metrics::Ready::default();
    let stop = shutdown.child_token();

    // Metrics are served while the index builds, with /readyz saying no.
    let metrics_token = CancellationToken::new();
    let metrics_server = metrics.map(|listener| {
        let (registry, ready, token) = (registry.clone(), ready.clone(), metrics_token.clone());
        tokio::spawn(async move {
            if let Err(error) = svc::metrics::serve(listener, registry, ready, token).await {
                tracing::error!(%error, "metrics endpoint failed");
            }
        })
    });

    let index = {
        let (shard, shards, index_config) = (config.shard, config.shards, config.index.clone());
        let generations_config = config.generations.clone();
        let (cancel, metrics) = (stop.clone(), leaf_metrics.clone());
        tokio::task::spawn_blocking(move || match generations_config {
            Some(generations) => {
                Generations::open(generations, shard, shards, Some(metrics)).map(Source::Root)
            }
            None => ShardIndex::open_or_build(shard, shards, &index_config, &corpus, &cancel)
                .map(Source::Built),
        })
        .await
        .map_err(|error| LeafError::Internal(format!("index build task failed: {error}")))
    };
    let (current, generations) = match index.and_then(|built| built) {
        Ok(Source::Built(index)) => (Arc::new(arc_swap::ArcSwap::from_pointee(index)), None),
        Ok(Source::Root(generations)) => (Arc::clone(generations.current()), Some(generations)),
        Err(error) => {
            metrics_token.cancel();
            return Err(error);
        }
    };
    let index = current.load_full();
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
    let stopping = CancellationToken::new();
    let shared = Arc::new(Shared {
        index: Arc::clone(&current),
        faults: faults.clone(),
        admission: Admission::new(config.limits.clone(), leaf_metrics.clone()),
        metrics: leaf_metrics.clone(),
        counters: Arc::clone(&counters),
        stopping: stopping.clone(),
        reply_margin: config.reply_margin,
    });

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<LeafServer<LeafService>>().await;
    let kill = CancellationToken::new();
    let server_stop = CancellationToken::new();
    let incoming = {
        let kill = kill.clone();
        TcpListenerStream::new(grpc).map(move |accepted| {
            accepted.map(|stream| {
                if let Err(error) = stream.set_nodelay(true) {
                    tracing::debug!(%error, "cannot set tcp nodelay");
                }
                KillableStream::new(stream, kill.clone())
            })
        })
    };
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .layer(ArrivalLayer)
            .add_service(health_service)
            .add_service(LeafServer::new(LeafService::new(shared)))
            .serve_with_incoming_shutdown(incoming, server_stop.clone().cancelled_owned()),
    );
    ready.set(true);

    let advertised = config.advertise.clone().unwrap_or_else(|| addr.to_string());
    if config.advertise.is_none() && addr.ip().is_unspecified() {
        tracing::warn!(%addr, "advertising an unspecified address; set --advertise");
    }
    // The holder revokes when this token is cancelled; the supervisor calls
    // `revoke_all` instead, and `kill` drops the holder, so it never is.
    let lease_token = CancellationToken::new();
    let holders = config.lease.as_ref().map(|lease| {
        let holder = lease::holder::HolderConfig {
            endpoints: lease.frontends.clone(),
            token: lease.token.clone(),
            ttl: lease.ttl,
            info: lease::holder::HolderInfo {
                role: lease::Role::Leaf,
                shard: config.shard,
                address: advertised.clone(),
                generation: index.generation(),
            },
        };
        lease::holder::spawn(holder, &registry, lease_token)
    });
    let holders: Holders = Arc::new(parking_lot::Mutex::new(holders));
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

    if let Some(generations) = generations {
        // Ends on the stop or kill token; it holds no state worth draining.
        tokio::spawn(watch_generations(Watch {
            generations,
            metrics: leaf_metrics,
            holders: Arc::clone(&holders),
            stop: stop.clone(),
            kill: kill.clone(),
        }));
    }

    let server_abort = server.abort_handle();
    let supervisor = tokio::spawn(supervise(Supervised {
        stop: stop.clone(),
        holders: Arc::clone(&holders),
        health,
        ready,
        stopping,
        server_stop,
        kill: kill.clone(),
        server,
        metrics_token,
        metrics_server: metrics_server.as_ref().map(JoinHandle::abort_handle),
        drain_timeout: config.drain_timeout,
    }));
    Ok(LeafHandle {
        addr,
        advertised,
        index: current,
        faults,
        counters,
        registry,
        stop,
        kill,
        holders,
        supervisor,
        server: server_abort,
        metrics_server: metrics_server.map(|task| task.abort_handle()),
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
    holders: Holders,
    stop: CancellationToken,
    kill: CancellationToken,
}

/// Polls the index root every `poll` and, after a swap, publishes the new
/// generation in the metrics and the leases.
async fn watch_generations(watch: Watch) {
    let Watch {
        generations,
        metrics,
        holders,
        stop,
        kill,
    } = watch;
    let poll = generations_poll(&generations);
    let generations = Arc::new(parking_lot::Mutex::new(generations));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = kill.cancelled() => return,
            () = tokio::time::sleep(poll) => {}
        }
        let generations = Arc::clone(&generations);
        let polled = tokio::task::spawn_blocking(move || generations.lock().poll()).await;
        let swapped = match polled {
            Ok(Ok(swapped)) => swapped,
            Ok(Err(error)) => {
                tracing::warn!(%error, "cannot scan the index root");
                continue;
            }
            Err(error) => {
                tracing::error!(%error, "generation poll task failed");
                continue;
            }
        };
        if let Some(index) = swapped {
            metrics
                .index_documents
                .set(saturating_i64(index.num_docs()));
            metrics
                .index_generation
                .set(saturating_i64(index.generation()));
            if let Some(holders) = holders.lock().as_ref() {
                holders.set_generation(index.generation());
            }
        }
    }
}

fn generations_poll(generations: &Generations) -> Duration {
    generations.poll_interval().max(Duration::from_millis(10))
}

/// What the supervisor owns and tears down.
struct Supervised {
    stop: CancellationToken,
    holders: Holders,
    health: HealthReporter,
    ready: svc::metrics::Ready,
    stopping: CancellationToken,
    server_stop: CancellationToken,
    kill: CancellationToken,
    server: JoinHandle<std::result::Result<(), tonic::transport::Error>>,
    metrics_token: CancellationToken,
    metrics_server: Option<tokio::task::AbortHandle>,
    drain_timeout: Duration,
}

/// Waits for the stop signal (or a server failure), then shuts down in
/// order: revoke, NOT_SERVING, stop accepting, drain, reset.
async fn supervise(mut parts: Supervised) -> Result<()> {
    let mut failure = None;
    tokio::select! {
        () = parts.stop.cancelled() => {}
        ended = &mut parts.server => {
            let reason = match ended {
                Ok(Ok(())) => "grpc server ended unexpectedly".to_string(),
                Ok(Err(error)) => format!("grpc server failed: {error}"),
                Err(error) => format!("grpc server task failed: {error}"),
            };
            tracing::error!(%reason, "leaf stopping");
            failure = Some(LeafError::Internal(reason));
        }
    }
    tracing::info!("leaf shutting down");
    // First, so that frontends stop routing here at once; `revoke_all`
    // bounds its own time.
    let holders = parts.holders.lock().take();
    if let Some(holders) = holders {
        holders.revoke_all().await;
        tracing::info!("leases revoked");
    }
    parts
        .health
        .set_not_serving::<LeafServer<LeafService>>()
        .await;
    parts
        .health
        .set_service_status("", ServingStatus::NotServing)
        .await;
    parts.ready.set(false);
    parts.stopping.cancel();
    parts.server_stop.cancel();
    if failure.is_none() {
        match tokio::time::timeout(parts.drain_timeout, &mut parts.server).await {
            Ok(Ok(Err(error))) => tracing::warn!(%error, "grpc server failed while draining"),
            Ok(_) => tracing::info!("drained in-flight calls"),
            Err(_) => {
                tracing::warn!(limit = ?parts.drain_timeout, "drain timed out, resetting connections")
            }
        }
    }
    parts.kill.cancel();
    parts.server.abort();
    parts.metrics_token.cancel();
    if let Some(metrics) = parts.metrics_server {
        // The endpoint stops on its token; abort it if it lingers.
        tokio::time::sleep(Duration::from_millis(10)).await;
        metrics.abort();
    }
    tracing::info!("leaf stopped");
    failure.map_or(Ok(()), Err)
}

fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A TCP connection that fails all I/O once `kill` is cancelled, so that a
/// killed leaf resets its open connections (tonic serves each connection in
/// its own task, which aborting the accept loop does not stop).
struct KillableStream {
    inner: TcpStream,
    killed: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl KillableStream {
    fn new(inner: TcpStream, kill: CancellationToken) -> KillableStream {
        KillableStream {
            inner,
            killed: Box::pin(kill.cancelled_owned()),
        }
    }

    /// Ready with an error once killed; registers the waker otherwise.
    fn poll_killed(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Error> {
        match self.killed.poll_unpin(cx) {
            Poll::Ready(()) => Poll::Ready(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "leaf killed",
            )),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Connected for KillableStream {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl AsyncRead for KillableStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if let Poll::Ready(error) = this.poll_killed(cx) {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if let Poll::Ready(error) = this.poll_killed(cx) {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if let Poll::Ready(error) = this.poll_killed(cx) {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if let Poll::Ready(error) = this.poll_killed(cx) {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
