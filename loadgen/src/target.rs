//! The target: parsing its URL, refusing hosts that are not loopback unless
//! allowed, and building each query's request URI.

use std::net::{IpAddr, SocketAddr};

use http::uri::PathAndQuery;
use http::Uri;

use crate::error::{Error, Result};

/// A parsed target URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// Host as written, without IPv6 brackets, lowercase.
    pub host: String,
    pub port: u16,
    /// `host:port` as written, for the Host header.
    pub authority: String,
    /// The path, `/search` when the URL had none.
    pub path: String,
    /// `http://authority/path`, for messages and the report.
    pub endpoint: String,
    /// The query string given with the target, to keep in every request.
    pub extra_query: Option<String>,
}

/// What each request asks for besides the query itself.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SearchParams {
    pub k: u32,
    pub timeout_ms: u64,
    pub nocache: bool,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target> {
        let uri: Uri = url
            .parse()
            .map_err(|e| Error::usage(format!("--target `{url}` is not a URL: {e}")))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(Error::usage(
                    "https targets are not supported; use http on loopback",
                ))
            }
            _ => {
                return Err(Error::usage(format!(
                    "--target `{url}` must start with http://"
                )))
            }
        }
        let authority = uri
            .authority()
            .ok_or_else(|| Error::usage(format!("--target `{url}` has no host")))?;
        if authority.as_str().contains('@') {
            return Err(Error::usage("--target must not carry credentials"));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let port = authority.port_u16().unwrap_or(80);
        let path = match uri.path() {
            "" | "/" => "/search",
            p => p,
        };
        Ok(Target {
            host,
            port,
            authority: authority.as_str().to_string(),
            path: path.to_string(),
            endpoint: format!("http://{}{}", authority.as_str(), path),
            extra_query: uri.query().filter(|q| !q.is_empty()).map(str::to_string),
        })
    }

    /// Checks the target is loopback or explicitly allowed, and returns the
    /// addresses it resolves to.
    pub async fn check_allowed(&self, allow_hosts: &[String]) -> Result<Vec<SocketAddr>> {
        let allowed = allow_hosts.iter().any(|h| {
            h.trim_start_matches('[')
                .trim_end_matches(']')
                .eq_ignore_ascii_case(&self.host)
        });
        let addrs: Vec<SocketAddr> =
            match tokio::net::lookup_host((self.host.as_str(), self.port)).await {
                Ok(addrs) => addrs.collect(),
                Err(e) if allowed => {
                    return Err(Error::Unreachable {
                        target: self.endpoint.clone(),
                        reason: format!("cannot resolve {}: {e}", self.host),
                    })
                }
                Err(e) => {
                    return Err(Error::usage(format!(
                        "cannot resolve target host {}: {e}",
                        self.host
                    )))
                }
            };
        if allowed {
            return Ok(addrs);
        }
        if addrs.is_empty() {
            return Err(Error::usage(format!(
                "target host {} resolves to no address",
                self.host
            )));
        }
        if let Some(outside) = addrs.iter().find(|a| !is_loopback(a.ip())) {
            return Err(Error::usage(format!(
                "refusing target host {}: it resolves to {}, which is not loopback; \
                 pass --allow-host {} to allow it",
                self.host,
                outside.ip(),
                self.host
            )));
        }
        Ok(addrs)
    }

    /// The request's path and query string for one query.
    pub fn path_for(&self, query: &str, params: SearchParams) -> Result<String> {
        let mut uri = String::with_capacity(self.path.len() + query.len() * 3 + 48);
        uri.push_str(&self.path);
        uri.push('?');
        if let Some(extra) = &self.extra_query {
            uri.push_str(extra);
            uri.push('&');
        }
        uri.push_str("q=");
        percent_encode(query, &mut uri);
        uri.push_str(&format!("&k={}&timeout_ms={}", params.k, params.timeout_ms));
        if params.nocache {
            uri.push_str("&nocache=true");
        }
        match uri.parse::<PathAndQuery>() {
            Ok(_) => Ok(uri),
            Err(e) => Err(Error::usage(format!(
                "query `{query}` makes a bad URI: {e}"
            ))),
        }
    }
}

fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(text: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(byte >> 4)] as char);
            out.push(HEX[usize::from(byte & 15)] as char);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARAMS: SearchParams = SearchParams {
        k: 10,
        timeout_ms: 100,
        nocache: false,
    };

    #[test]
    fn adds_the_search_path_and_parameters() {
        let t = Target::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(t.port, 8080);
        assert_eq!(t.authority, "127.0.0.1:8080");
        assert_eq!(t.endpoint, "http://127.0.0.1:8080/search");
        assert_eq!(
            t.path_for("rust async/await é", PARAMS).unwrap(),
            "/search?q=rust%20async%2Fawait%20%C3%A9&k=10&timeout_ms=100"
        );
        let t = Target::parse("http://[::1]:9/fast?x=1").unwrap();
        assert_eq!(t.host, "::1");
        let params = SearchParams {
            nocache: true,
            ..PARAMS
        };
        assert_eq!(t.authority, "[::1]:9");
        assert_eq!(
            t.path_for("a&b", params).unwrap(),
            "/fast?x=1&q=a%26b&k=10&timeout_ms=100&nocache=true"
        );
    }

    #[test]
    fn rejects_what_is_not_plain_http() {
        for url in [
            "https://127.0.0.1",
            "127.0.0.1:80",
            "ftp://localhost",
            "http://u:p@127.0.0.1",
        ] {
            assert_eq!(Target::parse(url).unwrap_err().exit_code(), 2, "{url}");
        }
    }

    #[tokio::test]
    async fn allows_loopback_and_refuses_the_rest() {
        for url in [
            "http://127.0.0.1:1",
            "http://127.3.2.1:1",
            "http://[::1]:1",
            "http://localhost:1",
        ] {
            let t = Target::parse(url).unwrap();
            assert!(t.check_allowed(&[]).await.is_ok(), "{url}");
        }
        let t = Target::parse("http://192.0.2.7:80").unwrap();
        let err = t.check_allowed(&[]).await.unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("--allow-host 192.0.2.7"), "{err}");
        assert!(t.check_allowed(&["192.0.2.7".into()]).await.is_ok());
        let t = Target::parse("http://[::ffff:10.0.0.1]:80").unwrap();
        assert!(t.check_allowed(&[]).await.is_err());
    }
}
