//! Unit tests of [`crate::search`]: parsing, exact merging across shards,
//! ties, budgets and snippets.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use proto::leaf::{CorpusStats, Hit};

use super::*;
use crate::builtin::{generate_corpus, sample_queries};
use crate::corpus::Document;
use crate::stats::sum_corpus_stats;

/// One index of a generated corpus, shared by the tests that only read it.
fn small_index() -> &'static ShardIndex {
    static INDEX: OnceLock<ShardIndex> = OnceLock::new();
    INDEX.get_or_init(|| ShardIndex::build_in_ram(0, 1, &generate_corpus(3000, 11)).unwrap())
}

fn ids(hits: &[Hit]) -> Vec<&str> {
    hits.iter().map(|hit| hit.id.as_str()).collect()
}

fn assert_ordered(hits: &[Hit]) {
    for pair in hits.windows(2) {
        let ordered = pair[0].score > pair[1].score
            || (pair[0].score == pair[1].score && pair[0].id < pair[1].id);
        assert!(ordered, "{:?} before {:?}", pair[0], pair[1]);
    }
}

#[test]
fn bad_queries_are_invalid_not_internal() {
    let index = small_index();
    let deep = format!("{}json{}", "(".repeat(40), ")".repeat(40));
    let long = "json ".repeat(1000);
    for query in [
        "",
        "   ",
        "nosuchfield:json",
        "title:",
        deep.as_str(),
        long.as_str(),
    ] {
        let error = index.parse_query(query).unwrap_err();
        assert!(
            matches!(error, LeafError::InvalidQuery(_)),
            "{query:?}: {error}"
        );
        assert_eq!(
            tonic::Status::from(error).code(),
            tonic::Code::InvalidArgument
        );
    }
    for k in [0, MAX_K + 1] {
        let error = index
            .search_text("json", k, None, &Budget::unlimited())
            .unwrap_err();
        assert!(matches!(error, LeafError::InvalidArgument(_)), "{error}");
    }
    // Operators, phrases and modest nesting parse.
    for query in [
        "json parser",
        "\"command line\" tool",
        "+logger -color",
        "(json OR yaml) AND parser",
        "title:react",
    ] {
        index.parse_query(query).unwrap();
    }
}

#[test]
fn sample_queries_find_sensible_hits() {
    let index = small_index();
    let search = |query: &str| {
        let output = index
            .search_text(query, 10, None, &Budget::unlimited())
            .unwrap();
        assert!(!output.hits.is_empty(), "no hits for {query}");
        assert!(!output.early_terminated);
        assert_eq!(output.docs_searched, output.docs_total);
        assert_ordered(&output.hits);
        output.hits
    };
    // The words of a hit, as the default tokenizer splits them.
    let words = |hit: &Hit| {
        let text = format!(
            "{} {}",
            hit.title,
            hit.snippet.replace("<b>", "").replace("</b>", "")
        );
        text.to_lowercase()
            .split(|c: char| !c.is_alphanumeric())
            .map(str::to_string)
            .collect::<Vec<String>>()
    };
    let hits = search("json parser");
    assert!(hits[0].title.contains("json-parser"), "{hits:?}");
    assert!(hits[0].snippet.contains("<b>"), "{hits:?}");
    let hits = search("\"command line\" tool");
    assert!(hits.iter().all(|hit| hit
        .snippet
        .to_lowercase()
        .contains("<b>command</b> <b>line</b>")));
    let hits = search("+logger -color");
    for hit in &hits {
        assert!(words(hit).iter().any(|w| w == "logger"), "{hit:?}");
        assert!(!words(hit).iter().any(|w| w == "color"), "{hit:?}");
    }
    let hits = search("http server");
    assert!(hits[0].title.contains("http-server"), "{hits:?}");
    let hits = search("react component");
    assert!(hits[0].title.contains("react"), "{hits:?}");
}

/// The contract with the frontend: the merge of the shards' top-k, scored
/// with summed statistics, is the top-k of one unsharded index.
#[test]
fn merged_shards_equal_one_unsharded_index() {
    let docs = generate_corpus(3000, 21);
    let whole = ShardIndex::build_in_ram(0, 1, &docs).unwrap();
    let layouts: Vec<Vec<ShardIndex>> = [1u32, 2, 3, 7]
        .iter()
        .map(|&shards| {
            (0..shards)
                .map(|shard| ShardIndex::build_in_ram(shard, shards, &docs).unwrap())
                .collect()
        })
        .collect();
    let mut queries = sample_queries(300, 22);
    queries.extend(["with", "json", "\"http server\"", "+react -hooks"].map(String::from));
    let mut compared = 0;
    for (i, query) in queries.iter().enumerate() {
        let k = if i % 5 == 0 { 50 } else { 10 };
        let expected = whole
            .search_text(query, k, None, &Budget::unlimited())
            .unwrap()
            .hits;
        for shards in &layouts {
            let parts: Vec<CorpusStats> = shards
                .iter()
                .map(|shard| shard.term_stats(query).unwrap())
                .collect();
            let global = sum_corpus_stats(&parts);
            let mut merged: Vec<Hit> = Vec::new();
            for shard in shards {
                let output = shard
                    .search_text(query, k, Some(&global), &Budget::unlimited())
                    .unwrap();
                assert!(output.global_stats);
                assert_ordered(&output.hits);
                merged.extend(output.hits);
            }
            merged.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.id.cmp(&b.id)));
            merged.truncate(k as usize);
            assert_eq!(
                ids(&merged),
                ids(&expected),
                "query {query:?} over {} shards",
                shards.len()
            );
            for (got, want) in merged.iter().zip(&expected) {
                let tolerance = 1e-4 * want.score.abs().max(1e-6);
                assert!(
                    (got.score - want.score).abs() <= tolerance,
                    "query {query:?}: {got:?} vs {want:?}"
                );
            }
            compared += 1;
        }
    }
    assert_eq!(compared, queries.len() * 4);
}

#[test]
fn ties_are_broken_by_id_across_shards() {
    // Identical documents score the same; the smallest ids must win, in
    // whatever order the index holds them.
    let docs: Vec<Document> = (0..200)
        .map(|i| Document {
            id: format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&[i as u8, 7])),
            title: "same-title".to_string(),
            body: "identical body text".to_string(),
            popularity: None,
        })
        .collect();
    let mut expected: Vec<&str> = docs.iter().map(|d| d.id.as_str()).collect();
    expected.sort_unstable();
    expected.truncate(7);
    let whole = ShardIndex::build_in_ram(0, 1, &docs).unwrap();
    let output = whole
        .search_text("identical", 7, None, &Budget::unlimited())
        .unwrap();
    assert_eq!(ids(&output.hits), expected);

    let shards: Vec<ShardIndex> = (0..3)
        .map(|shard| ShardIndex::build_in_ram(shard, 3, &docs).unwrap())
        .collect();
    let global = sum_corpus_stats(
        &shards
            .iter()
            .map(|s| s.term_stats("identical").unwrap())
            .collect::<Vec<_>>(),
    );
    let mut merged: Vec<Hit> = shards
        .iter()
        .flat_map(|s| {
            s.search_text("identical", 7, Some(&global), &Budget::unlimited())
                .unwrap()
                .hits
        })
        .collect();
    merged.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.id.cmp(&b.id)));
    merged.truncate(7);
    assert_eq!(ids(&merged), expected);
}

#[test]
fn exhausted_budget_stops_early_with_partial_coverage() {
    let index = small_index();
    // "with" is in most bodies, so the scorer passes many check points.
    let full = index
        .search_text("with", 10, None, &Budget::unlimited())
        .unwrap();
    assert!(!full.early_terminated);
    assert_eq!(full.docs_searched, full.docs_total);

    let partial = index
        .search_text("with", 10, None, &Budget::unlimited().with_doc_limit(500))
        .unwrap();
    assert!(partial.early_terminated);
    assert!(partial.docs_searched >= 500, "{}", partial.docs_searched);
    assert!(partial.docs_searched < partial.docs_total);
    assert_eq!(partial.hits.len(), 10);
    assert_ordered(&partial.hits);

    // A deadline already passed: nothing covered, nothing found, no error.
    let none = index
        .search_text("with", 10, None, &Budget::until(Instant::now()))
        .unwrap();
    assert!(none.early_terminated);
    assert_eq!(none.docs_searched, 0);
    assert!(none.hits.is_empty());
}

#[test]
fn cancelled_search_stops_with_an_error() {
    let index = small_index();
    let flag = Arc::new(AtomicBool::new(true));
    let error = index
        .search_text("with", 10, None, &Budget::unlimited().with_cancel(flag))
        .unwrap_err();
    assert!(matches!(error, LeafError::Cancelled));
}

#[test]
fn snippets_escape_html() {
    let docs = vec![Document {
        id: "xss-thing".to_string(),
        title: "xss-thing".to_string(),
        body: "<script>alert('x')</script> & more".to_string(),
        popularity: Some(1.0),
    }];
    let index = ShardIndex::build_in_ram(0, 1, &docs).unwrap();
    let title_match = index
        .search_text("xss", 1, None, &Budget::unlimited())
        .unwrap();
    assert_eq!(title_match.hits[0].snippet, "<b>xss</b>-thing");
    let body_match = index
        .search_text("alert", 1, None, &Budget::unlimited())
        .unwrap();
    assert!(!body_match.hits[0].snippet.contains("<script>"));
    assert!(body_match.hits[0].snippet.contains("<b>alert</b>"));
    // A query on the id alone matches neither text: the body is shown, escaped.
    let id_match = index
        .search_text("id:xss-thing", 1, None, &Budget::unlimited())
        .unwrap();
    assert!(id_match.hits[0].snippet.starts_with("&lt;script&gt;"));
}

#[test]
fn helpers() {
    assert_eq!(nesting("((a) \"(((\" (b))"), 2);
    assert_eq!(prefix("héllo", 2), "hé…");
    assert_eq!(prefix("hé", 2), "hé");
    assert_eq!(lowercase_first("Syntax Error"), "syntax Error");
    let mut top = SegmentTopK::new(2);
    for (score, ord) in [(1.0, 5), (2.0, 9), (1.0, 3), (1.0, 4), (0.5, 0)] {
        if top.competitive(score) {
            top.offer(score, ord, ord as DocId);
        }
    }
    let mut kept: Vec<(Score, u64)> = top.heap.into_iter().map(|e| (e.score, e.ord)).collect();
    kept.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    assert_eq!(kept, [(2.0, 9), (1.0, 3)]);
}

// ---- Fast paths against a straightforward reference (issue 17) ----

/// A generated corpus in several segments (block-max WAND and the id
/// tables work per segment).
fn segmented_index() -> &'static ShardIndex {
    static INDEX: OnceLock<ShardIndex> = OnceLock::new();
    INDEX.get_or_init(|| {
        let index = crate::index::build_in_ram_segments(&generate_corpus(3000, 23), 700).unwrap();
        assert_eq!(index.searcher.segment_readers().len(), 5);
        index
    })
}

/// Queries of every shape: the generated sample (phrases, `+`, `-`, which
/// take the plain loop) and disjunctions of one to five words (pruned;
/// three or more leaves are rescored).
fn reference_queries() -> Vec<String> {
    let mut queries = sample_queries(120, 5);
    let words = [
        "json", "parser", "with", "color", "http", "server", "fast", "react", "cli", "stream",
    ];
    for n in 1..=5 {
        for start in 0..words.len() {
            let query: Vec<&str> = (0..n)
                .map(|i| words[(start + 3 * i) % words.len()])
                .collect();
            queries.push(query.join(" "));
        }
    }
    queries.push("title:json body:json json".to_string());
    queries.push("with with with".to_string());
    queries
}

/// Every document's id from the stored field, per segment.
fn stored_ids(index: &ShardIndex) -> Vec<Vec<String>> {
    index
        .searcher
        .segment_readers()
        .iter()
        .enumerate()
        .map(|(segment, reader)| {
            (0..reader.max_doc())
                .map(|doc| {
                    let stored: TantivyDocument = index
                        .searcher
                        .doc(DocAddress::new(segment as u32, doc))
                        .unwrap();
                    stored
                        .get_first(index.fields.id)
                        .and_then(|value| value.as_str().map(str::to_string))
                        .unwrap()
                })
                .collect()
        })
        .collect()
}

/// The reference: the query's own scorer walked over every matching
/// document whose scan position is below `limit`, no pruning, ids from the
/// stored field, the best `k` by (score desc, id asc).
fn reference(
    index: &ShardIndex,
    ids: &[Vec<String>],
    text: &str,
    k: usize,
    stats: Option<&CorpusStats>,
    limit: u64,
) -> Vec<(f32, String)> {
    let query = index.parse_query(text).unwrap();
    let searcher = &index.searcher;
    let weight = match stats {
        Some(stats) => {
            let provider = GlobalStatistics::new(index, stats).unwrap();
            query
                .query()
                .weight(EnableScoring::enabled_from_statistics_provider(
                    &provider, searcher,
                ))
                .unwrap()
        }
        None => query
            .query()
            .weight(EnableScoring::enabled_from_searcher(searcher))
            .unwrap(),
    };
    let mut all = Vec::new();
    let mut base = 0u64;
    for (segment, reader) in searcher.segment_readers().iter().enumerate() {
        let mut scorer = weight.scorer(reader, 1.0).unwrap();
        let mut doc = scorer.doc();
        while doc != TERMINATED {
            if base + u64::from(doc) < limit {
                all.push((scorer.score(), ids[segment][doc as usize].clone()));
            }
            doc = scorer.advance();
        }
        base += u64::from(reader.max_doc());
    }
    all.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    all.truncate(k);
    all
}

fn assert_same(text: &str, got: &[Hit], expected: &[(f32, String)]) {
    let got: Vec<(f32, &str)> = got.iter().map(|h| (h.score, h.id.as_str())).collect();
    assert_eq!(
        got.len(),
        expected.len(),
        "{text:?}: {got:?} vs {expected:?}"
    );
    for ((score, id), (want_score, want_id)) in got.iter().zip(expected) {
        assert_eq!(id, want_id, "{text:?}: {got:?} vs {expected:?}");
        assert!(
            (score - want_score).abs() <= 1e-5 * want_score.abs().max(1.0),
            "{text:?}: {score} vs {want_score}"
        );
        // Stronger than the tolerance: the fast path rescores exactly.
        assert_eq!(score.to_bits(), want_score.to_bits(), "{text:?}");
    }
}

#[test]
fn fast_paths_equal_full_scoring_reference() {
    let index = segmented_index();
    let ids = stored_ids(index);
    // Corpus-wide statistics from a larger index, so that the statistics
    // provider path differs from the shard's own.
    let mut bigger = generate_corpus(3000, 23);
    bigger.extend(generate_corpus(2000, 24));
    let big = ShardIndex::build_in_ram(0, 1, &bigger).unwrap();
    for text in reference_queries() {
        let stats = big.term_stats(&text).unwrap();
        for k in [1usize, 3, 10, 50] {
            for stats in [None, Some(&stats)] {
                let output = index
                    .search(
                        &index.parse_query(&text).unwrap(),
                        k,
                        stats,
                        &Budget::unlimited(),
                    )
                    .unwrap();
                assert!(!output.early_terminated);
                assert_eq!(output.docs_searched, output.docs_total);
                let expected = reference(index, &ids, &text, k, stats, u64::MAX);
                assert_same(&text, &output.hits, &expected);
            }
        }
    }
}

#[test]
fn cut_short_searches_report_how_far_they_got() {
    let index = segmented_index();
    let ids = stored_ids(index);
    let total = index.num_docs();
    let mut cut = 0;
    for text in reference_queries() {
        for limit in [1u64, 300, 800, 1500, 2900] {
            let budget = Budget::unlimited().with_doc_limit(limit);
            let output = index.search_text(&text, 10, None, &budget).unwrap();
            if output.early_terminated {
                cut += 1;
                // The budget is checked at the first check point after the
                // limit, never before it.
                assert!(output.docs_searched >= limit.min(1), "{text:?}");
                assert!(output.docs_searched < total, "{text:?}");
            } else {
                assert_eq!(output.docs_searched, total, "{text:?}");
            }
            // What it found is exactly the best of what it says it covered.
            let expected = reference(index, &ids, &text, 10, None, output.docs_searched);
            assert_same(&text, &output.hits, &expected);
        }
    }
    assert!(cut > 50, "only {cut} searches were cut short");
}

#[test]
fn id_tables_resolve_like_the_stored_field() {
    let index = segmented_index();
    let ids = stored_ids(index);
    for (segment, table) in index.ids.iter().enumerate() {
        let mut by_ord: Vec<(u64, &str)> = (0..ids[segment].len() as u32)
            .map(|doc| (table.ord(doc), ids[segment][doc as usize].as_str()))
            .collect();
        for &(ord, id) in &by_ord {
            assert_eq!(table.id(ord), id);
        }
        // Ordinals follow id order (the top-k breaks ties on them).
        by_ord.sort();
        assert!(by_ord.windows(2).all(|w| w[0].1 < w[1].1));
    }
}

// ---- The frontend's score floor (issue 17) ----

#[test]
fn hits_below_the_floor_come_with_their_title_and_no_snippet() {
    let index = segmented_index();
    let mut skipped = 0;
    for query in reference_queries() {
        let parsed = index.parse_query(&query).unwrap();
        let stats = index.term_stats(&query).unwrap();
        let full = index
            .search(&parsed, 10, Some(&stats), &Budget::unlimited())
            .unwrap();
        assert_eq!(full.snippets_skipped, 0);
        let Some(fifth) = full.hits.get(4) else {
            continue;
        };
        // A floor at the fifth hit: the first five keep their snippets.
        let floor = fifth.score;
        let floored = index
            .search_above(&parsed, 10, Some(&stats), Some(floor), &Budget::unlimited())
            .unwrap();
        let pruned = prune::Disjunction::of(parsed.query()).is_some();
        if !pruned {
            // Phrases, `+`, `-`: the frontend sends no floor for them, and
            // the leaf ignores one.
            assert_eq!(floored, full, "{query}");
            continue;
        }
        assert_eq!(floored.hits.len(), full.hits.len(), "{query}");
        let mut below = 0;
        for (got, want) in floored.hits.iter().zip(&full.hits) {
            if want.score < floor {
                below += 1;
                assert_eq!(got.snippet, "", "{query}: {got:?}");
                assert_eq!(
                    Hit {
                        snippet: want.snippet.clone(),
                        ..got.clone()
                    },
                    *want,
                    "{query}: same hit, title included"
                );
            } else {
                assert_eq!(got, want, "{query}");
            }
        }
        assert_eq!(floored.snippets_skipped, below, "{query}");
        assert_eq!(
            SearchOutput {
                hits: full.hits.clone(),
                snippets_skipped: below,
                ..floored.clone()
            },
            SearchOutput {
                snippets_skipped: below,
                ..full.clone()
            }
        );
        skipped += below;
        // Without corpus-wide statistics the floor is ignored too.
        let local = index
            .search_above(&parsed, 10, None, Some(floor), &Budget::unlimited())
            .unwrap();
        assert_eq!(local.snippets_skipped, 0, "{query}");
    }
    assert!(skipped > 100, "only {skipped} snippets skipped");
}

#[test]
fn a_title_is_read_without_the_body() {
    let index = small_index();
    for address in (0..200).map(|doc| DocAddress::new(0, doc)) {
        let leading: Leading = index.searcher.doc(address).unwrap();
        let doc: TantivyDocument = index.searcher.doc(address).unwrap();
        let title = doc
            .get_first(index.fields.title)
            .and_then(|value| value.as_str().map(str::to_string));
        assert_eq!(leading.text(index.fields.title), title, "{address:?}");
        assert!(title.is_some());
        assert_eq!(index.title(address).unwrap(), title.unwrap());
    }
}

#[test]
fn a_prepared_query_is_kept_and_searches_like_a_fresh_parse() {
    let index = segmented_index();
    let ids = stored_ids(index);
    let other = small_index();
    for text in reference_queries() {
        let first = index.prepare(&text, None).unwrap();
        let again = index.prepare(&text, None).unwrap();
        assert!(Arc::ptr_eq(&first.query.0, &again.query.0), "{text}");
        let mut postings = 0u64;
        index
            .parse_query(&text)
            .unwrap()
            .query()
            .query_terms(&mut |term, _| postings += index.searcher.doc_freq(term).unwrap());
        assert_eq!(first.postings, postings, "{text}");
        let output = index
            .search(&again.query, 10, None, &Budget::unlimited())
            .unwrap();
        assert_same(
            &text,
            &output.hits,
            &reference(index, &ids, &text, 10, None, u64::MAX),
        );

        // Parsed for another index of the same schema: that parse is used,
        // the postings are this index's.
        let elsewhere = (
            other.searcher.schema().clone(),
            other.parse_query(&text).unwrap(),
        );
        let fresh = ShardIndex::build_in_ram(0, 1, &generate_corpus(500, 3)).unwrap();
        let shared = fresh.prepare(&text, Some(&elsewhere)).unwrap();
        assert!(Arc::ptr_eq(&shared.query.0, &elsewhere.1 .0), "{text}");
        assert_eq!(shared.postings, fresh.postings(&shared.query), "{text}");
    }
}

#[test]
fn disjunctions_of_terms_are_recognised_whatever_their_length() {
    let index = small_index();
    // Within the tokenizer's 40-byte limit on a term.
    let long = "x".repeat(38);
    for text in [
        "json",
        "json parser",
        "title:json body:json json",
        long.as_str(),
    ] {
        let parsed = index.parse_query(text).unwrap();
        assert!(parsed.disjunction().is_some(), "{text}");
    }
    for text in ["\"command line\"", "+logger -color", "json AND parser"] {
        let parsed = index.parse_query(text).unwrap();
        assert!(parsed.disjunction().is_none(), "{text}");
    }
}

#[test]
fn weights_from_corpus_wide_statistics_are_shared_by_the_shards_of_a_call() {
    let docs = generate_corpus(3000, 41);
    let shards: Vec<ShardIndex> = (0..3)
        .map(|shard| ShardIndex::build_in_ram(shard, 3, &docs).unwrap())
        .collect();
    let mut shared_some = 0;
    for text in reference_queries() {
        let parts: Vec<CorpusStats> = shards
            .iter()
            .map(|shard| shard.term_stats(&text).unwrap())
            .collect();
        let global = sum_corpus_stats(&parts);
        let score = |shard: &ShardIndex, stats, weights| {
            let query = shard.prepare(&text, None).unwrap().query;
            shard
                .score(&query, 10, stats, None, weights, &Budget::unlimited())
                .unwrap()
        };
        let first = score(&shards[0], Some(&global), None);
        let Some(weights) = first.weights() else {
            // Not a disjunction of terms: nothing to share.
            assert!(shards[0]
                .parse_query(&text)
                .unwrap()
                .disjunction()
                .is_none());
            continue;
        };
        shared_some += 1;
        for shard in &shards[1..] {
            let own: Vec<_> = score(shard, Some(&global), None).winners;
            let reused: Vec<_> = score(shard, Some(&global), Some(weights)).winners;
            assert_eq!(own, reused, "{text}");
        }
        // Statistics that lack a term or a field: the weights are the
        // shard's own and are not offered.
        let mut partial = global.clone();
        partial.terms.pop();
        assert!(
            score(&shards[0], Some(&partial), None).weights().is_none(),
            "{text}"
        );
        let mut no_fields = global.clone();
        no_fields.fields.clear();
        assert!(
            score(&shards[0], Some(&no_fields), None)
                .weights()
                .is_none(),
            "{text}"
        );
        assert!(score(&shards[0], None, None).weights().is_none(), "{text}");
    }
    assert!(shared_some > 20, "{shared_some}");
}
