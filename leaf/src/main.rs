//! `leaf`: parse flags, start tracing, bind, and hand over to
//! [`leaf::start`].
//!
//! Exit codes follow `svc::exit`: 0 after a clean shutdown (also when
//! stopped while building the index), 1 when the server fails while
//! serving, 2 for bad flags or configuration (with a message on stderr, as
//! clap does), 3 when it cannot start (a bind error, an unusable index).

use std::process::ExitCode;

use leaf::LeafError;
use svc::Failure;

/// mimalloc rather than glibc's allocator: about 5% less CPU per query
/// (BENCHMARKS.md, "The allocator").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = leaf::Cli::from_env();
    svc::telemetry::init(cli.server.log_json);
    svc::main_exit(serve(&cli).await)
}

async fn serve(cli: &leaf::Cli) -> Result<(), Failure> {
    let settings = cli.settings().map_err(Failure::config)?;
    let grpc = svc::net::bind("grpc", &settings.grpc).await?;
    let metrics = svc::net::bind_optional("metrics", settings.metrics.as_deref()).await?;
    let shutdown = svc::shutdown::on_signal();
    let handle = match leaf::start(settings.config, settings.corpus, grpc, metrics, shutdown).await
    {
        Ok(handle) => handle,
        // Asked to stop while building: a clean exit.
        Err(LeafError::ShuttingDown) => return Ok(()),
        Err(error @ LeafError::Config(_)) => return Err(Failure::config(error)),
        Err(error) => return Err(Failure::startup(error)),
    };
    handle.join().await.map_err(Failure::runtime)
}
