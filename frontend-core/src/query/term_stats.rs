//! Corpus-wide term statistics, so that BM25 scores are comparable across
//! shards and a merge of all shards equals one unsharded index.
//!
//! For a query the frontend needs each term's document frequency summed
//! over shards, plus the corpus's document and token counts. Those come from
//! the leaves' `TermStats` RPC and are cached here per term and per set of
//! index generations (a reindexed shard changes the set, which makes every
//! old entry unreachable). A query seen before, or whose terms are all known,
//! costs no extra round trip. When statistics cannot be had in time, the
//! query is scored with shard-local statistics and the answer says so; the
//! round trip goes on in the background and fills the cache, so that short
//! deadlines do not keep a query cold.
//!
//! Per-shard frequencies and champion lists are kept too: they tell the
//! accuracy estimate what each shard would add to the answer (the
//! [`Evidence`] used by [`crate::query::estimate`]).
//!
//! **Generations.** Every entry is keyed by the hash of the generation set
//! it was fetched for, and a round trip fills the cache only when every
//! shard answered from the generation the set names; so statistics of an
//! old generation are never mixed with a new one. During a rolling swap the
//! set names each shard's newest generation and the round trip asks a
//! replica that serves it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;
use parking_lot::Mutex;
use proto::leaf::{CorpusStats, FieldStats, Impact, TermStat};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use xxhash_rust::xxh3::xxh3_64;

use crate::cluster::leaf_client::stats_answer;
use crate::query::estimate::{Evidence, Occur, PairModel};
use crate::query::fanout::{CallKind, CallPlan, Called, Fanout};
use futures::future::FutureExt;

/// The fields the leaves search; their terms are looked up locally.
const FIELDS: [&str; 2] = scoring::SEARCH_FIELDS;
use scoring::MAX_TOKEN_BYTES;

/// Where a query's statistics came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StatsSource {
    /// All from the cache, no round trip.
    Warm,
    /// One round trip that every shard answered.
    Fetched,
    /// A round trip that some shard did not answer (or answered from
    /// another generation): scored with what came back.
    Partial,
    /// None in time: shard-local statistics.
    Local,
}

impl StatsSource {
    pub const ALL: &'static [StatsSource] = &[
        StatsSource::Warm,
        StatsSource::Fetched,
        StatsSource::Partial,
        StatsSource::Local,
    ];

    /// The name in metric labels.
    pub fn label(&self) -> &'static str {
        match self {
            StatsSource::Warm => "warm",
            StatsSource::Fetched => "fetched",
            StatsSource::Partial => "partial",
            StatsSource::Local => "local",
        }
    }
}

/// Statistics for one query.
#[derive(Clone, Debug)]
pub struct QueryStats {
    /// Summed statistics to send to the leaves; `None` means local scoring.
    pub stats: Option<CorpusStats>,
    /// What the accuracy estimate knows about the query's terms on every
    /// shard; `None` unless the statistics cover every shard.
    pub evidence: Option<Arc<Evidence>>,
    /// Where the statistics came from, for metrics.
    pub source: StatsSource,
    /// Documents per shard as the statistics saw them (0: unknown).
    pub shard_docs: Vec<u64>,
    /// True when the query is made of free words only (no `+`, `-`,
    /// phrases or other syntax): the shape a score floor holds for.
    pub free_words: bool,
    /// Score floors computed so far, by k (shared by the clones: the
    /// statistics they are computed from are the same).
    floors: Floors,
}

/// Score floors by k, memoized.
type Floors = Arc<Mutex<Vec<(usize, Option<f32>)>>>;

/// Distinct `k` whose score floors one [`QueryStats`] remembers.
const FLOORS_KEPT: usize = 4;

impl QueryStats {
    pub fn local() -> Self {
        QueryStats {
            stats: None,
            evidence: None,
            source: StatsSource::Local,
            shard_docs: Vec::new(),
            free_words: false,
            floors: Arc::default(),
        }
    }

    /// What the frontend makes of every shard's own statistics for `query`
    /// (each shard's `TermStats` answer, in shard order): their sum to score
    /// with, and the evidence for the accuracy estimate. The server's code
    /// path, public so that offline tools (the calibration benchmark)
    /// compute the same figures.
    pub fn from_shards(query: &str, parts: &[CorpusStats]) -> QueryStats {
        let (totals, per_term, _) = gather(parts.iter().map(Some));
        let mut result = assemble(&totals, &per_term, clauses(query));
        result.source = StatsSource::Fetched;
        result
    }

    /// True when the statistics cover every shard.
    pub fn complete(&self) -> bool {
        matches!(self.source, StatsSource::Warm | StatsSource::Fetched)
    }

    /// A lower bound on the k-th best score of the whole corpus, with these
    /// statistics ([`crate::query::estimate::score_floor`]): only for a
    /// query of free words and statistics from every shard.
    pub fn score_floor(&self, k: usize) -> Option<f32> {
        if !self.free_words || !self.complete() || self.stats.is_none() {
            return None;
        }
        let pairs = self.evidence.as_ref()?.impacts.as_deref()?;
        // Sorting the champion lists costs more than the rest of a warm
        // query's statistics: a query seen again reuses its floor.
        let known = |floors: &[(usize, Option<f32>)]| {
            floors
                .iter()
                .find(|(of, _)| *of == k)
                .map(|(_, floor)| *floor)
        };
        if let Some(floor) = known(&self.floors.lock()) {
            return floor;
        }
        let floor = crate::query::estimate::score_floor(pairs, k);
        let mut floors = self.floors.lock();
        if floors.len() < FLOORS_KEPT && known(&floors).is_none() {
            floors.push((k, floor));
        }
        floor
    }

    /// Bytes the statistics hold, for the weigher of the cache of
    /// assembled queries: the pairs' champion lists counted in full, though
    /// the per-term cache mostly holds them too.
    fn weight(&self) -> u32 {
        let stats = self.stats.as_ref().map_or(0, |stats| {
            stats
                .terms
                .iter()
                .map(|term| 64 + term.field.len() + term.term.len())
                .sum::<usize>()
        });
        let evidence = self.evidence.as_ref().map_or(0, |evidence| {
            evidence.share.len() * 8
                + evidence.impacts.as_ref().map_or(0, |impacts| {
                    impacts
                        .iter()
                        .map(|pair| 32 + pair.stats.weight() as usize)
                        .sum::<usize>()
                })
        });
        (256 + stats + evidence + self.shard_docs.len() * 8)
            .try_into()
            .unwrap_or(u32::MAX)
    }
}

/// A (field, term) pair.
type Pair = (String, String);
/// (field, term) → its statistics on every shard.
type PerTerm = BTreeMap<Pair, Arc<PairStats>>;

pub use crate::query::estimate::PairStats;
/// One entry of a champion list ([`Impact`]) as the cache keeps it; the
/// packing is part of the scoring contract.
pub use scoring::Champion;

/// Packs a leaf's champion-list entry.
fn champion(impact: &Impact) -> Champion {
    Champion::pack(impact.doc, impact.term_freq, impact.field_length)
}

/// Per-shard totals of one generation set.
#[derive(Clone, Debug)]
struct Totals {
    docs: Vec<u64>,
    /// Field name → total tokens per shard.
    tokens: BTreeMap<String, Vec<u64>>,
}

/// How long a `TermStats` round trip may take. The request waits for it only
/// until its own statistics deadline; past that it is scored with
/// shard-local statistics while the round trip goes on and fills the cache,
/// so that the next query with these terms is warm even under deadlines too
/// short for a round trip.
const FETCH_BUDGET: Duration = Duration::from_secs(1);

/// Bytes of per-term statistics kept unless configured otherwise.
pub const DEFAULT_CACHE_BYTES: u64 = 64 << 20;

/// Queries whose term lists the cache keeps by default.
pub const DEFAULT_CACHE_QUERIES: u64 = 100_000;

/// The fill of a [`TermStatsCache`], for the memory gauges.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsCacheUsage {
    /// Bytes of per-term statistics (the weigher's figure, bounded by
    /// `max_bytes`).
    pub bytes: u64,
    /// (field, term) pairs held.
    pub terms: u64,
    /// Queries whose term lists are held.
    pub queries: u64,
}

/// Cheap to clone: the clones share the caches.
#[derive(Clone)]
pub struct TermStatsCache {
    /// (generation set, field, term) → the pair's statistics per shard,
    /// bounded by bytes (champion lists make up most of them).
    terms: Cache<(u64, String, String), Arc<PairStats>>,
    /// (generation set, normalized query) → the (field, term) pairs the
    /// leaves reported for it.
    queries: Cache<(u64, String), Arc<Vec<Pair>>>,
    /// Generation set → per-shard totals.
    totals: Cache<u64, Arc<Totals>>,
    /// (generation set, query as sent) → its statistics assembled from the
    /// caches above, with the score floors computed for it: a query seen
    /// again costs one look-up. Bounded by bytes (a quarter of the
    /// statistics budget; the per-term cache has the rest).
    assembled: Cache<(u64, String), Arc<QueryStats>>,
    /// Round trips that outlive their request, drained on shutdown.
    tasks: TaskTracker,
}

impl Default for TermStatsCache {
    fn default() -> Self {
        Self::new(DEFAULT_CACHE_BYTES, DEFAULT_CACHE_QUERIES)
    }
}

impl TermStatsCache {
    /// A cache of at most `max_bytes` of statistics (three quarters per
    /// (field, term) pair, about 4 KiB a pair on 8 shards; a quarter for
    /// assembled queries) and `max_queries` queries' term lists.
    pub fn new(max_bytes: u64, max_queries: u64) -> Self {
        let assembled_bytes = max_bytes / 4;
        TermStatsCache {
            assembled: Cache::builder()
                .max_capacity(assembled_bytes)
                .weigher(|_, stats: &Arc<QueryStats>| stats.weight())
                .time_to_idle(Duration::from_secs(3600))
                .build(),
            terms: Cache::builder()
                .max_capacity(max_bytes - assembled_bytes)
                .weigher(|_, pair: &Arc<PairStats>| pair.weight())
                .time_to_idle(Duration::from_secs(3600))
                .build(),
            queries: Cache::builder()
                .max_capacity(max_queries)
                .time_to_idle(Duration::from_secs(3600))
                .build(),
            totals: Cache::builder().max_capacity(64).build(),
            tasks: TaskTracker::new(),
        }
    }

    /// What the cache holds now. With `settle`, moka's pending
    /// bookkeeping runs first, so that the figures count every insert and
    /// eviction so far (else they may lag by a few).
    pub fn usage(&self, settle: bool) -> StatsCacheUsage {
        if settle {
            self.terms.run_pending_tasks();
            self.queries.run_pending_tasks();
            self.assembled.run_pending_tasks();
        }
        StatsCacheUsage {
            bytes: self.terms.weighted_size() + self.assembled.weighted_size(),
            terms: self.terms.entry_count(),
            queries: self.queries.entry_count(),
        }
    }

    /// Tracks background round trips on `tasks` (the server's, drained on
    /// shutdown).
    pub fn with_tasks(mut self, tasks: TaskTracker) -> Self {
        self.tasks = tasks;
        self
    }

    /// Statistics for `query`, from the cache or from one round trip to one
    /// replica of every shard if it ends by `deadline` (see
    /// `FETCH_BUDGET`).
    pub async fn for_query(
        &self,
        query: &str,
        fanout: &Arc<Fanout>,
        deadline: Instant,
    ) -> Arc<QueryStats> {
        let topology = fanout.routing().snapshot();
        let generations = topology.generations();
        let set = xxh3_64(
            &generations
                .iter()
                .flat_map(|g| g.to_le_bytes())
                .collect::<Vec<u8>>(),
        );
        let key = (set, query.to_string());
        if let Some(assembled) = self.assembled.get(&key) {
            return assembled;
        }
        let normalized = crate::cluster::cache_client::normalize(query);
        if let Some(warm) = self.warm(set, &normalized, query) {
            let warm = Arc::new(warm);
            self.assembled.insert(key, Arc::clone(&warm));
            return warm;
        }
        let cache = self.clone();
        let owned = query.to_string();
        let fanout = Arc::clone(fanout);
        let fetch = self.tasks.spawn(async move {
            cache
                .fetch(
                    &owned,
                    &fanout,
                    &topology.shards,
                    &generations,
                    set,
                    normalized,
                )
                .await
        });
        match tokio::time::timeout_at(deadline, fetch).await {
            Ok(Ok(stats)) => Arc::new(stats),
            // Out of time: the fetch goes on and fills the cache.
            Ok(Err(_)) | Err(_) => Arc::new(QueryStats::local()),
        }
    }

    /// One `TermStats` round trip to one replica of every shard, within
    /// [`FETCH_BUDGET`]; complete answers go into the cache. Each shard's
    /// call is the fan-out's ([`Fanout::call`]): replica choice with the
    /// stuck rule, hedged, retried elsewhere on a failure.
    async fn fetch(
        &self,
        query: &str,
        fanout: &Fanout,
        shards: &[Vec<Arc<crate::cluster::topology::Replica>>],
        generations: &[u64],
        set: u64,
        normalized: String,
    ) -> QueryStats {
        // Any replica of a shard will do (statistics are identical across
        // replicas of one generation), as long as it serves the generation
        // the set names, so that during a rolling swap the statistics of
        // the new generation are fetched and cached under it, never those
        // of the old one; failing that, the shard's newest.
        let until = Instant::now() + FETCH_BUDGET;
        let excluded: Vec<Vec<bool>> = shards
            .iter()
            .enumerate()
            .map(|(shard, replicas)| {
                let wanted = generations
                    .get(shard)
                    .copied()
                    .filter(|&g| replicas.iter().any(|r| r.member.generation == g))
                    .or_else(|| replicas.iter().map(|r| r.member.generation).max());
                replicas
                    .iter()
                    .map(|r| Some(r.member.generation) != wanted)
                    .collect()
            })
            .collect();
        // Shards whose replicas share a process ask it once.
        let primaries = fanout.primaries(shards, &excluded);
        let budget = until.saturating_duration_since(Instant::now());
        let batches = fanout.batches(shards, &primaries, |client, ids| {
            let query = query.to_string();
            async move {
                let answers = client.term_stats_shards(&query, ids, budget).await?;
                Ok(Arc::new(
                    answers
                        .into_iter()
                        .map(|answer| (answer.shard, stats_answer(answer)))
                        .collect(),
                ))
            }
            .boxed()
        });
        let calls = shards.iter().enumerate().map(|(shard, replicas)| {
            let plan = CallPlan {
                excluded: excluded[shard].clone(),
                first: primaries[shard],
                ..CallPlan::new(CallKind::Stats)
            };
            let batch = batches[shard].clone();
            async move {
                let shard = shard as u32;
                let report = fanout
                    .call(shard, replicas, &plan, until, |replica, budget| {
                        if let Some(part) = batch.as_ref().and_then(|b| b.part(&replica, shard)) {
                            return part;
                        }
                        let query = query.to_string();
                        async move { replica.client.term_stats(&query, budget).await }.boxed()
                    })
                    .await;
                match report.outcome {
                    Called::Answered { value, .. } => Some(value),
                    _ => None,
                }
            }
        });
        let answers = futures::future::join_all(calls).await;
        let complete = answers.iter().all(|a| {
            a.as_ref()
                .is_some_and(|a| generations.get(a.shard as usize) == Some(&a.generation))
        });
        let (totals, per_term, answered) = gather(
            answers
                .iter()
                .map(|answer| answer.as_ref().and_then(|a| a.stats.as_ref())),
        );
        if answered == 0 {
            return QueryStats::local();
        }
        if complete {
            self.totals.insert(set, Arc::new(totals.clone()));
            for ((field, term), pair) in &per_term {
                self.terms
                    .insert((set, field.clone(), term.clone()), Arc::clone(pair));
            }
            self.queries.insert(
                (set, normalized),
                Arc::new(per_term.keys().cloned().collect()),
            );
        }
        let mut result = assemble(&totals, &per_term, clauses(query));
        result.source = if complete {
            // Served warm from now on (`result` is still `Warm` here).
            self.assembled
                .insert((set, query.to_string()), Arc::new(result.clone()));
            StatsSource::Fetched
        } else {
            StatsSource::Partial
        };
        if !complete {
            result.evidence = None;
        }
        result
    }

    /// Statistics from the cache alone, if every piece is there.
    fn warm(&self, set: u64, normalized: &str, query: &str) -> Option<QueryStats> {
        let totals = self.totals.get(&set)?;
        let pairs = match self.queries.get(&(set, normalized.to_string())) {
            Some(pairs) => pairs,
            None => Arc::new(local_terms(query)?),
        };
        let mut per_term = BTreeMap::new();
        for (field, term) in pairs.iter() {
            let pair = self.terms.get(&(set, field.clone(), term.clone()))?;
            per_term.insert((field.clone(), term.clone()), pair);
        }
        let mut result = assemble(&totals, &per_term, clauses(query));
        result.source = StatsSource::Warm;
        Some(result)
    }
}

/// Per-shard totals and document frequencies from the shards' answers (in
/// shard order; `None` for a shard that did not answer), and how many did.
fn gather<'a>(
    answers: impl ExactSizeIterator<Item = Option<&'a CorpusStats>>,
) -> (Totals, PerTerm, usize) {
    let shards = answers.len();
    let mut docs = vec![0u64; shards];
    let mut tokens: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut pairs: BTreeMap<Pair, PairStats> = BTreeMap::new();
    let mut answered = 0;
    for (shard, stats) in answers.enumerate() {
        let Some(stats) = stats else {
            continue;
        };
        answered += 1;
        docs[shard] = stats.num_docs;
        for field in &stats.fields {
            tokens
                .entry(field.field.clone())
                .or_insert_with(|| vec![0; shards])[shard] = field.total_tokens;
        }
        for term in &stats.terms {
            let pair = pairs
                .entry((term.field.clone(), term.term.clone()))
                .or_insert_with(|| PairStats {
                    freqs: vec![0; shards],
                    top: vec![Box::default(); shards],
                    layouts: vec![0; shards],
                });
            pair.freqs[shard] = term.doc_freq;
            pair.layouts[shard] = stats.layout;
            pair.top[shard] = term.top.iter().map(champion).collect();
        }
    }
    let per_term = pairs
        .into_iter()
        .map(|(pair, stats)| (pair, Arc::new(stats)))
        .collect();
    (Totals { docs, tokens }, per_term, answered)
}

/// The summed statistics of a query and its evidence; champion lists enter
/// the evidence only for a query of plain words (see [`clauses`]).
fn assemble(
    totals: &Totals,
    per_term: &PerTerm,
    clauses: Option<BTreeMap<String, Occur>>,
) -> QueryStats {
    let stats = CorpusStats {
        num_docs: totals.docs.iter().sum(),
        fields: totals
            .tokens
            .iter()
            .map(|(field, per_shard)| FieldStats {
                field: field.clone(),
                total_tokens: per_shard.iter().sum(),
            })
            .collect(),
        terms: per_term
            .iter()
            .map(|((field, term), pair)| TermStat {
                field: field.clone(),
                term: term.clone(),
                doc_freq: pair.freqs.iter().sum(),
                top: Vec::new(),
            })
            .collect(),
        layout: 0,
    };
    let free_words = clauses
        .as_ref()
        .is_some_and(|clauses| clauses.values().all(|occur| *occur == Occur::Should));
    let evidence = (!per_term.is_empty()).then(|| {
        let impacts = clauses.and_then(|clauses| {
            per_term
                .iter()
                .map(|((field, term), pair)| {
                    let occur = *clauses.get(term)?;
                    let tokens = totals
                        .tokens
                        .get(field)
                        .map_or(0, |per_shard| per_shard.iter().sum::<u64>());
                    Some(PairModel::new(
                        occur,
                        field_weight(field) as f32,
                        pair.freqs.iter().sum(),
                        stats.num_docs,
                        tokens,
                        Arc::clone(pair),
                    ))
                })
                .collect()
        });
        Arc::new(Evidence {
            share: answer_share(&totals.docs, per_term),
            impacts,
        })
    });
    QueryStats {
        stats: Some(stats),
        evidence,
        source: StatsSource::Warm,
        shard_docs: totals.docs.clone(),
        free_words,
        floors: Arc::default(),
    }
}

/// How many of a query's best documents [`answer_share`] places: a first
/// page. The share barely depends on it (on the npm benchmark, one to
/// three pages give the same per-query error within 0.002), so it is fixed
/// rather than taken from each request's `k`.
const ANSWER_DEPTH: f64 = 10.0;

/// Weight of a match in `field`, as the leaves score it: the leaf's title
/// boost; other fields weigh 1.
fn field_weight(field: &str) -> f64 {
    f64::from(scoring::field_boost(field))
}

/// Each shard's expected share of the query's best [`ANSWER_DEPTH`]
/// documents, from per-shard document frequencies of its (field, term)
/// pairs.
///
/// Documents lie in shards by a hash of their id, so a shard holds a pair's
/// documents in proportion to its document frequency. Which pairs the best
/// documents carry follows BM25: a rare term in a boosted field scores
/// highest. So the places of the answer are filled pair by pair, the
/// highest-weighted first (field weight × BM25 idf), each pair taking as
/// many places as it has documents and spreading them over shards in
/// proportion to its per-shard frequencies. A query whose rare term is in
/// ten documents thus puts its answer where those ten are, not where the
/// common terms are. A shard with none of the pairs gets no share; when no
/// shard has any, every share is zero (nothing can be missing).
fn answer_share(totals_docs: &[u64], per_term: &PerTerm) -> Vec<f64> {
    let shards = totals_docs.len();
    let num_docs = totals_docs.iter().sum::<u64>() as f64;
    let mut pairs: Vec<(f64, u64, &Vec<u64>)> = per_term
        .iter()
        .map(|((field, _), pair)| {
            let per_shard = &pair.freqs;
            let df: u64 = per_shard.iter().take(shards).sum();
            let idf = scoring::bm25_idf_f64(df as f64, num_docs);
            (field_weight(field) * idf, df, per_shard)
        })
        .filter(|&(_, df, _)| df > 0)
        .collect();
    pairs.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut places = vec![0.0; shards];
    let mut left = ANSWER_DEPTH;
    for (_, df, per_shard) in pairs {
        if left <= 0.0 {
            break;
        }
        let taken = left.min(df as f64);
        for (place, &freq) in places.iter_mut().zip(per_shard) {
            *place += taken * freq as f64 / df as f64;
        }
        left -= taken;
    }
    let filled: f64 = places.iter().sum();
    if filled <= 0.0 {
        return vec![0.0; shards];
    }
    places.iter().map(|p| p / filled).collect()
}

/// The words of `query` and how each occurs, when the query is made of
/// plain words only: each a single token (a hyphenated word is a phrase),
/// optionally `+`required or `-`excluded, no phrases, fields or groups.
/// Champion lists can predict the scores of such a query only.
fn clauses(query: &str) -> Option<BTreeMap<String, Occur>> {
    let mut words: BTreeMap<String, Occur> = BTreeMap::new();
    let mut required = 0u8;
    for word in query.split_whitespace() {
        let (occur, text) = match word.as_bytes()[0] {
            b'+' => (Occur::Must(required), &word[1..]),
            b'-' => (Occur::MustNot, &word[1..]),
            _ => (Occur::Should, word),
        };
        if text.is_empty()
            || text.len() > MAX_TOKEN_BYTES
            || !text.chars().all(char::is_alphanumeric)
            || matches!(text, "AND" | "OR" | "NOT" | "IN")
        {
            return None;
        }
        match words.entry(text.to_lowercase()) {
            std::collections::btree_map::Entry::Vacant(entry) => {
                if let Occur::Must(_) = occur {
                    // Required words are told apart by a bit of a u32.
                    if required == 32 {
                        return None;
                    }
                    required += 1;
                }
                entry.insert(occur);
            }
            std::collections::btree_map::Entry::Occupied(entry) => {
                let same = matches!(
                    (entry.get(), occur),
                    (Occur::Should, Occur::Should)
                        | (Occur::Must(_), Occur::Must(_))
                        | (Occur::MustNot, Occur::MustNot)
                );
                if !same {
                    return None;
                }
            }
        }
    }
    (!words.is_empty()).then_some(words)
}

/// The (field, term) pairs tantivy's default tokenizer would make of a
/// plain query, or `None` when the query uses syntax that only the leaf's
/// parser understands (field names, ranges, grouping).
fn local_terms(query: &str) -> Option<Vec<(String, String)>> {
    if query.contains([':', '(', ')', '[', ']', '{', '}', '^', '*', '~']) {
        return None;
    }
    let mut terms: Vec<String> = query
        .split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty() && t.len() <= MAX_TOKEN_BYTES)
        .map(str::to_lowercase)
        .collect();
    terms.sort();
    terms.dedup();
    if terms.is_empty() {
        return None;
    }
    Some(
        FIELDS
            .iter()
            .flat_map(|field| terms.iter().map(move |t| (field.to_string(), t.clone())))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_terms_fold_case_and_split_like_the_default_tokenizer() {
        let terms = local_terms("+JSON -parser \"fast-stream\"").unwrap();
        let body: Vec<&str> = terms
            .iter()
            .filter(|(f, _)| f == "body")
            .map(|(_, t)| t.as_str())
            .collect();
        assert_eq!(body, ["fast", "json", "parser", "stream"]);
        assert!(local_terms("title:json").is_none());
    }

    /// The fan-out (the stats calls' replica choice and hedging) over
    /// `routing`, with the default configuration.
    /// Leaves `(address, shard, generation, delay)` and a routing table of
    /// them (leases in that order).
    #[allow(clippy::type_complexity)]
    fn routed(
        specs: &[(&str, u32, u64, Duration)],
    ) -> (
        Vec<(String, Arc<SlowStats>)>,
        Arc<crate::cluster::topology::Routing>,
    ) {
        let leaves: Vec<(String, Arc<SlowStats>)> = specs
            .iter()
            .map(|&(address, shard, generation, delay)| {
                let leaf = Arc::new(SlowStats {
                    shard,
                    generation,
                    delay,
                    calls: Default::default(),
                });
                (address.to_string(), leaf)
            })
            .collect();
        let lookup = leaves.clone();
        let factory: crate::cluster::topology::ClientFactory =
            Arc::new(move |member: &lease::Member| {
                let (_, leaf) = lookup.iter().find(|(a, _)| *a == member.address)?;
                Some(Arc::clone(leaf) as Arc<dyn crate::cluster::leaf_client::LeafService>)
            });
        let routing = crate::cluster::topology::Routing::new(2, factory);
        routing.apply(
            &leaves
                .iter()
                .enumerate()
                .map(|(i, (address, leaf))| lease::Member {
                    lease_id: i as u64 + 1,
                    role: lease::Role::Leaf,
                    shard: leaf.shard,
                    address: address.clone(),
                    generation: leaf.generation,
                })
                .collect::<Vec<_>>(),
        );
        (leaves, routing)
    }

    fn over(routing: &Arc<crate::cluster::topology::Routing>) -> Arc<Fanout> {
        let metrics = Arc::new(crate::metrics::Metrics::new(prometheus::Registry::new()).unwrap());
        Arc::new(Fanout::new(
            Arc::clone(routing),
            crate::query::fanout::FanoutConfig::default(),
            metrics,
        ))
    }

    /// A leaf whose `TermStats` takes `delay` and reports `json` in five
    /// of its hundred documents.
    struct SlowStats {
        shard: u32,
        generation: u64,
        delay: Duration,
        calls: std::sync::atomic::AtomicUsize,
    }

    #[async_trait::async_trait]
    impl crate::cluster::leaf_client::LeafService for SlowStats {
        async fn search(
            &self,
            _: proto::leaf::SearchRequest,
            _: Duration,
        ) -> Result<proto::leaf::SearchResponse, crate::cluster::leaf_client::CallError> {
            Err(crate::cluster::leaf_client::CallError::Failed(
                "not used".into(),
            ))
        }

        async fn term_stats(
            &self,
            _: &str,
            _: Duration,
        ) -> Result<proto::leaf::TermStatsResponse, crate::cluster::leaf_client::CallError>
        {
            self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(self.delay).await;
            // Champion lists: the five documents, each shard its own.
            let top: Vec<Impact> = (0..5)
                .map(|doc| Impact {
                    doc: u64::from(doc * 2 + self.shard),
                    term_freq: 1 + doc,
                    field_length: 10,
                })
                .collect();
            let term = |field: &str| TermStat {
                field: field.to_string(),
                term: "json".to_string(),
                doc_freq: 5,
                top: top.clone(),
            };
            Ok(proto::leaf::TermStatsResponse {
                shard: self.shard,
                generation: self.generation,
                stats: Some(CorpusStats {
                    num_docs: 100,
                    fields: ["body", "title"]
                        .map(|field| FieldStats {
                            field: field.to_string(),
                            total_tokens: 1000,
                        })
                        .into(),
                    terms: vec![term("body"), term("title")],
                    layout: 1,
                }),
            })
        }

        async fn info(
            &self,
            _: Duration,
        ) -> Result<proto::leaf::InfoResponse, crate::cluster::leaf_client::CallError> {
            Err(crate::cluster::leaf_client::CallError::Failed(
                "not used".into(),
            ))
        }
    }

    /// Two shards served by one process (address `p`): each shard's
    /// client of it, counting the calls of either kind.
    struct CoHosted {
        shard: Arc<SlowStats>,
        batches: Arc<std::sync::atomic::AtomicUsize>,
        all: Vec<Arc<SlowStats>>,
    }

    #[async_trait::async_trait]
    impl crate::cluster::leaf_client::LeafService for CoHosted {
        async fn search(
            &self,
            request: proto::leaf::SearchRequest,
            budget: Duration,
        ) -> Result<proto::leaf::SearchResponse, crate::cluster::leaf_client::CallError> {
            self.shard.search(request, budget).await
        }

        async fn term_stats(
            &self,
            query: &str,
            budget: Duration,
        ) -> Result<proto::leaf::TermStatsResponse, crate::cluster::leaf_client::CallError>
        {
            self.shard.term_stats(query, budget).await
        }

        async fn term_stats_shards(
            &self,
            query: &str,
            shards: Vec<u32>,
            budget: Duration,
        ) -> Result<Vec<proto::leaf::TermStatsAnswer>, crate::cluster::leaf_client::CallError>
        {
            self.batches
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut answers = Vec::new();
            for shard in shards {
                let response = self.all[shard as usize].term_stats(query, budget).await?;
                answers.push(proto::leaf::TermStatsAnswer {
                    shard,
                    response: Some(response),
                    ..Default::default()
                });
            }
            Ok(answers)
        }

        async fn info(
            &self,
            budget: Duration,
        ) -> Result<proto::leaf::InfoResponse, crate::cluster::leaf_client::CallError> {
            self.shard.info(budget).await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn shards_of_one_process_share_one_statistics_call() {
        let mut figures = Vec::new();
        for batch_shards in [true, false] {
            let all: Vec<Arc<SlowStats>> = (0..2)
                .map(|shard| {
                    Arc::new(SlowStats {
                        shard,
                        generation: 1,
                        delay: Duration::from_millis(1),
                        calls: Default::default(),
                    })
                })
                .collect();
            let batches = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let (lookup, counter) = (all.clone(), Arc::clone(&batches));
            let factory: crate::cluster::topology::ClientFactory =
                Arc::new(move |member: &lease::Member| {
                    Some(Arc::new(CoHosted {
                        shard: Arc::clone(&lookup[member.shard as usize]),
                        batches: Arc::clone(&counter),
                        all: lookup.clone(),
                    })
                        as Arc<dyn crate::cluster::leaf_client::LeafService>)
                });
            let routing = crate::cluster::topology::Routing::new(2, factory);
            routing.apply(
                &(0..2)
                    .map(|shard| lease::Member {
                        lease_id: u64::from(shard) + 1,
                        role: lease::Role::Leaf,
                        shard,
                        address: "p".into(),
                        generation: 1,
                    })
                    .collect::<Vec<_>>(),
            );
            let metrics =
                Arc::new(crate::metrics::Metrics::new(prometheus::Registry::new()).unwrap());
            let fanout = Arc::new(Fanout::new(
                routing,
                crate::query::fanout::FanoutConfig {
                    batch_shards,
                    ..Default::default()
                },
                metrics,
            ));
            let cache = TermStatsCache::default();
            let stats = cache
                .for_query("json", &fanout, Instant::now() + Duration::from_secs(1))
                .await;
            assert_eq!(stats.source.label(), "fetched");
            let singles: usize = all
                .iter()
                .map(|leaf| leaf.calls.load(std::sync::atomic::Ordering::SeqCst))
                .sum();
            figures.push((
                batches.load(std::sync::atomic::Ordering::SeqCst),
                singles,
                stats.stats.clone(),
            ));
        }
        // Batched: one call (which asked each shard once); else one per shard.
        assert_eq!((figures[0].0, figures[0].1), (1, 2));
        assert_eq!((figures[1].0, figures[1].1), (0, 2));
        assert_eq!(figures[0].2, figures[1].2, "the same statistics either way");
        assert_eq!(figures[0].2.as_ref().unwrap().num_docs, 200);
    }

    /// A query seen again is served its assembled statistics, score floors
    /// included, and they equal what the caches of terms make of it; a new
    /// generation set is not served the old one's.
    #[tokio::test(start_paused = true)]
    async fn a_query_seen_again_reuses_its_assembled_statistics() {
        let (leaves, routing) = routed(&[
            ("leaf0", 0, 1, Duration::from_millis(1)),
            ("leaf1", 1, 1, Duration::from_millis(1)),
        ]);
        let cache = TermStatsCache::default();
        let fanout = over(&routing);
        let deadline = || Instant::now() + Duration::from_millis(100);
        let query = "json parser";
        let fetched = cache.for_query(query, &fanout, deadline()).await;
        assert_eq!(fetched.source.label(), "fetched");
        let warm = cache.for_query(query, &fanout, deadline()).await;
        assert_eq!(warm.source.label(), "warm");
        let again = cache.for_query(query, &fanout, deadline()).await;
        assert!(Arc::ptr_eq(&warm, &again), "assembled once, then reused");
        // A query whose pieces are all cached but which was never fetched
        // itself is assembled, then reused.
        let other = "JSON  Parser";
        let first = cache.for_query(other, &fanout, deadline()).await;
        assert_eq!(first.source.label(), "warm");
        assert!(!Arc::ptr_eq(&first, &again), "kept by the query as sent");
        let second = cache.for_query(other, &fanout, deadline()).await;
        assert!(Arc::ptr_eq(&first, &second));
        // The same figures as assembling anew from the caches of terms.
        let set = xxh3_64(
            &[1u64, 1]
                .iter()
                .flat_map(|g| g.to_le_bytes())
                .collect::<Vec<u8>>(),
        );
        let fresh = cache.warm(set, &crate::cluster::cache_client::normalize(query), query);
        let fresh = fresh.expect("every piece cached");
        assert_eq!(again.stats, fresh.stats);
        assert_eq!(again.shard_docs, fresh.shard_docs);
        for k in [1, 3, 10, 3, 1] {
            let floor = again.score_floor(k);
            assert_eq!(floor, fresh.score_floor(k), "k = {k}");
            let pairs = again.evidence.as_ref().unwrap().impacts.as_deref().unwrap();
            assert_eq!(
                floor,
                crate::query::estimate::score_floor(pairs, k),
                "k = {k}"
            );
        }
        assert!(again.score_floor(1).is_some(), "the test needs floors");
        assert_eq!(again.floors.lock().len(), 3, "one memo per k");
        let calls = |leaves: &[(String, Arc<SlowStats>)]| -> usize {
            leaves
                .iter()
                .map(|(_, leaf)| leaf.calls.load(std::sync::atomic::Ordering::SeqCst))
                .sum()
        };
        assert_eq!(calls(&leaves), 2, "one round trip in all");

        // Leaves of a new generation: another set, fetched again.
        let (newer, routing) = routed(&[
            ("leaf0", 0, 2, Duration::from_millis(1)),
            ("leaf1", 1, 2, Duration::from_millis(1)),
        ]);
        let next = cache.for_query(query, &over(&routing), deadline()).await;
        assert_eq!(next.source.label(), "fetched");
        assert!(!Arc::ptr_eq(&next, &again));
        assert_eq!(calls(&newer), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_round_trip_cut_off_by_the_deadline_still_warms_the_cache() {
        let (leaves, routing) = routed(&[
            ("leaf0", 0, 1, Duration::from_millis(50)),
            ("leaf1", 1, 1, Duration::from_millis(50)),
        ]);
        let cache = TermStatsCache::default();
        let fanout = over(&routing);
        let deadline = || Instant::now() + Duration::from_millis(10);

        // The round trip takes longer than the query may wait: local
        // scoring, said so.
        let first = cache.for_query("json", &fanout, deadline()).await;
        assert_eq!(first.source.label(), "local");
        assert!(first.stats.is_none());

        // It went on, and the next query with the term is warm without
        // another round trip.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let second = cache.for_query("JSON", &fanout, deadline()).await;
        assert_eq!(second.source.label(), "warm");
        let stats = second.stats.clone().unwrap();
        assert_eq!(stats.num_docs, 200);
        assert!(stats.terms.iter().all(|term| term.doc_freq == 10));
        let calls: usize = leaves
            .iter()
            .map(|(_, leaf)| leaf.calls.load(std::sync::atomic::Ordering::SeqCst))
            .sum();
        assert_eq!(calls, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn during_a_rolling_swap_statistics_come_from_the_new_generation() {
        // Shard 0: one replica still on generation 1 (first by address), one
        // on 2; shard 1 on 2.
        let (leaves, routing) = routed(&[
            ("leaf0a", 0, 1, Duration::from_millis(1)),
            ("leaf0b", 0, 2, Duration::from_millis(1)),
            ("leaf1", 1, 2, Duration::from_millis(1)),
        ]);
        let cache = TermStatsCache::default();
        let fanout = over(&routing);
        let deadline = || Instant::now() + Duration::from_secs(1);
        let first = cache.for_query("json", &fanout, deadline()).await;
        assert_eq!(
            first.source.label(),
            "fetched",
            "complete, from generation 2"
        );
        assert_eq!(
            leaves[0].1.calls.load(std::sync::atomic::Ordering::SeqCst),
            0
        );
        let second = cache.for_query("json", &fanout, deadline()).await;
        assert_eq!(second.source.label(), "warm");

        // The last replica moves on: same set, still warm. One that goes
        // back to generation 1 alone makes a new set: fetched again.
        routing.apply(&[
            lease::Member {
                lease_id: 9,
                role: lease::Role::Leaf,
                shard: 0,
                address: "leaf0a".into(),
                generation: 1,
            },
            lease::Member {
                lease_id: 3,
                role: lease::Role::Leaf,
                shard: 1,
                address: "leaf1".into(),
                generation: 2,
            },
        ]);
        let third = cache.for_query("json", &fanout, deadline()).await;
        assert_eq!(
            third.source.label(),
            "fetched",
            "another generation set is cold"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn statistics_do_not_wait_for_a_hung_replica() {
        // Shard 0: leaf0a hangs (a frozen process; first by address, where
        // a fixed choice would go), leaf0b answers; shard 1: leaf1.
        let (leaves, routing) = routed(&[
            ("leaf0a", 0, 1, Duration::from_secs(3600)),
            ("leaf0b", 0, 1, Duration::from_millis(1)),
            ("leaf1", 1, 1, Duration::from_millis(1)),
        ]);
        let cache = TermStatsCache::default();
        let fanout = over(&routing);
        // Distinct queries whose terms the cache does not know: a round
        // trip each.
        for i in 0..10 {
            let query = format!("json q{i}");
            let stats = cache
                .for_query(&query, &fanout, Instant::now() + Duration::from_secs(1))
                .await;
            assert_eq!(stats.source.label(), "fetched", "{query}");
        }
        // The hung replica got at most one call: the one it still owes
        // (hedged to its peer), after which it is stuck and gets none.
        let hung = leaves[0].1.calls.load(std::sync::atomic::Ordering::SeqCst);
        assert!(hung <= 1, "{hung} statistics calls to the hung replica");
        let peer = leaves[1].1.calls.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(peer, 10);
    }

    #[test]
    fn plain_words_and_operators_become_clauses_and_other_syntax_does_not() {
        let words = clauses("+React router -vue +hooks").unwrap();
        assert_eq!(words["react"], Occur::Must(0));
        assert_eq!(words["router"], Occur::Should);
        assert_eq!(words["vue"], Occur::MustNot);
        assert_eq!(words["hooks"], Occur::Must(1));
        for query in [
            "\"http server\"",
            "title:json",
            "fast-stream",
            "node.js",
            "json AND parser",
            "+",
            "json -json",
            "(json)",
            "   ",
        ] {
            assert_eq!(clauses(query), None, "{query}");
        }
    }

    /// Per-term statistics from document frequencies alone.
    fn freqs<const N: usize>(pairs: [((&str, &str), Vec<u64>); N]) -> PerTerm {
        pairs
            .into_iter()
            .map(|((field, term), freqs)| {
                let top = vec![Box::default(); freqs.len()];
                let layouts = vec![0; freqs.len()];
                let stats = PairStats {
                    freqs,
                    top,
                    layouts,
                };
                ((field.to_string(), term.to_string()), Arc::new(stats))
            })
            .collect()
    }

    fn approx(a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(a, b)| (a - b).abs() < 1e-9)
    }

    #[test]
    fn match_share_follows_document_frequencies() {
        let totals = Totals {
            docs: vec![100, 100],
            tokens: BTreeMap::from([("body".to_string(), vec![1000, 1000])]),
        };
        let per_term = freqs([(("body", "a"), vec![3, 0]), (("body", "b"), vec![1, 1])]);
        let stats = assemble(&totals, &per_term, clauses("a b"));
        // The rarer b fills two places, one per shard; a fills three, all
        // in shard 0.
        assert!(approx(&stats.evidence.unwrap().share, &[0.8, 0.2]));
        let corpus = stats.stats.unwrap();
        assert_eq!(corpus.num_docs, 200);
        assert_eq!(corpus.fields[0].total_tokens, 2000);
        assert_eq!(corpus.terms.len(), 2);
        assert_eq!(corpus.terms[0].doc_freq, 3);
    }

    #[test]
    fn a_rare_term_decides_where_the_answer_is() {
        let docs = [10_000, 10_000];
        let per_term = freqs([
            (("body", "common"), vec![500, 500]),
            (("body", "rare"), vec![0, 4]),
        ]);
        // Four places go where the rare term is, six are spread evenly.
        assert!(approx(&answer_share(&docs, &per_term), &[0.3, 0.7]));
        // A title match outweighs a body match of the same frequency.
        let per_term = freqs([(("body", "x"), vec![0, 20]), (("title", "x"), vec![20, 0])]);
        assert!(approx(&answer_share(&docs, &per_term), &[1.0, 0.0]));
        // No shard with any match: nothing to lose anywhere.
        let per_term = freqs([(("body", "none"), vec![0, 0])]);
        assert_eq!(answer_share(&docs, &per_term), vec![0.0, 0.0]);
    }
}
