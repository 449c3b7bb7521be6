//! The floor of a call (issue 17): what one gRPC call that does (almost) no
//! work costs on this machine, on both ends, with the project's own server
//! stack (a release `leaf` process) and its own client (frontend-core's
//! `GrpcLeaf` over `svc::channel`'s channel, the one the frontend's
//! topology builds, with the cluster token), and what one HTTP request
//! costs the frontend process when it calls no leaf.
//!
//! Build the binaries first: `cargo build --release -p leaf -p frontend`
//! (a separate command from the example's).
//!
//! ```text
//! cargo run --release -p tests --example bench_floor -- [--seconds 15] [--warmup 3]
//!     [--corpus FILE] [--only grpc|http]
//! ```
//!
//! 4 leaves (4 shards × 1 replica of the corpus) start as processes. Each
//! gRPC row runs a fresh client process (this example re-executed with
//! `--client`, its own tokio runtime with the default workers, as the
//! frontend's), so that its CPU is measured alone: it connects, warms up
//! for `--warmup` s, prints `MEASURE`, sends for `--seconds` s on a fixed
//! schedule (open loop: each tick spawns a task; latency from the tick's
//! scheduled time), waits for every call, prints `DONE` and its figures,
//! and waits for its stdin to close. The parent reads the client's and the
//! leaves' `/proc/<pid>/stat` (utime + stime) and context switches at
//! `MEASURE` and at `DONE`.
//!
//! - shape `1 leaf`: 1,200 calls/s to leaf 0, one call per task;
//! - shape `4 leaves, 4 calls per tick`: 300 ticks/s, each a task calling
//!   all 4 leaves at once (`join_all`, as a fan-out does): 1,200 calls/s in
//!   all, 300 on each connection;
//! - shape `4 leaves, 1 call per tick` (`Info` only): 1,200 ticks/s, each
//!   one call to the next leaf in turn, so that the saving of issuing a
//!   fan-out's calls together is told from that of using 4 connections.
//!
//! RPCs: `Info` (the cheapest), `Search` of a term absent from the index
//! (`miss`), `Search` of a common term (`search`, k = 10, shard-local
//! statistics, no score floor). The same shapes then run as a bare TCP
//! echo (`--echo-server` processes, this example again; 64 bytes each way,
//! tokio on both ends, `TCP_NODELAY`, one call at a time per connection):
//! the floor of the loopback transport and the runtime without HTTP/2,
//! gRPC and protobuf.
//!
//! Then the frontend process (`frontend serve --leaf …`, no cache,
//! admission on) at 300 req/s from `bench::open_loop` in this process:
//! `/healthz`, `/search?q=+` (an empty query, answered 400 without a leaf
//! call), and `/search?q=react&nocache=true` (a whole query, for
//! reference), after one idle window that shows the processes' background
//! CPU.

use std::sync::Arc;
use std::time::Duration;

use frontend_core::cluster::leaf_client::{CallError, Connect, GrpcLeaf, LeafService};
use proto::leaf::SearchRequest;
use tests::bench::{self, free_port, LeafProcesses, ProcCounters};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::time::Instant;

/// A term no document of the npm corpus has.
const ABSENT: &str = "zqxvjkwpfloor";
/// A common one.
const COMMON: &str = "react";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rpc {
    Info,
    Miss,
    Search,
    /// Not gRPC: 64 bytes each way over a bare loopback TCP connection
    /// (tokio both ends), the transport's own floor.
    Echo,
}

/// Bytes each way of an echo call.
const ECHO: usize = 64;

impl Rpc {
    fn parse(name: &str) -> Rpc {
        match name {
            "info" => Rpc::Info,
            "miss" => Rpc::Miss,
            "search" => Rpc::Search,
            "echo" => Rpc::Echo,
            other => panic!("unknown rpc {other}"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Rpc::Info => "info",
            Rpc::Miss => "miss",
            Rpc::Search => "search",
            Rpc::Echo => "echo",
        }
    }

    fn label(self) -> String {
        match self {
            Rpc::Info => "`Info`".into(),
            Rpc::Miss => format!("`Search` \"{ABSENT}\" (no match)"),
            Rpc::Search => format!("`Search` \"{COMMON}\" (k = 10)"),
            Rpc::Echo => format!("raw TCP echo, {ECHO} B each way (not gRPC)"),
        }
    }
}

const BUDGET: Duration = Duration::from_secs(1);

/// Where a client process sends its calls.
enum Target {
    Grpc(GrpcLeaf),
    /// One connection; a call holds it from its write to its read.
    Tcp(tokio::sync::Mutex<tokio::net::TcpStream>),
}

/// One call; `Ok(service_us)` (0 for `Info` and echo) or the error.
async fn call(target: &Target, rpc: Rpc) -> Result<u64, CallError> {
    let leaf = match target {
        Target::Grpc(leaf) => leaf,
        Target::Tcp(stream) => {
            use tokio::io::AsyncWriteExt;
            let mut stream = stream.lock().await;
            let mut buffer = [7u8; ECHO];
            let io = |e: std::io::Error| CallError::Unreachable(e.to_string());
            stream.write_all(&buffer).await.map_err(io)?;
            stream.read_exact(&mut buffer).await.map_err(io)?;
            return Ok(0);
        }
    };
    let search = |query: &str| SearchRequest {
        query: query.to_string(),
        k: 10,
        stats: None,
        score_floor: None,
        shard: None,
    };
    match rpc {
        Rpc::Info | Rpc::Echo => leaf.info(BUDGET).await.map(|_| 0),
        Rpc::Miss => leaf
            .search(search(ABSENT), BUDGET)
            .await
            .map(|r| r.service_us),
        Rpc::Search => leaf
            .search(search(COMMON), BUDGET)
            .await
            .map(|r| r.service_us),
    }
}

/// `(latency from the scheduled tick, service_us or None on error)`.
type Outcome = (Duration, Option<u64>);

/// `rate` ticks a second for `seconds`, each tick a task calling every
/// leaf at once (with `spread`, only the next leaf in turn); waits for
/// every call.
async fn fixed_rate(
    leaves: &Arc<Vec<Target>>,
    rpc: Rpc,
    rate: f64,
    seconds: f64,
    spread: bool,
) -> Vec<Outcome> {
    let count = (rate * seconds).round() as u64;
    let start = Instant::now() + Duration::from_millis(20);
    let mut tasks = Vec::with_capacity(count as usize);
    for n in 0..count {
        let at = start + Duration::from_secs_f64(n as f64 / rate);
        tokio::time::sleep_until(at).await;
        let leaves = Arc::clone(leaves);
        let turn = (n % leaves.len() as u64) as usize;
        tasks.push(tokio::spawn(async move {
            let chosen = leaves
                .iter()
                .enumerate()
                .filter(|(i, _)| !spread || *i == turn)
                .map(|(_, leaf)| leaf);
            futures::future::join_all(chosen.map(|leaf| async move {
                let result = call(leaf, rpc).await;
                (at.elapsed(), result.ok())
            }))
            .await
        }));
    }
    let mut outcomes = Vec::with_capacity(tasks.len() * leaves.len());
    for task in tasks {
        outcomes.extend(task.await.expect("call task"));
    }
    outcomes
}

/// The client process: `--client ADDR,ADDR --rpc NAME --rate TICKS`.
async fn client_main() {
    let addresses: Vec<String> = bench::arg("--client", "")
        .split(',')
        .map(str::to_string)
        .collect();
    let rpc = Rpc::parse(&bench::arg("--rpc", "info"));
    let rate: f64 = bench::arg_num("--rate", 1200.0);
    let warmup: f64 = bench::arg_num("--warmup", 3.0);
    let seconds: f64 = bench::arg_num("--seconds", 15.0);
    // The frontend's way: `Connect` with the cluster token, one lazily
    // connected channel per leaf (`lazy_channel`, `ChannelOptions::default`).
    let tokens = svc::auth::TokenConfig::single(tests::TOKEN)
        .build()
        .expect("token");
    let connect = Connect {
        credentials: svc::auth::Credentials::from_tokens(tokens.as_ref()),
        tls: None,
    };
    let mut leaves = Vec::new();
    for address in &addresses {
        if rpc == Rpc::Echo {
            let stream = tokio::net::TcpStream::connect(address)
                .await
                .expect("echo server");
            stream.set_nodelay(true).expect("nodelay");
            leaves.push(Target::Tcp(tokio::sync::Mutex::new(stream)));
            continue;
        }
        let leaf = GrpcLeaf::with_connect(address, &connect).expect("client");
        let started = Instant::now();
        while let Err(error) = leaf.info(BUDGET).await {
            assert!(started.elapsed() < Duration::from_secs(30), "{error}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        leaves.push(Target::Grpc(leaf));
    }
    let leaves = Arc::new(leaves);
    let spread = std::env::args().any(|a| a == "--spread");
    fixed_rate(&leaves, rpc, rate, warmup, spread).await;
    println!("MEASURE");
    let outcomes = fixed_rate(&leaves, rpc, rate, seconds, spread).await;
    let ms: Vec<f64> = outcomes.iter().map(|o| o.0.as_secs_f64() * 1e3).collect();
    let served: Vec<u64> = outcomes.iter().filter_map(|o| o.1).collect();
    let errors = outcomes.len() - served.len();
    let service = served.iter().sum::<u64>() as f64 / served.len().max(1) as f64;
    println!(
        "DONE {} {errors} {} {} {service}",
        outcomes.len(),
        bench::percentile(&ms, 50.0),
        bench::percentile(&ms, 99.0),
    );
    // Stay alive (threads and counters intact) until the parent has read
    // this process's counters and closes stdin.
    let mut rest = Vec::new();
    let _ = tokio::io::stdin().read_to_end(&mut rest).await;
}

/// One measured row.
struct Row {
    shape: String,
    rate: String,
    rpc: String,
    calls: f64,
    client: ProcCounters,
    /// Each server process measured.
    servers: Vec<ProcCounters>,
    /// Calls (or requests) each server process took.
    server_calls: Vec<f64>,
    p50: f64,
    p99: f64,
    errors: String,
    note: String,
}

fn header() {
    println!(
        "| shape | calls/s | RPC | client ms CPU/call (user + sys) | server ms CPU/call (user + sys) | client + server ms/call | ctx sw/call client | ctx sw/call server | per server ms/call | p50 ms | p99 ms | errors | note |"
    );
    println!("|---|---:|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---|");
}

fn print_row(row: &Row) {
    let n = row.calls.max(1.0);
    let server = row
        .servers
        .iter()
        .fold(ProcCounters::default(), |sum, c| ProcCounters {
            user_ms: sum.user_ms + c.user_ms,
            sys_ms: sum.sys_ms + c.sys_ms,
            ctx: sum.ctx + c.ctx,
        });
    let each: Vec<String> = row
        .servers
        .iter()
        .zip(&row.server_calls)
        .map(|(c, calls)| format!("{:.3}", c.cpu_ms() / calls.max(1.0)))
        .collect();
    println!(
        "| {} | {} | {} | {:.3} ({:.3} + {:.3}) | {:.3} ({:.3} + {:.3}) | {:.3} | {:.2} | {:.2} | {} | {} | {} | {} | {} |",
        row.shape,
        row.rate,
        row.rpc,
        row.client.cpu_ms() / n,
        row.client.user_ms / n,
        row.client.sys_ms / n,
        server.cpu_ms() / n,
        server.user_ms / n,
        server.sys_ms / n,
        (row.client.cpu_ms() + server.cpu_ms()) / n,
        row.client.ctx as f64 / n,
        server.ctx as f64 / n,
        each.join(" / "),
        bench::ms(row.p50),
        bench::ms(row.p99),
        row.errors,
        row.note,
    );
}

/// Runs one client process against `targets` and measures it and `servers`.
async fn grpc_row(
    targets: &[String],
    servers: &[u32],
    rpc: Rpc,
    ticks: f64,
    spread: bool,
    warmup: f64,
    seconds: f64,
) -> Row {
    let exe = std::env::current_exe().expect("current exe");
    let mut child = tokio::process::Command::new(exe)
        .args(["--client", &targets.join(",")])
        .args(spread.then_some("--spread"))
        .args(["--rpc", rpc.name(), "--rate", &ticks.to_string()])
        .args(["--warmup", &warmup.to_string()])
        .args(["--seconds", &seconds.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .env("RUST_LOG", "warn")
        .env_remove("TOKIO_WORKER_THREADS")
        .kill_on_drop(true)
        .spawn()
        .expect("client starts");
    let pid = child.id().expect("client pid");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let sample = || {
        let mut all = vec![bench::proc_counters(pid)];
        all.extend(servers.iter().map(|&p| bench::proc_counters(p)));
        all
    };
    let mut before = Vec::new();
    let mut done = String::new();
    while let Some(line) = lines.next_line().await.expect("client output") {
        if line == "MEASURE" {
            before = sample();
        } else if line.starts_with("DONE") {
            done = line;
            break;
        }
    }
    let after = sample();
    drop(child.stdin.take());
    let _ = child.wait().await;
    assert!(!before.is_empty() && !done.is_empty(), "client failed");
    let f: Vec<f64> = done
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(f64::NAN))
        .collect();
    let deltas: Vec<ProcCounters> = after.iter().zip(&before).map(|(a, b)| a.since(b)).collect();
    let calls = f[0];
    let per_server = calls / servers.len() as f64;
    Row {
        shape: match (targets.len(), spread) {
            (1, _) => "1 leaf".into(),
            (n, false) => format!("{n} leaves, {n} calls per tick"),
            (n, true) => format!("{n} leaves, 1 call per tick"),
        },
        rate: format!(
            "{:.0}",
            if spread {
                ticks
            } else {
                ticks * targets.len() as f64
            }
        ),
        rpc: rpc.label(),
        calls,
        client: deltas[0],
        servers: deltas[1..].to_vec(),
        server_calls: vec![per_server; servers.len()],
        p50: f[2],
        p99: f[3],
        errors: format!("{:.0}", f[1]),
        note: match rpc {
            Rpc::Info | Rpc::Echo => String::new(),
            _ => format!("leaf service time {:.0} µs", f[4]),
        },
    }
}

/// The `frontend` binary as a child process over `leaves`.
struct FrontendProcess {
    child: std::process::Child,
    http: String,
}

impl FrontendProcess {
    async fn start(leaves: &[String]) -> FrontendProcess {
        let exe = std::env::current_exe().expect("current exe");
        let binary = exe
            .parent()
            .and_then(std::path::Path::parent)
            .map(|dir| dir.join("frontend"))
            .expect("target dir");
        assert!(
            binary.exists(),
            "{} is missing: cargo build --release -p frontend",
            binary.display()
        );
        let http = format!("127.0.0.1:{}", free_port());
        let child = std::process::Command::new(&binary)
            .args(["serve", "--http", &http, "--shards", "4"])
            .args(["--grpc", &format!("127.0.0.1:{}", free_port())])
            .args(["--admin-http", &format!("127.0.0.1:{}", free_port())])
            .args(["--leaf", &leaves.join(",")])
            .args(["--cache", "false", "--admission", "true"])
            .env("SEARCH_CLUSTER_TOKEN", tests::TOKEN)
            .env("RUST_LOG", "warn")
            .env_remove("TOKIO_WORKER_THREADS")
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("frontend starts");
        let frontend = FrontendProcess { child, http };
        let client = reqwest::Client::new();
        let started = std::time::Instant::now();
        loop {
            let answer = client
                .get(format!(
                    "http://{}/search?q={COMMON}&nocache=true",
                    frontend.http
                ))
                .send()
                .await;
            if let Ok(answer) = answer {
                let body: serde_json::Value = answer.json().await.unwrap_or_default();
                if body["partial"] == false {
                    return frontend;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "frontend never answered from every shard"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for FrontendProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The HTTP edge at `rate` req/s: `path` with `q`, measured on the
/// frontend (and on the leaves when `with_leaves`).
#[allow(clippy::too_many_arguments)]
async fn http_row(
    frontend: &FrontendProcess,
    leaves: &[u32],
    label: &str,
    path: &str,
    q: &str,
    params: &[(&str, &str)],
    rate: f64,
    warmup: f64,
    seconds: f64,
) -> Row {
    let client = bench::client();
    let mut load = bench::Load::new(
        format!("http://{}{path}", frontend.http),
        Arc::new(vec![q.to_string()]),
        bench::Pick::Replay(0),
    );
    for (k, v) in params {
        load = load.param(k, v);
    }
    let warmup = Duration::from_secs_f64(warmup);
    bench::open_loop(&client, &load, rate, warmup, 0).await;
    let pids: Vec<u32> = std::iter::once(std::process::id())
        .chain(std::iter::once(frontend.child.id()))
        .chain(leaves.iter().copied())
        .collect();
    let before: Vec<ProcCounters> = pids.iter().map(|&p| bench::proc_counters(p)).collect();
    let samples = bench::open_loop(&client, &load, rate, Duration::from_secs_f64(seconds), 0).await;
    let after: Vec<ProcCounters> = pids.iter().map(|&p| bench::proc_counters(p)).collect();
    let deltas: Vec<ProcCounters> = after.iter().zip(&before).map(|(a, b)| a.since(b)).collect();
    let mut statuses: std::collections::BTreeMap<u16, usize> = Default::default();
    for s in &samples {
        *statuses.entry(s.status).or_default() += 1;
    }
    let ms: Vec<f64> = samples.iter().map(bench::Sample::ms).collect();
    let n = samples.len() as f64;
    let leaves_ms: f64 = deltas[2..].iter().map(ProcCounters::cpu_ms).sum();
    Row {
        shape: "frontend".into(),
        rate: format!("{rate:.0}"),
        rpc: label.into(),
        calls: n,
        client: deltas[0],
        servers: deltas[1..2].to_vec(),
        server_calls: vec![n],
        p50: bench::percentile(&ms, 50.0),
        p99: bench::percentile(&ms, 99.0),
        errors: statuses
            .iter()
            .map(|(s, c)| format!("{c}×{s}"))
            .collect::<Vec<_>>()
            .join(" "),
        note: format!(
            "client = reqwest load generator; leaves {:.3} ms/req ({:.2} ctx sw/req)",
            leaves_ms / n,
            deltas[2..].iter().map(|c| c.ctx).sum::<u64>() as f64 / n
        ),
    }
}

/// The echo server process: prints `ADDR host:port`, then answers every
/// `ECHO` bytes read with them, on every connection, until killed.
async fn echo_server_main() {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    println!("ADDR {}", listener.local_addr().expect("addr"));
    loop {
        let (mut stream, _) = listener.accept().await.expect("accept");
        stream.set_nodelay(true).expect("nodelay");
        tokio::spawn(async move {
            let mut buffer = [0u8; ECHO];
            while stream.read_exact(&mut buffer).await.is_ok() {
                if stream.write_all(&buffer).await.is_err() {
                    break;
                }
            }
        });
    }
}

/// `count` echo server processes: their children and addresses.
async fn echo_servers(count: usize) -> (Vec<tokio::process::Child>, Vec<String>) {
    let exe = std::env::current_exe().expect("current exe");
    let mut children = Vec::new();
    let mut addresses = Vec::new();
    for _ in 0..count {
        let mut child = tokio::process::Command::new(&exe)
            .arg("--echo-server")
            .stdout(std::process::Stdio::piped())
            .env_remove("TOKIO_WORKER_THREADS")
            .kill_on_drop(true)
            .spawn()
            .expect("echo server starts");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let line = lines.next_line().await.expect("echo output").expect("ADDR");
        addresses.push(line.trim_start_matches("ADDR ").to_string());
        children.push(child);
    }
    (children, addresses)
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--client") {
        return client_main().await;
    }
    if std::env::args().any(|a| a == "--echo-server") {
        return echo_server_main().await;
    }
    let corpus = bench::arg("--corpus", bench::DEFAULT_CORPUS);
    let warmup: f64 = bench::arg_num("--warmup", 3.0);
    let seconds: f64 = bench::arg_num("--seconds", 15.0);
    let only = bench::arg("--only", "");
    std::env::remove_var("TOKIO_WORKER_THREADS");
    let leaves = LeafProcesses::start(&corpus, 4, 1).await;
    let addresses = leaves.addresses();
    let pids: Vec<u32> = (0..4).map(|s| leaves.pid_of(s, 0)).collect();
    println!(
        "4 leaf processes (4 shards × 1 replica of {corpus}), warmup {warmup} s, measured {seconds} s, {}",
        bench::machine_load()
    );
    if only != "http" {
        println!("\n### gRPC: the project's client process → leaf processes\n");
        header();
        for rpc in [Rpc::Info, Rpc::Miss, Rpc::Search] {
            let row = grpc_row(
                &addresses[..1],
                &pids[..1],
                rpc,
                1200.0,
                false,
                warmup,
                seconds,
            )
            .await;
            print_row(&row);
        }
        for rpc in [Rpc::Info, Rpc::Miss, Rpc::Search] {
            let row = grpc_row(&addresses, &pids, rpc, 300.0, false, warmup, seconds).await;
            print_row(&row);
        }
        // The same 4 connections with the calls not issued together: is
        // the fan-out's per-call saving the connections or the batching?
        let row = grpc_row(&addresses, &pids, Rpc::Info, 1200.0, true, warmup, seconds).await;
        print_row(&row);
        // The same shapes over bare TCP, one echo server process per
        // connection (as one leaf process per shard).
        let (echo, echo_addresses) = echo_servers(4).await;
        let echo_pids: Vec<u32> = echo.iter().filter_map(|c| c.id()).collect();
        let row = grpc_row(
            &echo_addresses[..1],
            &echo_pids[..1],
            Rpc::Echo,
            1200.0,
            false,
            warmup,
            seconds,
        )
        .await;
        print_row(&Row {
            shape: "1 echo server".into(),
            ..row
        });
        let row = grpc_row(
            &echo_addresses,
            &echo_pids,
            Rpc::Echo,
            300.0,
            false,
            warmup,
            seconds,
        )
        .await;
        print_row(&Row {
            shape: "4 echo servers, 4 calls per tick".into(),
            ..row
        });
        let row = grpc_row(
            &echo_addresses,
            &echo_pids,
            Rpc::Echo,
            1200.0,
            true,
            warmup,
            seconds,
        )
        .await;
        print_row(&Row {
            shape: "4 echo servers, 1 call per tick".into(),
            ..row
        });
        drop(echo);
        println!("\n{}", bench::machine_load());
    }
    if only != "grpc" {
        let frontend = FrontendProcess::start(&addresses).await;
        // Background CPU with no traffic (keep-alive pings, timers).
        let all: Vec<u32> = std::iter::once(frontend.child.id())
            .chain(pids.iter().copied())
            .collect();
        let before: Vec<ProcCounters> = all.iter().map(|&p| bench::proc_counters(p)).collect();
        tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
        let idle: Vec<String> = all
            .iter()
            .zip(&before)
            .map(|(&p, b)| {
                let d = bench::proc_counters(p).since(b);
                format!("{:.1}", d.cpu_ms() / seconds)
            })
            .collect();
        println!(
            "\n### HTTP: the frontend process at 300 req/s\n\nidle for {seconds} s, ms of CPU per second: frontend {}, leaves {}\n",
            idle[0],
            idle[1..].join(" / ")
        );
        header();
        let rows = [
            ("`GET /healthz`", "/healthz", "x", vec![]),
            (
                "`GET /search?q=+` (empty query: 400)",
                "/search",
                " ",
                vec![],
            ),
            (
                "`GET /search?q=react&nocache=true` (whole query, reference)",
                "/search",
                COMMON,
                vec![("nocache", "true")],
            ),
        ];
        for (label, path, q, params) in rows {
            let row = http_row(
                &frontend, &pids, label, path, q, &params, 300.0, warmup, seconds,
            )
            .await;
            print_row(&row);
        }
        println!("\n{}", bench::machine_load());
    }
}
