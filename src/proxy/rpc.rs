//! RPC through the gateway (the multiplexed shape): Dubbo and SOFA Bolt.
//! Each request is routed on its own (service, method, version, group...), to
//! a host picked per request, over shared upstream connections
//! ([`MuxConn`]); responses come back in whatever order the servers answer.
//! Heartbeats from clients are answered by the gateway.
//!
//! A host that refuses connections is not tried again for every request:
//! after a failed connect it rests for a backoff (50 ms, doubling with each
//! further failure up to 2 s, each ±20 % at random), during which its
//! requests fall over to the cluster's next host or are answered "upstream
//! unavailable" at once; one request then tries it again.

use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::upstream::UpstreamConn;
use bytes::{Bytes, BytesMut};
use switchyard_codecs::{Decoder, Field, Metadata};
use switchyard_codecs::{bolt, dubbo};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::{Conn, drained, read_more};
use crate::filters::chain::RefusalClass;
use crate::filters::headers::edit_request;
use crate::net::stream::Stream;
use crate::router::Action;
use crate::stream::multiplex::{
    Answered, HostHabits, MuxConn, MuxError, MuxKind, MuxProtocol, Observe, Outgoing, Reconnect,
};
use crate::upstream::{Cluster, Failure, Outcome, Retries, RetryPolicy};

/// A session's cache of shared connections: (cluster, host) → connections.
type ConnCache<P> = Vec<(Arc<Cluster>, usize, Vec<MuxConn<P>>)>;

/// Upstream connections kept per host and protocol, shared by every client.
const CONNS_PER_HOST: usize = 2;

/// The rest after a host's first failed connect; it doubles with each
/// further failure up to [`BACKOFF_MAX`]. Each is drawn within ±[`BACKOFF_JITTER`].
const BACKOFF_INITIAL: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
const BACKOFF_JITTER: f64 = 0.2;

/// Serve one downstream connection of protocol `P`.
pub async fn serve<P: MuxProtocol>(stream: Stream, mut buf: BytesMut, mut conn: Conn) {
    let (mut rd, wr) = stream.into_split();
    let (reply_tx, reply_rx) = mpsc::channel::<Bytes>(4096);
    let writer = tokio::spawn(write_replies(wr, reply_rx, conn.metrics.clone()));
    let mut decoder = P::decoder();
    let mut cache: ConnCache<P> = Vec::new();
    let mut turn = 0usize;
    let mut head = crate::net::deadline::HeadDeadline::new(conn.listener.request_head_timeout);
    'session: loop {
        let before = buf.len();
        loop {
            let frame = match decoder.decode(&mut buf) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "malformed RPC frame; closing");
                    conn.metrics.observe(Duration::ZERO, true);
                    break 'session;
                }
            };
            let kind = P::kind(&frame);
            match kind {
                MuxKind::HeartbeatRequest => {
                    let _ = reply_tx.send(P::heartbeat_reply(&frame)).await;
                    continue;
                }
                MuxKind::Request | MuxKind::OneWay => {}
                MuxKind::Response | MuxKind::HeartbeatResponse => continue,
            }
            conn.metrics.requests.increment(1);
            let refuse = |error: MuxError, message: &str| {
                P::error_reply(
                    P::request_id(&frame),
                    P::reply_context(&frame),
                    error,
                    message,
                )
            };
            let route = conn
                .listener
                .routes
                .route_to(P::PROTOCOL, &frame, conn.destination);
            let size = Some(P::payload_len(&frame) as u64);
            let mut permit = match conn.admit(P::PROTOCOL, &frame, route, size).await {
                Ok(permit) => permit,
                Err(refusal) => {
                    conn.metrics.errors.increment(1);
                    if kind == MuxKind::Request {
                        let error = match refusal.class() {
                            RefusalClass::TooMany | RefusalClass::Unavailable => MuxError::Busy,
                            RefusalClass::Timeout => MuxError::Timeout,
                            _ => MuxError::Refused,
                        };
                        let _ = reply_tx.send(refuse(error, &refusal.message)).await;
                    }
                    continue;
                }
            };
            // Calls are re-sent only when the route says they are idempotent.
            let retry = route
                .and_then(|r| r.retry.clone())
                .filter(|p| p.idempotent && kind == MuxKind::Request);
            let (cluster, timeout) = match route.map(|r| (&r.action, r.timeout)) {
                None => {
                    permit.log_refused(404);
                    conn.metrics.errors.increment(1);
                    if kind == MuxKind::Request {
                        let service = frame.get(&Field::Service).unwrap_or_default();
                        let message =
                            format!("no route for service {}", String::from_utf8_lossy(service));
                        let _ = reply_tx.send(refuse(MuxError::NoRoute, &message)).await;
                    }
                    continue;
                }
                Some((Action::Direct(d), _)) => {
                    conn.metrics.errors.increment(1);
                    if kind == MuxKind::Request {
                        let _ = reply_tx
                            .send(refuse(MuxError::Refused, &String::from_utf8_lossy(&d.body)))
                            .await;
                    }
                    continue;
                }
                Some((action, timeout)) => match action.cluster_for(&frame) {
                    Some(c) => (
                        c.for_destination(conn.destination),
                        timeout.unwrap_or(c.request_timeout),
                    ),
                    None => {
                        let _ = reply_tx
                            .send(refuse(MuxError::Unavailable, "no cluster for this route"))
                            .await;
                        continue;
                    }
                },
            };
            if let Err(refusal) = cluster.enter(&mut permit) {
                permit.log_refused(refusal.status);
                conn.metrics.errors.increment(1);
                if kind == MuxKind::Request {
                    let _ = reply_tx
                        .send(refuse(MuxError::Busy, &refusal.message))
                        .await;
                }
                continue;
            }
            if let Some(mirror) = conn.mirror(&mut permit) {
                mirror.rpc::<P>(&frame, conn.client);
            }
            let timeout = P::timeout(&frame)
                .filter(|t| !t.is_zero())
                .map_or(timeout, |t| t.min(timeout));
            turn = turn.wrapping_add(1);
            let Some((up, host)) =
                upstream::<P>(&mut cache, &cluster, &frame, conn.client, turn).await
            else {
                permit.log_upstream_failed(503);
                conn.metrics.errors.increment(1);
                if kind == MuxKind::Request {
                    let message = format!("upstream unavailable (cluster {})", cluster.name);
                    let _ = reply_tx.send(refuse(MuxError::Unavailable, &message)).await;
                }
                continue;
            };
            let address = cluster.hosts.get(host).map(|h| h.address);
            if let Some(a) = address {
                permit.log_upstream(a);
            }
            let traceparent = permit.trace_attempt(address);
            let frame = match (permit.headers(), traceparent) {
                ([], None) => frame,
                (rules, traceparent) => {
                    let client = conn.client;
                    P::with_headers(&frame, &mut |fields| {
                        edit_request(rules, fields, client);
                        if let Some(tp) = &traceparent {
                            fields.set(b"traceparent", tp.as_bytes());
                        }
                    })
                    .unwrap_or(frame)
                }
            };
            if let Some(policy) = retry {
                // Held on its own task: a failed answer is replaced by a retry.
                tokio::spawn(call_with_retries::<P>(
                    Call {
                        frame,
                        cluster,
                        reply: reply_tx.clone(),
                        timeout,
                        permit,
                        turn,
                    },
                    up,
                    host,
                    policy,
                ));
                continue;
            }
            let mut up = up;
            let mut outgoing = Outgoing {
                frame,
                reply: reply_tx.clone(),
                timeout,
                in_flight: Some(cluster.begin(host)),
                permit,
            };
            let mut retried = false;
            let failed = loop {
                match up.send(outgoing).await {
                    Ok(()) => break None,
                    // The connection ended before it took the request, which
                    // so never reached the server: once more on a fresh one.
                    Err(back) if !retried => {
                        retried = true;
                        match upstream::<P>(&mut cache, &cluster, &back.frame, conn.client, turn)
                            .await
                        {
                            Some((next, host)) => {
                                (up, outgoing) = (next, back);
                                outgoing.in_flight = Some(cluster.begin(host));
                            }
                            None => {
                                break Some((back, MuxError::Unavailable, "upstream unavailable"));
                            }
                        }
                    }
                    Err(back) => {
                        break Some((back, MuxError::UpstreamClosed, "upstream connection closed"));
                    }
                }
            };
            if let Some((back, error, message)) = failed {
                conn.metrics.errors.increment(1);
                if kind == MuxKind::Request {
                    let f = &back.frame;
                    let message = format!("{message} (cluster {})", cluster.name);
                    let reply =
                        P::error_reply(P::request_id(f), P::reply_context(f), error, &message);
                    let _ = reply_tx.send(reply).await;
                }
            }
        }
        // A frame begun must end within request_head_timeout (slowloris): close.
        head.update(buf.len() < before, !buf.is_empty());
        tokio::select! {
            r = read_more(&mut rd, &mut buf, &conn.metrics) => match r {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            },
            () = head.expired() => break,
            () = tokio::time::sleep(conn.listener.idle_timeout) => break,
            () = drained(&mut conn.drain) => break,
        }
    }
    drop(reply_tx);
    drop(cache);
    if let Ok(mut wr) = writer.await {
        let _ = wr.shutdown().await;
    }
}

/// One call of a route with a retry policy.
struct Call<P: MuxProtocol> {
    frame: P::Frame,
    cluster: Arc<Cluster>,
    /// The client's reply channel.
    reply: mpsc::Sender<Bytes>,
    timeout: Duration,
    /// Held until the final answer goes to the client.
    permit: crate::filters::chain::Permit,
    turn: usize,
}

/// Send `call` on `up` (to `host`), and while its answer has a server-error
/// status and the route's `policy` allows, again on the next host; the last
/// answer goes to the client. The answers come back on a private channel so
/// a failed one never reaches the client.
async fn call_with_retries<P: MuxProtocol>(
    call: Call<P>,
    mut up: MuxConn<P>,
    mut host: usize,
    policy: Arc<RetryPolicy>,
) {
    let Call {
        mut frame,
        cluster,
        reply,
        timeout,
        mut permit,
        turn,
    } = call;
    let mut retries = Retries::new(&policy, &cluster, true);
    let mut resent = false;
    loop {
        let (tx, mut rx) = mpsc::channel(1);
        let out = Outgoing {
            frame: frame.clone(),
            reply: tx,
            timeout,
            in_flight: Some(cluster.begin(host)),
            permit: crate::filters::chain::Permit::default(),
        };
        if up.send(out).await.is_err() {
            // The connection ended before it took the call: once more on a
            // fresh one to the same host.
            let fresh = shared::<P>(&cluster, host).await;
            match fresh.get(turn % fresh.len().max(1)) {
                Some(c) if !resent => {
                    resent = true;
                    up = c.clone();
                    continue;
                }
                _ => {
                    let message = format!("upstream unavailable (cluster {})", cluster.name);
                    let f = &frame;
                    let answer = P::error_reply(
                        P::request_id(f),
                        P::reply_context(f),
                        MuxError::Unavailable,
                        &message,
                    );
                    let _ = reply.send(answer).await;
                    return;
                }
            }
        }
        let Some(answer) = rx.recv().await else {
            return;
        };
        let server_error = P::decoder()
            .decode(&mut BytesMut::from(&answer[..]))
            .ok()
            .flatten()
            .is_some_and(|f| P::server_error(&f));
        if server_error && retries.again(Failure::RpcServerError) {
            let next = cluster.next_after(host);
            let conns = shared::<P>(&cluster, next).await;
            if let Some(c) = conns.get(turn % conns.len().max(1)) {
                (up, host) = (c.clone(), next);
                // A new attempt: its own client span, its id upstream.
                let address = cluster.hosts.get(host).map(|h| h.address);
                if let Some(a) = address {
                    permit.log_upstream(a);
                }
                if let Some(tp) = permit.trace_attempt(address) {
                    frame = P::with_headers(&frame, &mut |fields| {
                        fields.set(b"traceparent", tp.as_bytes());
                    })
                    .unwrap_or(frame);
                }
                retries.backoff().await;
                continue;
            }
        }
        let _ = reply.send(answer).await;
        drop(permit);
        return;
    }
}

/// A shared connection to the host the cluster picks for `frame`: from this
/// session's cache, else from the cluster's registry, else a new one.
async fn upstream<P: MuxProtocol>(
    cache: &mut ConnCache<P>,
    cluster: &Arc<Cluster>,
    frame: &P::Frame,
    client: std::net::IpAddr,
    turn: usize,
) -> Option<(MuxConn<P>, usize)> {
    for host in cluster.hosts_for(frame, client) {
        let cached = cache
            .iter()
            .position(|(c, h, _)| Arc::ptr_eq(c, cluster) && *h == host);
        if let Some(i) = cached {
            let conns = &cache.get(i)?.2;
            let open: Vec<&MuxConn<P>> = conns.iter().filter(|c| c.is_open()).collect();
            if open.len() == conns.len() && !open.is_empty() {
                return open.get(turn % open.len()).map(|c| ((*c).clone(), host));
            }
            cache.remove(i);
        }
        let conns = shared::<P>(cluster, host).await;
        if conns.is_empty() {
            continue;
        }
        let pick = conns.get(turn % conns.len()).cloned();
        cache.push((cluster.clone(), host, conns));
        return pick.map(|c| (c, host));
    }
    None
}

/// What the cluster keeps per (protocol, host): the shared connections and
/// the connect backoff.
struct HostConns<P: MuxProtocol> {
    conns: Vec<MuxConn<P>>,
    backoff: Backoff,
    habits: Arc<HostHabits>,
}

/// A host's connect backoff (see the module docs).
#[derive(Default)]
struct Backoff {
    /// Failed connects in a row.
    failures: u32,
    /// No connect before this.
    until: Option<Instant>,
    /// When the one connect allowed after a rest started (while it runs, the
    /// others wait for its outcome).
    probing: Option<Instant>,
}

impl Backoff {
    /// Whether a connect may start now (a probe after a rest is marked).
    fn may_try(&mut self, now: Instant, connect_timeout: Duration) -> bool {
        if self.failures == 0 {
            return true;
        }
        if self.until.is_some_and(|t| now < t) {
            return false;
        }
        // A probe whose outcome never came (its session went away) is stale
        // after the connect timeout.
        if self
            .probing
            .is_some_and(|t| now < t + connect_timeout + BACKOFF_MAX)
        {
            return false;
        }
        self.probing = Some(now);
        true
    }

    fn record(&mut self, ok: bool, now: Instant) {
        self.probing = None;
        if ok {
            self.failures = 0;
            self.until = None;
            return;
        }
        self.failures = self.failures.saturating_add(1);
        let base = BACKOFF_INITIAL
            .saturating_mul(1 << self.failures.saturating_sub(1).min(16))
            .min(BACKOFF_MAX);
        let jitter = 1.0 + BACKOFF_JITTER * (2.0 * rand::random::<f64>() - 1.0);
        self.until = Some(now + base.mul_f64(jitter));
    }
}

/// Run `f` on the registry entry of (`P`, `host`), made if missing.
fn with_entry<P: MuxProtocol, T>(
    cluster: &Cluster,
    host: usize,
    f: impl FnOnce(&mut HostConns<P>) -> T,
) -> Option<T> {
    let mut registry = cluster.shared.lock().unwrap_or_else(|e| e.into_inner());
    let entry = registry.entry((P::PROTOCOL, host)).or_insert_with(|| {
        Box::new(HostConns::<P> {
            conns: Vec::new(),
            backoff: Backoff::default(),
            habits: Arc::default(),
        }) as Box<dyn Any + Send + Sync>
    });
    entry.downcast_mut::<HostConns<P>>().map(f)
}

/// A new connection to `host`, unless the host is resting after failed
/// connects; the outcome feeds its backoff.
/// `wait`: under `max_connections`, wait for a slot (the host has no open
/// connection yet) rather than give up at once.
async fn connect<P: MuxProtocol>(
    cluster: &Cluster,
    host: usize,
    wait: bool,
) -> Option<UpstreamConn> {
    let timeout = cluster.connect_timeout;
    let may = with_entry::<P, _>(cluster, host, |e| {
        e.backoff.may_try(Instant::now(), timeout)
    });
    if may != Some(true) {
        return None;
    }
    let result = if wait {
        cluster.connect(host).await
    } else {
        cluster.connect_if_room(host).await
    };
    // A full `max_connections` says nothing of the host: no rest for it.
    if !matches!(&result, Err(e) if e.kind() == crate::error::ErrorKind::Overflow) {
        with_entry::<P, _>(cluster, host, |e| {
            e.backoff.record(result.is_ok(), Instant::now());
        });
    }
    result.ok()
}

/// How a shared connection to `host` reports each request's end to the
/// cluster's outlier detection (holding the cluster weakly).
fn observe(cluster: &Arc<Cluster>, host: usize) -> Observe {
    if cluster.health.outlier.is_none() {
        return Arc::new(|_| {});
    }
    let cluster = Arc::downgrade(cluster);
    Arc::new(move |answered| {
        if let Some(c) = cluster.upgrade() {
            c.record(
                host,
                match answered {
                    Answered::Ok => Outcome::Success,
                    Answered::ServerError => Outcome::ServerError,
                    Answered::TimedOut => Outcome::GatewayError,
                },
            );
        }
    })
}

/// How a shared connection to `host` opens the fresh connection its
/// never-written requests go on (holding the cluster weakly: the cluster
/// holds the connection).
fn reconnect<P: MuxProtocol>(cluster: &Arc<Cluster>, host: usize) -> Reconnect {
    let cluster = Arc::downgrade(cluster);
    Arc::new(move || {
        let cluster = cluster.clone();
        Box::pin(async move {
            let cluster = cluster.upgrade()?;
            connect::<P>(&cluster, host, true).await
        })
    })
}

/// The cluster-wide connections to `host` for protocol `P`, opening the
/// missing ones. The registry lock is held only to read or store handles.
async fn shared<P: MuxProtocol>(cluster: &Arc<Cluster>, host: usize) -> Vec<MuxConn<P>> {
    let Some((mut conns, habits)) = with_entry::<P, _>(cluster, host, |e| {
        let open: Vec<MuxConn<P>> = e.conns.iter().filter(|c| c.is_open()).cloned().collect();
        (open, e.habits.clone())
    }) else {
        return Vec::new();
    };
    if conns.len() >= CONNS_PER_HOST {
        return conns;
    }
    let opened = conns.len();
    while conns.len() < CONNS_PER_HOST {
        let Some(stream) = connect::<P>(cluster, host, conns.is_empty()).await else {
            break;
        };
        let name = format!(
            "{}/{}",
            cluster.name,
            cluster
                .hosts
                .get(host)
                .map_or_else(String::new, |h| h.address.to_string())
        );
        let reconnect = reconnect::<P>(cluster, host);
        let observe = observe(cluster, host);
        conns.push(MuxConn::spawn(
            stream,
            name,
            reconnect,
            habits.clone(),
            observe,
        ));
    }
    if conns.len() > opened {
        let keep = conns.clone();
        with_entry::<P, _>(cluster, host, |e| e.conns = keep);
    }
    conns
}

async fn write_replies(
    mut wr: crate::net::stream::WriteHalf,
    mut rx: mpsc::Receiver<Bytes>,
    metrics: crate::observe::ConnMetrics,
) -> crate::net::stream::WriteHalf {
    let mut out = BytesMut::with_capacity(16 * 1024);
    while let Some(first) = rx.recv().await {
        out.extend_from_slice(&first);
        while out.len() < 64 * 1024 {
            match rx.try_recv() {
                Ok(more) => out.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        if wr.write_all(&out).await.is_err() {
            break;
        }
        metrics.bytes_out.increment(out.len() as u64);
        out.clear();
    }
    wr
}

/// Dubbo 2 (hessian2 and any other serialization: bodies are not touched).
pub struct Dubbo;

impl MuxProtocol for Dubbo {
    const PROTOCOL: switchyard_codecs::Protocol = switchyard_codecs::Protocol::Dubbo;
    const MAX_ID: u64 = u64::MAX - 1;
    type Frame = dubbo::Frame;

    fn with_headers(
        f: &dubbo::Frame,
        edit: &mut dyn FnMut(&mut switchyard_codecs::fields::FieldList<'_>),
    ) -> Option<dubbo::Frame> {
        match dubbo::with_attachments(f, |fields| edit(fields)) {
            Ok(Some(wire)) => dubbo::Frame::parse(wire).ok(),
            Ok(None) => None,
            Err(e) => {
                tracing::debug!(error = %e, "attachments not edited");
                None
            }
        }
    }
    type Decoder = dubbo::Decoder;

    fn decoder() -> Self::Decoder {
        dubbo::Decoder::new(dubbo::Limits::default())
    }
    fn kind(f: &dubbo::Frame) -> MuxKind {
        match (f.is_request(), f.is_heartbeat(), f.is_two_way()) {
            (true, true, _) => MuxKind::HeartbeatRequest,
            (false, true, _) => MuxKind::HeartbeatResponse,
            (true, false, true) => MuxKind::Request,
            (true, false, false) => MuxKind::OneWay,
            (false, false, _) => MuxKind::Response,
        }
    }
    fn request_id(f: &dubbo::Frame) -> u64 {
        f.request_id()
    }
    fn with_id(f: &dubbo::Frame, id: u64) -> Bytes {
        if id == f.request_id() {
            return f.wire().clone();
        }
        let header = dubbo::header_with_request_id(f, id);
        let body = f.body();
        let mut out = BytesMut::with_capacity(header.len() + body.len());
        out.extend_from_slice(&header);
        out.extend_from_slice(&body);
        out.freeze()
    }
    fn write_with_id(f: &dubbo::Frame, id: u64, out: &mut BytesMut) {
        // A new header, then the body slice: one copy, into the write buffer.
        out.extend_from_slice(&dubbo::header_with_request_id(f, id));
        out.extend_from_slice(&f.body());
    }
    fn reply_context(f: &dubbo::Frame) -> u32 {
        u32::from(f.serialization_id())
    }
    fn error_reply(id: u64, context: u32, error: MuxError, message: &str) -> Bytes {
        let status = match error {
            MuxError::NoRoute => dubbo::status::SERVICE_NOT_FOUND,
            MuxError::Timeout => dubbo::status::SERVER_TIMEOUT,
            MuxError::Unavailable | MuxError::UpstreamClosed => dubbo::status::SERVER_ERROR,
            MuxError::Refused => dubbo::status::SERVICE_ERROR,
            MuxError::Busy => dubbo::status::SERVER_THREADPOOL_EXHAUSTED_ERROR,
        };
        // The body is a Hessian 2 string whatever the request's serialization,
        // so the header says Hessian 2.
        let _ = context;
        dubbo::response(
            id,
            status,
            dubbo::SERIALIZATION_HESSIAN2,
            &format!("switchyard: {message}"),
        )
    }
    fn heartbeat_reply(f: &dubbo::Frame) -> Bytes {
        dubbo::heartbeat_response(f.request_id(), f.serialization_id())
    }
    fn heartbeat_request(id: u64) -> Bytes {
        dubbo::heartbeat_request(id)
    }
    fn timeout(_: &dubbo::Frame) -> Option<Duration> {
        None
    }
    fn payload_len(f: &dubbo::Frame) -> usize {
        f.body_len()
    }
    fn status(f: &dubbo::Frame) -> Option<u32> {
        f.status().map(u32::from)
    }
    fn server_error(f: &dubbo::Frame) -> bool {
        use dubbo::status::{SERVER_ERROR, SERVER_THREADPOOL_EXHAUSTED_ERROR};
        matches!(
            f.status(),
            Some(SERVER_ERROR | SERVER_THREADPOOL_EXHAUSTED_ERROR)
        )
    }
}

/// SOFA Bolt v1 and v2.
pub struct Bolt;

impl MuxProtocol for Bolt {
    fn with_headers(
        f: &bolt::Frame,
        edit: &mut dyn FnMut(&mut switchyard_codecs::fields::FieldList<'_>),
    ) -> Option<bolt::Frame> {
        if !f.is_request() || f.is_heartbeat() {
            return None;
        }
        let mut fields = switchyard_codecs::fields::FieldList::default();
        for entry in f.header_map() {
            // A null value or a header that is not a simple map: left alone.
            let (k, v) = entry.ok()?;
            fields.push(k, v?);
        }
        edit(&mut fields);
        let header = bolt::encode_header_map(fields.iter().map(|(k, v)| (k, Some(v))));
        bolt::Frame::parse(bolt::with_header(f, &header)?).ok()
    }

    const PROTOCOL: switchyard_codecs::Protocol = switchyard_codecs::Protocol::Bolt;
    const MAX_ID: u64 = u32::MAX as u64;
    type Frame = bolt::Frame;
    type Decoder = bolt::Decoder;

    fn decoder() -> Self::Decoder {
        bolt::Decoder::new(bolt::Limits::default())
    }
    fn kind(f: &bolt::Frame) -> MuxKind {
        match (f.kind(), f.is_heartbeat()) {
            (bolt::Kind::Request, true) => MuxKind::HeartbeatRequest,
            (bolt::Kind::Response, true) => MuxKind::HeartbeatResponse,
            (bolt::Kind::Request, false) => MuxKind::Request,
            (bolt::Kind::Oneway, _) => MuxKind::OneWay,
            (bolt::Kind::Response, false) => MuxKind::Response,
        }
    }
    fn request_id(f: &bolt::Frame) -> u64 {
        u64::from(f.request_id())
    }
    fn with_id(f: &bolt::Frame, id: u64) -> Bytes {
        if id == u64::from(f.request_id()) {
            return f.wire().clone();
        }
        bolt::with_request_id(f, id as u32)
    }
    fn reply_context(f: &bolt::Frame) -> u32 {
        let version = match f.version() {
            bolt::Version::V1 => 1u32,
            bolt::Version::V2 => 2,
        };
        (version << 8) | u32::from(f.codec())
    }
    fn error_reply(id: u64, context: u32, error: MuxError, message: &str) -> Bytes {
        let version = if context >> 8 == 2 {
            bolt::Version::V2
        } else {
            bolt::Version::V1
        };
        let status = match error {
            MuxError::NoRoute => bolt::status::NO_PROCESSOR,
            MuxError::Timeout => bolt::status::TIMEOUT,
            MuxError::Unavailable => bolt::status::CLIENT_SEND_ERROR,
            MuxError::UpstreamClosed => bolt::status::CONNECTION_CLOSED,
            MuxError::Refused => bolt::status::SERVER_EXCEPTION,
            MuxError::Busy => bolt::status::SERVER_THREADPOOL_BUSY,
        };
        // The status carries the meaning; the reason goes in an
        // RpcServerException, as SOFA servers send their own errors.
        bolt::server_exception(
            version,
            id as u32,
            (context & 0xff) as u8,
            status,
            &format!("switchyard: {message}"),
        )
    }
    fn heartbeat_reply(f: &bolt::Frame) -> Bytes {
        bolt::heartbeat_response(f.version(), f.request_id())
    }
    fn heartbeat_request(id: u64) -> Bytes {
        bolt::heartbeat_request(bolt::Version::V1, id as u32)
    }
    fn payload_len(f: &bolt::Frame) -> usize {
        f.content_len()
    }
    fn timeout(f: &bolt::Frame) -> Option<Duration> {
        f.timeout_ms()
            .and_then(|ms| u64::try_from(ms).ok())
            .map(Duration::from_millis)
    }
    fn status(f: &bolt::Frame) -> Option<u32> {
        f.status().map(u32::from)
    }
    fn server_error(f: &bolt::Frame) -> bool {
        use bolt::status::{SERVER_EXCEPTION, SERVER_THREADPOOL_BUSY};
        matches!(f.status(), Some(SERVER_EXCEPTION | SERVER_THREADPOOL_BUSY))
    }
}
