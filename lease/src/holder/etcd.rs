//! The holder side on etcd: the steps of [`crate::holder`] with etcd's
//! Lease and KV services.
//!
//! 1. Grant an etcd lease and put the holder's description under its key,
//!    attached to the lease; retry both with capped backoff and jitter.
//! 2. Keep the lease alive every TTL/3 on a keep-alive stream, each renewal
//!    with a deadline. A TTL of 0 in the answer (etcd expired or forgot the
//!    lease) goes back to 1 at once; a failed or silent stream is dropped
//!    and opened again at the next tick.
//! 3. When no renewal has succeeded for the term less the safety margin,
//!    count the lease as lost, revoke it in the background (so that its key
//!    does not linger beside the new one) and go back to 1.
//!
//! On shutdown the lease is revoked with a short deadline, which deletes
//! the key at once.

use std::time::Duration;

use etcd_client::{Client, LeaseKeepAliveStream, LeaseKeeper, PutOptions};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Ended, Held, HolderInfo, Report, REVOKE_TIMEOUT};
use crate::backoff::{jitter, INITIAL_BACKOFF, MAX_BACKOFF};
use crate::error::{Error, Result};
use crate::etcd::{bounded, EtcdConfig, CALL_TIMEOUT};
use crate::member::RoleLabel;
use crate::metrics::RenewalOutcome;

/// The deadline of the grant, and then of the put: etcd terms are at least
/// a second, so a third of the shortest one, rounded up.
const GRANT_TIMEOUT: Duration = Duration::from_secs(1);

/// One holder's lease on one etcd cluster.
pub(crate) struct EtcdHolder {
    /// The `etcd://` address as configured.
    pub url: String,
    pub info: HolderInfo,
    pub requested_ttl: Duration,
    pub report: Report,
    pub stop: CancellationToken,
}

/// An open keep-alive stream.
struct KeepAlive {
    keeper: LeaseKeeper,
    responses: LeaseKeepAliveStream,
}

impl EtcdHolder {
    #[tracing::instrument(name = "lease_holder", skip_all, fields(endpoint = %self.url, role = self.info.role.label(), shard = self.info.shard))]
    pub async fn run(self) {
        let connected = match EtcdConfig::parse(&self.url) {
            Ok(config) => crate::etcd::connect(&config)
                .await
                .map(|client| (config, client)),
            Err(error) => Err(error),
        };
        let (config, client) = match connected {
            Ok(connected) => connected,
            Err(error) => {
                tracing::error!(%error, "invalid etcd endpoint, not holding a lease there");
                self.report
                    .update(|s| s.last_error = Some(format!("invalid endpoint: {error}")));
                return;
            }
        };
        let Some(mut held) = self.grant(&config, &client).await else {
            return;
        };
        loop {
            match self.keep_alive(&client, &mut held).await {
                Ended::Stopped => {
                    self.revoke(&client, held.lease_id).await;
                    return;
                }
                Ended::Lost => {
                    // etcd may still hold the lease (and its key) until the
                    // term ends there; give it back so that frontends do not
                    // see this holder twice.
                    let client = client.clone();
                    tokio::spawn(revoke_quietly(client, held.lease_id));
                }
                Ended::NotFound => {}
                Ended::NewGeneration => {
                    // The same lease, its key rewritten with the new
                    // generation; on failure, the next change or grant
                    // retries.
                    let generation = self.report.generation();
                    match self
                        .put(&config, &client, held.lease_id as i64, generation)
                        .await
                    {
                        Ok(()) => {
                            tracing::info!(
                                lease_id = held.lease_id,
                                generation,
                                "etcd key announces a new generation"
                            );
                        }
                        Err(error) => {
                            tracing::warn!(lease_id = held.lease_id, %error, "cannot announce the new generation on etcd");
                        }
                    }
                    held.generation = generation;
                    continue;
                }
            }
            let Some(granted) = self.grant(&config, &client).await else {
                return;
            };
            held = granted;
        }
    }

    /// Grants a lease and puts the description under it, until both
    /// succeed; `None` when stopped first.
    async fn grant(&self, config: &EtcdConfig, client: &Client) -> Option<Held> {
        let mut backoff = INITIAL_BACKOFF;
        let mut failures = 0u32;
        loop {
            if self.stop.is_cancelled() {
                return None;
            }
            let sent = Instant::now();
            // Not abandoned when stopped: the put may have reached etcd, and
            // the lease must then be revoked (below). Both calls are bounded.
            let generation = self.report.generation();
            match self.grant_and_put(config, client, generation).await {
                Ok((lease_id, ttl)) => {
                    tracing::info!(lease_id, ?ttl, generation, "etcd lease granted");
                    let held = self.report.granted(lease_id, ttl, sent, generation);
                    if self.stop.is_cancelled() {
                        self.revoke(client, held.lease_id).await;
                        return None;
                    }
                    return Some(held);
                }
                Err(error) => self.report.grant_failed(&mut failures, error.to_string()),
            }
            let delay = jitter(backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
            tokio::select! {
                () = self.stop.cancelled() => return None,
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// One grant and one put; the lease is given back when the put fails.
    async fn grant_and_put(
        &self,
        config: &EtcdConfig,
        client: &Client,
        generation: u64,
    ) -> Result<(u64, Duration)> {
        let timeout = GRANT_TIMEOUT;
        let mut lease = client.lease_client();
        let ttl = crate::etcd::ttl_seconds(self.requested_ttl);
        let granted = bounded(timeout, lease.grant(ttl, None)).await?;
        if !granted.error().is_empty() || granted.ttl() <= 0 {
            return Err(Error::Etcd(format!(
                "grant refused: {} (ttl {})",
                granted.error(),
                granted.ttl()
            )));
        }
        let lease_id = granted.id();
        if let Err(error) = self.put(config, client, lease_id, generation).await {
            tokio::spawn(revoke_quietly(client.clone(), lease_id as u64));
            return Err(error);
        }
        let ttl = u64::try_from(granted.ttl()).unwrap_or(1);
        Ok((lease_id as u64, Duration::from_secs(ttl)))
    }

    /// Puts the holder's description, announcing `generation`, under its
    /// key attached to `lease_id`.
    async fn put(
        &self,
        config: &EtcdConfig,
        client: &Client,
        lease_id: i64,
        generation: u64,
    ) -> Result<()> {
        let info = HolderInfo {
            generation,
            ..self.info.clone()
        };
        let mut kv = client.kv_client();
        bounded(
            GRANT_TIMEOUT,
            kv.put(
                config.key(&info, lease_id),
                crate::etcd::encode(&info),
                Some(PutOptions::new().with_lease(lease_id)),
            ),
        )
        .await?;
        Ok(())
    }

    /// Renews `held` every TTL/3 until stopped, lost, or gone at etcd.
    async fn keep_alive(&self, client: &Client, held: &mut Held) -> Ended {
        let mut stream: Option<KeepAlive> = None;
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
            let sent = Instant::now();
            let renewed =
                tokio::time::timeout(timeout, renew(client, held.lease_id as i64, &mut stream))
                    .await
                    .unwrap_or_else(|_| {
                        Err(Error::Etcd(format!(
                            "no keep-alive answer within {timeout:?}"
                        )))
                    });
            match renewed {
                Ok(Some(ttl)) => self.report.renewed(held, ttl, sent),
                Ok(None) => {
                    self.report.not_found(held, "etcd");
                    return Ended::NotFound;
                }
                Err(error) => {
                    // The stream may be wedged (a silent etcd) or closed:
                    // open a new one at the next tick.
                    stream = None;
                    self.report
                        .metrics
                        .renewals
                        .with_label_values(&[RenewalOutcome::Error.label()])
                        .inc();
                    tracing::warn!(
                        lease_id = held.lease_id,
                        %error,
                        "etcd lease keep-alive failed, retrying at the next tick"
                    );
                    self.report
                        .update(|s| s.last_error = Some(error.to_string()));
                }
            }
        }
    }

    /// Gives the lease back, bounded by [`REVOKE_TIMEOUT`]; etcd deletes the
    /// key with it.
    async fn revoke(&self, client: &Client, lease_id: u64) {
        let mut lease = client.lease_client();
        match bounded(REVOKE_TIMEOUT, lease.revoke(lease_id as i64)).await {
            Ok(_) => tracing::info!(lease_id, "etcd lease revoked"),
            Err(error) => tracing::warn!(
                lease_id,
                %error,
                "etcd lease revoke failed, it will expire at etcd"
            ),
        }
        self.report.released();
    }
}

/// One renewal on the keep-alive stream, opening it first when needed (the
/// opening sends a renewal itself). `Ok(None)` when etcd no longer knows
/// the lease; `Ok(Some(ttl))` with the term etcd renewed for, when it said.
async fn renew(
    client: &Client,
    lease_id: i64,
    stream: &mut Option<KeepAlive>,
) -> Result<Option<Option<Duration>>> {
    let Some(open) = stream.as_mut() else {
        let mut lease = client.lease_client();
        return match lease.keep_alive(lease_id).await {
            Ok((keeper, responses)) => {
                *stream = Some(KeepAlive { keeper, responses });
                Ok(Some(None))
            }
            // etcd-client reads the first answer itself and reports a TTL
            // of 0 (an unknown lease) this way.
            Err(etcd_client::Error::LeaseKeepAliveError(message))
                if message.contains("not found") =>
            {
                Ok(None)
            }
            Err(error) => Err(error.into()),
        };
    };
    open.keeper.keep_alive().await?;
    match open.responses.message().await? {
        Some(response) if response.ttl() > 0 => Ok(Some(Some(Duration::from_secs(
            u64::try_from(response.ttl()).unwrap_or(1),
        )))),
        Some(_) => Ok(None),
        None => Err(Error::Etcd("keep-alive stream closed".into())),
    }
}

/// Revokes a lease that is no longer wanted, logging only at debug level:
/// if it fails the lease expires at etcd anyway.
async fn revoke_quietly(client: Client, lease_id: u64) {
    let mut lease = client.lease_client();
    if let Err(error) = bounded(CALL_TIMEOUT, lease.revoke(lease_id as i64)).await {
        tracing::debug!(lease_id, %error, "revoking an abandoned etcd lease failed");
    }
}
