//! A leaf serving an index root (`--index-root`): it serves the newest
//! generation, swaps to a newer one published while it serves (visible over
//! gRPC and in its lease), refuses a broken one and keeps serving, and
//! keeps the last K generations.
//!
//! Generations are published here the way the indexer does it (build in a
//! temporary directory, rename), with the leaf's public writer API. No
//! timing assertions: waits poll with a generous limit.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use leaf::generations::{self, shard_dir, GenerationsConfig};
use leaf::{
    generate_corpus, shard_of, CorpusSource, Document, LeafConfig, LeafHandle, LeaseConfig,
};
use lease::registry::{Registry, RegistryConfig};
use proto::leaf::leaf_client::LeafClient;
use proto::leaf::{InfoRequest, SearchRequest};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

const PATIENCE: Duration = Duration::from_secs(30);

fn publish(root: &Path, shard: u32, shards: u32, generation: u64, docs: &[Document]) {
    generations::publish(root, shard, shards, generation, docs).unwrap();
}

/// A document of `shard` of `shards` with a word no generated one has.
fn newcomer(shard: u32, shards: u32) -> Document {
    (0..)
        .map(|i| Document {
            id: format!("zebracorn-{i}"),
            title: "zebracorn".to_string(),
            body: "a package only in the new generation".to_string(),
            popularity: None,
        })
        .find(|doc| shard_of(&doc.id, shards) == shard)
        .unwrap()
}

async fn start(
    root: &Path,
    shard: u32,
    shards: u32,
    keep: usize,
    lease: Option<String>,
) -> LeafHandle {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = LeafConfig {
        generations: Some(GenerationsConfig {
            keep,
            grace: Duration::ZERO,
            poll: Duration::from_millis(20),
            // The only replica of its shard: no need to wait for a slot.
            replica: Some(0),
            ..GenerationsConfig::new(root)
        }),
        lease: lease.map(|frontend| LeaseConfig {
            frontends: vec![frontend],
            token: None,
            ttl: Duration::from_secs(3),
        }),
        ..LeafConfig::new(shard, shards)
    };
    // The corpus is not read with an index root.
    let unused = CorpusSource::File("/nonexistent/corpus.jsonl".into());
    leaf::start(config, unused, listener, None, CancellationToken::new())
        .await
        .unwrap()
}

async fn client(handle: &LeafHandle) -> LeafClient<Channel> {
    let channel = Channel::from_shared(format!("http://{}", handle.addr()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    LeafClient::new(channel)
}

async fn info_generation(client: &mut LeafClient<Channel>) -> u64 {
    client
        .info(InfoRequest::default())
        .await
        .unwrap()
        .into_inner()
        .generation
}

async fn eventually(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    let start = tokio::time::Instant::now();
    while !condition().await {
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn search_ids(client: &mut LeafClient<Channel>, query: &str) -> Vec<String> {
    let response = client
        .search(SearchRequest {
            query: query.to_string(),
            k: 10,
            stats: None,
            score_floor: None,
            shard: None,
        })
        .await
        .unwrap()
        .into_inner();
    response.hits.into_iter().map(|hit| hit.id).collect()
}

async fn registry() -> (Arc<Registry>, String) {
    let registry = Registry::new(RegistryConfig::default(), &prometheus::Registry::new());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(registry.service())
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (registry, addr.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_the_newest_generation_and_swaps_to_a_newer_one() {
    let root = tempfile::tempdir().unwrap();
    let docs = generate_corpus(300, 21);
    publish(root.path(), 1, 2, 100, &docs[..100]);
    publish(root.path(), 1, 2, 200, &docs);
    let (registry, frontend) = registry().await;
    let handle = start(root.path(), 1, 2, 5, Some(frontend)).await;
    let mut client = client(&handle).await;
    assert_eq!(info_generation(&mut client).await, 200);
    assert_eq!(handle.generation(), 200);
    let lease_generation =
        |registry: &Registry| registry.list().first().map(|l| l.member.generation);
    eventually("the lease", async || {
        lease_generation(&registry) == Some(200)
    })
    .await;
    assert!(search_ids(&mut client, "zebracorn").await.is_empty());

    let mut newer = docs.clone();
    let new_doc = newcomer(1, 2);
    newer.push(new_doc.clone());
    publish(root.path(), 1, 2, 300, &newer);
    eventually("the swap", async || {
        info_generation(&mut client).await == 300
    })
    .await;
    assert_eq!(search_ids(&mut client, "zebracorn").await, vec![new_doc.id]);
    assert_eq!(handle.generation(), 300);
    eventually("the lease to announce generation 300", async || {
        let list = registry.list();
        list.len() == 1 && list[0].member.generation == 300
    })
    .await;
    let text = svc::metrics::encode(handle.registry());
    assert!(
        text.contains("leaf_generation_swaps_total{outcome=\"ok\",shard=\"1\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("leaf_index_generation{shard=\"1\"} 300"),
        "{text}"
    );
    handle.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_generation_is_refused_and_serving_continues() {
    let root = tempfile::tempdir().unwrap();
    let docs = generate_corpus(200, 22);
    publish(root.path(), 0, 2, 10, &docs);
    let handle = start(root.path(), 0, 2, 5, None).await;
    let mut client = client(&handle).await;
    let before = search_ids(&mut client, "json").await;

    // Generation 11 is built for three shards; 12 has a corrupt index.
    publish(root.path(), 0, 3, 11, &docs);
    publish(root.path(), 0, 2, 12, &docs);
    let broken = shard_dir(root.path(), 0).join("12");
    for entry in std::fs::read_dir(&broken).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap() == "meta.json" {
            std::fs::write(&path, b"{ not an index").unwrap();
        }
    }
    eventually("both refusals", async || {
        svc::metrics::encode(handle.registry())
            .contains("leaf_generation_swaps_total{outcome=\"refused\",shard=\"0\"} 2")
    })
    .await;
    assert_eq!(info_generation(&mut client).await, 10);
    assert_eq!(search_ids(&mut client, "json").await, before);
    // A good one after them is still taken.
    publish(root.path(), 0, 2, 13, &docs);
    eventually("the swap to 13", async || {
        info_generation(&mut client).await == 13
    })
    .await;
    handle.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_the_last_k_generations() {
    let root = tempfile::tempdir().unwrap();
    let docs = generate_corpus(100, 23);
    publish(root.path(), 0, 1, 1, &docs);
    let handle = start(root.path(), 0, 1, 2, None).await;
    let mut client = client(&handle).await;
    for generation in 2..=4 {
        publish(root.path(), 0, 1, generation, &docs);
        eventually("the swap", async || {
            info_generation(&mut client).await == generation
        })
        .await;
    }
    let dir = shard_dir(root.path(), 0);
    eventually("old generations removed", async || {
        generations::list(&dir).unwrap() == [3, 4]
    })
    .await;
    handle.stop().await;
}
