//! A byte stream carried in WebSocket binary messages (server side), so a
//! protocol driver (MQTT over WebSocket) runs over it as over TCP. Pings are
//! answered, a close is answered and reads then end, writes become one binary
//! frame each.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use switchyard_codecs::Decoder as _;
use switchyard_codecs::websocket::{self, opcode, status};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Most bytes of frames waiting to be written before writes push back.
const MAX_PENDING: usize = 256 * 1024;

/// The server side of a WebSocket connection over `S`.
pub struct WebSocket<S> {
    inner: S,
    decoder: websocket::Decoder,
    /// Bytes read from `inner`, not yet decoded into frames.
    raw: BytesMut,
    /// Payload of the current message not yet handed to the reader.
    payload: Bytes,
    /// Frames (data, pongs, close) waiting to be written to `inner`.
    out: BytesMut,
    /// The peer sent a close frame (or broke the protocol): reads are at EOF.
    closed: bool,
}

impl<S> WebSocket<S> {
    /// Wrap `inner` after the upgrade handshake; `raw` holds bytes already
    /// read past the handshake.
    pub fn new(inner: S, raw: BytesMut, max_frame: usize) -> Self {
        Self {
            inner,
            decoder: websocket::Decoder::new(max_frame),
            raw,
            payload: Bytes::new(),
            out: BytesMut::new(),
            closed: false,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncWrite + Unpin> WebSocket<S> {
    /// Write out pending frames.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.out.is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out.advance(n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WebSocket<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.payload.is_empty() {
                let n = this.payload.len().min(buf.remaining());
                buf.put_slice(&this.payload.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if this.closed {
                let _ = this.poll_drain(cx);
                return Poll::Ready(Ok(()));
            }
            match this.decoder.decode(&mut this.raw) {
                Ok(Some(frame)) => match frame.opcode {
                    opcode::BINARY | opcode::CONTINUATION => this.payload = frame.payload,
                    opcode::PING => {
                        websocket::encode(opcode::PONG, &frame.payload, &mut this.out);
                        let _ = this.poll_drain(cx);
                    }
                    opcode::PONG => {}
                    opcode::CLOSE => {
                        websocket::close(status::NORMAL, &mut this.out);
                        this.closed = true;
                    }
                    _ => {
                        // Text frames cannot carry a binary protocol.
                        websocket::close(status::UNSUPPORTED_DATA, &mut this.out);
                        this.closed = true;
                    }
                },
                Ok(None) => {
                    if this.raw.capacity() - this.raw.len() < 1024 {
                        this.raw.reserve(4096);
                    }
                    let n = ready!(tokio_util::io::poll_read_buf(
                        Pin::new(&mut this.inner),
                        cx,
                        &mut this.raw
                    ))?;
                    if n == 0 {
                        this.closed = true;
                    }
                }
                Err(e) => {
                    let code = match e {
                        switchyard_codecs::CodecError::FrameTooLarge { .. } => status::TOO_BIG,
                        _ => status::PROTOCOL_ERROR,
                    };
                    websocket::close(code, &mut this.out);
                    this.closed = true;
                }
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WebSocket<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.out.len() >= MAX_PENDING {
            ready!(this.poll_drain(cx))?;
        }
        websocket::encode(opcode::BINARY, data, &mut this.out);
        // Push what we can now; the rest goes on the next write or flush.
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.closed {
            websocket::close(status::NORMAL, &mut this.out);
            this.closed = true;
        }
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}
