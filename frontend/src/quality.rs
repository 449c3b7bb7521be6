//! The accuracy estimate of a partial answer: `estimated_recall`, the
//! expected fraction of the full answer's top k that the answer contains.
//!
//! The model (documented in ARCHITECTURE.md, calibrated in BENCHMARKS.md):
//! documents are spread over shards by a hash of their id, so a document of
//! the full top k lies in shard `s` with probability equal to `s`'s share of
//! the query's best documents. When term statistics are known per shard,
//! that share comes from the shards' document frequencies of the query's
//! terms, rarest and most boosted first (`answer_share` in
//! [`crate::stats`]); a shard with none of the terms holds none of the
//! answer. Otherwise it is the shard's share of all documents. A document of
//! the full top k that lies in a searched part of a shard is in the merged
//! answer, because fewer documents compete for the same k places. So the
//! expected recall is one minus the share of the unsearched parts: a missing
//! shard loses its whole share, a shard cut short loses the part it did not
//! search.
//!
//! The scores the answered shards returned do not enter: with placement by
//! hash, a document's shard is independent of its score, so given the
//! shares the answered shards' hits say nothing about how many of the
//! missing shards' documents would have made the top k (the expected count
//! above the merged k-th score is k × unsearched share / searched share,
//! which gives the same estimate). Weighing the share model against a
//! document-share model by how well each predicts which answered shards
//! the merged hits came from was tried and measured no better.

use crate::merge::ShardReport;

/// Expected recall@k of an answer whose shards ended as in `reports`.
pub fn estimated_recall(reports: &[ShardReport], match_share: Option<&[f64]>) -> f64 {
    let docs_total: u64 = reports.iter().map(|r| r.docs_total).sum();
    let mut lost = 0.0;
    let mut weight_total = 0.0;
    for report in reports {
        let share = match match_share {
            Some(shares) => shares.get(report.shard as usize).copied().unwrap_or(0.0),
            None if docs_total > 0 => report.docs_total as f64 / docs_total as f64,
            None => 1.0 / reports.len().max(1) as f64,
        };
        weight_total += share;
        let unsearched = match report.state {
            "answered" => 0.0,
            "partial" if report.docs_total > 0 => {
                1.0 - report.docs_searched as f64 / report.docs_total as f64
            }
            _ => 1.0,
        };
        lost += share * unsearched.clamp(0.0, 1.0);
    }
    if weight_total <= 0.0 {
        // No shard holds any matching document: nothing can be missing.
        return 1.0;
    }
    (1.0 - lost / weight_total).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(shard: u32, state: &'static str, searched: u64, total: u64) -> ShardReport {
        ShardReport {
            shard,
            state,
            docs_searched: searched,
            docs_total: total,
            took_ms: 1.0,
            hedges: 0,
            hedge_won: false,
        }
    }

    #[test]
    fn a_missing_shard_loses_its_document_share() {
        let reports = [
            report(0, "answered", 100, 100),
            report(1, "answered", 100, 100),
            report(2, "answered", 100, 100),
            report(3, "timed_out", 0, 100),
        ];
        assert!((estimated_recall(&reports, None) - 0.75).abs() < 1e-9);
    }

    #[test]
    fn a_shard_cut_short_loses_the_part_not_searched() {
        let reports = [
            report(0, "answered", 100, 100),
            report(1, "partial", 50, 100),
        ];
        assert!((estimated_recall(&reports, None) - 0.75).abs() < 1e-9);
    }

    #[test]
    fn a_missing_shard_without_matches_loses_nothing() {
        let reports = [report(0, "answered", 100, 100), report(1, "failed", 0, 100)];
        assert_eq!(estimated_recall(&reports, Some(&[1.0, 0.0])), 1.0);
        assert!((estimated_recall(&reports, Some(&[0.2, 0.6])) - 0.25).abs() < 1e-9);
    }
}
