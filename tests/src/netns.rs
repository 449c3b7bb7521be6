//! A test bed of hosts: each part of a cluster in its own Linux network
//! namespace, with its own address, connected by a veth pair to one bridge,
//! so that a cut link behaves as between machines (packets vanish, nothing
//! answers "refused") instead of as on loopback.
//!
//! ```text
//!   test process (root namespace, 10.77.S.1 on the bridge)
//!        │
//!   bridge nb<pid><n>br ──veth── host 0 (namespace, 10.77.S.10)
//!                       ──veth── host 1 (namespace, 10.77.S.11) …
//! ```
//!
//! - [`TestBed::new`] makes the bridge; [`TestBed::add_host`] a namespace
//!   with its address; [`TestBed::spawn`] runs a program inside one
//!   (`ip netns exec`), its output in a log file.
//! - [`TestBed::isolate`]/[`TestBed::rejoin`] take a host's link down and
//!   up (a host-wide cut); [`TestBed::cut`], [`TestBed::cut_one_way`] and
//!   [`TestBed::heal`] drop packets between two hosts with `nft` rules
//!   inside their namespaces, in one direction or both.
//! - [`NetCluster`] starts the real `frontend`, `leaf` and `cache`
//!   binaries (from the target directory of the running test) on hosts of
//!   a bed, and [`Load`] sends searches at a steady rate and records each
//!   answer, for the partition tests and the `bench_partitions` example.
//!
//! Every name (namespace, bridge, veth) carries the test process's pid and
//! a counter, and the bed's subnet `10.77.S.0/24` is claimed with a file in
//! the temporary directory, so tests in parallel never collide. Dropping
//! the bed kills the processes it started and deletes what it made, also
//! when a test panics; a later bed removes the leftovers of a process that
//! died without dropping its bed.
//!
//! Where namespaces cannot be made (not root, no `ip`, no `nft`),
//! [`TestBed::new`] prints why and returns `None`: callers skip.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

static BEDS: AtomicU32 = AtomicU32::new(0);

/// One network namespace with one address on the bed's bridge.
#[derive(Clone, Debug)]
pub struct Host {
    pub name: String,
    /// The namespace (`ip netns exec NS …`).
    pub ns: String,
    pub ip: Ipv4Addr,
    /// The bridge side of the host's veth pair (down = host cut off).
    veth: String,
}

impl Host {
    /// `ip:port` on this host.
    pub fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::from((self.ip, port))
    }
}

/// A process started on a host; killed when the bed drops.
pub struct Process {
    pub name: String,
    child: Child,
    pub log: PathBuf,
}

/// Hosts in namespaces on one bridge, and the processes started in them.
pub struct TestBed {
    prefix: String,
    bridge: String,
    subnet: u8,
    hosts: Vec<Host>,
    /// Packets dropped: (from, to, to's TCP port or every packet).
    blocked: Mutex<HashSet<(usize, usize, Option<u16>)>>,
    processes: Mutex<Vec<Process>>,
    logs: tempfile::TempDir,
    claim: PathBuf,
}

/// Why this machine cannot make a bed, or `None` when it can.
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { geteuid() } != 0 {
        return Some("not root".into());
    }
    for tool in ["ip", "nft"] {
        if !Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            return Some(format!("`{tool}` is not installed"));
        }
    }
    None
}

extern "C" {
    fn geteuid() -> u32;
}

/// Runs a command and fails with its stderr when it fails.
fn run(program: &str, args: &[&str]) -> Result<()> {
    let output = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !output.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Runs `nft -f -` with `script` inside namespace `ns`.
fn nft(ns: &str, script: &str) -> Result<()> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .context("running nft")?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(script.as_bytes())?;
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!(
            "nft in {ns}: {}\n{script}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

impl TestBed {
    /// A bed with no hosts yet, or `None` (with a message saying why and
    /// that `test` is skipped) where namespaces cannot be made.
    pub fn new(test: &str) -> Option<TestBed> {
        if let Some(why) = unavailable() {
            eprintln!("skipping {test}: network namespaces unavailable ({why}); run as root with iproute2 and nftables");
            return None;
        }
        match TestBed::try_new() {
            Ok(bed) => Some(bed),
            Err(error) => {
                eprintln!("skipping {test}: cannot make network namespaces: {error:#}");
                None
            }
        }
    }

    fn try_new() -> Result<TestBed> {
        sweep_leftovers();
        let pid = std::process::id();
        let n = BEDS.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("nb{pid:x}x{n:x}");
        let (subnet, claim) = claim_subnet()?;
        let bridge = format!("{prefix}br");
        let bed = TestBed {
            prefix,
            bridge: bridge.clone(),
            subnet,
            hosts: Vec::new(),
            blocked: Mutex::new(HashSet::new()),
            processes: Mutex::new(Vec::new()),
            logs: tempfile::tempdir()?,
            claim,
        };
        // From here on, Drop cleans up whatever was made.
        run("ip", &["link", "add", "name", &bridge, "type", "bridge"])?;
        let gateway = format!("10.77.{subnet}.1/24");
        run("ip", &["addr", "add", &gateway, "dev", &bridge])?;
        run("ip", &["link", "set", &bridge, "up"])?;
        // The hosts' traffic crosses the bridge; when the kernel passes
        // bridged packets to netfilter, a FORWARD policy of drop (as
        // container runtimes set) would cut everything. Accept it on ours.
        let _ = run(
            "ip",
            &[
                "link",
                "set",
                &bridge,
                "type",
                "bridge",
                "nf_call_iptables",
                "0",
            ],
        );
        Ok(bed)
    }

    /// The address of the test process on the bridge.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.subnet, 1)
    }

    /// Adds a host (a namespace with the next address) and returns its index.
    pub fn add_host(&mut self, name: &str) -> Result<usize> {
        let index = self.hosts.len();
        if index >= 200 {
            bail!("at most 200 hosts");
        }
        let ns = format!("{}-{index}-{name}", self.prefix);
        let veth = format!("{}v{index:x}", self.prefix);
        let peer = format!("{}h{index:x}", self.prefix);
        let ip = Ipv4Addr::new(10, 77, self.subnet, 10 + index as u8);
        run("ip", &["netns", "add", &ns])?;
        // Recorded before the rest, so that Drop removes the namespace even
        // when a later step fails.
        self.hosts.push(Host {
            name: name.to_string(),
            ns: ns.clone(),
            ip,
            veth: veth.clone(),
        });
        run(
            "ip",
            &["link", "add", &veth, "type", "veth", "peer", "name", &peer],
        )?;
        run("ip", &["link", "set", &peer, "netns", &ns])?;
        run("ip", &["link", "set", &veth, "master", &self.bridge])?;
        run("ip", &["link", "set", &veth, "up"])?;
        run("ip", &["-n", &ns, "link", "set", &peer, "name", "eth0"])?;
        run(
            "ip",
            &["-n", &ns, "addr", "add", &format!("{ip}/24"), "dev", "eth0"],
        )?;
        run("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
        run("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
        nft(
            &ns,
            "table inet netbed {\n chain input { type filter hook input priority 0; }\n chain output { type filter hook output priority 0; }\n}\n",
        )?;
        Ok(index)
    }

    pub fn host(&self, index: usize) -> &Host {
        &self.hosts[index]
    }

    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// Starts `program` with `args` in `host`'s namespace; its stdout and
    /// stderr go to a log file ([`TestBed::log`]). Killed when the bed drops.
    pub fn spawn(&self, host: usize, name: &str, program: &Path, args: &[String]) -> Result<()> {
        let log = self.logs.path().join(format!("{name}.log"));
        let out = File::create(&log)?;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.hosts[host].ns])
            .arg(program)
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        self.processes.lock().unwrap().push(Process {
            name: name.to_string(),
            child,
            log,
        });
        Ok(())
    }

    /// The log of the process started as `name`.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.logs.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    /// Kills the process started as `name` (SIGKILL) and waits for it.
    pub fn kill(&self, name: &str) {
        let mut processes = self.processes.lock().unwrap();
        for process in processes.iter_mut().filter(|p| p.name == name) {
            let _ = process.child.kill();
            let _ = process.child.wait();
        }
    }

    /// Cuts `host` off the bridge (its link down): a host-wide cut.
    pub fn isolate(&self, host: usize) -> Result<()> {
        run("ip", &["link", "set", &self.hosts[host].veth, "down"])
    }

    /// Undoes [`TestBed::isolate`].
    pub fn rejoin(&self, host: usize) -> Result<()> {
        run("ip", &["link", "set", &self.hosts[host].veth, "up"])
    }

    /// Drops every packet between `a` and `b`, both ways.
    pub fn cut(&self, a: usize, b: usize) -> Result<()> {
        self.block(&[(a, b, None), (b, a, None)], true)
    }

    /// Drops the TCP connections `client` opens to `server`'s `port` (both
    /// directions of them), while everything else between the two flows:
    /// e.g. a leaf cut from its lease registry but still reachable.
    pub fn cut_service(&self, client: usize, server: usize, port: u16) -> Result<()> {
        self.block(&[(client, server, Some(port))], true)
    }

    /// Undoes [`TestBed::cut_service`].
    pub fn heal_service(&self, client: usize, server: usize, port: u16) -> Result<()> {
        self.block(&[(client, server, Some(port))], false)
    }

    /// Drops the packets from `from` to `to` only (the other way still
    /// flows; TCP then breaks both ways, as a one-way fault does).
    pub fn cut_one_way(&self, from: usize, to: usize) -> Result<()> {
        self.block(&[(from, to, None)], true)
    }

    /// Lets packets between `a` and `b` through again, both ways.
    pub fn heal(&self, a: usize, b: usize) -> Result<()> {
        self.block(&[(a, b, None), (b, a, None)], false)
    }

    /// Lets everything through again.
    pub fn heal_all(&self) -> Result<()> {
        let all: Vec<_> = self.blocked.lock().unwrap().iter().copied().collect();
        self.block(&all, false)
    }

    fn block(&self, pairs: &[(usize, usize, Option<u16>)], on: bool) -> Result<()> {
        let mut blocked = self.blocked.lock().unwrap();
        let mut touched = HashSet::new();
        for &(from, to, port) in pairs {
            if on {
                blocked.insert((from, to, port));
            } else {
                blocked.remove(&(from, to, port));
            }
            touched.insert(from);
            touched.insert(to);
        }
        for host in touched {
            // The sender drops on output, the receiver on input: a rule
            // on either side alone would do, both make the cut hold also
            // for traffic that bypasses one hook.
            let mut script =
                String::from("flush chain inet netbed input\nflush chain inet netbed output\n");
            for &(from, to, port) in blocked.iter() {
                let (from_ip, to_ip) = (self.hosts[from].ip, self.hosts[to].ip);
                let rules: Vec<String> = match port {
                    None if from == host => vec![format!("output ip daddr {to_ip}")],
                    None if to == host => vec![format!("input ip saddr {from_ip}")],
                    // A service cut: the client's segments to the port and
                    // the server's answers from it, seen at either end.
                    Some(port) if from == host => vec![
                        format!("output ip daddr {to_ip} tcp dport {port}"),
                        format!("input ip saddr {to_ip} tcp sport {port}"),
                    ],
                    Some(port) if to == host => vec![
                        format!("input ip saddr {from_ip} tcp dport {port}"),
                        format!("output ip daddr {from_ip} tcp sport {port}"),
                    ],
                    _ => Vec::new(),
                };
                for rule in rules {
                    script.push_str(&format!("add rule inet netbed {rule} drop\n"));
                }
            }
            nft(&self.hosts[host].ns, &script)?;
        }
        Ok(())
    }
}

impl Drop for TestBed {
    fn drop(&mut self) {
        for process in self.processes.lock().unwrap().iter_mut() {
            let _ = process.child.kill();
            let _ = process.child.wait();
        }
        if std::thread::panicking() || std::env::var_os("NETBED_KEEP_LOGS").is_some() {
            for process in self.processes.lock().unwrap().iter() {
                let text = std::fs::read_to_string(&process.log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(30).collect();
                eprintln!("--- last lines of {} ---", process.name);
                for line in tail.iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
        for host in &self.hosts {
            let _ = run("ip", &["link", "del", &host.veth]);
            let _ = run("ip", &["netns", "del", &host.ns]);
        }
        let _ = run("ip", &["link", "del", &self.bridge]);
        let _ = std::fs::remove_file(&self.claim);
    }
}

fn claims_dir() -> PathBuf {
    std::env::temp_dir().join("netbed-subnets")
}

/// Claims a free `10.77.S.0/24` with a file named `S` holding our pid; a
/// claim of a dead process is taken over.
fn claim_subnet() -> Result<(u8, PathBuf)> {
    let dir = claims_dir();
    std::fs::create_dir_all(&dir)?;
    let start = (std::process::id() % 250) as u8;
    for offset in 0..250u16 {
        let subnet = ((start as u16 + offset) % 250 + 1) as u8;
        let path = dir.join(subnet.to_string());
        for _ in 0..2 {
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut file) => {
                    write!(file, "{}", std::process::id())?;
                    return Ok((subnet, path));
                }
                Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                    let owner: Option<u32> = std::fs::read_to_string(&path)
                        .ok()
                        .and_then(|s| s.trim().parse().ok());
                    match owner {
                        Some(pid) if !pid_alive(pid) => {
                            let _ = std::fs::remove_file(&path);
                        }
                        _ => break,
                    }
                }
                Err(error) => return Err(error.into()),
            }
        }
    }
    bail!("no free 10.77.x.0/24 subnet")
}

/// Deletes namespaces and bridges left by test processes that died
/// without dropping their bed (names `nb<pid hex>x…`).
fn sweep_leftovers() {
    let dead = |name: &str| -> bool {
        name.strip_prefix("nb")
            .and_then(|rest| rest.split('x').next())
            .and_then(|pid| u32::from_str_radix(pid, 16).ok())
            .is_some_and(|pid| !pid_alive(pid))
    };
    if let Ok(output) = Command::new("ip").args(["netns", "list"]).output() {
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            if dead(name) {
                let _ = run("ip", &["netns", "del", name]);
            }
        }
    }
    if let Ok(output) = Command::new("ip").args(["-o", "link", "show"]).output() {
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let name = line
                .split(':')
                .nth(1)
                .map(|n| n.trim().split('@').next().unwrap_or(""))
                .unwrap_or("");
            if dead(name) {
                let _ = run("ip", &["link", "del", name]);
            }
        }
    }
}

/// The directory holding the workspace's binaries (`leaf`, `frontend`,
/// `cache`) for the running test or example: the parent of `deps/` or
/// `examples/`.
///
/// `NETBED_BIN_DIR` overrides it: where several worktrees share one target
/// directory, its top-level binaries are whichever worktree built last.
pub fn bin_dir() -> Result<PathBuf> {
    let dir = match std::env::var_os("NETBED_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let exe = std::env::current_exe()?;
            let mut dir = exe.parent().context("no parent")?.to_path_buf();
            if matches!(
                dir.file_name().and_then(|n| n.to_str()),
                Some("deps" | "examples")
            ) {
                dir.pop();
            }
            dir
        }
    };
    for name in ["leaf", "frontend", "cache"] {
        if !dir.join(name).exists() {
            bail!(
                "{} is missing: build the servers first (cargo build -p leaf -p frontend -p cache)",
                dir.join(name).display()
            );
        }
    }
    Ok(dir)
}

/// The ports every server uses on its own host (each host has its own
/// address, so fixed ports do not collide).
pub const GRPC_PORT: u16 = 7070;
pub const HTTP_PORT: u16 = 8080;
pub const METRICS_PORT: u16 = 9100;
/// The frontend's admin listener (`/cluster`, `/status`, `/metrics`).
pub const ADMIN_PORT: u16 = 9200;
pub const ETCD_PORT: u16 = 2379;

/// What [`NetCluster::start`] starts.
#[derive(Clone, Debug)]
pub struct NetClusterConfig {
    pub frontends: usize,
    pub shards: u32,
    pub replicas: u32,
    pub caches: u32,
    /// Membership on etcd (one etcd host) instead of the frontend's registry.
    pub etcd: bool,
    pub lease_ttl: Duration,
}

impl Default for NetClusterConfig {
    fn default() -> Self {
        NetClusterConfig {
            frontends: 1,
            shards: 2,
            replicas: 2,
            caches: 0,
            etcd: false,
            lease_ttl: Duration::from_secs(3),
        }
    }
}

/// The real binaries of a cluster on the hosts of a [`TestBed`].
pub struct NetCluster {
    pub bed: TestBed,
    pub config: NetClusterConfig,
    /// Host indices of the frontends.
    pub frontends: Vec<usize>,
    /// Host index of each leaf replica, `[shard][replica]`.
    pub leaves: Vec<Vec<usize>>,
    pub caches: Vec<usize>,
    pub etcd: Option<usize>,
    client: reqwest::Client,
}

impl NetCluster {
    /// Starts the cluster and waits until every leaf is routed by every
    /// frontend (its lease is live).
    pub async fn start(mut bed: TestBed, config: NetClusterConfig) -> Result<NetCluster> {
        let bin = bin_dir()?;
        let token = crate::TOKEN.to_string();
        let ttl = format!("{}ms", config.lease_ttl.as_millis());
        let etcd = if config.etcd {
            let host = bed.add_host("etcd")?;
            let ip = bed.host(host).ip;
            let data = bed.logs.path().join("etcd-data");
            bed.spawn(
                host,
                "etcd",
                Path::new("etcd"),
                &[
                    format!("--data-dir={}", data.display()),
                    format!("--listen-client-urls=http://{ip}:{ETCD_PORT}"),
                    format!("--advertise-client-urls=http://{ip}:{ETCD_PORT}"),
                    format!("--listen-peer-urls=http://{ip}:2380"),
                    format!("--initial-advertise-peer-urls=http://{ip}:2380"),
                    format!("--initial-cluster=default=http://{ip}:2380"),
                ],
            )?;
            wait_tcp(bed.host(host).addr(ETCD_PORT)).await?;
            Some(host)
        } else {
            None
        };
        let etcd_url = etcd.map(|h| format!("etcd://{}", bed.host(h).addr(ETCD_PORT)));
        let mut frontends = Vec::new();
        for i in 0..config.frontends {
            let host = bed.add_host(&format!("fe{i}"))?;
            let h = bed.host(host).clone();
            let mut args = vec![
                "serve".to_string(),
                format!("--http={}", h.addr(HTTP_PORT)),
                format!("--grpc={}", h.addr(GRPC_PORT)),
                format!("--admin-http={}", h.addr(ADMIN_PORT)),
                format!("--shards={}", config.shards),
                format!("--token={token}"),
                format!("--cache={}", config.caches > 0),
            ];
            if let Some(url) = &etcd_url {
                args.push(format!("--membership={url}"));
            }
            bed.spawn(host, &format!("fe{i}"), &bin.join("frontend"), &args)?;
            frontends.push(host);
        }
        for &host in &frontends {
            wait_tcp(bed.host(host).addr(HTTP_PORT)).await?;
        }
        let registries: Vec<String> = match &etcd_url {
            Some(url) => vec![url.clone()],
            None => frontends
                .iter()
                .map(|&h| bed.host(h).addr(GRPC_PORT).to_string())
                .collect(),
        };
        let mut leaves = Vec::new();
        for shard in 0..config.shards {
            let mut replicas = Vec::new();
            for replica in 0..config.replicas {
                let name = format!("leaf{shard}r{replica}");
                let host = bed.add_host(&name)?;
                let h = bed.host(host).clone();
                let args = vec![
                    "--corpus=builtin".to_string(),
                    format!("--shard={shard}"),
                    format!("--shards={}", config.shards),
                    format!("--grpc={}", h.addr(GRPC_PORT)),
                    format!("--metrics={}", h.addr(METRICS_PORT)),
                    format!("--token={token}"),
                    format!("--frontend={}", registries.join(",")),
                    format!("--lease-ttl={ttl}"),
                ];
                bed.spawn(host, &name, &bin.join("leaf"), &args)?;
                replicas.push(host);
            }
            leaves.push(replicas);
        }
        let mut caches = Vec::new();
        for i in 0..config.caches {
            let name = format!("cache{i}");
            let host = bed.add_host(&name)?;
            let h = bed.host(host).clone();
            let args = vec![
                format!("--grpc={}", h.addr(GRPC_PORT)),
                format!("--token={token}"),
                format!("--frontend={}", registries.join(",")),
                format!("--lease-ttl={ttl}"),
            ];
            bed.spawn(host, &name, &bin.join("cache"), &args)?;
            caches.push(host);
        }
        let cluster = NetCluster {
            bed,
            config,
            frontends,
            leaves,
            caches,
            etcd,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()?,
        };
        let expected = (cluster.config.shards * cluster.config.replicas) as usize;
        for i in 0..cluster.frontends.len() {
            cluster
                .wait_for(Duration::from_secs(120), "every leaf routed", || async {
                    cluster
                        .routed_leaves(i)
                        .await
                        .map(|n| n >= expected)
                        .unwrap_or(false)
                })
                .await?;
        }
        Ok(cluster)
    }

    /// The HTTP base URL of frontend `i`.
    pub fn frontend_url(&self, i: usize) -> String {
        format!(
            "http://{}",
            self.bed.host(self.frontends[i]).addr(HTTP_PORT)
        )
    }

    /// `GET /search?{query}` on frontend `i`.
    pub async fn search(&self, i: usize, query: &str) -> Result<(u16, serde_json::Value)> {
        let response = self
            .client
            .get(format!("{}/search?{query}", self.frontend_url(i)))
            .send()
            .await?;
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(serde_json::Value::Null);
        Ok((status, body))
    }

    /// How many leaf replicas frontend `i` routes to now (its gauge of
    /// live replicas, summed over shards).
    pub async fn routed_leaves(&self, i: usize) -> Result<usize> {
        let text = self
            .client
            .get(format!(
                "http://{}/metrics",
                self.bed.host(self.frontends[i]).addr(ADMIN_PORT)
            ))
            .send()
            .await?
            .text()
            .await?;
        Ok(metric_sum(&text, "frontend_shard_replicas_live") as usize)
    }

    /// Searches served by the leaf on `host` so far (its own counter).
    pub async fn leaf_searches(&self, host: usize) -> Result<f64> {
        let text = self
            .client
            .get(format!(
                "http://{}/metrics",
                self.bed.host(host).addr(METRICS_PORT)
            ))
            .send()
            .await?
            .text()
            .await?;
        Ok(metric_sum(&text, "leaf_search_requests_total"))
    }

    /// Polls `condition` every 100 ms until it holds or `limit` passes.
    pub async fn wait_for<F, Fut>(
        &self,
        limit: Duration,
        what: &str,
        condition: F,
    ) -> Result<Duration>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let started = Instant::now();
        loop {
            if condition().await {
                return Ok(started.elapsed());
            }
            if started.elapsed() > limit {
                bail!("{what}: not within {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The sum of every sample of metric `name` in Prometheus text `text`.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits until `addr` accepts TCP connections (from the root namespace).
pub async fn wait_tcp(addr: SocketAddr) -> Result<()> {
    let started = Instant::now();
    loop {
        if let Ok(Ok(_)) = tokio::time::timeout(
            Duration::from_millis(500),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("{addr} did not accept connections within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One search sent by [`Load`].
#[derive(Clone, Debug)]
pub struct Sample {
    /// When it was sent, from the start of the load.
    pub at: Duration,
    pub latency: Duration,
    /// HTTP status, or 0 when no answer came (client timeout, refused).
    pub status: u16,
    pub partial: bool,
    /// The error code of a non-200 answer (`overloaded`, `unavailable`, …).
    pub code: Option<String>,
}

/// Searches at a steady rate against one frontend, each answer recorded.
pub struct Load {
    samples: Arc<Mutex<Vec<Sample>>>,
    started: Instant,
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

const QUERIES: &[&str] = &[
    "json",
    "http server",
    "async runtime",
    "parser",
    "database",
    "error handling",
    "serde",
    "tokio",
    "cache",
    "search engine",
    "index",
    "stream",
];

impl Load {
    /// Starts `rate` searches a second at `url` with a `deadline_ms` budget.
    pub fn start(url: String, rate: u32, deadline_ms: u64) -> Load {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let started = Instant::now();
        let stop = tokio_util::sync::CancellationToken::new();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(deadline_ms * 5 + 1000))
            .build()
            .expect("http client");
        let task = {
            let samples = Arc::clone(&samples);
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut n = 0usize;
                loop {
                    tokio::select! {
                        () = stop.cancelled() => break,
                        _ = tick.tick() => {}
                    }
                    let q = QUERIES[n % QUERIES.len()];
                    n += 1;
                    let url = format!("{url}/search?q={q}&timeout_ms={deadline_ms}&k=10");
                    let client = client.clone();
                    let samples = Arc::clone(&samples);
                    tokio::spawn(async move {
                        let sent = Instant::now();
                        let (status, partial, code) = match client.get(&url).send().await {
                            Ok(response) => {
                                let status = response.status().as_u16();
                                let body: serde_json::Value =
                                    response.json().await.unwrap_or_default();
                                (
                                    status,
                                    body["partial"].as_bool().unwrap_or(false),
                                    body["error"]["code"].as_str().map(str::to_string),
                                )
                            }
                            Err(_) => (0, false, None),
                        };
                        samples.lock().unwrap().push(Sample {
                            at: sent.duration_since(started),
                            latency: sent.elapsed(),
                            status,
                            partial,
                            code,
                        });
                    });
                }
            })
        };
        Load {
            samples,
            started,
            stop,
            task,
        }
    }

    /// Time since the load started (the clock of [`Sample::at`]).
    pub fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// The samples sent in `[from, to)`.
    pub fn window(&self, from: Duration, to: Duration) -> Window {
        let samples = self.samples.lock().unwrap();
        Window(
            samples
                .iter()
                .filter(|s| s.at >= from && s.at < to)
                .cloned()
                .collect(),
        )
    }

    /// Stops sending and waits for the answers still coming (bounded).
    pub async fn stop(self) -> Window {
        self.stop.cancel();
        let _ = self.task.await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let samples = self.samples.lock().unwrap().clone();
        Window(samples)
    }
}

/// Samples of one stretch of a run and their figures.
#[derive(Clone, Debug, Default)]
pub struct Window(pub Vec<Sample>);

impl Window {
    pub fn count(&self) -> usize {
        self.0.len()
    }

    /// Answers that were not 200 (0 = no answer at all).
    pub fn errors(&self) -> usize {
        self.0.iter().filter(|s| s.status != 200).count()
    }

    pub fn partial(&self) -> usize {
        self.0
            .iter()
            .filter(|s| s.status == 200 && s.partial)
            .count()
    }

    /// The `q` quantile of latency (0 when empty).
    pub fn quantile(&self, q: f64) -> Duration {
        let mut latencies: Vec<Duration> = self.0.iter().map(|s| s.latency).collect();
        if latencies.is_empty() {
            return Duration::ZERO;
        }
        latencies.sort_unstable();
        let rank = ((latencies.len() as f64 - 1.0) * q).round() as usize;
        latencies[rank.min(latencies.len() - 1)]
    }

    /// The answers that were not 200 by status and error code, with counts.
    pub fn error_kinds(&self) -> Vec<(String, usize)> {
        let mut kinds: std::collections::BTreeMap<String, usize> = Default::default();
        for s in self.0.iter().filter(|s| s.status != 200) {
            let kind = match &s.code {
                Some(code) => format!("{} {code}", s.status),
                None => s.status.to_string(),
            };
            *kinds.entry(kind).or_default() += 1;
        }
        kinds.into_iter().collect()
    }
}
