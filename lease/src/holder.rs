//! The holder side of a lease. STUB: the signatures are final, the bodies
//! are being written.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::Role;

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

/// The running keep-alive tasks of one holder.
pub struct HolderSet {
    _private: (),
}

/// Starts one lease per endpoint and keeps each alive until `shutdown` is
/// cancelled or [`HolderSet::revoke_all`] is called.
pub fn spawn(
    config: HolderConfig,
    metrics: &prometheus::Registry,
    shutdown: CancellationToken,
) -> HolderSet {
    let _ = (config, metrics, shutdown);
    HolderSet { _private: () }
}

impl HolderSet {
    /// Revokes every lease (bounded in time) and stops the keep-alive tasks.
    pub async fn revoke_all(self) {}
}
