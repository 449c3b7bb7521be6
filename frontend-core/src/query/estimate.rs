//! The accuracy estimate of a partial answer: `estimated_recall`, the
//! expected fraction of the full answer's top k that the answer contains.
//! ARCHITECTURE.md ("The accuracy estimate") describes the models,
//! BENCHMARKS.md measures them.
//!
//! Two models, the better one that applies:
//! - [`champion_recall`]: the shards' champion lists (each term's best
//!   documents per shard, from the term statistics) score what the parts not
//!   searched would have added, and the searched parts, as controls, say how
//!   much the lists miss. Needs every shard's lists and a query that scores
//!   as a sum of its words.
//! - [`share_recall`]: a document of the full top k lies in a shard with
//!   probability equal to the shard's share of the query's best documents
//!   (from per-shard document frequencies, or of all documents), and is in
//!   the answer when its part of the shard was searched.

use std::sync::Arc;

use proto::leaf::Hit;
use scoring::{bm25_idf, BM25_K1};

use crate::query::coverage::{ShardReport, ShardState};
use scoring::Champion;

/// What the frontend knows about a query's terms on every shard when it
/// merges (built by [`crate::query::term_stats`] from the shards' `TermStats`).
#[derive(Clone, Debug)]
pub struct Evidence {
    /// Each shard's expected share of the query's best documents
    /// (`answer_share`): the share model.
    pub share: Vec<f64>,
    /// One model per (field, term) pair, when the query is a plain sum of
    /// its pairs: the champion-list model.
    pub impacts: Option<Vec<PairModel>>,
}

/// One (field, term) pair on every shard, in shard order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PairStats {
    /// Document frequency per shard.
    pub freqs: Vec<u64>,
    /// Champion list per shard (the leaf's best documents for the term,
    /// best first); empty for a shard without the term or one that sent
    /// none.
    pub top: Vec<Box<[Champion]>>,
    /// Per shard, the layout (scan-order fingerprint) of the replica that
    /// made the list; positions compare only within one layout.
    pub layouts: Vec<u64>,
}

impl PairStats {
    /// Bytes the pair holds, for the cache's weigher.
    pub fn weight(&self) -> u32 {
        let lists: usize = self.top.iter().map(|list| list.len()).sum();
        (64 + self.freqs.len() * 24 + lists * std::mem::size_of::<Champion>())
            .try_into()
            .unwrap_or(u32::MAX)
    }
}

/// How a term takes part in a query, as tantivy's parser reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Occur {
    /// A free word: scores when present.
    Should,
    /// `+word`, the n-th distinct required word: a match must have it.
    Must(u8),
    /// `-word`: a match must not have it; it never scores.
    MustNot,
}

/// One (field, term) pair of a query: its corpus-wide BM25 constants and
/// every shard's champion list.
#[derive(Clone, Debug)]
pub struct PairModel {
    occur: Occur,
    /// boost × idf × (1 + K1) with corpus-wide statistics.
    weight: f32,
    /// Corpus-wide average length of the field.
    avg_length: f32,
    /// The pair on every shard (frequencies and champion lists).
    pub stats: Arc<PairStats>,
}

impl PairModel {
    /// How the pair's term occurs, `boost` of the field, the pair's
    /// corpus-wide document frequency, the corpus's document count and the
    /// field's token count.
    pub fn new(
        occur: Occur,
        boost: f32,
        doc_freq: u64,
        num_docs: u64,
        tokens: u64,
        stats: Arc<PairStats>,
    ) -> Self {
        let num_docs = num_docs.max(1);
        PairModel {
            occur,
            // In tantivy's order, so that the scores are bit-identical.
            weight: bm25_idf(doc_freq, num_docs) * (1.0 + BM25_K1) * boost,
            avg_length: (tokens as f32 / num_docs as f32).max(f32::MIN_POSITIVE),
            stats,
        }
    }

    /// The pair's contribution to the score of a document, as a leaf
    /// scoring with the same statistics computes it.
    pub fn score(&self, champion: &Champion) -> f32 {
        self.weight * champion.tf_factor(self.avg_length)
    }

    /// Shard `shard`'s champion list, `None` when the shard has the term but
    /// sent no list.
    fn list(&self, shard: usize) -> Option<&[Champion]> {
        let freq = self.stats.freqs.get(shard).copied().unwrap_or(0);
        let top = self.stats.top.get(shard).map_or(&[][..], |list| &list[..]);
        (freq == 0 || !top.is_empty()).then_some(top)
    }
}

/// Relative margin under a computed floor: the frontend sums a document's
/// parts in another order than the leaf, a few ulps apart (the leaf's own
/// pruning slack).
const FLOOR_SLACK: f32 = 1e-4;

/// A lower bound on the k-th best score of the whole corpus for a query of
/// free words only (every pair [`Occur::Should`]), from every shard's
/// champion lists; `None` for other queries, or when the lists name fewer
/// than `k` documents.
///
/// Such a query scores a document as the sum of its pairs' contributions,
/// each at least 0, so a listed document scores at least the sum of the
/// listed contributions it has (its parts in other pairs count as 0). The
/// listed documents are distinct across shards and within one shard's list
/// of one pair; within a shard, lists of several pairs name the same
/// document by its position only when they come from one layout, so a
/// shard whose lists disagree on it contributes one list alone. So the k-th
/// best of those bounds is at most the k-th best score in the corpus, and
/// every document of a complete answer's top k scores at least the floor
/// (lowered by `FLOOR_SLACK` against summation order).
pub fn score_floor(pairs: &[PairModel], k: usize) -> Option<f32> {
    if k == 0 || pairs.is_empty() || pairs.iter().any(|pair| pair.occur != Occur::Should) {
        return None;
    }
    let shards = pairs
        .iter()
        .map(|pair| pair.stats.top.len())
        .max()
        .unwrap_or(0);
    let mut bounds: Vec<f32> = Vec::new();
    let mut parts: Vec<(u32, f32)> = Vec::new();
    for shard in 0..shards {
        let lists = pairs.iter().filter_map(|pair| {
            let list = pair.stats.top.get(shard).filter(|list| !list.is_empty())?;
            let layout = pair.stats.layouts.get(shard).copied().unwrap_or(0);
            Some((pair, &list[..], layout))
        });
        let mut layout = None;
        let mut consistent = true;
        parts.clear();
        for (pair, list, this) in lists.clone() {
            consistent &= *layout.get_or_insert(this) == this;
            // A saturated position may stand for several documents.
            parts.extend(
                list.iter()
                    .filter(|champion| champion.doc != u32::MAX)
                    .map(|champion| (champion.doc, pair.score(champion))),
            );
        }
        if consistent {
            parts.sort_unstable_by_key(|part| part.0);
            let mut parts = parts.iter().peekable();
            while let Some(&(doc, mut score)) = parts.next() {
                while let Some(&(_, more)) = parts.next_if(|next| next.0 == doc) {
                    score += more;
                }
                bounds.push(score);
            }
        } else if let Some((pair, list, _)) = lists.max_by(|a, b| {
            let best = |list: &[Champion], pair: &PairModel| {
                list.iter().take(k).map(|c| pair.score(c)).sum::<f32>()
            };
            best(a.1, a.0).total_cmp(&best(b.1, b.0))
        }) {
            bounds.extend(list.iter().map(|champion| pair.score(champion)));
        }
    }
    if bounds.len() < k {
        return None;
    }
    let (_, kth, _) = bounds.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    let floor = *kth - kth.abs() * FLOOR_SLACK;
    (floor.is_finite() && floor > 0.0).then_some(floor)
}

/// Expected recall@k of an answer whose shards ended as in `reports` and
/// whose merged top k is `hits`.
pub fn estimated_recall(
    reports: &[ShardReport],
    hits: &[Hit],
    k: usize,
    evidence: Option<&Evidence>,
) -> f64 {
    estimate(reports, hits, k, evidence).0
}

/// The model behind an answer's `estimated_recall`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RecallModel {
    /// The answer is complete: nothing to estimate.
    Complete,
    /// Champion lists predicted what the missing parts would add.
    Champion,
    /// Each shard's share of the query's best documents.
    Share,
    /// Each shard's share of all documents.
    Documents,
}

impl RecallModel {
    pub const ALL: &'static [RecallModel] = &[
        RecallModel::Complete,
        RecallModel::Champion,
        RecallModel::Share,
        RecallModel::Documents,
    ];

    /// The name in metric labels.
    pub fn label(&self) -> &'static str {
        match self {
            RecallModel::Complete => "complete",
            RecallModel::Champion => "champion",
            RecallModel::Share => "share",
            RecallModel::Documents => "documents",
        }
    }
}

/// [`estimated_recall`], and the model that made it: champion lists, the
/// share model or each shard's share of all documents.
pub fn estimate(
    reports: &[ShardReport],
    hits: &[Hit],
    k: usize,
    evidence: Option<&Evidence>,
) -> (f64, RecallModel) {
    if let Some(recall) = evidence
        .and_then(|e| e.impacts.as_deref())
        .and_then(|pairs| champion_recall(pairs, reports, hits, k))
    {
        return (recall, RecallModel::Champion);
    }
    match evidence {
        Some(evidence) => (
            share_recall(reports, Some(&evidence.share)),
            RecallModel::Share,
        ),
        None => (share_recall(reports, None), RecallModel::Documents),
    }
}

/// The champion-list model. Every shard's champion lists give a lower
/// bound on the scores of its best documents (a document's contribution
/// for a pair whose list it is not in counts as 0). The searched parts of
/// shards serve as controls: above any score t of the answer, the answer
/// holds every searched document, so the number of them the lists failed to
/// predict above t is known, and the unsearched parts are assumed to miss
/// as many per document. That gives M(t), the expected number of
/// unsearched documents scoring above t; the answer's i-th hit stays in the
/// full top k when i − 1 + M(score) < k. `None` when a shard's lists are
/// unknown.
pub fn champion_recall(
    pairs: &[PairModel],
    reports: &[ShardReport],
    hits: &[Hit],
    k: usize,
) -> Option<f64> {
    let required: u32 = pairs
        .iter()
        .filter_map(|pair| match pair.occur {
            Occur::Must(index) => Some(1u32 << index),
            _ => None,
        })
        .fold(0, |all, bit| all | bit);
    // Only documents that can reach the answer's last hit matter, unless
    // the answer is short and every match counts.
    let floor = match hits.get(k.saturating_sub(1)) {
        Some(last) if hits.len() >= k => last.score,
        _ => f32::NEG_INFINITY,
    };
    // The listed documents known to match (every required word seen, no
    // excluded one): a lower bound on their score, and how likely each is
    // to lie in a searched part and in an unsearched one (1 or 0 when the
    // lists' positions are those of the replica that answered).
    let mut searched = Weighted::default();
    let mut unsearched = Weighted::default();
    let mut parts: Vec<Part> = Vec::new();
    let (mut docs_searched, mut docs_unsearched) = (0u64, 0u64);
    let mut extra_matches = 0.0;
    for report in reports {
        let shard = report.shard as usize;
        let total = report.docs_total.max(report.docs_searched);
        let searched_docs = match report.state {
            ShardState::Answered => total,
            ShardState::Partial => report.docs_searched,
            _ => 0,
        };
        docs_searched += searched_docs;
        docs_unsearched += total - searched_docs;
        let searched_fraction = if total > 0 {
            searched_docs as f64 / total as f64
        } else {
            1.0
        };
        // Positions compare across pairs, and with the answer's
        // `docs_searched`, only within one layout.
        let mut layout = None;
        let mut largest_rest = 0.0f64;
        parts.clear();
        for pair in pairs {
            let list = pair.list(shard)?;
            if !list.is_empty() {
                let this = pair.stats.layouts.get(shard).copied().unwrap_or(0);
                if *layout.get_or_insert(this) != this {
                    return None;
                }
            }
            parts.extend(list.iter().map(|champion| match pair.occur {
                Occur::Should => (champion.doc, pair.score(champion), 0, false),
                Occur::Must(index) => (champion.doc, pair.score(champion), 1 << index, false),
                Occur::MustNot => (champion.doc, 0.0, 0, true),
            }));
            let freq = pair.stats.freqs.get(shard).copied().unwrap_or(0);
            let rest = freq.saturating_sub(list.len() as u64) as f64 * (1.0 - searched_fraction);
            if pair.occur != Occur::MustNot {
                largest_rest = largest_rest.max(rest);
            }
        }
        extra_matches += largest_rest;
        let by_position = report.state != ShardState::Partial
            || layout.is_some_and(|layout| layout != 0 && layout == report.layout);
        // Each document's parts summed.
        parts.sort_unstable_by_key(|part| part.0);
        let mut parts = parts.iter().peekable();
        while let Some(&(doc, mut score, mut seen, mut excluded)) = parts.next() {
            while let Some(&(_, more, also, out)) = parts.next_if(|next| next.0 == doc) {
                score += more;
                seen |= also;
                excluded |= out;
            }
            if seen & required != required || excluded || score < floor {
                continue;
            }
            let in_searched = if by_position {
                if u64::from(doc) < searched_docs {
                    1.0
                } else {
                    0.0
                }
            } else {
                searched_fraction
            };
            searched.push(score, in_searched);
            unsearched.push(score, 1.0 - in_searched);
        }
    }
    let (searched, unsearched) = (searched.sorted(), unsearched.sorted());
    let per_doc = if docs_searched > 0 {
        docs_unsearched as f64 / docs_searched as f64
    } else {
        0.0
    };
    let available = hits.len() as f64 + unsearched.total() + extra_matches;
    let full = (k as f64).min(available.round()) as usize;
    if full == 0 {
        return Some(1.0);
    }
    let mut kept = 0.0;
    for (rank, hit) in hits.iter().take(full).enumerate() {
        let t = hit.score;
        // Listed documents may have been predicted that do not match (an
        // excluded word not listed), so the correction may be negative.
        let hits_above = hits.partition_point(|hit| hit.score > t) as f64;
        let unpredicted = hits_above - searched.above(t);
        // A tie counts half: ids decide, unknown for documents only listed.
        let missing =
            (unsearched.above(t) + 0.5 * unsearched.tied(t) + unpredicted * per_doc).max(0.0);
        kept += (full as f64 - rank as f64 - missing).clamp(0.0, 1.0);
    }
    Some((kept / full as f64).clamp(0.0, 1.0))
}

/// Scores with weights (expected counts of documents), for counting how
/// many score above a threshold.
#[derive(Default)]
struct Weighted {
    /// (score, weight), best first once sorted.
    entries: Vec<(f32, f64)>,
    /// `prefix[i]`: the weight of the first i entries.
    prefix: Vec<f64>,
}

impl Weighted {
    fn push(&mut self, score: f32, weight: f64) {
        if weight > 0.0 {
            self.entries.push((score, weight));
        }
    }

    fn sorted(mut self) -> Self {
        self.entries.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
        self.prefix = std::iter::once(0.0)
            .chain(self.entries.iter().scan(0.0, |sum, &(_, weight)| {
                *sum += weight;
                Some(*sum)
            }))
            .collect();
        self
    }

    fn total(&self) -> f64 {
        self.prefix.last().copied().unwrap_or(0.0)
    }

    /// Expected count scoring above `t`.
    fn above(&self, t: f32) -> f64 {
        self.prefix[self.entries.partition_point(|&(s, _)| s > t)]
    }

    /// Expected count scoring exactly `t`.
    fn tied(&self, t: f32) -> f64 {
        let from = self.entries.partition_point(|&(s, _)| s > t);
        let to = self.entries.partition_point(|&(s, _)| s >= t);
        self.prefix[to] - self.prefix[from]
    }
}

/// One pair's part of a listed document: (document, score, required words
/// seen, excluded word seen).
type Part = (u32, f32, u32, bool);

/// The share model: a document of the full top k lies in shard `s` with
/// probability `share[s]` and is in the answer when its part of the shard
/// was searched.
pub fn share_recall(reports: &[ShardReport], match_share: Option<&[f64]>) -> f64 {
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
            ShardState::Answered => 0.0,
            ShardState::Partial if report.docs_total > 0 => {
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
            state: ShardState::from_label(state).unwrap(),
            docs_searched: searched,
            docs_total: total,
            took_ms: 1.0,
            hedges: 0,
            hedge_won: false,
            layout: LAYOUT,
            generation: 1,
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
        assert!((share_recall(&reports, None) - 0.75).abs() < 1e-9);
    }

    #[test]
    fn a_shard_cut_short_loses_the_part_not_searched() {
        let reports = [
            report(0, "answered", 100, 100),
            report(1, "partial", 50, 100),
        ];
        assert!((share_recall(&reports, None) - 0.75).abs() < 1e-9);
    }

    #[test]
    fn a_missing_shard_without_matches_loses_nothing() {
        let reports = [report(0, "answered", 100, 100), report(1, "failed", 0, 100)];
        assert_eq!(share_recall(&reports, Some(&[1.0, 0.0])), 1.0);
        assert!((share_recall(&reports, Some(&[0.2, 0.6])) - 0.25).abs() < 1e-9);
    }

    /// (document, term frequency, field length) entries of one shard.
    type List = Vec<(u32, u16, u16)>;

    /// The layout of every replica in these tests, unless said otherwise.
    const LAYOUT: u64 = 7;

    /// A body pair of 1,000 documents averaging 10 tokens, with per-shard
    /// document frequencies and champion lists.
    fn pair(occur: Occur, freqs: Vec<u64>, lists: Vec<List>) -> PairModel {
        let top = lists
            .into_iter()
            .map(|list| {
                list.into_iter()
                    .map(|(doc, term_freq, field_length)| Champion {
                        doc,
                        term_freq,
                        field_length,
                    })
                    .collect()
            })
            .collect();
        let doc_freq = freqs.iter().sum();
        PairModel::new(
            occur,
            1.0,
            doc_freq,
            1000,
            10_000,
            Arc::new(PairStats {
                layouts: vec![LAYOUT; freqs.len()],
                freqs,
                top,
            }),
        )
    }

    /// The hits a shard returns: its listed documents' scores, best first.
    fn hits(pair: &PairModel, shard: usize, k: usize) -> Vec<Hit> {
        let mut scores: Vec<f32> = pair.stats.top[shard]
            .iter()
            .map(|c| pair.score(c))
            .collect();
        scores.sort_by(|a, b| b.total_cmp(a));
        scores
            .into_iter()
            .take(k)
            .map(|score| Hit {
                score,
                shard: shard as u32,
                ..Hit::default()
            })
            .collect()
    }

    #[test]
    fn listed_documents_of_a_missing_shard_displace_the_answers_last_hits() {
        // Shard 1's document with tf 6 beats all of shard 0's; its others
        // (tf 1; tf 2 in a long field) lose to shard 0's fifth (tf 2).
        let body = pair(
            Occur::Should,
            vec![5, 3],
            vec![
                vec![(0, 5, 10), (1, 4, 10), (2, 3, 10), (3, 2, 10), (4, 1, 10)],
                vec![(0, 6, 10), (7, 1, 10), (9, 2, 50)],
            ],
        );
        let answer = hits(&body, 0, 5);
        let reports = [
            report(0, "answered", 500, 500),
            report(1, "timed_out", 0, 500),
        ];
        let pairs = [body];
        assert_eq!(champion_recall(&pairs, &reports, &answer, 5), Some(0.8));
        let evidence = Evidence {
            share: vec![0.5, 0.5],
            impacts: Some(pairs.to_vec()),
        };
        assert_eq!(estimated_recall(&reports, &answer, 5, Some(&evidence)), 0.8);
        // Without the lists, only the share is known.
        let shares = Evidence {
            impacts: None,
            ..evidence
        };
        assert_eq!(estimated_recall(&reports, &answer, 5, Some(&shares)), 0.5);

        // Cut short after its first five documents, shard 1 returned the
        // tf 6 document; what it did not search is too weak to matter.
        let mut answer = hits(&pairs[0], 0, 4);
        answer.insert(0, hits(&pairs[0], 1, 1).remove(0));
        let reports = [
            report(0, "answered", 500, 500),
            report(1, "partial", 5, 500),
        ];
        assert_eq!(champion_recall(&pairs, &reports, &answer, 5), Some(1.0));
    }

    #[test]
    fn positions_from_another_replicas_layout_count_by_the_searched_fraction() {
        // Shard 1 searched half its documents; its best listed document
        // (position 400) beats every hit of shard 0 but was not searched.
        let body = pair(
            Occur::Should,
            vec![4, 1],
            vec![
                vec![(0, 4, 10), (1, 3, 10), (2, 2, 10), (3, 1, 10)],
                vec![(400, 6, 10)],
            ],
        );
        let answer = hits(&body, 0, 4);
        let pairs = [body];
        let mut reports = [
            report(0, "answered", 500, 500),
            report(1, "partial", 250, 500),
        ];
        // Same layout: the position says it was not searched.
        assert_eq!(champion_recall(&pairs, &reports, &answer, 4), Some(0.75));
        // The replica that answered orders its documents differently: the
        // position says nothing, the document was searched with
        // probability one half.
        reports[1].layout = LAYOUT + 1;
        let recall = champion_recall(&pairs, &reports, &answer, 4).unwrap();
        assert!(recall > 0.75 && recall < 1.0, "{recall}");
    }

    #[test]
    fn required_and_excluded_words_decide_which_listed_documents_match() {
        // "+a b -c". On the missing shard 1: document 0 scores high on b
        // but has no a (a's list there is complete); document 1 has a and
        // b but also c; document 2 has a, and beats shard 0's second hit.
        let a = pair(
            Occur::Must(0),
            vec![2, 2],
            vec![vec![(0, 3, 10), (1, 1, 10)], vec![(1, 5, 10), (2, 2, 10)]],
        );
        let b = pair(
            Occur::Should,
            vec![0, 2],
            vec![vec![], vec![(0, 9, 10), (1, 9, 10)]],
        );
        let c = pair(Occur::MustNot, vec![0, 1], vec![vec![], vec![(1, 1, 10)]]);
        let answer = hits(&a, 0, 2);
        let reports = [
            report(0, "answered", 500, 500),
            report(1, "timed_out", 0, 500),
        ];
        assert_eq!(champion_recall(&[a, b, c], &reports, &answer, 2), Some(0.5));
    }

    #[test]
    fn documents_the_lists_miss_on_searched_shards_are_expected_on_the_others() {
        // Shard 0's best hit is in none of its lists (the term is in more
        // documents than the lists hold): one such document per shard of
        // this size is expected on the missing shard too, above all of
        // shard 0's listed documents, which pushes the answer's last hit
        // out (shard 1's own listed documents are weaker than all of them).
        let body = pair(
            Occur::Should,
            vec![100, 100],
            vec![
                vec![(0, 3, 10), (1, 2, 10), (2, 1, 10)],
                vec![(0, 1, 50), (1, 1, 50), (2, 1, 50)],
            ],
        );
        let mut answer = hits(&body, 0, 3);
        answer.insert(
            0,
            Hit {
                score: 100.0,
                ..Hit::default()
            },
        );
        let reports = [
            report(0, "answered", 500, 500),
            report(1, "timed_out", 0, 500),
        ];
        let recall = champion_recall(&[body], &reports, &answer, 4).unwrap();
        assert!((recall - 0.75).abs() < 1e-9, "{recall}");
    }

    #[test]
    fn a_shard_without_lists_leaves_the_share_model_in_charge() {
        // Shard 1 has the term but sent no list (an older leaf).
        let body = pair(
            Occur::Should,
            vec![3, 3],
            vec![vec![(0, 1, 10), (1, 1, 10), (2, 1, 10)], vec![]],
        );
        let answer = hits(&body, 0, 3);
        let reports = [
            report(0, "answered", 500, 500),
            report(1, "timed_out", 0, 500),
        ];
        assert_eq!(champion_recall(&[body], &reports, &answer, 3), None);
    }
}
