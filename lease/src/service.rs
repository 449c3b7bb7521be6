//! The gRPC `Lease` service in front of the embedded [`Registry`].
//!
//! When the registry has a token of its own (`RegistryConfig::token`),
//! Grant, KeepAlive and Revoke check it before anything else; a refused
//! call is logged with the peer address (never the token) and counted, and
//! never reaches the table. The frontend does not use that check: it serves
//! this service behind `svc::auth::AuthLayer`, which checks every RPC, List
//! included, against the cluster's token set (with rotation), so this
//! service sees only authenticated calls.

use std::sync::Arc;
use std::time::Duration;

use proto::lease::lease_server::{Lease, LeaseServer};
use proto::lease::{
    GrantRequest, GrantResponse, KeepAliveRequest, KeepAliveResponse, ListRequest, ListResponse,
    LiveHolder, RevokeRequest, RevokeResponse,
};
use tonic::{Request, Response, Status};

use crate::error::Error;
use crate::member::{HolderInfo, Role};
use crate::registry::Registry;

/// The tonic service of a registry; build it with [`Registry::service`].
#[derive(Clone)]
pub struct LeaseService {
    registry: Arc<Registry>,
}

impl Registry {
    /// The gRPC `Lease` service backed by this registry, to add to a tonic
    /// server.
    pub fn service(self: &Arc<Self>) -> LeaseServer<LeaseService> {
        LeaseServer::new(LeaseService::new(self.clone()))
    }
}

impl LeaseService {
    /// The service without its tonic wrapper, for calling in-process.
    pub fn new(registry: Arc<Registry>) -> Self {
        Self { registry }
    }

    /// Refuses the request unless it carries the registry's token.
    fn authorize<T>(&self, request: &Request<T>, rpc: &'static str) -> Result<(), Status> {
        let Some(token) = self.registry.config().token.as_deref() else {
            return Ok(());
        };
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        let authorized = presented.is_some_and(|presented| constant_time_eq(presented, token));
        if authorized {
            return Ok(());
        }
        let peer = request
            .remote_addr()
            .map_or_else(|| "unknown".to_owned(), |addr| addr.to_string());
        tracing::warn!(
            rpc,
            %peer,
            token_present = presented.is_some(),
            "lease request refused: missing or wrong cluster token"
        );
        self.registry.refused(&Error::Unauthenticated);
        Err(Error::Unauthenticated.into())
    }
}

#[tonic::async_trait]
impl Lease for LeaseService {
    #[tracing::instrument(skip_all, fields(peer = ?request.remote_addr()))]
    async fn grant(
        &self,
        request: Request<GrantRequest>,
    ) -> Result<Response<GrantResponse>, Status> {
        self.authorize(&request, "grant")?;
        let request = request.into_inner();
        let Some(holder) = request.holder else {
            let error = Error::InvalidArgument("holder is missing".into());
            self.registry.refused(&error);
            return Err(error.into());
        };
        let Ok(role) = Role::try_from(holder.role) else {
            let error = Error::InvalidArgument(format!("unknown role {}", holder.role));
            self.registry.refused(&error);
            return Err(error.into());
        };
        let info = HolderInfo {
            role,
            shard: holder.shard,
            address: holder.address,
            generation: holder.generation,
        };
        let granted = self
            .registry
            .grant(&info, Duration::from_millis(request.ttl_ms))?;
        Ok(Response::new(GrantResponse {
            lease_id: granted.lease_id,
            ttl_ms: millis(granted.ttl),
        }))
    }

    #[tracing::instrument(skip_all, fields(lease_id = request.get_ref().lease_id))]
    async fn keep_alive(
        &self,
        request: Request<KeepAliveRequest>,
    ) -> Result<Response<KeepAliveResponse>, Status> {
        self.authorize(&request, "keep_alive")?;
        let ttl = self.registry.keep_alive(request.get_ref().lease_id)?;
        Ok(Response::new(KeepAliveResponse {
            ttl_ms: millis(ttl),
        }))
    }

    #[tracing::instrument(skip_all, fields(lease_id = request.get_ref().lease_id))]
    async fn revoke(
        &self,
        request: Request<RevokeRequest>,
    ) -> Result<Response<RevokeResponse>, Status> {
        self.authorize(&request, "revoke")?;
        self.registry.revoke(request.get_ref().lease_id);
        Ok(Response::new(RevokeResponse {}))
    }

    #[tracing::instrument(skip_all)]
    async fn list(&self, _request: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let holders = self
            .registry
            .list()
            .into_iter()
            .map(|status| LiveHolder {
                lease_id: status.member.lease_id,
                holder: Some(proto::lease::Holder {
                    role: status.member.role as i32,
                    shard: status.member.shard,
                    address: status.member.address,
                    generation: status.member.generation,
                }),
                ttl_left_ms: millis(status.ttl_left),
                since_renewal_ms: millis(status.since_renewal),
            })
            .collect();
        Ok(Response::new(ListResponse { holders }))
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Compares two secrets in time that depends only on their lengths.
pub(crate) fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn constant_time_eq_compares_whole_strings() {
        assert!(constant_time_eq("secret", "secret"));
        assert!(!constant_time_eq("secret", "secreT"));
        assert!(!constant_time_eq("secret", "secret2"));
        assert!(!constant_time_eq("", "x"));
        assert!(constant_time_eq("", ""));
    }
}
