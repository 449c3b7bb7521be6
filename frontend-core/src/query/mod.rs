//! The query core: everything between an admitted request and its answer,
//! with no knowledge of HTTP or JSON.
//!
//! [`admission`] decides whether a request may start; [`root`] looks up the
//! cache, sends a [`canary`] for a first-seen query, [`coalesce`]s
//! identical misses, fetches corpus-wide
//! [`term_stats`], then [`fanout`] sends one call per shard (the replica
//! picked by [`replica`] choice and probation, a [`hedge`] within budget),
//! and [`merge`] builds one top-k with exact coverage and an [`estimate`]
//! of its recall. A request is an [`answer::SearchParams`], a result an
//! [`answer::Answer`] (with its [`coverage`]); failures are a
//! [`QueryError`]; only `http/` turns them into JSON and status codes.
//!
//! **Invariant:** nothing here imports `crate::http`; results are plain
//! Rust types and do not derive `Serialize`.

pub mod admission;
pub mod answer;
pub mod canary;
pub mod coalesce;
pub mod coverage;
pub mod error;
pub mod estimate;
pub mod fanout;
pub mod hedge;
pub mod merge;
pub mod replica;
pub mod root;
pub mod term_stats;

pub use error::QueryError;

use crate::metrics::Metrics;

/// Pre-registers the series this layer labels with its states, for every
/// shard, so that dashboards see zeros from the start.
pub fn preregister(metrics: &Metrics, shards: u32) {
    for shard in 0..shards {
        let shard = shard.to_string();
        for state in coverage::ShardState::ALL {
            metrics
                .shard_outcomes
                .with_label_values(&[&shard, state.label()]);
        }
    }
    for source in term_stats::StatsSource::ALL {
        metrics.term_stats.with_label_values(&[source.label()]);
    }
    // Only partial answers are counted by model; `complete` never is.
    for model in estimate::RecallModel::ALL {
        if *model != estimate::RecallModel::Complete {
            metrics.recall_models.with_label_values(&[model.label()]);
        }
    }
    for result in root::FloorResult::ALL {
        metrics.score_floors.with_label_values(&[result.label()]);
    }
    for verdict in canary::Verdict::ALL {
        metrics.canaries.with_label_values(&[verdict.label()]);
    }
    for reason in error::Rejection::ALL {
        metrics
            .admission_rejections
            .with_label_values(&[reason.label()]);
    }
}
