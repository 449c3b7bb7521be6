//! The cluster token on every internal RPC: one server-side check, one
//! client-side credential.
//!
//! - [`TokenConfig`] is plain data: `--token` (the token this process
//!   sends), `--token-next` (also accepted, for a rotation) and
//!   `--token-file` (one token per line, re-read when it changes; its first
//!   token is sent when `--token` is absent).
//! - [`Tokens`] is the live set built from it, shared by a server's check
//!   and its clients, and reloaded from the file by a watcher.
//! - [`AuthLayer`] is a tower layer for a tonic server: every call but the
//!   standard health service must carry `authorization: Bearer <token>` with
//!   a token of the set (compared in constant time), else it is answered
//!   UNAUTHENTICATED before it reaches a service, counted in
//!   `<server>_rpc_unauthenticated_total{reason}` and logged with the peer
//!   address at most once a second per server.
//! - [`Credentials`] is the client side, a tonic interceptor that sends the
//!   current token on every call.
//!
//! A rotation without downtime: add the new token to every server (as
//! `--token-next`, or as a second line of the token file), move the clients
//! to it (`--token`, or make it the file's first line), then remove the old
//! one. Servers re-read a token file within [`RELOAD_INTERVAL`].
//!
//! With no token configured, the binaries refuse to start unless
//! `--insecure-no-auth` is given (see [`crate::args::SecurityArgs::tokens`]);
//! a library caller that builds no [`Tokens`] gets an open server, which is
//! what in-process tests want.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use prometheus::IntCounterVec;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::server::TcpConnectInfo;
use tonic::{Request, Status};

/// How often a token file (and a TLS certificate file) is checked for a
/// change.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// The header's scheme.
const BEARER: &str = "Bearer ";

/// The path prefix that stays open: load balancers and orchestrators probe
/// health without credentials.
const OPEN_PREFIX: &str = "/grpc.health.v1.Health/";

/// Which tokens a process sends and accepts, as configured.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenConfig {
    /// Sent on every call, and accepted.
    pub token: Option<String>,
    /// Also accepted (the next token of a rotation).
    pub next: Option<String>,
    /// One token per line (blank lines and `#` comments skipped), all
    /// accepted, the first sent when `token` is absent; re-read when the
    /// file changes.
    pub file: Option<PathBuf>,
}

impl TokenConfig {
    /// One token, sent and accepted.
    pub fn single(token: impl Into<String>) -> Self {
        TokenConfig {
            token: Some(token.into()),
            ..TokenConfig::default()
        }
    }

    /// True when no token is configured at all.
    pub fn is_empty(&self) -> bool {
        self.token.is_none() && self.next.is_none() && self.file.is_none()
    }

    /// The live token set, none when nothing is configured (an open
    /// server). A file that cannot be read is an error at startup; later
    /// failures keep the last set read and are logged.
    pub fn build(&self) -> Result<Option<Tokens>, AuthError> {
        if self.is_empty() {
            return Ok(None);
        }
        Tokens::new(self.clone()).map(Some)
    }
}

/// Why a token configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read token file {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("a cluster token must be visible ascii without spaces")]
    Invalid,
}

/// The tokens in force.
#[derive(Debug, Default)]
struct State {
    accepted: Vec<String>,
    /// The header a client sends.
    header: Option<AsciiMetadataValue>,
}

#[derive(Debug)]
struct Inner {
    config: TokenConfig,
    state: RwLock<Arc<State>>,
    /// The token file's modification time and length when last read.
    seen: RwLock<Option<(SystemTime, u64)>>,
}

/// The live token set (cheap to clone). With a token file, a watcher
/// re-reads it every [`RELOAD_INTERVAL`] while any clone is alive.
#[derive(Clone, Debug)]
pub struct Tokens {
    inner: Arc<Inner>,
}

impl Tokens {
    fn new(config: TokenConfig) -> Result<Tokens, AuthError> {
        let tokens = Tokens {
            inner: Arc::new(Inner {
                config,
                state: RwLock::new(Arc::default()),
                seen: RwLock::new(None),
            }),
        };
        tokens.reload()?;
        if tokens.inner.config.file.is_some() {
            // Untracked on purpose: it holds only a weak reference and ends
            // within one interval of the last handle being dropped.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(watch(Arc::downgrade(&tokens.inner)));
            } else {
                tracing::warn!("no tokio runtime, the token file is read once");
            }
        }
        Ok(tokens)
    }

    /// Re-reads the token file (when configured) and rebuilds the set.
    pub fn reload(&self) -> Result<(), AuthError> {
        let config = &self.inner.config;
        let mut accepted: Vec<String> = Vec::new();
        let mut from_file = Vec::new();
        if let Some(path) = &config.file {
            let read = |source| AuthError::File {
                path: path.clone(),
                source,
            };
            let meta = std::fs::metadata(path).map_err(read)?;
            let text = std::fs::read_to_string(path).map_err(read)?;
            from_file = parse_file(&text);
            *self.inner.seen.write().expect("token lock") = Some((
                meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                meta.len(),
            ));
        }
        for token in config
            .token
            .iter()
            .chain(config.next.iter())
            .chain(from_file.iter())
        {
            if !valid(token) {
                return Err(AuthError::Invalid);
            }
            if !accepted.contains(token) {
                accepted.push(token.clone());
            }
        }
        let sent = config.token.as_ref().or(from_file.first());
        let header = match sent {
            Some(token) => {
                let mut value = AsciiMetadataValue::try_from(format!("{BEARER}{token}"))
                    .map_err(|_| AuthError::Invalid)?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        *self.inner.state.write().expect("token lock") = Arc::new(State { accepted, header });
        Ok(())
    }

    /// The token this process sends, if any.
    pub fn current(&self) -> Option<String> {
        let state = self.state();
        let header = state.header.as_ref()?;
        Some(header.to_str().ok()?.trim_start_matches(BEARER).to_owned())
    }

    /// True when `presented` is one of the accepted tokens; the comparison
    /// takes time that depends only on the lengths.
    pub fn accepts(&self, presented: &str) -> bool {
        let state = self.state();
        // Every candidate is compared, so the time says nothing about which
        // one matched.
        state.accepted.iter().fold(false, |found, token| {
            constant_time_eq(presented, token) | found
        })
    }

    /// The client side: an interceptor that sends the current token.
    pub fn credentials(&self) -> Credentials {
        Credentials {
            tokens: Some(self.clone()),
        }
    }

    fn state(&self) -> Arc<State> {
        self.inner.state.read().expect("token lock").clone()
    }

    /// Re-reads the file when its time or length changed.
    fn reload_if_changed(&self) {
        let Some(path) = &self.inner.config.file else {
            return;
        };
        let now = std::fs::metadata(path).ok().map(|meta| {
            (
                meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                meta.len(),
            )
        });
        if now.is_none() || now == *self.inner.seen.read().expect("token lock") {
            return;
        }
        match self.reload() {
            Ok(()) => {
                tracing::info!(path = %path.display(), accepted = self.state().accepted.len(), "token file reloaded")
            }
            Err(error) => {
                tracing::warn!(%error, "token file not reloaded, keeping the previous tokens")
            }
        }
    }
}

async fn watch(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(RELOAD_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        Tokens { inner }.reload_if_changed();
    }
}

fn parse_file(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

fn valid(token: &str) -> bool {
    !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic())
}

/// Compares two secrets in time that depends only on their lengths.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The client's credential: a tonic interceptor that adds
/// `authorization: Bearer <token>` to every call (nothing without tokens).
/// Wrap a channel with `XClient::with_interceptor(channel, credentials)`.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    tokens: Option<Tokens>,
}

impl Credentials {
    /// Sends no token (an open cluster).
    pub fn none() -> Self {
        Credentials::default()
    }

    /// Credentials from an optional token set.
    pub fn from_tokens(tokens: Option<&Tokens>) -> Self {
        Credentials {
            tokens: tokens.cloned(),
        }
    }
}

impl tonic::service::Interceptor for Credentials {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(header) = self.tokens.as_ref().and_then(|t| t.state().header.clone()) {
            request.metadata_mut().insert("authorization", header);
        }
        Ok(request)
    }
}

/// A channel that sends the cluster token on every call.
pub type AuthChannel =
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Credentials>;

/// Why a call was refused, a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No `authorization: Bearer …` header.
    Missing,
    /// A token that is not in the set.
    Wrong,
}

impl Refusal {
    pub const ALL: [Refusal; 2] = [Refusal::Missing, Refusal::Wrong];

    pub fn label(self) -> &'static str {
        match self {
            Refusal::Missing => "missing",
            Refusal::Wrong => "wrong",
        }
    }
}

/// The server-side check, as a tower layer for `tonic::transport::Server::layer`.
#[derive(Clone)]
pub struct AuthLayer {
    check: Option<Arc<Check>>,
}

struct Check {
    server: &'static str,
    tokens: Tokens,
    refused: IntCounterVec,
    /// Milliseconds since `epoch` of the last refusal logged.
    last_log: AtomicU64,
    /// Refusals not logged since the last line.
    suppressed: AtomicU64,
    epoch: Instant,
}

impl AuthLayer {
    /// Checks every call against `tokens` (none: an open server, which
    /// passes everything), counting refusals in `registry` as
    /// `{server}_rpc_unauthenticated_total`.
    pub fn new(
        server: &'static str,
        tokens: Option<Tokens>,
        registry: &prometheus::Registry,
    ) -> Self {
        let refused = IntCounterVec::new(
            prometheus::Opts::new(
                format!("{server}_rpc_unauthenticated_total"),
                "Internal RPCs refused as UNAUTHENTICATED, by reason (missing or wrong token).",
            ),
            &["reason"],
        )
        .expect("valid metric");
        for refusal in Refusal::ALL {
            refused.with_label_values(&[refusal.label()]);
        }
        if let Err(error) = registry.register(Box::new(refused.clone())) {
            tracing::debug!(%error, "unauthenticated counter already registered");
        }
        AuthLayer {
            check: tokens.map(|tokens| {
                Arc::new(Check {
                    server,
                    tokens,
                    refused,
                    last_log: AtomicU64::new(0),
                    suppressed: AtomicU64::new(0),
                    epoch: Instant::now(),
                })
            }),
        }
    }

    /// A layer that checks nothing.
    pub fn open() -> Self {
        AuthLayer { check: None }
    }
}

impl Check {
    /// Ok when the headers carry an accepted token.
    fn verify(&self, headers: &http::HeaderMap) -> Result<(), Refusal> {
        let presented = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix(BEARER));
        match presented {
            None => Err(Refusal::Missing),
            Some(token) if self.tokens.accepts(token) => Ok(()),
            Some(_) => Err(Refusal::Wrong),
        }
    }

    fn refuse(&self, refusal: Refusal, path: &str, peer: Option<std::net::SocketAddr>) {
        self.refused.with_label_values(&[refusal.label()]).inc();
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX) + 1000;
        let last = self.last_log.load(Ordering::Relaxed);
        if now.saturating_sub(last) < 1000
            || self
                .last_log
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
        let peer = peer.map_or_else(|| "unknown".to_owned(), |addr| addr.to_string());
        // The path is bounded by what tonic routes; the token is never logged.
        tracing::warn!(
            server = self.server,
            %peer,
            rpc = %path.chars().take(96).collect::<String>(),
            reason = refusal.label(),
            suppressed,
            "rpc refused: missing or wrong cluster token"
        );
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Authenticated<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticated {
            inner,
            check: self.check.clone(),
        }
    }
}

/// The service of [`AuthLayer`].
#[derive(Clone)]
pub struct Authenticated<S> {
    inner: S,
    check: Option<Arc<Check>>,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for Authenticated<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if let Some(check) = &self.check {
            let path = request.uri().path();
            if !path.starts_with(OPEN_PREFIX) {
                if let Err(refusal) = check.verify(request.headers()) {
                    let peer = request
                        .extensions()
                        .get::<TcpConnectInfo>()
                        .and_then(TcpConnectInfo::remote_addr);
                    check.refuse(refusal, path, peer);
                    let status = Status::unauthenticated("missing or wrong cluster token");
                    return Box::pin(std::future::ready(Ok(status.into_http())));
                }
            }
        }
        Box::pin(self.inner.call(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares_whole_strings() {
        assert!(constant_time_eq("secret", "secret"));
        assert!(!constant_time_eq("secret", "secreT"));
        assert!(!constant_time_eq("secret", "secret2"));
        assert!(!constant_time_eq("", "x"));
    }

    #[test]
    fn the_set_accepts_current_next_and_file_tokens_and_sends_the_current() {
        let dir = tempdir();
        let file = dir.join("tokens");
        std::fs::write(&file, "# rotation\nfile-a\n\nfile-b\n").unwrap();
        let tokens = TokenConfig {
            token: None,
            next: Some("next".into()),
            file: Some(file.clone()),
        }
        .build()
        .unwrap()
        .unwrap();
        for token in ["next", "file-a", "file-b"] {
            assert!(tokens.accepts(token), "{token}");
        }
        assert!(!tokens.accepts("file-"));
        assert!(!tokens.accepts("# rotation"));
        assert_eq!(tokens.current().as_deref(), Some("file-a"));
        std::fs::write(&file, "file-b\n").unwrap();
        tokens.reload().unwrap();
        assert!(!tokens.accepts("file-a"), "a removed token is refused");
        assert_eq!(tokens.current().as_deref(), Some("file-b"));
        let single = TokenConfig::single("t").build().unwrap().unwrap();
        assert_eq!(single.current().as_deref(), Some("t"));
        assert!(TokenConfig::default().build().unwrap().is_none());
        assert!(TokenConfig::single("has space").build().is_err());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn refusals_are_counted_by_reason() {
        let registry = prometheus::Registry::new();
        let layer = AuthLayer::new(
            "unit",
            TokenConfig::single("right").build().unwrap(),
            &registry,
        );
        let check = layer.check.clone().unwrap();
        let mut headers = http::HeaderMap::new();
        assert_eq!(check.verify(&headers), Err(Refusal::Missing));
        headers.insert("authorization", "Bearer wrong".parse().unwrap());
        assert_eq!(check.verify(&headers), Err(Refusal::Wrong));
        headers.insert("authorization", "Bearer right".parse().unwrap());
        assert_eq!(check.verify(&headers), Ok(()));
        check.refuse(Refusal::Wrong, "/x/Y", None);
        check.refuse(Refusal::Wrong, "/x/Y", None);
        let text = crate::metrics::encode(&registry);
        assert!(
            text.contains("unit_rpc_unauthenticated_total{reason=\"wrong\"} 2"),
            "{text}"
        );
        assert!(text.contains("unit_rpc_unauthenticated_total{reason=\"missing\"} 0"));
    }

    fn tempdir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "svc-auth-{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
