//! The JSON shapes of answers: the query layer's [`Answer`] (and its
//! [`Coverage`] and [`ShardReport`]s) as clients and the pages see them.

use serde::{Deserialize, Serialize};

use crate::query::answer::Answer;
use crate::query::coverage::{Coverage, ShardReport};

/// One hit as the client sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HitBody {
    pub id: String,
    pub score: f32,
    pub title: String,
    pub snippet: String,
    pub shard: u32,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct HedgeBody {
    pub sent: u32,
    pub won: u32,
}

/// How complete an answer is ([`Coverage`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CoverageBody {
    pub shards_total: u32,
    pub shards_answered: u32,
    pub shards_timed_out: u32,
    pub shards_failed: u32,
    pub shards_unavailable: u32,
    pub docs_total: u64,
    pub docs_searched: u64,
    pub percent: f64,
}

impl From<&Coverage> for CoverageBody {
    fn from(c: &Coverage) -> Self {
        CoverageBody {
            shards_total: c.shards_total,
            shards_answered: c.shards_answered,
            shards_timed_out: c.shards_timed_out,
            shards_failed: c.shards_failed,
            shards_unavailable: c.shards_unavailable,
            docs_total: c.docs_total,
            docs_searched: c.docs_searched,
            percent: c.percent,
        }
    }
}

/// What became of one shard ([`ShardReport`], without its layout).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ShardBody {
    pub shard: u32,
    /// `answered`, `partial` (cut short), `timed_out`, `failed`, `unavailable`.
    pub state: &'static str,
    pub docs_searched: u64,
    pub docs_total: u64,
    pub took_ms: f64,
    pub hedges: u32,
    pub hedge_won: bool,
    /// Index generation of the replica that answered, as a string (a u64
    /// above 2^53 loses precision in JavaScript); absent when none answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<String>,
}

impl From<&ShardReport> for ShardBody {
    fn from(r: &ShardReport) -> Self {
        ShardBody {
            shard: r.shard,
            state: r.state.label(),
            docs_searched: r.docs_searched,
            docs_total: r.docs_total,
            took_ms: r.took_ms,
            hedges: r.hedges,
            hedge_won: r.hedge_won,
            generation: (r.generation != 0).then(|| r.generation.to_string()),
        }
    }
}

/// The answer of a search, also the body of 503s that carry an answer.
#[derive(Clone, Debug, Serialize)]
pub struct SearchBody {
    pub hits: Vec<HitBody>,
    pub partial: bool,
    pub coverage: CoverageBody,
    /// Expected fraction of the full answer's top k in `hits`.
    pub estimated_recall: f64,
    /// `hit`, `miss` or `bypass`.
    pub cache: &'static str,
    pub took_ms: f64,
    /// True when scores came from corpus-wide term statistics, so that they
    /// are comparable across shards.
    pub global_stats: bool,
    pub hedges: HedgeBody,
    /// What became of each shard; empty for cache hits.
    pub shards: Vec<ShardBody>,
    /// Index generation of each shard's part of the answer, as strings
    /// ("0": the shard did not answer); for a cache hit, those its key names.
    pub generations: Vec<String>,
}

impl From<&Answer> for SearchBody {
    fn from(answer: &Answer) -> Self {
        SearchBody {
            hits: answer
                .hits
                .iter()
                .map(|h| HitBody {
                    id: h.id.clone(),
                    score: h.score,
                    title: h.title.clone(),
                    snippet: h.snippet.clone(),
                    shard: h.shard,
                })
                .collect(),
            partial: answer.partial,
            coverage: CoverageBody::from(&answer.coverage),
            estimated_recall: answer.estimated_recall,
            cache: answer.cache.label(),
            took_ms: millis(answer.took),
            global_stats: answer.global_stats,
            hedges: HedgeBody {
                sent: answer.hedges_sent,
                won: answer.hedges_won,
            },
            shards: answer.shards.iter().map(ShardBody::from).collect(),
            generations: answer.generations.iter().map(u64::to_string).collect(),
        }
    }
}

/// Milliseconds, rounded to the microsecond.
fn millis(duration: std::time::Duration) -> f64 {
    (duration.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0
}
