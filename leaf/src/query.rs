//! Queries as a shard index keeps them: parsed once ([`ParsedQuery`],
//! with its block-max WAND shape, `prune`) and prepared per index
//! ([`Prepared`], in the index's cache; made by
//! `ShardIndex::prepare` in [`crate::search`]).

use std::sync::Arc;

use tantivy::query::Query;

pub(crate) mod prune;

/// A parsed query, ready to run on the shard it was parsed for (or on any
/// shard of the same schema), with its shape for block-max WAND worked out
/// once. Cheap to clone (shared).
#[derive(Clone, Debug)]
pub struct ParsedQuery(pub(crate) Arc<Parsed>);

#[derive(Debug)]
pub(crate) struct Parsed {
    query: Box<dyn Query>,
    /// None when the query is not a pure disjunction of terms.
    disjunction: Option<prune::Disjunction>,
}

impl ParsedQuery {
    pub(crate) fn new(query: Box<dyn Query>) -> ParsedQuery {
        let disjunction = prune::Disjunction::of(query.as_ref());
        ParsedQuery(Arc::new(Parsed { query, disjunction }))
    }

    /// The tantivy query (benchmarks run it through tantivy's collectors).
    pub fn query(&self) -> &dyn Query {
        self.0.query.as_ref()
    }

    pub(crate) fn disjunction(&self) -> Option<&prune::Disjunction> {
        self.0.disjunction.as_ref()
    }
}

/// A query as one shard index prepared it: parsed, and the postings its
/// terms list there. Kept per index
/// ([`crate::index::ShardIndex::prepare`]), so that a query seen again is
/// neither parsed nor looked up anew.
#[derive(Clone, Debug)]
pub struct Prepared {
    pub query: ParsedQuery,
    /// Postings of the query's terms in this index, summed over terms and
    /// segments (deleted documents included): a bound on the documents a
    /// search of it scores.
    pub postings: u64,
}

/// Queries prepared and kept per shard index (a few hundred bytes each).
pub const PREPARED_QUERIES: u64 = 2048;

pub(crate) type PreparedCache = moka::sync::Cache<String, Prepared>;

pub(crate) fn prepared_cache() -> PreparedCache {
    moka::sync::Cache::builder()
        .max_capacity(PREPARED_QUERIES)
        .build()
}
