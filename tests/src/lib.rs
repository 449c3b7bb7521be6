//! A test cluster on loopback: a real frontend, real leaves (tantivy over
//! gRPC) and cache servers, each on its own `127.0.0.1:0` listener, with
//! per-leaf fault knobs and crash/stop/restart controls.
//!
//! ```no_run
//! # async fn demo() {
//! let cluster = tests::TestCluster::builder().shards(4).replicas(2).build().await;
//! cluster.leaf(1, 0).faults().set_hang(true);
//! let (status, body) = cluster.search("q=json&timeout_ms=100").await;
//! # }
//! ```

pub mod bench;
pub mod etcd;
pub mod index_root;
pub mod layers;
pub mod netns;
pub mod prom;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use frontend_core::{Frontend, FrontendConfig, Listeners};
use leaf::{CorpusSource, Document, LeafConfig, LeafHandle, LeaseConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Adjusts a leaf's configuration before it starts.
type LeafConfigFn = Box<dyn Fn(&mut LeafConfig)>;

/// The cluster token every test cluster uses.
pub const TOKEN: &str = "test-cluster-token";

/// A small generated corpus shared by the tests (same seed, same docs).
pub fn small_corpus(count: usize) -> Arc<Vec<Document>> {
    Arc::new(leaf::generate_corpus(count, 42))
}

pub struct TestClusterBuilder {
    shards: u32,
    replicas: u32,
    caches: u32,
    leases: bool,
    lease_ttl: Duration,
    documents: Option<Arc<Vec<Document>>>,
    frontend: FrontendConfig,
    leaf: Option<LeafConfigFn>,
    metrics: bool,
    cache_tls: svc::tls::TlsConfig,
    co_hosted: bool,
    embedded: bool,
}

impl TestClusterBuilder {
    /// Every replica is one leaf serving all the shards, run as this
    /// frontend's embedded leaf (`frontend serve --embed-leaf`): the
    /// frontend calls it in process. Its advertised address is one no
    /// gRPC call can reach (`127.0.0.1:1`, `:2`, … by replica), so an
    /// answer proves the call ran in process.
    pub fn embedded(mut self, embedded: bool) -> Self {
        self.embedded = embedded;
        self.co_hosted |= embedded;
        self
    }

    /// Every replica is one leaf process serving all the shards
    /// (`--shard 0,1,…`); `leaf(0, replica)` is that process.
    pub fn co_hosted(mut self, co_hosted: bool) -> Self {
        self.co_hosted = co_hosted;
        self
    }

    /// TLS of every cache server (its listener and its lease).
    pub fn cache_tls(mut self, tls: svc::tls::TlsConfig) -> Self {
        self.cache_tls = tls;
        self
    }

    pub fn shards(mut self, shards: u32) -> Self {
        self.shards = shards;
        self.frontend.shards = shards;
        self
    }

    pub fn replicas(mut self, replicas: u32) -> Self {
        self.replicas = replicas;
        self
    }

    pub fn caches(mut self, caches: u32) -> Self {
        self.caches = caches;
        self
    }

    /// False: a static leaf list instead of leases.
    pub fn leases(mut self, leases: bool) -> Self {
        self.leases = leases;
        self
    }

    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    pub fn documents(mut self, documents: Arc<Vec<Document>>) -> Self {
        self.documents = Some(documents);
        self
    }

    /// Adjusts the frontend's configuration.
    pub fn frontend(mut self, change: impl FnOnce(&mut FrontendConfig)) -> Self {
        change(&mut self.frontend);
        self
    }

    /// True: every leaf and cache server serves `/metrics` on its own
    /// loopback listener (see [`TestCluster::metrics_targets`]).
    pub fn metrics(mut self, metrics: bool) -> Self {
        self.metrics = metrics;
        self
    }

    /// Adjusts every leaf's configuration.
    pub fn leaf(mut self, change: impl Fn(&mut LeafConfig) + 'static) -> Self {
        self.leaf = Some(Box::new(change));
        self
    }

    pub async fn build(self) -> TestCluster {
        init_logs();
        let documents = self.documents.clone().unwrap_or_else(|| small_corpus(3000));
        let shutdown = CancellationToken::new();
        let mut frontend_config = self.frontend.clone();
        frontend_config.shards = self.shards;
        frontend_config.registry.token = Some(TOKEN.to_string());
        frontend_config.registry.min_ttl = Duration::from_millis(100);
        frontend_config.cache = self.caches > 0;
        let mut cluster = TestCluster {
            frontend: None,
            grpc_addr: None,
            leaves: Vec::new(),
            caches: Vec::new(),
            documents,
            shards: self.shards,
            lease_ttl: self.lease_ttl,
            leases: self.leases,
            leaf_config: self.leaf,
            metrics: self.metrics,
            leaf_metrics: std::sync::Mutex::new(Vec::new()),
            cache_tls: self.cache_tls.clone(),
            co_hosted: self.co_hosted,
            embedded: self.embedded,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client"),
            shutdown,
        };
        if self.embedded {
            // The leaves first (their services are the frontend's local
            // clients), holding leases with a registry bound beforehand.
            let grpc = bind().await;
            if self.leases {
                cluster.grpc_addr = Some(grpc.local_addr().expect("grpc address"));
            }
            let mut replicas = Vec::new();
            for replica in 0..self.replicas {
                replicas.push(Some(cluster.start_leaf(0, replica).await));
            }
            cluster.leaves.push(replicas);
            let advertised = cluster
                .leaves
                .iter()
                .flatten()
                .flatten()
                .map(|leaf| leaf.advertised().to_string());
            if !self.leases {
                frontend_config.static_leaves = advertised.clone().collect();
            }
            let local = cluster
                .leaves
                .iter()
                .flatten()
                .flatten()
                .map(|leaf| frontend_core::LocalLeaf::new(leaf.advertised(), leaf.service()))
                .collect();
            let listeners = Listeners {
                http: bind().await,
                admin: Some(bind().await),
                grpc: self.leases.then_some(grpc),
                metrics: None,
            };
            let frontend = Frontend::start_embedding(
                frontend_config,
                listeners,
                local,
                cluster.shutdown.child_token(),
            )
            .await
            .expect("frontend starts");
            cluster.frontend = Some(frontend);
            cluster.wait_for_routing(self.replicas as usize, 0).await;
        } else if self.leases {
            let http = bind().await;
            let grpc = bind().await;
            let frontend = Frontend::start(
                frontend_config,
                http,
                Some(grpc),
                cluster.shutdown.child_token(),
            )
            .await
            .expect("frontend starts");
            cluster.grpc_addr = frontend.grpc_addr;
            cluster.frontend = Some(frontend);
            for shard in 0..cluster.processes_per_replica() {
                let mut replicas = Vec::new();
                for replica in 0..self.replicas {
                    replicas.push(Some(cluster.start_leaf(shard, replica).await));
                }
                cluster.leaves.push(replicas);
            }
            for _ in 0..self.caches {
                let cache = cluster.start_cache().await;
                cluster.caches.push(Some(cache));
            }
            cluster
                .wait_for_routing(self.replicas as usize, self.caches as usize)
                .await;
        } else {
            for shard in 0..cluster.processes_per_replica() {
                let mut replicas = Vec::new();
                for replica in 0..self.replicas {
                    replicas.push(Some(cluster.start_leaf(shard, replica).await));
                }
                cluster.leaves.push(replicas);
            }
            frontend_config.static_leaves = cluster
                .leaves
                .iter()
                .flatten()
                .flatten()
                .map(|leaf| leaf.advertised().to_string())
                .collect();
            let http = bind().await;
            let frontend =
                Frontend::start(frontend_config, http, None, cluster.shutdown.child_token())
                    .await
                    .expect("frontend starts");
            cluster.frontend = Some(frontend);
            cluster.wait_for_routing(self.replicas as usize, 0).await;
        }
        cluster
    }
}

/// A running cluster; everything stops when it is dropped.
pub struct TestCluster {
    frontend: Option<Frontend>,
    grpc_addr: Option<SocketAddr>,
    leaves: Vec<Vec<Option<LeafHandle>>>,
    caches: Vec<Option<cache::CacheHandle>>,
    documents: Arc<Vec<Document>>,
    shards: u32,
    lease_ttl: Duration,
    leases: bool,
    leaf_config: Option<LeafConfigFn>,
    /// Whether leaves and caches serve `/metrics`.
    metrics: bool,
    /// The `/metrics` address of every leaf started, by its gRPC address
    /// (a `LeafHandle` does not know it).
    leaf_metrics: std::sync::Mutex<Vec<(SocketAddr, SocketAddr)>>,
    cache_tls: svc::tls::TlsConfig,
    /// Each replica is one process serving every shard.
    co_hosted: bool,
    /// ... embedded in the frontend's process, called in process.
    embedded: bool,
    client: reqwest::Client,
    shutdown: CancellationToken,
}

impl TestCluster {
    pub fn builder() -> TestClusterBuilder {
        TestClusterBuilder {
            shards: 4,
            replicas: 1,
            caches: 0,
            leases: true,
            lease_ttl: Duration::from_secs(2),
            documents: None,
            frontend: FrontendConfig::new(4),
            leaf: None,
            metrics: false,
            cache_tls: svc::tls::TlsConfig::default(),
            co_hosted: false,
            embedded: false,
        }
    }

    pub fn frontend(&self) -> &Frontend {
        self.frontend.as_ref().expect("frontend running")
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.frontend().http_addr
    }

    /// The frontend's lease registry address.
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc_addr
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http_addr(), path)
    }

    /// The frontend's admin listener (`/cluster`, `/status`, `/metrics`).
    pub fn admin_addr(&self) -> SocketAddr {
        self.frontend().admin_addr.expect("admin listener")
    }

    /// `path` on the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin_addr(), path)
    }

    /// `path` on the listener that serves it: the admin surface's paths on
    /// the admin listener, the rest on the public one.
    fn url_for(&self, path: &str) -> String {
        let route = path.split('?').next().unwrap_or(path);
        if frontend_core::http::ADMIN_PATHS.contains(&route) {
            self.admin_url(path)
        } else {
            self.url(path)
        }
    }

    pub fn documents(&self) -> &Arc<Vec<Document>> {
        &self.documents
    }

    pub fn lease_ttl(&self) -> Duration {
        self.lease_ttl
    }

    /// `GET /search?{query}`: the status and the JSON body.
    pub async fn search(&self, query: &str) -> (u16, serde_json::Value) {
        let response = self
            .client
            .get(self.url(&format!("/search?{query}")))
            .send()
            .await
            .expect("request sent");
        decode(response).await
    }

    /// `POST /search` with a raw body.
    pub async fn post(&self, body: impl Into<reqwest::Body>) -> (u16, serde_json::Value) {
        let response = self
            .client
            .post(self.url("/search"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request sent");
        decode(response).await
    }

    /// `GET path` as JSON (on the admin listener for its paths).
    pub async fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let response = self
            .client
            .get(self.url_for(path))
            .send()
            .await
            .expect("request sent");
        decode(response).await
    }

    /// `GET path` as text (on the admin listener for its paths).
    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let response = self
            .client
            .get(self.url_for(path))
            .send()
            .await
            .expect("request sent");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }

    pub fn leaf(&self, shard: u32, replica: u32) -> &LeafHandle {
        self.leaves[shard as usize][replica as usize]
            .as_ref()
            .expect("leaf running")
    }

    /// Every running leaf.
    pub fn leaves(&self) -> impl Iterator<Item = &LeafHandle> {
        self.leaves.iter().flatten().flatten()
    }

    /// Crashes a leaf: connections reset, its lease left to expire.
    pub fn kill_leaf(&mut self, shard: u32, replica: u32) {
        if let Some(leaf) = self.leaves[shard as usize][replica as usize].take() {
            leaf.kill();
        }
    }

    /// Stops a leaf gracefully: it revokes its lease first.
    pub async fn stop_leaf(&mut self, shard: u32, replica: u32) {
        if let Some(leaf) = self.leaves[shard as usize][replica as usize].take() {
            leaf.stop().await;
        }
    }

    /// Starts a new leaf in place of a stopped or killed one.
    pub async fn restart_leaf(&mut self, shard: u32, replica: u32) {
        let leaf = self.start_leaf(shard, replica).await;
        self.leaves[shard as usize][replica as usize] = Some(leaf);
    }

    /// Starts a new leaf in place of a stopped one, indexing `documents`
    /// (a reindexed shard, with a new generation when they differ).
    pub async fn restart_leaf_with(
        &mut self,
        shard: u32,
        replica: u32,
        documents: Arc<Vec<Document>>,
    ) {
        let leaf = self.start_leaf_with(shard, replica, documents).await;
        self.leaves[shard as usize][replica as usize] = Some(leaf);
    }

    /// `(job, address)` of every running server's `/metrics`: the frontend
    /// (its admin listener), then leaves and caches when built with
    /// [`TestClusterBuilder::metrics`].
    pub fn metrics_targets(&self) -> Vec<(String, SocketAddr)> {
        let mut targets = vec![("frontend".to_string(), self.admin_addr())];
        let leaf_metrics = self.leaf_metrics.lock().expect("leaf metrics lock");
        for leaf in self.leaves() {
            if let Some((_, metrics)) = leaf_metrics.iter().find(|(grpc, _)| *grpc == leaf.addr()) {
                targets.push(("leaf".to_string(), *metrics));
            }
        }
        for cache in self.caches.iter().flatten() {
            if let Some(addr) = cache.metrics_addr() {
                targets.push(("cache".to_string(), addr));
            }
        }
        targets
    }

    pub fn cache(&self, index: usize) -> &cache::CacheHandle {
        self.caches[index].as_ref().expect("cache running")
    }

    pub fn kill_cache(&mut self, index: usize) {
        if let Some(cache) = self.caches[index].take() {
            cache.kill();
        }
    }

    /// Adds a cache server and returns its index.
    pub async fn add_cache(&mut self) -> usize {
        let cache = self.start_cache().await;
        self.caches.push(Some(cache));
        self.caches.len() - 1
    }

    /// Live replicas per shard as the frontend routes now.
    pub fn routed(&self) -> Vec<usize> {
        routed_replicas(self.frontend())
    }

    /// Live cache servers as the frontend routes now.
    pub fn routed_caches(&self) -> usize {
        self.frontend()
            .root
            .fanout
            .routing()
            .snapshot()
            .caches
            .len()
    }

    /// Polls `condition` every 20 ms until it holds, or panics after `limit`.
    pub async fn wait_until(&self, limit: Duration, what: &str, condition: impl Fn(&Self) -> bool) {
        let started = tokio::time::Instant::now();
        while !condition(self) {
            assert!(
                started.elapsed() < limit,
                "timed out after {limit:?} waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Leaf processes per replica: one per shard, or one for all.
    fn processes_per_replica(&self) -> u32 {
        if self.co_hosted {
            1
        } else {
            self.shards
        }
    }

    async fn wait_for_routing(&self, replicas: usize, caches: usize) {
        self.wait_until(Duration::from_secs(60), "every replica routed", |c| {
            c.routed().iter().all(|&n| n >= replicas) && c.routed_caches() >= caches
        })
        .await;
    }

    async fn start_leaf(&self, shard: u32, replica: u32) -> LeafHandle {
        self.start_leaf_with(shard, replica, Arc::clone(&self.documents))
            .await
    }

    async fn start_leaf_with(
        &self,
        shard: u32,
        replica: u32,
        documents: Arc<Vec<Document>>,
    ) -> LeafHandle {
        let mut config = LeafConfig::new(shard, self.shards);
        if self.co_hosted {
            config.also_serve = (shard + 1..self.shards).collect();
        }
        if self.leases {
            config.lease = Some(LeaseConfig {
                frontends: vec![self.grpc_addr.expect("grpc address").to_string()],
                token: Some(TOKEN.to_string()),
                ttl: self.lease_ttl,
            });
        }
        // Every call to a test leaf must carry the cluster token.
        config.auth = svc::auth::TokenConfig::single(TOKEN);
        if self.embedded {
            config.advertise = Some(format!("127.0.0.1:{}", replica + 1));
        }
        if let Some(change) = &self.leaf_config {
            change(&mut config);
        }
        // Replica numbers order a staggered rollout (an index root).
        if let Some(generations) = &mut config.generations {
            generations.replica.get_or_insert(replica);
        }
        let metrics = self.metrics_listener().await;
        let metrics_addr = metrics
            .as_ref()
            .map(|l| l.local_addr().expect("metrics address"));
        let leaf = leaf::start(
            config,
            CorpusSource::Documents(documents),
            bind().await,
            metrics,
            self.shutdown.child_token(),
        )
        .await
        .expect("leaf starts");
        if let Some(addr) = metrics_addr {
            self.leaf_metrics
                .lock()
                .expect("leaf metrics lock")
                .push((leaf.addr(), addr));
        }
        leaf
    }

    async fn metrics_listener(&self) -> Option<TcpListener> {
        match self.metrics {
            true => Some(bind().await),
            false => None,
        }
    }

    async fn start_cache(&self) -> cache::CacheHandle {
        let config = cache::CacheConfig {
            lease: Some(cache::LeaseConfig {
                frontends: vec![self.grpc_addr.expect("grpc address").to_string()],
                token: Some(TOKEN.to_string()),
                ttl: self.lease_ttl,
            }),
            auth: svc::auth::TokenConfig::single(TOKEN),
            tls: self.cache_tls.clone(),
            ..cache::CacheConfig::default()
        };
        let metrics = self.metrics_listener().await;
        cache::start(config, bind().await, metrics, self.shutdown.child_token())
            .await
            .expect("cache starts")
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Live replicas per shard as `frontend` routes now.
pub fn routed_replicas(frontend: &Frontend) -> Vec<usize> {
    frontend
        .root
        .fanout
        .routing()
        .snapshot()
        .shards
        .iter()
        .map(Vec::len)
        .collect()
}

/// Waits until `frontend` routes at least `replicas` replicas of every
/// shard; false if it still does not after 30 s.
pub async fn wait_routed(frontend: &Frontend, replicas: usize) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !routed_replicas(frontend).iter().all(|&r| r >= replicas) {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// A listener on a free loopback port.
pub async fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback")
}

async fn decode(response: reqwest::Response) -> (u16, serde_json::Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("response is not json (status {status}): {text}"));
    (status, body)
}

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}
