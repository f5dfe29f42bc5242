//! A pipelined upstream connection: batches of requests are written as they
//! come, and their replies are handed back batch by batch in the order the
//! batches were sent. Protocol-neutral: it needs only a reply decoder.
//!
//! Two tasks per connection: a writer (batches → socket, registering each
//! batch with the reader first) and a reader (socket → replies → the batch's
//! oneshot). When the connection fails, every batch in flight fails at once.

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

struct Batch {
    requests: Vec<Bytes>,
    reply: oneshot::Sender<Result<Replies, Error>>,
}

struct Pending {
    count: usize,
    reply: oneshot::Sender<Result<Replies, Error>>,
}

/// The handle of one pipelined upstream connection.
pub struct Pipeline {
    tx: mpsc::Sender<Batch>,
    /// Cleared by the reader when the connection ends.
    alive: Arc<AtomicBool>,
}

impl Pipeline {
    /// Start the connection's tasks. Out-of-band frames that arrive while no
    /// batch is pending go to `out_of_band`.
    pub fn spawn<D>(
        stream: TcpStream,
        decoder: D,
        depth: usize,
        out_of_band: mpsc::UnboundedSender<Bytes>,
    ) -> Self
    where
        D: Decoder + Send + 'static,
        D::Item: ReplyFrame,
    {
        let (tx, rx) = mpsc::channel(depth.max(1));
        let (pending_tx, pending_rx) = mpsc::unbounded_channel();
        let (rd, wr) = stream.into_split();
        let alive = Arc::new(AtomicBool::new(true));
        tokio::spawn(write_batches(wr, rx, pending_tx));
        tokio::spawn(read_replies(
            rd,
            decoder,
            pending_rx,
            out_of_band,
            alive.clone(),
        ));
        Self { tx, alive }
    }

    /// Whether the connection is still usable.
    pub fn is_open(&self) -> bool {
        self.alive.load(Ordering::Relaxed) && !self.tx.is_closed()
    }

    /// Queue `requests` (written back to back) and get their replies later.
    pub async fn send(&self, requests: Vec<Bytes>) -> ReplyReceiver {
        let (reply, rx) = oneshot::channel();
        if let Err(mpsc::error::SendError(batch)) = self.tx.send(Batch { requests, reply }).await {
            let _ = batch
                .reply
                .send(Err(closed("the upstream connection is closed")));
        }
        rx
    }
}

fn closed(context: &str) -> Error {
    Error::upstream(ErrorKind::UpstreamClosed, context)
}

async fn write_batches(
    mut wr: tokio::net::tcp::OwnedWriteHalf,
    mut rx: mpsc::Receiver<Batch>,
    pending: mpsc::UnboundedSender<Pending>,
) {
    let mut out = BytesMut::with_capacity(16 * 1024);
    while let Some(batch) = rx.recv().await {
        let mut next = Some(batch);
        // Coalesce every batch already queued into one write.
        while let Some(batch) = next.take() {
            for r in &batch.requests {
                out.extend_from_slice(r);
            }
            let count = batch.requests.len();
            if pending
                .send(Pending {
                    count,
                    reply: batch.reply,
                })
                .is_err()
            {
                return;
            }
            if out.len() < 64 * 1024 {
                next = rx.try_recv().ok();
            }
        }
        if wr.write_all(&out).await.is_err() {
            return;
        }
        out.clear();
    }
    let _ = wr.shutdown().await;
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
