//! A downstream connection: plain TCP or TLS, one type for every driver
//! (a session driver may also carry its upstream connection in it: plain
//! TCP, or TLS as the client, `TlsClient`).
//! Plain TCP keeps its zero-cost split halves and a read that holds no
//! buffer while idle; TLS goes through rustls.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_rustls::server::TlsStream;

/// A TLS connection this gateway opened as the client (to an upstream).
pub type TlsClientStream = tokio_rustls::client::TlsStream<TcpStream>;

use crate::stream::websocket::WebSocket;

/// A downstream connection.
pub enum Stream {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// A protocol carried in WebSocket messages (after an HTTP upgrade).
    Ws(Box<WebSocket<Stream>>),
    /// TLS as the client (a session driver's upstream connection).
    TlsClient(Box<TlsClientStream>),
}

/// The read half of a [`Stream`].
pub enum ReadHalf {
    Tcp(OwnedReadHalf),
    Tls(tokio::io::ReadHalf<Box<TlsStream<TcpStream>>>),
    Ws(tokio::io::ReadHalf<Box<WebSocket<Stream>>>),
    TlsClient(tokio::io::ReadHalf<Box<TlsClientStream>>),
}

/// The write half of a [`Stream`].
pub enum WriteHalf {
    Tcp(OwnedWriteHalf),
    Tls(tokio::io::WriteHalf<Box<TlsStream<TcpStream>>>),
    Ws(tokio::io::WriteHalf<Box<WebSocket<Stream>>>),
    TlsClient(tokio::io::WriteHalf<Box<TlsClientStream>>),
}

impl Stream {
    /// Split into halves that can be used from two places at once.
    pub fn into_split(self) -> (ReadHalf, WriteHalf) {
        match self {
            Stream::Tcp(s) => {
                let (r, w) = s.into_split();
                (ReadHalf::Tcp(r), WriteHalf::Tcp(w))
            }
            Stream::Tls(s) => {
                let (r, w) = tokio::io::split(s);
                (ReadHalf::Tls(r), WriteHalf::Tls(w))
            }
            Stream::Ws(s) => {
                let (r, w) = tokio::io::split(s);
                (ReadHalf::Ws(r), WriteHalf::Ws(w))
            }
            Stream::TlsClient(s) => {
                let (r, w) = tokio::io::split(s);
                (ReadHalf::TlsClient(r), WriteHalf::TlsClient(w))
            }
        }
    }

    /// Read what is available into `buf`, reserving buffer space only once
    /// bytes are ready (plain TCP), so a connection waiting here holds none.
    /// `Ok(0)` at EOF.
    pub async fn read_some(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => loop {
                s.readable().await?;
                if buf.capacity() - buf.len() < 1024 {
                    buf.reserve(4096);
                }
                match s.try_read_buf(buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        // Spurious readiness: give back what was reserved.
                        if buf.is_empty() {
                            *buf = BytesMut::new();
                        }
                        continue;
                    }
                    other => return other,
                }
            },
            Stream::Tls(_) | Stream::Ws(_) | Stream::TlsClient(_) => {
                if buf.capacity() - buf.len() < 1024 {
                    buf.reserve(4096);
                }
                self.read_buf(buf).await
            }
        }
    }

    /// The local address of the underlying TCP connection.
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        match self {
            Stream::Tcp(s) => s.local_addr().ok(),
            Stream::Tls(s) => s.get_ref().0.local_addr().ok(),
            Stream::Ws(ws) => ws.get_ref().local_addr(),
            Stream::TlsClient(s) => s.get_ref().0.local_addr().ok(),
        }
    }

    /// The TLS client certificate's subject common name, if the client sent one.
    pub fn peer_common_name(&self) -> Option<String> {
        let s = match self {
            Stream::Tls(s) => s,
            Stream::Ws(ws) => return ws.get_ref().peer_common_name(),
            Stream::Tcp(_) | Stream::TlsClient(_) => return None,
        };
        let (_, session) = s.get_ref();
        let cert = session.peer_certificates()?.first()?;
        super::tls::subject_common_name(cert.as_ref())
    }

    /// The server name the client sent in its TLS ClientHello (SNI).
    pub fn server_name(&self) -> Option<&str> {
        match self {
            Stream::Tls(s) => s.get_ref().1.server_name(),
            // Our own upstream connection: the name is the one we sent.
            _ => None,
        }
    }

    /// What the TLS handshake told of the client (`None` over plain TCP).
    pub fn tls_peer(&self) -> Option<crate::filters::chain::TlsPeer> {
        let s = match self {
            Stream::Tls(s) => s,
            Stream::Ws(ws) => return ws.get_ref().tls_peer(),
            Stream::Tcp(_) | Stream::TlsClient(_) => return None,
        };
        let (_, session) = s.get_ref();
        let cert = session.peer_certificates().and_then(|c| c.first());
        Some(crate::filters::chain::TlsPeer {
            sni: session.server_name().map(str::to_owned),
            principal: cert.and_then(|c| super::tls::subject_common_name(c.as_ref())),
            certificate: cert.map(|c| c.as_ref().to_vec()),
        })
    }

    /// The ALPN protocol the TLS handshake agreed on.
    pub fn alpn(&self) -> Option<Vec<u8>> {
        let s = match self {
            Stream::Tls(s) => s,
            Stream::Ws(ws) => return ws.get_ref().alpn(),
            Stream::TlsClient(s) => return s.get_ref().1.alpn_protocol().map(<[u8]>::to_vec),
            Stream::Tcp(_) => return None,
        };
        s.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
    }
}

impl From<crate::upstream::UpstreamStream> for Stream {
    /// An upstream connection as a session driver's stream (for its
    /// zero-buffer idle read).
    fn from(s: crate::upstream::UpstreamStream) -> Self {
        match s {
            crate::upstream::UpstreamStream::Tcp(s) => Self::Tcp(s),
            crate::upstream::UpstreamStream::Tls(s) => Self::TlsClient(s),
        }
    }
}

impl ReadHalf {
    /// Put the halves back together (for upgrades that splice the connection).
    pub fn reunite(self, w: WriteHalf) -> Option<Stream> {
        match (self, w) {
            (ReadHalf::Tcp(r), WriteHalf::Tcp(w)) => r.reunite(w).ok().map(Stream::Tcp),
            (ReadHalf::Tls(r), WriteHalf::Tls(w)) => Some(Stream::Tls(r.unsplit(w))),
            (ReadHalf::Ws(r), WriteHalf::Ws(w)) => Some(Stream::Ws(r.unsplit(w))),
            (ReadHalf::TlsClient(r), WriteHalf::TlsClient(w)) => {
                Some(Stream::TlsClient(r.unsplit(w)))
            }
            _ => None,
        }
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
                    Self::Ws(s) => Pin::new(s).poll_read(cx, buf),
                    Self::TlsClient(s) => Pin::new(s).poll_read(cx, buf),
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
                    Self::Ws(s) => Pin::new(s).poll_write(cx, buf),
                    Self::TlsClient(s) => Pin::new(s).poll_write(cx, buf),
                }
            }
            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    Self::Tcp(s) => Pin::new(s).poll_flush(cx),
                    Self::Tls(s) => Pin::new(s).poll_flush(cx),
                    Self::Ws(s) => Pin::new(s).poll_flush(cx),
                    Self::TlsClient(s) => Pin::new(s).poll_flush(cx),
                }
            }
            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    Self::Tcp(s) => Pin::new(s).poll_shutdown(cx),
                    Self::Tls(s) => Pin::new(s).poll_shutdown(cx),
                    Self::Ws(s) => Pin::new(s).poll_shutdown(cx),
                    Self::TlsClient(s) => Pin::new(s).poll_shutdown(cx),
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
                    Self::Ws(s) => Pin::new(s).poll_write_vectored(cx, bufs),
                    Self::TlsClient(s) => Pin::new(s).poll_write_vectored(cx, bufs),
                }
            }
            fn is_write_vectored(&self) -> bool {
                match self {
                    Self::Tcp(s) => s.is_write_vectored(),
                    Self::Tls(s) => s.is_write_vectored(),
                    Self::Ws(s) => s.is_write_vectored(),
                    Self::TlsClient(s) => s.is_write_vectored(),
                }
            }
        }
    };
}

delegate_read!(Stream);
delegate_read!(ReadHalf);
delegate_write!(Stream);
delegate_write!(WriteHalf);
