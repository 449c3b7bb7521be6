//! The scoring contract between the leaves and the frontend.
//!
//! A leaf scores with tantivy's BM25; the frontend predicts those scores
//! (the accuracy estimate) and sums statistics across shards. Both sides
//! must agree on the arithmetic, the fields and their boosts, the limits on
//! queries and on `k`, and how a champion list is packed, so those live
//! here, in a crate without tantivy that both depend on.
//!
//! **Invariant:** nothing here depends on tantivy, proto or any server
//! crate; a change to this file is a change to both sides at once.

/// Name of the field holding a document's id (stored, not searched).
pub const FIELD_ID: &str = "id";
/// Name of the title field.
pub const FIELD_TITLE: &str = "title";
/// Name of the body field.
pub const FIELD_BODY: &str = "body";
/// The fields a query searches, in the order the leaf's parser takes them.
pub const SEARCH_FIELDS: [&str; 2] = [FIELD_TITLE, FIELD_BODY];

/// How much more a title match weighs than a body match.
pub const TITLE_BOOST: f32 = 2.0;

/// The boost of a match in `field`: [`TITLE_BOOST`] for the title, 1 for
/// any other field.
pub fn field_boost(field: &str) -> f32 {
    if field == FIELD_TITLE {
        TITLE_BOOST
    } else {
        1.0
    }
}

/// Largest `k` a search accepts.
pub const MAX_K: u32 = 1000;
/// Longest query text a leaf accepts, in bytes.
pub const MAX_QUERY_BYTES: usize = 4096;
/// tantivy's default tokenizer drops tokens longer than this, in bytes.
pub const MAX_TOKEN_BYTES: usize = 40;

/// BM25's term-frequency saturation, as tantivy scores.
pub const BM25_K1: f32 = 1.2;
/// BM25's length normalisation, as tantivy scores.
pub const BM25_B: f32 = 0.75;

/// The BM25 term-frequency factor of a document, `tf / (tf + K1 (1 − B + B
/// len / avg_len))`, in tantivy's arithmetic. A term's contribution to a
/// score is `boost × idf × (1 + K1) × factor`.
pub fn bm25_tf_factor(term_freq: u32, field_length: u32, avg_field_length: f32) -> f32 {
    let term_freq = term_freq as f32;
    let norm = BM25_K1 * (1.0 - BM25_B + BM25_B * field_length as f32 / avg_field_length);
    term_freq / (term_freq + norm)
}

/// BM25 inverse document frequency, in tantivy's arithmetic.
pub fn bm25_idf(doc_freq: u64, num_docs: u64) -> f32 {
    let doc_freq = doc_freq.min(num_docs);
    let x = ((num_docs - doc_freq) as f32 + 0.5) / (doc_freq as f32 + 0.5);
    (1.0 + x).ln()
}

/// BM25 inverse document frequency in `f64`, for estimates that rank terms
/// rather than reproduce a leaf's score (no clamping: `doc_freq` may come
/// from stale statistics).
pub fn bm25_idf_f64(doc_freq: f64, num_docs: f64) -> f64 {
    (1.0 + (num_docs - doc_freq + 0.5) / (doc_freq + 0.5)).ln()
}

/// How many documents a `TermStats` answer lists per term (its champion
/// list).
pub const IMPACT_DEPTH: usize = 64;

/// One entry of a champion list as the leaf sends it (its scan position,
/// term frequency and decoded field length), packed: the frontend's cache
/// holds millions of them. Values too large for the packed width saturate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Champion {
    /// Position in the shard's scan order.
    pub doc: u32,
    pub term_freq: u16,
    pub field_length: u16,
}

impl Champion {
    /// Packs a leaf's (doc, term frequency, field length) triple.
    pub fn pack(doc: u64, term_freq: u32, field_length: u32) -> Champion {
        let saturate = |value: u32| u16::try_from(value).unwrap_or(u16::MAX);
        Champion {
            doc: u32::try_from(doc).unwrap_or(u32::MAX),
            term_freq: saturate(term_freq),
            field_length: saturate(field_length),
        }
    }

    /// The BM25 term-frequency factor of this entry for a field whose
    /// average length is `avg_field_length`.
    pub fn tf_factor(&self, avg_field_length: f32) -> f32 {
        bm25_tf_factor(
            u32::from(self.term_freq),
            u32::from(self.field_length),
            avg_field_length,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idf_matches_tantivys_formula_and_clamps() {
        let idf = bm25_idf(10, 1000);
        let expected = (1.0f32 + (990.0 + 0.5) / (10.0 + 0.5)).ln();
        assert_eq!(idf, expected);
        assert_eq!(bm25_idf(2000, 1000), bm25_idf(1000, 1000));
        assert!((f64::from(idf) - bm25_idf_f64(10.0, 1000.0)).abs() < 1e-5);
    }

    #[test]
    fn tf_factor_saturates_and_normalises_length() {
        assert!(bm25_tf_factor(1, 10, 10.0) < bm25_tf_factor(2, 10, 10.0));
        assert!(bm25_tf_factor(1, 20, 10.0) < bm25_tf_factor(1, 10, 10.0));
        // At the average length the factor is tf / (tf + K1).
        assert_eq!(bm25_tf_factor(3, 10, 10.0), 3.0 / (3.0 + BM25_K1));
    }

    #[test]
    fn champions_saturate_instead_of_wrapping() {
        let big = Champion::pack(u64::MAX, 70_000, 1 << 20);
        assert_eq!(
            big,
            Champion {
                doc: u32::MAX,
                term_freq: u16::MAX,
                field_length: u16::MAX
            }
        );
        let small = Champion::pack(7, 3, 12);
        assert_eq!(
            small,
            Champion {
                doc: 7,
                term_freq: 3,
                field_length: 12
            }
        );
        assert_eq!(small.tf_factor(12.0), bm25_tf_factor(3, 12, 12.0));
    }

    #[test]
    fn only_the_title_is_boosted() {
        assert_eq!(field_boost(FIELD_TITLE), TITLE_BOOST);
        assert_eq!(field_boost(FIELD_BODY), 1.0);
        assert_eq!(field_boost("anything"), 1.0);
    }
}
