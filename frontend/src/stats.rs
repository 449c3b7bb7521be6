//! Corpus-wide term statistics, so that BM25 scores are comparable across
//! shards and a merge of all shards equals one unsharded index.
//!
//! For a query the frontend needs each term's document frequency summed
//! over shards, plus the corpus's document and token counts. Those come from
//! the leaves' `TermStats` RPC and are cached here per term and per set of
//! index generations (a reindexed shard changes the set, which makes every
//! old entry unreachable). A query seen before, or whose terms are all known,
//! costs no extra round trip. When statistics cannot be had in time, the
//! query is scored with shard-local statistics and the answer says so.
//!
//! Per-shard frequencies are kept too: they tell the accuracy estimate which
//! shards hold the query's best documents (`answer_share`, used by
//! [`crate::quality`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;
use proto::leaf::{CorpusStats, FieldStats, TermStat};
use tokio::time::Instant;
use xxhash_rust::xxh3::xxh3_64;

use crate::topology::Routing;

/// The fields the leaves search; their terms are looked up locally.
const FIELDS: [&str; 2] = ["title", "body"];
/// Tantivy's default tokenizer drops tokens longer than this.
const MAX_TOKEN_BYTES: usize = 40;

/// Statistics for one query.
#[derive(Clone, Debug)]
pub struct QueryStats {
    /// Summed statistics to send to the leaves; `None` means local scoring.
    pub stats: Option<CorpusStats>,
    /// Each shard's expected share of the query's answer, its best
    /// documents (see `answer_share`).
    pub match_share: Option<Vec<f64>>,
    /// `warm`, `fetched`, `partial` or `local`, for metrics.
    pub source: &'static str,
    /// Documents per shard as the statistics saw them (0: unknown).
    pub shard_docs: Vec<u64>,
}

impl QueryStats {
    pub fn local() -> Self {
        QueryStats {
            stats: None,
            match_share: None,
            source: "local",
            shard_docs: Vec::new(),
        }
    }

    /// What the frontend makes of every shard's own statistics for a query
    /// (each shard's `TermStats` answer, in shard order): their sum to score
    /// with, and each shard's share of the answer. The server's code path,
    /// public so that offline tools (the calibration benchmark) compute the
    /// same figures.
    pub fn from_shards(parts: &[CorpusStats]) -> QueryStats {
        let (totals, per_term, _) = gather(parts.iter().map(Some));
        let mut result = assemble(&totals, &per_term);
        result.source = "fetched";
        result
    }

    /// True when the statistics cover every shard.
    pub fn complete(&self) -> bool {
        matches!(self.source, "warm" | "fetched")
    }
}

/// Per-shard totals of one generation set.
/// A (field, term) pair.
type Pair = (String, String);
/// (field, term) → document frequency per shard.
type PerTerm = BTreeMap<Pair, Vec<u64>>;

#[derive(Clone, Debug)]
struct Totals {
    docs: Vec<u64>,
    /// Field name → total tokens per shard.
    tokens: BTreeMap<String, Vec<u64>>,
}

pub struct TermStatsCache {
    /// (generation set, field, term) → document frequency per shard.
    terms: Cache<(u64, String, String), Arc<Vec<u64>>>,
    /// (generation set, normalized query) → the (field, term) pairs the
    /// leaves reported for it.
    queries: Cache<(u64, String), Arc<Vec<Pair>>>,
    /// Generation set → per-shard totals.
    totals: Cache<u64, Arc<Totals>>,
}

impl Default for TermStatsCache {
    fn default() -> Self {
        Self::new(100_000)
    }
}

impl TermStatsCache {
    pub fn new(max_terms: u64) -> Self {
        TermStatsCache {
            terms: Cache::builder()
                .max_capacity(max_terms)
                .time_to_idle(Duration::from_secs(3600))
                .build(),
            queries: Cache::builder()
                .max_capacity(max_terms)
                .time_to_idle(Duration::from_secs(3600))
                .build(),
            totals: Cache::builder().max_capacity(64).build(),
        }
    }

    /// Statistics for `query`, from the cache or from one round trip to one
    /// replica of every shard that ends by `deadline`.
    pub async fn for_query(&self, query: &str, routing: &Routing, deadline: Instant) -> QueryStats {
        let topology = routing.snapshot();
        let generations = topology.generations();
        let set = xxh3_64(
            &generations
                .iter()
                .flat_map(|g| g.to_le_bytes())
                .collect::<Vec<u8>>(),
        );
        let normalized = crate::cache_tier::normalize(query);
        if let Some(warm) = self.warm(set, &normalized, query) {
            return warm;
        }
        // One replica per shard; the first live one (stats are identical
        // across replicas of one generation).
        let calls = topology.shards.iter().map(|replicas| {
            let replica = replicas.first().cloned();
            async move {
                let replica = replica?;
                let budget = deadline.saturating_duration_since(Instant::now());
                if budget.is_zero() {
                    return None;
                }
                replica.client.term_stats(query, budget).await.ok()
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
            for ((field, term), freqs) in &per_term {
                self.terms
                    .insert((set, field.clone(), term.clone()), Arc::new(freqs.clone()));
            }
            self.queries.insert(
                (set, normalized),
                Arc::new(per_term.keys().cloned().collect()),
            );
        }
        let mut result = assemble(&totals, &per_term);
        result.source = if complete { "fetched" } else { "partial" };
        if !complete {
            result.match_share = None;
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
            let freqs = self.terms.get(&(set, field.clone(), term.clone()))?;
            per_term.insert((field.clone(), term.clone()), freqs.as_ref().clone());
        }
        let mut result = assemble(&totals, &per_term);
        result.source = "warm";
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
    let mut per_term: PerTerm = BTreeMap::new();
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
            per_term
                .entry((term.field.clone(), term.term.clone()))
                .or_insert_with(|| vec![0; shards])[shard] = term.doc_freq;
        }
    }
    (Totals { docs, tokens }, per_term, answered)
}

fn assemble(totals: &Totals, per_term: &PerTerm) -> QueryStats {
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
            .map(|((field, term), per_shard)| TermStat {
                field: field.clone(),
                term: term.clone(),
                doc_freq: per_shard.iter().sum(),
            })
            .collect(),
    };
    let match_share = if per_term.is_empty() {
        None
    } else {
        Some(answer_share(&totals.docs, per_term))
    };
    QueryStats {
        stats: Some(stats),
        match_share,
        source: "warm",
        shard_docs: totals.docs.clone(),
    }
}

/// How many of a query's best documents [`answer_share`] places: a first
/// page. The share barely depends on it (on the npm benchmark, one to
/// three pages give the same per-query error within 0.002), so it is fixed
/// rather than taken from each request's `k`.
const ANSWER_DEPTH: f64 = 10.0;

/// Weight of a match in each field, as the leaves score it (the leaf's
/// title boost, `leaf/src/index.rs`); other fields weigh 1.
const FIELD_WEIGHTS: [(&str, f64); 2] = [("title", 2.0), ("body", 1.0)];

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
        .map(|((field, _), per_shard)| {
            let df: u64 = per_shard.iter().take(shards).sum();
            let weight = FIELD_WEIGHTS
                .iter()
                .find(|(name, _)| name == field)
                .map_or(1.0, |&(_, weight)| weight);
            let idf = (1.0 + (num_docs - df as f64 + 0.5) / (df as f64 + 0.5)).ln();
            (weight * idf, df, per_shard)
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

    fn approx(a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(a, b)| (a - b).abs() < 1e-9)
    }

    #[test]
    fn match_share_follows_document_frequencies() {
        let totals = Totals {
            docs: vec![100, 100],
            tokens: BTreeMap::from([("body".to_string(), vec![1000, 1000])]),
        };
        let per_term = BTreeMap::from([
            (("body".to_string(), "a".to_string()), vec![3, 0]),
            (("body".to_string(), "b".to_string()), vec![1, 1]),
        ]);
        let stats = assemble(&totals, &per_term);
        // The rarer b fills two places, one per shard; a fills three, all
        // in shard 0.
        assert!(approx(&stats.match_share.unwrap(), &[0.8, 0.2]));
        let corpus = stats.stats.unwrap();
        assert_eq!(corpus.num_docs, 200);
        assert_eq!(corpus.fields[0].total_tokens, 2000);
        assert_eq!(corpus.terms.len(), 2);
        assert_eq!(corpus.terms[0].doc_freq, 3);
    }

    #[test]
    fn a_rare_term_decides_where_the_answer_is() {
        let docs = [10_000, 10_000];
        let per_term = BTreeMap::from([
            (("body".to_string(), "common".to_string()), vec![500, 500]),
            (("body".to_string(), "rare".to_string()), vec![0, 4]),
        ]);
        // Four places go where the rare term is, six are spread evenly.
        assert!(approx(&answer_share(&docs, &per_term), &[0.3, 0.7]));
        // A title match outweighs a body match of the same frequency.
        let per_term = BTreeMap::from([
            (("body".to_string(), "x".to_string()), vec![0, 20]),
            (("title".to_string(), "x".to_string()), vec![20, 0]),
        ]);
        assert!(approx(&answer_share(&docs, &per_term), &[1.0, 0.0]));
        // No shard with any match: nothing to lose anywhere.
        let per_term = BTreeMap::from([(("body".to_string(), "none".to_string()), vec![0, 0])]);
        assert_eq!(answer_share(&docs, &per_term), vec![0.0, 0.0]);
    }

    #[test]
    fn from_shards_sums_like_the_leaves() {
        let docs = leaf::generate_corpus(600, 3);
        let parts: Vec<CorpusStats> = (0..3)
            .map(|shard| {
                leaf::ShardIndex::build_in_ram(shard, 3, &docs)
                    .unwrap()
                    .term_stats("json parser")
                    .unwrap()
            })
            .collect();
        let stats = QueryStats::from_shards(&parts);
        assert_eq!(stats.stats, Some(leaf::sum_corpus_stats(&parts)));
        assert_eq!(stats.shard_docs.iter().sum::<u64>(), 600);
        assert!(stats.complete());
        let share = stats.match_share.unwrap();
        assert_eq!(share.len(), 3);
        assert!((share.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert!(share.iter().all(|&s| s > 0.0), "{share:?}");
    }
}
