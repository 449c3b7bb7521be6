//! Plumbing that every server binary shares, so that each one starts,
//! shuts down, logs, exports metrics and exits the same way.
//!
//! - [`server`]: the lifecycle: a [`Lifecycle`] collects a server's parts
//!   (metrics endpoint, health, killable connections, lease holders,
//!   tracked background tasks) and [`Lifecycle::serve`] supervises the one
//!   shutdown order (NOT_SERVING → revoke leases → drain → stop); the
//!   [`ServerHandle`] stops, waits for or kills the server.
//! - [`net`]: binding listeners with a one-line startup error, and
//!   connections that a kill cuts at once (for tests that crash a server).
//! - [`shutdown`]: one future for SIGINT/SIGTERM, turned into a
//!   [`CancellationToken`] that every task of a server watches.
//! - [`args`]: the shared flags ([`ServerArgs`], [`HolderArgs`]) and the
//!   environment rule (`--foo-bar` of binary `X` reads `X_FOO_BAR`).
//! - [`channel`]: the one builder of internal gRPC channels (connect
//!   timeout, HTTP/2 keep-alive pings with a timeout, TCP keep-alive).
//! - [`exit`]: the exit-code convention and [`main_exit`].
//! - [`telemetry`]: `tracing` with `RUST_LOG` (`EnvFilter`), text or JSON.
//! - [`auth`]: the cluster token on every internal RPC: the server-side
//!   check ([`auth::AuthLayer`]), the client's [`auth::Credentials`], the
//!   token set with rotation ([`auth::Tokens`]).
//! - [`tls`]: TLS, optionally mutual, for gRPC servers and clients and the
//!   HTTP API, reloaded when the certificate files change.
//! - [`security`]: the two together as one server's live [`Security`].
//! - [`metrics`]: Prometheus text encoding and a small HTTP server for
//!   `/metrics`, `/healthz` and `/readyz`.
//!
//! Dependencies point one way: `svc` knows `lease` (to hold leases), and
//! `leaf`, `cache` and `frontend` know `svc`; `lease` knows neither.

pub mod args;
pub mod auth;
pub mod channel;
pub mod exit;
pub mod metrics;
pub mod net;
pub mod security;
pub mod server;
pub mod shutdown;
pub mod telemetry;
pub mod tls;

pub use args::{HolderArgs, ServerArgs};
pub use exit::{main_exit, Failure};
pub use security::{Security, SecurityError};
pub use server::{Lifecycle, ServeError, ServerHandle};
pub use tokio_util::sync::CancellationToken;
pub use tokio_util::task::TaskTracker;
