//! `frontend demo`: a complete cluster in one process — the frontend, `--shards`
//! × `--replicas` leaves and `--caches` cache servers, each a real gRPC
//! server on its own loopback port that joins through a lease exactly as a
//! separate process would. The corpus is generated (no download) unless
//! `--corpus FILE` names a JSONL file, or `--index-root ROOT` names an index
//! root that `indexer build` filled: then the leaves serve its newest
//! generations and swap to every newer one published while the demo runs,
//! which `/status` shows rolling out.
//!
//! The demo's internal plane is closed like a real cluster's: unless given,
//! it makes a random cluster token (which every leaf and cache server
//! checks and the frontend sends) and a random cache secret; `--tls-*`
//! flags, when given, apply to every part.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use rand::Rng;
use tokio::net::TcpListener;

use frontend_core::config::{HttpFlags, SearchFlags};
use frontend_core::{Frontend, Listeners};
use svc::Failure;

#[derive(Args, Clone, Debug)]
pub struct DemoFlags {
    /// HTTP address of the search API and pages.
    #[arg(long, env = "DEMO_HTTP", default_value = "127.0.0.1:8080")]
    pub http: SocketAddr,
    /// gRPC address of the lease registry (port 0 picks a free one).
    #[arg(long, env = "DEMO_GRPC", default_value = "127.0.0.1:0")]
    pub grpc: SocketAddr,
    /// HTTP address of the admin surface (/cluster, /status, /metrics);
    /// the --metrics-base port by default, where Prometheus's shipped
    /// configuration scrapes the frontend.
    #[arg(long, env = "DEMO_ADMIN_HTTP")]
    pub admin_http: Option<SocketAddr>,
    #[arg(long, env = "DEMO_SHARDS", default_value_t = 4)]
    pub shards: u32,
    /// Leaves per shard.
    #[arg(long, env = "DEMO_REPLICAS", default_value_t = 2)]
    pub replicas: u32,
    /// Cache servers.
    #[arg(long, env = "DEMO_CACHES", default_value_t = 2)]
    pub caches: u32,
    /// A JSONL corpus (plain or .gz) instead of the built-in one.
    #[arg(long, env = "DEMO_CORPUS")]
    pub corpus: Option<PathBuf>,
    /// Keep each leaf's index under this directory and reopen it next time.
    #[arg(long, env = "DEMO_INDEX_DIR", conflicts_with = "index_root")]
    pub index_dir: Option<PathBuf>,
    /// Serve the generations of an index root built by `indexer build
    /// --shards <same> --out ROOT` instead of building from a corpus; newer
    /// generations published there are swapped in while serving.
    #[arg(long, env = "DEMO_INDEX_ROOT", conflicts_with = "corpus")]
    pub index_root: Option<PathBuf>,
    /// How often the leaves look for a newer generation under --index-root.
    #[arg(long, env = "DEMO_GENERATION_POLL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub generation_poll: Duration,
    /// The lease term the leaves and caches ask for.
    #[arg(long, env = "DEMO_LEASE_TTL", default_value = "3s", value_parser = humantime::parse_duration)]
    pub lease_ttl: Duration,
    /// First port of the leaves' and caches' `/metrics` (leaves from base+1,
    /// caches from base+51); 0 turns them off.
    #[arg(long, env = "DEMO_METRICS_BASE", default_value_t = 9100)]
    pub metrics_base: u16,
    /// Fault knob for demonstrations: added latency for a fraction of calls
    /// on the first replica of every shard, e.g. `50ms`.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub slow_replica_delay: Option<Duration>,
    /// Fraction of calls the slow replica delays.
    #[arg(long, default_value_t = 0.01)]
    pub slow_replica_fraction: f64,
    #[command(flatten)]
    pub server: svc::ServerArgs,
    #[command(flatten)]
    pub http_limits: HttpFlags,
    #[command(flatten)]
    pub search: SearchFlags,
}

/// Runs the demo until SIGINT/SIGTERM.
pub async fn run(flags: DemoFlags) -> Result<(), Failure> {
    if flags.shards == 0 || flags.replicas == 0 {
        return Err(Failure::config(anyhow::anyhow!(
            "--shards and --replicas must be at least 1"
        )));
    }
    let admin_http = flags.admin_http.unwrap_or_else(|| {
        SocketAddr::from((
            [127, 0, 0, 1],
            if flags.metrics_base == 0 {
                0
            } else {
                flags.metrics_base
            },
        ))
    });
    let http = svc::net::bind("http", &flags.http.to_string()).await?;
    let admin = svc::net::bind("admin", &admin_http.to_string()).await?;
    let grpc = svc::net::bind("grpc", &flags.grpc.to_string()).await?;
    let metrics = svc::net::bind_optional("metrics", flags.server.metrics.as_deref()).await?;
    run_cluster(
        flags,
        Listeners {
            http,
            admin: Some(admin),
            grpc: Some(grpc),
            metrics,
        },
    )
    .await
    .map_err(Failure::startup)
}

async fn run_cluster(flags: DemoFlags, listeners: Listeners) -> anyhow::Result<()> {
    let shutdown = svc::shutdown::on_signal();
    let random = || {
        let bytes: [u8; 16] = rand::rng().random();
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    let mut config = flags.search.to_config(flags.shards);
    if config.auth.is_empty() {
        config.auth = svc::auth::TokenConfig::single(random());
    }
    if config.cache_secret.is_none() && config.cache_secret_file.is_none() {
        config.cache_secret = Some(frontend_core::config::Secret(random()));
    }
    let auth = config.auth.clone();
    let tls = config.tls.clone();
    let token = auth.token.clone();
    config.cache = config.cache && flags.caches > 0;
    config.drain_timeout = flags.server.drain_timeout;
    flags.http_limits.apply(&mut config);

    let frontend = Frontend::start_with(config, listeners, shutdown.clone()).await?;
    let registry = frontend
        .grpc_addr
        .context("the demo frontend serves leases")?
        .to_string();

    let corpus = match &flags.corpus {
        Some(path) => leaf::CorpusSource::File(path.clone()),
        None => leaf::CorpusSource::Builtin,
    };
    match &flags.index_root {
        Some(root) => {
            tracing::info!(root = %root.display(), shards = flags.shards, replicas = flags.replicas, "opening the index root")
        }
        None => {
            tracing::info!(corpus = %corpus.describe(), shards = flags.shards, replicas = flags.replicas, "building leaf indexes")
        }
    }
    let mut starting = Vec::new();
    for shard in 0..flags.shards {
        for replica in 0..flags.replicas {
            let mut leaf_config = leaf::LeafConfig::new(shard, flags.shards);
            leaf_config.lease = Some(leaf::LeaseConfig {
                frontends: vec![registry.clone()],
                token: token.clone(),
                ttl: flags.lease_ttl,
            });
            if let Some(root) = &flags.index_root {
                leaf_config.generations = Some(leaf::GenerationsConfig {
                    poll: flags.generation_poll,
                    // The replica number orders the staggered rollout.
                    replica: Some(replica),
                    ..leaf::GenerationsConfig::new(root)
                });
            }
            leaf_config.auth = auth.clone();
            leaf_config.tls = tls.clone();
            if let Some(dir) = &flags.index_dir {
                leaf_config.index.dir = Some(dir.join(format!(
                    "shard-{shard}-of-{}-replica-{replica}",
                    flags.shards
                )));
            }
            if let (Some(delay), 0) = (flags.slow_replica_delay, replica) {
                leaf_config.faults.delay = delay;
                leaf_config.faults.delay_fraction = flags.slow_replica_fraction;
            }
            let metrics_port = port(flags.metrics_base, 1 + shard * flags.replicas + replica);
            let corpus = corpus.clone();
            let shutdown = shutdown.child_token();
            starting.push(async move {
                let grpc = TcpListener::bind("127.0.0.1:0").await?;
                let metrics = match metrics_port {
                    Some(port) => Some(
                        TcpListener::bind(("127.0.0.1", port))
                            .await
                            .with_context(|| format!("cannot bind leaf metrics port {port}"))?,
                    ),
                    None => None,
                };
                leaf::start(leaf_config, corpus, grpc, metrics, shutdown)
                    .await
                    .with_context(|| format!("leaf for shard {shard} failed to start"))
            });
        }
    }
    let mut leaves = Vec::new();
    for result in futures::future::join_all(starting).await {
        leaves.push(result?);
    }
    let mut caches = Vec::new();
    for index in 0..flags.caches {
        let cache_config = cache::CacheConfig {
            lease: Some(cache::LeaseConfig {
                frontends: vec![registry.clone()],
                token: token.clone(),
                ttl: flags.lease_ttl,
            }),
            auth: auth.clone(),
            tls: tls.clone(),
            ..cache::CacheConfig::default()
        };
        let metrics = match port(flags.metrics_base, 51 + index) {
            Some(port) => Some(
                TcpListener::bind(("127.0.0.1", port))
                    .await
                    .with_context(|| format!("cannot bind cache metrics port {port}"))?,
            ),
            None => None,
        };
        let grpc = TcpListener::bind("127.0.0.1:0").await?;
        caches.push(cache::start(cache_config, grpc, metrics, shutdown.child_token()).await?);
    }

    let url = format!("http://{}", frontend.http_addr);
    let admin = frontend.admin_addr.map_or_else(
        || "(not served)".to_string(),
        |addr| format!("http://{addr}"),
    );
    let docs: u64 = leaves
        .iter()
        .step_by(flags.replicas as usize)
        .map(|leaf| leaf.num_docs())
        .sum();
    println!();
    println!(
        "search cluster ready: {} shards × {} replicas, {} cache servers, {docs} documents",
        flags.shards, flags.replicas, flags.caches
    );
    println!("  search page:   {url}/");
    println!("  cluster page:  {admin}/status   (admin listener, loopback)");
    println!("  try:           curl '{url}/search?q=json+parser&k=5'");
    println!("                 curl '{url}/search?q=%22command+line%22+tool&k=5'");
    println!("                 curl '{url}/search?q=%2Blogger+-color&k=5'");
    println!("  membership:    curl {admin}/cluster");
    println!("  metrics:       curl {admin}/metrics");
    if let Some(root) = &flags.index_root {
        println!(
            "  new generation: indexer build --corpus FILE --shards {} --out {}",
            flags.shards,
            root.display()
        );
        println!("                 (watch it roll out on {admin}/status)");
    }
    println!("press ctrl-c to stop");

    shutdown.cancelled().await;
    // Leaves and caches revoke their leases as they stop; then the frontend
    // drains.
    let stops = leaves
        .into_iter()
        .map(|leaf| leaf.wait())
        .collect::<Vec<_>>();
    futures::future::join_all(stops).await;
    for cache in caches {
        if let Err(error) = cache.wait().await {
            tracing::warn!(%error, "cache server stopped with an error");
        }
    }
    Ok(frontend.wait().await?)
}

fn port(base: u16, offset: u32) -> Option<u16> {
    if base == 0 {
        return None;
    }
    u16::try_from(u32::from(base) + offset).ok()
}
