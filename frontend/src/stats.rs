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
//! shards hold the query's matches (see [`crate::quality`]).

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
    /// Each shard's expected share of the query's matches.
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
    queries: Cache<(u64, String), Arc<Vec<(String, String)>>>,
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
) -> (Totals, BTreeMap<(String, String), Vec<u64>>, usize) {
    let shards = answers.len();
    let mut docs = vec![0u64; shards];
    let mut tokens: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut per_term: BTreeMap<(String, String), Vec<u64>> = BTreeMap::new();
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

fn assemble(totals: &Totals, per_term: &BTreeMap<(String, String), Vec<u64>>) -> QueryStats {
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
    // A shard's matches are estimated by the largest document frequency of
    // any of the query's terms in it (a lower bound of an OR's matches).
    let shards = totals.docs.len();
    let mut matches = vec![0u64; shards];
    for per_shard in per_term.values() {
        for (shard, &freq) in per_shard.iter().enumerate().take(shards) {
            matches[shard] = matches[shard].max(freq);
        }
    }
    let sum: u64 = matches.iter().sum();
    let match_share = if per_term.is_empty() {
        None
    } else if sum == 0 {
        Some(vec![0.0; shards])
    } else {
        Some(matches.iter().map(|&m| m as f64 / sum as f64).collect())
    };
    QueryStats {
        stats: Some(stats),
        match_share,
        source: "warm",
        shard_docs: totals.docs.clone(),
    }
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
        assert_eq!(stats.match_share, Some(vec![0.75, 0.25]));
        let corpus = stats.stats.unwrap();
        assert_eq!(corpus.num_docs, 200);
        assert_eq!(corpus.fields[0].total_tokens, 2000);
        assert_eq!(corpus.terms.len(), 2);
        assert_eq!(corpus.terms[0].doc_freq, 3);
    }
}
