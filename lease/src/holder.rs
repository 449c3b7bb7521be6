//! The holder side of a lease, run by leaves and cache servers.
//!
//! One task per endpoint (a frontend's gRPC address) does:
//!
//! 1. Grant, retrying with capped exponential backoff and jitter while the
//!    endpoint is unreachable or refuses.
//! 2. KeepAlive every TTL/3, each call with a deadline. NOT_FOUND (the
//!    registry restarted, or the lease expired there) goes back to 1 at
//!    once; any other error is retried at the next tick.
//!
//!    One attempt is in flight at a time, each with its own deadline
//!    (`grpc-timeout` and a local bound); after one that got no answer the
//!    next goes on a new connection, and the channel pings its connection
//!    (HTTP/2 keep-alive) so a silent one is closed within seconds.
//! 3. When no renewal has succeeded for the term less a safety margin
//!    (message delay and clock drift), the lease is counted as lost, logged,
//!    and granted anew.
//!
//! On shutdown (the token passed to [`spawn`] is cancelled) or
//! [`HolderSet::revoke_all`], each task revokes its lease with a short
//! deadline and stops. Dropping the [`HolderSet`] aborts the tasks without
//! revoking, like a crash: the registry drops the leases within one term.
//!
//! An endpoint that starts with `etcd://` holds the lease on etcd instead
//! (see [`crate::etcd`]), with the same steps; the scheme-less endpoints that
//! follow it are more servers of the same etcd cluster (see [`targets`]).

use std::sync::Arc;
use std::time::Duration;

use proto::lease::lease_client::LeaseClient;
use proto::lease::{GrantRequest, KeepAliveRequest, RevokeRequest};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

mod etcd;

use crate::backoff::{jitter, INITIAL_BACKOFF, MAX_BACKOFF};
pub use crate::member::HolderInfo;
use crate::member::RoleLabel;
pub use crate::metrics::HolderMetrics;
use crate::metrics::RenewalOutcome;
use etcd::EtcdHolder;

/// How long a connection attempt to a registry may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How often a holder pings its registry connection, idle or not.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
/// How long a ping may go unanswered before the connection is closed.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(1);
/// The deadline of a Revoke on shutdown.
pub const REVOKE_TIMEOUT: Duration = Duration::from_secs(1);

/// The lease a server holds with the frontends: what `--frontend`,
/// `--token` and `--lease-ttl` say. The same for every holder (leaf,
/// cache); [`HolderConfig`] adds what the holder says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseConfig {
    /// gRPC addresses of the frontends (lease registries), one lease each,
    /// or `etcd://HOST:PORT[,HOST:PORT…][/PREFIX]` for a lease on etcd.
    pub frontends: Vec<String>,
    /// The cluster token, sent as `authorization: Bearer …`.
    pub token: Option<String>,
    /// The term asked for.
    pub ttl: Duration,
}

#[derive(Clone, Debug)]
pub struct HolderConfig {
    /// gRPC addresses of the lease registries (frontends), one lease each,
    /// or `etcd://HOST:PORT[,HOST:PORT…][/PREFIX]` for a lease on etcd.
    pub endpoints: Vec<String>,
    /// The cluster token, sent as `authorization: Bearer …` to registries
    /// (not to etcd, which has its own authentication).
    pub token: Option<String>,
    /// The term asked for; the registry may clamp it, etcd rounds it up to
    /// whole seconds and raises it to its minimum.
    pub ttl: Duration,
    pub info: HolderInfo,
    /// Where the token is read before every call when it can change while
    /// the holder runs (a token file being rotated); wins over `token`.
    pub live_token: Option<TokenSource>,
}

/// The token a holder sends, asked again before every call: a rotated
/// token file takes effect on the next keep-alive, without a restart.
#[derive(Clone)]
pub struct TokenSource(pub Arc<dyn Fn() -> Option<String> + Send + Sync>);

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSource(..)")
    }
}

/// What a holder sends as `authorization`.
#[derive(Clone, Debug)]
enum Auth {
    Fixed(Option<AsciiMetadataValue>),
    Live(TokenSource),
}

impl Auth {
    fn header(&self) -> Option<AsciiMetadataValue> {
        match self {
            Auth::Fixed(header) => header.clone(),
            Auth::Live(source) => bearer((source.0)().as_deref()?),
        }
    }
}

fn bearer(token: &str) -> Option<AsciiMetadataValue> {
    match MetadataValue::try_from(format!("Bearer {token}")) {
        Ok(mut value) => {
            value.set_sensitive(true);
            Some(value)
        }
        Err(_) => {
            tracing::error!("cluster token is not valid in a header, sending none");
            None
        }
    }
}

/// The state of the lease held at one endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointStatus {
    /// The endpoint as configured (for etcd, the whole `etcd://` address).
    pub endpoint: String,
    /// The lease currently held there, if any.
    pub lease_id: Option<u64>,
    /// The term granted by the registry.
    pub ttl: Option<Duration>,
    /// When the last successful grant or renewal was sent.
    pub last_renewal: Option<Instant>,
    /// The last failure, cleared by the next success.
    pub last_error: Option<String>,
}

/// The running keep-alive tasks of one holder.
///
/// Dropping the set aborts the tasks without revoking (as a crash would);
/// call [`HolderSet::revoke_all`] for a graceful exit.
pub struct HolderSet {
    tasks: Vec<JoinHandle<()>>,
    /// Stops the tasks, which then revoke; a child of the caller's token.
    stop: CancellationToken,
    status: watch::Receiver<Vec<EndpointStatus>>,
    /// The generation announced; a change makes every task announce it.
    generation: Arc<watch::Sender<u64>>,
}

/// Announces a holder's new generation from another task (a generation
/// watcher), without owning the [`HolderSet`].
#[derive(Clone)]
pub struct GenerationAnnouncer(Arc<watch::Sender<u64>>);

impl GenerationAnnouncer {
    /// As [`HolderSet::set_generation`].
    pub fn announce(&self, generation: u64) {
        self.0.send_replace(generation);
    }
}

/// How a holder turns a registry's endpoint into a channel when it should
/// not connect plainly (over TLS, for one: `svc::tls::ClientTls::channel`).
#[derive(Clone)]
pub struct Connect(pub std::sync::Arc<dyn Fn(&Endpoint) -> Channel + Send + Sync>);

impl std::fmt::Debug for Connect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Connect(..)")
    }
}

/// Starts one lease per endpoint and keeps each alive until `shutdown` is
/// cancelled or [`HolderSet::revoke_all`] is called. Must be called within a
/// tokio runtime.
pub fn spawn(
    config: HolderConfig,
    metrics: &prometheus::Registry,
    shutdown: CancellationToken,
) -> HolderSet {
    spawn_with(config, None, metrics, shutdown)
}

/// [`spawn`], with registries reached through `connect` when given.
pub fn spawn_with(
    config: HolderConfig,
    connect: Option<Connect>,
    metrics: &prometheus::Registry,
    shutdown: CancellationToken,
) -> HolderSet {
    spawn_counted(config, connect, HolderMetrics::new(metrics), shutdown)
}

/// [`spawn_with`], counting in `metrics` (shared by several holder sets of
/// one process).
pub fn spawn_counted(
    config: HolderConfig,
    connect: Option<Connect>,
    metrics: HolderMetrics,
    shutdown: CancellationToken,
) -> HolderSet {
    let stop = shutdown.child_token();
    let endpoints = targets(&config.endpoints);
    let auth = match &config.live_token {
        Some(source) => Auth::Live(source.clone()),
        None => Auth::Fixed(config.token.as_deref().and_then(bearer)),
    };
    let initial = endpoints
        .iter()
        .map(|endpoint| EndpointStatus {
            endpoint: endpoint.clone(),
            ..EndpointStatus::default()
        })
        .collect();
    let (status_tx, status) = watch::channel(initial);
    let (generation, _) = watch::channel(config.info.generation);
    let tasks = endpoints
        .iter()
        .enumerate()
        .map(|(index, endpoint)| {
            let report = Report {
                index,
                metrics: metrics.clone(),
                status: status_tx.clone(),
                generation: generation.subscribe(),
            };
            if crate::etcd::is_etcd_url(endpoint) {
                let task = EtcdHolder {
                    url: endpoint.clone(),
                    info: config.info.clone(),
                    requested_ttl: config.ttl,
                    report,
                    stop: stop.clone(),
                };
                return tokio::spawn(task.run());
            }
            let task = Task {
                endpoint: endpoint.clone(),
                auth: auth.clone(),
                connect: connect.clone(),
                info: config.info.clone(),
                requested_ttl: config.ttl,
                report,
                stop: stop.clone(),
            };
            tokio::spawn(task.run())
        })
        .collect();
    HolderSet {
        tasks,
        stop,
        status,
        generation: Arc::new(generation),
    }
}

/// Groups configured endpoints into one entry per lease. An `etcd://`
/// endpoint takes the scheme-less endpoints right after it as more servers
/// of the same etcd cluster, because flags split their values on commas:
/// `--frontend etcd://a:2379,b:2379` is one cluster of two servers, one
/// lease. The grouping stops at an endpoint with a scheme, and after a key
/// prefix (`etcd://a:2379,b:2379/prefix`); to hold leases at etcd and at a
/// registry too, name the registry first or as `http://HOST:PORT`.
pub fn targets(endpoints: &[String]) -> Vec<String> {
    let mut targets: Vec<String> = Vec::new();
    let mut extending = false;
    for endpoint in endpoints.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
        if crate::etcd::is_etcd_url(endpoint) {
            extending = !endpoint[crate::etcd::SCHEME.len()..].contains('/');
            targets.push(endpoint.to_owned());
            continue;
        }
        match targets.last_mut() {
            Some(last) if extending && !endpoint.contains("://") => {
                last.push(',');
                last.push_str(endpoint);
                extending = !endpoint.contains('/');
            }
            _ => {
                extending = false;
                targets.push(endpoint.to_owned());
            }
        }
    }
    targets
}

impl HolderSet {
    /// Revokes every lease (bounded in time) and stops the keep-alive tasks.
    pub async fn revoke_all(mut self) {
        self.stop.cancel();
        let tasks = std::mem::take(&mut self.tasks);
        let aborts: Vec<_> = tasks.iter().map(JoinHandle::abort_handle).collect();
        // A task may be in the middle of a grant or keep-alive (each bounded
        // by its own deadline) before it revokes.
        let limit = REVOKE_TIMEOUT + MAX_BACKOFF + Duration::from_millis(500);
        if tokio::time::timeout(limit, futures::future::join_all(tasks))
            .await
            .is_err()
        {
            tracing::warn!(?limit, "lease revocation did not finish in time");
            aborts.iter().for_each(tokio::task::AbortHandle::abort);
        }
    }

    /// Stops the tasks at once without revoking, as a crash would.
    pub fn abort(self) {
        drop(self);
    }

    /// The state of each endpoint's lease, in the configured order.
    pub fn status(&self) -> Vec<EndpointStatus> {
        self.status.borrow().clone()
    }

    /// The lease held at each endpoint, in the configured order.
    pub fn lease_ids(&self) -> Vec<Option<u64>> {
        self.status.borrow().iter().map(|s| s.lease_id).collect()
    }

    /// True when every endpoint holds a lease (vacuously true without
    /// endpoints).
    pub fn is_held(&self) -> bool {
        self.status.borrow().iter().all(|s| s.lease_id.is_some())
    }

    /// Announces `generation` from now on: a registry lease is granted anew
    /// with it (the old one is revoked once the new one is held), an etcd
    /// key is rewritten under the same lease.
    pub fn set_generation(&self, generation: u64) {
        self.generation.send_replace(generation);
    }

    /// A handle that announces generations for this set.
    pub fn announcer(&self) -> GenerationAnnouncer {
        GenerationAnnouncer(Arc::clone(&self.generation))
    }

    /// The generation announced (or being announced).
    pub fn generation(&self) -> u64 {
        *self.generation.borrow()
    }

    /// A receiver woken whenever an endpoint's state changes.
    pub fn watch(&self) -> watch::Receiver<Vec<EndpointStatus>> {
        self.status.clone()
    }
}

impl Drop for HolderSet {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A lease held at one endpoint.
pub(crate) struct Held {
    pub lease_id: u64,
    pub ttl: Duration,
    /// When the last successful grant or renewal was sent: the registry
    /// renewed no earlier than that.
    pub last_ok: Instant,
    /// The generation the lease announces.
    pub generation: u64,
}

/// Why the keep-alive loop ended.
pub(crate) enum Ended {
    Stopped,
    Lost,
    NotFound,
    /// The holder's generation changed: announce the new one.
    NewGeneration,
}

/// Where a holder task reports: its slot in the status list, and the
/// metrics. Shared by the registry and the etcd holders.
pub(crate) struct Report {
    index: usize,
    pub metrics: HolderMetrics,
    status: watch::Sender<Vec<EndpointStatus>>,
    /// The generation to announce ([`HolderSet::set_generation`]).
    generation: watch::Receiver<u64>,
}

impl Report {
    pub fn update(&self, change: impl FnOnce(&mut EndpointStatus)) {
        self.status.send_modify(|all| {
            if let Some(status) = all.get_mut(self.index) {
                change(status);
            }
        });
    }

    /// The generation to announce now.
    pub fn generation(&self) -> u64 {
        *self.generation.borrow()
    }

    /// Counts and reports a lease granted at `sent`, announcing `generation`.
    pub fn granted(&self, lease_id: u64, ttl: Duration, sent: Instant, generation: u64) -> Held {
        self.metrics.grants.inc();
        self.metrics.held.inc();
        self.update(|s| {
            s.lease_id = Some(lease_id);
            s.ttl = Some(ttl);
            s.last_renewal = Some(sent);
            s.last_error = None;
        });
        Held {
            lease_id,
            ttl,
            last_ok: sent,
            generation,
        }
    }

    /// Counts and reports a renewal sent at `sent` that succeeded.
    pub fn renewed(&self, held: &mut Held, ttl: Option<Duration>, sent: Instant) {
        self.metrics
            .renewals
            .with_label_values(&[RenewalOutcome::Ok.label()])
            .inc();
        held.last_ok = sent;
        if let Some(ttl) = ttl {
            held.ttl = ttl;
        }
        let ttl = held.ttl;
        self.update(|s| {
            s.ttl = Some(ttl);
            s.last_renewal = Some(sent);
            s.last_error = None;
        });
    }

    /// Logs a failed grant (the first and every tenth, the rest would flood
    /// the log while the registry is down) and reports it.
    pub fn grant_failed(&self, failures: &mut u32, error: String) {
        *failures += 1;
        if *failures % 10 == 1 {
            tracing::warn!(%error, failures = *failures, "lease grant failed, retrying");
        } else {
            tracing::debug!(%error, failures = *failures, "lease grant failed, retrying");
        }
        self.update(|s| s.last_error = Some(error));
    }

    /// Counts a lease counted as lost when no renewal succeeded within its
    /// term less the safety margin.
    pub fn lost(&self, held: &Held, now: Instant) {
        tracing::warn!(
            lease_id = held.lease_id,
            since_renewal = ?now.saturating_duration_since(held.last_ok),
            ttl = ?held.ttl,
            "lease lost: no renewal within its term less the safety margin, granting again"
        );
        self.metrics.lost.inc();
        self.released();
    }

    /// Counts a keep-alive answered "unknown lease": the holder grants anew.
    pub fn not_found(&self, held: &Held, at: &str) {
        self.metrics
            .renewals
            .with_label_values(&[RenewalOutcome::NotFound.label()])
            .inc();
        tracing::info!(
            lease_id = held.lease_id,
            at,
            "lease unknown, granting again"
        );
        self.released();
    }

    /// The keep-alive schedule both backends share: sleeps until the next
    /// renewal (every TTL/3 after the last one) and returns the deadline of
    /// that call, or ends the loop when the holder stops or the lease counts
    /// as lost (no renewal within its term less the safety margin).
    pub(crate) async fn next_renewal(
        &self,
        stop: &CancellationToken,
        held: &Held,
        next_tick: &mut Instant,
    ) -> std::result::Result<Duration, Ended> {
        let lost_at = held.last_ok + held.ttl.saturating_sub(safety_margin(held.ttl));
        let mut generation = self.generation.clone();
        let announced = held.generation;
        tokio::select! {
            () = stop.cancelled() => return Err(Ended::Stopped),
            Ok(_) = generation.wait_for(|now| *now != announced) => return Err(Ended::NewGeneration),
            () = tokio::time::sleep_until((*next_tick).min(lost_at)) => {}
        }
        let now = Instant::now();
        if now >= lost_at {
            self.lost(held, now);
            return Err(Ended::Lost);
        }
        let interval = held.ttl / 3;
        *next_tick = now + interval;
        Ok(interval.min(lost_at - now).max(Duration::from_millis(10)))
    }

    /// Marks the endpoint as holding no lease.
    pub fn released(&self) {
        self.metrics.held.dec();
        self.update(|s| {
            s.lease_id = None;
            s.ttl = None;
        });
    }
}

struct Task {
    endpoint: String,
    auth: Auth,
    connect: Option<Connect>,
    info: HolderInfo,
    requested_ttl: Duration,
    report: Report,
    stop: CancellationToken,
}

impl Task {
    #[tracing::instrument(name = "lease_holder", skip_all, fields(endpoint = %self.endpoint, role = self.info.role.label(), shard = self.info.shard))]
    async fn run(self) {
        let mut client = match self.connect() {
            Ok(channel) => LeaseClient::new(channel),
            Err(error) => {
                tracing::error!(%error, "invalid lease endpoint, not holding a lease there");
                self.report
                    .update(|s| s.last_error = Some(format!("invalid endpoint: {error}")));
                return;
            }
        };
        let Some(mut held) = self.grant(&mut client).await else {
            return;
        };
        loop {
            match self.keep_alive(&mut client, &mut held).await {
                Ended::Stopped => {
                    self.revoke(client, held.lease_id).await;
                    return;
                }
                Ended::Lost | Ended::NotFound => {
                    let Some(granted) = self.grant(&mut client).await else {
                        return;
                    };
                    held = granted;
                }
                Ended::NewGeneration => {
                    // Make before break: the registry lists the holder
                    // under the new lease before the old one goes.
                    let old = held.lease_id;
                    let granted = self.grant(&mut client).await;
                    self.give_back(client.clone(), old).await;
                    match granted {
                        Some(granted) => {
                            // `granted` counted the new lease as held.
                            self.report.metrics.held.dec();
                            held = granted;
                        }
                        None => {
                            self.report.released();
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Grants until granted; `None` when stopped first.
    async fn grant(&self, client: &mut LeaseClient<Channel>) -> Option<Held> {
        let mut backoff = INITIAL_BACKOFF;
        let mut failures = 0u32;
        loop {
            if self.stop.is_cancelled() {
                return None;
            }
            let generation = self.report.generation();
            let message = GrantRequest {
                holder: Some(proto::lease::Holder {
                    role: self.info.role as i32,
                    shard: self.info.shard,
                    address: self.info.address.clone(),
                    generation,
                }),
                ttl_ms: millis(self.requested_ttl),
            };
            let timeout = call_timeout(self.requested_ttl);
            let sent = Instant::now();
            let result = bounded(timeout, client.grant(self.request(message, timeout))).await;
            match result {
                Ok(response) if response.lease_id != 0 => {
                    let ttl = Duration::from_millis(response.ttl_ms.max(1));
                    tracing::info!(
                        lease_id = response.lease_id,
                        ?ttl,
                        generation,
                        "lease granted"
                    );
                    let held = self
                        .report
                        .granted(response.lease_id, ttl, sent, generation);
                    if self.stop.is_cancelled() {
                        // Stopped while granting: give the lease back at once.
                        self.revoke(client.clone(), held.lease_id).await;
                        return None;
                    }
                    return Some(held);
                }
                Ok(_) => self
                    .report
                    .grant_failed(&mut failures, "registry granted lease 0".into()),
                Err(status) => {
                    self.replace_if_silent(client, &status);
                    self.report.grant_failed(&mut failures, describe(&status));
                }
            }
            let delay = jitter(backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
            tokio::select! {
                () = self.stop.cancelled() => return None,
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Renews `held` every TTL/3 until stopped, lost, or gone at the registry.
    async fn keep_alive(&self, client: &mut LeaseClient<Channel>, held: &mut Held) -> Ended {
        let mut next_tick = held.last_ok + held.ttl / 3;
        loop {
            let timeout = match self
                .report
                .next_renewal(&self.stop, held, &mut next_tick)
                .await
            {
                Ok(timeout) => timeout,
                Err(ended) => return ended,
            };
            let message = KeepAliveRequest {
                lease_id: held.lease_id,
            };
            let sent = Instant::now();
            match bounded(timeout, client.keep_alive(self.request(message, timeout))).await {
                Ok(response) => {
                    let ttl = (response.ttl_ms > 0).then(|| Duration::from_millis(response.ttl_ms));
                    self.report.renewed(held, ttl, sent);
                }
                Err(status) if status.code() == Code::NotFound => {
                    self.report.not_found(held, "registry");
                    return Ended::NotFound;
                }
                Err(status) => {
                    self.replace_if_silent(client, &status);
                    self.report
                        .metrics
                        .renewals
                        .with_label_values(&[RenewalOutcome::Error.label()])
                        .inc();
                    tracing::warn!(
                        lease_id = held.lease_id,
                        code = ?status.code(),
                        message = status.message(),
                        "lease keep-alive failed, retrying at the next tick"
                    );
                    self.report
                        .update(|s| s.last_error = Some(describe(&status)));
                }
            }
        }
    }

    /// Gives the lease back, bounded by [`REVOKE_TIMEOUT`].
    async fn revoke(&self, client: LeaseClient<Channel>, lease_id: u64) {
        self.give_back(client, lease_id).await;
        self.report.released();
    }

    /// The Revoke call alone, without reporting the endpoint as released.
    async fn give_back(&self, mut client: LeaseClient<Channel>, lease_id: u64) {
        let message = RevokeRequest { lease_id };
        match bounded(
            REVOKE_TIMEOUT,
            client.revoke(self.request(message, REVOKE_TIMEOUT)),
        )
        .await
        {
            Ok(_) => tracing::info!(lease_id, "lease revoked"),
            Err(status) => tracing::warn!(
                lease_id,
                code = ?status.code(),
                message = status.message(),
                "lease revoke failed, it will expire at the registry"
            ),
        }
    }

    /// After an attempt that got no answer (deadline passed, connection
    /// broken), the next one goes on a new connection: a request never
    /// queues behind earlier ones on a connection that may be dead, and
    /// they are not all delivered at once when a cut link heals. The old
    /// channel is dropped, which closes its connection.
    fn replace_if_silent(&self, client: &mut LeaseClient<Channel>, status: &Status) {
        if !matches!(
            status.code(),
            Code::DeadlineExceeded | Code::Unavailable | Code::Cancelled | Code::Unknown
        ) {
            return;
        }
        if let Ok(channel) = self.connect() {
            *client = LeaseClient::new(channel);
        }
    }

    /// A lazy channel to the registry, over TLS when configured.
    fn connect(&self) -> Result<Channel, tonic::transport::Error> {
        let endpoint = endpoint(&self.endpoint)?;
        Ok(match &self.connect {
            Some(connect) => (connect.0)(&endpoint),
            None => endpoint.connect_lazy(),
        })
    }

    fn request<T>(&self, message: T, timeout: Duration) -> Request<T> {
        let mut request = Request::new(message);
        request.set_timeout(timeout);
        if let Some(auth) = self.auth.header() {
            request.metadata_mut().insert("authorization", auth);
        }
        request
    }
}

/// The endpoint of a registry ("host:port" or "http://host:port"), with
/// HTTP/2 keep-alive pings: a connection that stops answering is closed
/// within [`KEEPALIVE_INTERVAL`] + [`KEEPALIVE_TIMEOUT`]. The same figures
/// as `svc::channel::ChannelOptions::default()` (`svc` sits above `lease`).
fn endpoint(endpoint: &str) -> Result<Endpoint, tonic::transport::Error> {
    let uri = if endpoint.contains("://") {
        endpoint.to_owned()
    } else {
        format!("http://{endpoint}")
    };
    Ok(Endpoint::from_shared(uri)?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .tcp_keepalive(Some(Duration::from_secs(10)))
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true))
}

/// Awaits a call for at most `timeout`, whatever the transport does.
async fn bounded<T>(
    timeout: Duration,
    call: impl std::future::Future<Output = Result<tonic::Response<T>, Status>>,
) -> Result<T, Status> {
    match tokio::time::timeout(timeout, call).await {
        Ok(result) => result.map(tonic::Response::into_inner),
        Err(_) => Err(Status::deadline_exceeded("lease call timed out")),
    }
}

/// How long before the term ends the holder counts its lease as lost:
/// a tenth of the term but at least 100 ms, and never more than half.
pub fn safety_margin(ttl: Duration) -> Duration {
    (ttl / 10).max(Duration::from_millis(100)).min(ttl / 2)
}

/// The deadline of a Grant: a third of the term, within [100 ms, 1 s].
pub(crate) fn call_timeout(ttl: Duration) -> Duration {
    (ttl / 3).clamp(Duration::from_millis(100), Duration::from_secs(1))
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn describe(status: &Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safety_margin_is_bounded() {
        assert_eq!(
            safety_margin(Duration::from_secs(3)),
            Duration::from_millis(300)
        );
        assert_eq!(
            safety_margin(Duration::from_millis(600)),
            Duration::from_millis(100)
        );
        assert_eq!(
            safety_margin(Duration::from_millis(150)),
            Duration::from_millis(75)
        );
    }

    fn strings(endpoints: &[&str]) -> Vec<String> {
        endpoints.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn etcd_servers_split_by_a_flag_are_grouped_again() {
        assert_eq!(
            targets(&strings(&["127.0.0.1:7070", "127.0.0.1:7071"])),
            ["127.0.0.1:7070", "127.0.0.1:7071"]
        );
        assert_eq!(
            targets(&strings(&["etcd://a:2379", "b:2379", "c:2379/prefix"])),
            ["etcd://a:2379,b:2379,c:2379/prefix"]
        );
        assert_eq!(
            targets(&strings(&[
                "f:7070",
                "etcd://a:2379",
                "b:2379",
                "http://g:7070"
            ])),
            ["f:7070", "etcd://a:2379,b:2379", "http://g:7070"]
        );
        assert_eq!(
            targets(&strings(&["etcd://a:2379/p", "g:7070", " "])),
            ["etcd://a:2379/p", "g:7070"]
        );
    }

    #[tokio::test]
    async fn endpoints_without_a_scheme_get_http() {
        assert!(endpoint("127.0.0.1:7000").is_ok());
        assert!(endpoint("http://127.0.0.1:7000").is_ok());
        assert!(endpoint("not a uri").is_err());
    }
}
