//! Test fixtures (feature `test-util`): a real etcd server on loopback, and
//! a TCP proxy whose connections can be cut, for this crate's tests and the
//! `tests` crate.
//!
//! The etcd binary comes from the Debian package `etcd-server` (the CI
//! script installs it); `ETCD_BIN` names another. A missing binary fails the
//! test with that advice: the etcd tests are never skipped.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};

/// How long etcd may take to answer after it was started.
const START_PATIENCE: Duration = Duration::from_secs(30);

/// One etcd server on loopback with its data in a temporary directory;
/// killed when dropped.
pub struct EtcdServer {
    child: Mutex<Child>,
    client_addr: SocketAddr,
    /// Holds the data directory and the log until the server is dropped.
    dir: tempfile::TempDir,
}

impl EtcdServer {
    /// Starts etcd on free loopback ports (client and peer) with a fresh
    /// data directory and waits until it answers.
    ///
    /// # Panics
    ///
    /// When the `etcd` binary is missing, or etcd does not start (its log is
    /// in the message).
    pub async fn start() -> EtcdServer {
        let binary = etcd_binary();
        let mut failures = Vec::new();
        // A free port found here may be taken before etcd binds it: try
        // again with other ports.
        for _ in 0..3 {
            let server = Self::spawn(&binary);
            match server.wait_ready().await {
                Ok(()) => return server,
                Err(why) => failures.push(format!("{why}; etcd's log:\n{}", server.log())),
            }
        }
        panic!(
            "etcd ({}) did not start on loopback:\n{}",
            binary.display(),
            failures.join("\n---\n")
        );
    }

    fn spawn(binary: &PathBuf) -> EtcdServer {
        let dir = tempfile::tempdir().expect("a temporary directory for etcd");
        let client = format!("http://{}", free_port());
        let peer = format!("http://{}", free_port());
        let client_addr: SocketAddr = client["http://".len()..].parse().expect("loopback address");
        let log = std::fs::File::create(dir.path().join("etcd.log")).expect("etcd log file");
        let mut command = Command::new(binary);
        command
            .arg("--name=fixture")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=fixture={peer}"))
            .arg("--initial-cluster-state=new")
            .arg(format!(
                "--initial-cluster-token=fixture-{}",
                client_addr.port()
            ))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("etcd log file"))
            .stderr(log);
        // etcd reads ETCD_* variables as flags; the fixture's flags alone
        // decide.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("ETCD_") {
                command.env_remove(name);
            }
        }
        let child = command
            .spawn()
            .unwrap_or_else(|error| panic!("cannot run {}: {error}", binary.display()));
        EtcdServer {
            child: Mutex::new(child),
            client_addr,
            dir,
        }
    }

    async fn wait_ready(&self) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + START_PATIENCE;
        let endpoint = format!("http://{}", self.client_addr);
        let options =
            etcd_client::ConnectOptions::new().with_connect_timeout(Duration::from_secs(1));
        let client = etcd_client::Client::connect([endpoint], Some(options))
            .await
            .map_err(|error| format!("cannot make an etcd client: {error}"))?;
        loop {
            if let Ok(Some(status)) = self.child.lock().try_wait() {
                return Err(format!("etcd exited at start: {status}"));
            }
            let mut kv = client.kv_client();
            let probe =
                tokio::time::timeout(Duration::from_secs(1), kv.get("/fixture-ready", None));
            if let Ok(Ok(_)) = probe.await {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!("etcd did not answer within {START_PATIENCE:?}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `127.0.0.1:PORT` of the client URL.
    pub fn addr(&self) -> SocketAddr {
        self.client_addr
    }

    /// The membership address of this server: `etcd://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("{}{}", crate::etcd::SCHEME, self.client_addr)
    }

    /// The process id, for signals.
    pub fn pid(&self) -> u32 {
        self.child.lock().id()
    }

    /// Freezes etcd (SIGSTOP): connections stay open and nothing answers,
    /// as with a hung server or a lost network.
    pub fn pause(&self) {
        signal(self.pid(), "STOP");
    }

    /// Lets a paused etcd run again (SIGCONT).
    pub fn resume(&self) {
        signal(self.pid(), "CONT");
    }

    /// A client of this server, for puts, deletes and compactions in tests.
    pub async fn client(&self) -> etcd_client::Client {
        etcd_client::Client::connect([format!("http://{}", self.client_addr)], None)
            .await
            .expect("etcd client")
    }

    /// What etcd has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        // SIGKILL ends a stopped process too.
        let child = self.child.get_mut();
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The etcd binary: `$ETCD_BIN`, else `etcd` on `PATH`.
///
/// # Panics
///
/// When there is none, with how to install it.
pub fn etcd_binary() -> PathBuf {
    if let Some(binary) = std::env::var_os("ETCD_BIN") {
        let binary = PathBuf::from(binary);
        assert!(
            binary.is_file(),
            "ETCD_BIN={} is not a file: install etcd (`apt-get install etcd-server`) or fix ETCD_BIN",
            binary.display()
        );
        return binary;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("etcd"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "the etcd binary is missing: the etcd membership tests need a real etcd server. \
                 Install it with `apt-get install etcd-server` (the CI script does), \
                 or set ETCD_BIN to its path"
            )
        })
}

/// A loopback address with a port that was free a moment ago.
fn free_port() -> SocketAddr {
    StdListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .unwrap_or_else(|error| panic!("cannot run kill -{name}: {error}"));
    assert!(status.success(), "kill -{name} {pid} failed: {status}");
}

/// A TCP proxy on loopback in front of one upstream address. [`cut`]
/// closes every connection through it and refuses new ones (clients see
/// their server go away while it keeps running for others) until
/// [`restore`].
///
/// [`cut`]: TcpProxy::cut
/// [`restore`]: TcpProxy::restore
pub struct TcpProxy {
    addr: SocketAddr,
    state: Arc<ProxyState>,
    task: JoinHandle<()>,
}

struct ProxyState {
    open: AtomicBool,
    connections: Mutex<Vec<AbortHandle>>,
}

impl TcpProxy {
    /// Starts proxying `127.0.0.1:0` to `upstream`.
    pub async fn start(upstream: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("proxy listener");
        let addr = listener.local_addr().expect("proxy address");
        let state = Arc::new(ProxyState {
            open: AtomicBool::new(true),
            connections: Mutex::new(Vec::new()),
        });
        let accepting = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                if !accepting.open.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let connection = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                let mut connections = accepting.connections.lock();
                connections.retain(|c| !c.is_finished());
                connections.push(connection.abort_handle());
            }
        });
        TcpProxy { addr, state, task }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The `etcd://` address of the proxy, for an etcd upstream.
    pub fn etcd_url(&self) -> String {
        format!("{}{}", crate::etcd::SCHEME, self.addr)
    }

    /// Closes every connection and refuses new ones.
    pub fn cut(&self) {
        self.state.open.store(false, Ordering::SeqCst);
        for connection in self.state.connections.lock().drain(..) {
            connection.abort();
        }
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.state.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut();
    }
}
