//! Configuration as plain data, filled from flags and then the environment
//! (clap reads `FRONTEND_…` variables for flags not given), with defaults
//! that run a cluster on loopback.

use std::time::Duration;

use clap::Args;
use lease::registry::RegistryConfig;

use crate::query::admission::AdmissionConfig;
use crate::query::fanout::FanoutConfig;
use crate::query::root::RootConfig;

/// Everything a frontend needs to start.
#[derive(Clone, Debug)]
pub struct FrontendConfig {
    /// How many shards the index has; a shard without a live replica is
    /// reported unavailable.
    pub shards: u32,
    /// A fixed leaf list instead of leases (the shard is asked of each).
    pub static_leaves: Vec<String>,
    /// Where the leases are kept: `None` for the embedded registry (one
    /// frontend), or `etcd://HOST:PORT[,HOST:PORT…][/PREFIX]` for etcd (any
    /// number of frontends on one membership).
    pub membership: Option<String>,
    /// The embedded registry's terms and token (unused on etcd).
    pub registry: RegistryConfig,
    pub fanout: FanoutConfig,
    pub root: RootConfig,
    /// Use the cache tier (live cache servers found through leases).
    pub cache: bool,
    pub admission: AdmissionConfig,
}

impl FrontendConfig {
    pub fn new(shards: u32) -> Self {
        FrontendConfig {
            shards,
            static_leaves: Vec::new(),
            membership: None,
            registry: RegistryConfig::default(),
            fanout: FanoutConfig::default(),
            root: RootConfig::default(),
            cache: true,
            admission: AdmissionConfig::default(),
        }
    }
}

/// Flags shared by `frontend serve` and `frontend demo` that shape the
/// request path; each mechanism can be switched off to measure its effect.
#[derive(Args, Clone, Debug)]
pub struct SearchFlags {
    /// Keep the leases on etcd instead of the embedded registry, so that
    /// several frontends share one membership: etcd://HOST:PORT[,HOST:PORT…][/PREFIX].
    /// Leaves and cache servers then take the same address as --frontend.
    #[arg(long, env = "FRONTEND_MEMBERSHIP", value_name = "etcd://HOST:PORT")]
    pub membership: Option<String>,
    /// The cluster token that lease holders must present (embedded registry only).
    #[arg(long, env = "SEARCH_CLUSTER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Shortest lease term granted.
    #[arg(long, env = "FRONTEND_LEASE_TTL_MIN", default_value = "500ms", value_parser = humantime::parse_duration)]
    pub lease_ttl_min: Duration,
    /// Longest lease term granted.
    #[arg(long, env = "FRONTEND_LEASE_TTL_MAX", default_value = "30s", value_parser = humantime::parse_duration)]
    pub lease_ttl_max: Duration,
    /// Send hedged requests to another replica after the shard's recent high percentile.
    #[arg(long, env = "FRONTEND_HEDGING", default_value_t = true, action = clap::ArgAction::Set)]
    pub hedging: bool,
    /// The percentile of a shard's recent latencies after which to hedge.
    #[arg(long, env = "FRONTEND_HEDGE_QUANTILE", default_value_t = 0.95)]
    pub hedge_quantile: f64,
    /// Hedges allowed per primary call (on top of a floor of one per second;
    /// the bound is in ARCHITECTURE.md, tail tolerance).
    #[arg(long, env = "FRONTEND_HEDGE_BUDGET", default_value_t = 0.1)]
    pub hedge_budget: f64,
    /// Choose replicas by the power of two choices on load (else at random).
    #[arg(long, env = "FRONTEND_REPLICA_CHOICE", default_value_t = true, action = clap::ArgAction::Set)]
    pub replica_choice: bool,
    /// Take replicas much slower than their peers out of primary selection.
    #[arg(long, env = "FRONTEND_PROBATION", default_value_t = true, action = clap::ArgAction::Set)]
    pub probation: bool,
    /// Retry a failed or shed leaf call on another replica while time allows.
    #[arg(long, env = "FRONTEND_RETRY", default_value_t = true, action = clap::ArgAction::Set)]
    pub retry: bool,
    /// Score with corpus-wide term statistics (exact merge across shards).
    #[arg(long, env = "FRONTEND_GLOBAL_STATS", default_value_t = true, action = clap::ArgAction::Set)]
    pub global_stats: bool,
    /// Memory for cached term statistics, in MiB (about 4 KiB per term and
    /// field on 8 shards, most of it the champion lists behind
    /// `estimated_recall`).
    #[arg(long, env = "FRONTEND_STATS_CACHE_MIB", default_value_t = 64)]
    pub stats_cache_mib: u64,
    /// Consult and fill the cache tier.
    #[arg(long, env = "FRONTEND_CACHE", default_value_t = true, action = clap::ArgAction::Set)]
    pub cache: bool,
    /// Wait for every shard whatever the deadline (a benchmark baseline).
    #[arg(long, env = "FRONTEND_WAIT_FOR_ALL", default_value_t = false, action = clap::ArgAction::Set)]
    pub wait_for_all: bool,
    /// Adaptive admission control in front of the request path.
    #[arg(long, env = "FRONTEND_ADMISSION", default_value_t = true, action = clap::ArgAction::Set)]
    pub admission: bool,
    /// The latency objective that admission control holds.
    #[arg(long, env = "FRONTEND_LATENCY_TARGET", default_value = "100ms", value_parser = humantime::parse_duration)]
    pub latency_target: Duration,
    /// Requests that may wait for admission (default: twice the current limit).
    #[arg(long, env = "FRONTEND_ADMISSION_QUEUE")]
    pub admission_queue: Option<usize>,
    /// The longest a request waits for admission before it is shed with 503.
    #[arg(long, env = "FRONTEND_ADMISSION_QUEUE_TIMEOUT", default_value = "1ms", value_parser = humantime::parse_duration)]
    pub admission_queue_timeout: Duration,
}

impl SearchFlags {
    /// Applies the flags to a configuration for `shards` shards.
    pub fn to_config(&self, shards: u32) -> FrontendConfig {
        let mut config = FrontendConfig::new(shards);
        config.membership = self.membership.clone();
        config.registry = RegistryConfig {
            min_ttl: self.lease_ttl_min,
            max_ttl: self.lease_ttl_max,
            token: self.token.clone(),
        };
        config.fanout = FanoutConfig {
            replica_choice: self.replica_choice,
            hedging: self.hedging,
            hedge_quantile: self.hedge_quantile.clamp(0.5, 0.9999),
            hedge_budget_ratio: self.hedge_budget.max(0.0),
            probation: self.probation,
            retry: self.retry,
            ..FanoutConfig::default()
        };
        config.root = RootConfig {
            global_stats: self.global_stats,
            wait_for_all: self.wait_for_all,
            stats_cache_bytes: self.stats_cache_mib.saturating_mul(1 << 20),
            ..RootConfig::default()
        };
        config.cache = self.cache;
        config.admission = AdmissionConfig {
            enabled: self.admission,
            latency_target: self.latency_target,
            max_queue: self.admission_queue,
            queue_timeout: self.admission_queue_timeout,
            ..AdmissionConfig::default()
        };
        config
    }
}
