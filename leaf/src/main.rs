//! `leaf`: parse flags, start tracing, bind, and hand over to [`leaf::run`].
//!
//! Exit codes: 0 after a clean shutdown, 2 for bad flags or configuration
//! (with a message on stderr, as clap does), 1 when the server fails.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = leaf::Cli::parse();
    svc::telemetry::init(cli.log_json);
    let settings = match cli.settings() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    match serve(settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "leaf failed");
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: leaf::config::Settings) -> anyhow::Result<()> {
    let grpc = TcpListener::bind(&settings.grpc)
        .await
        .with_context(|| format!("cannot bind grpc address {}", settings.grpc))?;
    let metrics = match &settings.metrics {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot bind metrics address {addr}"))?,
        ),
        None => None,
    };
    let shutdown = svc::shutdown::on_signal();
    leaf::run(settings.config, settings.corpus, grpc, metrics, shutdown).await?;
    Ok(())
}
