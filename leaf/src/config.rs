//! Configuration as plain data ([`LeafConfig`]) and the command line that
//! fills it ([`Cli`]).
//!
//! Order: a flag wins over its environment variable (`LEAF_…`, and
//! `SEARCH_CLUSTER_TOKEN` for the token), which wins over the default.
//! Durations take units (`50ms`, `3s`). There is no config file.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

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
}

/// Lease holding towards the frontends' registries.
#[derive(Clone, Debug, PartialEq)]
pub struct LeaseConfig {
    /// gRPC addresses of the frontends, one lease each.
    pub frontends: Vec<String>,
    /// The cluster token, sent as `authorization: Bearer …`.
    pub token: Option<String>,
    pub ttl: Duration,
}

impl LeafConfig {
    /// Shard `shard` of `shards` with every other setting at its default.
    pub fn new(shard: u32, shards: u32) -> LeafConfig {
        LeafConfig {
            shard,
            shards,
            index: IndexConfig::default(),
            generations: None,
            limits: Limits::default(),
            faults: FaultConfig::default(),
            lease: None,
            advertise: None,
            drain_timeout: Duration::from_secs(5),
            reply_margin: Duration::from_millis(1),
        }
    }

    /// Checks the values that flags and types cannot.
    pub fn validate(&self) -> Result<()> {
        if self.shards == 0 {
            return Err(LeafError::Config("shards must be at least 1".to_string()));
        }
        if self.shard >= self.shards {
            return Err(LeafError::Config(format!(
                "shard {} is out of range for {} shards (0..{})",
                self.shard, self.shards, self.shards
            )));
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
        env = "LEAF_CORPUS",
        value_name = "FILE|builtin",
        required_unless_present = "index_root"
    )]
    pub corpus: Option<String>,
    /// Serve the newest generation under ROOT/shard-<shard>/ (built by
    /// `indexer build`) and swap to newer ones as they appear.
    #[arg(long, env = "LEAF_INDEX_ROOT", value_name = "ROOT", conflicts_with_all = ["corpus", "index_dir"])]
    pub index_root: Option<PathBuf>,
    /// Complete generations kept on disk under --index-root.
    #[arg(long, env = "LEAF_KEEP_GENERATIONS", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..))]
    pub keep_generations: u64,
    /// Time after a swap before old generations are removed.
    #[arg(long, env = "LEAF_GENERATION_GRACE", value_parser = humantime::parse_duration, default_value = "30s")]
    pub generation_grace: Duration,
    /// How often --index-root is scanned for a newer generation.
    #[arg(long, env = "LEAF_GENERATION_POLL", value_parser = humantime::parse_duration, default_value = "1s")]
    pub generation_poll: Duration,
    /// This leaf's shard, in 0..shards.
    #[arg(long, env = "LEAF_SHARD")]
    pub shard: u32,
    /// Number of shards the corpus is split into.
    #[arg(long, env = "LEAF_SHARDS", value_parser = clap::value_parser!(u32).range(1..))]
    pub shards: u32,
    /// gRPC listen address (port 0 picks a free port).
    #[arg(
        long,
        env = "LEAF_GRPC",
        value_name = "ADDR",
        default_value = "127.0.0.1:0"
    )]
    pub grpc: String,
    /// Serve /metrics, /healthz and /readyz here; not served when absent.
    #[arg(long, env = "LEAF_METRICS", value_name = "ADDR")]
    pub metrics: Option<String>,
    /// Keep the index on disk and reopen it on restart (default: in RAM).
    #[arg(long, env = "LEAF_INDEX_DIR", value_name = "DIR")]
    pub index_dir: Option<PathBuf>,
    /// Rebuild the index in --index-dir even when it could be reopened.
    #[arg(long, env = "LEAF_REBUILD")]
    pub rebuild: bool,
    /// Indexing threads. With one, every replica of a shard scans its
    /// documents in the same order, which lets the frontend place a search
    /// cut short by its deadline exactly when it estimates recall; more
    /// threads build big shards faster, in an order of their own.
    #[arg(long, env = "LEAF_INDEX_THREADS", default_value_t = 1)]
    pub index_threads: usize,
    /// Indexing memory budget in MiB, across all indexing threads.
    #[arg(long, env = "LEAF_INDEX_HEAP_MB", default_value_t = 128)]
    pub index_heap_mb: usize,
    /// Frontend (lease registry) gRPC address; repeat for several. Or
    /// etcd://HOST:PORT[,HOST:PORT…] to hold the lease on etcd.
    #[arg(
        long = "frontend",
        alias = "membership",
        env = "LEAF_FRONTENDS",
        value_name = "ADDR",
        value_delimiter = ','
    )]
    pub frontends: Vec<String>,
    /// Cluster token for the lease registries.
    #[arg(long, env = "SEARCH_CLUSTER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Lease term asked for.
    #[arg(long, env = "LEAF_LEASE_TTL", value_parser = humantime::parse_duration, default_value = "3s")]
    pub lease_ttl: Duration,
    /// Address announced to frontends (default: the bound gRPC address).
    #[arg(long, env = "LEAF_ADVERTISE", value_name = "HOST:PORT")]
    pub advertise: Option<String>,
    /// Searches running at once (default: twice the cores).
    #[arg(long, env = "LEAF_MAX_CONCURRENT", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_concurrent: Option<u64>,
    /// Searches waiting for a slot before new ones are rejected.
    #[arg(long, env = "LEAF_MAX_QUEUE", default_value_t = 64)]
    pub max_queue: usize,
    /// Longest wait for a slot when the call's deadline is later.
    #[arg(long, env = "LEAF_MAX_QUEUE_WAIT", value_parser = humantime::parse_duration, default_value = "1s")]
    pub max_queue_wait: Duration,
    /// How long a graceful stop waits for in-flight calls.
    #[arg(long, env = "LEAF_DRAIN_TIMEOUT", value_parser = humantime::parse_duration, default_value = "5s")]
    pub drain_timeout: Duration,
    /// Fault: latency added to --fault-delay-fraction of searches.
    #[arg(long, env = "LEAF_FAULT_DELAY", value_parser = humantime::parse_duration, default_value = "0s")]
    pub fault_delay: Duration,
    /// Fault: fraction (0..=1) of searches delayed.
    #[arg(long, env = "LEAF_FAULT_DELAY_FRACTION", value_parser = parse_fraction, default_value_t = 0.0)]
    pub fault_delay_fraction: f64,
    /// Fault: fraction (0..=1) of searches answered UNAVAILABLE.
    #[arg(long, env = "LEAF_FAULT_ERROR_FRACTION", value_parser = parse_fraction, default_value_t = 0.0)]
    pub fault_error_fraction: f64,
    /// Fault: searches never answer until the caller gives up.
    #[arg(long, env = "LEAF_FAULT_HANG")]
    pub fault_hang: bool,
    /// Fault: time added at every budget check of a search's scoring loop.
    #[arg(long, env = "LEAF_FAULT_SLOW_SCAN", value_parser = humantime::parse_duration, default_value = "0s")]
    pub fault_slow_scan: Duration,
    /// Log one JSON object per line.
    #[arg(long, env = "LEAF_LOG_JSON")]
    pub log_json: bool,
}

/// What `main` needs from the command line.
#[derive(Clone, Debug)]
pub struct Settings {
    pub config: LeafConfig,
    pub corpus: CorpusSource,
    pub grpc: String,
    pub metrics: Option<String>,
}

impl Cli {
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
        let lease = (!self.frontends.is_empty()).then(|| LeaseConfig {
            frontends: self.frontends.clone(),
            token: self.token.clone().filter(|token| !token.is_empty()),
            ttl: self.lease_ttl,
        });
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
            }),
            limits,
            faults: FaultConfig {
                delay: self.fault_delay,
                delay_fraction: self.fault_delay_fraction,
                error_fraction: self.fault_error_fraction,
                hang: self.fault_hang,
                slow_scan: self.fault_slow_scan,
            },
            lease,
            advertise: self.advertise.clone(),
            drain_timeout: self.drain_timeout,
            ..LeafConfig::new(self.shard, self.shards)
        };
        config.validate()?;
        Ok(Settings {
            config,
            // Unused with --index-root.
            corpus: CorpusSource::from_arg(self.corpus.as_deref().unwrap_or("builtin")),
            grpc: self.grpc.clone(),
            metrics: self.metrics.clone(),
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
        ])
        .unwrap();
        let generations = cli.settings().unwrap().config.generations.unwrap();
        assert_eq!(generations.root, PathBuf::from("/srv/root"));
        assert_eq!(generations.keep, 3);
        assert_eq!(generations.poll, Duration::from_secs(1));
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
