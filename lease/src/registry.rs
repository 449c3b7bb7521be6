//! The embedded lease registry: a table of leases in memory, a reaper task
//! that expires them on tokio time, and the gRPC `Lease` service in front of
//! it (see [`crate::service`]).
//!
//! Every change of membership (a grant, a revoke, an expiry) publishes the
//! new list of live members on a `watch` channel; renewals do not, so the
//! frontend's routing is woken only when the set of members changes.
//!
//! Expiry is checked in two places: the reaper removes leases when their
//! deadline passes, and every read (keep-alive, list) treats a lease past its
//! deadline as gone even if the reaper has not run yet.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::member::{
    member_order, HolderInfo, Member, MemberStatus, MemberView, Membership, Role, RoleLabel,
};
use crate::metrics::{Refusal, RegistryMetrics};

/// The most leases one registry holds; a grant past it is refused, so a
/// misbehaving client cannot grow the table without bound.
pub const MAX_LEASES: usize = 65_536;

/// The longest holder address accepted, in bytes.
pub const MAX_ADDRESS_LEN: usize = 256;

/// Bounds of the terms the registry grants, and the cluster token.
#[derive(Clone, Debug)]
pub struct RegistryConfig {
    /// The shortest term granted; shorter requests are raised to it.
    pub min_ttl: Duration,
    /// The longest term granted; longer requests are cut to it.
    pub max_ttl: Duration,
    /// When set, Grant, KeepAlive and Revoke over gRPC must carry
    /// `authorization: Bearer <token>`.
    pub token: Option<String>,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            min_ttl: Duration::from_millis(500),
            max_ttl: Duration::from_secs(60),
            token: None,
        }
    }
}

/// A lease as granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Granted {
    pub lease_id: u64,
    /// The term after clamping to the registry's bounds.
    pub ttl: Duration,
}

/// One lease in the table.
struct Entry {
    member: Member,
    ttl: Duration,
    renewed: Instant,
    deadline: Instant,
}

#[derive(Default)]
struct Table {
    leases: HashMap<u64, Entry>,
}

/// The embedded lease registry.
pub struct Registry {
    config: RegistryConfig,
    table: Mutex<Table>,
    members: watch::Sender<Arc<Vec<Member>>>,
    pub(crate) metrics: RegistryMetrics,
    /// Wakes the reaper when a lease may now expire earlier than the one it
    /// sleeps for.
    wake: Arc<Notify>,
    /// Stops the reaper; cancelled when the registry is dropped.
    reaper_stop: CancellationToken,
}

impl Registry {
    /// Creates a registry and spawns its reaper on the current tokio runtime.
    /// The reaper stops when the registry is dropped.
    pub fn new(config: RegistryConfig, metrics: &prometheus::Registry) -> Arc<Self> {
        Self::with_shutdown(config, metrics, CancellationToken::new())
    }

    /// Like [`Registry::new`], and the reaper also stops when `shutdown` is
    /// cancelled (after which leases expire only when read).
    pub fn with_shutdown(
        mut config: RegistryConfig,
        metrics: &prometheus::Registry,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        if config.max_ttl < config.min_ttl {
            tracing::warn!(
                min_ttl = ?config.min_ttl,
                max_ttl = ?config.max_ttl,
                "lease max ttl below min ttl, using min ttl for both"
            );
            config.max_ttl = config.min_ttl;
        }
        let (members, _) = watch::channel(Arc::new(Vec::new()));
        let registry = Arc::new(Self {
            config,
            table: Mutex::new(Table::default()),
            members,
            metrics: RegistryMetrics::new(metrics),
            wake: Arc::new(Notify::new()),
            reaper_stop: shutdown.child_token(),
        });
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(reap(
                    Arc::downgrade(&registry),
                    registry.wake.clone(),
                    registry.reaper_stop.clone(),
                ));
            }
            Err(_) => tracing::warn!("no tokio runtime, leases expire only when read"),
        }
        registry
    }

    /// The registry's configuration.
    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    /// Grants a lease to `holder` for `ttl`, clamped to the configured
    /// bounds. A live lease of the same holder (same role, shard and
    /// address) is replaced: a holder that re-grants after losing track of
    /// its lease must not appear twice.
    pub fn grant(&self, holder: &HolderInfo, ttl: Duration) -> Result<Granted> {
        let result = self.try_grant(holder, ttl);
        match &result {
            Ok(granted) => {
                tracing::info!(
                    lease_id = granted.lease_id,
                    role = holder.role.label(),
                    shard = holder.shard,
                    address = %holder.address,
                    generation = holder.generation,
                    ttl = ?granted.ttl,
                    "lease granted"
                );
            }
            Err(error) => self.refused(error),
        }
        result
    }

    fn try_grant(&self, holder: &HolderInfo, ttl: Duration) -> Result<Granted> {
        validate(holder)?;
        let ttl = ttl.clamp(self.config.min_ttl, self.config.max_ttl);
        let now = Instant::now();
        let mut table = self.table.lock();
        let replaced: Vec<u64> = table
            .leases
            .iter()
            .filter(|(_, entry)| {
                entry.member.role == holder.role
                    && entry.member.shard == holder.shard
                    && entry.member.address == holder.address
            })
            .map(|(id, _)| *id)
            .collect();
        if replaced.is_empty() && table.leases.len() >= MAX_LEASES {
            return Err(Error::TooManyLeases(MAX_LEASES));
        }
        for id in replaced {
            if let Some(old) = table.leases.remove(&id) {
                tracing::info!(lease_id = id, address = %old.member.address, "lease replaced by a new grant");
                self.left(&old.member, &self.metrics.revocations);
            }
        }
        let lease_id = loop {
            let id = rand::random::<u64>();
            if id != 0 && !table.leases.contains_key(&id) {
                break id;
            }
        };
        let member = Member {
            lease_id,
            role: holder.role,
            shard: holder.shard,
            address: holder.address.clone(),
            generation: holder.generation,
        };
        let role = member.role.label();
        self.metrics.grants.with_label_values(&[role]).inc();
        self.metrics.live.with_label_values(&[role]).inc();
        table.leases.insert(
            lease_id,
            Entry {
                member,
                ttl,
                renewed: now,
                deadline: now + ttl,
            },
        );
        self.publish(&table);
        drop(table);
        // The new lease may expire before the one the reaper sleeps for.
        self.wake.notify_one();
        Ok(Granted { lease_id, ttl })
    }

    /// Renews a lease for its full term and returns that term. An unknown or
    /// expired lease is [`Error::NotFound`].
    pub fn keep_alive(&self, lease_id: u64) -> Result<Duration> {
        let now = Instant::now();
        let mut table = self.table.lock();
        let result = match table.leases.get_mut(&lease_id) {
            Some(entry) if entry.deadline > now => {
                entry.renewed = now;
                entry.deadline = now + entry.ttl;
                self.metrics.renewals.inc();
                tracing::trace!(lease_id, "lease renewed");
                Ok(entry.ttl)
            }
            Some(_) => {
                // Past its deadline but not yet reaped: it is gone.
                self.expire_due(&mut table, now);
                Err(Error::NotFound(lease_id))
            }
            None => Err(Error::NotFound(lease_id)),
        };
        drop(table);
        if let Err(error) = &result {
            self.refused(error);
        }
        result
    }

    /// Ends a lease at once. Revoking an unknown lease is not an error;
    /// returns whether a live lease was removed.
    pub fn revoke(&self, lease_id: u64) -> bool {
        let mut table = self.table.lock();
        let Some(entry) = table.leases.remove(&lease_id) else {
            return false;
        };
        tracing::info!(
            lease_id,
            role = entry.member.role.label(),
            shard = entry.member.shard,
            address = %entry.member.address,
            "lease revoked"
        );
        self.left(&entry.member, &self.metrics.revocations);
        self.publish(&table);
        true
    }

    /// The live leases with their state, ordered like [`Membership::watch`].
    pub fn list(&self) -> Vec<MemberStatus> {
        let now = Instant::now();
        let table = self.table.lock();
        let mut list: Vec<MemberStatus> = table
            .leases
            .values()
            .filter(|entry| entry.deadline > now)
            .map(|entry| MemberStatus {
                member: entry.member.clone(),
                ttl_left: entry.deadline.saturating_duration_since(now),
                since_renewal: now.saturating_duration_since(entry.renewed),
            })
            .collect();
        list.sort_by(|a, b| member_order(&a.member, &b.member));
        list
    }

    /// Removes every lease whose deadline has passed; returns the earliest
    /// deadline of the leases left.
    fn expire_due(&self, table: &mut Table, now: Instant) -> Option<Instant> {
        let due: Vec<u64> = table
            .leases
            .iter()
            .filter(|(_, entry)| entry.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in &due {
            if let Some(entry) = table.leases.remove(id) {
                tracing::warn!(
                    lease_id = id,
                    role = entry.member.role.label(),
                    shard = entry.member.shard,
                    address = %entry.member.address,
                    since_renewal = ?now.saturating_duration_since(entry.renewed),
                    "lease expired"
                );
                self.left(&entry.member, &self.metrics.expirations);
            }
        }
        if !due.is_empty() {
            self.publish(table);
        }
        table.leases.values().map(|entry| entry.deadline).min()
    }

    /// Counts a member that left, by revocation or expiry.
    fn left(&self, member: &Member, counter: &prometheus::IntCounterVec) {
        let role = member.role.label();
        counter.with_label_values(&[role]).inc();
        self.metrics.live.with_label_values(&[role]).dec();
    }

    /// Sends the current members to the watchers.
    fn publish(&self, table: &Table) {
        let mut members: Vec<Member> = table
            .leases
            .values()
            .map(|entry| entry.member.clone())
            .collect();
        members.sort_by(member_order);
        self.members.send_replace(Arc::new(members));
    }

    /// Counts a refused request.
    pub(crate) fn refused(&self, error: &Error) {
        self.metrics.refused(Refusal::of(error));
        tracing::debug!(%error, "lease request refused");
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.reaper_stop.cancel();
    }
}

impl Membership for Registry {
    fn watch(&self) -> MemberView {
        self.members.subscribe()
    }

    fn status(&self) -> Vec<MemberStatus> {
        self.list()
    }
}

fn validate(holder: &HolderInfo) -> Result<()> {
    if !matches!(holder.role, Role::Leaf | Role::Cache) {
        return Err(Error::InvalidArgument("role must be leaf or cache".into()));
    }
    if holder.address.trim().is_empty() {
        return Err(Error::InvalidArgument("address must not be empty".into()));
    }
    if holder.address.len() > MAX_ADDRESS_LEN {
        return Err(Error::InvalidArgument(format!(
            "address longer than {MAX_ADDRESS_LEN} bytes"
        )));
    }
    Ok(())
}

/// Expires leases as their deadlines pass. Holds only a weak reference while
/// it sleeps, so that dropping the registry ends it.
async fn reap(registry: Weak<Registry>, wake: Arc<Notify>, stop: CancellationToken) {
    loop {
        let next = {
            let Some(registry) = registry.upgrade() else {
                return;
            };
            let mut table = registry.table.lock();
            registry.expire_due(&mut table, Instant::now())
        };
        let sleep = async {
            match next {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = wake.notified() => {}
            () = sleep => {}
        }
    }
}

#[cfg(test)]
mod tests;
