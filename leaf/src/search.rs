//! Searching one shard: query parsing, a scoring loop that honours a
//! [`Budget`] (deadline, cancellation), an exact top-k ordered by score then
//! id, and snippets.
//!
//! The scoring loop walks each segment with the query's scorer and checks
//! the budget every [`CHECK_EVERY`] matching documents. When the budget runs
//! out it returns the best hits found so far and the number of documents
//! covered: all documents of finished segments plus the doc ids below the
//! scorer's position in the current one.
//!
//! Ties: every segment keeps its own top-k ordered by (score desc, id asc),
//! comparing ids through the per-segment sorted ordinals of the `id` fast
//! column; the segments' winners are then merged by (score desc, id asc)
//! on the id strings. This is exact for any number of ties, so merging
//! shards gives the same order as one unsharded index.

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use proto::leaf::{CorpusStats, Hit, SearchResponse};
use tantivy::query::{EnableScoring, Weight};
use tantivy::schema::document::{DeserializeError, DocumentDeserialize, DocumentDeserializer};
use tantivy::schema::{Field, OwnedValue, Schema, Value};
use tantivy::snippet::SnippetGenerator;
use tantivy::{DocAddress, DocId, Score, TantivyDocument, TERMINATED};

use crate::error::{LeafError, Result};
use crate::index::ShardIndex;
use crate::query::{prune, ParsedQuery, Prepared};
use crate::stats::GlobalStatistics;

pub use scoring::MAX_K;
pub use scoring::MAX_QUERY_BYTES;
/// Deepest parenthesis nesting accepted; the parser recurses on it.
const MAX_NESTING: usize = 32;
/// Matching documents scored between two budget checks.
pub const CHECK_EVERY: u64 = 256;
/// Longest snippet, in characters.
const SNIPPET_CHARS: usize = 160;

/// When a search must stop: a point in time, a cancellation flag, and for
/// tests a number of documents.
#[derive(Clone, Debug, Default)]
pub struct Budget {
    stop_at: Option<Instant>,
    cancelled: Option<Arc<AtomicBool>>,
    doc_limit: Option<u64>,
    /// Fault knob: time spent at every check (see `FaultConfig::slow_scan`).
    scan_delay: Option<std::time::Duration>,
}

/// Why a search stopped before covering the shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    /// Out of time (or out of documents for a doc-limited budget).
    Exhausted,
    Cancelled,
}

impl Budget {
    /// A budget that never runs out.
    pub fn unlimited() -> Budget {
        Budget::default()
    }

    /// Stops scoring at `stop_at` (the caller's deadline minus a margin to
    /// reply).
    pub fn until(stop_at: Instant) -> Budget {
        Budget {
            stop_at: Some(stop_at),
            ..Budget::default()
        }
    }

    /// Stops, with [`LeafError::Cancelled`], once `flag` is set.
    pub fn with_cancel(mut self, flag: Arc<AtomicBool>) -> Budget {
        self.cancelled = Some(flag);
        self
    }

    /// Runs out, like a deadline, at the first check after `docs` documents
    /// are covered: a deterministic early stop for tests.
    pub fn with_doc_limit(mut self, docs: u64) -> Budget {
        self.doc_limit = Some(docs);
        self
    }

    /// Spends `delay` at every check, as a slow scan would (a fault knob).
    pub fn with_scan_delay(mut self, delay: std::time::Duration) -> Budget {
        self.scan_delay = (!delay.is_zero()).then_some(delay);
        self
    }

    fn check(&self, covered: u64) -> Option<Stop> {
        if let Some(delay) = self.scan_delay {
            // Never past the stop time, so that a slow scan is cut short like
            // a long one. The search runs on a blocking thread.
            let delay = match self.stop_at {
                Some(stop_at) => delay.min(stop_at.saturating_duration_since(Instant::now())),
                None => delay,
            };
            std::thread::sleep(delay);
        }
        if self
            .cancelled
            .as_ref()
            .is_some_and(|flag| flag.load(Ordering::Relaxed))
        {
            return Some(Stop::Cancelled);
        }
        if self.doc_limit.is_some_and(|limit| covered >= limit)
            || self
                .stop_at
                .is_some_and(|stop_at| Instant::now() >= stop_at)
        {
            return Some(Stop::Exhausted);
        }
        None
    }
}

/// What one shard found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SearchOutput {
    /// Ordered by score desc, then id asc.
    pub hits: Vec<Hit>,
    pub docs_searched: u64,
    pub docs_total: u64,
    pub early_terminated: bool,
    pub global_stats: bool,
    /// The shard's scan-order fingerprint ([`ShardIndex::layout`]).
    pub layout: u64,
    /// Hits returned with their title but without a snippet (body not
    /// loaded) because they scored below the request's score floor.
    pub snippets_skipped: u64,
}

impl SearchOutput {
    pub fn into_response(self, shard: u32, generation: u64) -> SearchResponse {
        SearchResponse {
            hits: self.hits,
            docs_searched: self.docs_searched,
            docs_total: self.docs_total,
            shard,
            generation,
            early_terminated: self.early_terminated,
            global_stats: self.global_stats,
            layout: self.layout,
            ..SearchResponse::default()
        }
    }
}

/// One shard's best documents, scored but not loaded
/// ([`ShardIndex::score`]).
#[derive(Clone, Debug)]
pub struct Scored {
    /// Score, id and place, ordered by score desc, then id asc.
    winners: Vec<(Score, String, DocAddress)>,
    docs_searched: u64,
    early_terminated: bool,
    global_stats: bool,
    /// Winners below this get their title and no snippet.
    snippet_floor: Score,
    /// The BM25 weights this search built, when another shard of the same
    /// schema may use them for the same query and statistics.
    weights: Option<SharedWeights>,
}

/// A query's block-max WAND weights built from corpus-wide statistics
/// alone (no term or field fell back to a shard's own): the same on every
/// shard of this schema, so that the shards of one call build them once.
#[derive(Clone)]
pub struct SharedWeights {
    schema: Schema,
    pruner: Arc<prune::Pruner>,
}

impl std::fmt::Debug for SharedWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedWeights").finish_non_exhaustive()
    }
}

impl Scored {
    /// The winners' scores and ids, best first.
    pub fn ranked(&self) -> impl Iterator<Item = (Score, &str)> + '_ {
        self.winners
            .iter()
            .map(|(score, id, _)| (*score, id.as_str()))
    }

    /// Keeps the winners for which `keep(score, id)` holds; the search's
    /// coverage is unchanged.
    pub fn retain(&mut self, mut keep: impl FnMut(Score, &str) -> bool) {
        self.winners.retain(|(score, id, _)| keep(*score, id));
    }

    /// Weights another shard of the same call may reuse
    /// ([`SharedWeights`]).
    pub fn weights(&self) -> Option<&SharedWeights> {
        self.weights.as_ref()
    }
}

/// Checks `k` (1..=[`MAX_K`]).
pub fn validate_k(k: u32) -> Result<usize> {
    if (1..=MAX_K).contains(&k) {
        Ok(k as usize)
    } else {
        Err(LeafError::InvalidArgument(format!(
            "k must be between 1 and {MAX_K}, got {k}"
        )))
    }
}

impl ShardIndex {
    /// Parses `text`: free terms are OR-ed, `"quoted phrases"`, `+required`,
    /// `-excluded`, `field:term` over `title` (boosted) and `body`.
    pub fn parse_query(&self, text: &str) -> Result<ParsedQuery> {
        if text.trim().is_empty() {
            return Err(LeafError::InvalidQuery("empty query".to_string()));
        }
        if text.len() > MAX_QUERY_BYTES {
            return Err(LeafError::InvalidQuery(format!(
                "query longer than {MAX_QUERY_BYTES} bytes"
            )));
        }
        if nesting(text) > MAX_NESTING {
            return Err(LeafError::InvalidQuery(format!(
                "parentheses nested deeper than {MAX_NESTING}"
            )));
        }
        self.parser
            .parse_query(text)
            .map(ParsedQuery::new)
            .map_err(|error| LeafError::InvalidQuery(lowercase_first(&error.to_string())))
    }

    /// `text` parsed and measured for this index, from the index's cache of
    /// prepared queries when it was seen before. `parsed` is the same text
    /// parsed for another index: used when that index has this one's schema
    /// (then only the postings are counted here).
    pub fn prepare(&self, text: &str, parsed: Option<&(Schema, ParsedQuery)>) -> Result<Prepared> {
        if let Some(prepared) = self.prepared.get(text) {
            return Ok(prepared);
        }
        let query = match parsed.filter(|(schema, _)| schema == self.searcher.schema()) {
            Some((_, query)) => query.clone(),
            None => self.parse_query(text)?,
        };
        let prepared = Prepared {
            postings: self.postings(&query),
            query,
        };
        self.prepared.insert(text.to_string(), prepared.clone());
        Ok(prepared)
    }

    /// The postings `query`'s terms list in this shard, summed over terms
    /// and segments ([`Prepared::postings`]).
    fn postings(&self, query: &ParsedQuery) -> u64 {
        let mut total = 0u64;
        query.query().query_terms(&mut |term, _| {
            let freq = self.searcher.doc_freq(term).unwrap_or(u64::MAX);
            total = total.saturating_add(freq);
        });
        total
    }

    /// Parses and runs `text` (tests and in-process callers).
    pub fn search_text(
        &self,
        text: &str,
        k: u32,
        stats: Option<&CorpusStats>,
        budget: &Budget,
    ) -> Result<SearchOutput> {
        let k = validate_k(k)?;
        let query = self.parse_query(text)?;
        self.search(&query, k, stats, budget)
    }

    /// Runs `query` for the best `k` documents. With `stats`, scores with
    /// those corpus-wide statistics (terms missing from them fall back to
    /// the shard's own). Blocking: call it on a blocking thread.
    pub fn search(
        &self,
        query: &ParsedQuery,
        k: usize,
        stats: Option<&CorpusStats>,
        budget: &Budget,
    ) -> Result<SearchOutput> {
        self.search_above(query, k, stats, None, budget)
    }

    /// [`ShardIndex::search`] with the frontend's score floor (see
    /// `SearchRequest.score_floor`): the same hits, ids and scores, but hits
    /// scoring below `floor` come with their title and without a snippet
    /// (their body is not loaded). Applied only with `stats` and a query
    /// that is a pure disjunction of terms, the shape the frontend computes
    /// floors for; otherwise every hit has its snippet.
    pub fn search_above(
        &self,
        query: &ParsedQuery,
        k: usize,
        stats: Option<&CorpusStats>,
        floor: Option<Score>,
        budget: &Budget,
    ) -> Result<SearchOutput> {
        let scored = self.score(query, k, stats, floor, None, budget)?;
        self.load(query, scored, budget)
    }

    /// The scoring half of [`ShardIndex::search_above`]: the best `k`
    /// documents' scores, ids and places, and how far the search got,
    /// without loading any of them. [`ShardIndex::load`] makes the hits;
    /// in between, a caller holding several shards' winners may drop those
    /// that cannot make the answer ([`Scored::retain`]), so that only the
    /// joint top k are loaded.
    ///
    /// `weights`, from another shard's search of the same query with the
    /// same `stats` ([`Scored::weights`]), are used when this index has
    /// their schema instead of building the leaves' weights again.
    pub fn score(
        &self,
        query: &ParsedQuery,
        k: usize,
        stats: Option<&CorpusStats>,
        floor: Option<Score>,
        weights: Option<&SharedWeights>,
        budget: &Budget,
    ) -> Result<Scored> {
        let searcher = &self.searcher;
        let provider = stats
            .map(|stats| GlobalStatistics::new(self, stats))
            .transpose()?;
        let scoring = match &provider {
            Some(provider) => EnableScoring::enabled_from_statistics_provider(provider, searcher),
            None => EnableScoring::enabled_from_searcher(searcher),
        };
        let reusable = weights
            .filter(|weights| stats.is_some() && &weights.schema == searcher.schema())
            .map(|weights| Arc::clone(&weights.pruner));
        let mut shared = None;
        let pruner = match (query.disjunction(), reusable) {
            (Some(_), Some(pruner)) => Some(pruner),
            (Some(disjunction), None) => {
                let pruner = Arc::new(disjunction.weights(scoring)?);
                if provider.as_ref().is_some_and(|p| p.corpus_wide()) {
                    shared = Some(SharedWeights {
                        schema: searcher.schema().clone(),
                        pruner: Arc::clone(&pruner),
                    });
                }
                Some(pruner)
            }
            (None, _) => None,
        };
        let snippet_floor = floor
            .filter(|floor| stats.is_some() && pruner.is_some() && !floor.is_nan())
            .unwrap_or(Score::NEG_INFINITY);
        // The plain loop's weight, built only when a segment needs it.
        let mut weight = None;

        let mut covered = 0u64;
        let mut stopped = None;
        let mut winners: Vec<(Score, String, DocAddress)> = Vec::new();
        // Once earlier segments hold k winners, a document scoring below the
        // k-th of them cannot be in the answer (ties may, by id): later
        // segments prune below it from the start.
        let mut floor = Score::NEG_INFINITY;
        for (segment_ord, reader) in searcher.segment_readers().iter().enumerate() {
            if let Some(stop) = budget.check(covered) {
                stopped = Some(stop);
                break;
            }
            let ids = &self.ids[segment_ord];
            let alive = reader.alive_bitset();
            let mut top = SegmentTopK::new(k);
            let exact = match &pruner {
                Some(pruner) => Some((pruner, pruner.exact(reader)?)),
                None => None,
            };
            // Where the segment's search stopped, if it did.
            let mut stop_doc = None;
            if let Some((pruner, mut exact)) = exact {
                // Only documents that may beat the k-th best reach the
                // callback, in doc order; all below the one at hand are
                // decided, so that position is what a stop has covered.
                let mut next_check = CHECK_EVERY as DocId;
                pruner
                    .union
                    .for_each_pruning(floor, reader, &mut |doc, sum| {
                        if stop_doc.is_some() {
                            return Score::INFINITY;
                        }
                        if doc >= next_check {
                            if let Some(stop) = budget.check(covered + u64::from(doc)) {
                                stopped = Some(stop);
                                stop_doc = Some(doc);
                                return Score::INFINITY;
                            }
                            next_check = doc.saturating_add(CHECK_EVERY as DocId);
                        }
                        if alive.is_none_or(|alive| alive.is_alive(doc)) {
                            if let Some(score) = exact.score(doc, sum) {
                                if top.competitive(score) {
                                    top.offer(score, ids.ord(doc), doc);
                                }
                            }
                        }
                        top.threshold().max(floor)
                    })?;
            } else {
                let weight = match &mut weight {
                    Some(weight) => weight,
                    None => weight.insert(query.query().weight(scoring)?),
                };
                let mut scorer = weight.scorer(reader, 1.0)?;
                let mut doc = scorer.doc();
                let mut scored = 0u64;
                while doc != TERMINATED {
                    if alive.is_none_or(|alive| alive.is_alive(doc)) {
                        let score = scorer.score();
                        if top.competitive(score) {
                            top.offer(score, ids.ord(doc), doc);
                        }
                    }
                    doc = scorer.advance();
                    scored += 1;
                    if scored % CHECK_EVERY == 0 && doc != TERMINATED {
                        if let Some(stop) = budget.check(covered + u64::from(doc)) {
                            stopped = Some(stop);
                            stop_doc = Some(doc);
                            break;
                        }
                    }
                }
            }
            covered += match stop_doc {
                Some(doc) => u64::from(doc),
                None => u64::from(reader.max_doc()),
            };
            for entry in top.heap {
                let address = DocAddress::new(segment_ord as u32, entry.doc);
                winners.push((entry.score, ids.id(entry.ord).to_string(), address));
            }
            if stopped.is_some() {
                break;
            }
            if winners.len() >= k {
                let mut scores: Vec<Score> = winners.iter().map(|w| w.0).collect();
                scores.sort_unstable_by(|a, b| b.total_cmp(a));
                floor = lowered(scores[k - 1]);
            }
        }
        if stopped == Some(Stop::Cancelled) {
            return Err(LeafError::Cancelled);
        }

        winners.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        winners.truncate(k);
        Ok(Scored {
            winners,
            docs_searched: covered,
            early_terminated: stopped.is_some(),
            global_stats: stats.is_some(),
            snippet_floor,
            weights: shared,
        })
    }

    /// The loading half of [`ShardIndex::search_above`]: titles and
    /// snippets of `scored`'s winners (those below its snippet floor get
    /// their title only).
    pub fn load(
        &self,
        query: &ParsedQuery,
        scored: Scored,
        budget: &Budget,
    ) -> Result<SearchOutput> {
        let Scored {
            winners,
            docs_searched,
            early_terminated,
            global_stats,
            snippet_floor,
            ..
        } = scored;
        let snippets_skipped = winners
            .iter()
            .filter(|(score, _, _)| *score < snippet_floor)
            .count() as u64;
        let hits = self.hits(query, winners, snippet_floor, budget)?;
        Ok(SearchOutput {
            hits,
            docs_searched,
            docs_total: self.searcher.num_docs(),
            early_terminated,
            global_stats,
            layout: self.layout,
            snippets_skipped,
        })
    }

    /// Loads titles and builds snippets for the winners; those scoring below
    /// `snippet_floor` get their title only.
    fn hits(
        &self,
        query: &ParsedQuery,
        winners: Vec<(Score, String, DocAddress)>,
        snippet_floor: Score,
        budget: &Budget,
    ) -> Result<Vec<Hit>> {
        if winners.is_empty() {
            return Ok(Vec::new());
        }
        // Built at the first hit that needs one.
        let mut body_snippets: Option<SnippetGenerator> = None;
        // Built only when a body has no match to show (it costs a look-up
        // of every query term).
        let mut title_snippets: Option<SnippetGenerator> = None;

        let mut hits = Vec::with_capacity(winners.len());
        for (score, id, address) in winners {
            if budget.check(0) == Some(Stop::Cancelled) {
                return Err(LeafError::Cancelled);
            }
            if score < snippet_floor {
                hits.push(Hit {
                    id,
                    score,
                    title: self.title(address)?,
                    snippet: String::new(),
                    shard: self.shard,
                });
                continue;
            }
            let body_snippets = match &mut body_snippets {
                Some(generator) => generator,
                None => {
                    let mut generator =
                        SnippetGenerator::create(&self.searcher, query.query(), self.fields.body)?;
                    generator.set_max_num_chars(SNIPPET_CHARS);
                    body_snippets.insert(generator)
                }
            };
            let doc: TantivyDocument = self.searcher.doc(address)?;
            let text = |field| {
                doc.get_first(field)
                    .and_then(|value| value.as_str().map(str::to_string))
                    .unwrap_or_default()
            };
            let title = text(self.fields.title);
            let body = text(self.fields.body);
            let snippet = {
                let in_body = body_snippets.snippet(&body);
                if !in_body.highlighted().is_empty() {
                    in_body.to_html()
                } else {
                    let title_snippets = match &mut title_snippets {
                        Some(generator) => generator,
                        None => {
                            let mut generator = SnippetGenerator::create(
                                &self.searcher,
                                query.query(),
                                self.fields.title,
                            )?;
                            generator.set_max_num_chars(SNIPPET_CHARS);
                            title_snippets.insert(generator)
                        }
                    };
                    let in_title = title_snippets.snippet(&title);
                    if in_title.highlighted().is_empty() {
                        escape_html(&prefix(&body, SNIPPET_CHARS))
                    } else {
                        in_title.to_html()
                    }
                }
            };
            hits.push(Hit {
                id,
                score,
                title,
                snippet,
                shard: self.shard,
            });
        }
        Ok(hits)
    }

    /// The stored title of the document at `address`, read without
    /// deserializing the fields stored after it (the body).
    fn title(&self, address: DocAddress) -> Result<String> {
        let leading: Leading = self.searcher.doc(address)?;
        if let Some(title) = leading.text(self.fields.title) {
            return Ok(title);
        }
        // Stored in another order than the writer's: read it all.
        let doc: TantivyDocument = self.searcher.doc(address)?;
        Ok(doc
            .get_first(self.fields.title)
            .and_then(|value| value.as_str().map(str::to_string))
            .unwrap_or_default())
    }
}

/// The first [`Leading::FIELDS`] stored values of a document: the writer
/// stores `id`, `title`, then `body` (`leaf/src/index.rs`), so a title is
/// read without copying the body.
struct Leading(Vec<(Field, OwnedValue)>);

impl Leading {
    const FIELDS: usize = 2;

    fn text(&self, field: Field) -> Option<String> {
        self.0.iter().find_map(|(f, value)| match value {
            OwnedValue::Str(text) if *f == field => Some(text.clone()),
            _ => None,
        })
    }
}

impl DocumentDeserialize for Leading {
    fn deserialize<'de, D>(mut deserializer: D) -> std::result::Result<Self, DeserializeError>
    where
        D: DocumentDeserializer<'de>,
    {
        let mut values = Vec::with_capacity(Leading::FIELDS);
        while values.len() < Leading::FIELDS {
            match deserializer.next_field::<OwnedValue>()? {
                Some(entry) => values.push(entry),
                None => break,
            }
        }
        Ok(Leading(values))
    }
}

/// One segment's best `k`, ordered by (score desc, id ordinal asc).
struct SegmentTopK {
    k: usize,
    /// A max-heap on "worse": its top is the entry to evict first.
    heap: BinaryHeap<Entry>,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    score: Score,
    ord: u64,
    doc: DocId,
}

impl Entry {
    /// Greater means worse: lower score, then higher id ordinal.
    fn worse(&self, other: &Entry) -> CmpOrdering {
        other
            .score
            .total_cmp(&self.score)
            .then(self.ord.cmp(&other.ord))
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.worse(other) == CmpOrdering::Equal
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        self.worse(other)
    }
}

impl SegmentTopK {
    fn new(k: usize) -> SegmentTopK {
        SegmentTopK {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
        }
    }

    /// Whether a document with `score` may enter (ties may, depending on
    /// their id).
    fn competitive(&self, score: Score) -> bool {
        self.heap.len() < self.k
            || self
                .heap
                .peek()
                .is_some_and(|worst| score.total_cmp(&worst.score) != CmpOrdering::Less)
    }

    /// What block-max WAND may prune below: nothing until the heap is
    /// full, then a little under the k-th best score ([`prune::SLACK`]):
    /// documents that tie it may still enter by id.
    fn threshold(&self) -> Score {
        match self.heap.peek() {
            Some(worst) if self.heap.len() >= self.k => lowered(worst.score),
            _ => Score::NEG_INFINITY,
        }
    }

    fn offer(&mut self, score: Score, ord: u64, doc: DocId) {
        let entry = Entry { score, ord, doc };
        if self.heap.len() < self.k {
            self.heap.push(entry);
        } else if let Some(mut worst) = self.heap.peek_mut() {
            if entry < *worst {
                *worst = entry;
            }
        }
    }
}

/// `score` lowered by [`prune::SLACK`] (relative): what pruning may cut
/// below when `score` is the k-th best.
fn lowered(score: Score) -> Score {
    score - score.abs() * prune::SLACK
}

/// Deepest parenthesis nesting outside quotes.
fn nesting(text: &str) -> usize {
    let (mut depth, mut deepest, mut quoted) = (0usize, 0usize, false);
    for c in text.chars() {
        match c {
            '"' => quoted = !quoted,
            '(' if !quoted => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            ')' if !quoted => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

fn lowercase_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// At most `chars` characters of `text`, with an ellipsis when cut.
fn prefix(text: &str, chars: usize) -> String {
    match text.char_indices().nth(chars) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests;
