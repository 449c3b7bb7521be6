//! Clusters whose membership lives on etcd: one real etcd server on
//! loopback (`lease::testing::EtcdServer`), several frontends following it,
//! and leaves holding their leases there through the same `--frontend`
//! endpoint they would give a frontend (`etcd://127.0.0.1:PORT`).
//!
//! ```no_run
//! # async fn demo() {
//! use std::time::Duration;
//! let mut cluster = tests::etcd::EtcdCluster::start(2, 2, Duration::from_secs(2)).await;
//! cluster.add_leaf(0).await;
//! cluster.etcd.pause();
//! # }
//! ```

use std::sync::Arc;
use std::time::Duration;

use frontend_core::{Frontend, FrontendConfig};
use leaf::{CorpusSource, Document, LeafConfig, LeafHandle, LeaseConfig};
use lease::testing::EtcdServer;
use tokio_util::sync::CancellationToken;

use crate::{bind, decode, init_logs, small_corpus};

/// An etcd server, frontends that route by it, and leaves that join it.
pub struct EtcdCluster {
    pub etcd: EtcdServer,
    frontends: Vec<Frontend>,
    /// Leaves in the order they were added; `None` once killed or stopped.
    leaves: Vec<Option<LeafHandle>>,
    documents: Arc<Vec<Document>>,
    shards: u32,
    lease_ttl: Duration,
    client: reqwest::Client,
    shutdown: CancellationToken,
}

impl EtcdCluster {
    /// Starts etcd and `frontends` frontends for `shards` shards, with no
    /// leaf yet; leaves ask for `lease_ttl`.
    pub async fn start(shards: u32, frontends: usize, lease_ttl: Duration) -> EtcdCluster {
        init_logs();
        let etcd = EtcdServer::start().await;
        let shutdown = CancellationToken::new();
        let mut started = Vec::new();
        for _ in 0..frontends {
            let mut config = FrontendConfig::new(shards);
            config.membership = Some(etcd.url());
            config.cache = false;
            let frontend = Frontend::start(config, bind().await, None, shutdown.child_token())
                .await
                .expect("frontend starts");
            started.push(frontend);
        }
        EtcdCluster {
            etcd,
            frontends: started,
            leaves: Vec::new(),
            documents: small_corpus(2000),
            shards,
            lease_ttl,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client"),
            shutdown,
        }
    }

    /// Starts a leaf of `shard` holding its lease on etcd; returns its index.
    pub async fn add_leaf(&mut self, shard: u32) -> usize {
        let mut config = LeafConfig::new(shard, self.shards);
        config.lease = Some(LeaseConfig {
            frontends: vec![self.etcd.url()],
            token: None,
            ttl: self.lease_ttl,
        });
        let leaf = leaf::start(
            config,
            CorpusSource::Documents(Arc::clone(&self.documents)),
            bind().await,
            None,
            self.shutdown.child_token(),
        )
        .await
        .expect("leaf starts");
        self.leaves.push(Some(leaf));
        self.leaves.len() - 1
    }

    pub fn leaf(&self, index: usize) -> &LeafHandle {
        self.leaves[index].as_ref().expect("leaf running")
    }

    /// Crashes a leaf: its lease is left to expire on etcd.
    pub fn kill_leaf(&mut self, index: usize) {
        if let Some(leaf) = self.leaves[index].take() {
            leaf.kill();
        }
    }

    pub fn frontend(&self, index: usize) -> &Frontend {
        &self.frontends[index]
    }

    pub fn frontends(&self) -> usize {
        self.frontends.len()
    }

    /// Live replicas per shard as frontend `index` routes now.
    pub fn routed(&self, index: usize) -> Vec<usize> {
        crate::routed_replicas(self.frontend(index))
    }

    /// `(shard, address, lease id)` of every replica frontend `index` routes
    /// to, sorted.
    pub fn routed_members(&self, index: usize) -> Vec<(u32, String, u64)> {
        let mut members: Vec<(u32, String, u64)> = self
            .frontend(index)
            .root
            .fanout
            .routing()
            .snapshot()
            .shards
            .iter()
            .flatten()
            .map(|r| (r.member.shard, r.member.address.clone(), r.member.lease_id))
            .collect();
        members.sort();
        members
    }

    /// Whether frontend `index` reaches etcd, by its
    /// `lease_membership_connected` gauge.
    pub fn membership_connected(&self, index: usize) -> bool {
        self.frontend(index)
            .metrics
            .registry
            .gather()
            .iter()
            .filter(|family| family.name() == "lease_membership_connected")
            .flat_map(|family| family.get_metric().iter())
            .any(|metric| metric.get_gauge().value() == 1.0)
    }

    /// `GET path` on frontend `index`, as JSON.
    pub async fn get_json(&self, index: usize, path: &str) -> (u16, serde_json::Value) {
        let frontend = self.frontend(index);
        let addr = if frontend_core::http::ADMIN_PATHS.contains(&path) {
            frontend.admin_addr.expect("admin listener")
        } else {
            frontend.http_addr
        };
        let url = format!("http://{addr}{path}");
        let response = self.client.get(url).send().await.expect("request sent");
        decode(response).await
    }

    /// Polls `condition` every 20 ms until it holds, or panics after `limit`.
    pub async fn wait_until(&self, limit: Duration, what: &str, condition: impl Fn(&Self) -> bool) {
        let started = tokio::time::Instant::now();
        while !condition(self) {
            assert!(
                started.elapsed() < limit,
                "timed out after {limit:?} waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
