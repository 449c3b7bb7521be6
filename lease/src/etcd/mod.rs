//! Leases on etcd: the semantics of the embedded registry, kept by an etcd
//! cluster so that several frontends see one membership.
//!
//! - A holder ([`crate::holder`] given an `etcd://` endpoint) grants an etcd
//!   lease, puts its description under `{prefix}/{role}/{shard}/{lease_id}`
//!   attached to that lease, keeps the lease alive every TTL/3, grants again
//!   when etcd says the lease is gone, and revokes it on graceful shutdown.
//! - A frontend follows the prefix with [`EtcdMembership`]: a full read, then
//!   a watch from the next revision. etcd deletes the key when the lease is
//!   revoked or expires, and the watch tells every frontend at once.
//!
//! The value under a key is JSON: `{"role":"leaf","shard":0,"address":
//! "10.0.0.5:7100","generation":3}`; the member's lease id is the etcd lease
//! the key is attached to.
//!
//! etcd terms are whole seconds: a requested term is rounded up to the next
//! second (at least 1 s), and etcd raises it to its own minimum (1.5 election
//! timeouts: 2 s with etcd's defaults); the holder keeps the term etcd
//! granted. etcd has its own authentication and TLS; the cluster token of the
//! embedded registry does not apply to it.

mod membership;

pub use membership::{EtcdMembership, HEARTBEAT, SILENCE_LIMIT};

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::member::{HolderInfo, Member, Role, RoleLabel};

/// The scheme that selects etcd where an endpoint or a membership is named.
pub const SCHEME: &str = "etcd://";

/// The key prefix used when an `etcd://` address names none.
pub const DEFAULT_PREFIX: &str = "/search/members";

/// How long connecting to one etcd server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The deadline of a unary etcd call (grant, put, get, revoke) and of
/// opening a stream.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the members live: the etcd servers and the key prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdConfig {
    /// `http://host:port` of each etcd server; the client balances between
    /// them.
    pub endpoints: Vec<String>,
    /// The key prefix, starting with `/` and without a trailing `/`.
    pub prefix: String,
}

impl EtcdConfig {
    /// Parses `etcd://HOST:PORT[,HOST:PORT…][/PREFIX]`.
    pub fn parse(url: &str) -> Result<Self> {
        let invalid = |why: &str| {
            Error::InvalidArgument(format!(
                "{why} in {url:?} (expected etcd://HOST:PORT[,HOST:PORT…][/PREFIX])"
            ))
        };
        let rest = url
            .trim()
            .strip_prefix(SCHEME)
            .ok_or_else(|| invalid("no etcd:// scheme"))?;
        let (hosts, prefix) = match rest.split_once('/') {
            Some((hosts, prefix)) => (hosts, prefix.trim_matches('/')),
            None => (rest, ""),
        };
        let prefix = if prefix.is_empty() {
            DEFAULT_PREFIX.to_owned()
        } else {
            format!("/{prefix}")
        };
        let mut endpoints = Vec::new();
        for host in hosts.split(',').map(str::trim).filter(|h| !h.is_empty()) {
            let valid = host
                .rsplit_once(':')
                .is_some_and(|(name, port)| !name.is_empty() && port.parse::<u16>().is_ok());
            if !valid {
                return Err(invalid(&format!("{host:?} is not HOST:PORT")));
            }
            endpoints.push(format!("http://{host}"));
        }
        if endpoints.is_empty() {
            return Err(invalid("no etcd server"));
        }
        Ok(EtcdConfig { endpoints, prefix })
    }

    /// The `etcd://` form, as [`EtcdConfig::parse`] reads it.
    pub fn url(&self) -> String {
        let hosts: Vec<&str> = self
            .endpoints
            .iter()
            .map(|e| e.strip_prefix("http://").unwrap_or(e))
            .collect();
        let mut url = format!("{SCHEME}{}", hosts.join(","));
        if self.prefix != DEFAULT_PREFIX {
            url.push_str(&self.prefix);
        }
        url
    }

    /// The prefix every member key starts with, `/` included, so that a
    /// sibling prefix (`/search/members2`) is not read as members.
    pub fn key_prefix(&self) -> String {
        format!("{}/", self.prefix)
    }

    /// The key a holder puts its description under.
    pub(crate) fn key(&self, info: &HolderInfo, lease_id: i64) -> String {
        format!(
            "{}{}/{}/{:016x}",
            self.key_prefix(),
            info.role.label(),
            info.shard,
            lease_id as u64
        )
    }
}

/// True when `endpoint` names etcd rather than an embedded registry.
pub fn is_etcd_url(endpoint: &str) -> bool {
    endpoint.trim_start().starts_with(SCHEME)
}

/// A client for the servers of `config`. Connections are made lazily, so
/// this fails only on a malformed endpoint, never because etcd is down.
pub(crate) async fn connect(config: &EtcdConfig) -> Result<etcd_client::Client> {
    let options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(CONNECT_TIMEOUT)
        // A backstop for connections that die silently; the callers' own
        // deadlines notice a silent etcd sooner. etcd refuses pings more
        // often than every 5 s, and pings on idle connections.
        .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
        .with_keep_alive_while_idle(false)
        // A member cut off from the etcd leader refuses rather than serving
        // a stale view; the caller retries, on another server if one is up.
        .with_require_leader(true);
    Ok(etcd_client::Client::connect(&config.endpoints, Some(options)).await?)
}

/// Awaits an etcd call for at most `timeout`, whatever the transport does.
pub(crate) async fn bounded<T>(
    timeout: Duration,
    call: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T> {
    match tokio::time::timeout(timeout, call).await {
        Ok(result) => result.map_err(Error::from),
        Err(_) => Err(Error::Etcd(format!("no answer within {timeout:?}"))),
    }
}

/// The value under a member key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct MemberValue {
    role: String,
    shard: u32,
    address: String,
    generation: u64,
}

/// The JSON a holder puts.
pub(crate) fn encode(info: &HolderInfo) -> String {
    let value = MemberValue {
        role: info.role.label().to_owned(),
        shard: info.shard,
        address: info.address.clone(),
        generation: info.generation,
    };
    serde_json::to_string(&value).expect("a member value serializes")
}

/// The member a key-value pair describes; `lease_id` is the etcd lease the
/// key is attached to.
pub(crate) fn decode(value: &[u8], lease_id: i64) -> Result<Member> {
    let value: MemberValue = serde_json::from_slice(value)
        .map_err(|error| Error::InvalidArgument(format!("member value is not valid: {error}")))?;
    let role = match value.role.as_str() {
        "leaf" => Role::Leaf,
        "cache" => Role::Cache,
        other => return Err(Error::InvalidArgument(format!("unknown role {other:?}"))),
    };
    if lease_id == 0 {
        return Err(Error::InvalidArgument(
            "member key has no lease and would never expire".into(),
        ));
    }
    Ok(Member {
        lease_id: lease_id as u64,
        role,
        shard: value.shard,
        address: value.address,
        generation: value.generation,
    })
}

/// The term to ask etcd for: whole seconds, rounded up, at least one.
pub(crate) fn ttl_seconds(ttl: Duration) -> i64 {
    let seconds = ttl.as_millis().div_ceil(1000).max(1);
    i64::try_from(seconds).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_one_or_several_servers_and_a_prefix() {
        let one = EtcdConfig::parse("etcd://127.0.0.1:2379").unwrap();
        assert_eq!(one.endpoints, ["http://127.0.0.1:2379"]);
        assert_eq!(one.prefix, DEFAULT_PREFIX);
        assert_eq!(one.url(), "etcd://127.0.0.1:2379");

        let several = EtcdConfig::parse("etcd://a:2379, b:2379,[::1]:2379/prod/search/").unwrap();
        assert_eq!(
            several.endpoints,
            ["http://a:2379", "http://b:2379", "http://[::1]:2379"]
        );
        assert_eq!(several.prefix, "/prod/search");
        assert_eq!(several.key_prefix(), "/prod/search/");
        assert_eq!(several.url(), "etcd://a:2379,b:2379,[::1]:2379/prod/search");
        assert_eq!(EtcdConfig::parse(&several.url()).unwrap(), several);
    }

    #[test]
    fn refuses_what_is_not_an_etcd_address() {
        for bad in [
            "127.0.0.1:2379",
            "http://127.0.0.1:2379",
            "etcd://",
            "etcd:///prefix",
            "etcd://host",
            "etcd://host:port",
            "etcd://:2379",
        ] {
            assert!(EtcdConfig::parse(bad).is_err(), "{bad} was accepted");
        }
        assert!(is_etcd_url("etcd://h:1"));
        assert!(!is_etcd_url("h:1"));
    }

    #[test]
    fn a_member_round_trips_through_its_key_and_value() {
        let config = EtcdConfig::parse("etcd://h:1").unwrap();
        let info = HolderInfo {
            role: Role::Leaf,
            shard: 3,
            address: "10.0.0.5:7100".into(),
            generation: 9,
        };
        assert_eq!(
            config.key(&info, 0x1234),
            "/search/members/leaf/3/0000000000001234"
        );
        let member = decode(encode(&info).as_bytes(), 0x1234).unwrap();
        assert_eq!(
            member,
            Member {
                lease_id: 0x1234,
                role: Role::Leaf,
                shard: 3,
                address: "10.0.0.5:7100".into(),
                generation: 9,
            }
        );
        assert!(decode(b"not json", 1).is_err());
        assert!(decode(encode(&info).as_bytes(), 0).is_err());
        assert!(decode(br#"{"role":"x","shard":0,"address":"a","generation":0}"#, 1).is_err());
    }

    #[test]
    fn terms_are_whole_seconds_rounded_up() {
        assert_eq!(ttl_seconds(Duration::from_millis(1)), 1);
        assert_eq!(ttl_seconds(Duration::from_millis(1000)), 1);
        assert_eq!(ttl_seconds(Duration::from_millis(1001)), 2);
        assert_eq!(ttl_seconds(Duration::from_secs(3)), 3);
        assert_eq!(ttl_seconds(Duration::ZERO), 1);
    }
}
