//! Merging shard answers into one top-k, with exact coverage and an
//! estimate of how much of the full answer a partial one holds.
//!
//! **Invariant:** `partial` is true exactly when some shard is missing or
//! searched only part of its documents.

use std::cmp::Ordering;
use std::time::Duration;

use crate::query::estimate::{Evidence, RecallModel};
use crate::query::fanout::{ShardOutcome, ShardResult};
use proto::leaf::Hit;

pub use crate::query::coverage::{Coverage, ShardReport, ShardState};

/// The merged answer, before the root makes an [`crate::query::answer::Answer`] of it.
#[derive(Clone, Debug)]
pub struct Merged {
    pub hits: Vec<Hit>,
    pub coverage: Coverage,
    pub partial: bool,
    pub estimated_recall: f64,
    /// The model behind `estimated_recall` (see [`crate::query::estimate::estimate`]);
    /// `complete` for a complete answer.
    pub recall_model: RecallModel,
    pub shards: Vec<ShardReport>,
    pub hedges: u32,
    pub hedges_won: u32,
    /// Index generation of each shard that answered (0 for the others).
    pub generations: Vec<u64>,
    /// True when every answering shard scored with corpus-wide statistics.
    pub global_stats: bool,
    /// The first invalid-query error, when the query itself was bad.
    pub invalid_query: Option<String>,
    /// How long the fan-out's own stages took (set by the root).
    pub stages: StageTimes,
}

/// The time a fan-out spent in each of its stages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StageTimes {
    /// The corpus-wide term statistics (a cache look-up, or a round trip).
    pub stats: Duration,
    /// The leaf calls and the merge, a refetch without score floor included.
    pub gather: Duration,
}

/// Orders hits by score (descending), ties by id so the order is stable.
pub fn hit_order(a: &Hit, b: &Hit) -> Ordering {
    b.score
        .partial_cmp(&a.score)
        .unwrap_or(Ordering::Equal)
        .then_with(|| a.id.cmp(&b.id))
}

/// Merges shard results into the top `k`. `known_docs[s]` is the last
/// known document count of shard `s`, used for shards that did not answer;
/// `evidence`, when known, is what the accuracy estimate knows about the
/// query's terms on every shard (see [`crate::query::estimate`]).
pub fn merge(
    results: Vec<ShardResult>,
    k: usize,
    known_docs: &[u64],
    evidence: Option<&Evidence>,
) -> Merged {
    let shards_total = results.len() as u32;
    // A shard never heard from counts as an average one, so that coverage
    // never claims 100% while a shard is missing.
    let heard: Vec<u64> = known_docs.iter().copied().filter(|&d| d > 0).collect();
    let average = if heard.is_empty() {
        1
    } else {
        (heard.iter().sum::<u64>() / heard.len() as u64).max(1)
    };
    let mut coverage = Coverage {
        shards_total,
        ..Coverage::default()
    };
    let mut hits = Vec::new();
    let mut reports = Vec::with_capacity(results.len());
    let mut generations = vec![0; results.len()];
    let mut hedges = 0;
    let mut hedges_won = 0;
    let mut global_stats = true;
    let mut invalid_query = None;
    let mut cut_short = false;
    for result in results {
        let shard = result.shard as usize;
        hedges += result.hedges;
        hedges_won += u32::from(result.hedge_won);
        let known = match known_docs.get(shard).copied().unwrap_or(0) {
            0 => average,
            known => known,
        };
        let mut layout = 0;
        let mut generation = 0;
        let (state, searched, total) = match result.outcome {
            ShardOutcome::Answered(response) => {
                coverage.shards_answered += 1;
                if let Some(slot) = generations.get_mut(shard) {
                    *slot = response.generation;
                }
                global_stats &= response.global_stats;
                layout = response.layout;
                generation = response.generation;
                let short =
                    response.early_terminated || response.docs_searched < response.docs_total;
                cut_short |= short;
                hits.extend(response.hits);
                let state = if short {
                    ShardState::Partial
                } else {
                    ShardState::Answered
                };
                (state, response.docs_searched, response.docs_total)
            }
            ShardOutcome::TimedOut => {
                coverage.shards_timed_out += 1;
                (ShardState::TimedOut, 0, known)
            }
            ShardOutcome::Failed(error) => {
                if let crate::cluster::leaf_client::CallError::InvalidQuery(message) = &error {
                    invalid_query.get_or_insert_with(|| message.clone());
                }
                coverage.shards_failed += 1;
                (ShardState::Failed, 0, known)
            }
            ShardOutcome::Unavailable => {
                coverage.shards_unavailable += 1;
                (ShardState::Unavailable, 0, known)
            }
        };
        coverage.docs_searched += searched;
        coverage.docs_total += total;
        reports.push(ShardReport {
            shard: result.shard,
            state,
            docs_searched: searched,
            docs_total: total,
            took_ms: result.latency.as_secs_f64() * 1000.0,
            hedges: result.hedges,
            hedge_won: result.hedge_won,
            layout,
            generation,
        });
    }
    coverage.percent = if coverage.docs_total == 0 {
        if coverage.shards_answered == shards_total {
            100.0
        } else {
            0.0
        }
    } else {
        100.0 * coverage.docs_searched as f64 / coverage.docs_total as f64
    };
    coverage.percent = (coverage.percent * 100.0).round() / 100.0;
    let partial = coverage.shards_answered < shards_total || cut_short;
    hits.sort_by(hit_order);
    hits.truncate(k);
    let (estimated_recall, recall_model) = if partial {
        crate::query::estimate::estimate(&reports, &hits, k, evidence)
    } else {
        (1.0, RecallModel::Complete)
    };
    Merged {
        hits,
        coverage,
        partial,
        estimated_recall,
        recall_model,
        shards: reports,
        hedges,
        hedges_won,
        generations,
        global_stats,
        invalid_query,
        stages: StageTimes::default(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proto::leaf::SearchResponse;

    use super::*;
    use crate::cluster::leaf_client::CallError;

    fn hit(id: &str, score: f32, shard: u32) -> Hit {
        Hit {
            id: id.into(),
            score,
            title: id.into(),
            snippet: String::new(),
            shard,
        }
    }

    fn answered(shard: u32, hits: Vec<Hit>, searched: u64, total: u64) -> ShardResult {
        ShardResult {
            shard,
            outcome: ShardOutcome::Answered(SearchResponse {
                layout: 0,
                hits,
                docs_searched: searched,
                docs_total: total,
                shard,
                generation: 7,
                early_terminated: searched < total,
                global_stats: true,
                ..SearchResponse::default()
            }),
            hedges: 0,
            hedge_won: false,
            latency: Duration::from_millis(1),
        }
    }

    fn missing(shard: u32, outcome: ShardOutcome) -> ShardResult {
        ShardResult {
            shard,
            outcome,
            hedges: 0,
            hedge_won: false,
            latency: Duration::from_millis(1),
        }
    }

    #[test]
    fn merges_by_score_then_id() {
        let merged = merge(
            vec![
                answered(0, vec![hit("b", 2.0, 0), hit("d", 1.0, 0)], 10, 10),
                answered(1, vec![hit("a", 2.0, 1), hit("c", 3.0, 1)], 10, 10),
            ],
            3,
            &[10, 10],
            None,
        );
        let ids: Vec<_> = merged.hits.iter().map(|h| h.id.as_str()).collect();
        assert_eq!(ids, ["c", "a", "b"]);
        assert!(!merged.partial);
        assert_eq!(merged.estimated_recall, 1.0);
        assert_eq!(merged.coverage.percent, 100.0);
        assert_eq!(merged.generations, vec![7, 7]);
        let reported: Vec<u64> = merged.shards.iter().map(|s| s.generation).collect();
        assert_eq!(
            reported,
            vec![7, 7],
            "each shard's report names its generation"
        );
    }

    #[test]
    fn counts_every_kind_of_missing_shard() {
        let merged = merge(
            vec![
                answered(0, vec![hit("a", 1.0, 0)], 100, 100),
                missing(1, ShardOutcome::TimedOut),
                missing(
                    2,
                    ShardOutcome::Failed(CallError::Unavailable("down".into())),
                ),
                missing(3, ShardOutcome::Unavailable),
            ],
            10,
            &[100, 100, 100, 100],
            None,
        );
        let c = &merged.coverage;
        assert!(merged.partial);
        assert_eq!(
            (
                c.shards_total,
                c.shards_answered,
                c.shards_timed_out,
                c.shards_failed,
                c.shards_unavailable
            ),
            (4, 1, 1, 1, 1)
        );
        assert_eq!((c.docs_searched, c.docs_total), (100, 400));
        assert_eq!(c.percent, 25.0);
        assert!(merged.estimated_recall > 0.0 && merged.estimated_recall < 1.0);
    }

    #[test]
    fn a_shard_cut_short_makes_the_answer_partial() {
        let merged = merge(
            vec![answered(0, vec![hit("a", 1.0, 0)], 40, 100)],
            10,
            &[100],
            None,
        );
        assert!(merged.partial);
        assert_eq!(merged.coverage.shards_answered, 1);
        assert_eq!(merged.coverage.percent, 40.0);
        assert_eq!(merged.shards[0].state.label(), "partial");
    }
}
