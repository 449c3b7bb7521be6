//! Block-max WAND for the common query shape, with the exact scores of the
//! unpruned search.
//!
//! The parser turns `json parser` over `title` (boosted) and `body` into a
//! disjunction of disjunctions: `(title:json^2 body:json) (title:parser^2
//! body:parser)`. tantivy prunes (block-max WAND, `Weight::for_each_pruning`)
//! only a flat union of term scorers, so [`Disjunction`] flattens such a
//! query into its term leaves and runs them as one union; only documents
//! that may beat the current k-th best reach the callback.
//!
//! Block-max WAND sums a document's term scores in the order its cursors
//! happen to be in, which depends on the other documents of the segment, so
//! the same document could score a few ulps apart in two shardings and two
//! equal scores could differ. Each candidate is therefore rescored by
//! [`Exact`], which sums the leaves in the nesting and order of the query
//! as the unpruned scorer does (tantivy's union adds matching sub-scores in
//! clause order, starting at 0): scores are bit for bit those of a full
//! scan. The threshold handed back is the exact k-th best score lowered by a
//! relative [`SLACK`], so that no document whose exact score could tie or
//! beat it is pruned because its pruning-order sum came out a few ulps low.

use std::fmt::Write;
use std::sync::Arc;

use tantivy::query::{
    BooleanQuery, BooleanWeight, BoostQuery, EnableScoring, Explanation, Occur, Query, Scorer,
    SumCombiner, TermQuery, Weight,
};
use tantivy::{DocId, DocSet, Score, SegmentReader};

/// Relative margin under the k-th best score below which candidates are
/// pruned (pruning-order sums differ from exact ones by a few ulps, about
/// 1e-7 relative).
pub(crate) const SLACK: f32 = 1e-4;

/// The nesting of a pure disjunction: leaf `i` is `Disjunction::leaves[i]`.
#[derive(Debug)]
enum Node {
    Leaf(usize),
    Group(Vec<Node>),
}

/// A query that is a disjunction (only `Should` clauses, at any depth) of
/// term queries, possibly boosted.
#[derive(Debug)]
pub(crate) struct Disjunction {
    tree: Arc<Node>,
    leaves: Vec<Box<dyn Query>>,
}

impl Disjunction {
    /// None when `query` has another shape (phrases, `+`, `-`, …): those
    /// take the plain scoring loop.
    pub(crate) fn of(query: &dyn Query) -> Option<Disjunction> {
        let mut leaves = Vec::new();
        let tree = shape(query, &mut leaves)?;
        Some(Disjunction {
            tree: Arc::new(tree),
            leaves,
        })
    }

    /// The leaves' weights and their flat union, with `scoring`.
    pub(crate) fn weights(&self, scoring: EnableScoring<'_>) -> tantivy::Result<Pruner> {
        let leaves = self
            .leaves
            .iter()
            .map(|leaf| leaf.weight(scoring).map(Arc::from))
            .collect::<tantivy::Result<Vec<Arc<dyn Weight>>>>()?;
        let union = BooleanWeight::with_minimum_number_should_match(
            leaves
                .iter()
                .map(|weight| {
                    (
                        Occur::Should,
                        Box::new(Shared(weight.clone())) as Box<dyn Weight>,
                    )
                })
                .collect(),
            0,
            true,
            Box::new(SumCombiner::default),
        );
        Ok(Pruner {
            tree: Arc::clone(&self.tree),
            leaves,
            union,
        })
    }
}

fn shape(query: &dyn Query, leaves: &mut Vec<Box<dyn Query>>) -> Option<Node> {
    if query.is::<TermQuery>() || is_boosted_term(query) {
        leaves.push(query.box_clone());
        return Some(Node::Leaf(leaves.len() - 1));
    }
    let boolean = query.downcast_ref::<BooleanQuery>()?;
    if boolean.get_minimum_number_should_match() > 1 || boolean.clauses().is_empty() {
        return None;
    }
    let mut children = Vec::with_capacity(boolean.clauses().len());
    for (occur, clause) in boolean.clauses() {
        if *occur != Occur::Should {
            return None;
        }
        children.push(shape(clause.as_ref(), leaves)?);
    }
    Some(Node::Group(children))
}

/// Whether `query` is a boost of a term query. tantivy's `BoostQuery` does
/// not expose what it boosts, only its `Debug` form does; anything else
/// (a boosted phrase or group) is not a leaf, and its query takes the
/// plain loop. Inside, a term scores with tantivy's term scorer, which
/// block-max WAND needs: a union with any other scorer is not pruned and
/// would reach the callback (which checks the budget) only for
/// competitive documents.
fn is_boosted_term(query: &dyn Query) -> bool {
    const TERM_INSIDE: &str = "Boost(query=TermQuery(";
    if !query.is::<BoostQuery>() {
        return false;
    }
    // Only the start of the `Debug` form is written: formatting stops at
    // the first write past it.
    let mut start = Prefix {
        text: String::with_capacity(TERM_INSIDE.len()),
        limit: TERM_INSIDE.len(),
    };
    let _ = write!(start, "{query:?}");
    start.text == TERM_INSIDE
}

/// A `fmt::Write` that keeps the first `limit` bytes written to it and
/// fails the write that would go past them.
struct Prefix {
    text: String,
    limit: usize,
}

impl std::fmt::Write for Prefix {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        let room = self.limit - self.text.len();
        if text.len() <= room {
            self.text.push_str(text);
            return Ok(());
        }
        let mut end = room;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        self.text.push_str(&text[..end]);
        Err(std::fmt::Error)
    }
}

/// A [`Disjunction`]'s weights for one search.
pub(crate) struct Pruner {
    tree: Arc<Node>,
    leaves: Vec<Arc<dyn Weight>>,
    /// All leaves as one union of term scorers: block-max WAND.
    pub(crate) union: BooleanWeight<SumCombiner>,
}

impl Pruner {
    /// The exact scorer of a segment. With at most two leaves, the pruning
    /// sum is already exact (`0 + a + b == 0 + b + a` in floating point),
    /// and no second set of scorers is opened.
    pub(crate) fn exact(&self, reader: &SegmentReader) -> tantivy::Result<Exact<'_>> {
        let scorers = if self.leaves.len() <= 2 {
            None
        } else {
            let scorers = self
                .leaves
                .iter()
                .map(|leaf| leaf.scorer(reader, 1.0))
                .collect::<tantivy::Result<Vec<_>>>()?;
            Some(scorers)
        };
        Ok(Exact {
            tree: &self.tree,
            scorers,
        })
    }
}

/// Scores single documents, in increasing doc order, as the unpruned
/// scorer of the original query does.
pub(crate) struct Exact<'a> {
    tree: &'a Node,
    /// None: the pruning sum is exact.
    scorers: Option<Vec<Box<dyn Scorer>>>,
}

impl Exact<'_> {
    /// `doc`'s score, given the score block-max WAND summed for it; None
    /// when no leaf matches it. `doc` must not be below a previous call's.
    pub(crate) fn score(&mut self, doc: DocId, pruning_sum: Score) -> Option<Score> {
        match &mut self.scorers {
            Some(scorers) => eval(self.tree, scorers, doc),
            None => Some(pruning_sum),
        }
    }
}

fn eval(node: &Node, scorers: &mut [Box<dyn Scorer>], doc: DocId) -> Option<Score> {
    match node {
        Node::Leaf(i) => {
            let scorer = &mut scorers[*i];
            if scorer.doc() < doc {
                scorer.seek(doc);
            }
            (scorer.doc() == doc).then(|| scorer.score())
        }
        Node::Group(children) => {
            let mut sum: Score = 0.0;
            let mut matched = false;
            for child in children {
                if let Some(score) = eval(child, scorers, doc) {
                    sum += score;
                    matched = true;
                }
            }
            matched.then_some(sum)
        }
    }
}

/// One weight shared by the union and the exact scorer.
struct Shared(Arc<dyn Weight>);

impl Weight for Shared {
    fn scorer(&self, reader: &SegmentReader, boost: Score) -> tantivy::Result<Box<dyn Scorer>> {
        self.0.scorer(reader, boost)
    }

    fn explain(&self, reader: &SegmentReader, doc: DocId) -> tantivy::Result<Explanation> {
        self.0.explain(reader, doc)
    }
}
