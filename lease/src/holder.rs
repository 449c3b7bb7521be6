//! The holder side of a lease, run by leaves and cache servers.
//!
//! One task per endpoint (a frontend's gRPC address) does:
//!
//! 1. Grant, retrying with capped exponential backoff and jitter while the
//!    endpoint is unreachable or refuses.
//! 2. KeepAlive every TTL/3, each call with a deadline. NOT_FOUND (the
//!    registry restarted, or the lease expired there) goes back to 1 at
//!    once; any other error is retried at the next tick.
//! 3. When no renewal has succeeded for the term less a safety margin
//!    (message delay and clock drift), the lease is counted as lost, logged,
//!    and granted anew.
//!
//! On shutdown (the token passed to [`spawn`] is cancelled) or
//! [`HolderSet::revoke_all`], each task revokes its lease with a short
//! deadline and stops. Dropping the [`HolderSet`] aborts the tasks without
//! revoking, like a crash: the registry drops the leases within one term.

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

use crate::metrics::{role_label, HolderMetrics};
use crate::Role;

/// How long a connection attempt to a registry may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The deadline of a Revoke on shutdown.
pub const REVOKE_TIMEOUT: Duration = Duration::from_secs(1);
/// The first pause between failed grants; it doubles up to [`MAX_BACKOFF`].
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// What a holder says about itself when it grants a lease.
#[derive(Clone, Debug)]
pub struct HolderInfo {
    pub role: Role,
    pub shard: u32,
    /// `host:port` where the holder's gRPC server listens.
    pub address: String,
    pub generation: u64,
}

#[derive(Clone, Debug)]
pub struct HolderConfig {
    /// gRPC addresses of the lease registries (frontends), one lease each.
    pub endpoints: Vec<String>,
    /// The cluster token, sent as `authorization: Bearer …`.
    pub token: Option<String>,
    /// The term asked for; the registry may clamp it.
    pub ttl: Duration,
    pub info: HolderInfo,
}

/// The state of the lease held at one endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointStatus {
    /// The endpoint as configured.
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
}

/// Starts one lease per endpoint and keeps each alive until `shutdown` is
/// cancelled or [`HolderSet::revoke_all`] is called. Must be called within a
/// tokio runtime.
pub fn spawn(
    config: HolderConfig,
    metrics: &prometheus::Registry,
    shutdown: CancellationToken,
) -> HolderSet {
    let metrics = HolderMetrics::new(metrics);
    let stop = shutdown.child_token();
    let auth = config.token.as_deref().and_then(|token| {
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
    });
    let initial = config
        .endpoints
        .iter()
        .map(|endpoint| EndpointStatus {
            endpoint: endpoint.clone(),
            ..EndpointStatus::default()
        })
        .collect();
    let (status_tx, status) = watch::channel(initial);
    let tasks = config
        .endpoints
        .iter()
        .enumerate()
        .map(|(index, endpoint)| {
            let task = Task {
                index,
                endpoint: endpoint.clone(),
                auth: auth.clone(),
                info: config.info.clone(),
                requested_ttl: config.ttl,
                metrics: metrics.clone(),
                status: status_tx.clone(),
                stop: stop.clone(),
            };
            tokio::spawn(task.run())
        })
        .collect();
    HolderSet {
        tasks,
        stop,
        status,
    }
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
struct Held {
    lease_id: u64,
    ttl: Duration,
    /// When the last successful grant or renewal was sent: the registry
    /// renewed no earlier than that.
    last_ok: Instant,
}

/// Why the keep-alive loop ended.
enum Ended {
    Stopped,
    Lost,
    NotFound,
}

struct Task {
    index: usize,
    endpoint: String,
    auth: Option<AsciiMetadataValue>,
    info: HolderInfo,
    requested_ttl: Duration,
    metrics: HolderMetrics,
    status: watch::Sender<Vec<EndpointStatus>>,
    stop: CancellationToken,
}

impl Task {
    #[tracing::instrument(name = "lease_holder", skip_all, fields(endpoint = %self.endpoint, role = role_label(self.info.role), shard = self.info.shard))]
    async fn run(self) {
        let client = match connect(&self.endpoint) {
            Ok(channel) => LeaseClient::new(channel),
            Err(error) => {
                tracing::error!(%error, "invalid lease endpoint, not holding a lease there");
                self.update(|s| s.last_error = Some(format!("invalid endpoint: {error}")));
                return;
            }
        };
        loop {
            let Some(mut held) = self.grant(client.clone()).await else {
                return;
            };
            match self.keep_alive(client.clone(), &mut held).await {
                Ended::Stopped => {
                    self.revoke(client, held.lease_id).await;
                    return;
                }
                Ended::Lost | Ended::NotFound => {}
            }
        }
    }

    /// Grants until granted; `None` when stopped first.
    async fn grant(&self, mut client: LeaseClient<Channel>) -> Option<Held> {
        let mut backoff = INITIAL_BACKOFF;
        let mut failures = 0u32;
        loop {
            if self.stop.is_cancelled() {
                return None;
            }
            let message = GrantRequest {
                holder: Some(proto::lease::Holder {
                    role: self.info.role as i32,
                    shard: self.info.shard,
                    address: self.info.address.clone(),
                    generation: self.info.generation,
                }),
                ttl_ms: millis(self.requested_ttl),
            };
            let timeout = call_timeout(self.requested_ttl);
            let sent = Instant::now();
            let result = bounded(timeout, client.grant(self.request(message, timeout))).await;
            match result {
                Ok(response) if response.lease_id != 0 => {
                    let ttl = Duration::from_millis(response.ttl_ms.max(1));
                    tracing::info!(lease_id = response.lease_id, ?ttl, "lease granted");
                    self.metrics.grants.inc();
                    self.metrics.held.inc();
                    self.update(|s| {
                        s.lease_id = Some(response.lease_id);
                        s.ttl = Some(ttl);
                        s.last_renewal = Some(sent);
                        s.last_error = None;
                    });
                    let held = Held {
                        lease_id: response.lease_id,
                        ttl,
                        last_ok: sent,
                    };
                    if self.stop.is_cancelled() {
                        // Stopped while granting: give the lease back at once.
                        self.revoke(client, held.lease_id).await;
                        return None;
                    }
                    return Some(held);
                }
                Ok(_) => self.failed(&mut failures, &Status::internal("registry granted lease 0")),
                Err(status) => self.failed(&mut failures, &status),
            }
            let delay = jitter(backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
            tokio::select! {
                () = self.stop.cancelled() => return None,
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    fn failed(&self, failures: &mut u32, status: &Status) {
        *failures += 1;
        // The first failure and every tenth after it are worth a warning; the
        // rest would flood the log while a frontend is down.
        if *failures % 10 == 1 {
            tracing::warn!(code = ?status.code(), message = status.message(), failures = *failures, "lease grant failed, retrying");
        } else {
            tracing::debug!(code = ?status.code(), message = status.message(), failures = *failures, "lease grant failed, retrying");
        }
        self.update(|s| s.last_error = Some(describe(status)));
    }

    /// Renews `held` every TTL/3 until stopped, lost, or gone at the registry.
    async fn keep_alive(&self, mut client: LeaseClient<Channel>, held: &mut Held) -> Ended {
        let mut next_tick = held.last_ok + held.ttl / 3;
        loop {
            let margin = safety_margin(held.ttl);
            let lost_at = held.last_ok + held.ttl.saturating_sub(margin);
            tokio::select! {
                () = self.stop.cancelled() => return Ended::Stopped,
                () = tokio::time::sleep_until(next_tick.min(lost_at)) => {}
            }
            let now = Instant::now();
            if now >= lost_at {
                tracing::warn!(
                    lease_id = held.lease_id,
                    since_renewal = ?now.saturating_duration_since(held.last_ok),
                    ttl = ?held.ttl,
                    "lease lost: no renewal within its term less the safety margin, granting again"
                );
                self.metrics.lost.inc();
                self.released();
                return Ended::Lost;
            }
            let interval = held.ttl / 3;
            next_tick = now + interval;
            let timeout = interval.min(lost_at - now).max(Duration::from_millis(10));
            let message = KeepAliveRequest {
                lease_id: held.lease_id,
            };
            let sent = Instant::now();
            match bounded(timeout, client.keep_alive(self.request(message, timeout))).await {
                Ok(response) => {
                    self.metrics.renewals.with_label_values(&["ok"]).inc();
                    held.last_ok = sent;
                    if response.ttl_ms > 0 {
                        held.ttl = Duration::from_millis(response.ttl_ms);
                    }
                    let ttl = held.ttl;
                    self.update(|s| {
                        s.ttl = Some(ttl);
                        s.last_renewal = Some(sent);
                        s.last_error = None;
                    });
                }
                Err(status) if status.code() == Code::NotFound => {
                    self.metrics
                        .renewals
                        .with_label_values(&["not_found"])
                        .inc();
                    tracing::info!(
                        lease_id = held.lease_id,
                        "lease unknown to the registry, granting again"
                    );
                    self.released();
                    return Ended::NotFound;
                }
                Err(status) => {
                    self.metrics.renewals.with_label_values(&["error"]).inc();
                    tracing::warn!(
                        lease_id = held.lease_id,
                        code = ?status.code(),
                        message = status.message(),
                        "lease keep-alive failed, retrying at the next tick"
                    );
                    self.update(|s| s.last_error = Some(describe(&status)));
                }
            }
        }
    }

    /// Gives the lease back, bounded by [`REVOKE_TIMEOUT`].
    async fn revoke(&self, mut client: LeaseClient<Channel>, lease_id: u64) {
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
        self.released();
    }

    /// Marks the endpoint as holding no lease.
    fn released(&self) {
        self.metrics.held.dec();
        self.update(|s| {
            s.lease_id = None;
            s.ttl = None;
        });
    }

    fn update(&self, change: impl FnOnce(&mut EndpointStatus)) {
        self.status.send_modify(|all| {
            if let Some(status) = all.get_mut(self.index) {
                change(status);
            }
        });
    }

    fn request<T>(&self, message: T, timeout: Duration) -> Request<T> {
        let mut request = Request::new(message);
        request.set_timeout(timeout);
        if let Some(auth) = &self.auth {
            request.metadata_mut().insert("authorization", auth.clone());
        }
        request
    }
}

/// A lazy channel to `endpoint` ("host:port" or "http://host:port").
fn connect(endpoint: &str) -> Result<Channel, tonic::transport::Error> {
    let uri = if endpoint.contains("://") {
        endpoint.to_owned()
    } else {
        format!("http://{endpoint}")
    };
    Ok(Endpoint::from_shared(uri)?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .connect_lazy())
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
fn call_timeout(ttl: Duration) -> Duration {
    (ttl / 3).clamp(Duration::from_millis(100), Duration::from_secs(1))
}

/// Somewhere in the upper half of `backoff`, so that holders restarted
/// together do not retry in lockstep.
fn jitter(backoff: Duration) -> Duration {
    let half = backoff / 2;
    half + half.mul_f64(rand::random::<f64>())
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

    #[test]
    fn jitter_stays_within_the_upper_half() {
        for _ in 0..100 {
            let delay = jitter(Duration::from_millis(800));
            assert!(delay >= Duration::from_millis(400) && delay <= Duration::from_millis(800));
        }
    }

    #[tokio::test]
    async fn endpoints_without_a_scheme_get_http() {
        assert!(connect("127.0.0.1:7000").is_ok());
        assert!(connect("http://127.0.0.1:7000").is_ok());
        assert!(connect("not a uri").is_err());
    }
}
