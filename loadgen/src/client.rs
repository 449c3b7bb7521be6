//! The HTTP/1.1 client: a pool of keep-alive connections that opens a new
//! connection whenever no idle one is free, so it opens as many as the rate
//! needs, and the lenient reading of the search API's answers.
//!
//! The pool is hyper's connection-level API under a LIFO stack of idle
//! connections rather than hyper-util's general client: it does one thing
//! (one host, GET, HTTP/1.1) and so costs less per request, which matters
//! when the generator must not be the bottleneck. Connects in progress are
//! capped, so when the generator falls behind it does not open thousands of
//! connections at once; a request waiting for one keeps its scheduled time
//! and the wait shows in its latency.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http::header::HOST;
use http::{HeaderValue, Request};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// Bodies larger than this are cut off and counted as errors.
const MAX_BODY: usize = 4 << 20;
/// The most connects in progress at once.
const MAX_CONNECTING: usize = 64;

type Sender = SendRequest<Empty<Bytes>>;

/// Keep-alive connections to one address.
pub(crate) struct Pool {
    addr: SocketAddr,
    host: HeaderValue,
    connect_timeout: Duration,
    /// Idle connections, the most recently used last.
    idle: Mutex<Vec<Sender>>,
    connecting: AtomicUsize,
    /// Signalled when a connection goes back to idle or a connect ends.
    freed: Notify,
    opened: AtomicU64,
}

impl Pool {
    pub fn new(addr: SocketAddr, host: &str, connect_timeout: Duration) -> Option<Pool> {
        Some(Pool {
            addr,
            host: HeaderValue::from_str(host).ok()?,
            connect_timeout,
            idle: Mutex::new(Vec::new()),
            connecting: AtomicUsize::new(0),
            freed: Notify::new(),
            opened: AtomicU64::new(0),
        })
    }

    /// Connections opened so far.
    pub fn opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// Sends a GET for `path_and_query` and reads the whole body, within `timeout`.
    pub async fn send(&self, path_and_query: &str, timeout: Duration) -> Outcome {
        tokio::time::timeout(timeout, self.exchange(path_and_query))
            .await
            .unwrap_or(Outcome::Timeout)
    }

    async fn exchange(&self, path_and_query: &str) -> Outcome {
        // A reused connection may have been closed by the server while idle;
        // then the request goes once more, on a new connection.
        let mut reused_failed = false;
        loop {
            let (mut sender, reused) = match self.checkout(reused_failed).await {
                Ok(c) => c,
                Err(outcome) => return outcome,
            };
            let request = match Request::get(path_and_query)
                .header(HOST, self.host.clone())
                .body(Empty::<Bytes>::new())
            {
                Ok(r) => r,
                Err(_) => return Outcome::Transport,
            };
            if sender.ready().await.is_err() {
                if reused && !reused_failed {
                    reused_failed = true;
                    continue;
                }
                return Outcome::Transport;
            }
            let response = match sender.send_request(request).await {
                Ok(r) => r,
                Err(e) if reused && !reused_failed && (e.is_canceled() || e.is_closed()) => {
                    reused_failed = true;
                    continue;
                }
                Err(_) => return Outcome::Transport,
            };
            let status = response.status().as_u16();
            return match Limited::new(response.into_body(), MAX_BODY).collect().await {
                Ok(body) => {
                    self.checkin(sender);
                    Outcome::Response {
                        status,
                        answer: Answer::parse(&body.to_bytes()),
                    }
                }
                Err(_) => Outcome::Transport,
            };
        }
    }

    /// An idle connection (reused: true) or a new one; `fresh` skips the idle ones.
    async fn checkout(&self, fresh: bool) -> Result<(Sender, bool), Outcome> {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if !fresh {
                if let Some(sender) = self.pop_idle() {
                    return Ok((sender, true));
                }
            }
            if self.connecting.fetch_add(1, Ordering::AcqRel) < MAX_CONNECTING {
                let connected = self.connect().await;
                self.connecting.fetch_sub(1, Ordering::AcqRel);
                self.freed.notify_one();
                return connected.map(|s| (s, false));
            }
            self.connecting.fetch_sub(1, Ordering::AcqRel);
            freed.await;
        }
    }

    fn pop_idle(&self) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(sender) = idle.pop() {
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    fn checkin(&self, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(sender);
        self.freed.notify_one();
    }

    async fn connect(&self) -> Result<Sender, Outcome> {
        let stream =
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(self.addr)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(_)) | Err(_) => return Err(Outcome::Connect),
            };
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|_| Outcome::Connect)?;
        tokio::spawn(async move {
            // The connection ends when its sender is dropped or the peer
            // closes it; either is normal here.
            let _ = connection.await;
        });
        self.opened.fetch_add(1, Ordering::Relaxed);
        Ok(sender)
    }
}

/// What became of one request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    /// An HTTP response, whatever its status.
    Response { status: u16, answer: Answer },
    /// No full response within the request timeout.
    Timeout,
    /// The connection could not be made.
    Connect,
    /// The connection failed after it was made, or the body was too large.
    Transport,
}

/// The figures read from a search answer; each is `None` when absent.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Answer {
    pub partial: Option<bool>,
    /// Percent of the corpus searched.
    pub coverage_percent: Option<f64>,
    pub recall: Option<f64>,
    pub cache: Option<CacheState>,
    pub took_ms: Option<f64>,
    /// `error.code` of an error body, e.g. `overloaded`.
    pub error_code: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CacheState {
    Hit,
    Miss,
    Bypass,
}

/// The answer fields read, each kept as a raw value so that one field of an
/// unexpected type does not spoil the others; everything else is skipped.
#[derive(Deserialize)]
struct Wire {
    partial: Option<Value>,
    coverage: Option<Value>,
    estimated_recall: Option<Value>,
    cache: Option<Value>,
    took_ms: Option<Value>,
    error: Option<Value>,
}

impl Answer {
    /// Reads what it can; a body that is not a JSON object yields nothing.
    pub fn parse(body: &[u8]) -> Answer {
        if body.first() != Some(&b'{') {
            return Answer::default();
        }
        let Ok(wire) = serde_json::from_slice::<Wire>(body) else {
            return Answer::default();
        };
        let coverage_percent = wire.coverage.as_ref().and_then(|c| {
            c.get("percent").and_then(Value::as_f64).or_else(|| {
                let total = c.get("docs_total")?.as_f64()?;
                let searched = c.get("docs_searched")?.as_f64()?;
                (total > 0.0).then(|| 100.0 * searched / total)
            })
        });
        Answer {
            partial: wire.partial.as_ref().and_then(Value::as_bool),
            coverage_percent,
            recall: wire.estimated_recall.as_ref().and_then(Value::as_f64),
            cache: wire
                .cache
                .as_ref()
                .and_then(Value::as_str)
                .and_then(|c| match c {
                    "hit" => Some(CacheState::Hit),
                    "miss" => Some(CacheState::Miss),
                    "bypass" => Some(CacheState::Bypass),
                    _ => None,
                }),
            took_ms: wire.took_ms.as_ref().and_then(Value::as_f64),
            error_code: wire
                .error
                .as_ref()
                .and_then(|e| e.get("code"))
                .and_then(Value::as_str)
                .map(str::to_string),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_search_answer() {
        let body = br#"{"hits":[{"id":"1","score":1.5,"title":"t","snippet":"s","shard":0}],
            "partial":true,"coverage":{"shards_total":4,"shards_answered":3,"percent":75.0},
            "estimated_recall":0.9,"cache":"miss","took_ms":12}"#;
        let answer = Answer::parse(body);
        assert_eq!(answer.partial, Some(true));
        assert_eq!(answer.coverage_percent, Some(75.0));
        assert_eq!(answer.recall, Some(0.9));
        assert_eq!(answer.cache, Some(CacheState::Miss));
        assert_eq!(answer.took_ms, Some(12.0));
        assert_eq!(answer.error_code, None);
    }

    #[test]
    fn is_lenient_about_missing_and_odd_fields() {
        let answer = Answer::parse(
            br#"{"partial":"maybe","coverage":{"docs_total":200,"docs_searched":50}}"#,
        );
        assert_eq!(answer.partial, None);
        assert_eq!(answer.coverage_percent, Some(25.0));
        assert_eq!(Answer::parse(b"ok"), Answer::default());
        assert_eq!(Answer::parse(b"{not json"), Answer::default());
        let error = Answer::parse(br#"{"error":{"code":"overloaded","message":"shedding load"}}"#);
        assert_eq!(error.error_code.as_deref(), Some("overloaded"));
    }
}
