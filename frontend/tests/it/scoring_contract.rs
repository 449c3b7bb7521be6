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
