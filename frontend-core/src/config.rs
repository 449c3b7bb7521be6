//! Configuration as plain data, filled from flags and then the environment
//! (`svc::args::parse` gives every flag `--foo-bar` the variable
//! `FRONTEND_FOO_BAR`), with defaults that run a cluster on loopback.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use lease::registry::RegistryConfig;
use svc::args::SecurityArgs;
use svc::auth::TokenConfig;
use svc::tls::TlsConfig;

use crate::http::serve::HttpLimits;
use crate::query::admission::AdmissionConfig;
use crate::query::canary::CanaryConfig;
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
    /// The HTTP listeners' timeouts and size limits.
    pub http: HttpLimits,
    /// API keys that name a client to admission control (none: clients
    /// are told apart by source address).
    pub api_keys: Vec<String>,
    /// How long in-flight requests may take to finish on shutdown.
    pub drain_timeout: Duration,
    /// The cluster tokens: checked on the lease registry's RPCs, sent to
    /// leaves and cache servers. Empty: an open frontend that sends none
    /// (the binary refuses that unless `--insecure-no-auth`).
    pub auth: TokenConfig,
    /// TLS of the lease registry's gRPC listener and of the calls to
    /// leaves and cache servers.
    pub tls: TlsConfig,
    /// TLS of the public HTTP API (its own certificate, usually from
    /// another authority than the internal plane's).
    pub http_tls: TlsConfig,
    /// The secret that signs cached answers; every frontend sharing the
    /// cache tier needs the same. None (and no file): a random one per
    /// process.
    pub cache_secret: Option<Secret>,
    /// A file whose contents (trimmed) are the cache secret.
    pub cache_secret_file: Option<PathBuf>,
}

/// A secret that `Debug` does not print.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

impl FrontendConfig {
    /// Takes the cluster tokens and the internal plane's TLS from the
    /// shared server flags.
    pub fn secure(&mut self, security: &SecurityArgs) {
        self.auth = security.token_config();
        self.tls = security.tls();
    }

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
            http: HttpLimits::default(),
            api_keys: Vec::new(),
            drain_timeout: Duration::from_secs(5),
            auth: TokenConfig::default(),
            tls: TlsConfig::default(),
            http_tls: TlsConfig::default(),
            cache_secret: None,
            cache_secret_file: None,
        }
    }
}

/// The HTTP listeners' limits and the API keys, shared by `frontend serve`
/// and `frontend demo`.
#[derive(Args, Clone, Debug)]
pub struct HttpFlags {
    /// A request head (request line and headers) must arrive within this
    /// time, or the connection is closed.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub http_header_timeout: Duration,
    /// A connection with no request in progress is closed after this.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub http_idle_timeout: Duration,
    /// Open connections at most, per listener. When full, the oldest
    /// connection without a request in progress is closed for the new one;
    /// when every one is busy, the new one is answered 503 and closed.
    #[arg(long, default_value_t = 1024)]
    pub http_max_connections: usize,
    /// The largest request head, in bytes (larger: 431).
    #[arg(long, default_value_t = 16 * 1024)]
    pub http_max_header_bytes: usize,
    /// The largest `POST /search` body, in bytes (larger: 400).
    #[arg(long, default_value_t = 16 * 1024)]
    pub http_max_body_bytes: usize,
    /// API keys that name clients to fair admission (`x-api-key` header);
    /// repeat or separate with commas. Without keys, clients are told apart
    /// by source address.
    #[arg(long = "api-key", value_delimiter = ',', hide_env_values = true)]
    pub api_keys: Vec<String>,
}

impl HttpFlags {
    /// Applies the flags to `config`.
    pub fn apply(&self, config: &mut FrontendConfig) {
        config.http = HttpLimits {
            header_timeout: self.http_header_timeout,
            idle_timeout: self.http_idle_timeout,
            max_connections: self.http_max_connections.max(1),
            max_header_bytes: self.http_max_header_bytes,
            max_body_bytes: self.http_max_body_bytes,
        };
        config.api_keys = self.api_keys.clone();
    }
}

/// Flags shared by `frontend serve` and `frontend demo` that shape the
/// request path; each mechanism can be switched off to measure its effect.
#[derive(Args, Clone, Debug)]
pub struct SearchFlags {
    /// Keep the leases on etcd instead of the embedded registry, so that
    /// several frontends share one membership: `etcd://HOST:PORT[,HOST:PORT…][/PREFIX]`.
    /// Leaves and cache servers then take the same address as --frontend.
    #[arg(long, value_name = "etcd://HOST:PORT")]
    pub membership: Option<String>,
    /// The secret that signs cached answers (every frontend sharing the
    /// cache tier needs the same one; default: random per process).
    #[arg(long, env = "SEARCH_CACHE_SECRET", hide_env_values = true)]
    pub cache_secret: Option<String>,
    /// A file holding the cache secret.
    #[arg(long, env = "SEARCH_CACHE_SECRET_FILE", value_name = "FILE")]
    pub cache_secret_file: Option<PathBuf>,
    /// Serve the HTTP API over TLS with this certificate chain (PEM),
    /// reloaded when it changes.
    #[arg(long, env = "FRONTEND_HTTP_TLS_CERT", value_name = "FILE")]
    pub http_tls_cert: Option<PathBuf>,
    /// The private key of --http-tls-cert (PEM).
    #[arg(long, env = "FRONTEND_HTTP_TLS_KEY", value_name = "FILE")]
    pub http_tls_key: Option<PathBuf>,
    /// Shortest lease term granted.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    pub lease_ttl_min: Duration,
    /// Longest lease term granted.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub lease_ttl_max: Duration,
    /// Send hedged requests to another replica after the shard's recent high percentile.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub hedging: bool,
    /// The percentile of a shard's recent latencies after which to hedge.
    #[arg(long, default_value_t = 0.95)]
    pub hedge_quantile: f64,
    /// Hedges allowed per primary call (on top of a floor of one per second;
    /// the bound is in ARCHITECTURE.md, tail tolerance).
    #[arg(long, default_value_t = 0.1)]
    pub hedge_budget: f64,
    /// Choose replicas by the power of two choices on load (else at random).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub replica_choice: bool,
    /// Take replicas much slower than their peers out of primary selection.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub probation: bool,
    /// Retry a failed or shed leaf call on another replica while time allows.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub retry: bool,
    /// Score with corpus-wide term statistics (exact merge across shards).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub global_stats: bool,
    /// Memory for cached term statistics, in MiB (about 4 KiB per term and
    /// field on 8 shards, most of it the champion lists behind
    /// `estimated_recall`; a quarter of it for queries' statistics
    /// assembled, so that a query seen again costs one look-up).
    #[arg(long, default_value_t = 64)]
    pub stats_cache_mib: u64,
    /// Queries whose term lists the statistics cache keeps (about 0.1 KiB
    /// each): a query seen again whose list is kept, and whose terms are,
    /// needs no `TermStats` round trip (the frontend does not analyse text;
    /// the leaves do).
    #[arg(long, default_value_t = 100_000)]
    pub stats_cache_queries: u64,
    /// Consult and fill the cache tier.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub cache: bool,
    /// Wait for every shard whatever the deadline (a benchmark baseline).
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    pub wait_for_all: bool,
    /// Send a first-seen query to one replica of one shard before the
    /// fan-out, and refuse queries that crash it (query_rejected).
    #[arg(long, env = "FRONTEND_CANARY", default_value_t = true, action = clap::ArgAction::Set)]
    pub canary: bool,
    /// Known-good query fingerprints remembered (they skip the canary).
    #[arg(long, env = "FRONTEND_CANARY_KNOWN_GOOD", default_value_t = 100_000)]
    pub canary_known_good: u64,
    /// How long a query whose canary died is refused.
    #[arg(long, env = "FRONTEND_CANARY_REJECT_FOR", default_value = "10m", value_parser = humantime::parse_duration)]
    pub canary_reject_for: Duration,
    /// Log each search slower than this with the time of each stage
    /// (canary, statistics, leaf calls), e.g. `250ms`; off when not given.
    #[arg(long, env = "FRONTEND_SLOW_QUERY", value_parser = humantime::parse_duration)]
    pub slow_query: Option<Duration>,
    /// Adaptive admission control in front of the request path.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub admission: bool,
    /// The latency objective that admission control holds.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    pub latency_target: Duration,
    /// Requests that may wait for admission (default: twice the current limit).
    #[arg(long)]
    pub admission_queue: Option<usize>,
    /// The longest a request waits for admission before it is shed with 503.
    #[arg(long, default_value = "1ms", value_parser = humantime::parse_duration)]
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
            // The server's auth layer checks every lease RPC (see
            // `Frontend::start`), with rotation.
            token: None,
        };
        config.http_tls = TlsConfig {
            cert: self.http_tls_cert.clone(),
            key: self.http_tls_key.clone(),
            ..TlsConfig::default()
        };
        config.cache_secret = self
            .cache_secret
            .clone()
            .filter(|secret| !secret.is_empty())
            .map(Secret);
        config.cache_secret_file = self.cache_secret_file.clone();
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
            stats_cache_queries: self.stats_cache_queries,
            slow_query: self.slow_query.filter(|d| !d.is_zero()),
            canary: CanaryConfig {
                enabled: self.canary,
                known_good: self.canary_known_good,
                reject_for: self.canary_reject_for,
                ..CanaryConfig::default()
            },
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        search: SearchFlags,
    }

    #[test]
    fn the_slow_query_log_is_off_unless_given_a_duration() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("frontend").chain(args.iter().copied()))
                .map(|cli| cli.search.to_config(1).root.slow_query)
        };
        assert_eq!(parse(&[]).unwrap(), None);
        assert_eq!(
            parse(&["--slow-query", "250ms"]).unwrap(),
            Some(Duration::from_millis(250))
        );
        assert_eq!(parse(&["--slow-query", "0s"]).unwrap(), None);
        assert!(parse(&["--slow-query", "fast"]).is_err());
    }
}
