//! A pipelined upstream connection, split between the two tasks of a client
//! session: the command side writes batches ([`Pipeline`]), the reply side
//! reads their replies in the same order ([`ReplyReader`]). No task, channel
//! or oneshot sits between them: replies to batches come back in the order
//! the batches were written, and the reply side takes them in the client's
//! order, so it simply reads the next `count` frames of that connection.
//! Protocol-neutral: it needs only a reply decoder.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use crate::upstream::{Counted, UpstreamConn};
use crate::upstream::{UpstreamReadHalf, UpstreamWriteHalf};
use bytes::{Bytes, BytesMut};
use switchyard_codecs::Decoder;
use tokio::io::AsyncWriteExt;

/// A reply frame the pipeline can count.
pub trait ReplyFrame {
    /// The reply's bytes as received.
    fn into_wire(self) -> Bytes;
    /// Out-of-band frames (RESP3 push) answer no request.
    fn is_out_of_band(&self) -> bool;
}

impl ReplyFrame for switchyard_codecs::redis::Reply {
    fn into_wire(self) -> Bytes {
        self.wire().clone()
    }
    fn is_out_of_band(&self) -> bool {
        // Pushes acknowledging (un)subscribe commands are their replies.
        self.kind() == switchyard_codecs::redis::ReplyKind::Push
            && switchyard_codecs::redis::is_out_of_band(self.wire())
    }
}

/// Split a connection: the write side for the command task, the read side
/// for the reply task. `skip`: replies to drop first (to commands the gateway
/// sent itself, e.g. a login).
pub fn split<D>(stream: UpstreamConn, decoder: D, skip: usize) -> (Pipeline, ReplyReader<D>) {
    let (rd, wr) = stream.into_split();
    let alive = Arc::new(AtomicBool::new(true));
    (
        Pipeline {
            wr: Some(wr),
            out: BytesMut::new(),
            alive: alive.clone(),
        },
        ReplyReader {
            rd,
            buf: BytesMut::with_capacity(16 * 1024),
            decoder,
            skip,
            stash: VecDeque::new(),
            failed: None,
            alive,
        },
    )
}

/// The write side of a pipelined upstream connection.
pub struct Pipeline {
    wr: Option<UpstreamWriteHalf>,
    out: BytesMut,
    /// Cleared by either side when the connection can no longer be used.
    alive: Arc<AtomicBool>,
}

impl Pipeline {
    /// Whether the connection is still usable.
    pub fn is_open(&self) -> bool {
        self.alive.load(Ordering::Relaxed) && self.wr.is_some()
    }

    /// Write `requests` back to back. On failure the connection is closed
    /// and the reply side fails every batch still expected on it.
    pub async fn send(&mut self, requests: &[Bytes]) {
        let Some(wr) = self.wr.as_mut() else { return };
        let written = match requests {
            [one] => wr.write_all(one).await,
            many => {
                self.out.clear();
                for r in many {
                    self.out.extend_from_slice(r);
                }
                wr.write_all(&self.out).await
            }
        };
        if written.is_err() {
            self.alive.store(false, Ordering::Relaxed);
            self.wr = None;
        }
    }
}

/// The read side of a pipelined upstream connection.
pub struct ReplyReader<D> {
    rd: Counted<UpstreamReadHalf>,
    buf: BytesMut,
    decoder: D,
    /// Replies still to drop (answers to the gateway's own commands).
    skip: usize,
    /// Frames read while no batch was expected (its slot was on its way):
    /// (wire, out-of-band), kept in order for the next batch.
    stash: VecDeque<(Bytes, bool)>,
    /// Why the connection ended; every later batch fails with it.
    failed: Option<String>,
    alive: Arc<AtomicBool>,
}

impl<D> ReplyReader<D>
where
    D: Decoder,
    D::Item: ReplyFrame,
{
    /// Give up on the connection (e.g. a reply came too late: later replies
    /// could no longer be told apart).
    pub fn fail(&mut self, why: &str) {
        self.alive.store(false, Ordering::Relaxed);
        if self.failed.is_none() {
            self.failed = Some(why.to_owned());
        }
    }

    /// Whether the connection has ended.
    pub fn is_failed(&self) -> bool {
        self.failed.is_some()
    }

    /// The next frame in the buffer, (wire, out-of-band), after any to skip;
    /// `Err` ends the connection.
    fn decoded(&mut self) -> Result<Option<(Bytes, bool)>, String> {
        loop {
            match self.decoder.decode(&mut self.buf) {
                Ok(Some(frame)) => {
                    let oob = frame.is_out_of_band();
                    if !oob && self.skip > 0 {
                        self.skip -= 1;
                        continue;
                    }
                    return Ok(Some((frame.into_wire(), oob)));
                }
                Ok(None) => return Ok(None),
                Err(e) => return Err(format!("the upstream reply was refused: {e}")),
            }
        }
    }

    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), String>> {
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(16 * 1024);
        }
        match tokio_util::io::poll_read_buf(std::pin::Pin::new(&mut self.rd), cx, &mut self.buf) {
            Poll::Ready(Ok(0)) => Poll::Ready(Err("the upstream closed the connection".into())),
            Poll::Ready(Ok(_)) => Poll::Ready(Ok(())),
            Poll::Ready(Err(e)) => {
                Poll::Ready(Err(format!("reading from the upstream failed: {e}")))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// Take replies into `out` until `left` of them (out-of-band frames in
    /// between are kept in place and not counted) have come. Keep `left` and
    /// `out` across calls; on `Err` the connection is done.
    pub fn poll_replies(
        &mut self,
        cx: &mut Context<'_>,
        left: &mut usize,
        out: &mut Vec<Bytes>,
    ) -> Poll<Result<(), String>> {
        while *left > 0 {
            let Some((wire, oob)) = self.stash.pop_front() else {
                break;
            };
            out.push(wire);
            if !oob {
                *left -= 1;
            }
        }
        if *left == 0 {
            return Poll::Ready(Ok(()));
        }
        if let Some(why) = &self.failed {
            return Poll::Ready(Err(why.clone()));
        }
        loop {
            loop {
                match self.decoded() {
                    Ok(Some((wire, oob))) => {
                        out.push(wire);
                        if !oob {
                            *left -= 1;
                            if *left == 0 {
                                return Poll::Ready(Ok(()));
                            }
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        self.fail(&e);
                        return Poll::Ready(Err(e));
                    }
                }
            }
            match self.poll_fill(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => {
                    self.fail(&e);
                    return Poll::Ready(Err(e));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// While no batch is expected: take what the server sends. Out-of-band
    /// frames are appended to `out` (Ready); a reply is kept for the batch
    /// whose slot is still on its way (and so is everything after it, to keep
    /// the order). Ready also when the connection ends.
    pub fn poll_unsolicited(&mut self, cx: &mut Context<'_>, out: &mut BytesMut) -> Poll<()> {
        if self.failed.is_some() {
            return Poll::Pending;
        }
        let mut got = false;
        loop {
            loop {
                match self.decoded() {
                    Ok(Some((wire, true))) if self.stash.is_empty() => {
                        out.extend_from_slice(&wire);
                        got = true;
                    }
                    Ok(Some(frame)) => self.stash.push_back(frame),
                    Ok(None) => break,
                    Err(e) => {
                        self.fail(&e);
                        return Poll::Ready(());
                    }
                }
            }
            if got {
                return Poll::Ready(());
            }
            match self.poll_fill(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => {
                    self.fail(&e);
                    return Poll::Ready(());
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
