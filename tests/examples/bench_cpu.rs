//! Whole-cluster CPU per query (issue 17): a frontend and 4 leaves as
//! separate release processes over the npm corpus, no result cache, a fixed
//! open-loop rate from the in-process load generator (`loadgen` as a
//! library), and each process's CPU time (`/proc/<pid>/stat` utime and
//! stime, summed over its threads), context switches and memory (VmRSS,
//! VmHWM) read before and after each measured stage.
//!
//! Build the binaries first: `cargo build --release -p leaf -p frontend -p cache`
//! (a separate command from the example's: `--example` applies to every `-p`).
//!
//! ```text
//! cargo run --release -p tests --example bench_cpu -- [--mode cpu|capacity|soak]
//!     [--rate 300] [--seconds 20] [--warmup 5] [--perf DIR]
//!     [--start-rate 200] [--step-seconds 5] [--objective-ms 50]   # capacity
//!     [--soak-seconds 600] [--sample-seconds 30]                  # soak
//!     [--cache N] [--configs off-off,on-off,on-on] [--admission on|off] # capacity
//!     [--prefill RATE]                                            # soak
//!     [--frontend-arg ARG]...                                     # extra frontend flags
//! ```
//!
//! - `cpu`: warm statistics (a frontend that has served `--warmup` seconds of
//!   the same Zipf(1) load), then cold ones (a fresh frontend process, each
//!   query of the file sent once, in file order from the end of the warm
//!   run's popular head). Admission on (default settings), canary on.
//! - `capacity`: admission off (`--admission on` for on); the rate rises
//!   ×1.25 every step until p99 > `--objective-ms` or more than 1% of the
//!   requests sent are not answered 200 (503 sheds of admission control
//!   count as not 200). With `--cache N`, N `cache` processes join the
//!   frontend's lease registry (the leaves too, instead of `--leaf`), and
//!   the ramp runs once per entry of `--configs` (`CACHE-ADMISSION`, each
//!   `on` or `off`; default all three of `off-off,on-off,on-on`), each with
//!   a fresh frontend and fresh caches, so that the rows sit side by side
//!   in one run. Cache on means requests without `nocache=true`.
//! - `soak`: `--rate` (half the capacity) for `--soak-seconds`, RSS of
//!   every process and the frontend's cache-fill gauges (term statistics
//!   bytes, terms and queries, known-good fingerprints) sampled every
//!   `--sample-seconds`. With `--prefill RATE`, every query of the file is
//!   first sent once at RATE, so that the bounded caches are as full as
//!   this query file can make them before the soak starts.
//!
//! With `--co-host` (or `--layouts separate,co-host` for both in turn),
//! one leaf process serves the 4 shards (`leaf --shard
//! 0,1,2,3`) and the frontend searches them with one `SearchShards` call
//! per query. With `--layouts embedded`, the frontend process serves the 4
//! shards itself (`frontend serve --embed-leaf -- --shard 0,1,2,3 …`, its
//! index kept under `$TMPDIR/bench-cpu-embedded` so that a fresh frontend
//! reopens it) and calls them in process: no leaf process at all.
//!
//! With `--perf DIR`, `perf record --call-graph dwarf` runs on the frontend and on leaf 0
//! during the warm stage (`DIR/frontend.data`, `DIR/leaf0.data`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use loadgen::{Config, QueryOrder, QuerySource, Report};
use tests::bench::{self, free_port, LeafProcesses};

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
    let counters = bench::proc_counters(pid);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| tasks.flatten().count() as u64)
        .unwrap_or(0);
    ProcSample {
        user_ms: counters.user_ms,
        sys_ms: counters.sys_ms,
        ctx: counters.ctx,
        rss_kib: bench::status_field(&status, "VmRSS:"),
        hwm_kib: bench::status_field(&status, "VmHWM:"),
        threads,
    }
}

/// How the frontend finds the leaves, and which of its features are on.
#[derive(Clone, Debug)]
struct Setup {
    /// Static leaf addresses (`--leaf`), or none: leaves and caches hold
    /// leases with the frontend's registry on `registry`.
    leaves: Vec<String>,
    /// The registry's gRPC address when leaves and caches join by lease
    /// (fixed, so that a restarted frontend is found again).
    registry: Option<String>,
    cache: bool,
    admission: bool,
    /// Cache servers to wait for before measuring.
    caches: usize,
    /// The embedded leaf's flags, when the frontend serves the shards.
    embed: Option<Vec<String>>,
}

/// Where the 4 shards are served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// 4 leaf processes, one shard each.
    Separate,
    /// One leaf process serving the 4 shards.
    CoHost,
    /// The frontend's own process (`--embed-leaf`).
    Embedded,
}

impl Layout {
    fn parse(word: &str) -> Layout {
        match word {
            "separate" => Layout::Separate,
            "co-host" => Layout::CoHost,
            "embedded" => Layout::Embedded,
            other => panic!("{other}: separate, co-host or embedded"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Layout::Separate => "separate",
            Layout::CoHost => "co-host",
            Layout::Embedded => "embedded",
        }
    }
}

/// The frontend binary as a child process.
struct FrontendProcess {
    child: Child,
    http: String,
    admin: String,
    setup: Setup,
}

impl FrontendProcess {
    async fn start(bins: &Path, setup: &Setup, extra: &[String]) -> FrontendProcess {
        let binary = bins.join("frontend");
        assert!(
            binary.exists(),
            "{} is missing: cargo build --release -p frontend",
            binary.display()
        );
        let http = format!("127.0.0.1:{}", free_port());
        let admin = format!("127.0.0.1:{}", free_port());
        let grpc = setup
            .registry
            .clone()
            .unwrap_or_else(|| format!("127.0.0.1:{}", free_port()));
        let mut command = Command::new(&binary);
        command
            .args(["serve", "--http", &http, "--grpc", &grpc, "--shards", "4"])
            .args(["--admin-http", &admin]);
        if !setup.leaves.is_empty() {
            command.args(["--leaf", &setup.leaves.join(",")]);
        }
        let child = command
            .args(["--cache", &setup.cache.to_string()])
            .args(["--admission", &setup.admission.to_string()])
            .args(extra)
            .args(setup.embed.iter().flat_map(|flags| {
                ["--embed-leaf", "--"]
                    .into_iter()
                    .map(String::from)
                    .chain(flags.iter().cloned())
            }))
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
        let frontend = FrontendProcess {
            child,
            http,
            admin,
            setup: setup.clone(),
        };
        frontend.wait_ready().await;
        frontend
    }

    /// The frontend's own metrics (admin listener).
    async fn scrape(&self) -> std::collections::HashMap<String, f64> {
        bench::scrape(&reqwest::Client::new(), &format!("http://{}", self.admin)).await
    }

    fn url(&self) -> String {
        format!("http://{}", self.http)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Until a search is answered by every shard, and every cache server
    /// of the setup holds a lease.
    async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        let started = Instant::now();
        loop {
            let answer = client
                .get(format!("{}/search?q=react&nocache=true", self.url()))
                .send()
                .await;
            let mut ready = false;
            if let Ok(answer) = answer {
                if answer.status().is_success() {
                    let body: serde_json::Value = answer.json().await.unwrap_or_default();
                    ready = body["partial"] == false;
                }
            }
            if ready && self.setup.caches > 0 {
                let view: serde_json::Value = match client
                    .get(format!("http://{}/cluster", self.admin))
                    .send()
                    .await
                {
                    Ok(answer) => answer.json().await.unwrap_or_default(),
                    Err(_) => serde_json::Value::Null,
                };
                ready = view["caches"].as_array().map_or(0, Vec::len) >= self.setup.caches;
            }
            if ready {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(300),
                "frontend never answered from every shard (or the caches never joined)"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// `cache` servers as child processes, holding leases with the frontend.
struct CacheProcesses(Vec<Child>);

impl CacheProcesses {
    fn start(bins: &Path, count: usize, registry: &str) -> CacheProcesses {
        let binary = bins.join("cache");
        assert!(
            count == 0 || binary.exists(),
            "{} is missing: cargo build --release -p cache",
            binary.display()
        );
        CacheProcesses(
            (0..count)
                .map(|_| {
                    Command::new(&binary)
                        .args(["--grpc", &format!("127.0.0.1:{}", free_port())])
                        .args(["--frontend", registry])
                        .env("SEARCH_CLUSTER_TOKEN", tests::TOKEN)
                        .env("RUST_LOG", "warn")
                        .stdout(Stdio::null())
                        .spawn()
                        .expect("cache starts")
                })
                .collect(),
        )
    }

    fn parts(&self) -> Vec<(String, u32)> {
        self.0
            .iter()
            .enumerate()
            .map(|(i, child)| (format!("cache {i}"), child.id()))
            .collect()
    }
}

impl Drop for CacheProcesses {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
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
    nocache: bool,
) -> Report {
    let mut config = Config::new(
        url,
        rate,
        Duration::from_secs_f64(seconds),
        QuerySource::List(queries),
    );
    config.order = order;
    config.nocache = nocache;
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
    // `--layouts separate,co-host,…`: each run in turn (`--co-host` alone
    // is `co-host`), so that both layouts are measured side by side.
    let layouts: Vec<Layout> = match args.iter().position(|a| a == "--layouts") {
        Some(i) => args[i + 1].split(',').map(Layout::parse).collect(),
        None if args.iter().any(|a| a == "--co-host") => vec![Layout::CoHost],
        None => vec![Layout::Separate],
    };
    for dir in &bins {
        for &layout in &layouts {
            println!("\n## binaries from {}, {}\n", dir.display(), layout.name());
            run(dir, layout).await;
        }
    }
}

async fn run(bins: &Path, layout: Layout) {
    let args: Vec<String> = std::env::args().collect();
    let corpus = bench::arg("--corpus", bench::DEFAULT_CORPUS);
    let queries = bench::load_queries(bench::arg("--queries", bench::DEFAULT_QUERIES));
    let mode = bench::arg("--mode", "cpu");
    let rate: f64 = bench::arg_num("--rate", 300.0);
    let seconds: f64 = bench::arg_num("--seconds", 20.0);
    let warmup: f64 = bench::arg_num("--warmup", 5.0);
    let caches: usize = bench::arg_num("--cache", 0);
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
    // With cache servers, every server joins the frontend's registry on a
    // fixed address; else the frontend is given the leaves (`--leaf`).
    let registry = (caches > 0).then(|| format!("127.0.0.1:{}", free_port()));
    let leaf_flags: Vec<String> = match &registry {
        Some(registry) => vec!["--frontend".into(), registry.clone()],
        None => Vec::new(),
    };
    // `--co-host`: one leaf process serving the 4 shards, searched with one
    // call per query (SearchShards), instead of one process per shard.
    let leaves = match layout {
        Layout::CoHost => {
            LeafProcesses::start_co_hosted(&bins.join("leaf"), &corpus, 4, 1, &leaf_flags).await
        }
        Layout::Separate => {
            LeafProcesses::start_binary_with(&bins.join("leaf"), &corpus, 4, 1, &leaf_flags).await
        }
        Layout::Embedded => LeafProcesses::none(),
    };
    let embed = (layout == Layout::Embedded).then(|| {
        let dir = std::env::temp_dir().join("bench-cpu-embedded");
        vec![
            "--shard".to_string(),
            "0,1,2,3".to_string(),
            "--shards".to_string(),
            "4".to_string(),
            "--corpus".to_string(),
            corpus.to_string(),
            "--index-dir".to_string(),
            dir.display().to_string(),
        ]
    });
    std::env::remove_var("TOKIO_WORKER_THREADS");
    let setup = |cache: bool, admission: bool| Setup {
        leaves: match registry {
            Some(_) => Vec::new(),
            None => leaves.addresses(),
        },
        registry: registry.clone(),
        cache,
        admission,
        caches: if cache { caches } else { 0 },
        embed: embed.clone(),
    };
    let leaf_parts: Vec<(String, u32)> = match layout {
        Layout::CoHost => vec![("leaf 0-3".to_string(), leaves.pid_of(0, 0))],
        Layout::Separate => (0..4)
            .map(|s| (format!("leaf {s}"), leaves.pid_of(s, 0)))
            .collect(),
        Layout::Embedded => Vec::new(),
    };
    let zipf = QueryOrder::Zipf { exponent: 1.0 };
    let list: Vec<String> = queries.to_vec();
    println!(
        "4 shards × 1 replica in {} leaf process(es) + frontend as release processes, {caches} cache processes, frontend flags {extra:?}, {}",
        leaf_parts.len(),
        bench::machine_load()
    );

    match mode.as_str() {
        "cpu" => {
            let admission = true;
            let frontend = FrontendProcess::start(bins, &setup(false, admission), &extra).await;
            let mut parts = vec![("frontend".to_string(), frontend.pid())];
            parts.extend(leaf_parts.clone());
            let names: Vec<String> = parts.iter().map(|p| p.0.clone()).collect();
            let parts = Parts(parts);
            drive(&frontend.url(), list.clone(), zipf, rate, warmup, 1, true).await;
            let perfs: Vec<Child> = match &perf_dir {
                Some(dir) => std::iter::once(perf(dir, "frontend", frontend.pid(), seconds - 1.0))
                    .chain(
                        leaf_parts
                            .first()
                            .map(|leaf| perf(dir, "leaf0", leaf.1, seconds - 1.0)),
                    )
                    .collect(),
                None => Vec::new(),
            };
            let warm = measured(
                &parts,
                drive(&frontend.url(), list.clone(), zipf, rate, seconds, 2, true),
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
            let frontend = FrontendProcess::start(bins, &setup(false, admission), &extra).await;
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
                    true,
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
            let start_rate: f64 = bench::arg_num("--start-rate", 200.0);
            let on = |word: &str| match word {
                "on" | "true" => true,
                "off" | "false" => false,
                other => panic!("{other}: on or off"),
            };
            // `--admission` alone (the old spelling) is on.
            let admission = match args.iter().position(|a| a == "--admission") {
                Some(i) => args
                    .get(i + 1)
                    .filter(|v| !v.starts_with("--"))
                    .is_none_or(|v| on(v)),
                None => false,
            };
            let default_configs = if caches > 0 {
                "off-off,on-off,on-on".to_string()
            } else {
                format!("off-{}", if admission { "on" } else { "off" })
            };
            let configs: Vec<(bool, bool)> = bench::arg("--configs", &default_configs)
                .split(',')
                .map(|c| {
                    let (cache, admission) = c.split_once('-').expect("CACHE-ADMISSION");
                    (on(cache), on(admission))
                })
                .collect();
            assert!(
                caches > 0 || configs.iter().all(|c| !c.0),
                "cache on needs --cache N"
            );
            let mut summary = Vec::new();
            for (cache, admission) in configs {
                let label = format!(
                    "cache {}, admission {}",
                    if cache { "on" } else { "off" },
                    if admission { "on" } else { "off" }
                );
                let capacity = ramp(
                    bins,
                    &setup(cache, admission),
                    registry.as_deref(),
                    &leaf_parts,
                    &extra,
                    &list,
                    &label,
                    Ramp {
                        start_rate,
                        warmup,
                        step,
                        objective,
                    },
                )
                .await;
                summary.push((label, capacity));
            }
            println!("\n| configuration | capacity q/s |\n|---|---:|");
            for (label, capacity) in &summary {
                println!("| {label} | {capacity:.0} |");
            }
            println!("\n{}", bench::machine_load());
        }
        "soak" => soak(bins, &setup(false, false), &leaf_parts, &extra, &list, rate).await,
        other => panic!("unknown --mode {other}"),
    }
}

struct Ramp {
    start_rate: f64,
    warmup: f64,
    step: f64,
    objective: f64,
}

/// One capacity ramp with a fresh frontend (and fresh caches when the
/// setup has them); returns the highest rate that held the objective.
#[allow(clippy::too_many_arguments)]
async fn ramp(
    bins: &Path,
    setup: &Setup,
    registry: Option<&str>,
    leaf_parts: &[(String, u32)],
    extra: &[String],
    list: &[String],
    label: &str,
    figures: Ramp,
) -> f64 {
    let Ramp {
        start_rate,
        warmup,
        step,
        objective,
    } = figures;
    let zipf = QueryOrder::Zipf { exponent: 1.0 };
    let caches = match (setup.caches, registry) {
        (n, Some(registry)) if n > 0 => CacheProcesses::start(bins, n, registry),
        _ => CacheProcesses(Vec::new()),
    };
    let frontend = FrontendProcess::start(bins, setup, extra).await;
    let nocache = !setup.cache;
    let mut parts = vec![("frontend".to_string(), frontend.pid())];
    parts.extend(leaf_parts.iter().cloned());
    let cache_count = caches.0.len();
    parts.extend(caches.parts());
    let parts = Parts(parts);
    let mut offered = start_rate;
    drive(
        &frontend.url(),
        list.to_vec(),
        zipf,
        offered,
        warmup,
        1,
        nocache,
    )
    .await;
    println!("\n### Capacity ramp ({label}), objective p99 ≤ {objective} ms\n");
    println!("| offered q/s | achieved | p50 ms | p99 ms | not 200 | of which shed (503 overloaded) | partial | cache hits | server CPU ms/q | frontend ms/q | leaves ms/q | caches ms/q | holds |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    let mut capacity = 0.0;
    for n in 0..40u64 {
        let stage = measured(
            &parts,
            drive(
                &frontend.url(),
                list.to_vec(),
                zipf,
                offered,
                step,
                10 + n,
                nocache,
            ),
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
        let leaf_count = leaf_parts.len();
        let lv: f64 = (1..1 + leaf_count).map(cpu).sum();
        let ca: f64 = (1 + leaf_count..1 + leaf_count + cache_count)
            .map(cpu)
            .sum::<f64>()
            .max(0.0);
        let scheduled = t.scheduled.max(1) as f64;
        let bad = (t.scheduled - t.ok.min(t.scheduled)) as f64 / scheduled;
        // Admission control's sheds (503 `overloaded`); other 503s are
        // answers no shard made in time (`unavailable`).
        let shed = t.error_codes.get("overloaded").copied().unwrap_or(0) as f64 / scheduled;
        let holds = t.latency_ms.p99 <= objective && bad <= 0.01;
        println!(
            "| {offered:.0} | {:.0} | {:.2} | {:.2} | {:.2}% | {:.2}% | {:.2}% | {:.1}% | {:.3} | {fe:.3} | {lv:.3} | {ca:.3} | {} |",
            t.achieved_rate,
            t.latency_ms.p50,
            t.latency_ms.p99,
            100.0 * bad,
            100.0 * shed,
            100.0 * t.answers.partial_rate.unwrap_or(0.0),
            100.0 * t.answers.cache_hit_rate.unwrap_or(0.0),
            fe + lv + ca,
            if holds { "yes" } else { "no" }
        );
        if !holds {
            break;
        }
        capacity = offered;
        offered = (offered * 1.25).round();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    println!(
        "\ncapacity ({label}): {capacity:.0} q/s · {}",
        bench::machine_load()
    );
    capacity
}

/// The frontend's cache-fill gauges: statistics MiB, terms, query lists,
/// known-good fingerprints.
async fn cache_fill(frontend: &FrontendProcess) -> [f64; 4] {
    let series = frontend.scrape().await;
    [
        bench::metric(&series, "frontend_term_stats_cache_bytes", &[]) / (1024.0 * 1024.0),
        bench::metric(&series, "frontend_term_stats_cache_terms", &[]),
        bench::metric(&series, "frontend_term_stats_cache_queries", &[]),
        bench::metric(&series, "frontend_canary_known_good_queries", &[]),
    ]
}

/// `--rate` for `--soak-seconds`, RSS and the cache-fill gauges every
/// `--sample-seconds` (after `--prefill RATE`, every query once).
async fn soak(
    bins: &Path,
    setup: &Setup,
    leaf_parts: &[(String, u32)],
    extra: &[String],
    list: &[String],
    rate: f64,
) {
    let total: f64 = bench::arg_num("--soak-seconds", 600.0);
    let every: f64 = bench::arg_num("--sample-seconds", 30.0);
    let prefill: f64 = bench::arg_num("--prefill", 0.0);
    let zipf = QueryOrder::Zipf { exponent: 1.0 };
    let frontend = FrontendProcess::start(bins, setup, extra).await;
    let mut parts = vec![("frontend".to_string(), frontend.pid())];
    parts.extend(leaf_parts.iter().cloned());
    let names: Vec<String> = parts.iter().map(|p| p.0.clone()).collect();
    let parts = Parts(parts);
    let fill_header = "stats cache MiB | stats terms | stats queries | known-good";
    let row = |t: f64, p99: String, bad: String, samples: &[ProcSample], fill: [f64; 4]| {
        println!(
            "| {t:.0} | {p99} | {bad} | {} | {:.1} | {:.0} | {:.0} | {:.0} |",
            samples[..names.len()]
                .iter()
                .map(|s| format!("{:.1}", s.rss_kib as f64 / 1024.0))
                .collect::<Vec<_>>()
                .join(" | "),
            fill[0],
            fill[1],
            fill[2],
            fill[3],
        )
    };
    println!(
        "\n### Soak: Zipf(1) at {rate} q/s for {total} s, RSS MiB every {every} s{}, frontend flags {extra:?}\n",
        if prefill > 0.0 {
            format!(", after every query of the file once at {prefill} q/s")
        } else {
            String::new()
        }
    );
    println!(
        "| t s | p99 ms | not 200 | {} | {fill_header} |",
        names
            .iter()
            .map(|n| format!("{n} RSS"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    println!("|---:|---:|---:|{}", "---:|".repeat(names.len() + 4));
    row(
        0.0,
        "start".into(),
        "".into(),
        &parts.sample(),
        cache_fill(&frontend).await,
    );
    if prefill > 0.0 {
        let report = drive(
            &frontend.url(),
            list.to_vec(),
            QueryOrder::Replay,
            prefill,
            list.len() as f64 / prefill,
            99,
            true,
        )
        .await;
        let r = &report.total;
        row(
            0.0,
            format!("prefill {:.2}", r.latency_ms.p99),
            format!("{}", r.scheduled - r.ok.min(r.scheduled)),
            &parts.sample(),
            cache_fill(&frontend).await,
        );
    }
    let mut t = 0.0;
    let mut n = 0;
    while t < total {
        let stage = measured(
            &parts,
            drive(
                &frontend.url(),
                list.to_vec(),
                zipf,
                rate,
                every,
                100 + n,
                true,
            ),
        )
        .await;
        t += every;
        n += 1;
        let r = &stage.report.total;
        row(
            t,
            format!("{:.2}", r.latency_ms.p99),
            format!("{}", r.scheduled - r.ok.min(r.scheduled)),
            &stage.after,
            cache_fill(&frontend).await,
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
