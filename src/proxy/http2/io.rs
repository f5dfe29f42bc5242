//! The downstream connection as the HTTP/2 server sees it: the bytes
//! detection already read come first, then the connection itself; wire bytes
//! are counted both ways.
//!
//! A small frame checker ([`FrameGuard`]) follows the inbound frame
//! boundaries and answers the connection errors the `h2` crate reports with
//! the wrong code (it says PROTOCOL_ERROR for all of them): a SETTINGS or PING
//! frame of the wrong length is FRAME_SIZE_ERROR (RFC 9113 §6.5, §6.7), and
//! SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1 is FLOW_CONTROL_ERROR (§6.5.2).
//! It writes that GOAWAY itself and ends the connection before `h2` sees the
//! frame.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::net::stream::Stream;
use crate::observe::ConnMetrics;

pub(super) struct CountedIo {
    prefix: Bytes,
    inner: Stream,
    metrics: ConnMetrics,
    guard: FrameGuard,
    /// A GOAWAY of ours still to be written; then reads fail.
    goaway: Option<Bytes>,
    /// The slowloris bound: a frame begun must end within this (`h2` has no
    /// such limit: a HEADERS frame trickled a byte at a time stays open).
    head_timeout: std::time::Duration,
    /// Armed while the bytes read end inside a frame; made on first use.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    armed: bool,
}

/// HTTP/2 error codes the guard sends.
const FRAME_SIZE_ERROR: u32 = 0x6;
const FLOW_CONTROL_ERROR: u32 = 0x3;
const PREFACE_LEN: usize = 24;
/// SETTINGS payloads longer than this are left to `h2` (it refuses them).
const MAX_SETTINGS: usize = 16 * 1024;

/// Where the guard is in the inbound byte stream.
#[derive(Debug)]
enum GuardState {
    /// Inside the client preface (bytes left).
    Preface(usize),
    /// Reading a 9-byte frame header.
    Header { head: [u8; 9], filled: usize },
    /// Skipping a payload (bytes left).
    Skip(usize),
    /// Collecting a SETTINGS payload to check its values.
    Settings { payload: Vec<u8>, left: usize },
    /// Stopped: an error was found, or a payload too large to follow.
    Off,
}

/// Follows HTTP/2 frames in the inbound bytes; see the module docs.
#[derive(Debug)]
pub(super) struct FrameGuard {
    state: GuardState,
    /// Frames seen to their end (the preface counts as one).
    frames: u64,
}

impl FrameGuard {
    pub(super) fn new() -> Self {
        Self {
            state: GuardState::Preface(PREFACE_LEN),
            frames: 0,
        }
    }

    /// Whether the bytes so far end inside a frame (or the preface).
    pub(super) fn mid_frame(&self) -> bool {
        match &self.state {
            GuardState::Preface(left) | GuardState::Skip(left) => *left > 0,
            GuardState::Header { filled, .. } => *filled > 0,
            GuardState::Settings { .. } => true,
            GuardState::Off => false,
        }
    }

    /// Look at the next inbound bytes; `Some(code)` for a connection error
    /// `h2` would report with the wrong code.
    pub(super) fn feed(&mut self, mut bytes: &[u8]) -> Option<u32> {
        while !bytes.is_empty() {
            match &mut self.state {
                GuardState::Off => return None,
                GuardState::Preface(left) | GuardState::Skip(left) => {
                    let n = (*left).min(bytes.len());
                    *left -= n;
                    bytes = bytes.get(n..).unwrap_or_default();
                    if *left == 0 {
                        self.frames += 1;
                        self.state = GuardState::Header {
                            head: [0; 9],
                            filled: 0,
                        };
                    }
                }
                GuardState::Header { head, filled } => {
                    let n = (9 - *filled).min(bytes.len());
                    if let (Some(dst), Some(src)) =
                        (head.get_mut(*filled..*filled + n), bytes.get(..n))
                    {
                        dst.copy_from_slice(src);
                    }
                    *filled += n;
                    bytes = bytes.get(n..).unwrap_or_default();
                    if *filled < 9 {
                        continue;
                    }
                    let len = (usize::from(head[0]) << 16)
                        | (usize::from(head[1]) << 8)
                        | usize::from(head[2]);
                    let (kind, flags) = (head[3], head[4]);
                    match kind {
                        // SETTINGS: an ACK carries nothing; otherwise 6-byte entries.
                        0x4 if (flags & 0x1 != 0 && len != 0) || len % 6 != 0 => {
                            self.state = GuardState::Off;
                            return Some(FRAME_SIZE_ERROR);
                        }
                        0x4 if len > 0 && len <= MAX_SETTINGS => {
                            self.state = GuardState::Settings {
                                payload: Vec::with_capacity(len),
                                left: len,
                            };
                        }
                        0x4 if len > MAX_SETTINGS => self.state = GuardState::Off,
                        // PING: exactly 8 bytes.
                        0x6 if len != 8 => {
                            self.state = GuardState::Off;
                            return Some(FRAME_SIZE_ERROR);
                        }
                        _ if len == 0 => {
                            self.frames += 1;
                            self.state = GuardState::Header {
                                head: [0; 9],
                                filled: 0,
                            }
                        }
                        _ => self.state = GuardState::Skip(len),
                    }
                }
                GuardState::Settings { payload, left } => {
                    let n = (*left).min(bytes.len());
                    payload.extend_from_slice(bytes.get(..n).unwrap_or_default());
                    *left -= n;
                    bytes = bytes.get(n..).unwrap_or_default();
                    if *left > 0 {
                        continue;
                    }
                    let too_large = payload.chunks_exact(6).any(|e| {
                        let id = u16::from_be_bytes([e[0], e[1]]);
                        let value = u32::from_be_bytes([e[2], e[3], e[4], e[5]]);
                        id == 0x4 && value > 0x7fff_ffff
                    });
                    if too_large {
                        self.state = GuardState::Off;
                        return Some(FLOW_CONTROL_ERROR);
                    }
                    self.frames += 1;
                    self.state = GuardState::Header {
                        head: [0; 9],
                        filled: 0,
                    };
                }
            }
        }
        None
    }
}

/// A GOAWAY frame on stream 0: no stream processed, `code`.
fn goaway(code: u32) -> Bytes {
    let mut f = vec![0, 0, 8, 0x7, 0, 0, 0, 0, 0];
    f.extend_from_slice(&0u32.to_be_bytes());
    f.extend_from_slice(&code.to_be_bytes());
    Bytes::from(f)
}

impl CountedIo {
    /// `prefix` is replayed first (it was counted when it was read).
    pub(super) fn new(
        prefix: Bytes,
        inner: Stream,
        metrics: ConnMetrics,
        head_timeout: std::time::Duration,
    ) -> Self {
        let mut guard = FrameGuard::new();
        let goaway = guard.feed(&prefix).map(goaway);
        Self {
            prefix,
            inner,
            metrics,
            guard,
            goaway,
            head_timeout,
            deadline: None,
            armed: false,
        }
    }

    /// After a read: arm the frame deadline when the bytes end inside a
    /// frame (re-arm when this read completed one), disarm at a boundary.
    fn track(&mut self, frames_before: u64) {
        if !self.guard.mid_frame() {
            self.armed = false;
        } else if !self.armed || self.guard.frames > frames_before {
            let at = tokio::time::Instant::now() + self.head_timeout;
            match &mut self.deadline {
                Some(d) => d.as_mut().reset(at),
                None => self.deadline = Some(Box::pin(tokio::time::sleep_until(at))),
            }
            self.armed = true;
        }
    }
}

impl AsyncRead for CountedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(frame) = &mut this.goaway {
            // Our GOAWAY goes out first; then the connection ends for `h2`.
            while !frame.is_empty() {
                match Pin::new(&mut this.inner).poll_write(cx, frame) {
                    Poll::Ready(Ok(n)) if n > 0 => {
                        let _ = frame.split_to(n);
                    }
                    Poll::Pending => return Poll::Pending,
                    _ => break,
                }
            }
            let _ = Pin::new(&mut this.inner).poll_flush(cx);
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "HTTP/2 connection error",
            )));
        }
        if !this.prefix.is_empty() {
            let n = buf.remaining().min(this.prefix.len());
            buf.put_slice(&this.prefix.split_to(n));
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            let new = buf.filled().get(before..).unwrap_or_default();
            this.metrics.bytes_in.increment(new.len() as u64);
            let frames_before = this.guard.frames;
            if let Some(code) = this.guard.feed(new) {
                // Hold these bytes back from `h2`: send the right GOAWAY instead.
                buf.set_filled(before);
                this.goaway = Some(goaway(code));
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            this.track(frames_before);
        } else if r.is_pending()
            && this.armed
            && let Some(d) = &mut this.deadline
            && d.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "HTTP/2 frame not complete within request_head_timeout",
            )));
        }
        r
    }
}

impl AsyncWrite for CountedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            this.metrics.bytes_out.increment(n as u64);
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            this.metrics.bytes_out.increment(n as u64);
        }
        r
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

#[cfg(test)]
mod tests {
    use super::*;

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![
            (len >> 16) as u8,
            (len >> 8) as u8,
            len as u8,
            kind,
            flags,
            0,
            0,
            0,
            0,
        ];
        f.extend_from_slice(payload);
        f
    }

    fn feed_bytewise(bytes: &[u8]) -> Option<u32> {
        let mut g = FrameGuard::new();
        bytes.iter().find_map(|b| g.feed(std::slice::from_ref(b)))
    }

    #[test]
    fn valid_streams_pass_in_any_split() {
        let mut s = PREFACE.to_vec();
        s.extend(frame(0x4, 0, &[0, 0x4, 0, 1, 0, 0])); // initial window 65536
        s.extend(frame(0x4, 0x1, &[])); // ack
        s.extend(frame(0x6, 0, &[7; 8])); // ping
        s.extend(frame(0x0, 0x1, &[1; 300])); // data
        s.extend(frame(0x8, 0, &[0, 0, 1, 0])); // window update
        assert_eq!(FrameGuard::new().feed(&s), None);
        assert_eq!(feed_bytewise(&s), None);
    }

    #[test]
    fn finds_the_errors_h2_misreports() {
        let with = |f: Vec<u8>| [PREFACE.to_vec(), f].concat();
        assert_eq!(
            feed_bytewise(&with(frame(0x4, 0, &[0; 5]))),
            Some(FRAME_SIZE_ERROR)
        );
        assert_eq!(
            feed_bytewise(&with(frame(0x4, 0x1, &[0; 6]))),
            Some(FRAME_SIZE_ERROR)
        );
        assert_eq!(
            feed_bytewise(&with(frame(0x6, 0, &[0; 7]))),
            Some(FRAME_SIZE_ERROR)
        );
        assert_eq!(
            feed_bytewise(&with(frame(0x4, 0, &[0, 0x4, 0x80, 0, 0, 0]))),
            Some(FLOW_CONTROL_ERROR)
        );
        assert_eq!(
            feed_bytewise(&with(frame(0x4, 0, &[0, 0x4, 0x7f, 0xff, 0xff, 0xff]))),
            None
        );
    }
}
