//! Every metric the frontend exports, in one place. Names follow the
//! Prometheus conventions (units in names, `_total` counters, `_seconds`
//! histograms); labels are bounded (a shard id or an outcome, never a query).

use std::time::Duration;

use prometheus::{
    histogram_opts, opts, Gauge, Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    Registry,
};

/// Latency buckets, dense around the default 100 ms objective.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

// Label values are exported from startup, so that a dashboard or an alert
// sees a zero rather than no series before the first event of a kind. The
// labels that are states of a layer (shard states, statistics sources,
// recall models, request outcomes, cache results) are that layer's enums
// and are pre-registered by it (`query::preregister`, `http::preregister`);
// the ones below are the plumbing's.

/// How one call to a leaf ended; the `outcome` label of
/// `frontend_leaf_calls_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LeafCallOutcome {
    Ok,
    Timeout,
    Error,
    Rejected,
    /// No replica to call, or the replica could not be reached.
    Unavailable,
    Invalid,
    /// Abandoned because another replica answered first.
    Cancelled,
}

impl LeafCallOutcome {
    pub const ALL: &'static [LeafCallOutcome] = &[
        LeafCallOutcome::Ok,
        LeafCallOutcome::Timeout,
        LeafCallOutcome::Error,
        LeafCallOutcome::Rejected,
        LeafCallOutcome::Unavailable,
        LeafCallOutcome::Invalid,
        LeafCallOutcome::Cancelled,
    ];

    pub fn label(&self) -> &'static str {
        match self {
            LeafCallOutcome::Ok => "ok",
            LeafCallOutcome::Timeout => "timeout",
            LeafCallOutcome::Error => "error",
            LeafCallOutcome::Rejected => "rejected",
            LeafCallOutcome::Unavailable => "unavailable",
            LeafCallOutcome::Invalid => "invalid",
            LeafCallOutcome::Cancelled => "cancelled",
        }
    }
}

const CACHE_LOOKUP_RESULTS: &[&str] = &[
    "hit",
    "miss",
    "rejected",
    "error",
    "timeout",
    "undecodable",
    "no_server",
];
const CACHE_STORE_RESULTS: &[&str] = &["stored", "skipped_partial", "skipped_generation", "error"];

/// Rollout durations: from seconds (a poll interval) to an hour.
const ROLLOUT_BUCKETS: &[f64] = &[
    0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
    pub coverage: Histogram,
    pub estimated_recall: Histogram,
    pub overhead: Histogram,
    /// Time of each stage of a search: canary, stats, gather.
    pub stages: HistogramVec,
    pub leaf_calls: IntCounterVec,
    pub leaf_duration: HistogramVec,
    pub shard_outcomes: IntCounterVec,
    pub hedges: IntCounterVec,
    pub hedge_wins: IntCounterVec,
    pub hedges_denied: IntCounter,
    /// `SearchShards` calls sent: several shards of one process in one call.
    pub shard_batches: IntCounter,
    /// Shards searched through those calls.
    pub shard_batch_shards: IntCounter,
    /// `frontend_side_calls_total{call, role}`: leaf calls on the query
    /// path besides the fan-out's searches (stats, canary, probe), by role
    /// (primary, hedge, retry).
    pub side_calls: IntCounterVec,
    pub probes: IntCounter,
    pub probations: IntCounter,
    pub cache_lookups: IntCounterVec,
    pub cache_stores: IntCounterVec,
    pub cache_coalesced: IntCounter,
    /// `frontend_canaries_total{outcome}`: canary requests by verdict.
    pub canaries: IntCounterVec,
    /// Requests refused because their query's canary died.
    pub queries_rejected: IntCounter,
    pub term_stats: IntCounterVec,
    pub recall_models: IntCounterVec,
    /// `frontend_score_floors_total{result}`: fan-outs by whether they sent
    /// the leaves a score floor (see `query::root::FloorResult`).
    pub score_floors: IntCounterVec,
    pub admission_limit: IntGauge,
    /// The latency objective as configured, for dashboards to draw.
    pub latency_objective: Gauge,
    pub admission_in_flight: IntGauge,
    pub admission_queue: IntGauge,
    pub admission_rejections: IntCounterVec,
    pub shards_live: prometheus::IntGaugeVec,
    pub replica_generation: prometheus::GaugeVec,
    pub shard_generations: prometheus::IntGaugeVec,
    pub rollout_in_progress: IntGauge,
    pub rollout_duration: Histogram,
    /// What the frontend's bounded in-memory caches hold (set from the
    /// caches by `Root::export_memory`), so that memory growth can be told
    /// apart from caches filling up to their bounds.
    pub term_stats_cache_bytes: IntGauge,
    pub term_stats_cache_terms: IntGauge,
    pub term_stats_cache_queries: IntGauge,
    pub canary_known_good: IntGauge,
}

impl Metrics {
    pub fn new(registry: Registry) -> prometheus::Result<Self> {
        let requests = IntCounterVec::new(
            opts!(
                "frontend_search_requests_total",
                "Search requests answered, by outcome (complete, partial, bad_request, unavailable, overloaded, error)."
            ),
            &["outcome"],
        )?;
        let duration = HistogramVec::new(
            histogram_opts!(
                "frontend_search_duration_seconds",
                "Time from receiving a search request to its answer, by cache result.",
                LATENCY_BUCKETS.to_vec()
            ),
            &["cache"],
        )?;
        let coverage = Histogram::with_opts(histogram_opts!(
            "frontend_search_coverage_ratio",
            "Fraction of documents searched per answer.",
            vec![0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0]
        ))?;
        let estimated_recall = Histogram::with_opts(histogram_opts!(
            "frontend_search_estimated_recall_ratio",
            "Estimated recall@k of each answer (1 when complete).",
            vec![0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0]
        ))?;
        let overhead = Histogram::with_opts(histogram_opts!(
            "frontend_overhead_seconds",
            "Frontend latency minus the slowest leaf call it waited on.",
            vec![0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05]
        ))?;
        let stages = HistogramVec::new(
            histogram_opts!(
                "frontend_stage_duration_seconds",
                "Time of each stage of a search that reached the leaves: canary, stats, gather.",
                LATENCY_BUCKETS.to_vec()
            ),
            &["stage"],
        )?;
        let leaf_calls = IntCounterVec::new(
            opts!(
                "frontend_leaf_calls_total",
                "Calls to leaf replicas by shard and outcome (ok, timeout, error, rejected, unavailable, invalid, cancelled)."
            ),
            &["shard", "outcome"],
        )?;
        let leaf_duration = HistogramVec::new(
            histogram_opts!(
                "frontend_leaf_call_duration_seconds",
                "Duration of calls to leaf replicas by shard, losers and timeouts included.",
                LATENCY_BUCKETS.to_vec()
            ),
            &["shard"],
        )?;
        let shard_outcomes = IntCounterVec::new(
            opts!(
                "frontend_shard_results_total",
                "How each shard's part of a query ended (answered, partial, timed_out, failed, unavailable)."
            ),
            &["shard", "state"],
        )?;
        let hedges = IntCounterVec::new(
            opts!("frontend_hedges_total", "Hedged requests sent, by shard."),
            &["shard"],
        )?;
        let hedge_wins = IntCounterVec::new(
            opts!(
                "frontend_hedge_wins_total",
                "Hedged requests that answered first, by shard."
            ),
            &["shard"],
        )?;
        let hedges_denied = IntCounter::new(
            "frontend_hedges_denied_total",
            "Hedges not sent because the hedge budget was spent.",
        )?;
        let shard_batches = IntCounter::new(
            "frontend_shard_batches_total",
            "Calls that carried several shards of one leaf process at once (SearchShards, TermStatsShards).",
        )?;
        let shard_batch_shards = IntCounter::new(
            "frontend_shard_batch_shards_total",
            "Shards carried by those calls.",
        )?;
        let probes = IntCounter::new(
            "frontend_probation_probes_total",
            "Calls sent to a replica on probation to see whether it recovered.",
        )?;
        let probations = IntCounter::new(
            "frontend_probations_total",
            "Replicas put on probation for being much slower than their peers.",
        )?;
        let cache_lookups = IntCounterVec::new(
            opts!(
                "frontend_cache_lookups_total",
                "Result cache lookups by result (hit, miss, rejected, error, timeout, undecodable, no_server)."
            ),
            &["result"],
        )?;
        let cache_stores = IntCounterVec::new(
            opts!(
                "frontend_cache_stores_total",
                "Result cache stores by result (stored, skipped_partial, skipped_generation, error)."
            ),
            &["result"],
        )?;
        let cache_coalesced = IntCounter::new(
            "frontend_cache_coalesced_total",
            "Requests answered by joining an identical fan-out already in flight.",
        )?;
        let side_calls = IntCounterVec::new(
            opts!(
                "frontend_side_calls_total",
                "Leaf calls on the query path besides the fan-out's searches, by call (stats, canary, probe) and role (primary, hedge, retry)."
            ),
            &["call", "role"],
        )?;
        let canaries = IntCounterVec::new(
            opts!(
                "frontend_canaries_total",
                "Canary requests of first-seen queries by outcome (answered, ordinary_error, died)."
            ),
            &["outcome"],
        )?;
        let queries_rejected = IntCounter::new(
            "frontend_queries_rejected_total",
            "Requests refused with query_rejected because their query's canary died.",
        )?;
        let term_stats = IntCounterVec::new(
            opts!(
                "frontend_term_stats_total",
                "Global term statistics per query by source (warm, fetched, partial, local)."
            ),
            &["source"],
        )?;
        let recall_models = IntCounterVec::new(
            opts!(
                "frontend_recall_estimates_total",
                "Partial answers by the model that estimated their recall (champion, share, documents)."
            ),
            &["model"],
        )?;
        let score_floors = IntCounterVec::new(
            opts!(
                "frontend_score_floors_total",
                "Fan-outs by score floor sent to the leaves (sent, none, missed: a complete answer held a hit below it and was fetched again without)."
            ),
            &["result"],
        )?;
        let admission_limit = IntGauge::new(
            "frontend_admission_limit",
            "Current adaptive concurrency limit.",
        )?;
        let latency_objective = Gauge::new(
            "frontend_latency_objective_seconds",
            "The latency objective that admission control holds (--latency-target).",
        )?;
        let admission_in_flight = IntGauge::new(
            "frontend_admission_in_flight",
            "Admitted search requests in flight.",
        )?;
        let admission_queue = IntGauge::new(
            "frontend_admission_queue_depth",
            "Search requests waiting for admission.",
        )?;
        let admission_rejections = IntCounterVec::new(
            opts!(
                "frontend_admission_rejections_total",
                "Search requests shed by admission control, by reason (queue_full, queue_timeout)."
            ),
            &["reason"],
        )?;
        let shards_live = prometheus::IntGaugeVec::new(
            opts!(
                "frontend_shard_replicas_live",
                "Live replicas (holding a lease) per shard."
            ),
            &["shard"],
        )?;
        let replica_generation = prometheus::GaugeVec::new(
            opts!(
                "frontend_replica_generation",
                "Index generation each live leaf replica serves, as its lease announces it."
            ),
            &["shard", "replica"],
        )?;
        let shard_generations = prometheus::IntGaugeVec::new(
            opts!(
                "frontend_shard_generations_in_service",
                "Distinct index generations among a shard's live replicas (2 during a rolling swap)."
            ),
            &["shard"],
        )?;
        let rollout_in_progress = IntGauge::new(
            "frontend_rollout_in_progress",
            "1 while some live replica serves an older generation than the newest announced.",
        )?;
        let rollout_duration = Histogram::with_opts(
            histogram_opts!(
                "frontend_rollout_duration_seconds",
                "Rollouts of an index generation, from the first replica announcing it to the last live replica serving it."
            )
            .buckets(ROLLOUT_BUCKETS.to_vec()),
        )?;
        let term_stats_cache_bytes = IntGauge::new(
            "frontend_term_stats_cache_bytes",
            "Bytes of statistics held by the term-statistics cache, per term and per assembled query (bounded by --stats-cache-mib).",
        )?;
        let term_stats_cache_terms = IntGauge::new(
            "frontend_term_stats_cache_terms",
            "(field, term) pairs held by the term-statistics cache.",
        )?;
        let term_stats_cache_queries = IntGauge::new(
            "frontend_term_stats_cache_queries",
            "Queries whose term lists the term-statistics cache holds (at most 100000).",
        )?;
        let canary_known_good = IntGauge::new(
            "frontend_canary_known_good_queries",
            "Known-good query fingerprints remembered by the canary (bounded by --canary-known-good).",
        )?;
        let metrics = Metrics {
            registry,
            requests,
            duration,
            coverage,
            estimated_recall,
            overhead,
            stages,
            leaf_calls,
            leaf_duration,
            shard_outcomes,
            hedges,
            hedge_wins,
            hedges_denied,
            shard_batches,
            shard_batch_shards,
            side_calls,
            probes,
            probations,
            cache_lookups,
            cache_stores,
            cache_coalesced,
            canaries,
            queries_rejected,
            term_stats,
            recall_models,
            score_floors,
            admission_limit,
            latency_objective,
            admission_in_flight,
            admission_queue,
            admission_rejections,
            shards_live,
            replica_generation,
            shard_generations,
            rollout_in_progress,
            rollout_duration,
            term_stats_cache_bytes,
            term_stats_cache_terms,
            term_stats_cache_queries,
            canary_known_good,
        };
        let r = &metrics.registry;
        r.register(Box::new(metrics.requests.clone()))?;
        r.register(Box::new(metrics.duration.clone()))?;
        r.register(Box::new(metrics.coverage.clone()))?;
        r.register(Box::new(metrics.estimated_recall.clone()))?;
        r.register(Box::new(metrics.overhead.clone()))?;
        r.register(Box::new(metrics.stages.clone()))?;
        r.register(Box::new(metrics.leaf_calls.clone()))?;
        r.register(Box::new(metrics.leaf_duration.clone()))?;
        r.register(Box::new(metrics.shard_outcomes.clone()))?;
        r.register(Box::new(metrics.hedges.clone()))?;
        r.register(Box::new(metrics.hedge_wins.clone()))?;
        r.register(Box::new(metrics.hedges_denied.clone()))?;
        r.register(Box::new(metrics.shard_batches.clone()))?;
        r.register(Box::new(metrics.shard_batch_shards.clone()))?;
        r.register(Box::new(metrics.side_calls.clone()))?;
        r.register(Box::new(metrics.probes.clone()))?;
        r.register(Box::new(metrics.probations.clone()))?;
        r.register(Box::new(metrics.cache_lookups.clone()))?;
        r.register(Box::new(metrics.cache_stores.clone()))?;
        r.register(Box::new(metrics.cache_coalesced.clone()))?;
        r.register(Box::new(metrics.canaries.clone()))?;
        r.register(Box::new(metrics.queries_rejected.clone()))?;
        r.register(Box::new(metrics.term_stats.clone()))?;
        r.register(Box::new(metrics.recall_models.clone()))?;
        r.register(Box::new(metrics.score_floors.clone()))?;
        r.register(Box::new(metrics.admission_limit.clone()))?;
        r.register(Box::new(metrics.latency_objective.clone()))?;
        r.register(Box::new(metrics.admission_in_flight.clone()))?;
        r.register(Box::new(metrics.admission_queue.clone()))?;
        r.register(Box::new(metrics.admission_rejections.clone()))?;
        r.register(Box::new(metrics.shards_live.clone()))?;
        r.register(Box::new(metrics.replica_generation.clone()))?;
        r.register(Box::new(metrics.shard_generations.clone()))?;
        r.register(Box::new(metrics.rollout_in_progress.clone()))?;
        r.register(Box::new(metrics.rollout_duration.clone()))?;
        r.register(Box::new(metrics.term_stats_cache_bytes.clone()))?;
        r.register(Box::new(metrics.term_stats_cache_terms.clone()))?;
        r.register(Box::new(metrics.term_stats_cache_queries.clone()))?;
        r.register(Box::new(metrics.canary_known_good.clone()))?;
        for result in CACHE_LOOKUP_RESULTS {
            metrics.cache_lookups.with_label_values(&[*result]);
        }
        for result in CACHE_STORE_RESULTS {
            metrics.cache_stores.with_label_values(&[*result]);
        }
        Ok(metrics)
    }

    /// Sets what the configuration fixes: the latency objective, and every
    /// per-shard series of its shards, exported from the start as zeros so
    /// that per-shard panels and rates never miss a series merely because
    /// nothing happened to a shard yet.
    pub fn init(&self, shards: u32, latency_objective: Duration) {
        self.latency_objective.set(latency_objective.as_secs_f64());
        for shard in 0..shards {
            let shard = shard.to_string();
            for outcome in LeafCallOutcome::ALL {
                self.leaf_calls
                    .with_label_values(&[&shard, outcome.label()]);
            }
            self.leaf_duration.with_label_values(&[&shard]);
            self.hedges.with_label_values(&[&shard]);
            self.hedge_wins.with_label_values(&[&shard]);
            self.shards_live.with_label_values(&[&shard]);
            self.shard_generations.with_label_values(&[&shard]);
        }
    }

    pub fn leaf_call(&self, shard: u32, outcome: LeafCallOutcome, latency: Duration) {
        let shard = shard.to_string();
        self.leaf_calls
            .with_label_values(&[&shard, outcome.label()])
            .inc();
        if outcome != LeafCallOutcome::Unavailable {
            self.leaf_duration
                .with_label_values(&[&shard])
                .observe(latency.as_secs_f64());
        }
    }

    pub fn hedge_sent(&self, shard: u32) {
        self.hedges.with_label_values(&[&shard.to_string()]).inc();
    }

    pub fn hedge_won(&self, shard: u32) {
        self.hedge_wins
            .with_label_values(&[&shard.to_string()])
            .inc();
    }

    pub fn hedge_denied(&self) {
        self.hedges_denied.inc();
    }

    pub fn probe(&self) {
        self.probes.inc();
    }

    pub fn probation_started(&self) {
        self.probations.inc();
    }
}
