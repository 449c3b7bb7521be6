//! Configuration of the `cache` server as plain data ([`CacheConfig`]) and
//! the command line of the `cache` binary ([`Args`]): flags first, then
//! `CACHE_…` environment variables (and `SEARCH_CLUSTER_TOKEN` for the
//! token), then the defaults below; the flags every server shares come from
//! `svc::ServerArgs` and `svc::HolderArgs`. Durations carry units (`100ms`, `3s`), sizes too
//! (`256MiB`, `64KiB`, or plain bytes).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

use lease::LeaseConfig;
use svc::{HolderArgs, ServerArgs};

/// What a cache server needs to know.
#[derive(Clone, Debug)]
pub struct CacheConfig {
    /// The byte bound of keys plus values.
    pub max_bytes: u64,
    /// How long an entry lives after it is stored.
    pub ttl: Duration,
    /// The lease to hold with the frontends; none when unset.
    pub lease: Option<LeaseConfig>,
    /// The `host:port` the frontends should call, when it differs from the
    /// gRPC listener's address (e.g. behind NAT or when bound to 0.0.0.0).
    pub advertise: Option<String>,
    /// How long in-flight calls may take to finish on shutdown.
    pub drain_timeout: Duration,
    /// The cluster tokens that calls must carry (none: an open server, for
    /// in-process tests; the binary refuses to start without one unless
    /// `--insecure-no-auth`).
    pub auth: svc::auth::TokenConfig,
    /// TLS on the gRPC listener and toward the lease registries.
    pub tls: svc::tls::TlsConfig,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_bytes: 256 * 1024 * 1024,
            ttl: Duration::from_secs(60),
            lease: None,
            advertise: None,
            drain_timeout: Duration::from_secs(5),
            auth: svc::auth::TokenConfig::default(),
            tls: svc::tls::TlsConfig::default(),
        }
    }
}

/// The prefix of the `cache` binary's environment variables.
pub const ENV_PREFIX: &str = "CACHE";

/// The command line of `cache`. Parse it with [`Args::from_env`], which
/// applies the environment rule of `svc::args` (`--foo-bar` reads
/// `CACHE_FOO_BAR`).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "cache",
    about = "cache server: complete search answers by key, bounded in bytes"
)]
pub struct Args {
    /// Address of the gRPC server (Get, Put, health).
    #[arg(long, default_value = "127.0.0.1:7400")]
    pub grpc: SocketAddr,

    /// The byte bound of the cache (keys plus values), e.g. 256MiB.
    #[arg(long, default_value = "256MiB", value_parser = parse_bytes)]
    pub max_bytes: u64,

    /// How long an entry lives after it is stored.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub ttl: Duration,

    #[command(flatten)]
    pub server: ServerArgs,

    #[command(flatten)]
    pub holder: HolderArgs,
}

impl Args {
    /// The flags of this process, with `CACHE_…` variables for flags not
    /// given; exits 2 on bad flags.
    pub fn from_env() -> Args {
        svc::args::parse(ENV_PREFIX, &[])
    }

    /// The server configuration these arguments describe.
    pub fn config(&self) -> CacheConfig {
        CacheConfig {
            max_bytes: self.max_bytes,
            ttl: self.ttl,
            lease: self.holder.lease(&self.server),
            advertise: self.holder.advertise.clone(),
            drain_timeout: self.server.drain_timeout,
            auth: self.server.security.token_config(),
            tls: self.server.security.tls(),
        }
    }
}

/// Parses a size: plain bytes (`4096`), binary units (`64KiB`, `256MiB`,
/// `1GiB`, or `K`, `M`, `G`) or decimal ones (`64KB`, `10MB`, `1GB`).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("invalid size {text:?}: expected a number and a unit like 256MiB"))?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        other => return Err(format!("invalid size unit {other:?} in {text:?}")),
    };
    let bytes = number * multiplier as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("size {text:?} out of range"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("256MiB"), Ok(256 << 20));
        assert_eq!(parse_bytes("64KiB"), Ok(64 << 10));
        assert_eq!(parse_bytes("1gib"), Ok(1 << 30));
        assert_eq!(parse_bytes("1.5M"), Ok(3 << 19));
        assert_eq!(parse_bytes("10MB"), Ok(10_000_000));
        assert_eq!(parse_bytes(" 8 KiB "), Ok(8 << 10));
        assert!(parse_bytes("").is_err());
        assert!(parse_bytes("MiB").is_err());
        assert!(parse_bytes("12 parsecs").is_err());
    }

    #[test]
    fn flags_build_the_config() {
        let args = Args::try_parse_from([
            "cache",
            "--max-bytes",
            "1MiB",
            "--ttl",
            "2s",
            "--frontend",
            "127.0.0.1:7000,127.0.0.1:7001",
            "--frontend",
            "http://127.0.0.1:7002",
            "--token",
            "t",
            "--lease-ttl",
            "500ms",
            "--advertise",
            "cache-1:7400",
        ])
        .unwrap();
        let config = args.config();
        assert_eq!(config.max_bytes, 1 << 20);
        assert_eq!(config.ttl, Duration::from_secs(2));
        assert_eq!(config.advertise.as_deref(), Some("cache-1:7400"));
        let lease = config.lease.unwrap();
        assert_eq!(
            lease.frontends,
            ["127.0.0.1:7000", "127.0.0.1:7001", "http://127.0.0.1:7002"]
        );
        assert_eq!(lease.token.as_deref(), Some("t"));
        assert_eq!(lease.ttl, Duration::from_millis(500));
    }

    #[test]
    fn no_frontend_means_no_lease() {
        let args = Args::try_parse_from(["cache"]).unwrap();
        assert!(args.config().lease.is_none());
        assert_eq!(args.grpc.to_string(), "127.0.0.1:7400");
        assert_eq!(args.max_bytes, 256 << 20);
        // Optional endpoints are off unless asked for: two caches with only
        // distinct --grpc addresses never compete for a metrics port.
        assert_eq!(args.server.metrics, None);
    }

    #[test]
    fn flags_read_cache_variables_and_keep_old_spellings() {
        let command =
            svc::args::with_env(<Args as clap::CommandFactory>::command(), ENV_PREFIX, &[]);
        let env = |id: &str| {
            command
                .get_arguments()
                .find(|arg| arg.get_id() == id)
                .and_then(clap::Arg::get_env)
                .map(|env| env.to_string_lossy().into_owned())
        };
        assert_eq!(env("log_json").as_deref(), Some("CACHE_LOG_JSON"));
        assert_eq!(env("frontends").as_deref(), Some("CACHE_FRONTEND"));
        assert_eq!(env("drain_timeout").as_deref(), Some("CACHE_DRAIN_TIMEOUT"));
        assert_eq!(env("token").as_deref(), Some("SEARCH_CLUSTER_TOKEN"));
        let args =
            Args::try_parse_from(["cache", "--drain", "1s", "--membership", "etcd://h:1"]).unwrap();
        assert_eq!(args.config().drain_timeout, Duration::from_secs(1));
        assert_eq!(args.config().lease.unwrap().frontends, ["etcd://h:1"]);
    }

    #[test]
    fn bad_durations_and_sizes_are_errors() {
        assert!(Args::try_parse_from(["cache", "--ttl", "60"]).is_err());
        assert!(Args::try_parse_from(["cache", "--max-bytes", "lots"]).is_err());
    }
}
