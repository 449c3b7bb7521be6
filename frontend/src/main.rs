//! `frontend serve` runs the root frontend; `frontend demo` runs a whole
//! cluster (frontend, leaves with replicas, cache servers) in one process.

mod demo;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use crate::demo::DemoFlags;
use clap::{Parser, Subcommand};
use frontend_core::config::SearchFlags;
use frontend_core::Frontend;
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(
    name = "frontend",
    version,
    about = "root search frontend: fan-out, merge, partial answers"
)]
struct Cli {
    /// Log one JSON object per line.
    #[arg(long, global = true, env = "LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API and the lease registry.
    Serve(ServeFlags),
    /// Run a complete local cluster in one process on a built-in corpus.
    Demo(DemoFlags),
}

#[derive(clap::Args)]
struct ServeFlags {
    /// HTTP address of the search API, /metrics and the pages.
    #[arg(long, env = "FRONTEND_HTTP", default_value = "127.0.0.1:8080")]
    http: SocketAddr,
    /// gRPC address of the lease registry that leaves and caches join
    /// (not bound with --membership etcd://…: they join etcd instead).
    #[arg(long, env = "FRONTEND_GRPC", default_value = "127.0.0.1:7070")]
    grpc: SocketAddr,
    /// Number of shards of the index.
    #[arg(long, env = "FRONTEND_SHARDS")]
    shards: u32,
    /// A fixed leaf address instead of leases (repeatable).
    #[arg(long = "leaf", env = "FRONTEND_LEAVES", value_delimiter = ',')]
    leaves: Vec<String>,
    /// Longest time to drain in-flight requests on shutdown.
    #[arg(long, env = "FRONTEND_DRAIN", default_value = "5s", value_parser = humantime::parse_duration)]
    drain: Duration,
    #[command(flatten)]
    search: SearchFlags,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    svc::telemetry::init(cli.log_json);
    let result = match cli.command {
        Command::Serve(flags) => serve(flags).await,
        Command::Demo(flags) => demo::run(flags).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("frontend: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(flags: ServeFlags) -> anyhow::Result<()> {
    if flags.shards == 0 {
        anyhow::bail!("--shards must be at least 1");
    }
    // A frontend is never open by accident: no token means no start,
    // unless --insecure-no-auth says so.
    flags
        .search
        .security
        .tokens()
        .map_err(|error| anyhow::anyhow!(error))?;
    let mut config = flags.search.to_config(flags.shards);
    config.static_leaves = flags.leaves;
    let http = TcpListener::bind(flags.http)
        .await
        .map_err(|e| anyhow::anyhow!("cannot bind http {}: {e}", flags.http))?;
    let grpc = match config.membership {
        Some(_) => None,
        None => Some(
            TcpListener::bind(flags.grpc)
                .await
                .map_err(|e| anyhow::anyhow!("cannot bind grpc {}: {e}", flags.grpc))?,
        ),
    };
    let shutdown = svc::shutdown::on_signal();
    let frontend = Frontend::start(config, http, grpc, shutdown).await?;
    frontend.wait(flags.drain).await
}
