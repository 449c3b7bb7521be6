//! The scoring contract seen from both sides: the frontend's term
//! statistics and recall estimate against real leaf indexes. These tests
//! live here because `frontend-core` does not depend on the leaf.

use frontend_core::query::term_stats::QueryStats;
use proto::leaf::CorpusStats;

#[test]
fn listed_documents_score_as_the_leaves_score_them_bit_for_bit() {
    let docs = leaf::generate_corpus(900, 4);
    let shards: Vec<leaf::ShardIndex> = (0..3)
        .map(|shard| leaf::ShardIndex::build_in_ram(shard, 3, &docs).unwrap())
        .collect();
    let parts: Vec<_> = shards
        .iter()
        .map(|shard| shard.term_stats("json").unwrap())
        .collect();
    let stats = QueryStats::from_shards("json", &parts);
    let evidence = stats.evidence.as_deref().unwrap();
    // Pairs come in (field, term) order: body:json first.
    let body = &evidence.impacts.as_ref().unwrap()[0];
    for (shard, index) in shards.iter().enumerate() {
        let output = index
            .search_text(
                "body:json",
                10,
                stats.stats.as_ref(),
                &leaf::Budget::unlimited(),
            )
            .unwrap();
        assert!(output.global_stats && output.hits.len() == 10);
        let mut listed: Vec<f32> = body.stats.top[shard]
            .iter()
            .map(|champion| body.score(champion))
            .collect();
        listed.sort_by(|a, b| b.total_cmp(a));
        listed.truncate(10);
        let scores: Vec<f32> = output.hits.iter().map(|hit| hit.score).collect();
        assert_eq!(scores, listed, "shard {shard}");
    }
}

#[test]
fn from_shards_sums_like_the_leaves() {
    let docs = leaf::generate_corpus(600, 3);
    let parts: Vec<CorpusStats> = (0..3)
        .map(|shard| {
            leaf::ShardIndex::build_in_ram(shard, 3, &docs)
                .unwrap()
                .term_stats("json parser")
                .unwrap()
        })
        .collect();
    let stats = QueryStats::from_shards("json parser", &parts);
    assert_eq!(stats.stats, Some(leaf::sum_corpus_stats(&parts)));
    assert_eq!(stats.shard_docs.iter().sum::<u64>(), 600);
    assert!(stats.complete());
    let evidence = stats.evidence.unwrap();
    assert_eq!(evidence.impacts.as_ref().map(Vec::len), Some(4));
    let share = &evidence.share;
    assert_eq!(share.len(), 3);
    assert!((share.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    assert!(share.iter().all(|&s| s > 0.0), "{share:?}");
}

/// Queries of every shape from the generated vocabulary: the sample
/// (phrases, `+`, `-`, single words, pairs) and runs of one to four words.
fn floor_queries() -> Vec<String> {
    let mut queries = leaf::sample_queries(250, 17);
    let words = [
        "json", "parser", "with", "color", "http", "server", "fast", "react", "cli", "stream",
        "types", "test", "node", "logger",
    ];
    for n in 1..=4 {
        for start in 0..words.len() {
            let query: Vec<&str> = (0..n)
                .map(|i| words[(start + 5 * i) % words.len()])
                .collect();
            queries.push(query.join(" "));
        }
    }
    queries
}

/// Each shard's hits for `query`, with `floor`, merged into the top k as
/// the frontend merges them, and the snippets the floor left out.
fn merged(
    shards: &[leaf::ShardIndex],
    query: &str,
    k: u32,
    stats: Option<&CorpusStats>,
    floor: Option<f32>,
) -> (Vec<proto::leaf::Hit>, u64) {
    let mut hits = Vec::new();
    let mut skipped = 0;
    for shard in shards {
        let parsed = shard.parse_query(query).unwrap();
        let output = shard
            .search_above(
                &parsed,
                k as usize,
                stats,
                floor,
                &leaf::Budget::unlimited(),
            )
            .unwrap();
        skipped += output.snippets_skipped;
        hits.extend(output.hits);
    }
    hits.sort_by(frontend_core::query::merge::hit_order);
    hits.truncate(k as usize);
    (hits, skipped)
}

#[test]
fn the_score_floor_is_a_lower_bound_and_changes_no_complete_answer() {
    let docs = leaf::generate_corpus(4000, 29);
    let shards: Vec<leaf::ShardIndex> = (0..4)
        .map(|shard| leaf::ShardIndex::build_in_ram(shard, 4, &docs).unwrap())
        .collect();
    let (mut floored, mut skipped, mut tight) = (0, 0, 0);
    for (i, query) in floor_queries().iter().enumerate() {
        let k = [10, 1, 3, 25][i % 4];
        let parts: Vec<CorpusStats> = shards
            .iter()
            .map(|shard| shard.term_stats(query).unwrap())
            .collect();
        let stats = QueryStats::from_shards(query, &parts);
        let floor = stats.score_floor(k as usize);
        let plain = query
            .split_whitespace()
            .all(|word| word.chars().all(char::is_alphanumeric));
        if !plain {
            assert_eq!(floor, None, "{query:?}: phrases, + and - get no floor");
        }
        let (full, none_skipped) = merged(&shards, query, k, stats.stats.as_ref(), None);
        assert_eq!(none_skipped, 0);
        let Some(floor) = floor else {
            continue;
        };
        floored += 1;
        // A true lower bound: the corpus holds at least k documents
        // scoring at least the floor.
        assert_eq!(full.len(), k as usize, "{query:?}");
        let kth = full[k as usize - 1].score;
        assert!(kth >= floor, "{query:?} k={k}: k-th {kth} < floor {floor}");
        if floor >= kth * 0.9 {
            tight += 1;
        }
        // The complete answer is the same, snippets included.
        let (with_floor, some_skipped) =
            merged(&shards, query, k, stats.stats.as_ref(), Some(floor));
        assert_eq!(with_floor, full, "{query:?} k={k}");
        skipped += some_skipped;
    }
    assert!(floored > 100, "only {floored} queries had a floor");
    assert!(skipped > 300, "only {skipped} snippets skipped");
    assert!(
        tight > 10,
        "only {tight} floors within 10% of the k-th score"
    );
}
