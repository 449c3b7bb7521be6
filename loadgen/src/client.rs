//! The HTTP/1.1 client: a pooled hyper client that opens a new connection
//! whenever no idle one is free, so it opens as many as the rate needs, and
//! the lenient reading of the search API's answers.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use serde_json::Value;

/// Bodies larger than this are cut off and counted as errors.
const MAX_BODY: usize = 4 << 20;

pub(crate) type HttpClient = Client<CountingConnector, Empty<Bytes>>;

/// Builds the client; `opened` counts the connections it opens.
pub(crate) fn build(max_idle: usize, opened: Arc<AtomicU64>, connect_timeout: Duration) -> HttpClient {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(max_idle)
        .pool_idle_timeout(Duration::from_secs(30))
        .build(CountingConnector {
            inner: http,
            opened,
        })
}

/// Wraps the HTTP connector to count successful connects.
#[derive(Clone)]
pub(crate) struct CountingConnector {
    inner: HttpConnector,
    opened: Arc<AtomicU64>,
}

type ConnectResult = Result<
    <HttpConnector as tower_service::Service<Uri>>::Response,
    <HttpConnector as tower_service::Service<Uri>>::Error,
>;

impl tower_service::Service<Uri> for CountingConnector {
    type Response = <HttpConnector as tower_service::Service<Uri>>::Response;
    type Error = <HttpConnector as tower_service::Service<Uri>>::Error;
    type Future = Pin<Box<dyn Future<Output = ConnectResult> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let opened = self.opened.clone();
        Box::pin(async move {
            let result = connecting.await;
            if result.is_ok() {
                opened.fetch_add(1, Ordering::Relaxed);
            }
            result
        })
    }
}

/// What became of one request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    /// An HTTP response, whatever its status.
    Response {
        status: u16,
        answer: Answer,
    },
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

/// Sends a GET and reads the whole body, within `timeout`.
pub(crate) async fn send(client: &HttpClient, uri: Uri, timeout: Duration) -> Outcome {
    let request = match Request::get(uri).body(Empty::<Bytes>::new()) {
        Ok(r) => r,
        Err(_) => return Outcome::Transport,
    };
    let exchange = async {
        let response = match client.request(request).await {
            Ok(r) => r,
            Err(e) if e.is_connect() => return Outcome::Connect,
            Err(_) => return Outcome::Transport,
        };
        let status = response.status().as_u16();
        match Limited::new(response.into_body(), MAX_BODY).collect().await {
            Ok(body) => Outcome::Response {
                status,
                answer: Answer::parse(&body.to_bytes()),
            },
            Err(_) => Outcome::Transport,
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or(Outcome::Timeout)
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
            cache: wire.cache.as_ref().and_then(Value::as_str).and_then(|c| match c {
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
        let answer = Answer::parse(br#"{"partial":"maybe","coverage":{"docs_total":200,"docs_searched":50}}"#);
        assert_eq!(answer.partial, None);
        assert_eq!(answer.coverage_percent, Some(25.0));
        assert_eq!(Answer::parse(b"ok"), Answer::default());
        assert_eq!(Answer::parse(b"{not json"), Answer::default());
        let error = Answer::parse(br#"{"error":{"code":"overloaded","message":"shedding load"}}"#);
        assert_eq!(error.error_code.as_deref(), Some("overloaded"));
    }
}
