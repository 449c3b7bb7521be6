//! The `cache` binary: parse the config, start tracing, bind, run until
//! SIGINT/SIGTERM.

use anyhow::Context;
use clap::Parser;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = cache::config::Args::parse();
    svc::telemetry::init(args.log_json);
    let config = args.config();
    let grpc = TcpListener::bind(args.grpc)
        .await
        .with_context(|| format!("cannot bind grpc address {}", args.grpc))?;
    let metrics = TcpListener::bind(args.metrics)
        .await
        .with_context(|| format!("cannot bind metrics address {}", args.metrics))?;
    let shutdown = svc::shutdown::on_signal();
    cache::run(config, grpc, metrics, shutdown).await?;
    Ok(())
}
