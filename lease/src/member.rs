//! The types every part of the crate shares: who holds a lease
//! ([`HolderInfo`]), the live members the frontend routes by ([`Member`],
//! [`Membership`]), and the label of each role. At the bottom of the
//! module graph: it knows no other module of the crate.

use std::sync::Arc;
use std::time::Duration;

pub use proto::lease::Role;

/// What a holder says about itself when it grants a lease.
#[derive(Clone, Debug)]
pub struct HolderInfo {
    pub role: Role,
    pub shard: u32,
    /// `host:port` where the holder's gRPC server listens.
    pub address: String,
    pub generation: u64,
}

/// The label of a role in metrics and logs, and the roles a lease may be
/// held for (`proto::lease::Role` is generated, so the label is a trait).
pub trait RoleLabel: Sized + 'static {
    /// The roles a holder may have, to pre-register metric series.
    const ALL: &'static [Self];
    /// `leaf`, `cache` (`unspecified` for the proto default).
    fn label(&self) -> &'static str;
}

impl RoleLabel for Role {
    const ALL: &'static [Role] = &[Role::Leaf, Role::Cache];

    fn label(&self) -> &'static str {
        match self {
            Role::Leaf => "leaf",
            Role::Cache => "cache",
            Role::Unspecified => "unspecified",
        }
    }
}

/// One live holder, as the frontend routes to it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Member {
    pub lease_id: u64,
    pub role: Role,
    pub shard: u32,
    /// `host:port` of the holder's gRPC server.
    pub address: String,
    pub generation: u64,
}

/// A member with the state of its lease, for `/cluster` and status pages.
#[derive(Clone, Debug, PartialEq)]
pub struct MemberStatus {
    pub member: Member,
    pub ttl_left: Duration,
    pub since_renewal: Duration,
}

/// The live members; the value changes whenever one joins, leaves or expires.
pub type MemberView = tokio::sync::watch::Receiver<Arc<Vec<Member>>>;

/// Where the frontend learns who is alive: the embedded registry or etcd.
pub trait Membership: Send + Sync + 'static {
    /// A receiver that always holds the current live members.
    fn watch(&self) -> MemberView;
    /// Live members with their lease state.
    fn status(&self) -> Vec<MemberStatus>;
    /// False when the backend cannot be reached and the view may be stale.
    fn connected(&self) -> bool {
        true
    }
}

/// Members ordered by role, shard, address and lease, so that watchers and
/// listings see a stable order.
pub(crate) fn member_order(a: &Member, b: &Member) -> std::cmp::Ordering {
    (a.role as i32, a.shard, &a.address, a.lease_id).cmp(&(
        b.role as i32,
        b.shard,
        &b.address,
        b.lease_id,
    ))
}
