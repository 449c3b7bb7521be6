//! What a search asks and what it gets back, as plain Rust types: the
//! validated request, the answer, and what the cache did. `http::api`
//! parses requests into these and renders answers as JSON.

use std::time::Duration;

use crate::query::coverage::{Coverage, ShardReport};

/// A validated search request (`http::api` parses it).
#[derive(Clone, Debug, PartialEq)]
pub struct SearchParams {
    pub q: String,
    pub k: u32,
    pub timeout_ms: u64,
    /// False turns a partial answer into
    /// [`QueryError::PartialNotAllowed`](crate::query::QueryError::PartialNotAllowed).
    pub allow_partial: bool,
    /// Skip the cache tier for this request.
    pub nocache: bool,
}

/// What the cache tier did for a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CacheResult {
    /// Answered from the cache.
    Hit,
    /// Looked up, not found: fanned out.
    Miss,
    /// No cache tier, or the request said `nocache`.
    Bypass,
}

impl CacheResult {
    pub const ALL: &'static [CacheResult] =
        &[CacheResult::Hit, CacheResult::Miss, CacheResult::Bypass];

    /// The name in responses and metric labels.
    pub fn label(&self) -> &'static str {
        match self {
            CacheResult::Hit => "hit",
            CacheResult::Miss => "miss",
            CacheResult::Bypass => "bypass",
        }
    }
}

/// One hit of an answer.
#[derive(Clone, Debug, PartialEq)]
pub struct AnswerHit {
    pub id: String,
    pub score: f32,
    pub title: String,
    pub snippet: String,
    pub shard: u32,
}

/// The answer to one search, as the query layer hands it to the edge.
#[derive(Clone, Debug)]
pub struct Answer {
    pub hits: Vec<AnswerHit>,
    pub partial: bool,
    pub coverage: Coverage,
    /// Expected fraction of the full answer's top k in `hits`.
    pub estimated_recall: f64,
    pub cache: CacheResult,
    /// From the start of the search to the answer.
    pub took: Duration,
    /// True when scores came from corpus-wide term statistics.
    pub global_stats: bool,
    pub hedges_sent: u32,
    pub hedges_won: u32,
    /// What became of each shard; empty for cache hits.
    pub shards: Vec<ShardReport>,
    /// The index generation of each shard's part of the answer (0 for a
    /// shard that did not answer); for a cache hit, the generations its key
    /// names, which are those that answered when it was stored.
    pub generations: Vec<u64>,
}

impl Answer {
    /// The request's latency less the time spent waiting for shards that
    /// never answered: what admission control should judge concurrency by.
    pub fn service_time(&self) -> Duration {
        let slowest = |answered_only: bool| {
            self.shards
                .iter()
                .filter(|s| !answered_only || s.state.answered())
                .map(|s| s.took_ms)
                .fold(0.0, f64::max)
        };
        let waited_in_vain = (slowest(false) - slowest(true)).max(0.0);
        let took_ms = self.took.as_secs_f64() * 1000.0;
        Duration::from_secs_f64((took_ms - waited_in_vain).max(0.0) / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::coverage::ShardState;

    fn shard(shard: u32, state: ShardState, took_ms: f64) -> ShardReport {
        ShardReport {
            shard,
            state,
            docs_searched: 0,
            docs_total: 0,
            took_ms,
            hedges: 0,
            hedge_won: false,
            layout: 0,
            generation: 0,
        }
    }

    #[test]
    fn service_time_leaves_out_the_wait_for_shards_that_never_answered() {
        let answer = Answer {
            hits: Vec::new(),
            partial: true,
            coverage: Coverage::default(),
            estimated_recall: 0.5,
            cache: CacheResult::Miss,
            took: Duration::from_millis(152),
            global_stats: true,
            hedges_sent: 0,
            hedges_won: 0,
            shards: vec![
                shard(0, ShardState::Answered, 5.0),
                shard(1, ShardState::TimedOut, 150.0),
            ],
            generations: vec![1, 0],
        };
        let time = answer.service_time();
        assert!((time.as_secs_f64() - 0.007).abs() < 1e-9, "{time:?}");
        let complete = Answer {
            partial: false,
            shards: vec![
                shard(0, ShardState::Answered, 5.0),
                shard(1, ShardState::Answered, 9.0),
            ],
            took: Duration::from_millis(10),
            ..answer
        };
        assert!((complete.service_time().as_secs_f64() - 0.010).abs() < 1e-9);
    }
}
