//! A small cluster (frontend and leaves, no caches) in its own process,
//! for tests that need a real process boundary: a lowered descriptor limit
//! (`prlimit --nofile=…`) applies to this server alone, not to the test
//! that attacks it.
//!
//! Prints `http=ADDR admin=ADDR` on one line once it serves, then runs
//! until its standard input closes (the test dropped it) or it is killed.
//! `EDGE_HEADER_TIMEOUT_MS` sets the frontend's header-read timeout.

use std::time::Duration;

use tokio::io::AsyncReadExt;

#[tokio::main]
async fn main() {
    let header_timeout = std::env::var("EDGE_HEADER_TIMEOUT_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map_or(Duration::from_secs(1), Duration::from_millis);
    let cluster = tests::TestCluster::builder()
        .shards(2)
        .frontend(move |config| config.http.header_timeout = header_timeout)
        .build()
        .await;
    println!(
        "http={} admin={}",
        cluster.http_addr(),
        cluster.admin_addr()
    );
    let mut stdin = tokio::io::stdin();
    let mut buffer = [0u8; 64];
    while matches!(stdin.read(&mut buffer).await, Ok(n) if n > 0) {}
    drop(cluster);
}
