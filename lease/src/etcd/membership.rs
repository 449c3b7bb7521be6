//! The frontend side on etcd: the live members are the keys under the
//! prefix, followed with a read and a watch.
//!
//! One task keeps the view:
//!
//! 1. Read every key under the prefix, with the revision of the read, and
//!    publish the members.
//! 2. Watch the prefix from that revision + 1, applying puts and deletes
//!    (a delete is a revoke or an expiry) and publishing each change. Every
//!    [`HEARTBEAT`] of silence it asks etcd for a progress report; no answer
//!    at all for [`SILENCE_LIMIT`] counts as etcd being unreachable.
//! 3. When etcd is unreachable, mark the membership disconnected (metric,
//!    log, [`Membership::connected`]), keep the last view, and retry with
//!    backoff: the watch resumes from the last revision seen + 1, so no
//!    change is missed. When that revision has been compacted meanwhile,
//!    go back to 1 and read everything again.
//!
//! A second task reads the remaining term of each member's lease for
//! [`Membership::status`], once a second, and only while someone asks for
//! the status (a `/cluster` page), so that an idle frontend costs etcd
//! nothing.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, EventType, GetOptions, KeyValue, WatchOptions};
use futures::StreamExt;
use parking_lot::Mutex;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{bounded, EtcdConfig, CALL_TIMEOUT};
use crate::backoff::{jitter, INITIAL_BACKOFF, MAX_BACKOFF};
use crate::error::{Error, Result};
use crate::member::{member_order, Member, MemberStatus, MemberView, Membership, Role, RoleLabel};
use crate::metrics::MembershipMetrics;

/// After this long without a word on the watch, ask etcd for progress.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// After this long without a word on the watch, etcd is unreachable.
pub const SILENCE_LIMIT: Duration = Duration::from_secs(3);

/// How often lease terms are read for [`Membership::status`].
const STATUS_REFRESH: Duration = Duration::from_secs(1);

/// How long after the last [`Membership::status`] call terms are still read.
const STATUS_INTEREST: Duration = Duration::from_secs(30);

/// Lease-term reads in flight at once.
const STATUS_CONCURRENCY: usize = 8;

/// The members kept on etcd, as one frontend sees them.
pub struct EtcdMembership {
    shared: Arc<Shared>,
    /// Stops the tasks; cancelled when the membership is dropped.
    stop: CancellationToken,
}

struct Shared {
    config: EtcdConfig,
    members: watch::Sender<Arc<Vec<Member>>>,
    /// False until the first watch is established, and while etcd is
    /// unreachable.
    connected: AtomicBool,
    metrics: MembershipMetrics,
    /// The terms last read, by lease id.
    leases: Mutex<HashMap<u64, LeaseTerm>>,
    /// When [`Membership::status`] was last called.
    looked_at: Mutex<Option<Instant>>,
    /// Wakes the term reader when someone looks.
    look: Notify,
}

/// A lease's term as etcd last reported it.
#[derive(Clone, Copy, Debug)]
struct LeaseTerm {
    /// The remaining term (etcd reports whole seconds).
    left: Duration,
    granted: Duration,
    read_at: Instant,
}

/// The members by key, and the revision they are known up to.
#[derive(Default)]
struct View {
    members: BTreeMap<Vec<u8>, Member>,
    /// `None` until read, and when everything must be read again.
    revision: Option<i64>,
}

/// Why following the watch stopped.
enum Interrupted {
    /// The revision to resume from is gone: read everything again.
    Compacted { compact_revision: i64 },
    /// etcd is unreachable or refused: retry after a pause.
    Failed(Error),
}

impl From<Error> for Interrupted {
    fn from(error: Error) -> Self {
        Interrupted::Failed(error)
    }
}

impl EtcdMembership {
    /// Starts following the members under `config`'s prefix, until
    /// `shutdown` is cancelled or the membership is dropped. Fails only on
    /// a malformed endpoint: while etcd cannot be reached, the membership
    /// is empty, [`Membership::connected`] is false, and the task retries.
    pub async fn connect(
        config: EtcdConfig,
        metrics: &prometheus::Registry,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>> {
        let client = super::connect(&config).await?;
        let (members, _) = watch::channel(Arc::new(Vec::new()));
        let shared = Arc::new(Shared {
            config,
            members,
            connected: AtomicBool::new(false),
            metrics: MembershipMetrics::new(metrics),
            leases: Mutex::new(HashMap::new()),
            looked_at: Mutex::new(None),
            look: Notify::new(),
        });
        shared.metrics.connected.set(0);
        let stop = shutdown.child_token();
        tracing::info!(url = %shared.config.url(), "following the membership on etcd");
        tokio::spawn(follow(Arc::clone(&shared), client.clone(), stop.clone()));
        tokio::spawn(read_terms(Arc::clone(&shared), client, stop.clone()));
        Ok(Arc::new(EtcdMembership { shared, stop }))
    }

    /// Where the members are read from.
    pub fn config(&self) -> &EtcdConfig {
        &self.shared.config
    }
}

impl Drop for EtcdMembership {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Membership for EtcdMembership {
    fn watch(&self) -> MemberView {
        self.shared.members.subscribe()
    }

    /// The members with their lease terms. etcd does not tell watchers
    /// about renewals, so the terms are read from etcd in the background
    /// once someone asks: the first call after a while reports zeros, and
    /// `since_renewal` is the granted term less the remaining one, to the
    /// second.
    fn status(&self) -> Vec<MemberStatus> {
        let now = Instant::now();
        *self.shared.looked_at.lock() = Some(now);
        self.shared.look.notify_one();
        let members = self.shared.members.borrow().clone();
        let leases = self.shared.leases.lock();
        members
            .iter()
            .map(|member| {
                let (ttl_left, since_renewal) = match leases.get(&member.lease_id) {
                    Some(term) => {
                        let elapsed = now.saturating_duration_since(term.read_at);
                        (
                            term.left.saturating_sub(elapsed),
                            term.granted.saturating_sub(term.left) + elapsed,
                        )
                    }
                    None => (Duration::ZERO, Duration::ZERO),
                };
                MemberStatus {
                    member: member.clone(),
                    ttl_left,
                    since_renewal,
                }
            })
            .collect()
    }

    fn connected(&self) -> bool {
        self.shared.connected.load(Ordering::Relaxed)
    }
}

/// Keeps the view current until stopped (the loop of the module docs).
async fn follow(shared: Arc<Shared>, client: Client, stop: CancellationToken) {
    let mut view = View::default();
    let mut backoff = INITIAL_BACKOFF;
    let mut failures = 0u32;
    loop {
        let interrupted = tokio::select! {
            () = stop.cancelled() => return,
            interrupted = shared.read_and_watch(&client, &mut view) => interrupted,
        };
        match interrupted {
            Interrupted::Compacted { compact_revision } => {
                shared.metrics.resyncs.inc();
                tracing::info!(
                    revision = ?view.revision,
                    compact_revision,
                    "etcd compacted the revision to resume from, reading the members again"
                );
                view.revision = None;
                continue;
            }
            Interrupted::Failed(error) => {
                if shared.disconnected(&error, &mut failures, view.members.len()) {
                    backoff = INITIAL_BACKOFF;
                }
            }
        }
        let delay = jitter(backoff);
        backoff = (backoff * 2).min(MAX_BACKOFF);
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

impl Shared {
    /// Reads the members when needed, then follows the watch until it is
    /// interrupted.
    async fn read_and_watch(&self, client: &Client, view: &mut View) -> Interrupted {
        match self.try_read_and_watch(client, view).await {
            Ok(never) => match never {},
            Err(interrupted) => interrupted,
        }
    }

    async fn try_read_and_watch(
        &self,
        client: &Client,
        view: &mut View,
    ) -> Result<std::convert::Infallible, Interrupted> {
        let prefix = self.config.key_prefix();
        let revision = match view.revision {
            Some(revision) => revision,
            None => self.read(client, view).await?,
        };
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision + 1);
        let mut watch_client = client.watch_client();
        let stream = bounded(CALL_TIMEOUT, watch_client.watch(prefix, Some(options))).await?;
        let (mut requests, mut responses) = stream.split();
        let mut last_heard = Instant::now();
        let mut heartbeat = tokio::time::interval_at(last_heard + HEARTBEAT, HEARTBEAT);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = heartbeat.tick() => {
                    let silent = last_heard.elapsed();
                    if silent >= SILENCE_LIMIT {
                        return Err(Error::Etcd(format!("no answer on the watch for {silent:?}")).into());
                    }
                    if silent >= HEARTBEAT {
                        bounded(CALL_TIMEOUT, requests.request_progress()).await?;
                    }
                }
                message = responses.message() => {
                    let response = match message {
                        Ok(Some(response)) => response,
                        Ok(None) => return Err(Error::Etcd("watch stream closed".into()).into()),
                        Err(error) => return Err(Error::from(error).into()),
                    };
                    last_heard = Instant::now();
                    if response.compact_revision() > 0 {
                        return Err(Interrupted::Compacted {
                            compact_revision: response.compact_revision(),
                        });
                    }
                    if response.canceled() {
                        return Err(Error::Etcd(format!(
                            "watch canceled: {}",
                            response.cancel_reason()
                        ))
                        .into());
                    }
                    if response.created() {
                        self.reconnected(view);
                    }
                    self.apply(view, response.events());
                }
            }
        }
    }

    /// Reads every member and publishes them; returns the revision read at.
    async fn read(&self, client: &Client, view: &mut View) -> Result<i64> {
        let mut kv = client.kv_client();
        let response = bounded(
            CALL_TIMEOUT,
            kv.get(
                self.config.key_prefix(),
                Some(GetOptions::new().with_prefix()),
            ),
        )
        .await?;
        let revision = response
            .header()
            .map(|header| header.revision())
            .ok_or_else(|| Error::Etcd("range response without a header".into()))?;
        view.members = response
            .kvs()
            .iter()
            .filter_map(|kv| Some((kv.key().to_vec(), self.decode(kv)?)))
            .collect();
        view.revision = Some(revision);
        tracing::debug!(
            revision,
            members = view.members.len(),
            "members read from etcd"
        );
        self.publish(view);
        Ok(revision)
    }

    /// Applies the events of one watch response.
    fn apply(&self, view: &mut View, events: &[etcd_client::Event]) {
        let mut changed = false;
        for event in events {
            let Some(kv) = event.kv() else {
                continue;
            };
            view.revision = Some(view.revision.unwrap_or(0).max(kv.mod_revision()));
            let removed = match event.event_type() {
                EventType::Put => match self.decode(kv) {
                    Some(member) => {
                        view.members.insert(kv.key().to_vec(), member);
                        changed = true;
                        continue;
                    }
                    None => view.members.remove(kv.key()),
                },
                EventType::Delete => view.members.remove(kv.key()),
            };
            changed |= removed.is_some();
        }
        if changed {
            self.publish(view);
        }
    }

    /// The member a key describes; `None` (logged) when it describes none.
    fn decode(&self, kv: &KeyValue) -> Option<Member> {
        match super::decode(kv.value(), kv.lease()) {
            Ok(member) => Some(member),
            Err(error) => {
                tracing::warn!(
                    key = %String::from_utf8_lossy(kv.key()),
                    %error,
                    "ignoring a key under the member prefix"
                );
                None
            }
        }
    }

    /// Sends the members to the watchers when they changed.
    fn publish(&self, view: &View) {
        let mut members: Vec<Member> = view.members.values().cloned().collect();
        members.sort_by(member_order);
        for role in Role::ALL.iter().map(Role::label) {
            let live = members.iter().filter(|m| m.role.label() == role).count();
            self.metrics
                .live
                .with_label_values(&[role])
                .set(i64::try_from(live).unwrap_or(i64::MAX));
        }
        self.members.send_if_modified(|current| {
            if **current == members {
                return false;
            }
            tracing::info!(members = members.len(), "membership changed");
            *current = Arc::new(members);
            true
        });
    }

    /// Marks etcd reachable (a watch was established).
    fn reconnected(&self, view: &View) {
        self.metrics.connected.set(1);
        if !self.connected.swap(true, Ordering::Relaxed) {
            tracing::info!(
                revision = ?view.revision,
                members = view.members.len(),
                "membership watch on etcd established"
            );
        }
    }

    /// Marks etcd unreachable and logs it (the change at once, then every
    /// tenth failure). Returns whether it was reachable until now.
    fn disconnected(&self, error: &Error, failures: &mut u32, members: usize) -> bool {
        self.metrics.errors.inc();
        self.metrics.connected.set(0);
        let was_connected = self.connected.swap(false, Ordering::Relaxed);
        if was_connected {
            *failures = 0;
        }
        *failures += 1;
        if *failures % 10 == 1 {
            tracing::warn!(
                %error,
                members,
                failures = *failures,
                "etcd unreachable, routing with the last membership seen"
            );
        } else {
            tracing::debug!(%error, failures = *failures, "etcd still unreachable");
        }
        was_connected
    }
}

/// Reads the lease terms of the members for [`Membership::status`], while
/// someone asks for it.
async fn read_terms(shared: Arc<Shared>, client: Client, stop: CancellationToken) {
    loop {
        let interested = shared
            .looked_at
            .lock()
            .is_some_and(|at| at.elapsed() < STATUS_INTEREST);
        if !interested {
            shared.leases.lock().clear();
            tokio::select! {
                () = stop.cancelled() => return,
                () = shared.look.notified() => continue,
            }
        }
        let ids: Vec<u64> = shared
            .members
            .borrow()
            .iter()
            .map(|member| member.lease_id)
            .collect();
        let terms: HashMap<u64, LeaseTerm> = futures::stream::iter(ids)
            .map(|id| {
                let mut lease = client.lease_client();
                async move {
                    let read_at = Instant::now();
                    let response = bounded(CALL_TIMEOUT, lease.time_to_live(id as i64, None)).await;
                    let term = response.ok().filter(|r| r.ttl() >= 0).map(|r| LeaseTerm {
                        left: Duration::from_secs(u64::try_from(r.ttl()).unwrap_or(0)),
                        granted: Duration::from_secs(u64::try_from(r.granted_ttl()).unwrap_or(0)),
                        read_at,
                    });
                    (id, term)
                }
            })
            .buffer_unordered(STATUS_CONCURRENCY)
            .filter_map(|(id, term)| async move { term.map(|term| (id, term)) })
            .collect()
            .await;
        *shared.leases.lock() = terms;
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(STATUS_REFRESH) => {}
        }
    }
}
