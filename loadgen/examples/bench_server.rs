//! A trivial HTTP endpoint for benchmarking load generators: every request
//! gets `200 ok` at once, except during an optional stall, when every
//! response waits until the stall ends.
//!
//! ```text
//! cargo run --release -p loadgen --example bench_server -- --addr 127.0.0.1:8099
//! cargo run --release -p loadgen --example bench_server -- --addr 127.0.0.1:8099 \
//!     --stall-at 5s --stall-for 1s
//! ```
//!
//! The stall is timed from the first request, so each tool sees it at the
//! same point of its run; restart the server between runs.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:8099")]
    addr: SocketAddr,
    /// When the stall starts, counted from the first request.
    #[arg(long, value_parser = humantime::parse_duration)]
    stall_at: Option<Duration>,
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    stall_for: Duration,
}

struct State {
    stall: Option<(Duration, Duration)>,
    first: OnceLock<Instant>,
}

async fn handle(
    state: Arc<State>,
    _req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if let Some((at, length)) = state.stall {
        let now = Instant::now();
        let first = *state.first.get_or_init(|| now);
        let (from, to) = (first + at, first + at + length);
        if now >= from && now < to {
            tokio::time::sleep_until(to).await;
        }
    }
    Ok(Response::new(Full::new(Bytes::from_static(b"ok\n"))))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !args.addr.ip().is_loopback() {
        anyhow::bail!("bench_server listens on loopback only");
    }
    let state = Arc::new(State {
        stall: args.stall_at.map(|at| (at, args.stall_for)),
        first: OnceLock::new(),
    });
    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    eprintln!("bench_server listening on {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(state.clone(), req));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
