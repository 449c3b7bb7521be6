//! The frontend's side of the cache tier: keys, placement by rendezvous
//! hashing over the live cache servers, and lookups and stores that can
//! never hurt a request.
//!
//! **Invariant:** a cache that is slow, down or answers garbage is a miss,
//! counted, never an error to the client.
//!
//! **Invariant:** a cached answer is served only when it carries a valid
//! HMAC-SHA256, made with the frontends' cache secret, over its key and its
//! value ([`Signer`]): whoever can reach or runs a cache server, but has
//! not the secret, cannot make the frontend serve an answer of their own or
//! one stored under another key. A value that fails the check is a miss,
//! counted in `frontend_cache_rejected_total` and logged at most once a
//! second.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::task::TaskTracker;

use hmac::{Hmac, Mac};
use proto::cache::{CachedAnswer, GetRequest, PutRequest};
use sha2::Sha256;
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

/// The first bytes of a signed value (a format version).
const SIGNED: &[u8; 3] = b"hs1";
/// The length of an HMAC-SHA256 tag.
const TAG_LEN: usize = 32;

/// Signs what the frontend stores in the cache tier and checks what it gets
/// back: `hs1 ‖ HMAC-SHA256(secret, len(key) ‖ key ‖ payload) ‖ payload`.
#[derive(Clone)]
pub struct Signer {
    mac: Hmac<Sha256>,
}

impl Signer {
    /// A signer with the cluster's cache secret (every frontend that shares
    /// the cache tier must have the same one).
    pub fn new(secret: &[u8]) -> Self {
        Signer {
            mac: Hmac::new_from_slice(secret).expect("hmac takes keys of any length"),
        }
    }

    /// A signer with a secret of its own: entries are readable by this
    /// process only.
    pub fn random() -> Self {
        let secret: [u8; 32] = rand::random();
        Signer::new(&secret)
    }

    fn tag(&self, key: &str, payload: &[u8]) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        mac.update(&(key.len() as u64).to_be_bytes());
        mac.update(key.as_bytes());
        mac.update(payload);
        mac
    }

    /// The value to store for `payload` under `key`.
    pub fn seal(&self, key: &str, payload: &[u8]) -> Vec<u8> {
        let tag = self.tag(key, payload).finalize().into_bytes();
        let mut value = Vec::with_capacity(SIGNED.len() + TAG_LEN + payload.len());
        value.extend_from_slice(SIGNED);
        value.extend_from_slice(&tag);
        value.extend_from_slice(payload);
        value
    }

    /// The payload of `value` when it was sealed for `key` with this
    /// secret (the tag is compared in constant time).
    pub fn open<'a>(&self, key: &str, value: &'a [u8]) -> Option<&'a [u8]> {
        let rest = value.strip_prefix(SIGNED.as_slice())?;
        if rest.len() < TAG_LEN {
            return None;
        }
        let (tag, payload) = rest.split_at(TAG_LEN);
        self.tag(key, payload).verify_slice(tag).ok()?;
        Some(payload)
    }
}

pub struct CacheTier {
    routing: Arc<Routing>,
    metrics: Arc<Metrics>,
    /// Budget of a background store.
    store_timeout: Duration,
    /// Background stores, drained on shutdown.
    tasks: TaskTracker,
    signer: Signer,
    /// `frontend_cache_rejected_total`: values that failed the signature.
    rejected: prometheus::IntCounter,
    /// When a rejection was last logged (ms since `epoch`), for the
    /// once-a-second log line.
    last_log: AtomicU64,
    epoch: std::time::Instant,
}

impl CacheTier {
    /// A tier that signs with a secret of its own (see [`CacheTier::with_signer`]).
    pub fn new(routing: Arc<Routing>, metrics: Arc<Metrics>) -> Self {
        let rejected = prometheus::IntCounter::new(
            "frontend_cache_rejected_total",
            "Cached values refused because their signature did not verify (forged, tampered or from another secret); served as misses.",
        )
        .expect("valid metric");
        if let Err(error) = metrics.registry.register(Box::new(rejected.clone())) {
            tracing::debug!(%error, "cache rejection counter already registered");
        }
        CacheTier {
            routing,
            metrics,
            store_timeout: Duration::from_millis(200),
            tasks: TaskTracker::new(),
            signer: Signer::random(),
            rejected,
            last_log: AtomicU64::new(0),
            epoch: std::time::Instant::now(),
        }
    }

    /// Signs and verifies with `signer` (the cluster's cache secret).
    pub fn with_signer(mut self, signer: Signer) -> Self {
        self.signer = signer;
        self
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
            Ok(response) if response.found => {
                let Some(payload) = self.signer.open(key, &response.value) else {
                    self.reject(&node.member.address);
                    return None;
                };
                self.decode(payload, &node.member.address)
            }
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

    /// A value whose signature failed: a miss, counted, logged at most once
    /// a second.
    fn reject(&self, address: &str) {
        self.count("rejected");
        self.rejected.inc();
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX) + 1000;
        let last = self.last_log.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 1000
            && self
                .last_log
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                %address,
                rejected_total = self.rejected.get(),
                "cached value refused: its signature does not verify (forged or tampered entry, or another cache secret)"
            );
        }
    }

    fn decode(&self, payload: &[u8], address: &str) -> Option<CachedAnswer> {
        match CachedAnswer::decode_from(payload) {
            Ok(answer) => {
                self.count("hit");
                Some(answer)
            }
            Err(error) => {
                tracing::warn!(%address, %error, "undecodable cache entry");
                self.count("undecodable");
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
        let value = self.signer.seal(&key, &answer.encode_to_bytes());
        self.tasks.spawn(async move {
            let mut client = node.client.clone();
            let mut request = tonic::Request::new(PutRequest { key, value });
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
    fn only_a_value_sealed_for_the_key_with_the_secret_opens() {
        let signer = Signer::new(b"cluster secret");
        let value = signer.seal("k1", b"answer");
        assert_eq!(signer.open("k1", &value), Some(&b"answer"[..]));
        assert_eq!(signer.open("k2", &value), None, "moved to another key");
        assert_eq!(Signer::new(b"other").open("k1", &value), None);
        let mut tampered = value.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(signer.open("k1", &tampered), None);
        assert_eq!(signer.open("k1", b"answer"), None, "an unsigned value");
        assert_eq!(signer.open("k1", &value[..10]), None);
        // The key's length is bound too: ("ab", "c…") is not ("a", "bc…").
        assert_eq!(signer.open("k", &signer.seal("k1", b"x")), None);
    }

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
