//! Serving HTTP connections with limits: hyper's own connection builder
//! (`hyper_util`'s `auto::Builder` with a [`TokioTimer`], which
//! `axum::serve` does not set, so without it a client that sends half a
//! request head holds its connection forever), a header-read timeout, an
//! idle timeout, a header size limit and a cap on open connections.
//!
//! - **Header timeout:** a request head not complete within
//!   [`HttpLimits::header_timeout`] of the first read closes the
//!   connection (hyper's `header_read_timeout`).
//! - **Idle timeout:** a connection with no request in progress for
//!   [`HttpLimits::idle_timeout`] (a keep-alive connection between
//!   requests, or one that never sent a byte) is closed by a watchdog.
//! - **Connection cap:** at most [`HttpLimits::max_connections`] are open.
//!   When full, the new connection is kept and the oldest connection that
//!   has no request in progress (half-open, or idle between requests) is
//!   closed to make room (`frontend_http_connections_closed_total{reason="evicted"}`):
//!   an attacker's half-open connections then only push each other out,
//!   while a well-formed request, which is in progress as soon as its head
//!   is read, is not evicted. An evicted connection without a request in
//!   progress closes at once; while as many are still closing as the cap,
//!   accepting pauses for one to go (at most 100 ms; the rest
//!   wait in the kernel's backlog). When every open connection has a
//!   request in progress, the new one is answered `503` with
//!   `Retry-After: 1` and closed at once (`reason="full"`).
//! - **Accept errors** (`EMFILE`, `ENFILE`, `ENOBUFS`) back off for
//!   [`ACCEPT_BACKOFF`] instead of spinning, and are logged at most once
//!   per [`ACCEPT_LOG_EVERY`].
//!
//! - **TLS** (`--http-tls-cert`): the handshake runs in the connection's
//!   own task, after it has a slot, under the header timeout: a client
//!   that never finishes its handshake is one more connection without a
//!   request in progress (evictable, closed at the header timeout), under
//!   the same cap as plain ones.
//!
//! [`accept_loop`] is the one place where connections are accepted, plain
//! or TLS, on the public and the admin listener alike.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use parking_lot::Mutex;
use prometheus::{IntCounterVec, IntGauge, Registry};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// Pause after an accept error before accepting again.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// At most one log line per this long about accept errors.
pub const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(5);
/// How long a connection closed by the watchdog, eviction or a stop may
/// take to finish a response already being written.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The limits of the HTTP listeners.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpLimits {
    /// A request head must arrive within this time.
    pub header_timeout: Duration,
    /// A connection without a request in progress is closed after this.
    pub idle_timeout: Duration,
    /// Open connections at most (per listener).
    pub max_connections: usize,
    /// The largest request head (request line and headers), in bytes;
    /// larger heads are answered 431.
    pub max_header_bytes: usize,
    /// The largest request body (`POST /search`), in bytes.
    pub max_body_bytes: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
            max_header_bytes: 16 * 1024,
            max_body_bytes: 16 * 1024,
        }
    }
}

/// Why the server closed a connection; the `reason` label of
/// `frontend_http_connections_closed_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// No request in progress for the idle timeout.
    Idle,
    /// Closed to make room for a new connection.
    Evicted,
    /// Refused (503) because every connection had a request in progress.
    Full,
}

impl CloseReason {
    pub const ALL: &'static [CloseReason] =
        &[CloseReason::Idle, CloseReason::Evicted, CloseReason::Full];

    pub fn label(&self) -> &'static str {
        match self {
            CloseReason::Idle => "idle",
            CloseReason::Evicted => "evicted",
            CloseReason::Full => "full",
        }
    }
}

/// The connection metrics, labelled by listener (`public`, `admin`).
#[derive(Clone)]
pub struct HttpMetrics {
    pub open: prometheus::IntGaugeVec,
    pub closed: IntCounterVec,
    pub accept_errors: prometheus::IntCounter,
}

impl HttpMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<HttpMetrics> {
        let open = prometheus::IntGaugeVec::new(
            prometheus::opts!(
                "frontend_http_connections",
                "open HTTP connections, by listener"
            ),
            &["listener"],
        )?;
        let closed = IntCounterVec::new(
            prometheus::opts!(
                "frontend_http_connections_closed_total",
                "HTTP connections closed or refused by the server's limits, by listener and reason"
            ),
            &["listener", "reason"],
        )?;
        let accept_errors = prometheus::IntCounter::new(
            "frontend_http_accept_errors_total",
            "failed accepts on the HTTP listeners (descriptor exhaustion among them)",
        )?;
        registry.register(Box::new(open.clone()))?;
        registry.register(Box::new(closed.clone()))?;
        registry.register(Box::new(accept_errors.clone()))?;
        for listener in Listener::ALL {
            open.with_label_values(&[listener.label()]);
            for reason in CloseReason::ALL {
                closed.with_label_values(&[listener.label(), reason.label()]);
            }
        }
        Ok(HttpMetrics {
            open,
            closed,
            accept_errors,
        })
    }
}

/// Which surface a listener serves; the `listener` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    /// `/search`, the search page, `/healthz`, `/readyz`.
    Public,
    /// `/cluster`, `/status`, `/metrics`.
    Admin,
}

impl Listener {
    pub const ALL: &'static [Listener] = &[Listener::Public, Listener::Admin];

    pub fn label(&self) -> &'static str {
        match self {
            Listener::Public => "public",
            Listener::Admin => "admin",
        }
    }
}

/// What one listener serves: its router, which surface it is, and its TLS
/// acceptor if it speaks TLS.
#[derive(Clone)]
pub struct Endpoint {
    pub app: Router,
    pub listener: Listener,
    pub tls: Option<svc::tls::Acceptor>,
}

/// Accepts connections from `incoming` and serves `endpoint` on each, under
/// `limits`, until `stop` fires; then asks every open connection to close
/// after its request in progress. Every connection task is on `connections`,
/// which the caller closes and waits for to drain.
///
/// This is the one accept loop of the HTTP listeners: a TLS acceptor wraps
/// each accepted stream in the connection's task.
pub async fn accept_loop<S, I>(
    mut incoming: S,
    endpoint: Endpoint,
    limits: HttpLimits,
    metrics: HttpMetrics,
    stop: CancellationToken,
    connections: TaskTracker,
) where
    S: Stream<Item = std::io::Result<(I, SocketAddr)>> + Unpin,
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Endpoint { app, listener, tls } = endpoint;
    let open = Arc::new(OpenConnections::new(limits.max_connections));
    let mut last_error_log: Option<Instant> = None;
    let mut errors_since_log = 0u64;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(64);
    let builder = Arc::new(builder);
    let open_gauge = metrics.open.with_label_values(&[listener.label()]);
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            accepted = incoming.next() => accepted,
        };
        let (stream, peer) = match accepted {
            None => break,
            Some(Ok(accepted)) => accepted,
            Some(Err(error)) => {
                metrics.accept_errors.inc();
                errors_since_log += 1;
                let now = Instant::now();
                if last_error_log.is_none_or(|at| now.duration_since(at) >= ACCEPT_LOG_EVERY) {
                    tracing::warn!(%error, errors = errors_since_log, listener = listener.label(), "accept error, backing off");
                    last_error_log = Some(now);
                    errors_since_log = 0;
                }
                // Descriptor exhaustion clears only when connections close:
                // accepting again at once would spin.
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        let Some(slot) = admit_or_wait(&open, &stop).await else {
            connections.spawn(refuse(stream));
            metrics
                .closed
                .with_label_values(&[listener.label(), CloseReason::Full.label()])
                .inc();
            continue;
        };
        let connection = Connection {
            app: app.clone(),
            builder: Arc::clone(&builder),
            slot,
            open: Arc::clone(&open),
            idle_timeout: limits.idle_timeout,
            header_timeout: limits.header_timeout,
            tls: tls.clone(),
            stop: stop.clone(),
            peer,
            metrics: metrics.clone(),
            listener,
            open_gauge: open_gauge.clone(),
        };
        connections.spawn(connection.serve(stream));
    }
    tracing::debug!(listener = listener.label(), "stopped accepting");
}

/// How long accepting pauses for evicted connections to go before a
/// newcomer is refused: they still hold descriptors, and a short pause
/// (the rest wait in the kernel's backlog) beats answering 503 to a
/// client that may be about to send a good request.
const EVICTION_WAIT: Duration = Duration::from_millis(100);

/// A slot for a new connection: at once, after waiting up to
/// [`EVICTION_WAIT`] for evicted connections to close, or none when every
/// live connection has a request in progress (or the wait ran out).
async fn admit_or_wait(open: &OpenConnections, stop: &CancellationToken) -> Option<Arc<Slot>> {
    let deadline = Instant::now() + EVICTION_WAIT;
    loop {
        let freed = open.freed.notified();
        tokio::pin!(freed);
        // Registered before the check, so a close in between is not missed.
        freed.as_mut().enable();
        match open.admit() {
            Admit::Slot(slot) => return Some(slot),
            Admit::Busy => return None,
            Admit::Evicting => {}
        }
        tokio::select! {
            () = freed => {}
            () = tokio::time::sleep_until(deadline) => return None,
            () = stop.cancelled() => return None,
        }
    }
}

/// The connections of a [`svc::net::incoming`] stream with their peers.
pub fn with_peers<S, I>(incoming: S) -> impl Stream<Item = std::io::Result<(I, SocketAddr)>> + Unpin
where
    S: Stream<Item = std::io::Result<I>> + Unpin,
    I: tonic::transport::server::Connected<ConnectInfo = tonic::transport::server::TcpConnectInfo>,
{
    incoming.map(|accepted| {
        let stream = accepted?;
        let peer = stream
            .connect_info()
            .remote_addr()
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        Ok((stream, peer))
    })
}

/// The answer to a connection refused because every open connection has
/// a request in progress.
const FULL_BODY: &str = r#"{"error":{"code":"overloaded","message":"too many connections"}}"#;

/// Answers 503 on a connection refused for lack of room and closes it. The
/// write is bounded in time, so a refused client cannot hold the task.
async fn refuse<I: AsyncWrite + Unpin>(mut stream: I) {
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\ncontent-type: application/json\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{FULL_BODY}",
        FULL_BODY.len()
    );
    let write = async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_millis(100), write).await;
}

/// One accepted connection and what it needs to serve itself.
struct Connection {
    app: Router,
    builder: Arc<auto::Builder<TokioExecutor>>,
    slot: Arc<Slot>,
    open: Arc<OpenConnections>,
    idle_timeout: Duration,
    /// Also the bound on a TLS handshake.
    header_timeout: Duration,
    tls: Option<svc::tls::Acceptor>,
    stop: CancellationToken,
    peer: SocketAddr,
    metrics: HttpMetrics,
    listener: Listener,
    open_gauge: IntGauge,
}

impl Connection {
    async fn serve<I>(self, stream: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        self.open_gauge.inc();
        match self.tls.clone() {
            None => self.serve_http(stream).await,
            Some(acceptor) => {
                if let Some(stream) = self.handshake(&acceptor, stream).await {
                    self.serve_http(stream).await;
                }
            }
        }
        self.open.remove(&self.slot);
        self.open_gauge.dec();
    }

    /// The TLS handshake, given up at the header timeout, on eviction or
    /// on stop: until it is done the connection has no request in
    /// progress, like a client that sent half a head.
    async fn handshake<I>(
        &self,
        acceptor: &svc::tls::Acceptor,
        stream: I,
    ) -> Option<svc::tls::TlsStream<I>>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let handshake = tokio::time::timeout(self.header_timeout, acceptor.accept(stream));
        tokio::select! {
            result = handshake => match result {
                Ok(Ok(tls)) => Some(tls),
                Ok(Err(error)) => {
                    tracing::debug!(%error, peer = %self.peer, "tls handshake failed");
                    None
                }
                Err(_) => {
                    self.close(CloseReason::Idle);
                    None
                }
            },
            () = self.slot.evicted.cancelled() => {
                self.close(CloseReason::Evicted);
                None
            }
            () = self.stop.cancelled() => None,
        }
    }

    async fn serve_http<I>(&self, stream: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let slot = Arc::clone(&self.slot);
        let peer = self.peer;
        let app = self.app.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            let guard = slot.begin();
            let app = app.clone();
            async move {
                let response = app.oneshot(request.map(axum::body::Body::new)).await;
                drop(guard);
                response
            }
        });
        let connection = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service);
        tokio::pin!(connection);
        let mut closing: Option<Instant> = None;
        loop {
            // While a request is in progress the watchdog looks again one
            // idle timeout later; between requests, one after the last.
            let idle_deadline = if self.slot.busy.load(Ordering::Acquire) > 0 {
                Instant::now() + self.idle_timeout
            } else {
                self.slot.idle_since() + self.idle_timeout
            };
            let close_deadline = closing.map(|at| at + CLOSE_GRACE);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::trace!(%error, peer = %self.peer, "connection ended");
                    }
                    break;
                }
                () = self.slot.evicted.cancelled(), if closing.is_none() => {
                    self.close(CloseReason::Evicted);
                    // Nothing to finish: close now, so that its descriptor
                    // is free for the newcomer it was evicted for.
                    if self.slot.busy.load(Ordering::Acquire) == 0 {
                        break;
                    }
                    connection.as_mut().graceful_shutdown();
                    closing = Some(Instant::now());
                }
                () = self.stop.cancelled(), if closing.is_none() => {
                    connection.as_mut().graceful_shutdown();
                    closing = Some(Instant::now());
                }
                () = tokio::time::sleep_until(idle_deadline), if closing.is_none() => {
                    if self.slot.is_idle_for(self.idle_timeout) {
                        self.close(CloseReason::Idle);
                        connection.as_mut().graceful_shutdown();
                        closing = Some(Instant::now());
                    }
                }
                () = sleep_until_opt(close_deadline) => break,
            }
        }
    }

    fn close(&self, reason: CloseReason) {
        self.metrics
            .closed
            .with_label_values(&[self.listener.label(), reason.label()])
            .inc();
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// One open connection's state, shared by its task and the registry.
struct Slot {
    id: u64,
    /// Requests in progress on it.
    busy: std::sync::atomic::AtomicUsize,
    /// When the last request ended (or the connection opened), in
    /// milliseconds since `epoch`.
    idle_since_ms: AtomicU64,
    epoch: Instant,
    /// Fired to close it for a newcomer.
    evicted: CancellationToken,
    removed: AtomicBool,
}

impl Slot {
    fn begin(self: &Arc<Self>) -> BusyGuard {
        self.busy.fetch_add(1, Ordering::AcqRel);
        BusyGuard(Arc::clone(self))
    }

    fn idle_since(&self) -> Instant {
        self.epoch + Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire))
    }

    fn is_idle_for(&self, idle: Duration) -> bool {
        self.busy.load(Ordering::Acquire) == 0 && self.idle_since().elapsed() >= idle
    }
}

/// Marks a request in progress on its connection.
struct BusyGuard(Arc<Slot>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        let slot = &self.0;
        let now = slot.epoch.elapsed().as_millis() as u64;
        slot.idle_since_ms.store(now, Ordering::Release);
        slot.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The open connections of one listener, oldest first: what the cap
/// counts and where a newcomer finds a connection to evict.
struct OpenConnections {
    max: usize,
    state: Mutex<OpenState>,
    /// Signalled whenever a connection leaves.
    freed: tokio::sync::Notify,
}

/// What a new connection gets.
enum Admit {
    Slot(Arc<Slot>),
    /// Every live connection has a request in progress.
    Busy,
    /// As many connections are being evicted as the cap: wait for them.
    Evicting,
}

struct OpenState {
    /// Open connections, oldest first (evicted ones leave when their task
    /// ends).
    slots: VecDeque<Arc<Slot>>,
    /// Connections already asked to close for a newcomer, still open.
    evicting: usize,
    next_id: u64,
}

impl OpenConnections {
    fn new(max: usize) -> OpenConnections {
        OpenConnections {
            max: max.max(1),
            state: Mutex::new(OpenState {
                slots: VecDeque::new(),
                evicting: 0,
                next_id: 0,
            }),
            freed: tokio::sync::Notify::new(),
        }
    }

    /// A slot for a new connection, evicting the oldest connection without
    /// a request in progress when full; [`Admit::Busy`] when every
    /// connection is busy. Connections being evicted still count against
    /// the cap until they are gone, up to as many again
    /// ([`Admit::Evicting`] past that), so that the descriptors held stay
    /// bounded at twice the cap.
    fn admit(&self) -> Admit {
        let mut state = self.state.lock();
        let live = state.slots.len() - state.evicting;
        if live >= self.max {
            if state.evicting >= self.max {
                return Admit::Evicting;
            }
            let Some(victim) = state.slots.iter().find(|slot| {
                !slot.evicted.is_cancelled() && slot.busy.load(Ordering::Acquire) == 0
            }) else {
                return Admit::Busy;
            };
            victim.evicted.cancel();
            state.evicting += 1;
        }
        let id = state.next_id;
        state.next_id += 1;
        let slot = Arc::new(Slot {
            id,
            busy: Default::default(),
            idle_since_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            evicted: CancellationToken::new(),
            removed: AtomicBool::new(false),
        });
        state.slots.push_back(Arc::clone(&slot));
        Admit::Slot(slot)
    }

    fn remove(&self, slot: &Slot) {
        if slot.removed.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut state = self.state.lock();
        if let Some(index) = state.slots.iter().position(|s| s.id == slot.id) {
            state.slots.remove(index);
            if slot.evicted.is_cancelled() {
                state.evicting = state.evicting.saturating_sub(1);
            }
        }
        drop(state);
        self.freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_preregistered_and_named_by_convention() {
        let registry = Registry::new();
        HttpMetrics::new(&registry).unwrap();
        let text = svc::metrics::encode(&registry);
        assert!(text.contains(
            "frontend_http_connections_closed_total{listener=\"public\",reason=\"evicted\"} 0"
        ));
        assert!(text.contains("frontend_http_connections{listener=\"admin\"} 0"));
    }

    impl Admit {
        fn slot(self) -> Arc<Slot> {
            match self {
                Admit::Slot(slot) => slot,
                Admit::Busy => panic!("busy"),
                Admit::Evicting => panic!("evicting"),
            }
        }
    }

    #[test]
    fn a_full_table_evicts_the_oldest_idle_connection_and_refuses_when_all_are_busy() {
        let open = OpenConnections::new(2);
        let first = open.admit().slot();
        let second = open.admit().slot();
        let _busy = second.begin();
        let third = open.admit().slot();
        assert!(first.evicted.is_cancelled(), "the oldest idle one goes");
        assert!(!second.evicted.is_cancelled(), "a busy one stays");
        let _busy_third = third.begin();
        assert!(
            matches!(open.admit(), Admit::Busy),
            "every live connection is busy"
        );
        open.remove(&first);
        open.remove(&first);
        assert_eq!(open.state.lock().slots.len(), 2);
        assert_eq!(open.state.lock().evicting, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_newcomer_waits_for_evicted_connections_to_go_instead_of_being_refused() {
        let open = Arc::new(OpenConnections::new(1));
        let stop = CancellationToken::new();
        let _a = open.admit().slot();
        let b = open.admit().slot();
        // One evicted connection still open: at twice the cap, so the next
        // newcomer must wait (descriptors stay bounded)…
        assert!(matches!(open.admit(), Admit::Evicting));
        let waiting = tokio::spawn({
            let (open, stop) = (Arc::clone(&open), stop.clone());
            async move { admit_or_wait(&open, &stop).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "it waits rather than being refused");
        // …and gets a slot as soon as the evicted one closes.
        let _ = b;
        let evicted = open.state.lock().slots.front().cloned().unwrap();
        open.remove(&evicted);
        assert!(waiting.await.unwrap().is_some(), "admitted once one left");
        // When nothing leaves it is refused after the wait.
        let later = admit_or_wait(&open, &stop).await;
        assert!(later.is_none(), "refused once the wait ran out");
    }
}
