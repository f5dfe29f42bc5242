//! The multiplexed request/response shape (Dubbo, Bolt): many requests in
//! flight on few shared upstream connections, matched by request id.
//!
//! [`MuxConn`] is one shared upstream connection run by a single task that
//! owns everything about it — the id counter, the table of requests in flight,
//! their deadlines — so nothing is locked: it assigns each request a fresh
//! upstream id, writes it, and when the response comes back restores the
//! client's id and hands the bytes to that client's writer. A timed-out
//! request is answered with the protocol's timeout error; when the connection
//! dies, every request in flight is answered with an error at once.
//! Heartbeats from the server are answered; when the connection is idle the
//! task sends its own.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use switchyard_codecs::{Decoder, Metadata, Protocol};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::time::DelayQueue;
use tokio_util::time::delay_queue::Key;

/// What kind of frame a multiplexed protocol frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MuxKind {
    /// A request that expects a response.
    Request,
    /// A request without a response.
    OneWay,
    Response,
    HeartbeatRequest,
    HeartbeatResponse,
}

/// Why the gateway answers a request itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MuxError {
    /// No route (or no such service).
    NoRoute,
    /// No upstream could be reached.
    Unavailable,
    /// No response within the request timeout.
    Timeout,
    /// The upstream connection closed with the request in flight.
    UpstreamClosed,
    /// The route answers directly (with its configured text).
    Refused,
}

/// What the multiplexed driver needs of a protocol's codec.
pub trait MuxProtocol: Send + Sync + 'static {
    const PROTOCOL: Protocol;
    /// Largest upstream request id (ids wrap below it).
    const MAX_ID: u64;
    type Frame: Metadata + Send + Sync + 'static;
    type Decoder: Decoder<Item = Self::Frame> + Send + 'static;

    fn decoder() -> Self::Decoder;
    fn kind(frame: &Self::Frame) -> MuxKind;
    fn request_id(frame: &Self::Frame) -> u64;
    /// The frame's bytes with another request id.
    fn with_id(frame: &Self::Frame, id: u64) -> Bytes;
    /// Append the frame with another request id to a write buffer (the
    /// default goes through [`MuxProtocol::with_id`]; a codec that can write
    /// a new header and the original body directly saves a copy).
    fn write_with_id(frame: &Self::Frame, id: u64, out: &mut BytesMut) {
        out.extend_from_slice(&Self::with_id(frame, id));
    }
    /// What an error reply to this request needs besides its id (version,
    /// codec, serialization), packed small so nothing is kept of the frame.
    fn reply_context(frame: &Self::Frame) -> u32;
    /// A gateway-made error response.
    fn error_reply(id: u64, context: u32, error: MuxError, message: &str) -> Bytes;
    /// The answer to a heartbeat request.
    fn heartbeat_reply(frame: &Self::Frame) -> Bytes;
    /// A heartbeat request to keep an idle upstream connection checked.
    fn heartbeat_request(id: u64) -> Bytes;
    /// A timeout the request carries itself (Bolt does).
    fn timeout(frame: &Self::Frame) -> Option<Duration>;
}

/// A request handed to a shared upstream connection.
pub struct Outgoing<F> {
    pub frame: F,
    /// Where the response (with the client's id restored) goes.
    pub reply: mpsc::Sender<Bytes>,
    pub timeout: Duration,
}

struct Pending {
    client_id: u64,
    context: u32,
    reply: mpsc::Sender<Bytes>,
    deadline: Option<Key>,
}

/// The handle of one shared upstream connection.
pub struct MuxConn<P: MuxProtocol> {
    tx: mpsc::Sender<Outgoing<P::Frame>>,
    alive: Arc<AtomicBool>,
}

impl<P: MuxProtocol> Clone for MuxConn<P> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            alive: self.alive.clone(),
        }
    }
}

/// Largest write gathered before the connection stops taking requests.
const MAX_OUT: usize = 1 << 20;
/// Heartbeat an upstream connection idle for this long.
const HEARTBEAT_IDLE: Duration = Duration::from_secs(15);

impl<P: MuxProtocol> MuxConn<P> {
    /// Start the connection's task on `stream`.
    pub fn spawn(stream: TcpStream, name: String) -> Self {
        let (tx, rx) = mpsc::channel(4096);
        let alive = Arc::new(AtomicBool::new(true));
        tokio::spawn(run::<P>(stream, rx, alive.clone(), name));
        Self { tx, alive }
    }

    pub fn is_open(&self) -> bool {
        self.alive.load(Ordering::Relaxed) && !self.tx.is_closed()
    }

    /// Hand a request to the connection; on failure the request comes back.
    pub async fn send(&self, out: Outgoing<P::Frame>) -> Result<(), Outgoing<P::Frame>> {
        self.tx.send(out).await.map_err(|e| e.0)
    }
}

async fn run<P: MuxProtocol>(
    stream: TcpStream,
    mut rx: mpsc::Receiver<Outgoing<P::Frame>>,
    alive: Arc<AtomicBool>,
    name: String,
) {
    let (mut rd, mut wr) = stream.into_split();
    let mut decoder = P::decoder();
    let mut inbuf = BytesMut::with_capacity(16 * 1024);
    let mut out = BytesMut::with_capacity(16 * 1024);
    let mut inflight: HashMap<u64, Pending> = HashMap::new();
    let mut deadlines: DelayQueue<u64> = DelayQueue::new();
    let mut next_id: u64 = 1;
    let mut heartbeat = tokio::time::interval(HEARTBEAT_IDLE);
    heartbeat.tick().await;
    let mut heard = true;
    let reason = loop {
        tokio::select! {
            msg = rx.recv(), if out.len() < MAX_OUT => {
                let Some(msg) = msg else { break "no more users" };
                let client_id = P::request_id(&msg.frame);
                if P::kind(&msg.frame) == MuxKind::OneWay {
                    P::write_with_id(&msg.frame, client_id, &mut out);
                    continue;
                }
                let id = next_id;
                next_id = if next_id >= P::MAX_ID { 1 } else { next_id + 1 };
                P::write_with_id(&msg.frame, id, &mut out);
                let key = deadlines.insert(id, msg.timeout);
                let pending = Pending { client_id, context: P::reply_context(&msg.frame), reply: msg.reply, deadline: Some(key) };
                if let Some(old) = inflight.insert(id, pending) {
                    // The id space wrapped onto a request still waiting: fail that one.
                    if let Some(k) = old.deadline { deadlines.remove(&k); }
                    deliver(&old.reply, P::error_reply(old.client_id, old.context, MuxError::Timeout, "request id reused"));
                }
            }
            n = wr.write(&out), if !out.is_empty() => match n {
                Ok(n) if n > 0 => out.advance(n),
                _ => break "write failed",
            },
            r = rd.read_buf(&mut inbuf) => {
                match r {
                    Ok(0) => break "closed by the upstream",
                    Err(_) => break "read failed",
                    Ok(_) => heard = true,
                }
                let mut malformed = false;
                loop {
                    let frame = match decoder.decode(&mut inbuf) {
                        Ok(Some(f)) => f,
                        Ok(None) => break,
                        Err(_) => {
                            malformed = true;
                            break;
                        }
                    };
                    match P::kind(&frame) {
                        MuxKind::Response => {
                            if let Some(p) = inflight.remove(&P::request_id(&frame)) {
                                if let Some(k) = p.deadline { deadlines.remove(&k); }
                                deliver(&p.reply, P::with_id(&frame, p.client_id));
                            }
                        }
                        MuxKind::HeartbeatRequest => out.extend_from_slice(&P::heartbeat_reply(&frame)),
                        _ => {}
                    }
                }
                // Garbage can never be resynchronised: fail what is in flight now.
                if malformed {
                    break "sent a malformed frame";
                }
                if inbuf.capacity() - inbuf.len() < 4096 {
                    inbuf.reserve(16 * 1024);
                }
            }
            Some(expired) = std::future::poll_fn(|cx| deadlines.poll_expired(cx)), if !deadlines.is_empty() => {
                let id = expired.into_inner();
                if let Some(p) = inflight.remove(&id) {
                    deliver(&p.reply, P::error_reply(p.client_id, p.context, MuxError::Timeout, "upstream request timeout"));
                }
            }
            _ = heartbeat.tick() => {
                if !heard && inflight.is_empty() {
                    // Nothing heard since the last heartbeat: check the connection.
                    out.extend_from_slice(&P::heartbeat_request(next_id));
                    next_id = if next_id >= P::MAX_ID { 1 } else { next_id + 1 };
                }
                heard = false;
            }
        }
    };
    alive.store(false, Ordering::Relaxed);
    tracing::debug!(upstream = %name, reason, in_flight = inflight.len(), "multiplexed upstream connection ended");
    rx.close();
    for (_, p) in inflight.drain() {
        let message = format!("upstream connection {reason}");
        let _ = p
            .reply
            .send(P::error_reply(
                p.client_id,
                p.context,
                MuxError::UpstreamClosed,
                &message,
            ))
            .await;
    }
    while let Ok(msg) = rx.try_recv() {
        if P::kind(&msg.frame) == MuxKind::Request {
            let reply = P::error_reply(
                P::request_id(&msg.frame),
                P::reply_context(&msg.frame),
                MuxError::UpstreamClosed,
                "upstream connection closed",
            );
            deliver(&msg.reply, reply);
        }
    }
}

/// Hand a response to a client's writer without ever waiting: the connection
/// is shared, so one client that stops reading must not stall the others. A
/// client whose queue is full (thousands of unread responses) loses this one.
fn deliver(reply: &mpsc::Sender<Bytes>, bytes: Bytes) {
    if let Err(mpsc::error::TrySendError::Full(_)) = reply.try_send(bytes) {
        metrics::counter!("switchyard_rpc_responses_dropped_total").increment(1);
        tracing::debug!("client not reading its responses: one dropped");
    }
}
