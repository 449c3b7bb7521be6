//! Every Prometheus metric of a leaf, registered on the registry of one
//! server (several leaves may run in one process, so never the global
//! default registry). Each metric carries a constant `shard` label.

use prometheus::{
    Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

/// Buckets of `leaf_search_duration_seconds`, from 0.5 ms to 2.5 s.
const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The outcome of a search call, the `outcome` label of
/// `leaf_search_requests_total` (and, for the values a term-statistics
/// call can have, of `leaf_term_stats_requests_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SearchOutcome {
    Ok,
    /// Answered with the hits found before the deadline.
    EarlyStop,
    DeadlineExceeded,
    Invalid,
    Error,
    /// Refused by admission (no slot, queue full).
    Rejected,
    Cancelled,
}

impl SearchOutcome {
    pub const ALL: &'static [SearchOutcome] = &[
        SearchOutcome::Ok,
        SearchOutcome::EarlyStop,
        SearchOutcome::DeadlineExceeded,
        SearchOutcome::Invalid,
        SearchOutcome::Error,
        SearchOutcome::Rejected,
        SearchOutcome::Cancelled,
    ];

    /// The outcomes of a term-statistics call (it is never stopped early
    /// nor rejected).
    pub const TERM_STATS: &'static [SearchOutcome] = &[
        SearchOutcome::Ok,
        SearchOutcome::Invalid,
        SearchOutcome::Error,
        SearchOutcome::DeadlineExceeded,
        SearchOutcome::Cancelled,
    ];

    pub fn label(&self) -> &'static str {
        match self {
            SearchOutcome::Ok => "ok",
            SearchOutcome::EarlyStop => "early_stop",
            SearchOutcome::DeadlineExceeded => "deadline_exceeded",
            SearchOutcome::Invalid => "invalid",
            SearchOutcome::Error => "error",
            SearchOutcome::Rejected => "rejected",
            SearchOutcome::Cancelled => "cancelled",
        }
    }
}

/// An injected fault, the `kind` label of `leaf_faults_injected_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultKind {
    Delay,
    Error,
    Hang,
}

impl FaultKind {
    pub const ALL: &'static [FaultKind] = &[FaultKind::Delay, FaultKind::Error, FaultKind::Hang];

    pub fn label(&self) -> &'static str {
        match self {
            FaultKind::Delay => "delay",
            FaultKind::Error => "error",
            FaultKind::Hang => "hang",
        }
    }
}

#[derive(Clone)]
pub struct Metrics {
    /// `leaf_search_requests_total{outcome}`.
    pub search_requests: IntCounterVec,
    /// Time from receiving a search to answering it, for answered calls.
    pub search_duration: Histogram,
    /// Documents covered by searches (all of them unless stopped early).
    pub docs_searched: IntCounter,
    /// Searches cut short by their deadline.
    pub early_stops: IntCounter,
    /// Searches run on the gRPC task instead of the blocking pool.
    pub inline_searches: IntCounter,
    /// Hits answered by searches.
    pub hits: IntCounter,
    /// Hits answered without a snippet (and without loading their body)
    /// because they scored below the request's score floor.
    pub snippets_skipped: IntCounter,
    pub searches_in_flight: IntGauge,
    /// Searches that may run at once, so that saturation is in flight over
    /// slots.
    pub search_slots: IntGauge,
    pub queue_depth: IntGauge,
    /// Searches refused because every slot and queue place was taken.
    pub rejections: IntCounter,
    /// `leaf_term_stats_requests_total{outcome}`.
    pub term_stats_requests: IntCounterVec,
    /// `leaf_faults_injected_total{kind="delay|error|hang"}`.
    pub faults_injected: IntCounterVec,
    pub index_documents: IntGauge,
    pub index_generation: IntGauge,
    pub index_build_duration: Gauge,
    /// Corpus lines skipped while building, 0 for a reopened index.
    pub corpus_bad_lines: IntGauge,
    /// `leaf_generation_swaps_total{outcome="ok|refused"}`: newer index
    /// generations taken into service or refused (`--index-root`).
    pub generation_swaps: IntCounterVec,
}

impl Metrics {
    /// Creates and registers the metrics of shard `shard` on `registry`.
    pub fn new(registry: &Registry, shard: u32) -> Result<Metrics, prometheus::Error> {
        let shard = shard.to_string();
        let opts = |name: &str, help: &str| Opts::new(name, help).const_label("shard", &shard);
        let metrics = Metrics {
            search_requests: IntCounterVec::new(
                opts("leaf_search_requests_total", "search calls by outcome"),
                &["outcome"],
            )?,
            search_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "leaf_search_duration_seconds",
                    "time to answer a search call, answered calls only",
                )
                .const_label("shard", &shard)
                .buckets(DURATION_BUCKETS.to_vec()),
            )?,
            docs_searched: IntCounter::with_opts(opts(
                "leaf_docs_searched_total",
                "documents covered by searches",
            ))?,
            early_stops: IntCounter::with_opts(opts(
                "leaf_early_stops_total",
                "searches cut short by their deadline",
            ))?,
            inline_searches: IntCounter::with_opts(opts(
                "leaf_inline_searches_total",
                "searches short enough to run without a hand-off to the blocking pool",
            ))?,
            hits: IntCounter::with_opts(opts("leaf_hits_total", "hits answered by searches"))?,
            snippets_skipped: IntCounter::with_opts(opts(
                "leaf_snippets_skipped_total",
                "hits answered without a snippet because they scored below the request's score floor",
            ))?,
            searches_in_flight: IntGauge::with_opts(opts(
                "leaf_searches_in_flight",
                "searches running (inline or on the blocking pool)",
            ))?,
            search_slots: IntGauge::with_opts(opts(
                "leaf_search_slots",
                "searches that may run at once on the blocking pool",
            ))?,
            queue_depth: IntGauge::with_opts(opts(
                "leaf_queue_depth",
                "searches waiting for a search slot",
            ))?,
            rejections: IntCounter::with_opts(opts(
                "leaf_rejections_total",
                "searches refused with resource exhausted",
            ))?,
            term_stats_requests: IntCounterVec::new(
                opts(
                    "leaf_term_stats_requests_total",
                    "term stats calls by outcome",
                ),
                &["outcome"],
            )?,
            faults_injected: IntCounterVec::new(
                opts("leaf_faults_injected_total", "faults injected by kind"),
                &["kind"],
            )?,
            index_documents: IntGauge::with_opts(opts(
                "leaf_index_documents",
                "documents in the shard index",
            ))?,
            index_generation: IntGauge::with_opts(opts(
                "leaf_index_generation",
                "generation of the served index",
            ))?,
            index_build_duration: Gauge::with_opts(opts(
                "leaf_index_build_duration_seconds",
                "time to build or reopen the index",
            ))?,
            corpus_bad_lines: IntGauge::with_opts(opts(
                "leaf_corpus_bad_lines",
                "corpus lines skipped while building the index",
            ))?,
            generation_swaps: IntCounterVec::new(
                opts(
                    "leaf_generation_swaps_total",
                    "index generations swapped in or refused, by outcome",
                ),
                &["outcome"],
            )?,
        };
        registry.register(Box::new(metrics.search_requests.clone()))?;
        registry.register(Box::new(metrics.search_duration.clone()))?;
        registry.register(Box::new(metrics.docs_searched.clone()))?;
        registry.register(Box::new(metrics.early_stops.clone()))?;
        registry.register(Box::new(metrics.inline_searches.clone()))?;
        registry.register(Box::new(metrics.hits.clone()))?;
        registry.register(Box::new(metrics.snippets_skipped.clone()))?;
        registry.register(Box::new(metrics.searches_in_flight.clone()))?;
        registry.register(Box::new(metrics.search_slots.clone()))?;
        registry.register(Box::new(metrics.queue_depth.clone()))?;
        registry.register(Box::new(metrics.rejections.clone()))?;
        registry.register(Box::new(metrics.term_stats_requests.clone()))?;
        registry.register(Box::new(metrics.faults_injected.clone()))?;
        registry.register(Box::new(metrics.index_documents.clone()))?;
        registry.register(Box::new(metrics.index_generation.clone()))?;
        registry.register(Box::new(metrics.index_build_duration.clone()))?;
        registry.register(Box::new(metrics.corpus_bad_lines.clone()))?;
        registry.register(Box::new(metrics.generation_swaps.clone()))?;
        for outcome in SwapOutcome::ALL {
            metrics
                .generation_swaps
                .with_label_values(&[outcome.label()]);
        }
        // Every outcome shows up as 0 from the start, so rates work at once.
        for outcome in SearchOutcome::ALL {
            metrics
                .search_requests
                .with_label_values(&[outcome.label()]);
        }
        for outcome in SearchOutcome::TERM_STATS {
            metrics
                .term_stats_requests
                .with_label_values(&[outcome.label()]);
        }
        for kind in FaultKind::ALL {
            metrics.faults_injected.with_label_values(&[kind.label()]);
        }
        Ok(metrics)
    }

    /// Counts one search call with `outcome` (a [`SearchOutcome`] label).
    pub fn search_outcome(&self, outcome: &str) {
        self.search_requests.with_label_values(&[outcome]).inc();
    }

    pub fn fault(&self, kind: FaultKind) {
        self.faults_injected
            .with_label_values(&[kind.label()])
            .inc();
    }
}

/// Increments a gauge for as long as it lives.
pub(crate) struct GaugeGuard(IntGauge);

impl GaugeGuard {
    pub(crate) fn new(gauge: &IntGauge) -> GaugeGuard {
        gauge.inc();
        GaugeGuard(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The outcome of trying a newer generation, the label values of
/// `leaf_generation_swaps_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwapOutcome {
    Ok,
    Refused,
}

impl SwapOutcome {
    pub const ALL: [SwapOutcome; 2] = [SwapOutcome::Ok, SwapOutcome::Refused];

    pub fn label(self) -> &'static str {
        match self {
            SwapOutcome::Ok => "ok",
            SwapOutcome::Refused => "refused",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        let registry = Registry::new();
        let _metrics = Metrics::new(&registry, 3).unwrap();
        let text = svc::metrics::encode(&registry);
        for family in registry.gather() {
            let name = family.name();
            assert!(name.starts_with("leaf_"), "{name}");
            match family.get_field_type() {
                prometheus::proto::MetricType::COUNTER => {
                    assert!(name.ends_with("_total"), "{name}")
                }
                prometheus::proto::MetricType::HISTOGRAM => {
                    assert!(name.ends_with("_seconds"), "{name}")
                }
                _ => assert!(!name.ends_with("_total"), "{name}"),
            }
        }
        assert!(text.contains("leaf_search_requests_total{outcome=\"cancelled\",shard=\"3\"} 0"));
        assert!(text.contains("le=\"0.05\"") && text.contains("le=\"0.1\""));
        // Two leaves in one process use two registries without clashing.
        assert!(Metrics::new(&Registry::new(), 4).is_ok());
        assert!(Metrics::new(&registry, 3).is_err());
    }
}
