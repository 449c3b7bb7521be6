//! Listeners: binding with a startup error that names what failed, and
//! accepted connections that can be cut at once, so that killing a server
//! in a test behaves like a crash: tonic serves each connection on its own
//! task, which would outlive the server future, so every connection watches
//! a kill token and fails its I/O when it fires.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::exit::Failure;

/// Binds `addr` for the endpoint called `what` (`grpc`, `metrics`, …).
/// The error is a [`crate::exit::Failure::Startup`] that reads
/// `cannot bind metrics address 127.0.0.1:9400: …`.
pub async fn bind(what: &str, addr: &str) -> Result<TcpListener, Failure> {
    TcpListener::bind(addr).await.map_err(|error| {
        Failure::Startup(anyhow::anyhow!(
            "cannot bind {what} address {addr}: {}",
            crate::exit::describe_io(&error)
        ))
    })
}

/// Binds `addr` when given: optional endpoints are off unless asked for.
pub async fn bind_optional(what: &str, addr: Option<&str>) -> Result<Option<TcpListener>, Failure> {
    match addr {
        Some(addr) => bind(what, addr).await.map(Some),
        None => Ok(None),
    }
}

/// The connections accepted on `listener`, each cut when `kill` fires.
pub fn incoming(
    listener: TcpListener,
    kill: CancellationToken,
) -> impl Stream<Item = io::Result<Killable>> {
    TcpListenerStream::new(listener).map(move |accepted| {
        let stream = accepted?;
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set tcp_nodelay");
        }
        Ok(Killable {
            inner: stream,
            killed: Box::pin(kill.clone().cancelled_owned()),
            dead: false,
        })
    })
}

/// A TCP stream whose reads and writes fail once its kill token fires.
pub struct Killable {
    inner: TcpStream,
    killed: Pin<Box<WaitForCancellationFutureOwned>>,
    dead: bool,
}

impl Killable {
    /// True once killed; otherwise registers the task to be woken on kill.
    fn is_dead(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.dead && self.killed.as_mut().poll(cx).is_ready() {
            self.dead = true;
        }
        self.dead
    }
}

fn reset() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "server killed")
}

impl AsyncRead for Killable {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.is_dead(cx) {
            return Poll::Ready(Err(reset()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Killable {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.is_dead(cx) {
            return Poll::Ready(Err(reset()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.is_dead(cx) {
            return Poll::Ready(Err(reset()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.is_dead(cx) {
            return Poll::Ready(Err(reset()));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl Connected for Killable {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}
