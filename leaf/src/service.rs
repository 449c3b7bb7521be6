//! The `Leaf` gRPC service: deadlines, faults, admission, then a search on
//! the blocking pool (or inline, when short), then its hits.
//!
//! A search call goes through these steps, each of which may end it:
//! 1. the caller's deadline (`grpc-timeout`): less than [`MIN_BUDGET`] left
//!    is DEADLINE_EXCEEDED before any work;
//! 2. validation of `k`, the query and the statistics: INVALID_ARGUMENT;
//! 3. fault knobs (hang, delay, error);
//! 4. admission ([`crate::limits`]): RESOURCE_EXHAUSTED when full;
//! 5. the scoring, stopping a little before the deadline with what it has
//!    (`early_terminated`): on the calling task when its terms list few
//!    postings ([`crate::LeafConfig::inline_postings`]), else on the
//!    blocking pool;
//! 6. after the admission slot is given back, loading the winners' titles
//!    and snippets (at most k documents; in a `SearchShards` call, only
//!    those in the joint top k of all its shards), where the scoring ran.
//!
//! If the deadline passes during steps 3–4 the answer is DEADLINE_EXCEEDED;
//! once scoring has started the leaf always answers with what it found.
//! When the caller goes away (the handler future is dropped), a drop guard
//! sets the search's cancellation flag so the blocking search stops, and
//! counts the call as `cancelled` (or `deadline_exceeded` when the deadline
//! had passed, since tonic drops calls at their deadline too).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proto::leaf::leaf_server::Leaf;
use proto::leaf::{
    InfoRequest, InfoResponse, SearchRequest, SearchResponse, SearchShardsRequest,
    SearchShardsResponse, ShardAnswer, TermStatsAnswer, TermStatsRequest, TermStatsResponse,
    TermStatsShardsRequest, TermStatsShardsResponse,
};
use tantivy::schema::Schema;
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};
use tracing::instrument;

use crate::error::{LeafError, Result};
use crate::faults::Faults;
use crate::index::ShardIndex;
use crate::limits::Admission;
use crate::metrics::{GaugeGuard, Metrics};
use crate::query::ParsedQuery;
use crate::search::{validate_k, Budget, Scored, SharedWeights};
use crate::stats::validate_stats;

/// Less time left than this and a call is refused without starting work.
pub const MIN_BUDGET: Duration = Duration::from_millis(1);
/// Time reserved per requested hit for loading it and making its snippet.
const PER_HIT_MARGIN: Duration = Duration::from_micros(10);

/// Counters readable from the library handle, for tests and demos.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    searches: AtomicU64,
    early_stops: AtomicU64,
    cancelled: AtomicU64,
    deadline_exceeded: AtomicU64,
    rejected: AtomicU64,
    invalid: AtomicU64,
    errors: AtomicU64,
}

/// A snapshot of a leaf's search counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeafStats {
    /// Searches answered with hits (complete or early-stopped).
    pub searches: u64,
    pub early_stops: u64,
    /// Calls the caller abandoned before the answer (e.g. a lost hedge).
    pub cancelled: u64,
    pub deadline_exceeded: u64,
    pub rejected: u64,
    pub invalid: u64,
    /// Internal errors and injected faults.
    pub errors: u64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> LeafStats {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        LeafStats {
            searches: get(&self.searches),
            early_stops: get(&self.early_stops),
            cancelled: get(&self.cancelled),
            deadline_exceeded: get(&self.deadline_exceeded),
            rejected: get(&self.rejected),
            invalid: get(&self.invalid),
            errors: get(&self.errors),
        }
    }

    fn count(&self, outcome: &str) {
        let counter = match outcome {
            "ok" => &self.searches,
            "early_stop" => {
                self.early_stops.fetch_add(1, Ordering::Relaxed);
                &self.searches
            }
            "cancelled" => &self.cancelled,
            "deadline_exceeded" => &self.deadline_exceeded,
            "rejected" => &self.rejected,
            "invalid" => &self.invalid,
            _ => &self.errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// State shared by every call to one shard of a server.
pub(crate) struct Shared {
    /// The shard this state serves (the index's, fixed for the process).
    pub(crate) shard: u32,
    /// The served index; swapped to a newer generation by
    /// [`crate::generations`]. A call loads it once and keeps that `Arc`.
    pub(crate) index: Arc<arc_swap::ArcSwap<ShardIndex>>,
    /// Queries served lately, replayed to warm a new generation (with an
    /// index root).
    pub(crate) recent: Option<Arc<crate::generations::RecentQueries>>,
    pub(crate) faults: Faults,
    pub(crate) admission: Admission,
    pub(crate) metrics: Metrics,
    pub(crate) counters: Arc<Counters>,
    /// Cancelled when the server starts stopping: hung calls answer.
    pub(crate) stopping: CancellationToken,
    pub(crate) reply_margin: Duration,
    /// Searches of at most this many postings run on the calling task
    /// ([`crate::LeafConfig::inline_postings`]).
    pub(crate) inline_postings: u64,
}

/// The tonic service: the shards this process serves, the first one the
/// answer to a request that names none.
#[derive(Clone)]
pub struct LeafService {
    shards: Arc<[Arc<Shared>]>,
}

impl LeafService {
    pub(crate) fn new(shards: Vec<Arc<Shared>>) -> LeafService {
        assert!(!shards.is_empty(), "a leaf serves at least one shard");
        LeafService {
            shards: shards.into(),
        }
    }

    /// The shard a request names (or the only one, when it names none).
    fn route(&self, shard: Option<u32>) -> std::result::Result<&Arc<Shared>, Status> {
        match shard {
            None if self.shards.len() == 1 => Ok(&self.shards[0]),
            None => Err(Status::invalid_argument(format!(
                "this leaf serves shards {}; the request must name one",
                self.served()
            ))),
            Some(shard) => self
                .shards
                .iter()
                .find(|shared| shared.shard == shard)
                .ok_or_else(|| {
                    Status::failed_precondition(format!(
                        "this leaf serves shards {}, not {shard}",
                        self.served()
                    ))
                }),
        }
    }

    /// The distinct shards a multi-shard call asks for, in its order, each
    /// with this process's state for it or why it has none; a call asking
    /// for more than [`MAX_ASKED_SHARDS`] is refused.
    fn asked(&self, shards: Vec<u32>) -> std::result::Result<Vec<Asked<'_>>, Status> {
        if shards.len() > MAX_ASKED_SHARDS {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_ASKED_SHARDS} shards per call, got {}",
                shards.len()
            )));
        }
        let mut asked: Vec<Asked<'_>> = Vec::with_capacity(shards.len());
        for shard in shards {
            if !asked.iter().any(|(seen, _)| *seen == shard) {
                asked.push((shard, self.route(Some(shard))));
            }
        }
        Ok(asked)
    }

    fn served(&self) -> String {
        let shards: Vec<String> = self.shards.iter().map(|s| s.shard.to_string()).collect();
        shards.join(",")
    }
}

/// A shard a multi-shard call asks for, with this process's state for it
/// or why it has none.
type Asked<'a> = (u32, std::result::Result<&'a Arc<Shared>, Status>);

/// The most shards one `SearchShards` or `TermStatsShards` call may name.
pub const MAX_ASKED_SHARDS: usize = 1024;

/// One shard's part of a multi-shard answer: its response, or the status
/// code and message it failed with.
fn parts<R>(result: std::result::Result<R, Status>) -> (Option<R>, i32, String) {
    match result {
        Ok(response) => (Some(response), 0, String::new()),
        Err(status) => (None, status.code() as i32, status.message().to_string()),
    }
}

/// One shard's search call, with its outcome counted on that shard.
async fn search_one(
    shared: &Arc<Shared>,
    request: SearchRequest,
    deadline: Option<Instant>,
    received: Instant,
) -> std::result::Result<SearchResponse, Status> {
    let mut call = CallGuard::new(Arc::clone(shared), deadline, received);
    let cancel = Arc::clone(&call.cancel);
    let result = shared.search(request, deadline, cancel).await;
    call.end(result)
}

/// The k-th best of the winners `ranked` lists, by score then id (the
/// frontend's merge order), when they hold more than k: the last entry of
/// their joint top k.
fn joint_kth<'a>(ranked: impl Iterator<Item = (f32, &'a str)>, k: usize) -> Option<(f32, String)> {
    let mut all: Vec<(f32, &str)> = ranked.collect();
    if k == 0 || all.len() <= k {
        return None;
    }
    all.select_nth_unstable_by(k - 1, |a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    let (score, id) = all[k - 1];
    Some((score, id.to_string()))
}

/// Whether a winner scoring `score` with `id` is in the joint top k whose
/// last entry is `kth`.
fn in_top_k(score: f32, id: &str, kth: &(f32, String)) -> bool {
    score > kth.0 || (score == kth.0 && id <= kth.1.as_str())
}

/// When a request reached the server, stamped by [`ArrivalLayer`].
#[derive(Clone, Copy, Debug)]
struct Arrival(Instant);

/// A tower layer that stamps each request with its arrival time.
///
/// tonic's own `grpc-timeout` timer starts when the request enters the
/// service stack, while a handler's body runs only when first polled,
/// possibly much later on a busy machine. Counting the deadline from this
/// stamp, taken just before tonic's timer starts, keeps the leaf's deadline
/// no later than tonic's: when tonic drops a call at its deadline, the leaf
/// sees the deadline as passed and counts `deadline_exceeded`, not
/// `cancelled`.
#[derive(Clone, Copy, Debug, Default)]
pub struct ArrivalLayer;

impl<S> tower::Layer<S> for ArrivalLayer {
    type Service = StampArrival<S>;

    fn layer(&self, inner: S) -> Self::Service {
        StampArrival(inner)
    }
}

/// The service of [`ArrivalLayer`].
#[derive(Clone, Debug)]
pub struct StampArrival<S>(S);

impl<S, B> tower::Service<http::Request<B>> for StampArrival<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::result::Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        request.extensions_mut().insert(Arrival(Instant::now()));
        self.0.call(request)
    }
}

/// When `request` arrived: its [`Arrival`] stamp, or now without one.
fn arrival<T>(request: &Request<T>) -> Instant {
    request
        .extensions()
        .get::<Arrival>()
        .map_or_else(Instant::now, |arrival| arrival.0)
}

/// The caller's deadline from the `grpc-timeout` header, counted from
/// `received`; None without a (valid) header.
pub fn deadline_from(metadata: &MetadataMap, received: Instant) -> Option<Instant> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    received.checked_add(parse_grpc_timeout(value)?)
}

/// Parses a gRPC `TimeoutValue TimeoutUnit` (at most 8 digits; units H, M,
/// S, m, u, n).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 || !value.is_ascii() {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

fn ensure_time_left(deadline: Option<Instant>) -> Result<()> {
    match deadline {
        Some(deadline) if deadline.saturating_duration_since(Instant::now()) < MIN_BUDGET => {
            Err(LeafError::DeadlineExceeded)
        }
        _ => Ok(()),
    }
}

/// Records the outcome of one search call exactly once, and flags the
/// search as cancelled when the call is dropped before it answers.
struct CallGuard {
    shared: Arc<Shared>,
    deadline: Option<Instant>,
    received: Instant,
    cancel: Arc<AtomicBool>,
    finished: bool,
}

impl CallGuard {
    fn new(shared: Arc<Shared>, deadline: Option<Instant>, received: Instant) -> CallGuard {
        CallGuard {
            shared,
            deadline,
            received,
            cancel: Arc::new(AtomicBool::new(false)),
            finished: false,
        }
    }

    /// Counts how the call ended and turns the leaf's error into a status.
    fn end(
        &mut self,
        result: Result<SearchResponse>,
    ) -> std::result::Result<SearchResponse, Status> {
        match result {
            Ok(response) => {
                self.finish(if response.early_terminated {
                    "early_stop"
                } else {
                    "ok"
                });
                Ok(response)
            }
            Err(error) => Err(self.fail(error)),
        }
    }

    /// Counts a call that failed with `error`, its status.
    fn fail(&mut self, error: LeafError) -> Status {
        self.finish(error.outcome());
        log_error(&error, "search");
        error.into()
    }

    fn finish(&mut self, outcome: &'static str) {
        self.finished = true;
        let metrics = &self.shared.metrics;
        metrics.search_outcome(outcome);
        metrics
            .search_duration
            .observe(self.received.elapsed().as_secs_f64());
        self.shared.counters.count(outcome);
        tracing::Span::current().record("outcome", outcome);
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        self.cancel.store(true, Ordering::Relaxed);
        let outcome = match self.deadline {
            Some(deadline) if Instant::now() >= deadline => "deadline_exceeded",
            _ => "cancelled",
        };
        self.shared.metrics.search_outcome(outcome);
        self.shared.counters.count(outcome);
        tracing::debug!(outcome, "search call dropped before answering");
    }
}

/// What the shards of one `SearchShards` call share: the query as one of
/// them parsed it, and weights built from corpus-wide statistics alone.
#[derive(Default)]
struct Reuse {
    parsed: Option<(Schema, ParsedQuery)>,
    weights: Option<SharedWeights>,
}

/// One shard's search, scored under its admission slot, its hits not yet
/// loaded: what [`Shared::respond`] turns into the answer.
struct Scoring {
    index: Arc<ShardIndex>,
    query: ParsedQuery,
    scored: Scored,
    budget: Budget,
    /// Whether the search ran on the calling task (then so does the load).
    inline: bool,
    arrived: Instant,
}

impl Shared {
    async fn search(
        &self,
        request: SearchRequest,
        deadline: Option<Instant>,
        cancel: Arc<AtomicBool>,
    ) -> Result<SearchResponse> {
        let scoring = self
            .score(request, &Reuse::default(), deadline, cancel)
            .await?;
        self.respond(scoring).await
    }

    /// Steps 1 to 5 of a search call, up to the winners' scores; `reuse`
    /// holds what another shard of the same call made of the same query
    /// (used when the index searched has the same schema).
    async fn score(
        &self,
        request: SearchRequest,
        reuse: &Reuse,
        deadline: Option<Instant>,
        cancel: Arc<AtomicBool>,
    ) -> Result<Scoring> {
        let arrived = Instant::now();
        ensure_time_left(deadline)?;
        let index = self.index.load_full();
        let k = validate_k(request.k)?;
        let prepared = index.prepare(&request.query, reuse.parsed.as_ref())?;
        let query = prepared.query;
        if let Some(recent) = &self.recent {
            recent.note(&request.query);
        }
        if let Some(stats) = &request.stats {
            validate_stats(stats)?;
        }
        self.faults
            .apply(&request.query, deadline, &self.stopping, &self.metrics)
            .await?;
        ensure_time_left(deadline)?;
        let permit = self.admission.admit(deadline).await?;
        let admitted = Instant::now();
        ensure_time_left(deadline)?;

        // Scoring stops early enough to load the hits and reply in time.
        let margin = self.reply_margin + PER_HIT_MARGIN * request.k;
        let budget = match deadline {
            Some(deadline) => Budget::until(deadline.checked_sub(margin).unwrap_or(deadline)),
            None => Budget::unlimited(),
        }
        .with_cancel(cancel)
        .with_scan_delay(self.faults.slow_scan());
        let in_flight = self.metrics.searches_in_flight.clone();
        let stats = request.stats;
        let floor = request.score_floor;
        // A short search runs right here: handing it to the blocking pool
        // costs two thread wake-ups, more than the search. A long one (or
        // any under the slow-scan fault, which tests cancel) is handed off,
        // so that it neither holds a runtime worker nor misses the caller's
        // going away.
        let inline = self.inline_postings > 0
            && self.faults.slow_scan().is_zero()
            && prepared.postings <= self.inline_postings;
        let (scored, index, query, budget, permit) = if inline {
            let _in_flight = GaugeGuard::new(&in_flight);
            let weights = reuse.weights.as_ref();
            let scored = index.score(&query, k, stats.as_ref(), floor, weights, &budget);
            (scored, index, query, budget, permit)
        } else {
            let weights = reuse.weights.clone();
            let in_flight = in_flight.clone();
            let task = tokio::task::spawn_blocking(move || {
                // The slot is held until the search really ends, even when
                // the call was dropped meanwhile (the task's output, permit
                // included, is dropped only when it finishes).
                let _in_flight = GaugeGuard::new(&in_flight);
                let weights = weights.as_ref();
                let scored = index.score(&query, k, stats.as_ref(), floor, weights, &budget);
                (scored, index, query, budget, permit)
            });
            task.await
                .map_err(|error| LeafError::Internal(format!("search task failed: {error}")))?
        };
        let hold = self.faults.hold();
        if !hold.is_zero() {
            // Fault: the slot stays taken until `hold` after admission.
            let _in_flight = GaugeGuard::new(&in_flight);
            tokio::time::sleep_until((admitted + hold).into()).await;
        }
        drop(permit);
        Ok(Scoring {
            index,
            query,
            scored: scored?,
            budget,
            inline,
            arrived,
        })
    }

    /// Step 6: loads the titles and snippets of the winners `scoring` still
    /// holds (at most k documents, after its admission slot is given back)
    /// and makes the answer.
    async fn respond(&self, scoring: Scoring) -> Result<SearchResponse> {
        let Scoring {
            index,
            query,
            scored,
            budget,
            inline,
            arrived,
        } = scoring;
        let in_flight = self.metrics.searches_in_flight.clone();
        let (shard, generation) = (index.shard(), index.generation());
        let output = if inline {
            let _in_flight = GaugeGuard::new(&in_flight);
            index.load(&query, scored, &budget)
        } else {
            tokio::task::spawn_blocking(move || {
                let _in_flight = GaugeGuard::new(&in_flight);
                index.load(&query, scored, &budget)
            })
            .await
            .map_err(|error| LeafError::Internal(format!("load task failed: {error}")))?
        };
        let output = output?;
        if inline {
            self.metrics.inline_searches.inc();
        }
        self.metrics.docs_searched.inc_by(output.docs_searched);
        self.metrics.hits.inc_by(output.hits.len() as u64);
        self.metrics
            .snippets_skipped
            .inc_by(output.snippets_skipped);
        if output.early_terminated {
            self.metrics.early_stops.inc();
        }
        let mut response = output.into_response(shard, generation);
        // The leaf's own load, for the callers' replica choice.
        let gauge = |value: i64| u32::try_from(value.max(0)).unwrap_or(u32::MAX);
        response.in_flight = gauge(self.metrics.searches_in_flight.get());
        response.queued = gauge(self.metrics.queue_depth.get());
        response.service_us = u64::try_from(arrived.elapsed().as_micros()).unwrap_or(u64::MAX);
        Ok(response)
    }

    async fn term_stats(
        &self,
        request: TermStatsRequest,
        deadline: Option<Instant>,
    ) -> Result<TermStatsResponse> {
        ensure_time_left(deadline)?;
        let index = self.index.load_full();
        let (shard, generation) = (index.shard(), index.generation());
        // Bounded work (a dictionary look-up and a champion list per
        // term): cheaper here than a hand-off to the blocking pool.
        let stats = index.term_stats(&request.query)?;
        Ok(TermStatsResponse {
            shard,
            generation,
            stats: Some(stats),
        })
    }
}

fn log_error(error: &LeafError, what: &str) {
    match error {
        LeafError::Index(_) | LeafError::Io(_) | LeafError::Internal(_) => {
            tracing::error!(%error, what, "call failed")
        }
        _ => tracing::debug!(%error, what, "call refused"),
    }
}

#[tonic::async_trait]
impl Leaf for LeafService {
    #[instrument(
        name = "leaf.search",
        skip_all,
        fields(shard = request.get_ref().shard, k = request.get_ref().k, outcome)
    )]
    async fn search(
        &self,
        request: Request<SearchRequest>,
    ) -> std::result::Result<Response<SearchResponse>, Status> {
        let received = arrival(&request);
        let deadline = deadline_from(request.metadata(), received);
        let request = request.into_inner();
        let shared = self.route(request.shard)?;
        search_one(shared, request, deadline, received)
            .await
            .map(Response::new)
    }

    /// The shards scored one after the other on this task (the query
    /// parsed once when their schemas agree), then the titles and snippets
    /// loaded only for the winners in the top k of them all: every answer
    /// holds just its part of that joint top k.
    #[instrument(
        name = "leaf.search_shards",
        skip_all,
        fields(shards = request.get_ref().shards.len(), outcome)
    )]
    async fn search_shards(
        &self,
        request: Request<SearchShardsRequest>,
    ) -> std::result::Result<Response<SearchShardsResponse>, Status> {
        let received = arrival(&request);
        let deadline = deadline_from(request.metadata(), received);
        let SearchShardsRequest { search, shards } = request.into_inner();
        let search = search.ok_or_else(|| Status::invalid_argument("no search in the request"))?;
        let k = search.k as usize;
        // The query as the first shard parsed it, and the first shareable
        // weights, with their schema.
        let mut reuse = Reuse::default();
        let mut scored = Vec::with_capacity(shards.len());
        for (shard, routed) in self.asked(shards)? {
            let result = match routed {
                Ok(shared) => {
                    let mut call = CallGuard::new(Arc::clone(shared), deadline, received);
                    let cancel = Arc::clone(&call.cancel);
                    let mut request = search.clone();
                    request.shard = Some(shard);
                    match shared.score(request, &reuse, deadline, cancel).await {
                        Ok(scoring) => {
                            reuse.parsed.get_or_insert_with(|| {
                                let schema = scoring.index.searcher().schema().clone();
                                (schema, scoring.query.clone())
                            });
                            if reuse.weights.is_none() {
                                reuse.weights = scoring.scored.weights().cloned();
                            }
                            Ok((call, shared, scoring))
                        }
                        Err(error) => Err(call.fail(error)),
                    }
                }
                Err(status) => Err(status),
            };
            scored.push((shard, result));
        }
        let kth = joint_kth(
            scored
                .iter()
                .filter_map(|(_, result)| result.as_ref().ok())
                .flat_map(|(_, _, scoring)| scoring.scored.ranked()),
            k,
        );
        let mut answers: Vec<ShardAnswer> = Vec::with_capacity(scored.len());
        for (shard, result) in scored {
            let result = match result {
                Ok((mut call, shared, mut scoring)) => {
                    if let Some(kth) = &kth {
                        scoring.scored.retain(|score, id| in_top_k(score, id, kth));
                    }
                    let result = shared.respond(scoring).await;
                    call.end(result)
                }
                Err(status) => Err(status),
            };
            let (response, error_code, error_message) = parts(result);
            answers.push(ShardAnswer {
                shard,
                response,
                error_code,
                error_message,
            });
        }
        Ok(Response::new(SearchShardsResponse { answers }))
    }

    #[instrument(name = "leaf.info", skip_all, fields(shard = request.get_ref().shard))]
    async fn info(
        &self,
        request: Request<InfoRequest>,
    ) -> std::result::Result<Response<InfoResponse>, Status> {
        // Without a shard: the first one, with the list of all.
        let shared = match request.get_ref().shard {
            None => &self.shards[0],
            shard => self.route(shard)?,
        };
        let index = shared.index.load();
        Ok(Response::new(InfoResponse {
            shard: index.shard(),
            shards: index.shards(),
            num_docs: index.num_docs(),
            generation: index.generation(),
            served: self.shards.iter().map(|shared| shared.shard).collect(),
        }))
    }

    #[instrument(name = "leaf.term_stats", skip_all, fields(shard = request.get_ref().shard))]
    async fn term_stats(
        &self,
        request: Request<TermStatsRequest>,
    ) -> std::result::Result<Response<TermStatsResponse>, Status> {
        let deadline = deadline_from(request.metadata(), arrival(&request));
        let request = request.into_inner();
        let shared = self.route(request.shard)?;
        term_stats_one(shared, request, deadline)
            .await
            .map(Response::new)
    }

    #[instrument(
        name = "leaf.term_stats_shards",
        skip_all,
        fields(shards = request.get_ref().shards.len())
    )]
    async fn term_stats_shards(
        &self,
        request: Request<TermStatsShardsRequest>,
    ) -> std::result::Result<Response<TermStatsShardsResponse>, Status> {
        let deadline = deadline_from(request.metadata(), arrival(&request));
        let TermStatsShardsRequest { query, shards } = request.into_inner();
        let mut answers: Vec<TermStatsAnswer> = Vec::with_capacity(shards.len());
        for (shard, routed) in self.asked(shards)? {
            let result = match routed {
                Ok(shared) => {
                    let request = TermStatsRequest {
                        query: query.clone(),
                        shard: Some(shard),
                    };
                    term_stats_one(shared, request, deadline).await
                }
                Err(status) => Err(status),
            };
            let (response, error_code, error_message) = parts(result);
            answers.push(TermStatsAnswer {
                shard,
                response,
                error_code,
                error_message,
            });
        }
        Ok(Response::new(TermStatsShardsResponse { answers }))
    }
}

/// One shard's term statistics, with the outcome counted on that shard.
async fn term_stats_one(
    shared: &Shared,
    request: TermStatsRequest,
    deadline: Option<Instant>,
) -> std::result::Result<TermStatsResponse, Status> {
    let result = shared.term_stats(request, deadline).await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(error) => error.outcome(),
    };
    shared
        .metrics
        .term_stats_requests
        .with_label_values(&[outcome])
        .inc();
    result.map_err(|error| {
        log_error(&error, "term_stats");
        error.into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_grpc_timeouts() {
        assert_eq!(parse_grpc_timeout("3H"), Some(Duration::from_secs(10_800)));
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(
            parse_grpc_timeout("99999999u"),
            Some(Duration::from_micros(99_999_999))
        );
        assert_eq!(parse_grpc_timeout("7n"), Some(Duration::from_nanos(7)));
        for bad in ["", "m", "10", "10x", "-5m", "123456789m", "1.5S", "é5m"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn deadline_comes_from_the_header() {
        let now = Instant::now();
        let mut metadata = MetadataMap::new();
        assert_eq!(deadline_from(&metadata, now), None);
        metadata.insert("grpc-timeout", "100m".parse().unwrap());
        assert_eq!(
            deadline_from(&metadata, now),
            Some(now + Duration::from_millis(100))
        );
        assert!(ensure_time_left(Some(now + Duration::from_secs(10))).is_ok());
        assert!(matches!(
            ensure_time_left(Some(now)),
            Err(LeafError::DeadlineExceeded)
        ));
        assert!(ensure_time_left(None).is_ok());
    }
}
