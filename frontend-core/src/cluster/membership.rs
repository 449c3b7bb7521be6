//! A fixed list of leaves (`frontend serve --leaf ADDR …`), for clusters
//! run without leases. Each leaf is asked for its shard once it answers;
//! a static leaf stays routed whether or not it is alive.

use std::sync::Arc;
use std::time::Duration;

use lease::{Member, MemberStatus, MemberView, Membership, Role};
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::cluster::leaf_client::{clients_of, Connect, LocalLeaf, ShardClients};

pub struct StaticMembership {
    members: watch::Sender<Arc<Vec<Member>>>,
    known: Mutex<Vec<Member>>,
}

impl StaticMembership {
    /// Starts discovering the shard of every address in `leaves`.
    /// `connect` says how the leaves are reached; one of `local` (served
    /// by this process) is asked in process.
    pub fn start(
        leaves: Vec<String>,
        connect: Connect,
        local: &[LocalLeaf],
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let (members, _) = watch::channel(Arc::new(Vec::new()));
        let membership = Arc::new(StaticMembership {
            members,
            known: Mutex::new(Vec::new()),
        });
        for (index, address) in leaves.into_iter().enumerate() {
            let membership = Arc::clone(&membership);
            let shutdown = shutdown.clone();
            let clients = match clients_of(&address, &connect, local) {
                Ok(clients) => clients,
                Err(error) => {
                    tracing::error!(%address, %error, "bad leaf address");
                    continue;
                }
            };
            tokio::spawn(async move {
                loop {
                    match discover(&clients, index, &address).await {
                        Ok(members) => {
                            for member in members {
                                membership.add(member);
                            }
                            return;
                        }
                        Err(error) => {
                            tracing::debug!(%address, %error, "static leaf not answering yet");
                        }
                    }
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_millis(250)) => {}
                    }
                }
            });
        }
        membership
    }

    fn add(&self, member: Member) {
        let mut known = self.known.lock();
        known.push(member);
        self.members.send_replace(Arc::new(known.clone()));
    }
}

/// The members a static leaf address stands for: one per shard its
/// process serves (`Info.served`), each with that shard's own generation,
/// and lease ids unique per shard when there are several.
async fn discover(
    clients: &ShardClients,
    index: usize,
    address: &str,
) -> Result<Vec<Member>, crate::cluster::leaf_client::CallError> {
    let info = clients(None).info(Duration::from_secs(1)).await?;
    tracing::info!(%address, shard = info.shard, served = ?info.served, docs = info.num_docs, "static leaf found");
    if info.served.len() <= 1 {
        return Ok(vec![Member {
            lease_id: index as u64 + 1,
            role: Role::Leaf,
            shard: info.shard,
            address: address.to_string(),
            generation: info.generation,
        }]);
    }
    let mut members = Vec::with_capacity(info.served.len());
    for &shard in &info.served {
        let generation = if shard == info.shard {
            info.generation
        } else {
            clients(Some(shard))
                .info(Duration::from_secs(1))
                .await?
                .generation
        };
        members.push(Member {
            lease_id: ((index as u64 + 1) << 20) + u64::from(shard),
            role: Role::Leaf,
            shard,
            address: address.to_string(),
            generation,
        });
    }
    Ok(members)
}

impl Membership for StaticMembership {
    fn watch(&self) -> MemberView {
        self.members.subscribe()
    }

    fn status(&self) -> Vec<MemberStatus> {
        self.known
            .lock()
            .iter()
            .map(|member| MemberStatus {
                member: member.clone(),
                ttl_left: Duration::ZERO,
                since_renewal: Duration::ZERO,
            })
            .collect()
    }
}
