//! Membership and liveness by leases (Gray and Cheriton 1989, with etcd's
//! Grant/KeepAlive/Revoke semantics).
//!
//! - [`registry`]: the embedded lease registry the frontend runs by default:
//!   a table of leases with a reaper on tokio time, usable in-process.
//! - [`service`]: the gRPC `Lease` service in front of a registry
//!   ([`registry::Registry::service`]); it checks the cluster token.
//! - [`holder`]: the holder side that leaves and cache servers run: grant,
//!   keep alive at about TTL/3, grant again when told the lease is gone,
//!   count the lease as lost a safety margin before its term ends, revoke on
//!   graceful shutdown.
//! - [`etcd`]: the same leases kept by an etcd cluster, for several
//!   frontends: holders given an `etcd://` endpoint grant etcd leases and put
//!   their description under a key prefix, and [`etcd::EtcdMembership`]
//!   follows that prefix.
//! - [`Membership`]: what the frontend routes by, a watched list of live
//!   [`Member`]s, whichever backend keeps the leases: the embedded
//!   [`registry::Registry`] (the default, for one frontend) or
//!   [`etcd::EtcdMembership`].
//! - `testing` (feature `test-util`): an etcd server on loopback and a TCP
//!   proxy that cuts connections, for tests.
//!
//! Data flows one way: holders call Grant/KeepAlive/Revoke on the service
//! (or on etcd), the backend publishes every change of membership (join,
//! leave, expiry; not renewals) on a `watch` channel, and the frontend
//! routes by what it receives there. Errors are [`Error`], mapped to gRPC
//! codes in one place (`error.rs`).
//!
//! Modules depend one way, with no cycle: `service` → `registry` →
//! `holder` → `etcd` → (`member`, `metrics`, `backoff`, `error`). The
//! types every part shares (who holds a lease, the member list, roles and
//! their labels) live at the bottom, in `member.rs`.

mod backoff;
mod error;
pub mod etcd;
pub mod holder;
mod member;
mod metrics;
pub mod registry;
pub mod service;
#[cfg(feature = "test-util")]
pub mod testing;

pub use error::{Error, Result};
pub use holder::LeaseConfig;
pub use member::{HolderInfo, Member, MemberStatus, MemberView, Membership, Role, RoleLabel};
pub use metrics::{Refusal, RenewalOutcome};
