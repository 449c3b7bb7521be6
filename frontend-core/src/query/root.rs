//! The root search: everything between an admitted request and its answer.
//!
//! cache lookup (own small budget) → canary of a first-seen query (one
//! replica of one shard) → coalesce identical misses → global term
//! statistics (warm cache or one round trip) → fan-out under the deadline →
//! merge → answer, and store complete answers in the cache tier.
//!
//! **Invariant:** a partial answer is never stored in the cache, and an
//! answer served from the cache is one that was complete.
//!
//! **Generations.** The cache key names each shard's generation as the
//! routing table has it at lookup: the newest among its live replicas (or
//! newer, seen in an answer before the lease announced it; see
//! [`crate::cluster::topology::Topology::generations`]). So once any replica
//! of a shard has moved on, answers of the older generation are unreachable.
//! An answer is stored only under the generations that actually answered:
//! during a rolling swap, a fan-out that reached a replica still on the old
//! generation is served but not stored (`skipped_generation`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use proto::cache::{CachedAnswer, CachedHit};
use proto::leaf::SearchRequest;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use crate::cluster::cache_client::CacheTier;
use crate::cluster::topology::Topology;
use crate::metrics::Metrics;
use crate::query::answer::{Answer, AnswerHit, CacheResult, SearchParams};
use crate::query::canary::{Canaries, CanaryConfig};
use crate::query::coalesce::{Coalescer, Window};
use crate::query::error::QueryError;
use crate::query::fanout::{Fanout, ShardOutcome};
use crate::query::merge::{self, Coverage, Merged, StageTimes};
use crate::query::term_stats::{QueryStats, TermStatsCache};

/// Figures of the request path that are not about fan-out.
#[derive(Clone, Debug)]
pub struct RootConfig {
    /// Time kept back from the deadline for merging and answering.
    pub merge_margin_max: Duration,
    /// The cache lookup's share of the deadline…
    pub cache_budget_fraction: f64,
    /// …capped at this.
    pub cache_budget_max: Duration,
    /// The term statistics round trip's share of the deadline.
    pub stats_budget_fraction: f64,
    /// Send corpus-wide term statistics with every query.
    pub global_stats: bool,
    /// Wait for every shard, ignoring the deadline (a baseline for
    /// benchmarks; never use in production).
    pub wait_for_all: bool,
    /// Bytes of statistics kept: per term (frequencies and champion lists),
    /// and a quarter for assembled queries.
    pub stats_cache_bytes: u64,
    /// Queries whose (field, term) lists the statistics cache keeps (a
    /// query's list names the pairs it needs; the pairs are bounded by
    /// `stats_cache_bytes`).
    pub stats_cache_queries: u64,
    /// Canary requests of first-seen queries.
    pub canary: CanaryConfig,
    /// Log every search that reached the leaves and took longer than this,
    /// with the time of each stage (a slow-query log); `None`: off.
    pub slow_query: Option<Duration>,
}

impl Default for RootConfig {
    fn default() -> Self {
        RootConfig {
            merge_margin_max: Duration::from_millis(3),
            cache_budget_fraction: 0.1,
            cache_budget_max: Duration::from_millis(10),
            stats_budget_fraction: 0.3,
            global_stats: true,
            wait_for_all: false,
            stats_cache_bytes: crate::query::term_stats::DEFAULT_CACHE_BYTES,
            stats_cache_queries: crate::query::term_stats::DEFAULT_CACHE_QUERIES,
            canary: CanaryConfig::default(),
            slow_query: None,
        }
    }
}

pub struct Root {
    pub config: RootConfig,
    pub fanout: Arc<Fanout>,
    pub metrics: Arc<Metrics>,
    pub cache: Option<Arc<CacheTier>>,
    pub stats: Arc<TermStatsCache>,
    /// Last known document count per shard, for coverage of missing shards.
    known_docs: Arc<Vec<AtomicU64>>,
    /// Fan-outs in flight by cache key, so identical misses share one; each
    /// result carries the window it ran in.
    in_flight: Coalescer<(Window, Arc<Merged>)>,
    /// Coalesced fan-outs run as tasks of their own, drained on shutdown.
    tasks: TaskTracker,
    /// First-seen queries go to one replica before they go to all.
    canaries: Arc<Canaries>,
}

impl Root {
    pub fn new(
        config: RootConfig,
        fanout: Arc<Fanout>,
        cache: Option<Arc<CacheTier>>,
        stats: Arc<TermStatsCache>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let shards = fanout.routing().shards() as usize;
        let canaries = Arc::new(Canaries::new(config.canary.clone(), Arc::clone(&metrics)));
        Root {
            config,
            fanout,
            metrics,
            cache,
            stats,
            known_docs: Arc::new((0..shards).map(|_| AtomicU64::new(0)).collect()),
            in_flight: Coalescer::default(),
            tasks: TaskTracker::new(),
            canaries,
        }
    }

    /// Runs coalesced fan-outs on `tasks` (the server's, drained on
    /// shutdown).
    pub fn with_tasks(mut self, tasks: TaskTracker) -> Self {
        self.tasks = tasks;
        self
    }

    /// Sets the gauges of what the bounded in-memory caches hold (term
    /// statistics, known-good fingerprints); with `settle`, exact as of
    /// now (see `TermStatsCache::usage`), for a scrape.
    pub fn export_memory(&self, settle: bool) {
        let usage = self.stats.usage(settle);
        let gauge = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
        self.metrics.term_stats_cache_bytes.set(gauge(usage.bytes));
        self.metrics.term_stats_cache_terms.set(gauge(usage.terms));
        self.metrics
            .term_stats_cache_queries
            .set(gauge(usage.queries));
        self.metrics
            .canary_known_good
            .set(gauge(self.canaries.known_good(settle)));
    }

    /// Answers one validated request before its deadline.
    pub async fn search(&self, params: &SearchParams) -> Result<Answer, QueryError> {
        let started = Instant::now();
        let timeout = Duration::from_millis(params.timeout_ms);
        let deadline = started + timeout;
        let topology = self.fanout.routing().snapshot();
        let generations = topology.generations();
        let key = crate::cluster::cache_client::cache_key(&params.q, params.k, &generations);

        let cache = self.cache.as_ref().filter(|_| !params.nocache);
        let mut cache_result = CacheResult::Bypass;
        if let Some(cache) = cache {
            let budget = timeout
                .mul_f64(self.config.cache_budget_fraction)
                .min(self.config.cache_budget_max);
            if let Some(answer) = cache.lookup(&key, budget).await {
                if answer.shards_total as usize == generations.len() {
                    return Ok(self.answer_from_cache(answer, &generations, started));
                }
            }
            cache_result = CacheResult::Miss;
        }

        let canary_started = Instant::now();
        let canary = self.canary(params, &topology, deadline).await?;
        let canary_took = canary.then(|| canary_started.elapsed());
        if let Some(took) = canary_took {
            self.metrics
                .stages
                .with_label_values(&["canary"])
                .observe(took.as_secs_f64());
        }
        let merged = if cache.is_some() {
            self.coalesced(key.clone(), params, Window::new(started, deadline))
                .await?
        } else {
            Arc::new(self.fan_out(params.clone(), deadline).await)
        };
        if let Some(message) = &merged.invalid_query {
            return Err(QueryError::InvalidQuery(message.clone()));
        }
        if !merged.partial && merged.coverage.shards_answered > 0 {
            self.canaries.answered(&params.q);
        }
        if let Some(cache) = cache {
            if merged.partial {
                self.metrics
                    .cache_stores
                    .with_label_values(&["skipped_partial"])
                    .inc();
            } else if merged.generations == generations {
                cache.store(key, to_cached(&merged));
            } else {
                // Some shard answered from another generation than the key
                // names (a rolling swap in progress): stored under the key,
                // it would be served as the newer one.
                self.metrics
                    .cache_stores
                    .with_label_values(&["skipped_generation"])
                    .inc();
            }
        }
        let answer = self.answer(&merged, cache_result, started);
        self.log_if_slow(params, &answer, &merged, canary_took);
        if merged.coverage.shards_answered == 0 {
            return Err(QueryError::NoShardAnswered {
                answer: Some(Box::new(answer)),
            });
        }
        if merged.partial && !params.allow_partial {
            return Err(QueryError::PartialNotAllowed {
                answer: Box::new(answer),
            });
        }
        Ok(answer)
    }

    /// The slow-query log: one line per search slower than
    /// [`RootConfig::slow_query`], with the query's fingerprint (never its
    /// text) and where the time went.
    fn log_if_slow(
        &self,
        params: &SearchParams,
        answer: &Answer,
        merged: &Merged,
        canary: Option<Duration>,
    ) {
        let Some(threshold) = self.config.slow_query else {
            return;
        };
        if answer.took <= threshold {
            return;
        }
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let slowest_shard_ms = merged.shards.iter().map(|s| s.took_ms).fold(0.0, f64::max);
        tracing::warn!(
            fingerprint = %format!("{:016x}", crate::query::canary::fingerprint(&params.q)),
            took_ms = ms(answer.took),
            canary_ms = canary.map_or(0.0, ms),
            stats_ms = ms(merged.stages.stats),
            gather_ms = ms(merged.stages.gather),
            slowest_shard_ms,
            partial = merged.partial,
            shards_answered = merged.coverage.shards_answered,
            hedges = merged.hedges,
            "slow query"
        );
    }

    /// Joins an identical fan-out already in flight when it can serve this
    /// request (see [`Window::serves`]; `mine` runs from the request's
    /// arrival, so that time spent before, e.g. on a canary, does not make
    /// identical requests look different), or starts one. A joiner whose shared
    /// fan-out ended before its own deadline without a complete answer
    /// fans out by itself for the time it has left: joining never costs a
    /// request any of its budget.
    async fn coalesced(
        &self,
        key: String,
        params: &SearchParams,
        mine: Window,
    ) -> Result<Arc<Merged>, QueryError> {
        let deadline = mine.deadline;
        let (shared, leader) = self.in_flight.join_or_start(key, mine, &self.tasks, || {
            let root = self.detached();
            let params = params.clone();
            async move {
                let merged = root.fan_out(params, deadline).await;
                (mine, Arc::new(merged))
            }
        });
        if !leader {
            self.metrics.cache_coalesced.inc();
        }
        // A follower never waits past its own deadline for the leader's.
        // The leader waits for its own fan-out, as an uncached request
        // does: that fan-out ends by this deadline (less the merge margin),
        // and a timer 1 ms past it can fire, on a loaded host, before the
        // fan-out's task is scheduled to hand over the partial answer it
        // has, turning that answer into 503 `unavailable`.
        let joined = if leader {
            Ok(shared.await)
        } else {
            tokio::time::timeout_at(deadline + Duration::from_millis(1), shared).await
        };
        let (theirs, merged) = match joined {
            Ok(Some(joined)) => joined,
            Ok(None) => return Err(QueryError::Internal("the fan-out task failed".into())),
            Err(_) => return Err(QueryError::NoShardAnswered { answer: None }),
        };
        let incomplete = merged.partial || merged.coverage.shards_answered == 0;
        if !leader && incomplete && merged.invalid_query.is_none() && mine.outlives(&theirs) {
            return Ok(Arc::new(self.fan_out(params.clone(), deadline).await));
        }
        Ok(merged)
    }

    /// Sends a first-seen query's canary to the shard holding the most
    /// documents (the likeliest to meet whatever kills), before any other
    /// leaf sees the query; see [`crate::query::canary`]. True when the
    /// query waited for a canary.
    async fn canary(
        &self,
        params: &SearchParams,
        topology: &Topology,
        deadline: Instant,
    ) -> Result<bool, QueryError> {
        let shard = self
            .known_docs
            .iter()
            .enumerate()
            .max_by_key(|(shard, docs)| (docs.load(Ordering::Relaxed), std::cmp::Reverse(*shard)))
            .map_or(0, |(shard, _)| shard);
        self.canaries
            .admit(
                &params.q,
                params.k,
                &self.fanout,
                topology,
                shard,
                deadline,
                &self.tasks,
            )
            .await
    }

    /// A handle on the shared parts that a spawned fan-out can own.
    fn detached(&self) -> Root {
        Root {
            config: self.config.clone(),
            fanout: Arc::clone(&self.fanout),
            metrics: Arc::clone(&self.metrics),
            cache: self.cache.clone(),
            stats: Arc::clone(&self.stats),
            known_docs: Arc::clone(&self.known_docs),
            in_flight: self.in_flight.clone(),
            tasks: self.tasks.clone(),
            canaries: Arc::clone(&self.canaries),
        }
    }

    /// Statistics, fan-out and merge; never fails, a missing shard is
    /// reported in the coverage.
    pub async fn fan_out(&self, params: SearchParams, deadline: Instant) -> Merged {
        let started = Instant::now();
        let budget = deadline.saturating_duration_since(started);
        let margin = (budget / 10).min(self.config.merge_margin_max);
        let gather_until = if self.config.wait_for_all {
            started + Duration::from_secs(3600)
        } else {
            deadline - margin
        };
        let query_stats = if self.config.global_stats {
            let stats_deadline = started + budget.mul_f64(self.config.stats_budget_fraction);
            self.stats
                .for_query(&params.q, &self.fanout, stats_deadline)
                .await
        } else {
            Arc::new(QueryStats::local())
        };
        self.metrics
            .term_stats
            .with_label_values(&[query_stats.source.label()])
            .inc();
        let score_floor = query_stats.score_floor(params.k as usize);
        let mut request = SearchRequest {
            query: params.q.clone(),
            k: params.k,
            stats: query_stats.stats.clone(),
            score_floor,
            shard: None,
        };
        let fanout_started = Instant::now();
        let stats_took = fanout_started.duration_since(started);
        let (mut merged, mut slowest) = self
            .gather(&request, gather_until, &params, &query_stats)
            .await;
        let mut floor_result = match score_floor {
            Some(_) => FloorResult::Sent,
            None => FloorResult::None,
        };
        if let Some(floor) = score_floor {
            // A complete answer holds no hit below the floor unless its
            // assumption failed (a shard answered from another generation
            // than the statistics': its documents are not the listed ones);
            // such a hit came without its snippet, so the answer is fetched
            // again without a floor. A partial answer keeps such hits, with
            // their title and an empty snippet.
            if !merged.partial && merged.hits.iter().any(|hit| hit.score < floor) {
                floor_result = FloorResult::Missed;
                request.score_floor = None;
                let first = fanout_started.elapsed();
                (merged, slowest) = self
                    .gather(&request, gather_until, &params, &query_stats)
                    .await;
                // The first fan-out was waiting on leaves too, not the
                // root's own overhead.
                slowest += first;
            }
        }
        self.metrics
            .score_floors
            .with_label_values(&[floor_result.label()])
            .inc();
        if merged.partial {
            self.metrics
                .recall_models
                .with_label_values(&[merged.recall_model.label()])
                .inc();
        }
        for report in &merged.shards {
            self.metrics
                .shard_outcomes
                .with_label_values(&[&report.shard.to_string(), report.state.label()])
                .inc();
        }
        self.metrics
            .overhead
            .observe(started.elapsed().saturating_sub(slowest).as_secs_f64());
        merged.stages = StageTimes {
            stats: stats_took,
            gather: fanout_started.elapsed(),
        };
        for (stage, took) in [("stats", stats_took), ("gather", merged.stages.gather)] {
            self.metrics
                .stages
                .with_label_values(&[stage])
                .observe(took.as_secs_f64());
        }
        merged
    }

    /// One fan-out of `request` and the merge of what it gathered by
    /// `gather_until`, with the latency of the slowest shard that answered.
    async fn gather(
        &self,
        request: &SearchRequest,
        gather_until: Instant,
        params: &SearchParams,
        query_stats: &QueryStats,
    ) -> (Merged, Duration) {
        let results = self.fanout.search(request, gather_until).await;
        let slowest = results
            .iter()
            .filter(|r| matches!(r.outcome, ShardOutcome::Answered(_)))
            .map(|r| r.latency)
            .max()
            .unwrap_or_default();
        for (shard, &docs) in query_stats.shard_docs.iter().enumerate() {
            if let (Some(slot), true) = (self.known_docs.get(shard), docs > 0) {
                slot.store(docs, Ordering::Relaxed);
            }
        }
        let topology = self.fanout.routing().snapshot();
        for result in &results {
            if let ShardOutcome::Answered(response) = &result.outcome {
                if let Some(slot) = self.known_docs.get(result.shard as usize) {
                    slot.store(response.docs_total, Ordering::Relaxed);
                }
                topology.observe(result.shard as usize, response.generation);
            }
        }
        let known: Vec<u64> = self
            .known_docs
            .iter()
            .map(|d| d.load(Ordering::Relaxed))
            .collect();
        let mut merged = merge::merge(
            results,
            params.k as usize,
            &known,
            query_stats.evidence.as_deref(),
        );
        if !query_stats.complete() {
            merged.global_stats = false;
        }
        (merged, slowest)
    }

    fn answer(&self, merged: &Merged, cache: CacheResult, started: Instant) -> Answer {
        Answer {
            hits: merged
                .hits
                .iter()
                .map(|h| AnswerHit {
                    id: h.id.clone(),
                    score: h.score,
                    title: h.title.clone(),
                    snippet: h.snippet.clone(),
                    shard: h.shard,
                })
                .collect(),
            partial: merged.partial,
            coverage: merged.coverage.clone(),
            estimated_recall: merged.estimated_recall,
            cache,
            took: started.elapsed(),
            global_stats: merged.global_stats,
            hedges_sent: merged.hedges,
            hedges_won: merged.hedges_won,
            shards: merged.shards.clone(),
            generations: merged.generations.clone(),
        }
    }

    /// A hit: its key named `generations`, the ones that answered when it
    /// was stored.
    fn answer_from_cache(
        &self,
        answer: CachedAnswer,
        generations: &[u64],
        started: Instant,
    ) -> Answer {
        let shards_total = answer.shards_total;
        Answer {
            hits: answer
                .hits
                .into_iter()
                .map(|h| AnswerHit {
                    id: h.id,
                    score: h.score,
                    title: h.title,
                    snippet: h.snippet,
                    shard: h.shard,
                })
                .collect(),
            partial: false,
            coverage: Coverage {
                shards_total,
                shards_answered: shards_total,
                docs_total: answer.docs_total,
                docs_searched: answer.docs_total,
                percent: 100.0,
                ..Coverage::default()
            },
            estimated_recall: 1.0,
            cache: CacheResult::Hit,
            took: started.elapsed(),
            global_stats: true,
            hedges_sent: 0,
            hedges_won: 0,
            shards: Vec::new(),
            generations: generations.to_vec(),
        }
    }
}

/// Whether a fan-out sent the leaves a score floor, so that they built
/// snippets only for hits that can make the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FloorResult {
    /// Sent, and the answer needed no snippet the floor left out.
    Sent,
    /// None for this query: not only free words, or statistics not from
    /// every shard, or champion lists naming fewer than k documents.
    None,
    /// A complete answer held a hit below the floor (which only a shard on
    /// another generation than the statistics can cause): fetched again
    /// without one.
    Missed,
}

impl FloorResult {
    pub const ALL: &'static [FloorResult] =
        &[FloorResult::Sent, FloorResult::None, FloorResult::Missed];

    /// The name in metric labels.
    pub fn label(&self) -> &'static str {
        match self {
            FloorResult::Sent => "sent",
            FloorResult::None => "none",
            FloorResult::Missed => "missed",
        }
    }
}

/// Only complete answers are turned into cache entries.
fn to_cached(merged: &Merged) -> CachedAnswer {
    debug_assert!(!merged.partial);
    CachedAnswer {
        hits: merged
            .hits
            .iter()
            .map(|h| CachedHit {
                id: h.id.clone(),
                score: h.score,
                title: h.title.clone(),
                snippet: h.snippet.clone(),
                shard: h.shard,
            })
            .collect(),
        docs_total: merged.coverage.docs_total,
        shards_total: merged.coverage.shards_total,
    }
}

#[cfg(test)]
mod tests;
