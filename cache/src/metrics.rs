//! The cache server's Prometheus metrics, on its own registry (never the
//! global default).
//!
//! `cache_entries` and `cache_bytes` are read from moka when scraped; moka's
//! counts lag until its pending maintenance runs, which the housekeeping task
//! in `lib.rs` does every second.

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts};

/// Why an entry left the cache, the `cause` label of
/// `cache_evictions_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum EvictionCause {
    /// Over the byte bound.
    Size,
    /// Past the time to live.
    Expired,
}

impl EvictionCause {
    pub const ALL: &'static [EvictionCause] = &[EvictionCause::Size, EvictionCause::Expired];

    pub fn label(&self) -> &'static str {
        match self {
            EvictionCause::Size => "size",
            EvictionCause::Expired => "expired",
        }
    }
}

/// Why a request was refused as invalid, the `reason` label of
/// `cache_rejections_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Rejection {
    EmptyKey,
    KeyTooLarge,
    ValueTooLarge,
}

impl Rejection {
    pub const ALL: &'static [Rejection] = &[
        Rejection::EmptyKey,
        Rejection::KeyTooLarge,
        Rejection::ValueTooLarge,
    ];

    pub fn label(&self) -> &'static str {
        match self {
            Rejection::EmptyKey => "empty_key",
            Rejection::KeyTooLarge => "key_too_large",
            Rejection::ValueTooLarge => "value_too_large",
        }
    }
}

/// A cache call, the `op` label of `cache_request_duration_seconds`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Op {
    Get,
    Put,
}

impl Op {
    pub const ALL: &'static [Op] = &[Op::Get, Op::Put];

    pub fn label(&self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Put => "put",
        }
    }
}

/// What the size gauges read on every scrape: (entries, weighted bytes).
/// The store implements it, so that this module knows nothing of moka.
pub(crate) trait SizeSource: Send + Sync + 'static {
    fn counts(&self) -> (u64, u64);
}

/// Latency buckets of a cache call: tens of microseconds to 100 ms.
const DURATION_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
];

#[derive(Clone)]
pub(crate) struct CacheMetrics {
    pub hits: IntCounter,
    pub misses: IntCounter,
    pub inserts: IntCounter,
    pub evictions: IntCounterVec,
    pub rejections: IntCounterVec,
    pub duration: HistogramVec,
    pub capacity: IntGauge,
}

impl CacheMetrics {
    pub fn new(registry: &prometheus::Registry) -> prometheus::Result<Self> {
        let metrics = Self {
            hits: IntCounter::new("cache_hits_total", "Gets that found their key.")?,
            misses: IntCounter::new("cache_misses_total", "Gets that did not find their key.")?,
            inserts: IntCounter::new("cache_inserts_total", "Values stored by a put.")?,
            evictions: IntCounterVec::new(
                Opts::new(
                    "cache_evictions_total",
                    "Entries evicted, by cause (size: over the byte bound, expired: past the ttl).",
                ),
                &["cause"],
            )?,
            rejections: IntCounterVec::new(
                Opts::new(
                    "cache_rejections_total",
                    "Requests refused as invalid, by reason.",
                ),
                &["reason"],
            )?,
            duration: HistogramVec::new(
                HistogramOpts::new(
                    "cache_request_duration_seconds",
                    "Time to serve a cache call, by operation.",
                )
                .buckets(DURATION_BUCKETS.to_vec()),
                &["op"],
            )?,
            capacity: IntGauge::new("cache_capacity_bytes", "The byte bound of the cache.")?,
        };
        registry.register(Box::new(metrics.hits.clone()))?;
        registry.register(Box::new(metrics.misses.clone()))?;
        registry.register(Box::new(metrics.inserts.clone()))?;
        registry.register(Box::new(metrics.evictions.clone()))?;
        registry.register(Box::new(metrics.rejections.clone()))?;
        registry.register(Box::new(metrics.duration.clone()))?;
        registry.register(Box::new(metrics.capacity.clone()))?;
        // Export every series from the start, so that rates see zeros rather
        // than absent series.
        for cause in EvictionCause::ALL {
            metrics.evictions.with_label_values(&[cause.label()]);
        }
        for reason in Rejection::ALL {
            metrics.rejections.with_label_values(&[reason.label()]);
        }
        for op in Op::ALL {
            metrics.duration.with_label_values(&[op.label()]);
        }
        Ok(metrics)
    }
}

/// `cache_entries` and `cache_bytes`, read from moka on every scrape.
pub(crate) struct SizeCollector {
    entries: IntGauge,
    bytes: IntGauge,
    source: Box<dyn SizeSource>,
}

impl SizeCollector {
    pub fn register(
        registry: &prometheus::Registry,
        source: impl SizeSource,
    ) -> prometheus::Result<()> {
        let collector = Self {
            entries: IntGauge::new("cache_entries", "Entries in the cache.")?,
            bytes: IntGauge::new(
                "cache_bytes",
                "Weighted size of the cache: key plus value bytes of every entry.",
            )?,
            source: Box::new(source),
        };
        registry.register(Box::new(collector))
    }
}

impl Collector for SizeCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.entries
            .desc()
            .into_iter()
            .chain(self.bytes.desc())
            .collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let (entries, bytes) = self.source.counts();
        self.entries.set(i64::try_from(entries).unwrap_or(i64::MAX));
        self.bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
        let mut families = self.entries.collect();
        families.extend(self.bytes.collect());
        families
    }
}
