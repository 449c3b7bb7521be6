//! Prometheus text exposition and the small HTTP endpoint that leaf and
//! cache servers run beside their gRPC port.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Encodes every metric of `registry` in the Prometheus text format.
pub fn encode(registry: &Registry) -> String {
    let mut buffer = Vec::new();
    if let Err(error) = TextEncoder::new().encode(&registry.gather(), &mut buffer) {
        tracing::error!(%error, "cannot encode metrics");
    }
    String::from_utf8(buffer).unwrap_or_default()
}

/// An axum handler body for `/metrics`.
pub fn response(registry: &Registry) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        encode(registry),
    )
}

/// Readiness that a server flips once it can serve (index built, lease held).
#[derive(Clone, Default)]
pub struct Ready(Arc<AtomicBool>);

impl Ready {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }

    pub fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

#[derive(Clone)]
struct EndpointState {
    registry: Registry,
    ready: Ready,
}

/// The router of `/metrics`, `/healthz` (alive) and `/readyz` (ready).
pub fn router(registry: Registry, ready: Ready) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready_handler))
        .with_state(EndpointState { registry, ready })
}

async fn metrics_handler(State(state): State<EndpointState>) -> impl IntoResponse {
    response(&state.registry)
}

async fn ready_handler(State(state): State<EndpointState>) -> impl IntoResponse {
    if state.ready.get() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

/// Serves [`router`] on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    registry: Registry,
    ready: Ready,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(url = %format!("http://{addr}/metrics"), "serving metrics");
    }
    axum::serve(listener, router(registry, ready))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
