//! The cache server: complete search answers held by key in moka, bounded
//! in bytes and by a time to live, served over gRPC.
//!
//! - [`start`] (in `server.rs`) takes bound listeners and a
//!   [`CacheConfig`], and runs on `svc`'s lifecycle: the gRPC server
//!   (`Cache` Get/Put and standard health), the optional HTTP endpoint
//!   (`/metrics`, `/healthz`, `/readyz`, see `svc::metrics`), a housekeeping
//!   task that runs moka's pending maintenance every second, and, when
//!   frontends are configured, a lease holder (role cache). It returns a
//!   [`CacheHandle`] to stop the server gracefully or kill it.
//! - `store.rs` holds the moka cache and its limits (key ≤ 4 KiB, value ≤
//!   an eighth of the capacity and ≤ 4 MiB); `service.rs` is the tonic
//!   service over it; `metrics.rs` has every metric; `error.rs` maps errors
//!   to gRPC codes in one place.
//! - [`config`] holds [`CacheConfig`] and parses the command line of the
//!   `cache` binary.
//!
//! Modules depend one way: `server` → `service` → `store` → (`metrics`,
//! `error`); `config` knows only `svc` and `lease`.
//!
//! Shutdown, in `svc`'s one order: health says NOT_SERVING, leases are
//! revoked (so the frontends stop routing here at once), in-flight calls
//! drain under a time limit, then the housekeeping task and the metrics
//! endpoint stop. A kill skips all of that, as a crash would: connections
//! are cut and the leases expire on their own.
//!
//! **Invariant:** the cache server never interprets values; it stores and
//! returns bytes.

pub mod config;
mod error;
mod metrics;
mod server;
mod service;
mod store;

pub use config::CacheConfig;
pub use error::{Error, Result};
pub use lease::LeaseConfig;
pub use server::{run, start, CacheHandle, CacheStats};
pub use service::CacheService;
pub use store::{max_value_bytes, MAX_KEY_BYTES, MAX_VALUE_BYTES};
