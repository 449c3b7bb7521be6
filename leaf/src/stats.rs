//! Corpus statistics for exact scores across shards.
//!
//! BM25 depends on three corpus-wide numbers: the document count, the token
//! count of each field, and each term's document frequency. A frontend asks
//! every shard for its numbers ([`ShardIndex::term_stats`], the `TermStats`
//! RPC), sums them ([`sum_corpus_stats`]) and sends the sum back with the
//! search; each shard then scores with `GlobalStatistics`, so that merging
//! the shards' top-k gives exactly the top-k of one unsharded index.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};

use proto::leaf::{CorpusStats, FieldStats, Impact, TermStat};
use tantivy::postings::Postings;
use tantivy::query::Bm25StatisticsProvider;
use tantivy::schema::{Field, IndexRecordOption};
use tantivy::{DocSet, Searcher, Term, TERMINATED};

use crate::error::{LeafError, Result};
use crate::index::ShardIndex;

impl ShardIndex {
    /// This shard's statistics for the terms `query` would use: document
    /// count, tokens of `title` and `body` (and of any other field the query
    /// names), and the document frequency of each (field, term).
    pub fn term_stats(&self, query: &str) -> Result<CorpusStats> {
        self.term_stats_at_depth(query, IMPACT_DEPTH)
    }

    /// [`ShardIndex::term_stats`] with champion lists of at most `depth`
    /// documents (0: none), for measuring what the lists cost.
    pub fn term_stats_at_depth(&self, query: &str, depth: usize) -> Result<CorpusStats> {
        let parsed = self.prepare(query, None)?.query;
        let schema = self.searcher.schema();
        let mut terms: BTreeSet<&Term> = BTreeSet::new();
        parsed.query().query_terms(&mut |term, _| {
            terms.insert(term);
        });
        let mut fields: BTreeSet<Field> = [self.fields.title, self.fields.body].into();
        let mut term_stats: Vec<TermStat> = Vec::with_capacity(terms.len());
        for term in terms {
            let value = term.value();
            let Some(text) = value.as_str() else {
                // Only text terms have BM25 statistics.
                continue;
            };
            fields.insert(term.field());
            term_stats.push(TermStat {
                field: schema.get_field_name(term.field()).to_string(),
                term: text.to_string(),
                doc_freq: self.searcher.doc_freq(term)?,
                top: if depth > 0 {
                    self.champions(term, depth)?.as_ref().clone()
                } else {
                    Vec::new()
                },
            });
        }
        let mut field_stats = Vec::with_capacity(fields.len());
        for field in fields {
            field_stats.push(FieldStats {
                field: schema.get_field_name(field).to_string(),
                total_tokens: Bm25StatisticsProvider::total_num_tokens(&self.searcher, field)?,
            });
        }
        // The same canonical order as [`sum_corpus_stats`].
        field_stats.sort_by(|a, b| a.field.cmp(&b.field));
        term_stats.sort_by(|a, b| (&a.field, &a.term).cmp(&(&b.field, &b.term)));
        Ok(CorpusStats {
            num_docs: Bm25StatisticsProvider::total_num_docs(&self.searcher)?,
            fields: field_stats,
            terms: term_stats,
            layout: self.layout,
        })
    }
}

pub use scoring::IMPACT_DEPTH;

pub use scoring::BM25_B;
pub use scoring::BM25_K1;

pub use scoring::bm25_tf_factor;

pub use scoring::bm25_idf;

impl ShardIndex {
    /// [`ShardIndex::impacts`], from the champion cache when it was
    /// computed before.
    pub fn champions(&self, term: &Term, depth: usize) -> Result<std::sync::Arc<Vec<Impact>>> {
        let key = (term.clone(), depth);
        if let Some(list) = self.champions.get(&key) {
            return Ok(list);
        }
        let list = std::sync::Arc::new(self.impacts(term, depth)?);
        self.champions.insert(key, std::sync::Arc::clone(&list));
        Ok(list)
    }

    /// The `depth` documents of this shard with the largest BM25 factor for
    /// `term` (its champion list), best first, ties by scan position. The
    /// factor uses the shard's own average field length; the frontend
    /// rescores them with corpus-wide statistics. Costs one pass over the
    /// term's postings.
    pub fn impacts(&self, term: &Term, depth: usize) -> Result<Vec<Impact>> {
        let field = term.field();
        let num_docs = self.searcher.num_docs().max(1);
        let tokens = Bm25StatisticsProvider::total_num_tokens(&self.searcher, field)?;
        let avg = (tokens as f32 / num_docs as f32).max(f32::MIN_POSITIVE);
        let mut best: Vec<(f32, Impact)> = Vec::new();
        let mut base = 0u64;
        for reader in self.searcher.segment_readers() {
            let postings = reader
                .inverted_index(field)?
                .read_postings(term, IndexRecordOption::WithFreqs)?;
            if let Some(mut postings) = postings {
                let norms = reader.get_fieldnorms_reader(field)?;
                let alive = reader.alive_bitset();
                let mut doc = postings.doc();
                while doc != TERMINATED {
                    if alive.is_none_or(|alive| alive.is_alive(doc)) {
                        let impact = Impact {
                            doc: base + u64::from(doc),
                            term_freq: postings.term_freq(),
                            field_length: norms.fieldnorm(doc),
                        };
                        let factor = bm25_tf_factor(impact.term_freq, impact.field_length, avg);
                        best.push((factor, impact));
                        if best.len() >= depth.max(1).saturating_mul(2) {
                            keep_best(&mut best, depth);
                        }
                    }
                    doc = postings.advance();
                }
            }
            base += u64::from(reader.max_doc());
        }
        keep_best(&mut best, depth);
        Ok(best.into_iter().map(|(_, impact)| impact).collect())
    }
}

/// Keeps the `depth` largest factors of `best`, sorted best first.
fn keep_best(best: &mut Vec<(f32, Impact)>, depth: usize) {
    let order =
        |a: &(f32, Impact), b: &(f32, Impact)| b.0.total_cmp(&a.0).then(a.1.doc.cmp(&b.1.doc));
    if best.len() > depth && depth > 0 {
        best.select_nth_unstable_by(depth - 1, order);
    }
    best.truncate(depth);
    best.sort_by(order);
}

/// Sums the statistics of several shards into corpus-wide statistics.
/// Fields and terms come out sorted, so the result is deterministic.
pub fn sum_corpus_stats<'a>(parts: impl IntoIterator<Item = &'a CorpusStats>) -> CorpusStats {
    let mut num_docs = 0u64;
    let mut fields: BTreeMap<&str, u64> = BTreeMap::new();
    let mut terms: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for part in parts {
        num_docs += part.num_docs;
        for field in &part.fields {
            *fields.entry(&field.field).or_default() += field.total_tokens;
        }
        for term in &part.terms {
            *terms.entry((&term.field, &term.term)).or_default() += term.doc_freq;
        }
    }
    CorpusStats {
        num_docs,
        fields: fields
            .into_iter()
            .map(|(field, total_tokens)| FieldStats {
                field: field.to_string(),
                total_tokens,
            })
            .collect(),
        terms: terms
            .into_iter()
            .map(|((field, term), doc_freq)| TermStat {
                field: field.to_string(),
                term: term.to_string(),
                doc_freq,
                top: Vec::new(),
            })
            .collect(),
        layout: 0,
    }
}

/// BM25 statistics taken from a request, with the shard's own as fallback
/// for anything the request lacks. Values are clamped so that no request
/// can make tantivy's BM25 assertions fail (a document frequency above the
/// document count).
pub(crate) struct GlobalStatistics<'a> {
    searcher: &'a Searcher,
    num_docs: u64,
    tokens: HashMap<Field, u64>,
    doc_freqs: HashMap<(Field, &'a str), u64>,
    /// Set when a look-up fell back to the shard's own statistics (a field
    /// or term the given statistics lack): weights built then are the
    /// shard's, not the corpus's.
    fell_back: AtomicBool,
}

impl<'a> GlobalStatistics<'a> {
    pub(crate) fn new(index: &'a ShardIndex, stats: &'a CorpusStats) -> Result<Self> {
        validate_stats(stats)?;
        let schema = index.searcher.schema();
        let tokens = stats
            .fields
            .iter()
            .filter(|field| field.total_tokens > 0)
            .filter_map(|field| Some((schema.get_field(&field.field).ok()?, field.total_tokens)))
            .collect();
        let doc_freqs = stats
            .terms
            .iter()
            .filter_map(|term| {
                let field = schema.get_field(&term.field).ok()?;
                Some(((field, term.term.as_str()), term.doc_freq))
            })
            .collect();
        Ok(GlobalStatistics {
            searcher: &index.searcher,
            num_docs: stats.num_docs,
            tokens,
            doc_freqs,
            fell_back: AtomicBool::new(false),
        })
    }
}

impl GlobalStatistics<'_> {
    /// Whether every look-up so far was answered by the given statistics:
    /// BM25 weights built from them alone are the same on every shard.
    pub(crate) fn corpus_wide(&self) -> bool {
        !self.fell_back.load(Ordering::Relaxed)
    }
}

/// Rejects statistics that cannot describe any corpus.
pub(crate) fn validate_stats(stats: &CorpusStats) -> Result<()> {
    if stats.num_docs == 0 {
        return Err(LeafError::InvalidArgument(
            "corpus stats must count at least one document".to_string(),
        ));
    }
    Ok(())
}

impl Bm25StatisticsProvider for GlobalStatistics<'_> {
    fn total_num_tokens(&self, field: Field) -> tantivy::Result<u64> {
        match self.tokens.get(&field) {
            Some(&tokens) => Ok(tokens),
            None => {
                self.fell_back.store(true, Ordering::Relaxed);
                Bm25StatisticsProvider::total_num_tokens(self.searcher, field)
            }
        }
    }

    fn total_num_docs(&self) -> tantivy::Result<u64> {
        Ok(self.num_docs)
    }

    fn doc_freq(&self, term: &Term) -> tantivy::Result<u64> {
        let given = term
            .value()
            .as_str()
            .and_then(|text| self.doc_freqs.get(&(term.field(), text)).copied());
        let doc_freq = match given {
            Some(doc_freq) => doc_freq,
            None => {
                self.fell_back.store(true, Ordering::Relaxed);
                self.searcher.doc_freq(term)?
            }
        };
        Ok(doc_freq.min(self.num_docs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builtin::generate_corpus;
    use crate::search::Budget;

    #[test]
    fn term_stats_lists_query_terms() {
        let docs = generate_corpus(400, 5);
        let index = ShardIndex::build_in_ram(0, 1, &docs).unwrap();
        let stats = index.term_stats("json \"http server\" -color").unwrap();
        assert_eq!(stats.num_docs, 400);
        let fields: Vec<&str> = stats.fields.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(fields, ["body", "title"]);
        assert!(stats.fields.iter().all(|f| f.total_tokens > 0));
        for term in ["json", "http", "server", "color"] {
            for field in ["title", "body"] {
                assert!(
                    stats
                        .terms
                        .iter()
                        .any(|t| t.term == term && t.field == field),
                    "{field}:{term} missing from {stats:?}"
                );
            }
        }
        let json_body = stats
            .terms
            .iter()
            .find(|t| t.term == "json" && t.field == "body")
            .unwrap();
        let expected = docs
            .iter()
            .filter(|d| {
                d.body
                    .to_lowercase()
                    .split(|c: char| !c.is_alphanumeric())
                    .any(|w| w == "json")
            })
            .count();
        assert_eq!(json_body.doc_freq, expected as u64);
    }

    #[test]
    fn sums_are_per_field_and_term() {
        let docs = generate_corpus(300, 6);
        let shards: Vec<ShardIndex> = (0..3)
            .map(|shard| ShardIndex::build_in_ram(shard, 3, &docs).unwrap())
            .collect();
        let whole = ShardIndex::build_in_ram(0, 1, &docs).unwrap();
        let parts: Vec<CorpusStats> = shards
            .iter()
            .map(|shard| shard.term_stats("react component").unwrap())
            .collect();
        let mut expected = whole.term_stats("react component").unwrap();
        for term in &mut expected.terms {
            term.top.clear();
        }
        expected.layout = 0;
        assert_eq!(sum_corpus_stats(&parts), expected);
    }

    /// A second query sharing terms with a first takes their champion
    /// lists from the cache, and answers exactly as computed afresh.
    #[test]
    fn cached_champion_lists_equal_fresh_ones() {
        let docs = generate_corpus(800, 9);
        let index = ShardIndex::build_in_ram(0, 1, &docs).unwrap();
        let first = index.term_stats("json parser").unwrap();
        index.champions.run_pending_tasks();
        let cached = index.champions.entry_count();
        assert!(cached >= 2, "{cached} lists cached");
        let again = index.term_stats("parser json").unwrap();
        assert_eq!(again, first);
        index.champions.run_pending_tasks();
        assert_eq!(
            index.champions.entry_count(),
            cached,
            "nothing new to compute"
        );
        let fresh = ShardIndex::build_in_ram(0, 1, &docs).unwrap();
        for term in &again.terms {
            let field = fresh.searcher.schema().get_field(&term.field).unwrap();
            let key = tantivy::Term::from_field_text(field, &term.term);
            assert_eq!(
                fresh.impacts(&key, IMPACT_DEPTH).unwrap(),
                term.top,
                "{}",
                term.term
            );
        }
    }

    #[test]
    fn champion_lists_hold_a_terms_best_documents_in_scan_order() {
        let docs = generate_corpus(600, 8);
        let index = ShardIndex::build_in_ram(0, 1, &docs).unwrap();
        let stats = index.term_stats("json").unwrap();
        let body = stats
            .terms
            .iter()
            .find(|t| t.term == "json" && t.field == "body")
            .unwrap();
        assert!(body.doc_freq > IMPACT_DEPTH as u64, "{}", body.doc_freq);
        assert_eq!(body.top.len(), IMPACT_DEPTH);
        let tokens = stats.fields.iter().find(|f| f.field == "body").unwrap();
        let avg = tokens.total_tokens as f32 / stats.num_docs as f32;
        let factor = |i: &Impact| bm25_tf_factor(i.term_freq, i.field_length, avg);
        assert!(body.top.windows(2).all(|w| factor(&w[0]) >= factor(&w[1])));

        // The list's scores are the scores of the term's best documents,
        // bit for bit.
        let weight = bm25_idf(body.doc_freq, stats.num_docs) * (1.0 + BM25_K1);
        let output = index
            .search_text("body:json", 20, None, &Budget::unlimited())
            .unwrap();
        let scores: Vec<f32> = output.hits.iter().map(|h| h.score).collect();
        let listed: Vec<f32> = body.top[..20].iter().map(|i| weight * factor(i)).collect();
        assert_eq!(scores, listed);

        // A search that covered the first n documents scored exactly the
        // listed documents below n (a common word, so that the search
        // checks its budget before the end).
        let term = Term::from_field_text(index.fields.body, "with");
        let all = index.impacts(&term, usize::MAX).unwrap();
        assert_eq!(all.len() as u64, index.searcher.doc_freq(&term).unwrap());
        let output = index
            .search_text(
                "body:with",
                1000,
                None,
                &Budget::unlimited().with_doc_limit(300),
            )
            .unwrap();
        assert!(output.early_terminated && output.docs_searched < 600);
        let below = all.iter().filter(|i| i.doc < output.docs_searched).count();
        assert_eq!(output.hits.len(), below);
    }

    #[test]
    fn the_layout_follows_the_scan_order_of_the_documents() {
        let docs = generate_corpus(300, 9);
        let index = ShardIndex::build_in_ram(0, 1, &docs).unwrap();
        let again = ShardIndex::build_in_ram(0, 1, &docs).unwrap();
        assert_ne!(index.layout(), 0);
        assert_eq!(index.layout(), again.layout());
        assert_eq!(index.term_stats("json").unwrap().layout, index.layout());
        let output = index
            .search_text("json", 5, None, &Budget::unlimited())
            .unwrap();
        assert_eq!(output.into_response(0, 1).layout, index.layout());
        // The same documents in another order scan differently.
        let mut reversed = docs.clone();
        reversed.reverse();
        let other = ShardIndex::build_in_ram(0, 1, &reversed).unwrap();
        assert_ne!(other.layout(), index.layout());
    }

    #[test]
    fn hostile_stats_do_not_panic() {
        let docs = generate_corpus(200, 7);
        let index = ShardIndex::build_in_ram(0, 1, &docs).unwrap();
        let mut stats = index.term_stats("json parser").unwrap();
        for term in &mut stats.terms {
            term.doc_freq = u64::MAX;
        }
        stats.fields.push(FieldStats {
            field: "no such field".to_string(),
            total_tokens: 1,
        });
        stats.num_docs = 1;
        let output = index
            .search_text("json parser", 10, Some(&stats), &Budget::unlimited())
            .unwrap();
        assert!(output.global_stats);
        stats.num_docs = 0;
        let error = index
            .search_text("json parser", 10, Some(&stats), &Budget::unlimited())
            .unwrap_err();
        assert!(matches!(error, LeafError::InvalidArgument(_)));
    }
}
