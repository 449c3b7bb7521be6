//! `indexer build --corpus FILE --shards N --out ROOT`: builds a new
//! generation of every shard into `ROOT/shard-<i>/<generation>/`.
//!
//! Exit codes: 0 when the generation is published, 2 for bad arguments
//! (missing corpus, zero shards, an unwritable root), 1 when the build
//! fails. The report goes to stdout (and `--report-json FILE`), logs and
//! the live progress display to stderr.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use indexer::{BuildConfig, HangAt};

#[derive(Debug, Parser)]
#[command(
    name = "indexer",
    version,
    about = "builds index generations for leaves serving an index root"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Builds every shard of a corpus into a new generation.
    Build(BuildArgs),
}

#[derive(Debug, clap::Args)]
struct BuildArgs {
    /// JSONL corpus, plain or gzip.
    #[arg(long, value_name = "FILE")]
    corpus: PathBuf,
    /// Number of shards (as the leaves' --shards).
    #[arg(long)]
    shards: u32,
    /// The index root (as the leaves' --index-root).
    #[arg(long, value_name = "ROOT")]
    out: PathBuf,
    /// Capacity of each queue between stages, in batches.
    #[arg(long, default_value_t = 16)]
    queue_capacity: usize,
    /// Documents per batch.
    #[arg(long, default_value_t = 256)]
    batch_size: usize,
    /// tantivy indexing threads per shard.
    #[arg(long, default_value_t = 1)]
    writer_threads: usize,
    /// tantivy memory budget per shard, in MiB.
    #[arg(long, default_value_t = 64)]
    writer_heap_mb: usize,
    /// Bad lines listed one by one in the report.
    #[arg(long, default_value_t = 20)]
    list_bad_lines: usize,
    /// Also write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    report_json: Option<PathBuf>,
    /// No progress display.
    #[arg(long)]
    quiet: bool,
    /// Test hook: stop forever at this point.
    #[arg(long, hide = true, value_enum)]
    debug_hang_at: Option<HangAt>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let Command::Build(args) = cli.command;
    let config = BuildConfig {
        queue_capacity: args.queue_capacity,
        batch_size: args.batch_size,
        writer_threads: args.writer_threads,
        writer_heap_bytes: args.writer_heap_mb.saturating_mul(1024 * 1024),
        bad_lines_listed: args.list_bad_lines,
        progress: !args.quiet && std::io::stderr().is_terminal(),
        hang_at: args.debug_hang_at,
        ..BuildConfig::new(&args.corpus, args.shards, &args.out)
    };
    match indexer::build(&config) {
        Ok(report) => {
            print!("{}", report.to_text());
            if let Some(path) = &args.report_json {
                if let Err(error) = std::fs::write(path, report.to_json()) {
                    eprintln!("error: cannot write {}: {error}", path.display());
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}
