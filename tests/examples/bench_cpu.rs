//! Whole-cluster CPU per query (issue 17): a frontend and 4 leaves as
//! separate release processes over the npm corpus, no result cache, a fixed
//! open-loop rate from the in-process load generator (`loadgen` as a
//! library), and each process's CPU time (`/proc/<pid>/stat` utime and
//! stime, summed over its threads), context switches and memory (VmRSS,
//! VmHWM) read before and after each measured stage.
//!
//! Build the binaries first: `cargo build --release -p leaf -p frontend`.
//!
//! ```text
//! cargo run --release -p tests --example bench_cpu -- [--mode cpu|capacity|soak]
//!     [--rate 300] [--seconds 20] [--warmup 5] [--perf DIR]
//!     [--start-rate 200] [--step-seconds 5] [--objective-ms 50]   # capacity
//!     [--soak-seconds 600] [--sample-seconds 30]                  # soak
//!     [--frontend-arg ARG]...                                     # extra frontend flags
//! ```
//!
//! - `cpu`: warm statistics (a frontend that has served `--warmup` seconds of
//!   the same Zipf(1) load), then cold ones (a fresh frontend process, each
//!   query of the file sent once, in file order from the end of the warm
//!   run's popular head). Admission on (default settings), canary on.
//! - `capacity`: admission off; the rate rises ×1.25 every step until p99
//!   > `--objective-ms` or more than 1% of answers are not 200.
//! - `soak`: `--rate` (half the capacity) for `--soak-seconds`, RSS of
//!   every process sampled every `--sample-seconds`.
//!
//! With `--perf DIR`, `perf record --call-graph dwarf` runs on the frontend and on leaf 0
//! during the warm stage (`DIR/frontend.data`, `DIR/leaf0.data`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use loadgen::{Config, QueryOrder, QuerySource, Report};
use tests::bench::{self, LeafProcesses};

/// One process's counters at one moment.
#[derive(Clone, Copy, Debug, Default)]
struct ProcSample {
    user_ms: f64,
    sys_ms: f64,
    /// Voluntary and involuntary context switches over all threads.
    ctx: u64,
    rss_kib: u64,
    hwm_kib: u64,
    threads: u64,
}

fn read_proc(pid: u32) -> ProcSample {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            * 10.0
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |text: &str, name: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let mut ctx = 0;
    let mut threads = 0;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            let text = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
            ctx += field(&text, "voluntary_ctxt_switches:")
                + field(&text, "nonvoluntary_ctxt_switches:");
            threads += 1;
        }
    }
    ProcSample {
        user_ms: tick(11),
        sys_ms: tick(12),
        ctx,
        rss_kib: field(&status, "VmRSS:"),
        hwm_kib: field(&status, "VmHWM:"),
        threads,
    }
}

/// The frontend binary as a child process.
struct FrontendProcess {
    child: Child,
    http: String,
}

impl FrontendProcess {
    async fn start(
        bins: &Path,
        leaves: &[String],
        admission: bool,
        extra: &[String],
    ) -> FrontendProcess {
        let binary = bins.join("frontend");
        assert!(
            binary.exists(),
            "{} is missing: cargo build --release -p frontend",
            binary.display()
        );
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("free port")
        };
        let http = format!("127.0.0.1:{}", free());
        let grpc = format!("127.0.0.1:{}", free());
        let child = Command::new(&binary)
            .args(["serve", "--http", &http, "--grpc", &grpc, "--shards", "4"])
            .args(["--leaf", &leaves.join(",")])
            .args(["--cache", "false", "--admission", &admission.to_string()])
            .args(extra)
            .env("SEARCH_CLUSTER_TOKEN", tests::TOKEN)
            .env("RUST_LOG", "warn")
            .env_remove("TOKIO_WORKER_THREADS")
            .envs(
                bench::arg("--frontend-workers", "")
                    .parse::<usize>()
                    .ok()
                    .map(|n| ("TOKIO_WORKER_THREADS", n.to_string())),
            )
            .stdout(Stdio::null())
            .spawn()
            .expect("frontend starts");
        let frontend = FrontendProcess { child, http };
        frontend.wait_ready().await;
        frontend
    }

    fn url(&self) -> String {
        format!("http://{}", self.http)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Until a search is answered by every shard.
    async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        let started = Instant::now();
        loop {
            let answer = client
                .get(format!("{}/search?q=react&nocache=true", self.url()))
                .send()
                .await;
            if let Ok(answer) = answer {
                if answer.status().is_success() {
                    let body: serde_json::Value = answer.json().await.unwrap_or_default();
                    if body["partial"] == false {
                        return;
                    }
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

/// Named processes to account for.
struct Parts(Vec<(String, u32)>);

impl Parts {
    fn sample(&self) -> Vec<ProcSample> {
        let mut samples: Vec<ProcSample> = self.0.iter().map(|(_, pid)| read_proc(*pid)).collect();
        samples.push(read_proc(std::process::id()));
        samples
    }
}

/// A loadgen run at `rate` for `seconds` over `queries`.
async fn drive(
    url: &str,
    queries: Vec<String>,
    order: QueryOrder,
    rate: f64,
    seconds: f64,
    seed: u64,
) -> Report {
    let mut config = Config::new(
        url,
        rate,
        Duration::from_secs_f64(seconds),
        QuerySource::List(queries),
    );
    config.order = order;
    config.nocache = true;
    config.timeout_ms = 100;
    config.seed = Some(seed);
    config.request_timeout = Duration::from_secs(2);
    loadgen::run(config).await.expect("load runs")
}

struct Stage {
    report: Report,
    before: Vec<ProcSample>,
    after: Vec<ProcSample>,
}

/// Runs `load` between two samples of `parts`.
async fn measured(parts: &Parts, load: impl std::future::Future<Output = Report>) -> Stage {
    let before = parts.sample();
    let report = load.await;
    let after = parts.sample();
    Stage {
        report,
        before,
        after,
    }
}

fn print_cpu_table(title: &str, names: &[String], stage: &Stage) {
    let answered = stage.report.total.responses.max(1) as f64;
    println!("\n### {title}\n");
    println!(
        "{} answers ({} ok), achieved {:.0} q/s, p50 {:.2} ms, p99 {:.2} ms, partial {:.2}%",
        stage.report.total.responses,
        stage.report.total.ok,
        stage.report.total.achieved_rate,
        stage.report.total.latency_ms.p50,
        stage.report.total.latency_ms.p99,
        100.0 * stage.report.total.answers.partial_rate.unwrap_or(0.0),
    );
    println!();
    println!("| part | user ms/q | kernel ms/q | total ms/q | ctx switches/q | threads | RSS MiB | HWM MiB |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut server = (0.0, 0.0);
    let mut all_names: Vec<String> = names.to_vec();
    all_names.push("load generator (not server)".into());
    for (i, name) in all_names.iter().enumerate() {
        let (b, a) = (stage.before[i], stage.after[i]);
        let user = (a.user_ms - b.user_ms) / answered;
        let sys = (a.sys_ms - b.sys_ms) / answered;
        if i < names.len() {
            server.0 += user;
            server.1 += sys;
        }
        println!(
            "| {name} | {user:.3} | {sys:.3} | {:.3} | {:.1} | {} | {:.1} | {:.1} |",
            user + sys,
            (a.ctx - b.ctx.min(a.ctx)) as f64 / answered,
            a.threads,
            a.rss_kib as f64 / 1024.0,
            a.hwm_kib as f64 / 1024.0,
        );
    }
    println!(
        "| **server total** | {:.3} | {:.3} | **{:.3}** | | | | |",
        server.0,
        server.1,
        server.0 + server.1
    );
    println!("\n{}", bench::machine_load());
}

fn perf(dir: &Path, name: &str, pid: u32, seconds: f64) -> Child {
    std::fs::create_dir_all(dir).expect("perf dir");
    Command::new("perf")
        .args(["record", "--call-graph", "dwarf,16384", "-F", "250"])
        .args(["-p", &pid.to_string(), "-o"])
        .arg(dir.join(format!("{name}.data")))
        .args(["--", "sleep", &format!("{seconds}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("perf starts")
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let exe = std::env::current_exe().expect("current exe");
    let own = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf();
    // `--bins DIR,DIR`: each a directory with `leaf` and `frontend`, run
    // one after the other (before / after in one run).
    let bins: Vec<PathBuf> = match args.iter().position(|a| a == "--bins") {
        Some(i) => args[i + 1].split(',').map(PathBuf::from).collect(),
        None => vec![own],
    };
    for dir in &bins {
        println!("\n## binaries from {}\n", dir.display());
        run(dir).await;
    }
}

async fn run(bins: &Path) {
    let args: Vec<String> = std::env::args().collect();
    let corpus = bench::arg("--corpus", bench::DEFAULT_CORPUS);
    let queries = bench::load_queries(bench::arg("--queries", bench::DEFAULT_QUERIES));
    let mode = bench::arg("--mode", "cpu");
    let rate: f64 = bench::arg_num("--rate", 300.0);
    let seconds: f64 = bench::arg_num("--seconds", 20.0);
    let warmup: f64 = bench::arg_num("--warmup", 5.0);
    let extra: Vec<String> = args
        .windows(2)
        .filter(|w| w[0] == "--frontend-arg")
        .map(|w| w[1].clone())
        .collect();
    let perf_dir = args
        .iter()
        .position(|a| a == "--perf")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from);

    // `--leaf-workers N` / `--frontend-workers N`: tokio worker threads of
    // the processes (`TOKIO_WORKER_THREADS`; default: one per core).
    match args.iter().position(|a| a == "--leaf-workers") {
        Some(i) => std::env::set_var("TOKIO_WORKER_THREADS", &args[i + 1]),
        None => std::env::remove_var("TOKIO_WORKER_THREADS"),
    }
    let leaves = LeafProcesses::start_binary(&bins.join("leaf"), &corpus, 4, 1).await;
    let addresses = leaves.addresses();
    let leaf_parts: Vec<(String, u32)> = (0..4)
        .map(|s| (format!("leaf {s}"), leaves.pid_of(s, 0)))
        .collect();
    let zipf = QueryOrder::Zipf { exponent: 1.0 };
    let list: Vec<String> = queries.to_vec();
    println!(
        "4 leaves × 1 replica + frontend as release processes, frontend flags {extra:?}, {}",
        bench::machine_load()
    );

    match mode.as_str() {
        "cpu" => {
            let admission = true;
            let frontend = FrontendProcess::start(bins, &addresses, admission, &extra).await;
            let mut parts = vec![("frontend".to_string(), frontend.pid())];
            parts.extend(leaf_parts.clone());
            let names: Vec<String> = parts.iter().map(|p| p.0.clone()).collect();
            let parts = Parts(parts);
            drive(&frontend.url(), list.clone(), zipf, rate, warmup, 1).await;
            let perfs: Vec<Child> = match &perf_dir {
                Some(dir) => vec![
                    perf(dir, "frontend", frontend.pid(), seconds - 1.0),
                    perf(dir, "leaf0", leaf_parts[0].1, seconds - 1.0),
                ],
                None => Vec::new(),
            };
            let warm = measured(
                &parts,
                drive(&frontend.url(), list.clone(), zipf, rate, seconds, 2),
            )
            .await;
            for mut p in perfs {
                let _ = p.wait();
            }
            print_cpu_table(
                &format!("Warm statistics: Zipf(1), {rate} q/s for {seconds} s"),
                &names,
                &warm,
            );
            drop(frontend);
            // Cold: a fresh frontend, each query once, past the popular head.
            let frontend = FrontendProcess::start(bins, &addresses, admission, &extra).await;
            let mut parts = vec![("frontend".to_string(), frontend.pid())];
            parts.extend(leaf_parts.clone());
            let parts = Parts(parts);
            let count = (rate * seconds) as usize;
            let unique: Vec<String> = list.iter().skip(1000).take(count).cloned().collect();
            let cold = measured(
                &parts,
                drive(
                    &frontend.url(),
                    unique,
                    QueryOrder::Replay,
                    rate,
                    seconds,
                    3,
                ),
            )
            .await;
            print_cpu_table(
                &format!(
                    "Cold statistics: unique queries in file order, {rate} q/s for {seconds} s"
                ),
                &names,
                &cold,
            );
        }
        "capacity" => {
            let objective: f64 = bench::arg_num("--objective-ms", 50.0);
            let step: f64 = bench::arg_num("--step-seconds", 5.0);
            let mut offered: f64 = bench::arg_num("--start-rate", 200.0);
            let admission = args.iter().any(|a| a == "--admission");
            let frontend = FrontendProcess::start(bins, &addresses, admission, &extra).await;
            let mut parts = vec![("frontend".to_string(), frontend.pid())];
            parts.extend(leaf_parts.clone());
            let parts = Parts(parts);
            drive(&frontend.url(), list.clone(), zipf, offered, warmup, 1).await;
            println!(
                "\n### Capacity ramp (admission {admission}), objective p99 ≤ {objective} ms\n"
            );
            println!("| offered q/s | achieved | p50 ms | p99 ms | not 200 | partial | server CPU ms/q | frontend ms/q | leaves ms/q | holds |");
            println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
            let mut capacity = 0.0;
            for n in 0..40u64 {
                let stage = measured(
                    &parts,
                    drive(&frontend.url(), list.clone(), zipf, offered, step, 10 + n),
                )
                .await;
                let t = &stage.report.total;
                let answered = t.responses.max(1) as f64;
                let cpu = |i: usize| {
                    (stage.after[i].user_ms + stage.after[i].sys_ms
                        - stage.before[i].user_ms
                        - stage.before[i].sys_ms)
                        / answered
                };
                let fe = cpu(0);
                let lv: f64 = (1..5).map(cpu).sum();
                let bad = (t.scheduled - t.ok) as f64 / t.scheduled.max(1) as f64;
                let holds = t.latency_ms.p99 <= objective && bad <= 0.01;
                println!(
                    "| {offered:.0} | {:.0} | {:.2} | {:.2} | {:.2}% | {:.2}% | {:.3} | {fe:.3} | {lv:.3} | {} |",
                    t.achieved_rate,
                    t.latency_ms.p50,
                    t.latency_ms.p99,
                    100.0 * bad,
                    100.0 * t.answers.partial_rate.unwrap_or(0.0),
                    fe + lv,
                    if holds { "yes" } else { "no" }
                );
                if !holds {
                    break;
                }
                capacity = offered;
                offered = (offered * 1.25).round();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            println!("\ncapacity: {capacity:.0} q/s · {}", bench::machine_load());
        }
        "soak" => {
            let total: f64 = bench::arg_num("--soak-seconds", 600.0);
            let every: f64 = bench::arg_num("--sample-seconds", 30.0);
            let frontend = FrontendProcess::start(bins, &addresses, false, &extra).await;
            let mut parts = vec![("frontend".to_string(), frontend.pid())];
            parts.extend(leaf_parts.clone());
            let names: Vec<String> = parts.iter().map(|p| p.0.clone()).collect();
            let parts = Parts(parts);
            println!("\n### Soak: Zipf(1) at {rate} q/s for {total} s, RSS MiB every {every} s\n");
            println!(
                "| t s | p99 ms | not 200 | {} |",
                names
                    .iter()
                    .map(|n| format!("{n} RSS"))
                    .collect::<Vec<_>>()
                    .join(" | ")
            );
            println!("|---:|---:|---:|{}", "---:|".repeat(names.len()));
            let mut t = 0.0;
            let mut n = 0;
            while t < total {
                let stage = measured(
                    &parts,
                    drive(&frontend.url(), list.clone(), zipf, rate, every, 100 + n),
                )
                .await;
                t += every;
                n += 1;
                let r = &stage.report.total;
                println!(
                    "| {t:.0} | {:.2} | {} | {} |",
                    r.latency_ms.p99,
                    r.scheduled - r.ok,
                    stage.after[..names.len()]
                        .iter()
                        .map(|s| format!("{:.1}", s.rss_kib as f64 / 1024.0))
                        .collect::<Vec<_>>()
                        .join(" | ")
                );
            }
            let last = parts.sample();
            println!(
                "\npeak (VmHWM) MiB: {} · {}",
                names
                    .iter()
                    .zip(&last)
                    .map(|(n, s)| format!("{n} {:.1}", s.hwm_kib as f64 / 1024.0))
                    .collect::<Vec<_>>()
                    .join(", "),
                bench::machine_load()
            );
        }
        other => panic!("unknown --mode {other}"),
    }
}
