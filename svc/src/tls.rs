//! TLS, optionally mutual, on every internal gRPC link and on the HTTP API,
//! from certificate and key files that are re-read when they change.
//!
//! - [`TlsConfig`] is plain data: `--tls-cert`/`--tls-key` (this process's
//!   identity: its server certificate, and its client certificate when it
//!   calls a server that asks for one), `--tls-client-ca` (servers: ask
//!   every client for a certificate from this authority: mutual TLS) and
//!   `--tls-ca` (clients: the authority that server certificates must come
//!   from; turns TLS on for the process's outgoing calls).
//! - [`Acceptor`] is the server side: [`Acceptor::accept`] turns an
//!   accepted TCP stream into a TLS stream; [`incoming`] does it for a
//!   tonic server's `serve_with_incoming` (handshakes run concurrently,
//!   under a time limit, and a failed one drops only that connection);
//! - [`ClientTls`] is the client side: [`ClientTls::channel`] connects a
//!   tonic [`Endpoint`] (whatever timeouts and keep-alives it was built
//!   with) through TLS, checking the server's certificate against the CA.
//!   The HTTP API uses [`Acceptor::accept`] in its own accept loop (in
//!   `frontend-core`), under its connection limits.
//!
//! Reloading: the files' modification times are checked on every new
//! connection (three `stat` calls, small beside a handshake); when one
//! changed the configuration is rebuilt, so a new connection sees a new
//! certificate without a restart, and open connections keep theirs. A
//! rebuild that fails (a half-written file) keeps the previous
//! configuration and is logged.
//!
//! TLS is off unless configured.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_stream::Stream;
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint, Uri};

/// How long a TLS handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes in progress on one listener at most; further connections
/// wait in the kernel's backlog.
const MAX_HANDSHAKES: usize = 256;

/// Certificate and key files, as configured.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// This process's certificate chain (PEM).
    pub cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub key: Option<PathBuf>,
    /// Servers: require client certificates issued by this authority.
    pub client_ca: Option<PathBuf>,
    /// Clients: verify servers against this authority (turns client TLS on).
    pub ca: Option<PathBuf>,
    /// Clients: the name checked in server certificates, instead of the
    /// host of the address called.
    pub server_name: Option<String>,
}

impl TlsConfig {
    /// The server side, none unless a certificate and key are configured.
    pub fn acceptor(&self, alpn: &[&[u8]]) -> Result<Option<Acceptor>, TlsError> {
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Acceptor::new(
                cert.clone(),
                key.clone(),
                self.client_ca.clone(),
                alpn.iter().map(|p| p.to_vec()).collect(),
            )
            .map(Some),
            (None, None) if self.client_ca.is_none() => Ok(None),
            _ => Err(TlsError::Incomplete),
        }
    }

    /// The client side, none unless a CA is configured.
    pub fn client(&self) -> Result<Option<ClientTls>, TlsError> {
        let Some(ca) = &self.ca else {
            return Ok(None);
        };
        let identity = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            (None, None) => None,
            _ => return Err(TlsError::Incomplete),
        };
        ClientTls::new(ca.clone(), identity, self.server_name.clone()).map(Some)
    }
}

/// Why a TLS configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("no certificate in {0}")]
    NoCertificate(PathBuf),
    #[error("invalid pem in {path}: {message}")]
    Pem { path: PathBuf, message: String },
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("tls: {0}")]
    Verifier(String),
    #[error("--tls-cert and --tls-key go together (and --tls-client-ca needs both)")]
    Incomplete,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|error| pem_error(path, error))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| pem_error(path, error))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.to_path_buf()));
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|error| pem_error(path, error))
}

fn roots(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certs(path)? {
        roots.add(cert)?;
    }
    Ok(Arc::new(roots))
}

fn pem_error(path: &Path, error: rustls::pki_types::pem::Error) -> TlsError {
    match error {
        rustls::pki_types::pem::Error::Io(source) => TlsError::Read {
            path: path.to_path_buf(),
            source,
        },
        other => TlsError::Pem {
            path: path.to_path_buf(),
            message: other.to_string(),
        },
    }
}

/// A configuration rebuilt when one of its files changes.
struct Reloading<T> {
    what: &'static str,
    files: Vec<PathBuf>,
    build: Box<dyn Fn() -> Result<T, TlsError> + Send + Sync>,
    current: Mutex<(Vec<Option<SystemTime>>, Arc<T>)>,
}

impl<T> Reloading<T> {
    fn new(
        what: &'static str,
        files: Vec<PathBuf>,
        build: impl Fn() -> Result<T, TlsError> + Send + Sync + 'static,
    ) -> Result<Self, TlsError> {
        let stamps = stamps(&files);
        let value = build()?;
        Ok(Reloading {
            what,
            files,
            build: Box::new(build),
            current: Mutex::new((stamps, Arc::new(value))),
        })
    }

    /// The configuration in force, rebuilt first when a file changed.
    fn get(&self) -> Arc<T> {
        let now = stamps(&self.files);
        let mut current = self.current.lock().expect("tls lock");
        if current.0 != now {
            match (self.build)() {
                Ok(value) => {
                    tracing::info!(
                        what = self.what,
                        "tls files changed, configuration reloaded"
                    );
                    *current = (now, Arc::new(value));
                }
                Err(error) => {
                    // Retried on the next connection (the stamps stay old).
                    tracing::warn!(what = self.what, %error, "tls files changed but cannot be loaded, keeping the previous configuration");
                }
            }
        }
        Arc::clone(&current.1)
    }
}

fn stamps(files: &[PathBuf]) -> Vec<Option<SystemTime>> {
    files
        .iter()
        .map(|path| std::fs::metadata(path).and_then(|m| m.modified()).ok())
        .collect()
}

/// The server side of TLS (cheap to clone).
#[derive(Clone)]
pub struct Acceptor {
    config: Arc<Reloading<rustls::ServerConfig>>,
    mutual: bool,
}

impl Acceptor {
    fn new(
        cert: PathBuf,
        key_path: PathBuf,
        client_ca: Option<PathBuf>,
        alpn: Vec<Vec<u8>>,
    ) -> Result<Self, TlsError> {
        let mut files = vec![cert.clone(), key_path.clone()];
        files.extend(client_ca.clone());
        let mutual = client_ca.is_some();
        let build = move || {
            let builder = rustls::ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()?;
            let builder = match &client_ca {
                Some(ca) => {
                    let verifier =
                        WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider())
                            .build()
                            .map_err(|error| TlsError::Verifier(error.to_string()))?;
                    builder.with_client_cert_verifier(verifier)
                }
                None => builder.with_no_client_auth(),
            };
            let mut config = builder.with_single_cert(certs(&cert)?, key(&key_path)?)?;
            config.alpn_protocols = alpn.clone();
            Ok(config)
        };
        Ok(Acceptor {
            config: Arc::new(Reloading::new("server", files, build)?),
            mutual,
        })
    }

    /// True when clients must present a certificate.
    pub fn mutual(&self) -> bool {
        self.mutual
    }

    /// The TLS handshake on an accepted stream, under [`HANDSHAKE_TIMEOUT`],
    /// with the certificate files as they are now.
    pub async fn accept<IO>(&self, stream: IO) -> io::Result<tokio_rustls::server::TlsStream<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.config.get());
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "tls handshake timed out",
            )),
        }
    }
}

/// The stream of an accepted TLS connection.
pub use tokio_rustls::server::TlsStream;

/// A connection a server accepted, over TLS or not.
pub enum Conn<IO> {
    Plain(IO),
    Tls(Box<tokio_rustls::server::TlsStream<IO>>),
}

/// The connections of `incoming` for a tonic server: as they are without
/// an acceptor, else each after its TLS handshake. Handshakes run
/// concurrently (at most `MAX_HANDSHAKES`) so that a slow client does not
/// hold up the others; a failed one is logged at debug level and dropped.
pub fn incoming<S, IO>(
    incoming: S,
    acceptor: Option<Acceptor>,
) -> Pin<Box<dyn Stream<Item = io::Result<Conn<IO>>> + Send>>
where
    S: Stream<Item = io::Result<IO>> + Send + 'static,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    use tokio_stream::StreamExt;
    let Some(acceptor) = acceptor else {
        return Box::pin(incoming.map(|accepted| accepted.map(Conn::Plain)));
    };
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    // Untracked on purpose: it ends when the server drops the stream (its
    // receiver) or the listener ends, and each handshake within its timeout.
    tokio::spawn(async move {
        let mut incoming = std::pin::pin!(incoming);
        let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
        loop {
            let accepted = tokio::select! {
                () = tx.closed() => return,
                accepted = incoming.next() => accepted,
            };
            let stream = match accepted {
                Some(Ok(stream)) => stream,
                Some(Err(error)) => {
                    tracing::debug!(%error, "accept failed");
                    continue;
                }
                None => return,
            };
            let Ok(permit) = Arc::clone(&handshakes).acquire_owned().await else {
                return;
            };
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let _permit = permit;
                match acceptor.accept(stream).await {
                    Ok(tls) => {
                        let _ = tx.send(Ok(Conn::Tls(Box::new(tls)))).await;
                    }
                    Err(error) => tracing::debug!(%error, "tls handshake failed"),
                }
            });
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for Conn<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(io) => Pin::new(io).poll_read(cx, buf),
            Conn::Tls(io) => Pin::new(io.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Conn<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(io) => Pin::new(io).poll_write(cx, buf),
            Conn::Tls(io) => Pin::new(io.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(io) => Pin::new(io).poll_flush(cx),
            Conn::Tls(io) => Pin::new(io.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(io) => Pin::new(io).poll_shutdown(cx),
            Conn::Tls(io) => Pin::new(io.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            Conn::Tls(io) => Pin::new(io.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(io) => io.is_write_vectored(),
            Conn::Tls(io) => io.is_write_vectored(),
        }
    }
}

impl<IO: Connected> Connected for Conn<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        match self {
            Conn::Plain(io) => io.connect_info(),
            Conn::Tls(io) => io.get_ref().0.connect_info(),
        }
    }
}

/// The client side of TLS (cheap to clone).
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<Reloading<rustls::ClientConfig>>,
    server_name: Option<String>,
}

impl ClientTls {
    fn new(
        ca: PathBuf,
        identity: Option<(PathBuf, PathBuf)>,
        server_name: Option<String>,
    ) -> Result<Self, TlsError> {
        let mut files = vec![ca.clone()];
        if let Some((cert, key)) = &identity {
            files.extend([cert.clone(), key.clone()]);
        }
        let build = move || {
            let builder = rustls::ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots(&ca)?);
            let mut config = match &identity {
                Some((cert, key_path)) => {
                    builder.with_client_auth_cert(certs(cert)?, key(key_path)?)?
                }
                None => builder.with_no_client_auth(),
            };
            config.alpn_protocols = vec![b"h2".to_vec()];
            Ok(config)
        };
        Ok(ClientTls {
            config: Arc::new(Reloading::new("client", files, build)?),
            server_name,
        })
    }

    /// A lazily connected channel to `endpoint` over TLS. The endpoint
    /// keeps its own settings (connect timeout, HTTP/2 keep-alive, …), so
    /// this composes with however it was built; its URI stays `http://`
    /// (TLS is this connector's, not tonic's).
    pub fn channel(&self, endpoint: &Endpoint) -> Channel {
        endpoint.connect_with_connector_lazy(Connector { tls: self.clone() })
    }
}

/// `endpoint` as a lazily connected channel, over TLS when `tls` is given.
pub fn channel(endpoint: &Endpoint, tls: Option<&ClientTls>) -> Channel {
    match tls {
        Some(tls) => tls.channel(endpoint),
        None => endpoint.connect_lazy(),
    }
}

/// Connects TCP, then TLS, for a tonic channel.
#[derive(Clone)]
struct Connector {
    tls: ClientTls,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = io::Result<T>> + Send>>;

impl tower::Service<Uri> for Connector {
    type Response = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = BoxFuture<Self::Response>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = self.tls.clone();
        Box::pin(async move {
            let invalid = |what: &str| {
                io::Error::new(io::ErrorKind::InvalidInput, format!("{what} in {uri}"))
            };
            let host = uri.host().ok_or_else(|| invalid("no host"))?;
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().ok_or_else(|| invalid("no port"))?;
            let name = tls.server_name.clone().unwrap_or_else(|| host.clone());
            let name = ServerName::try_from(name).map_err(|_| invalid("bad server name"))?;
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let connector = tokio_rustls::TlsConnector::from(tls.config.get());
            let stream = connector.connect(name, tcp).await?;
            Ok(hyper_util::rt::TokioIo::new(stream))
        })
    }
}

/// Certificates made in process, for tests.
#[cfg(feature = "test-util")]
pub mod testing {
    use std::net::{IpAddr, Ipv4Addr};
    use std::path::{Path, PathBuf};

    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        SanType,
    };

    use super::TlsConfig;

    /// A certificate authority.
    pub struct Ca {
        cert: rcgen::Certificate,
        key: KeyPair,
    }

    /// A certificate and key in PEM.
    pub struct Issued {
        pub cert: String,
        pub key: String,
    }

    impl Ca {
        pub fn new(name: &str) -> Ca {
            let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, name);
            let key = KeyPair::generate().expect("ca key");
            let cert = params.self_signed(&key).expect("ca certificate");
            Ca { cert, key }
        }

        pub fn cert_pem(&self) -> String {
            self.cert.pem()
        }

        /// A certificate for `localhost` and 127.0.0.1, good for both
        /// server and client authentication, named `common_name`.
        pub fn issue(&self, common_name: &str) -> Issued {
            let mut params = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
            params
                .subject_alt_names
                .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
            params
                .distinguished_name
                .push(DnType::CommonName, common_name);
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            let key = KeyPair::generate().expect("key");
            let cert = params
                .signed_by(&key, &self.cert, &self.key)
                .expect("certificate");
            Issued {
                cert: cert.pem(),
                key: key.serialize_pem(),
            }
        }

        /// Writes the CA certificate and an issued certificate under `dir`
        /// as `{name}.crt`, `{name}.key` and `{name}-ca.crt`, and returns a
        /// configuration with every file set (mutual TLS, both sides).
        pub fn write(&self, dir: &Path, name: &str) -> TlsConfig {
            let issued = self.issue(name);
            let path = |suffix: &str| -> PathBuf { dir.join(format!("{name}{suffix}")) };
            write_atomically(&path(".crt"), &issued.cert);
            write_atomically(&path(".key"), &issued.key);
            write_atomically(&path("-ca.crt"), &self.cert_pem());
            TlsConfig {
                cert: Some(path(".crt")),
                key: Some(path(".key")),
                client_ca: Some(path("-ca.crt")),
                ca: Some(path("-ca.crt")),
                server_name: None,
            }
        }
    }

    /// `GET path` over HTTPS/1.1 at `addr`, trusting the CA in `ca_pem`:
    /// the whole response (status line, headers, body) as text.
    pub async fn https_get(
        addr: std::net::SocketAddr,
        ca_pem: &Path,
        path: &str,
    ) -> std::io::Result<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let config = rustls::ClientConfig::builder_with_provider(super::provider())
            .with_safe_default_protocol_versions()
            .map_err(std::io::Error::other)?
            .with_root_certificates(super::roots(ca_pem).map_err(std::io::Error::other)?)
            .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(name, tcp)
            .await?;
        tls.write_all(
            format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
        let mut bytes = Vec::new();
        match tls.read_to_end(&mut bytes).await {
            Ok(_) => {}
            // A peer that closes without close_notify after the response.
            Err(_) if !bytes.is_empty() => {}
            Err(error) => return Err(error),
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Writes `text` to `path` through a rename, as a deployment would, so
    /// that a reader never sees half a file.
    pub fn write_atomically(path: &Path, text: &str) {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, path).expect("rename");
    }
}
