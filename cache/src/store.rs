//! The entries: opaque values by key in moka, bounded in bytes and by a time
//! to live, with the limits that keep one request from taking the cache.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use moka::future::Cache;
use moka::notification::RemovalCause;

use crate::error::{Error, Result};
use crate::metrics::{CacheMetrics, EvictionCause, SizeSource};

/// The longest key accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 4 * 1024;
/// The largest value accepted whatever the capacity, in bytes.
pub const MAX_VALUE_BYTES: usize = 4 * 1024 * 1024;

/// The largest value a cache of `max_bytes` accepts: an eighth of the
/// capacity, so that one value never evicts most of the cache, and at most
/// [`MAX_VALUE_BYTES`].
pub fn max_value_bytes(max_bytes: u64) -> usize {
    usize::try_from(max_bytes / 8)
        .unwrap_or(usize::MAX)
        .min(MAX_VALUE_BYTES)
}

/// The moka cache with its limits and metrics.
#[derive(Clone)]
pub(crate) struct Store {
    cache: Cache<String, Bytes>,
    max_value: usize,
    metrics: CacheMetrics,
}

impl Store {
    pub fn new(max_bytes: u64, ttl: Duration, metrics: CacheMetrics) -> Self {
        let evictions = metrics.evictions.clone();
        let size = evictions.with_label_values(&[EvictionCause::Size.label()]);
        let expired = evictions.with_label_values(&[EvictionCause::Expired.label()]);
        let cache = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|key: &String, value: &Bytes| {
                u32::try_from(key.len() + value.len()).unwrap_or(u32::MAX)
            })
            .time_to_live(ttl)
            .eviction_listener(move |_key: Arc<String>, _value, cause| match cause {
                RemovalCause::Size => size.inc(),
                RemovalCause::Expired => expired.inc(),
                // Replacing a value by a put of the same key is not an
                // eviction, and nothing removes entries explicitly.
                RemovalCause::Replaced | RemovalCause::Explicit => {}
            })
            .build();
        metrics
            .capacity
            .set(i64::try_from(max_bytes).unwrap_or(i64::MAX));
        Self {
            cache,
            max_value: max_value_bytes(max_bytes),
            metrics,
        }
    }

    /// The value of `key`, if present and not expired.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        self.check_key(key)?;
        let value = self.cache.get(key).await;
        match value {
            Some(_) => self.metrics.hits.inc(),
            None => self.metrics.misses.inc(),
        }
        Ok(value)
    }

    /// Stores `value` under `key`, replacing any previous value.
    pub async fn put(&self, key: String, value: Bytes) -> Result<()> {
        self.check_key(&key)?;
        if value.len() > self.max_value {
            return Err(self.rejected(Error::ValueTooLarge {
                len: value.len(),
                limit: self.max_value,
            }));
        }
        self.cache.insert(key, value).await;
        self.metrics.inserts.inc();
        Ok(())
    }

    /// Runs moka's pending maintenance: evictions, expiry notifications and
    /// exact counts.
    pub async fn sync(&self) {
        self.cache.run_pending_tasks().await;
    }

    /// A view of the entry count and weighted size, for metrics.
    pub fn entries(&self) -> Entries {
        Entries(self.cache.clone())
    }

    pub fn max_value(&self) -> usize {
        self.max_value
    }

    pub fn metrics(&self) -> &CacheMetrics {
        &self.metrics
    }

    fn check_key(&self, key: &str) -> Result<()> {
        if key.is_empty() {
            return Err(self.rejected(Error::EmptyKey));
        }
        if key.len() > MAX_KEY_BYTES {
            return Err(self.rejected(Error::KeyTooLarge {
                len: key.len(),
                limit: MAX_KEY_BYTES,
            }));
        }
        Ok(())
    }

    fn rejected(&self, error: Error) -> Error {
        if let Some(rejection) = error.rejection() {
            self.metrics
                .rejections
                .with_label_values(&[rejection.label()])
                .inc();
        }
        tracing::debug!(%error, "cache request rejected");
        error
    }
}

/// Entry count and weighted size of a cache, as moka last counted them.
pub(crate) struct Entries(Cache<String, Bytes>);

impl SizeSource for Entries {
    /// (entries, weighted bytes).
    fn counts(&self) -> (u64, u64) {
        (self.0.entry_count(), self.0.weighted_size())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(max_bytes: u64, ttl: Duration) -> (Store, prometheus::Registry) {
        let registry = prometheus::Registry::new();
        let metrics = CacheMetrics::new(&registry).unwrap();
        (Store::new(max_bytes, ttl, metrics), registry)
    }

    #[test]
    fn value_limit_is_an_eighth_of_capacity_up_to_four_mib() {
        assert_eq!(max_value_bytes(1024 * 1024), 128 * 1024);
        assert_eq!(max_value_bytes(256 * 1024 * 1024), MAX_VALUE_BYTES);
    }

    #[tokio::test]
    async fn put_then_get_counts_hits_misses_and_inserts() {
        let (store, _registry) = store(1 << 20, Duration::from_secs(60));
        assert_eq!(store.get("k").await.unwrap(), None);
        store
            .put("k".into(), Bytes::from_static(b"v"))
            .await
            .unwrap();
        assert_eq!(
            store.get("k").await.unwrap(),
            Some(Bytes::from_static(b"v"))
        );
        store
            .put("k".into(), Bytes::from_static(b"w"))
            .await
            .unwrap();
        assert_eq!(
            store.get("k").await.unwrap(),
            Some(Bytes::from_static(b"w"))
        );
        assert_eq!(store.metrics.hits.get(), 2);
        assert_eq!(store.metrics.misses.get(), 1);
        assert_eq!(store.metrics.inserts.get(), 2);
        store.sync().await;
        assert_eq!(store.entries().counts(), (1, 2));
    }

    #[tokio::test]
    async fn bad_keys_and_values_are_rejected_and_counted() {
        let (store, _registry) = store(1 << 20, Duration::from_secs(60));
        assert!(matches!(store.get("").await, Err(Error::EmptyKey)));
        let long = "k".repeat(MAX_KEY_BYTES + 1);
        assert!(matches!(
            store.put(long.clone(), Bytes::new()).await,
            Err(Error::KeyTooLarge { .. })
        ));
        assert!(matches!(
            store.get(&long).await,
            Err(Error::KeyTooLarge { .. })
        ));
        let big = Bytes::from(vec![0u8; store.max_value() + 1]);
        assert!(matches!(
            store.put("k".into(), big).await,
            Err(Error::ValueTooLarge { .. })
        ));
        // A value right at the limit is fine.
        let fits = Bytes::from(vec![0u8; store.max_value()]);
        store.put("k".into(), fits).await.unwrap();
        let rejected = |reason: &str| store.metrics.rejections.with_label_values(&[reason]).get();
        assert_eq!(rejected("empty_key"), 1);
        assert_eq!(rejected("key_too_large"), 2);
        assert_eq!(rejected("value_too_large"), 1);
    }

    #[tokio::test]
    async fn the_byte_bound_holds_and_evictions_are_counted() {
        let max_bytes = 64 * 1024;
        let (store, _registry) = store(max_bytes, Duration::from_secs(60));
        for i in 0..100 {
            let value = Bytes::from(vec![1u8; 4 * 1024]);
            store.put(format!("key-{i}"), value).await.unwrap();
        }
        store.sync().await;
        let (entries, bytes) = store.entries().counts();
        assert!(
            bytes <= max_bytes,
            "{bytes} bytes over the bound of {max_bytes}"
        );
        assert!(entries < 100);
        let evicted = store.metrics.evictions.with_label_values(&["size"]).get();
        assert!(evicted > 0);
        assert_eq!(entries + evicted, 100);
    }
}
