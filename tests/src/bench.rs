//! Helpers shared by the scenario benchmarks (`tests/examples/bench_*.rs`):
//! corpus and query loading, an open-loop HTTP driver that measures latency
//! from each request's scheduled time, a closed-loop driver, percentiles,
//! `/metrics` scraping and process CPU time.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use frontend_core::{Frontend, FrontendConfig};
use leaf::Document;
use tokio_util::sync::CancellationToken;

/// The npm corpus next to the workspace (`../shared/corpus`).
pub const DEFAULT_CORPUS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/corpus/npm-packages.jsonl.gz"
);
/// Its queries, most popular first.
pub const DEFAULT_QUERIES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/corpus/npm-packages.queries.txt"
);

/// A cluster of 4 shards × `replicas` over `documents` whose frontend does
/// not use the cache tier, and its leaves' addresses (for extra frontends
/// with other configurations over the same leaves).
pub async fn uncached_cluster(
    documents: Arc<Vec<Document>>,
    replicas: u32,
) -> (crate::TestCluster, Vec<String>) {
    let cluster = crate::TestCluster::builder()
        .shards(4)
        .replicas(replicas)
        .documents(documents)
        .frontend(|c| c.cache = false)
        .build()
        .await;
    let leaves = cluster
        .leaves()
        .map(|leaf| leaf.advertised().to_string())
        .collect();
    (cluster, leaves)
}

/// `--name VALUE` from the command line, else `default`.
pub fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

/// `--name N` parsed, else `default`.
pub fn arg_num<T: std::str::FromStr>(name: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Reads the corpus once, for every leaf of a cluster to share.
pub fn load_documents(path: impl AsRef<Path>) -> Arc<Vec<Document>> {
    let path = PathBuf::from(path.as_ref());
    let started = Instant::now();
    let read = leaf::read_corpus(&path)
        .unwrap_or_else(|e| panic!("cannot read corpus {}: {e}", path.display()));
    eprintln!(
        "read {} documents from {} in {:.1?}",
        read.documents.len(),
        path.display(),
        started.elapsed()
    );
    Arc::new(read.documents)
}

/// The queries file, one a line, blank lines skipped.
pub fn load_queries(path: impl AsRef<Path>) -> Arc<Vec<String>> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read queries {}: {e}", path.display()));
    Arc::new(
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect(),
    )
}

/// `uptime`'s load averages, for the machine note under each table.
pub fn machine_load() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let fields: Vec<&str> = load.split_whitespace().take(3).collect();
    format!("{cores} cores, load average {}", fields.join(" "))
}

/// CPU time this process has used (user + system).
pub fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|v| v.parse::<u64>().ok()))
        .sum();
    Duration::from_millis(ticks * 10) // CLK_TCK is 100 on Linux.
}

/// How the next query is picked.
#[derive(Clone)]
pub enum Pick {
    /// In the file's order from this offset, wrapping around.
    Replay(usize),
    /// Rank r with probability ∝ 1/r^s (cumulative weights, then a seed).
    Zipf(Arc<Vec<f64>>, u64),
}

impl Pick {
    pub fn zipf(queries: usize, exponent: f64, seed: u64) -> Pick {
        let mut cdf = Vec::with_capacity(queries);
        let mut total = 0.0;
        for rank in 1..=queries {
            total += 1.0 / (rank as f64).powf(exponent);
            cdf.push(total);
        }
        for c in &mut cdf {
            *c /= total;
        }
        Pick::Zipf(Arc::new(cdf), seed)
    }

    /// The index of the `i`th query.
    pub fn index(&self, i: u64, len: usize) -> usize {
        match self {
            Pick::Replay(offset) => (offset + i as usize) % len,
            Pick::Zipf(cdf, seed) => {
                let u = unit(splitmix(seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
                cdf.partition_point(|&c| c < u).min(len - 1)
            }
        }
    }
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn unit(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// One request's outcome.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    /// Scheduled send time from the start of the run.
    pub at: Duration,
    /// From the scheduled time (open loop) or send time (closed loop).
    pub latency: Duration,
    /// HTTP status, 0 when no response came (timeout, connection error).
    pub status: u16,
    pub partial: bool,
    /// `hit`, `miss`, `bypass`, or empty.
    pub cache: String,
    pub took_ms: f64,
    /// The slowest `shards[].took_ms` of the answer.
    pub max_shard_ms: f64,
    /// `shards[].took_ms` of the answer.
    pub shard_ms: Vec<f64>,
    /// `generations` of the answer: each shard's index generation.
    pub generations: Vec<String>,
    /// Ids of the hits.
    pub hits: Vec<String>,
}

impl Sample {
    pub fn ms(&self) -> f64 {
        self.latency.as_secs_f64() * 1e3
    }
}

/// A load to offer.
#[derive(Clone)]
pub struct Load {
    /// `http://host:port/search`.
    pub url: String,
    pub queries: Arc<Vec<String>>,
    pub pick: Pick,
    /// Extra parameters, e.g. `("nocache", "true")`.
    pub params: Vec<(String, String)>,
    pub request_timeout: Duration,
}

impl Load {
    pub fn new(url: String, queries: Arc<Vec<String>>, pick: Pick) -> Load {
        Load {
            url,
            queries,
            pick,
            params: Vec::new(),
            request_timeout: Duration::from_secs(5),
        }
    }

    pub fn param(mut self, key: &str, value: impl ToString) -> Load {
        self.params.push((key.to_string(), value.to_string()));
        self
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(4096)
        .build()
        .expect("http client")
}

async fn send(client: &reqwest::Client, load: &Load, i: u64) -> Sample {
    let q = &load.queries[load.pick.index(i, load.queries.len())];
    let mut query: Vec<(&str, &str)> = vec![("q", q.as_str())];
    query.extend(load.params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let response = client
        .get(&load.url)
        .query(&query)
        .timeout(load.request_timeout)
        .send()
        .await;
    let mut sample = Sample::default();
    let Ok(response) = response else {
        return sample;
    };
    sample.status = response.status().as_u16();
    let Ok(bytes) = response.bytes().await else {
        sample.status = 0;
        return sample;
    };
    if let Ok(body) = serde_json::from_slice::<serde_json::Value>(&bytes) {
        sample.partial = body["partial"].as_bool().unwrap_or(false);
        sample.cache = body["cache"].as_str().unwrap_or("").to_string();
        sample.took_ms = body["took_ms"].as_f64().unwrap_or(0.0);
        if let Some(generations) = body["generations"].as_array() {
            sample.generations = generations
                .iter()
                .filter_map(|g| g.as_str().map(str::to_string))
                .collect();
        }
        if let Some(hits) = body["hits"].as_array() {
            sample.hits = hits
                .iter()
                .filter_map(|h| h["id"].as_str().map(str::to_string))
                .collect();
        }
        if let Some(shards) = body["shards"].as_array() {
            sample.shard_ms = shards
                .iter()
                .filter_map(|s| s["took_ms"].as_f64())
                .collect();
            sample.max_shard_ms = sample.shard_ms.iter().copied().fold(0.0, f64::max);
        }
    }
    sample
}

/// Sends `rate` requests a second for `duration` on a schedule fixed in
/// advance, whatever the server does, and measures each latency from its
/// scheduled time (no coordinated omission). `first` numbers the requests
/// (it moves the query sequence along between runs).
pub async fn open_loop(
    client: &reqwest::Client,
    load: &Load,
    rate: f64,
    duration: Duration,
    first: u64,
) -> Vec<Sample> {
    let start = tokio::time::Instant::now() + Duration::from_millis(20);
    open_loop_from(client, load, rate, duration, first, start).await
}

/// [`open_loop`] with its schedule starting at `start` (a sample's `at` is
/// from there), so that another task can act on the same time line.
pub async fn open_loop_from(
    client: &reqwest::Client,
    load: &Load,
    rate: f64,
    duration: Duration,
    first: u64,
    start: tokio::time::Instant,
) -> Vec<Sample> {
    let count = (rate * duration.as_secs_f64()).round() as u64;
    let mut tasks = Vec::with_capacity(count as usize);
    for n in 0..count {
        let at = Duration::from_secs_f64(n as f64 / rate);
        tokio::time::sleep_until(start + at).await;
        let client = client.clone();
        let load = load.clone();
        tasks.push(tokio::spawn(async move {
            let mut sample = send(&client, &load, first + n).await;
            sample.at = at;
            sample.latency = (start + at).elapsed();
            sample
        }));
    }
    let mut samples = Vec::with_capacity(tasks.len());
    for task in tasks {
        samples.push(task.await.expect("request task"));
    }
    samples
}

/// `clients` loops each sending the next request when the last answered,
/// for `duration`: the closed-loop throughput.
pub async fn closed_loop(
    client: &reqwest::Client,
    load: &Load,
    clients: usize,
    duration: Duration,
    first: u64,
) -> Vec<Sample> {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let client = client.clone();
        let load = load.clone();
        let stop = Arc::clone(&stop);
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut i = first + c as u64 * 1_000_000;
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                let mut sample = send(&client, &load, i).await;
                sample.at = sent - started;
                sample.latency = sent.elapsed();
                samples.push(sample);
                i += 1;
            }
            samples
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut samples = Vec::new();
    for task in tasks {
        samples.extend(task.await.expect("client task"));
    }
    samples
}

/// The `p`th percentile (0–100, nearest rank) of `values`; NaN when empty.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn median(values: &[f64]) -> f64 {
    percentile(values, 50.0)
}

/// Latencies in milliseconds of the samples matching `keep`.
pub fn latencies(samples: &[Sample], keep: impl Fn(&Sample) -> bool) -> Vec<f64> {
    samples.iter().filter(|s| keep(s)).map(Sample::ms).collect()
}

/// Every series of a `/metrics` page: `name{labels}` → value.
pub async fn scrape(client: &reqwest::Client, base: &str) -> HashMap<String, f64> {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics request")
        .text()
        .await
        .unwrap_or_default();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter_map(|(k, v)| v.parse::<f64>().ok().map(|v| (k.to_string(), v)))
        .collect()
}

/// The sum of series named `name` whose labels contain every `filter`.
pub fn metric(series: &HashMap<String, f64>, name: &str, filters: &[&str]) -> f64 {
    series
        .iter()
        .filter(|(k, _)| {
            let bare = k.split('{').next().unwrap_or("");
            bare == name && filters.iter().all(|f| k.contains(f))
        })
        .map(|(_, v)| v)
        .sum()
}

/// A percentile estimated from a scraped histogram's cumulative buckets (the
/// upper bound of the bucket holding it), in the histogram's unit.
pub fn histogram_quantile(series: &HashMap<String, f64>, name: &str, q: f64) -> f64 {
    let bucket = format!("{name}_bucket");
    let mut buckets: Vec<(f64, f64)> = series
        .iter()
        .filter(|(k, _)| k.starts_with(&format!("{bucket}{{")))
        .filter_map(|(k, v)| {
            let le = k.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, *v))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last().map(|b| b.1).unwrap_or(0.0);
    buckets
        .iter()
        .find(|(_, count)| *count >= q * total)
        .map(|b| b.0)
        .unwrap_or(f64::NAN)
}

/// An extra frontend over a fixed leaf list (e.g. the leaves of a
/// [`crate::TestCluster`]), so that several configurations can be measured
/// against the same leaves side by side.
pub struct ExtraFrontend {
    pub frontend: Frontend,
    shutdown: CancellationToken,
}

impl ExtraFrontend {
    /// The frontend sends the cluster token ([`crate::TOKEN`], which the
    /// test cluster's and [`LeafProcesses`]' leaves require) unless
    /// `config` names tokens of its own.
    pub async fn start(mut config: FrontendConfig, leaves: Vec<String>, replicas: usize) -> Self {
        config.static_leaves = leaves;
        config.cache = false;
        if config.auth.is_empty() {
            config.auth = svc::auth::TokenConfig::single(crate::TOKEN);
        }
        let shutdown = CancellationToken::new();
        let frontend = Frontend::start(config, crate::bind().await, None, shutdown.child_token())
            .await
            .expect("frontend starts");
        assert!(
            crate::wait_routed(&frontend, replicas).await,
            "extra frontend never routed every replica"
        );
        ExtraFrontend { frontend, shutdown }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.frontend.http_addr)
    }

    pub fn search_url(&self) -> String {
        format!("{}/search", self.base())
    }

    /// The admin listener (`/metrics`, `/status`, `/cluster`).
    pub fn admin_base(&self) -> String {
        format!(
            "http://{}",
            self.frontend.admin_addr.expect("admin listener")
        )
    }
}

impl Drop for ExtraFrontend {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Formats milliseconds for a table cell.
pub fn ms(v: f64) -> String {
    if v.is_nan() {
        "–".to_string()
    } else if v < 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.1}")
    }
}

/// Formats a fraction as a percentage for a table cell.
pub fn pct(part: f64, whole: f64) -> String {
    if whole == 0.0 {
        "–".to_string()
    } else {
        format!("{:.2}%", 100.0 * part / whole)
    }
}

/// Leaf servers as real processes (the built `leaf` binary next to the
/// running example, `target/<profile>/leaf`), `shards` × `replicas` over one
/// corpus file, for scenarios that freeze a whole process with SIGSTOP.
/// Only these processes are ever signalled; they are thawed and killed on
/// drop.
pub struct LeafProcesses {
    /// `(shard, replica, child, gRPC address, metrics address)`.
    children: Vec<(u32, u32, std::process::Child, String, String)>,
}

impl LeafProcesses {
    /// No leaf process (the shards are served elsewhere, e.g. embedded in
    /// the frontend).
    pub fn none() -> LeafProcesses {
        LeafProcesses {
            children: Vec::new(),
        }
    }

    /// Starts the leaves and waits until every one is ready (`/readyz`).
    pub async fn start(corpus: &str, shards: u32, replicas: u32) -> LeafProcesses {
        Self::start_binary(&Self::binary(), corpus, shards, replicas).await
    }

    /// The built `leaf` binary next to the running test or example.
    pub fn binary() -> PathBuf {
        let exe = std::env::current_exe().expect("current exe");
        exe.parent()
            .and_then(Path::parent)
            .map(|dir| dir.join("leaf"))
            .expect("target dir")
    }

    /// Like [`LeafProcesses::start`], with another `leaf` binary (e.g. a
    /// saved build, to compare two versions in one run).
    pub async fn start_binary(
        binary: &Path,
        corpus: &str,
        shards: u32,
        replicas: u32,
    ) -> LeafProcesses {
        Self::start_binary_with(binary, corpus, shards, replicas, &[]).await
    }

    /// Like [`LeafProcesses::start_binary`], with `extra` flags for every
    /// leaf (e.g. `--frontend ADDR` to hold leases with a frontend).
    pub async fn start_binary_with(
        binary: &Path,
        corpus: &str,
        shards: u32,
        replicas: u32,
        extra: &[String],
    ) -> LeafProcesses {
        let groups: Vec<Vec<u32>> = (0..shards).map(|shard| vec![shard]).collect();
        Self::start_groups(binary, corpus, shards, &groups, replicas, extra).await
    }

    /// Like [`LeafProcesses::start_binary_with`], with each replica one
    /// process serving all `shards` (`--shard 0,1,…`); it is shard 0 in
    /// [`LeafProcesses::pid_of`] and the other accessors.
    pub async fn start_co_hosted(
        binary: &Path,
        corpus: &str,
        shards: u32,
        replicas: u32,
        extra: &[String],
    ) -> LeafProcesses {
        let groups = vec![(0..shards).collect::<Vec<u32>>()];
        Self::start_groups(binary, corpus, shards, &groups, replicas, extra).await
    }

    /// One process per group of shards and replica; a group's first shard
    /// names it.
    async fn start_groups(
        binary: &Path,
        corpus: &str,
        shards: u32,
        groups: &[Vec<u32>],
        replicas: u32,
        extra: &[String],
    ) -> LeafProcesses {
        assert!(
            binary.exists(),
            "{} is missing: cargo build --release -p leaf",
            binary.display()
        );
        let free_port = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("free port")
        };
        let mut children = Vec::new();
        let mut ready = Vec::new();
        for group in groups {
            let shard = group[0];
            let list: Vec<String> = group.iter().map(u32::to_string).collect();
            for replica in 0..replicas {
                let grpc = format!("127.0.0.1:{}", free_port());
                let metrics = format!("127.0.0.1:{}", free_port());
                let child = std::process::Command::new(binary)
                    .args(["--corpus", corpus, "--shard", &list.join(",")])
                    .args(["--shards", &shards.to_string(), "--grpc", &grpc])
                    .args(["--metrics", &metrics])
                    .args(extra)
                    .env("RUST_LOG", "warn")
                    .env("SEARCH_CLUSTER_TOKEN", crate::TOKEN)
                    .stdout(std::process::Stdio::null())
                    .spawn()
                    .expect("leaf starts");
                children.push((shard, replica, child, grpc, metrics.clone()));
                ready.push(format!("http://{metrics}/readyz"));
            }
        }
        let client = reqwest::Client::new();
        let started = Instant::now();
        for url in ready {
            loop {
                let ok = client
                    .get(&url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if ok {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(300),
                    "leaf never ready: {url}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        eprintln!(
            "{} leaf processes ready in {:.1?}",
            children.len(),
            started.elapsed()
        );
        LeafProcesses { children }
    }

    /// The leaves' gRPC addresses, shard by shard.
    pub fn addresses(&self) -> Vec<String> {
        self.children.iter().map(|c| c.3.clone()).collect()
    }

    /// Searches one leaf has served so far (`leaf_search_requests_total`
    /// on its own metrics listener).
    pub async fn searches(&self, shard: u32, replica: u32) -> f64 {
        let child = self
            .children
            .iter()
            .find(|c| c.0 == shard && c.1 == replica)
            .expect("no such leaf");
        let text = reqwest::get(format!("http://{}/metrics", child.4))
            .await
            .expect("leaf metrics")
            .text()
            .await
            .expect("leaf metrics body");
        crate::netns::metric_sum(&text, "leaf_search_requests_total")
    }

    /// The process id of one leaf, e.g. to read its CPU time.
    pub fn pid_of(&self, shard: u32, replica: u32) -> u32 {
        u32::try_from(self.pid(shard, replica)).expect("pid")
    }

    fn pid(&self, shard: u32, replica: u32) -> i32 {
        let child = self
            .children
            .iter()
            .find(|c| c.0 == shard && c.1 == replica)
            .expect("no such leaf");
        i32::try_from(child.2.id()).expect("pid")
    }

    fn signal(&self, targets: &[(u32, u32)], signal: i32) {
        for &(shard, replica) in targets {
            // SAFETY: kill(2) on a child this process started and has not
            // reaped; no memory is involved.
            unsafe { libc::kill(self.pid(shard, replica), signal) };
        }
    }

    /// Freezes the leaves (SIGSTOP).
    pub fn freeze(&self, targets: &[(u32, u32)]) {
        self.signal(targets, libc::SIGSTOP);
    }

    /// Thaws the leaves (SIGCONT).
    pub fn thaw(&self, targets: &[(u32, u32)]) {
        self.signal(targets, libc::SIGCONT);
    }

    /// Freezes `targets` for `frozen` of every `period` until `stop`, then
    /// thaws them.
    pub async fn freeze_periodically(
        &self,
        targets: &[(u32, u32)],
        frozen: Duration,
        period: Duration,
        stop: CancellationToken,
    ) {
        let mut next = tokio::time::Instant::now() + period - frozen;
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep_until(next) => {}
            }
            self.freeze(targets);
            tokio::select! {
                () = stop.cancelled() => {}
                () = tokio::time::sleep(frozen) => {}
            }
            self.thaw(targets);
            if stop.is_cancelled() {
                break;
            }
            next += period;
        }
        self.thaw(targets);
    }
}

impl Drop for LeafProcesses {
    fn drop(&mut self) {
        for (_, _, child, _, _) in &mut self.children {
            // SAFETY: as in `signal`: our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGCONT) };
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One process's CPU time and context switches at one moment, read as
/// `bench_cpu` reads them: utime and stime from `/proc/<pid>/stat` (10 ms
/// ticks), voluntary and involuntary switches summed over the threads in
/// `/proc/<pid>/task/*/status` (threads that have exited drop out).
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcCounters {
    pub user_ms: f64,
    pub sys_ms: f64,
    pub ctx: u64,
}

impl ProcCounters {
    /// `self` minus an earlier reading.
    pub fn since(&self, before: &ProcCounters) -> ProcCounters {
        ProcCounters {
            user_ms: self.user_ms - before.user_ms,
            sys_ms: self.sys_ms - before.sys_ms,
            ctx: self.ctx.saturating_sub(before.ctx),
        }
    }

    /// User plus system time.
    pub fn cpu_ms(&self) -> f64 {
        self.user_ms + self.sys_ms
    }
}

/// [`ProcCounters`] of process `pid` now (zeros when it is gone).
pub fn proc_counters(pid: u32) -> ProcCounters {
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
    let mut ctx = 0;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            let text = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
            ctx += status_field(&text, "voluntary_ctxt_switches:")
                + status_field(&text, "nonvoluntary_ctxt_switches:");
        }
    }
    ProcCounters {
        user_ms: tick(11),
        sys_ms: tick(12),
        ctx,
    }
}

/// The number after `name` (e.g. `VmRSS:`) in a `/proc/.../status` text,
/// 0 when absent.
pub fn status_field(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A TCP port on loopback that was free a moment ago, for a child process
/// to listen on.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}
