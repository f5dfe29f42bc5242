//! A pipelined upstream connection: batches of requests are written as they
//! come, and their replies are handed back batch by batch in the order the
//! batches were sent. Protocol-neutral: it needs only a reply decoder.
//!
//! The owner writes batches itself (registering each with the reader first,
//! then writing it: no task hop on the way out); one reader task per
//! connection turns replies into each batch's oneshot. When the connection
//! fails, every batch in flight fails at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{Bytes, BytesMut};
use switchyard_codecs::Decoder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, ErrorKind};

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
        self.kind() == switchyard_codecs::redis::ReplyKind::Push
    }
}

/// The replies to one batch, in order (out-of-band frames that arrived while
/// the batch was pending are kept in place).
pub type Replies = Vec<Bytes>;

/// Where a batch's replies arrive.
pub type ReplyReceiver = oneshot::Receiver<Result<Replies, Error>>;

struct Pending {
    count: usize,
    reply: oneshot::Sender<Result<Replies, Error>>,
}

/// The handle of one pipelined upstream connection.
pub struct Pipeline {
    wr: Option<tokio::net::tcp::OwnedWriteHalf>,
    pending: mpsc::UnboundedSender<Pending>,
    out: BytesMut,
    /// Cleared by the reader when the connection ends.
    alive: Arc<AtomicBool>,
}

impl Pipeline {
    /// Start the connection's reader task. Out-of-band frames that arrive
    /// while no batch is pending go to `out_of_band`.
    pub fn spawn<D>(
        stream: TcpStream,
        decoder: D,
        out_of_band: mpsc::UnboundedSender<Bytes>,
    ) -> Self
    where
        D: Decoder + Send + 'static,
        D::Item: ReplyFrame,
    {
        let (pending, pending_rx) = mpsc::unbounded_channel();
        let (rd, wr) = stream.into_split();
        let alive = Arc::new(AtomicBool::new(true));
        tokio::spawn(read_replies(
            rd,
            decoder,
            pending_rx,
            out_of_band,
            alive.clone(),
        ));
        Self {
            wr: Some(wr),
            pending,
            out: BytesMut::new(),
            alive,
        }
    }

    /// Whether the connection is still usable.
    pub fn is_open(&self) -> bool {
        self.alive.load(Ordering::Relaxed) && self.wr.is_some()
    }

    /// Write `requests` (back to back) and get their replies later.
    pub async fn send(&mut self, requests: Vec<Bytes>) -> ReplyReceiver {
        let (reply, rx) = oneshot::channel();
        let count = requests.len();
        let Some(wr) = self.wr.as_mut() else {
            let _ = reply.send(Err(closed("the upstream connection is closed")));
            return rx;
        };
        if let Err(mpsc::error::SendError(p)) = self.pending.send(Pending { count, reply }) {
            let _ = p
                .reply
                .send(Err(closed("the upstream connection is closed")));
            self.wr = None;
            return rx;
        }
        let written = match requests.as_slice() {
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
            // The reader fails this batch (and any other) when the connection ends.
            self.wr = None;
        }
        rx
    }
}

fn closed(context: &str) -> Error {
    Error::upstream(ErrorKind::UpstreamClosed, context)
}

async fn read_replies<D>(
    mut rd: tokio::net::tcp::OwnedReadHalf,
    mut decoder: D,
    mut pending: mpsc::UnboundedReceiver<Pending>,
    out_of_band: mpsc::UnboundedSender<Bytes>,
    alive: Arc<AtomicBool>,
) where
    D: Decoder,
    D::Item: ReplyFrame,
{
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut current: Option<(Pending, Replies)> = None;
    let failure = 'conn: loop {
        loop {
            let frame = match decoder.decode(&mut buf) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    break 'conn Error::upstream(
                        ErrorKind::UpstreamProtocol,
                        "the upstream sent a malformed reply",
                    )
                    .with_source(e);
                }
            };
            if current.is_none() {
                current = match pending.try_recv() {
                    Ok(p) => Some((p, Vec::new())),
                    Err(_) if frame.is_out_of_band() => {
                        let _ = out_of_band.send(frame.into_wire());
                        continue;
                    }
                    Err(_) => {
                        break 'conn Error::upstream(
                            ErrorKind::UpstreamProtocol,
                            "the upstream sent a reply nobody asked for",
                        );
                    }
                };
            }
            let Some((p, replies)) = current.as_mut() else {
                continue;
            };
            let counts = !frame.is_out_of_band();
            replies.push(frame.into_wire());
            if counts {
                p.count = p.count.saturating_sub(1);
            }
            if p.count == 0
                && let Some((p, replies)) = current.take()
            {
                let _ = p.reply.send(Ok(replies));
            }
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(16 * 1024);
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) => break closed("the upstream closed the connection"),
            Ok(_) => {}
            Err(e) => break closed("reading from the upstream failed").with_source(e),
        }
    };
    alive.store(false, Ordering::Relaxed);
    tracing::debug!(error = %failure, "pipelined upstream connection ended");
    // Fail everything in flight, now and whatever the writer still registers.
    let message = failure.to_string();
    if let Some((p, _)) = current.take() {
        let _ = p.reply.send(Err(closed(&message)));
    }
    pending.close();
    while let Some(p) = pending.recv().await {
        let _ = p.reply.send(Err(closed(&message)));
    }
}
