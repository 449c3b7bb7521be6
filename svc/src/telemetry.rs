//! Structured logs with `tracing`; the level comes from `RUST_LOG`.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `json` switches to one JSON object per
/// line for log shippers. Calling it twice is harmless (the second call is
/// ignored), which matters for in-process demos and tests.
pub fn init(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
