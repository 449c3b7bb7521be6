//! The `loadgen` binary: parses flags, runs the load, prints the summary and
//! exits 0 (SLOs passed), 1 (an SLO failed), 2 (usage error) or 3 (runtime
//! failure).

use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use loadgen::{Cli, EXIT_RUNTIME, EXIT_USAGE};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    // Clap prints usage errors itself and exits with code 2.
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();

    let threads = cli.threads;
    let config = match cli.into_config() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}\n\nFor more information, try '--help'.");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let threads = threads
        .or_else(|| std::thread::available_parallelism().ok().map(Into::into))
        .unwrap_or(1)
        .max(1);
    // On one core a current-thread runtime wakes itself less than a
    // one-worker multi-thread runtime does, which leaves more of the core
    // for sending.
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let report_to_stdout = config.report.as_deref() == Some(Path::new("-"));
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    match runtime.block_on(loadgen::run_until(config, shutdown)) {
        Ok(report) => {
            if report_to_stdout {
                eprint!("{}", report.summary());
            } else {
                print!("{}", report.summary());
            }
            ExitCode::from(report.exit_code())
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
