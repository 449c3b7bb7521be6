//! One leaf process serving several shards (`--shard 0,1,2`): each shard
//! answers as a leaf serving it alone, `SearchShards` answers every shard
//! in one call, and a request for a shard the process does not serve is
//! refused rather than answered from another shard.

use std::sync::Arc;

use leaf::{generate_corpus, CorpusSource, Document, LeafConfig, LeafHandle};
use proto::leaf::leaf_client::LeafClient;
use proto::leaf::{
    CorpusStats, InfoRequest, SearchRequest, SearchResponse, SearchShardsRequest, TermStatsRequest,
    TermStatsShardsRequest,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::Code;

const SHARDS: u32 = 3;

fn corpus() -> CorpusSource {
    static DOCS: std::sync::OnceLock<Arc<Vec<Document>>> = std::sync::OnceLock::new();
    CorpusSource::Documents(Arc::clone(
        DOCS.get_or_init(|| Arc::new(generate_corpus(1500, 41))),
    ))
}

async fn start(config: LeafConfig) -> (LeafHandle, LeafClient<Channel>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let handle = leaf::start(config, corpus(), listener, None, CancellationToken::new())
        .await
        .unwrap();
    let channel = Channel::from_shared(format!("http://{}", handle.addr()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    (handle, LeafClient::new(channel))
}

fn search(query: &str, shard: Option<u32>, stats: Option<CorpusStats>) -> SearchRequest {
    SearchRequest {
        query: query.to_string(),
        k: 5,
        stats,
        score_floor: None,
        shard,
    }
}

/// The answer without the load report, which differs call to call.
fn plain(response: SearchResponse) -> SearchResponse {
    SearchResponse {
        in_flight: 0,
        queued: 0,
        service_us: 0,
        ..response
    }
}

/// Hits the process has loaded (titles read, snippets made), all shards
/// together: `leaf_hits_total`.
fn hits_loaded(handle: &LeafHandle) -> f64 {
    handle
        .registry()
        .gather()
        .iter()
        .filter(|family| family.name() == "leaf_hits_total")
        .flat_map(|family| family.get_metric().iter().map(|m| m.get_counter().value()))
        .sum()
}

/// `responses` with only the hits in the top k of them all (score
/// descending, then id), as SearchShards must cut them.
fn cut_to_top_k(mut responses: Vec<SearchResponse>, k: usize) -> Vec<SearchResponse> {
    let mut all: Vec<(f32, String)> = responses
        .iter()
        .flat_map(|r| r.hits.iter().map(|h| (h.score, h.id.clone())))
        .collect();
    all.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    all.truncate(k);
    for response in &mut responses {
        response
            .hits
            .retain(|hit| all.iter().any(|(_, id)| *id == hit.id));
    }
    responses
}

#[tokio::test]
async fn a_process_serving_several_shards_answers_as_one_leaf_per_shard() {
    let (multi, mut several) = start(LeafConfig {
        also_serve: vec![2, 1],
        ..LeafConfig::new(0, SHARDS)
    })
    .await;
    let mut alone = Vec::new();
    for shard in 0..SHARDS {
        alone.push(start(LeafConfig::new(shard, SHARDS)).await);
    }
    let info = several
        .info(InfoRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!((info.shard, info.served), (0, vec![0, 2, 1]));
    let info = several
        .info(InfoRequest { shard: Some(2) })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.shard, 2);

    let mut queries = leaf::sample_queries(30, 8);
    queries.extend(["\"json parser\"".to_string(), "+json -xml".to_string()]);
    let mut cut = 0;
    for query in &queries {
        let mut parts = Vec::new();
        for (_, client) in &mut alone {
            let request = TermStatsRequest {
                query: query.clone(),
                shard: None,
            };
            parts.push(
                client
                    .term_stats(request)
                    .await
                    .unwrap()
                    .into_inner()
                    .stats
                    .unwrap(),
            );
        }
        // TermStatsShards: each shard's own answer, in the order asked.
        let batched = several
            .term_stats_shards(TermStatsShardsRequest {
                query: query.clone(),
                shards: vec![2, 0, 1],
            })
            .await
            .unwrap()
            .into_inner();
        let order: Vec<u32> = batched.answers.iter().map(|a| a.shard).collect();
        assert_eq!(order, vec![2, 0, 1]);
        for answer in batched.answers {
            let stats = answer.response.expect("every shard answers").stats.unwrap();
            assert_eq!(stats, parts[answer.shard as usize], "{query}");
        }
        let summed = leaf::sum_corpus_stats(&parts);
        for stats in [None, Some(summed)] {
            let mut expected = Vec::new();
            for (shard, (_, client)) in alone.iter_mut().enumerate() {
                let shard = shard as u32;
                let one = client
                    .search(search(query, None, stats.clone()))
                    .await
                    .unwrap()
                    .into_inner();
                let named = several
                    .search(search(query, Some(shard), stats.clone()))
                    .await
                    .unwrap()
                    .into_inner();
                assert_eq!(plain(named), plain(one.clone()), "{query} shard {shard}");
                expected.push(plain(one));
            }
            let full: usize = expected.iter().map(|r| r.hits.len()).sum();
            let expected = cut_to_top_k(expected, 5);
            let kept: usize = expected.iter().map(|r| r.hits.len()).sum();
            cut += full - kept;
            let loaded = hits_loaded(&multi);
            let batched = several
                .search_shards(SearchShardsRequest {
                    search: Some(search(query, None, stats.clone())),
                    shards: vec![1, 0, 2],
                })
                .await
                .unwrap()
                .into_inner();
            // Only the joint top k were loaded, not each shard's own k.
            assert_eq!(hits_loaded(&multi) - loaded, kept as f64, "{query}");
            let shards: Vec<u32> = batched.answers.iter().map(|a| a.shard).collect();
            assert_eq!(shards, vec![1, 0, 2], "answers come in the order asked");
            for answer in batched.answers {
                let response = plain(answer.response.expect("every shard answers"));
                assert_eq!(
                    response, expected[answer.shard as usize],
                    "{query} shard {}",
                    answer.shard
                );
            }
        }
    }
    assert!(
        cut > 0,
        "some hits must have been cut to the top k of all shards"
    );

    // A request must name a shard the process serves.
    let status = several
        .search(search("json", None, None))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let (single, mut single_client) = alone.remove(0);
    let status = single_client
        .search(search("json", Some(1), None))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    let batched = single_client
        .search_shards(SearchShardsRequest {
            search: Some(search("json", None, None)),
            shards: vec![0, 1],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(batched.answers[0].response.is_some());
    assert!(batched.answers[1].response.is_none());
    assert_eq!(
        batched.answers[1].error_code,
        Code::FailedPrecondition as i32
    );

    single.stop().await;
    for (handle, _) in alone {
        handle.stop().await;
    }
    multi.stop().await;
}

#[tokio::test]
async fn a_shard_given_twice_or_out_of_range_is_a_config_error() {
    for (shard, also) in [(0, vec![0]), (1, vec![3])] {
        let config = LeafConfig {
            also_serve: also.clone(),
            ..LeafConfig::new(shard, SHARDS)
        };
        let error = config.validate().unwrap_err().to_string();
        assert!(
            error.contains("twice") || error.contains("out of range"),
            "{shard} {also:?}: {error}"
        );
    }
}
