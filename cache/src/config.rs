//! Configuration of the `cache` binary: flags first, then `CACHE_…`
//! environment variables (and `SEARCH_CLUSTER_TOKEN` for the token), then the
//! defaults below. Durations carry units (`100ms`, `3s`), sizes too
//! (`256MiB`, `64KiB`, or plain bytes).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

use crate::{CacheConfig, LeaseConfig};

/// The command line of `cache`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "cache",
    about = "cache server: complete search answers by key, bounded in bytes"
)]
pub struct Args {
    /// Address of the gRPC server (Get, Put, health).
    #[arg(long, env = "CACHE_GRPC", default_value = "127.0.0.1:7400")]
    pub grpc: SocketAddr,

    /// Address of the HTTP server for /metrics, /healthz and /readyz.
    #[arg(long, env = "CACHE_METRICS", default_value = "127.0.0.1:9400")]
    pub metrics: SocketAddr,

    /// The byte bound of the cache (keys plus values), e.g. 256MiB.
    #[arg(long, env = "CACHE_MAX_BYTES", default_value = "256MiB", value_parser = parse_bytes)]
    pub max_bytes: u64,

    /// How long an entry lives after it is stored.
    #[arg(long, env = "CACHE_TTL", default_value = "60s", value_parser = humantime::parse_duration)]
    pub ttl: Duration,

    /// gRPC addresses of the frontends to hold a lease with (repeat the flag,
    /// or separate with commas), or etcd://HOST:PORT[,HOST:PORT…] to hold it
    /// on etcd. Without one, the server holds no lease.
    #[arg(long = "frontend", alias = "membership", env = "CACHE_FRONTEND", value_delimiter = ',', num_args = 1..)]
    pub frontends: Vec<String>,

    /// The cluster token for the lease registry.
    #[arg(long, env = "SEARCH_CLUSTER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// The lease term asked of the frontends.
    #[arg(long, env = "CACHE_LEASE_TTL", default_value = "3s", value_parser = humantime::parse_duration)]
    pub lease_ttl: Duration,

    /// The `host:port` the frontends should call; the gRPC address by default.
    #[arg(long, env = "CACHE_ADVERTISE")]
    pub advertise: Option<String>,

    /// How long in-flight calls may take to finish on shutdown.
    #[arg(long, env = "CACHE_DRAIN_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,

    /// Logs one JSON object per line.
    #[arg(long, env = "CACHE_LOG_JSON")]
    pub log_json: bool,
}

impl Args {
    /// The server configuration these arguments describe.
    pub fn config(&self) -> CacheConfig {
        let lease = (!self.frontends.is_empty()).then(|| LeaseConfig {
            endpoints: self.frontends.clone(),
            token: self.token.clone().filter(|token| !token.is_empty()),
            ttl: self.lease_ttl,
        });
        CacheConfig {
            max_bytes: self.max_bytes,
            ttl: self.ttl,
            lease,
            advertise: self.advertise.clone(),
            drain_timeout: self.drain_timeout,
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
            lease.endpoints,
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
    }

    #[test]
    fn bad_durations_and_sizes_are_errors() {
        assert!(Args::try_parse_from(["cache", "--ttl", "60"]).is_err());
        assert!(Args::try_parse_from(["cache", "--max-bytes", "lots"]).is_err());
    }
}
