//! `frontend serve` runs the root frontend; `frontend demo` runs a whole
//! cluster (frontend, leaves with replicas, cache servers) in one process.

mod demo;
mod embed;

use std::process::ExitCode;

use crate::demo::DemoFlags;
use clap::{Parser, Subcommand};
use frontend_core::config::{HttpFlags, SearchFlags};
use frontend_core::{Frontend, Listeners};
use svc::Failure;

/// mimalloc rather than glibc's allocator: about 5% less CPU per query
/// (BENCHMARKS.md, "The allocator").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "frontend",
    version,
    about = "root search frontend: fan-out, merge, partial answers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API, the admin surface and the lease registry.
    Serve(ServeFlags),
    /// Run a complete local cluster in one process on a built-in corpus.
    Demo(DemoFlags),
}

#[derive(clap::Args)]
struct ServeFlags {
    /// HTTP address of the public API: /search, the search page, /healthz,
    /// /readyz.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: String,
    /// HTTP address of the admin surface: /cluster, /status, /metrics.
    /// Loopback by default; port 0 picks a free port, which is logged, so
    /// that several frontends start on one host.
    #[arg(long, default_value = "127.0.0.1:0")]
    admin_http: String,
    /// gRPC address of the lease registry that leaves and caches join
    /// (not bound with --membership etcd://…: they join etcd instead).
    #[arg(long, default_value = "127.0.0.1:7070")]
    grpc: String,
    /// Number of shards of the index.
    #[arg(long)]
    shards: u32,
    /// A fixed leaf address instead of leases (repeatable).
    #[arg(long = "leaf", value_delimiter = ',')]
    leaves: Vec<String>,
    #[command(flatten)]
    server: svc::ServerArgs,
    #[command(flatten)]
    http_limits: HttpFlags,
    #[command(flatten)]
    search: SearchFlags,
    /// Serve a leaf in this process too, and call it without gRPC: its
    /// shards cost the query path no transport. The leaf's own flags
    /// (the `leaf` binary's) follow `--`; by default it serves every
    /// shard of the built-in corpus.
    #[arg(long)]
    embed_leaf: bool,
    /// The embedded leaf's flags (after `--`, with --embed-leaf).
    #[arg(last = true, value_name = "LEAF FLAGS", requires = "embed_leaf")]
    leaf_args: Vec<String>,
}

/// Old environment names that still work when the new one is not set.
const LEGACY_ENV: &[(&str, &str)] = &[
    ("FRONTEND_LOG_JSON", "LOG_JSON"),
    ("FRONTEND_DRAIN_TIMEOUT", "FRONTEND_DRAIN"),
    ("FRONTEND_LEAF", "FRONTEND_LEAVES"),
];

#[tokio::main]
async fn main() -> ExitCode {
    let cli: Cli = svc::args::parse("FRONTEND", LEGACY_ENV);
    let server = match &cli.command {
        Command::Serve(flags) => &flags.server,
        Command::Demo(flags) => &flags.server,
    };
    svc::telemetry::init(server.log_json);
    let result = match cli.command {
        Command::Serve(flags) => serve(flags).await,
        Command::Demo(flags) => demo::run(flags).await,
    };
    svc::main_exit(result)
}

async fn serve(flags: ServeFlags) -> Result<(), Failure> {
    if flags.shards == 0 {
        return Err(Failure::config(anyhow::anyhow!(
            "--shards must be at least 1"
        )));
    }
    // A frontend is never open by accident: no token means no start,
    // unless --insecure-no-auth says so.
    flags
        .server
        .security
        .tokens()
        .map_err(|error| Failure::config(anyhow::anyhow!(error)))?;
    let mut config = flags.search.to_config(flags.shards);
    config.static_leaves = flags.leaves;
    config.secure(&flags.server.security);
    config.drain_timeout = flags.server.drain_timeout;
    flags.http_limits.apply(&mut config);
    let http = svc::net::bind("http", &flags.http).await?;
    let admin = svc::net::bind("admin", &flags.admin_http).await?;
    let grpc = match config.membership {
        Some(_) => None,
        None => Some(svc::net::bind("grpc", &flags.grpc).await?),
    };
    let metrics = svc::net::bind_optional("metrics", flags.server.metrics.as_deref()).await?;
    let shutdown = svc::shutdown::on_signal();
    let listeners = Listeners {
        http,
        admin: Some(admin),
        grpc,
        metrics,
    };
    let leaf = if flags.embed_leaf {
        let cli = embed::leaf_cli(&flags.leaf_args, flags.shards)?;
        let registry = match &listeners.grpc {
            Some(grpc) => Some(grpc.local_addr().map_err(Failure::startup)?),
            None => None,
        };
        Some(embed::start(cli, &flags.server, &mut config, registry, shutdown.clone()).await?)
    } else {
        None
    };
    let local = leaf.iter().map(|leaf| leaf.local.clone()).collect();
    let frontend = Frontend::start_embedding(config, listeners, local, shutdown.clone())
        .await
        .map_err(Failure::startup)?;
    let Some(leaf) = leaf else {
        return frontend.wait().await.map_err(Failure::runtime);
    };
    // One process, one fate: when either part stops, so does the other.
    let (frontend_ended, leaf_ended) = {
        let stop = shutdown.clone();
        let frontend = async move {
            let ended = frontend.wait().await;
            stop.cancel();
            ended
        };
        let leaf = async move {
            let ended = leaf.handle.join().await;
            shutdown.cancel();
            ended
        };
        tokio::join!(frontend, leaf)
    };
    frontend_ended.map_err(Failure::runtime)?;
    leaf_ended.map_err(Failure::runtime)
}
