//! The frontend's side of the cache tier: keys, placement by rendezvous
//! hashing over the live cache servers, and lookups and stores that can
//! never hurt a request.
//!
//! **Invariant:** a cache that is slow, down or answers garbage is a miss,
//! counted, never an error to the client.

use std::sync::Arc;
use std::time::Duration;
use tokio_util::task::TaskTracker;

use proto::cache::{CachedAnswer, GetRequest, PutRequest};
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::cluster::leaf_client::with_deadline;
use crate::cluster::topology::{CacheNode, Routing};
use crate::metrics::Metrics;

/// The cache key: the normalized query (case and white space folded), k,
/// and the index generation of every shard, so that a shard reindexed to a
/// new generation makes old entries unreachable without a purge.
pub fn cache_key(query: &str, k: u32, generations: &[u64]) -> String {
    let normalized = normalize(query);
    let mut key = String::with_capacity(normalized.len() + 16 + generations.len() * 8);
    key.push_str("v1|k=");
    key.push_str(&k.to_string());
    key.push_str("|g=");
    for (i, generation) in generations.iter().enumerate() {
        if i > 0 {
            key.push(',');
        }
        key.push_str(&generation.to_string());
    }
    key.push_str("|q=");
    key.push_str(&normalized);
    key
}

/// Folds case and runs of white space so equivalent spellings share a key.
pub fn normalize(query: &str) -> String {
    query
        .split_whitespace()
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Picks the cache server for `key` by rendezvous (highest random weight)
/// hashing: a server joining or leaving moves only its own share of keys.
pub fn place<'a>(key: &str, nodes: &'a [Arc<CacheNode>]) -> Option<&'a Arc<CacheNode>> {
    nodes
        .iter()
        .max_by_key(|node| rendezvous_weight(key, &node.member.address))
}

/// The weight of `key` on the server at `address`.
pub fn rendezvous_weight(key: &str, address: &str) -> u64 {
    xxh3_64_with_seed(
        key.as_bytes(),
        xxh3_64_with_seed(address.as_bytes(), 0x5eed),
    )
}

pub struct CacheTier {
    routing: Arc<Routing>,
    metrics: Arc<Metrics>,
    /// Budget of a background store.
    store_timeout: Duration,
    /// Background stores, drained on shutdown.
    tasks: TaskTracker,
}

impl CacheTier {
    pub fn new(routing: Arc<Routing>, metrics: Arc<Metrics>) -> Self {
        CacheTier {
            routing,
            metrics,
            store_timeout: Duration::from_millis(200),
            tasks: TaskTracker::new(),
        }
    }

    /// Tracks background stores on `tasks` (the server's, drained on
    /// shutdown).
    pub fn with_tasks(mut self, tasks: TaskTracker) -> Self {
        self.tasks = tasks;
        self
    }

    /// Looks `key` up within `budget`; anything but a decodable hit is a
    /// miss.
    pub async fn lookup(&self, key: &str, budget: Duration) -> Option<CachedAnswer> {
        let topology = self.routing.snapshot();
        let Some(node) = place(key, &topology.caches) else {
            self.count("no_server");
            return None;
        };
        let mut client = node.client.clone();
        let mut request = tonic::Request::new(GetRequest {
            key: key.to_string(),
        });
        request.set_timeout(budget);
        match with_deadline(budget, client.get(request)).await {
            Ok(response) if response.found => match CachedAnswer::decode_from(&response.value) {
                Ok(answer) => {
                    self.count("hit");
                    Some(answer)
                }
                Err(error) => {
                    tracing::warn!(address = %node.member.address, %error, "undecodable cache entry");
                    self.count("undecodable");
                    None
                }
            },
            Ok(_) => {
                self.count("miss");
                None
            }
            Err(crate::cluster::leaf_client::CallError::Timeout) => {
                self.count("timeout");
                None
            }
            Err(error) => {
                tracing::debug!(address = %node.member.address, %error, "cache lookup failed");
                self.count("error");
                None
            }
        }
    }

    /// Stores a complete answer in the background; the request does not wait.
    pub fn store(&self, key: String, answer: CachedAnswer) {
        let topology = self.routing.snapshot();
        let Some(node) = place(&key, &topology.caches).cloned() else {
            return;
        };
        let metrics = Arc::clone(&self.metrics);
        let budget = self.store_timeout;
        self.tasks.spawn(async move {
            let mut client = node.client.clone();
            let mut request = tonic::Request::new(PutRequest {
                key,
                value: answer.encode_to_bytes(),
            });
            request.set_timeout(budget);
            let result = match with_deadline(budget, client.put(request)).await {
                Ok(_) => "stored",
                Err(error) => {
                    tracing::debug!(address = %node.member.address, %error, "cache store failed");
                    "error"
                }
            };
            metrics.cache_stores.with_label_values(&[result]).inc();
        });
    }

    fn count(&self, result: &str) {
        self.metrics
            .cache_lookups
            .with_label_values(&[result])
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equivalent_spellings_share_a_key() {
        assert_eq!(
            cache_key("  JSON   Parser ", 10, &[1, 2]),
            cache_key("json parser", 10, &[1, 2])
        );
        assert_ne!(
            cache_key("json parser", 10, &[1, 2]),
            cache_key("json parser", 5, &[1, 2])
        );
        assert_ne!(
            cache_key("json parser", 10, &[1, 2]),
            cache_key("json parser", 10, &[1, 3])
        );
    }

    #[test]
    fn rendezvous_moves_only_the_new_servers_share() {
        let keys: Vec<String> = (0..2000).map(|i| format!("key-{i}")).collect();
        let before = ["a:1", "b:1", "c:1"];
        let after = ["a:1", "b:1", "c:1", "d:1"];
        let owner = |key: &str, nodes: &[&str]| {
            nodes
                .iter()
                .max_by_key(|address| rendezvous_weight(key, address))
                .map(|a| a.to_string())
        };
        let mut moved = 0;
        for key in &keys {
            let old = owner(key, &before);
            let new = owner(key, &after);
            if old != new {
                assert_eq!(
                    new.as_deref(),
                    Some("d:1"),
                    "a key moved between old servers"
                );
                moved += 1;
            }
        }
        // About a quarter of the keys move to the new server.
        assert!((300..700).contains(&moved), "{moved}");
    }
}
