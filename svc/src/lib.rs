//! Plumbing that every server binary shares, so that each one shuts down,
//! logs and exports metrics the same way.
//!
//! - [`shutdown`]: one future for SIGINT/SIGTERM, turned into a
//!   [`CancellationToken`] that every task of a server watches.
//! - [`telemetry`]: `tracing` with `RUST_LOG` (`EnvFilter`), text or JSON.
//! - [`metrics`]: Prometheus text encoding and a small HTTP server for
//!   `/metrics`, `/healthz` and `/readyz`.

pub mod metrics;
pub mod shutdown;
pub mod telemetry;

pub use tokio_util::sync::CancellationToken;
