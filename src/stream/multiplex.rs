//! The multiplexed request/response shape (Dubbo, Bolt): many requests in
//! flight on few shared upstream connections, matched by request id.
//!
//! [`MuxConn`] is one shared upstream connection run by a single task that
//! owns everything about it — the id counter, the table of requests in flight,
//! their deadlines — so nothing is locked: it assigns each request a fresh
//! upstream id, writes it, and when the response comes back restores the
//! client's id and hands the bytes to that client's writer. A timed-out
//! request is answered with the protocol's timeout error; when the connection
//! dies, every request written on it and still unanswered is answered with an
//! error at once. Requests the connection took but had not (completely)
//! written when it died, and those still queued for it, cannot have reached
//! the server: they are sent again, once, on a fresh connection to the same
//! host (some servers close a connection after every response). A host whose
//! server closed a connection right after answering everything on it
//! ([`HostHabits`]) has its connections retire as soon as nothing is in flight
//! on them, so no request is written on a connection the server is closing;
//! a retired connection the server then keeps open clears that habit.
//! Heartbeats from the server are answered; when the connection is idle the
//! task sends its own.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::upstream::{Counted, UpstreamConn};
use crate::upstream::{UpstreamReadHalf, UpstreamWriteHalf};
use bytes::{Buf, Bytes, BytesMut};
use switchyard_codecs::{Decoder, Metadata, Protocol};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::time::DelayQueue;
use tokio_util::time::delay_queue::Key;

use crate::filters::chain::Permit;

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
    /// The route answers directly (with its configured text), or a filter
    /// refused the request (access, size).
    Refused,
    /// Over a rate or concurrency limit, or the gateway is overloaded.
    Busy,
}

/// What the multiplexed driver needs of a protocol's codec.
pub trait MuxProtocol: Send + Sync + 'static {
    const PROTOCOL: Protocol;
    /// Largest upstream request id (ids wrap below it).
    const MAX_ID: u64;
    type Frame: Metadata + Clone + Send + Sync + 'static;
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
    /// The size of the request's payload (the body after the headers), for
    /// the `payload_limit` filter.
    fn payload_len(frame: &Self::Frame) -> usize;
    /// The response's status says the server failed (not the call itself).
    fn server_error(_frame: &Self::Frame) -> bool {
        false
    }
    /// The response's status code (Dubbo, Bolt), for the access log.
    fn status(_frame: &Self::Frame) -> Option<u32> {
        None
    }
    /// The request with its headers (Dubbo attachments, Bolt header map)
    /// edited by `edit` (the `headers` filter); `None` when it has none to
    /// edit, or they cannot be read, and goes as it came.
    fn with_headers(
        _frame: &Self::Frame,
        _edit: &mut dyn FnMut(&mut switchyard_codecs::fields::FieldList<'_>),
    ) -> Option<Self::Frame> {
        None
    }
}

/// How a request a connection carried ended, for the host's outlier detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answered {
    /// A response that is not a server error.
    Ok,
    /// A response with a server-error status ([`MuxProtocol::server_error`]).
    ServerError,
    /// No response within the request's timeout.
    TimedOut,
}

/// Told how each request ends (called on the connection's task: keep it cheap).
pub type Observe = Arc<dyn Fn(Answered) + Send + Sync>;

/// Opens a fresh connection to the host a [`MuxConn`] talks to (`None`: it
/// could not), for the requests a closed connection never wrote.
pub type Reconnect =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Option<UpstreamConn>> + Send>> + Send + Sync>;

/// What the connections to one host learn about its server, shared by them.
#[derive(Debug, Default)]
pub struct HostHabits {
    /// The server closes a connection right after answering all it read (as
    /// some Bolt servers do after every response): a connection with nothing
    /// in flight takes no more requests.
    closes_after_response: AtomicBool,
}

/// A close within this time of a connection's last response (with nothing
/// else in flight) is the server closing after responses; a retired
/// connection the server keeps open this long clears the habit.
const CLOSE_AFTER_RESPONSE: Duration = Duration::from_secs(1);

/// A request handed to a shared upstream connection.
pub struct Outgoing<F> {
    pub frame: F,
    /// Where the response (with the client's id restored) goes.
    pub reply: mpsc::Sender<Bytes>,
    pub timeout: Duration,
    /// Counts the request in flight to its host until it is answered or fails.
    pub in_flight: Option<crate::upstream::InFlight>,
    /// The request's place under the filters' concurrency limits, released
    /// when its response (or its failure) is delivered.
    pub permit: Permit,
}

struct Pending {
    client_id: u64,
    context: u32,
    reply: mpsc::Sender<Bytes>,
    deadline: Option<Key>,
    _in_flight: Option<crate::upstream::InFlight>,
    permit: Permit,
}

/// A request whose bytes are in the write buffer but not all on the socket
/// yet: kept (a view, no copy) until they are, to be sent again if the
/// connection dies first.
struct Unwritten<F> {
    /// Where its bytes end in the connection's output stream.
    end: u64,
    /// Its upstream id (`None`: one-way, nothing in flight).
    id: Option<u64>,
    frame: F,
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
    /// Start the connection's task on `stream`; `reconnect` opens the fresh
    /// connection that requests never written on this one are sent on;
    /// `habits` are shared by the connections to the same host.
    pub fn spawn(
        stream: UpstreamConn,
        name: String,
        reconnect: Reconnect,
        habits: Arc<HostHabits>,
        observe: Observe,
    ) -> Self {
        let (tx, rx) = mpsc::channel(4096);
        let alive = Arc::new(AtomicBool::new(true));
        let task = Task::<P> {
            rx,
            inflight: HashMap::new(),
            deadlines: DelayQueue::new(),
            next_id: 1,
            decoder: P::decoder(),
            habits,
            idle_since: None,
            observe,
        };
        tokio::spawn(run::<P>(task, stream, alive.clone(), name, reconnect));
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

/// One shared connection's task: the queue it takes requests from and the
/// requests in flight, kept across the fresh connection that carries the
/// requests a closed one never wrote.
struct Task<P: MuxProtocol> {
    rx: mpsc::Receiver<Outgoing<P::Frame>>,
    inflight: HashMap<u64, Pending>,
    deadlines: DelayQueue<u64>,
    next_id: u64,
    decoder: P::Decoder,
    habits: Arc<HostHabits>,
    /// When a response last left nothing in flight.
    idle_since: Option<Instant>,
    observe: Observe,
}

/// How a connection's [`Task::serve`] ended.
struct Ended<F> {
    reason: &'static str,
    /// The requests it never completely wrote.
    cut_off: VecDeque<Unwritten<F>>,
    /// Retired with nothing in flight (the host closes after responses): the
    /// connection, to see whether the server closes it.
    retired: Option<(Counted<UpstreamReadHalf>, UpstreamWriteHalf)>,
}

impl<P: MuxProtocol> Task<P> {
    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id = if id >= P::MAX_ID { 1 } else { id + 1 };
        id
    }

    /// Put `msg` in the write buffer `out` under a fresh upstream id (`sent`:
    /// the bytes of this connection already on the socket).
    fn queue(
        &mut self,
        msg: Outgoing<P::Frame>,
        out: &mut BytesMut,
        sent: u64,
        unwritten: &mut VecDeque<Unwritten<P::Frame>>,
    ) {
        let client_id = P::request_id(&msg.frame);
        let id = if P::kind(&msg.frame) == MuxKind::OneWay {
            P::write_with_id(&msg.frame, client_id, out);
            None
        } else {
            let id = self.take_id();
            P::write_with_id(&msg.frame, id, out);
            let key = self.deadlines.insert(id, msg.timeout);
            let pending = Pending {
                client_id,
                context: P::reply_context(&msg.frame),
                reply: msg.reply,
                deadline: Some(key),
                _in_flight: msg.in_flight,
                permit: msg.permit,
            };
            if let Some(old) = self.inflight.insert(id, pending) {
                // The id space wrapped onto a request still waiting: fail that one.
                if let Some(k) = old.deadline {
                    self.deadlines.remove(&k);
                }
                deliver(
                    &old.reply,
                    P::error_reply(
                        old.client_id,
                        old.context,
                        MuxError::Timeout,
                        "request id reused",
                    ),
                );
            }
            Some(id)
        };
        unwritten.push_back(Unwritten {
            end: sent + out.len() as u64,
            id,
            frame: msg.frame,
        });
    }

    /// Serve one upstream connection until it ends, writing `out` (whose
    /// requests are `unwritten`) first. `taking`: take new requests from the
    /// queue; without, end once every request in flight is answered. Returns
    /// why it ended and the requests it never completely wrote.
    async fn serve(
        &mut self,
        stream: UpstreamConn,
        mut taking: bool,
        mut out: BytesMut,
        mut unwritten: VecDeque<Unwritten<P::Frame>>,
    ) -> Ended<P::Frame> {
        let (mut rd, mut wr) = stream.into_split();
        let mut inbuf = BytesMut::with_capacity(16 * 1024);
        let mut sent: u64 = 0;
        let mut heartbeat = tokio::time::interval(HEARTBEAT_IDLE);
        heartbeat.tick().await;
        let mut heard = true;
        let reason = loop {
            if !taking && self.inflight.is_empty() && out.is_empty() {
                break "no more requests";
            }
            // Reads first: a close the server sent is seen before more
            // requests are written on a connection it no longer reads.
            tokio::select! {
                biased;
                r = rd.read_buf(&mut inbuf) => {
                    match r {
                        Ok(0) => break CLOSED_BY_UPSTREAM,
                        Err(_) => break "read failed",
                        Ok(_) => heard = true,
                    }
                    let mut malformed = false;
                    loop {
                        let frame = match self.decoder.decode(&mut inbuf) {
                            Ok(Some(f)) => f,
                            Ok(None) => break,
                            Err(_) => {
                                malformed = true;
                                break;
                            }
                        };
                        match P::kind(&frame) {
                            MuxKind::Response => {
                                if let Some(mut p) = self.inflight.remove(&P::request_id(&frame)) {
                                    if let Some(k) = p.deadline { self.deadlines.remove(&k); }
                                    (self.observe)(if P::server_error(&frame) { Answered::ServerError } else { Answered::Ok });
                                    let answer = P::with_id(&frame, p.client_id);
                                    if let Some(r) = p.permit.log() {
                                        r.status = P::status(&frame);
                                        r.bytes_out = Some(answer.len() as u64);
                                    }
                                    deliver(&p.reply, answer);
                                    if self.inflight.is_empty() {
                                        self.idle_since = Some(Instant::now());
                                    }
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
                    if taking && self.inflight.is_empty() && out.is_empty()
                        && self.habits.closes_after_response.load(Ordering::Relaxed)
                    {
                        return Ended {
                            reason: "retired (the server closes after responses)",
                            cut_off: unwritten,
                            retired: Some((rd, wr)),
                        };
                    }
                }
                n = wr.write(&out), if !out.is_empty() => match n {
                    Ok(n) if n > 0 => {
                        out.advance(n);
                        sent += n as u64;
                        while unwritten.front().is_some_and(|u| u.end <= sent) {
                            unwritten.pop_front();
                        }
                    }
                    _ => break "write failed",
                },
                msg = self.rx.recv(), if taking && out.len() < MAX_OUT => {
                    let Some(msg) = msg else {
                        // Every handle is gone: answer what is in flight, then end.
                        taking = false;
                        continue;
                    };
                    self.queue(msg, &mut out, sent, &mut unwritten);
                    // Gather what else is queued into the same write.
                    while out.len() < MAX_OUT {
                        let Ok(msg) = self.rx.try_recv() else { break };
                        self.queue(msg, &mut out, sent, &mut unwritten);
                    }
                }
                Some(expired) = std::future::poll_fn(|cx| self.deadlines.poll_expired(cx)), if !self.deadlines.is_empty() => {
                    let id = expired.into_inner();
                    if let Some(mut p) = self.inflight.remove(&id) {
                        p.permit.log_upstream_failed(504);
                        (self.observe)(Answered::TimedOut);
                        deliver(&p.reply, P::error_reply(p.client_id, p.context, MuxError::Timeout, "upstream request timeout"));
                    }
                }
                _ = heartbeat.tick() => {
                    if !heard && self.inflight.is_empty() {
                        // Nothing heard since the last heartbeat: check the connection.
                        let id = self.take_id();
                        out.extend_from_slice(&P::heartbeat_request(id));
                    }
                    heard = false;
                }
            }
        };
        Ended {
            reason,
            cut_off: unwritten,
            retired: None,
        }
    }

    /// Answer every request in flight with `error`.
    async fn fail_all(&mut self, error: MuxError, message: &str) {
        for (_, mut p) in self.inflight.drain() {
            p.permit.log_upstream_failed(502);
            if let Some(k) = p.deadline {
                self.deadlines.remove(&k);
            }
            let reply = P::error_reply(p.client_id, p.context, error, message);
            let _ = p.reply.send(reply).await;
        }
    }
}

async fn run<P: MuxProtocol>(
    mut task: Task<P>,
    stream: UpstreamConn,
    alive: Arc<AtomicBool>,
    name: String,
    reconnect: Reconnect,
) {
    let out = BytesMut::with_capacity(16 * 1024);
    let ended = task.serve(stream, true, out, VecDeque::new()).await;
    alive.store(false, Ordering::Relaxed);
    task.rx.close();
    let (reason, cut_off) = (ended.reason, ended.cut_off);
    // The server closed it right after answering all it had: it does so.
    let closed_after_response = reason == CLOSED_BY_UPSTREAM
        && task
            .idle_since
            .is_some_and(|t| t.elapsed() <= CLOSE_AFTER_RESPONSE);
    if let Some(conn) = ended.retired {
        tokio::spawn(linger(conn, task.habits.clone(), name.clone()));
    } else if closed_after_response
        && !task
            .habits
            .closes_after_response
            .swap(true, Ordering::Relaxed)
    {
        tracing::info!(upstream = %name, "the upstream closes connections after responses: one exchange per connection");
    }
    // The requests this connection never completely wrote keep their ids and
    // deadlines; every other one in flight was written and is answered now
    // (the server may have acted on it: it is not sent again).
    let mut retry: HashMap<u64, Pending> = HashMap::new();
    for id in cut_off.iter().filter_map(|u| u.id) {
        if let Some(p) = task.inflight.remove(&id) {
            retry.insert(id, p);
        }
    }
    tracing::debug!(upstream = %name, reason, in_flight = task.inflight.len(), "multiplexed upstream connection ended");
    task.fail_all(
        MuxError::UpstreamClosed,
        &format!("upstream connection {reason}"),
    )
    .await;
    task.inflight = retry;
    // Those and the requests still queued for it go on a fresh connection.
    let mut out = BytesMut::new();
    let mut unwritten = VecDeque::new();
    for u in cut_off {
        match u.id {
            // Timed out meanwhile: already answered.
            Some(id) if !task.inflight.contains_key(&id) => continue,
            Some(id) => P::write_with_id(&u.frame, id, &mut out),
            None => P::write_with_id(&u.frame, P::request_id(&u.frame), &mut out),
        }
        unwritten.push_back(Unwritten {
            end: out.len() as u64,
            ..u
        });
    }
    while let Ok(msg) = task.rx.try_recv() {
        task.queue(msg, &mut out, 0, &mut unwritten);
    }
    if unwritten.is_empty() {
        return;
    }
    metrics::counter!("switchyard_rpc_requests_retried_total").increment(unwritten.len() as u64);
    tracing::debug!(upstream = %name, requests = unwritten.len(), "sending requests never written on a fresh connection");
    match reconnect().await {
        Some(stream) => {
            let ended = task.serve(stream, false, out, unwritten).await;
            let message = format!("upstream connection {}", ended.reason);
            task.fail_all(MuxError::UpstreamClosed, &message).await;
        }
        None => {
            task.fail_all(MuxError::Unavailable, "upstream unavailable")
                .await;
        }
    }
}

/// Why a connection ended when the server closed it.
const CLOSED_BY_UPSTREAM: &str = "closed by the upstream";

/// Watch a retired connection: a server that does not close it soon after
/// its last response no longer closes after responses.
async fn linger(
    conn: (Counted<UpstreamReadHalf>, UpstreamWriteHalf),
    habits: Arc<HostHabits>,
    name: String,
) {
    let (mut rd, _wr) = conn;
    let until = tokio::time::Instant::now() + CLOSE_AFTER_RESPONSE;
    let mut buf = [0u8; 256];
    let closed = loop {
        match tokio::time::timeout_at(until, rd.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => break true,
            Ok(Ok(_)) => {}
            Err(_) => break false,
        }
    };
    if !closed && habits.closes_after_response.swap(false, Ordering::Relaxed) {
        tracing::info!(upstream = %name, "the upstream keeps connections open again");
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
