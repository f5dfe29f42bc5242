//! Upstream connections counted by their cluster's `max_connections`
//! circuit breaker: a connection holds a slot of the cluster's semaphore for
//! exactly as long as it lives (in use, idle in a pool, or shared), however
//! it is split, pooled or handed to a protocol library.

use std::io;
use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use metrics::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::client::TlsStream;

use crate::error::{Error, ErrorKind};

/// An upstream connection to a cluster's host, holding its slot.
pub type UpstreamConn = Counted<UpstreamStream>;

/// An upstream connection: plain TCP, or TLS when the cluster has `tls`.
/// Plain TCP keeps its zero-cost owned halves; TLS splits through
/// `tokio::io::split`.
#[derive(Debug)]
pub enum UpstreamStream {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// The read half of an [`UpstreamStream`].
#[derive(Debug)]
pub enum UpstreamReadHalf {
    Tcp(OwnedReadHalf),
    Tls(tokio::io::ReadHalf<Box<TlsStream<TcpStream>>>),
}

/// A borrowed read half of an [`UpstreamStream`].
pub enum UpstreamRead<'a> {
    Tcp(tokio::net::tcp::ReadHalf<'a>),
    Tls(tokio::io::ReadHalf<&'a mut TlsStream<TcpStream>>),
}

/// A borrowed write half of an [`UpstreamStream`].
pub enum UpstreamWrite<'a> {
    Tcp(tokio::net::tcp::WriteHalf<'a>),
    Tls(tokio::io::WriteHalf<&'a mut TlsStream<TcpStream>>),
}

/// The write half of an [`UpstreamStream`].
#[derive(Debug)]
pub enum UpstreamWriteHalf {
    Tcp(OwnedWriteHalf),
    Tls(tokio::io::WriteHalf<Box<TlsStream<TcpStream>>>),
}

impl UpstreamStream {
    /// The TCP connection underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Self::Tcp(s) => s,
            Self::Tls(s) => s.get_ref().0,
        }
    }

    /// The ALPN protocol the TLS handshake agreed on (`None`: plain TCP, or
    /// the server chose none).
    pub fn alpn(&self) -> Option<&[u8]> {
        match self {
            Self::Tcp(_) => None,
            Self::Tls(s) => s.get_ref().1.alpn_protocol(),
        }
    }

    /// Borrowed halves that can be used from two places at once.
    pub fn split(&mut self) -> (UpstreamRead<'_>, UpstreamWrite<'_>) {
        match self {
            Self::Tcp(s) => {
                let (r, w) = s.split();
                (UpstreamRead::Tcp(r), UpstreamWrite::Tcp(w))
            }
            Self::Tls(s) => {
                let (r, w) = tokio::io::split(&mut **s);
                (UpstreamRead::Tls(r), UpstreamWrite::Tls(w))
            }
        }
    }

    /// Split into halves that can be used from two places at once.
    pub fn into_split(self) -> (UpstreamReadHalf, UpstreamWriteHalf) {
        match self {
            Self::Tcp(s) => {
                let (r, w) = s.into_split();
                (UpstreamReadHalf::Tcp(r), UpstreamWriteHalf::Tcp(w))
            }
            Self::Tls(s) => {
                let (r, w) = tokio::io::split(s);
                (UpstreamReadHalf::Tls(r), UpstreamWriteHalf::Tls(w))
            }
        }
    }
}

/// `T` (a connection or half of one) holding its cluster's connection slot,
/// if the cluster has `max_connections`; the slot frees when this drops.
#[derive(Debug)]
pub struct Counted<T> {
    inner: T,
    slot: Option<OwnedSemaphorePermit>,
}

impl<T> Counted<T> {
    /// `inner` holding `slot` (`None`: the cluster has no connection limit).
    pub fn new(inner: T, slot: Option<OwnedSemaphorePermit>) -> Self {
        Self { inner, slot }
    }
}

/// The slot a connection holds (`None`: its cluster has no limit).
pub type ConnSlot = Option<OwnedSemaphorePermit>;

impl<T> Counted<T> {
    /// The connection and its slot, for a driver that keeps them apart
    /// (hold the slot as long as the connection).
    pub fn into_parts(self) -> (T, ConnSlot) {
        (self.inner, self.slot)
    }
}

impl Counted<UpstreamStream> {
    /// Split into halves; the read half keeps the slot (a connection's
    /// reader lives until the connection ends).
    pub fn into_split(self) -> (Counted<UpstreamReadHalf>, UpstreamWriteHalf) {
        let (rd, wr) = self.inner.into_split();
        (Counted::new(rd, self.slot), wr)
    }
}

impl<T> Deref for Counted<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T> DerefMut for Counted<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

macro_rules! delegate_read {
    ($ty:ty) => {
        impl AsyncRead for $ty {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    Self::Tcp(s) => Pin::new(s).poll_read(cx, buf),
                    Self::Tls(s) => Pin::new(s).poll_read(cx, buf),
                }
            }
        }
    };
}

macro_rules! delegate_write {
    ($ty:ty) => {
        impl AsyncWrite for $ty {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    Self::Tcp(s) => Pin::new(s).poll_write(cx, buf),
                    Self::Tls(s) => Pin::new(s).poll_write(cx, buf),
                }
            }
            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    Self::Tcp(s) => Pin::new(s).poll_flush(cx),
                    Self::Tls(s) => Pin::new(s).poll_flush(cx),
                }
            }
            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    Self::Tcp(s) => Pin::new(s).poll_shutdown(cx),
                    Self::Tls(s) => Pin::new(s).poll_shutdown(cx),
                }
            }
            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    Self::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
                    Self::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
                }
            }
            fn is_write_vectored(&self) -> bool {
                match self {
                    Self::Tcp(s) => s.is_write_vectored(),
                    Self::Tls(s) => s.is_write_vectored(),
                }
            }
        }
    };
}

delegate_read!(UpstreamStream);
delegate_read!(UpstreamReadHalf);
delegate_write!(UpstreamStream);
delegate_write!(UpstreamWriteHalf);
delegate_read!(UpstreamRead<'_>);
delegate_write!(UpstreamWrite<'_>);

/// Write `cluster`'s PROXY protocol header naming `ends` on the new
/// connection `up`, when the cluster sends one (`clusters[].proxy_protocol`;
/// only per-connection drivers call this: see docs/config.md).
pub async fn send_proxy_header<W: AsyncWrite + Unpin>(
    up: &mut W,
    cluster: &super::Cluster,
    ends: crate::net::proxy_protocol::Endpoints,
) -> Result<(), Error> {
    let Some(version) = cluster.proxy_protocol() else {
        return Ok(());
    };
    crate::net::proxy_protocol::send(up, version, ends)
        .await
        .map_err(|e| {
            Error::upstream(
                ErrorKind::ConnectFailed,
                format!("cannot send the PROXY header (cluster {})", cluster.name),
            )
            .with_source(e)
        })
}

/// A cluster's `max_connections` and `max_pending` breakers (shared by the
/// cluster and its subset views).
pub struct ConnLimit {
    slots: Arc<Semaphore>,
    max: usize,
    max_pending: Option<usize>,
    /// Requests waiting for a slot now.
    pending: AtomicUsize,
    /// Waits that ran out of `connect_timeout`.
    overflow_connections: Counter,
    /// Requests refused at once because `max_pending` were waiting.
    overflow_pending: Counter,
    /// The idle pools of the cluster and its subset views (locked only at
    /// the limit, and when a view is compiled).
    idle: std::sync::Mutex<Vec<std::sync::Weak<super::pool::IdleQueues>>>,
}

/// Counts one waiting request while it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ConnLimit {
    pub fn new(cluster: &str, max: usize, max_pending: Option<usize>) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max)),
            max,
            max_pending,
            pending: AtomicUsize::new(0),
            overflow_connections: metrics::counter!("switchyard_upstream_overflow_total", "cluster" => cluster.to_owned(), "breaker" => "max_connections"),
            overflow_pending: metrics::counter!("switchyard_upstream_overflow_total", "cluster" => cluster.to_owned(), "breaker" => "max_pending"),
            idle: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Count `queues` among the idle pools [`ConnLimit::close_one_idle`] may close from.
    pub(super) fn register_idle(&self, queues: &Arc<super::pool::IdleQueues>) {
        if let Ok(mut pools) = self.idle.lock() {
            pools.retain(|p| p.strong_count() > 0);
            pools.push(Arc::downgrade(queues));
        }
    }

    /// Close one idle pooled connection of the cluster or any of its views
    /// (freeing its slot); false when none is idle.
    pub fn close_one_idle(&self) -> bool {
        let Ok(pools) = self.idle.lock() else {
            return false;
        };
        pools
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .any(|q| super::pool::close_one_idle(&q))
    }

    pub fn max(&self) -> usize {
        self.max
    }

    pub fn max_pending(&self) -> Option<usize> {
        self.max_pending
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.max.saturating_sub(self.slots.available_permits())
    }

    /// Requests waiting for a connection now.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// A free slot now, if there is one.
    pub fn try_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().try_acquire_owned().ok()
    }

    /// Wait (at most `wait`) for a slot, unless `max_pending` requests are
    /// waiting already; the error names the breaker that refused.
    pub async fn wait_slot(
        &self,
        cluster: &str,
        wait: Duration,
    ) -> Result<OwnedSemaphorePermit, Error> {
        let before = self.pending.fetch_add(1, Ordering::Relaxed);
        let _waiting = Waiting(&self.pending);
        if self.max_pending.is_some_and(|max| before >= max) {
            self.overflow_pending.increment(1);
            return Err(Error::upstream(
                ErrorKind::Overflow,
                format!("cluster {cluster} is at its max_pending circuit breaker"),
            ));
        }
        match tokio::time::timeout(wait, self.slots.clone().acquire_owned()).await {
            Ok(Ok(slot)) => Ok(slot),
            _ => {
                self.overflow_connections.increment(1);
                Err(Error::upstream(
                    ErrorKind::Overflow,
                    format!("cluster {cluster} is at its max_connections circuit breaker"),
                ))
            }
        }
    }
}
