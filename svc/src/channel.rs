//! The one way an internal gRPC client (frontend → leaf, frontend → cache,
//! term statistics) opens its HTTP/2 channel, so that every client finds a
//! dead connection the same way.
//!
//! Between hosts a cut link answers nothing: packets vanish and a TCP
//! connection looks open for many minutes while calls queue on it. Three
//! things bound that:
//!
//! - **connect timeout**: a connection attempt to a host that does not
//!   answer fails after [`ChannelOptions::connect_timeout`] instead of the
//!   kernel's SYN retries (about two minutes);
//! - **HTTP/2 keep-alive pings**, also on idle connections: a connection
//!   whose ping is not answered within [`ChannelOptions::keepalive_timeout`]
//!   is closed, its calls fail at once, and the next call connects anew;
//! - **TCP keep-alive** as a backstop below HTTP/2.
//!
//! Per-call deadlines are the caller's (`Request::set_timeout` plus a local
//! bound); this module only decides how long a connection may stay silent.
//!
//! **Invariant:** no call waits on a connection that has not answered a
//! ping within `keepalive_interval + keepalive_timeout`.
//!
//! The lease holders (`lease::holder`) open their channels with the same
//! figures; `lease` sits below `svc` and cannot use this module.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

/// How an internal client's channel finds dead connections.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelOptions {
    /// The longest a TCP connect (and HTTP/2 handshake) may take.
    pub connect_timeout: Duration,
    /// How often a ping is sent on every connection, busy or idle.
    pub keepalive_interval: Duration,
    /// How long a ping may go unanswered before the connection is closed.
    pub keepalive_timeout: Duration,
    /// TCP keep-alive probes under HTTP/2 (a backstop; `None` disables).
    pub tcp_keepalive: Option<Duration>,
}

impl Default for ChannelOptions {
    /// A dead connection is found within 3 s (a ping every 2 s, 1 s to
    /// answer); a connect gets 1 s, ample on a LAN and far below the
    /// kernel's SYN retries.
    fn default() -> Self {
        ChannelOptions {
            connect_timeout: Duration::from_secs(1),
            keepalive_interval: Duration::from_secs(2),
            keepalive_timeout: Duration::from_secs(1),
            tcp_keepalive: Some(Duration::from_secs(10)),
        }
    }
}

/// `addr` as a URI: `host:port` gets `http://`, a URL is kept.
pub fn uri(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

/// An endpoint for `addr` (`host:port` or a URL) with `options` applied.
/// TLS, when configured, wraps this endpoint.
pub fn endpoint(addr: &str, options: &ChannelOptions) -> Result<Endpoint, tonic::transport::Error> {
    Ok(Endpoint::from_shared(uri(addr))?
        .connect_timeout(options.connect_timeout)
        .tcp_nodelay(true)
        .tcp_keepalive(options.tcp_keepalive)
        .http2_keep_alive_interval(options.keepalive_interval)
        .keep_alive_timeout(options.keepalive_timeout)
        .keep_alive_while_idle(true))
}

/// A lazily connected channel to `addr`: it connects on the first call and
/// again after a connection is found dead.
pub fn lazy(addr: &str, options: &ChannelOptions) -> Result<Channel, tonic::transport::Error> {
    Ok(endpoint(addr, options)?.connect_lazy())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_without_a_scheme_get_http() {
        assert_eq!(uri("10.0.0.1:7000"), "http://10.0.0.1:7000");
        assert_eq!(uri("https://a:1"), "https://a:1");
    }

    #[tokio::test]
    async fn bad_addresses_are_refused_and_good_ones_build() {
        let options = ChannelOptions::default();
        assert!(lazy("127.0.0.1:7000", &options).is_ok());
        assert!(endpoint("not a uri", &options).is_err());
    }

    #[test]
    fn defaults_find_a_dead_connection_within_seconds() {
        let options = ChannelOptions::default();
        assert!(options.keepalive_interval + options.keepalive_timeout <= Duration::from_secs(5));
        assert!(options.connect_timeout <= Duration::from_secs(2));
    }
}
