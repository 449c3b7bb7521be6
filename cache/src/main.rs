//! The `cache` binary: parse the config, start tracing, bind, run until
//! SIGINT/SIGTERM. Exit codes follow `svc::exit`: 0 after a clean
//! shutdown, 1 when the server fails while serving, 2 for bad flags or
//! configuration, 3 when it cannot start (a bind error, for instance).

use std::process::ExitCode;

use svc::Failure;

#[tokio::main]
async fn main() -> ExitCode {
    let args = cache::config::Args::from_env();
    svc::telemetry::init(args.server.log_json);
    svc::main_exit(serve(args).await)
}

async fn serve(args: cache::config::Args) -> Result<(), Failure> {
    let config = args.config();
    args.server
        .security
        .tokens()
        .map_err(|error| Failure::config(cache::Error::Config(error)))?;
    let grpc = svc::net::bind("grpc", &args.grpc.to_string()).await?;
    let metrics = svc::net::bind_optional("metrics", args.server.metrics.as_deref()).await?;
    let shutdown = svc::shutdown::on_signal();
    let handle = cache::start(config, grpc, metrics, shutdown)
        .await
        .map_err(|error| match error {
            cache::Error::Config(_) => Failure::config(error),
            error => Failure::startup(error),
        })?;
    handle.wait().await.map_err(Failure::runtime)
}
