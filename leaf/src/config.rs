//! Configuration as plain data ([`LeafConfig`]) and the command line that
//! fills it ([`Cli`]).
//!
//! Order: a flag wins over its environment variable (`--foo-bar` reads
//! `LEAF_FOO_BAR`, and `SEARCH_CLUSTER_TOKEN` for the token; see
//! `svc::args`), which wins over the default. Durations take units (`50ms`,
//! `3s`). There is no config file. The flags every server shares (logs,
//! metrics, drain timeout, token, frontends, lease term, advertised
//! address) come from `svc::ServerArgs` and `svc::HolderArgs`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
pub use lease::LeaseConfig;
use svc::{HolderArgs, ServerArgs};

use crate::corpus::CorpusSource;
use crate::error::{LeafError, Result};
use crate::faults::FaultConfig;
use crate::generations::GenerationsConfig;
use crate::index::IndexConfig;
use crate::limits::Limits;

/// Everything a leaf server needs besides its corpus and listeners.
#[derive(Clone, Debug, PartialEq)]
pub struct LeafConfig {
    pub shard: u32,
    pub shards: u32,
    /// Further shards this process serves besides `shard` (`--shard 0,1,2`):
    /// each with its own index, lease and metrics, on the same listener,
    /// so that a frontend can search them all with one call
    /// (`SearchShards`). Not with `--index-root`.
    pub also_serve: Vec<u32>,
    pub index: IndexConfig,
    /// Serve the generations under an index root instead of building from
    /// the corpus (`--index-root`).
    pub generations: Option<GenerationsConfig>,
    pub limits: Limits,
    pub faults: FaultConfig,
    /// None: no leases (a standalone leaf, or a test that routes by address).
    pub lease: Option<LeaseConfig>,
    /// `host:port` given to the frontends; defaults to the listener's address.
    pub advertise: Option<String>,
    /// How long a graceful stop waits for in-flight calls.
    pub drain_timeout: Duration,
    /// Time kept in reserve after scoring to load hits and reply, on top of
    /// a small per-hit allowance.
    pub reply_margin: Duration,
    /// A search whose query terms list at most this many postings in the
    /// shard (summed) runs on the gRPC task itself instead of being handed
    /// to the blocking pool: the hand-off (two thread wake-ups) costs more
    /// than such a search. 0 hands every search off. Term-statistics calls
    /// (bounded work) always run on the task.
    pub inline_postings: u64,
    /// The cluster tokens that calls must carry (none: an open leaf, for
    /// in-process tests; the binary refuses to start without one unless
    /// `--insecure-no-auth`).
    pub auth: svc::auth::TokenConfig,
    /// TLS on the gRPC listener and toward the lease registries.
    pub tls: svc::tls::TlsConfig,
}

/// [`LeafConfig::inline_postings`] by default: a pruned search of about
/// this many postings takes well under a millisecond.
pub const DEFAULT_INLINE_POSTINGS: u64 = 200_000;

impl LeafConfig {
    /// Shard `shard` of `shards` with every other setting at its default.
    pub fn new(shard: u32, shards: u32) -> LeafConfig {
        LeafConfig {
            shard,
            shards,
            also_serve: Vec::new(),
            index: IndexConfig::default(),
            generations: None,
            limits: Limits::default(),
            faults: FaultConfig::default(),
            lease: None,
            advertise: None,
            drain_timeout: Duration::from_secs(5),
            reply_margin: Duration::from_millis(1),
            inline_postings: DEFAULT_INLINE_POSTINGS,
            auth: svc::auth::TokenConfig::default(),
            tls: svc::tls::TlsConfig::default(),
        }
    }

    /// Every shard this process serves: `shard`, then `also_serve`.
    pub fn served_shards(&self) -> Vec<u32> {
        std::iter::once(self.shard)
            .chain(self.also_serve.iter().copied())
            .collect()
    }

    /// Checks the values that flags and types cannot.
    pub fn validate(&self) -> Result<()> {
        if self.shards == 0 {
            return Err(LeafError::Config("shards must be at least 1".to_string()));
        }
        let served = self.served_shards();
        for (i, &shard) in served.iter().enumerate() {
            if shard >= self.shards {
                return Err(LeafError::Config(format!(
                    "shard {shard} is out of range for {} shards (0..{})",
                    self.shards, self.shards
                )));
            }
            if served[..i].contains(&shard) {
                return Err(LeafError::Config(format!("shard {shard} is given twice")));
            }
        }
        if served.len() > 1 && self.generations.is_some() {
            return Err(LeafError::Config(
                "a leaf with --index-root serves one shard; give --shard one number".to_string(),
            ));
        }
        if self.limits.max_concurrent == 0 {
            return Err(LeafError::Config(
                "max concurrent searches must be at least 1".to_string(),
            ));
        }
        for (name, fraction) in [
            ("fault delay fraction", self.faults.delay_fraction),
            ("fault error fraction", self.faults.error_fraction),
        ] {
            if !(0.0..=1.0).contains(&fraction) {
                return Err(LeafError::Config(format!(
                    "{name} must be between 0 and 1, got {fraction}"
                )));
            }
        }
        if let Some(lease) = &self.lease {
            if lease.frontends.is_empty() {
                return Err(LeafError::Config("leases need a frontend".to_string()));
            }
            if lease.ttl.is_zero() {
                return Err(LeafError::Config("lease ttl must be positive".to_string()));
            }
        }
        Ok(())
    }
}

impl Default for LeafConfig {
    fn default() -> Self {
        LeafConfig::new(0, 1)
    }
}

/// `leaf`: serves one shard of a tantivy index over gRPC.
#[derive(Clone, Debug, Parser)]
#[command(name = "leaf", version, about)]
pub struct Cli {
    /// JSONL corpus (plain or gzip), or `builtin` for the generated corpus.
    #[arg(
        long,
        value_name = "FILE|builtin",
        required_unless_present = "index_root"
    )]
    pub corpus: Option<String>,
    /// Serve the newest generation under `ROOT/shard-<shard>/` (built by
    /// `indexer build`) and swap to newer ones as they appear.
    #[arg(long, value_name = "ROOT", conflicts_with_all = ["corpus", "index_dir"])]
    pub index_root: Option<PathBuf>,
    /// Complete generations kept on disk under --index-root.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..))]
    pub keep_generations: u64,
    /// Time after a swap before old generations are removed.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub generation_grace: Duration,
    /// How often --index-root is scanned for a newer generation.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    pub generation_poll: Duration,
    /// Time between two rollout slots under --index-root: a warmed new
    /// generation swaps in `(replica × shards + shard) × stagger` after it
    /// appeared, so replicas of one shard never swap together (0: at once).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "500ms")]
    pub swap_stagger: Duration,
    /// This leaf's replica number among its shard's replicas (0, 1, …),
    /// which orders its swap in a rollout; without it, one is derived from
    /// a hash of the advertised address (two replicas may then collide).
    #[arg(long)]
    pub replica: Option<u32>,
    /// Recent queries replayed against a new generation to warm it before
    /// it serves.
    #[arg(long, default_value_t = 128)]
    pub warm_queries: usize,
    /// This leaf's shard, in 0..shards; a list (`0,1,2,3`) serves several
    /// shards in this one process, each with its own index and lease.
    #[arg(long, value_delimiter = ',', required = true, num_args = 1..)]
    pub shard: Vec<u32>,
    /// Number of shards the corpus is split into.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub shards: u32,
    /// gRPC listen address (port 0 picks a free port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub grpc: String,
    /// Keep the index on disk and reopen it on restart (default: in RAM).
    #[arg(long, value_name = "DIR")]
    pub index_dir: Option<PathBuf>,
    /// Rebuild the index in --index-dir even when it could be reopened.
    #[arg(long)]
    pub rebuild: bool,
    /// Indexing threads. With one, every replica of a shard scans its
    /// documents in the same order, which lets the frontend place a search
    /// cut short by its deadline exactly when it estimates recall; more
    /// threads build big shards faster, in an order of their own.
    #[arg(long, default_value_t = 1)]
    pub index_threads: usize,
    /// Indexing memory budget in MiB, across all indexing threads.
    #[arg(long, default_value_t = 128)]
    pub index_heap_mb: usize,
    /// Searches running at once (default: twice the cores).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_concurrent: Option<u64>,
    /// Searches waiting for a slot before new ones are rejected.
    #[arg(long, default_value_t = 64)]
    pub max_queue: usize,
    /// Longest wait for a slot when the call's deadline is later.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    pub max_queue_wait: Duration,
    /// Fault: latency added to --fault-delay-fraction of searches.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    pub fault_delay: Duration,
    /// Fault: fraction (0..=1) of searches delayed.
    #[arg(long, value_parser = parse_fraction, default_value_t = 0.0)]
    pub fault_delay_fraction: f64,
    /// Fault: fraction (0..=1) of searches answered UNAVAILABLE.
    #[arg(long, value_parser = parse_fraction, default_value_t = 0.0)]
    pub fault_error_fraction: f64,
    /// Fault: searches never answer until the caller gives up.
    #[arg(long)]
    pub fault_hang: bool,
    /// Fault: time added at every budget check of a search's scoring loop.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    pub fault_slow_scan: Duration,
    /// Fault: every search holds its slot at least this long (with
    /// --max-concurrent N, a replica of at most N / D searches a second).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    pub fault_hold: Duration,
    /// Fault: a search whose query contains TERM (ignoring case) aborts the
    /// process, as a query of death would.
    #[arg(long, value_name = "TERM")]
    pub fault_crash_on: Option<String>,
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub holder: HolderArgs,
}

/// The prefix of the `leaf` binary's environment variables.
pub const ENV_PREFIX: &str = "LEAF";

/// Old environment names still read: `(new, old)`.
pub const LEGACY_ENV: &[(&str, &str)] = &[("LEAF_FRONTEND", "LEAF_FRONTENDS")];

/// What `main` needs from the command line.
#[derive(Clone, Debug)]
pub struct Settings {
    pub config: LeafConfig,
    pub corpus: CorpusSource,
    pub grpc: String,
    pub metrics: Option<String>,
}

impl Cli {
    /// The flags of this process, with `LEAF_…` variables for flags not
    /// given; exits 2 on bad flags.
    pub fn from_env() -> Cli {
        svc::args::parse(ENV_PREFIX, LEGACY_ENV)
    }

    /// Turns flags into validated settings.
    pub fn settings(&self) -> Result<Settings> {
        let mut limits = Limits {
            max_queue: self.max_queue,
            max_queue_wait: self.max_queue_wait,
            ..Limits::default()
        };
        if let Some(max) = self.max_concurrent {
            limits.max_concurrent = usize::try_from(max).unwrap_or(usize::MAX);
        }
        let lease = self.holder.lease(&self.server);
        let config = LeafConfig {
            index: IndexConfig {
                dir: self.index_dir.clone(),
                rebuild: self.rebuild,
                writer_threads: self.index_threads,
                writer_heap_bytes: self.index_heap_mb.saturating_mul(1024 * 1024),
            },
            generations: self.index_root.as_ref().map(|root| GenerationsConfig {
                root: root.clone(),
                keep: usize::try_from(self.keep_generations).unwrap_or(usize::MAX),
                grace: self.generation_grace,
                poll: self.generation_poll,
                stagger: self.swap_stagger,
                replica: self.replica,
                warm_queries: self.warm_queries,
            }),
            limits,
            faults: FaultConfig {
                delay: self.fault_delay,
                delay_fraction: self.fault_delay_fraction,
                error_fraction: self.fault_error_fraction,
                hang: self.fault_hang,
                slow_scan: self.fault_slow_scan,
                hold: self.fault_hold,
                crash_on: self.fault_crash_on.clone(),
            },
            lease,
            advertise: self.holder.advertise.clone(),
            drain_timeout: self.server.drain_timeout,
            auth: self.server.security.token_config(),
            tls: self.server.security.tls(),
            also_serve: self.shard.get(1..).unwrap_or_default().to_vec(),
            ..LeafConfig::new(self.shard.first().copied().unwrap_or(0), self.shards)
        };
        config.validate()?;
        self.server.security.tokens().map_err(LeafError::Config)?;
        Ok(Settings {
            config,
            // Unused with --index-root.
            corpus: CorpusSource::from_arg(self.corpus.as_deref().unwrap_or("builtin")),
            grpc: self.grpc.clone(),
            metrics: self.server.metrics.clone(),
        })
    }
}

fn parse_fraction(text: &str) -> std::result::Result<f64, String> {
    let value: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!("{value} is not between 0 and 1"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> std::result::Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("leaf").chain(args.iter().copied()))
    }

    #[test]
    fn flags_fill_the_config() {
        let cli = parse(&[
            "--corpus",
            "builtin",
            "--shard",
            "1",
            "--shards",
            "4",
            "--frontend",
            "127.0.0.1:7000",
            "--frontend",
            "127.0.0.1:7001",
            "--lease-ttl",
            "2s",
            "--fault-delay",
            "50ms",
            "--fault-delay-fraction",
            "0.01",
            "--max-concurrent",
            "3",
            "--token",
            "secret",
        ])
        .unwrap();
        let settings = cli.settings().unwrap();
        let config = settings.config;
        assert!(matches!(settings.corpus, CorpusSource::Builtin));
        assert_eq!((config.shard, config.shards), (1, 4));
        assert_eq!(settings.grpc, "127.0.0.1:0");
        assert_eq!(config.faults.delay, Duration::from_millis(50));
        assert_eq!(config.faults.delay_fraction, 0.01);
        assert_eq!(config.limits.max_concurrent, 3);
        let lease = config.lease.unwrap();
        assert_eq!(lease.frontends.len(), 2);
        assert_eq!(lease.ttl, Duration::from_secs(2));
        assert_eq!(lease.token.as_deref(), Some("secret"));
        assert_eq!(settings.metrics, None);
    }

    #[test]
    fn flags_read_leaf_variables() {
        let command =
            svc::args::with_env(<Cli as clap::CommandFactory>::command(), ENV_PREFIX, &[]);
        let env = |id: &str| {
            command
                .get_arguments()
                .find(|arg| arg.get_id() == id)
                .and_then(clap::Arg::get_env)
                .map(|env| env.to_string_lossy().into_owned())
        };
        assert_eq!(env("log_json").as_deref(), Some("LEAF_LOG_JSON"));
        assert_eq!(env("corpus").as_deref(), Some("LEAF_CORPUS"));
        assert_eq!(
            env("max_queue_wait").as_deref(),
            Some("LEAF_MAX_QUEUE_WAIT")
        );
        assert_eq!(env("frontends").as_deref(), Some("LEAF_FRONTEND"));
        assert_eq!(env("drain_timeout").as_deref(), Some("LEAF_DRAIN_TIMEOUT"));
        assert_eq!(env("token").as_deref(), Some("SEARCH_CLUSTER_TOKEN"));
        assert_eq!(env("swap_stagger").as_deref(), Some("LEAF_SWAP_STAGGER"));
        assert_eq!(env("replica").as_deref(), Some("LEAF_REPLICA"));
        assert_eq!(env("warm_queries").as_deref(), Some("LEAF_WARM_QUERIES"));
    }

    #[test]
    fn index_root_replaces_the_corpus() {
        let cli = parse(&[
            "--index-root",
            "/srv/root",
            "--shard",
            "1",
            "--shards",
            "2",
            "--keep-generations",
            "3",
            "--replica",
            "1",
            "--insecure-no-auth",
        ])
        .unwrap();
        let generations = cli.settings().unwrap().config.generations.unwrap();
        assert_eq!(generations.root, PathBuf::from("/srv/root"));
        assert_eq!(generations.keep, 3);
        assert_eq!(generations.poll, Duration::from_secs(1));
        assert_eq!(generations.stagger, Duration::from_millis(500));
        assert_eq!(generations.replica, Some(1));
        assert_eq!(generations.warm_queries, 128);
    }

    #[test]
    fn bad_flags_are_errors_not_panics() {
        for args in [
            &["--corpus", "x", "--shard", "0", "--shards", "0"][..],
            &[
                "--corpus",
                "x",
                "--shard",
                "0",
                "--shards",
                "2",
                "--fault-error-fraction",
                "1.5",
            ],
            &[
                "--corpus",
                "x",
                "--shard",
                "0",
                "--shards",
                "2",
                "--lease-ttl",
                "soon",
            ],
            &["--corpus", "x", "--shard", "-1", "--shards", "2"],
            &["--shard", "0", "--shards", "2"],
        ] {
            assert!(parse(args).is_err(), "{args:?}");
        }
        assert!(parse(&[
            "--index-root",
            "r",
            "--corpus",
            "x",
            "--shard",
            "0",
            "--shards",
            "1"
        ])
        .is_err());
        let cli = parse(&["--corpus", "x", "--shard", "4", "--shards", "4"]).unwrap();
        let error = cli.settings().unwrap_err();
        assert!(error.to_string().contains("out of range"), "{error}");
    }
}
