//! RTSP through the gateway.
//!
//! One client RTSP connection is served by one task. Each request is routed
//! by its URL (host and path) to a cluster, and sent on an upstream
//! connection opened for that (cluster, client-visible base URL) at the
//! first request that needs it; later requests of the same stream reuse it,
//! requests for another route open another. A request carrying a `Session`
//! the gateway has seen goes to the upstream that issued that session
//! (affinity), whatever its URL. TEARDOWN, the upstream closing and, for UDP
//! sessions, a session timeout release the session.
//!
//! URLs are rewritten both ways so clients only ever see the gateway: the
//! request URL (and any gateway URL in headers or body) gets the upstream's
//! `rtsp://host:port`, and every upstream URL in responses and server
//! requests (Content-Base, Content-Location, RTP-Info, SDP `a=control`, ...)
//! gets the client's base back; bodies are re-sent with a fresh
//! `Content-Length`.
//!
//! Media: interleaved `$` frames pass through both ways from their wire bytes
//! (the client's channel numbers map to the upstream that set them up). UDP
//! transports are relayed: per SETUP the gateway binds an RTP/RTCP port pair
//! toward the client and one toward the server, rewrites `client_port`,
//! `server_port`, `source` and `destination`, and pumps datagrams between
//! them, so media flows client ⇄ gateway ⇄ server.
//!
//! Errors answered by the gateway (with the request's CSeq): 400 for
//! malformed RTSP (then close), 401 (gateway auth), 404 (no route),
//! 461 (a transport it cannot relay), 502 (upstream unreachable or gone),
//! 503 (no cluster), 504 (upstream did not answer in time), 505 (not RTSP/1.0).

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::upstream::{UpstreamReadHalf, UpstreamWriteHalf};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::{Bytes, BytesMut};
use metrics::Counter;
use switchyard_codecs::rtsp::{
    self, Limits, Message, MessageDecoder, Request, Response, Version, transport, url,
};
use switchyard_codecs::{CodecError, Decoder, Protocol};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{Conn, drained, read_more};
use crate::config::RtspAuth;
use crate::filters::chain::{Permit, RefusalClass};
use crate::filters::headers::{edit_request, edit_response};
use crate::gateway::ListenerRuntime;
use crate::net::stream::{Stream, WriteHalf};
use crate::observe::ConnMetrics;
use crate::observe::rtsp::RtspMetrics;
use crate::router::Action;
use crate::upstream::Cluster;
use switchyard_codecs::fields::FieldList;

/// Messages queued from the upstream readers to the connection task.
const EVENT_QUEUE: usize = 256;
/// Bytes gathered for the client before one write.
const FLUSH_AT: usize = 64 * 1024;

type UpstreamId = u32;

/// What an upstream reader reports.
enum UpEvent {
    Message(UpstreamId, Message),
    /// The upstream closed (or broke the protocol: the error).
    Closed(UpstreamId, Option<CodecError>),
}

/// One upstream RTSP connection of this client connection.
struct Upstream {
    cluster: Arc<Cluster>,
    /// The cluster's host it is connected to.
    host: usize,
    /// `rtsp://host:port` as the client addresses the gateway.
    client_base: Vec<u8>,
    /// `rtsp://ip:port` of the upstream host.
    up_base: Vec<u8>,
    wr: UpstreamWriteHalf,
    /// This gateway's address on the upstream connection (for UDP relays).
    local_ip: IpAddr,
    server_ip: IpAddr,
    /// The upstream host's address.
    server: SocketAddr,
    reader: JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// A media session: the upstream that issued its id, and its UDP relays.
struct MediaSession {
    upstream: UpstreamId,
    relays: Vec<Relay>,
    /// Milliseconds since the connection's start when the client last showed
    /// life for this session (a request with its id, or media/RTCP over UDP).
    last_seen: Arc<AtomicU64>,
    timeout: Duration,
}

/// A request sent upstream, waiting for its response.
struct Pending {
    upstream: UpstreamId,
    cseq: Option<Bytes>,
    teardown: bool,
    /// The UDP ports bound for a SETUP being relayed.
    setup: Option<RelayPorts>,
    started: Instant,
    deadline: tokio::time::Instant,
    /// Its place under the filters' concurrency limits, until answered.
    permit: Permit,
    /// One request of the cluster, recorded (count, latency) when answered
    /// or failed.
    _request: crate::upstream::InFlight,
}

/// The two port pairs of a UDP relay, before the server has answered.
struct RelayPorts {
    /// Toward the client: RTP, RTCP.
    down: (UdpSocket, UdpSocket),
    /// Toward the server: RTP, RTCP.
    up: (UdpSocket, UdpSocket),
    client_ports: (u16, u16),
}

/// A running UDP relay; its pumps stop when it is dropped.
struct Relay {
    pumps: Vec<JoinHandle<()>>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        for p in &self.pumps {
            p.abort();
        }
    }
}

/// The state of one client connection.
struct Proxy {
    /// The connection as the shared filter step sees it.
    conn: Conn,
    listener: Arc<ListenerRuntime>,
    metrics: ConnMetrics,
    rtsp: RtspMetrics,
    limits: Limits,
    client_wr: WriteHalf,
    /// The client's address and ours on its connection.
    peer: Option<SocketAddr>,
    local: Option<SocketAddr>,
    out: BytesMut,
    upstreams: HashMap<UpstreamId, Upstream>,
    next_id: UpstreamId,
    events: mpsc::Sender<UpEvent>,
    sessions: HashMap<Vec<u8>, MediaSession>,
    /// Interleaved channel → the upstream whose SETUP took it.
    channels: HashMap<u8, UpstreamId>,
    pending: VecDeque<Pending>,
    /// The upstream whose request the client is answering.
    server_asked: Option<UpstreamId>,
    epoch: Instant,
    /// Close the client connection after the next flush.
    closing: bool,
}

/// Serve one downstream RTSP connection; `buf` holds the bytes detection read.
pub async fn serve(stream: Stream, mut buf: BytesMut, mut conn: Conn) {
    let (peer, local) = addresses(&stream).unzip();
    let (mut rd, client_wr) = stream.into_split();
    let settings = &conn.listener.rtsp;
    let limits = Limits {
        max_head_bytes: settings.max_head_bytes,
        max_body_bytes: settings.max_body_bytes,
        ..Limits::default()
    };
    let mut decoder = MessageDecoder::new(limits);
    let (events, mut rx) = mpsc::channel(EVENT_QUEUE);
    let mut p = Proxy {
        rtsp: RtspMetrics::new(&conn.listener.name),
        conn: conn.inner(Protocol::Rtsp),
        listener: conn.listener.clone(),
        metrics: conn.metrics.clone(),
        limits,
        client_wr,
        peer,
        local,
        out: BytesMut::new(),
        upstreams: HashMap::new(),
        next_id: 0,
        events,
        sessions: HashMap::new(),
        channels: HashMap::new(),
        pending: VecDeque::new(),
        server_asked: None,
        epoch: Instant::now(),
        closing: false,
    };
    let idle = conn.listener.idle_timeout;
    let mut idle_deadline = tokio::time::Instant::now() + idle;
    let mut sweep = tokio::time::interval(Duration::from_secs(1));
    let mut head = crate::net::deadline::HeadDeadline::new(conn.listener.request_head_timeout);
    loop {
        let before = buf.len();
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(msg)) => {
                    idle_deadline = tokio::time::Instant::now() + idle;
                    p.client_message(msg).await;
                    if p.out.len() >= FLUSH_AT && !p.flush().await {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "malformed RTSP from a client");
                    let status = match e {
                        CodecError::FrameTooLarge { .. } => 413,
                        _ => 400,
                    };
                    p.reply_local(status, None, &[]);
                    p.closing = true;
                    break;
                }
            }
        }
        if !p.flush().await || p.closing {
            break;
        }
        let busy = !p.pending.is_empty() || !p.sessions.is_empty();
        let deadline = p.pending.iter().map(|x| x.deadline).min();
        let udp_sessions = p.sessions.values().any(|s| !s.relays.is_empty());
        // A message begun must end within request_head_timeout (slowloris): 408, close.
        head.update(buf.len() < before, !buf.is_empty());
        tokio::select! {
            () = head.expired() => {
                p.reply_local(408, None, &[]);
                p.closing = true;
            }
            r = read_more(&mut rd, &mut buf, &conn.metrics) => match r {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            },
            Some(ev) = rx.recv() => {
                p.upstream_event(ev).await;
                while p.out.len() < FLUSH_AT {
                    match rx.try_recv() {
                        Ok(ev) => p.upstream_event(ev).await,
                        Err(_) => break,
                    }
                }
            }
            () = tokio::time::sleep_until(deadline.unwrap_or(idle_deadline)), if deadline.is_some() => {
                p.expire();
            }
            _ = sweep.tick(), if udp_sessions => p.sweep(),
            () = tokio::time::sleep_until(idle_deadline), if !busy => break,
            () = drained(&mut conn.drain), if !busy => break,
        }
    }
    let _ = p.flush().await;
    let ids: Vec<Vec<u8>> = p.sessions.keys().cloned().collect();
    for id in ids {
        p.release(&id, "client_closed");
    }
    let _ = p.client_wr.shutdown().await;
}

/// The client's address and ours, on a plain or TLS connection.
fn addresses(stream: &Stream) -> Option<(SocketAddr, SocketAddr)> {
    let tcp = match stream {
        Stream::Tcp(s) => s,
        Stream::Tls(s) => s.get_ref().0,
        Stream::TlsClient(s) => s.get_ref().0,
        Stream::Ws(_) => return None,
    };
    Some((tcp.peer_addr().ok()?, tcp.local_addr().ok()?))
}

/// `rtsp://host:port` of an absolute URL, as the client wrote it.
fn base_of(uri: &[u8]) -> Option<Vec<u8>> {
    let u = url::Url::parse(uri)?;
    let mut base = u.scheme.to_ascii_lowercase();
    base.extend_from_slice(b"://");
    base.extend_from_slice(u.host_port);
    Some(base)
}

/// `text` with `from` replaced by `to` (borrowed when there is nothing to replace).
fn swap<'a>(text: &'a [u8], from: &[u8], to: &[u8]) -> Cow<'a, [u8]> {
    match url::replace_base(text, from, to) {
        Some(v) => Cow::Owned(v),
        None => Cow::Borrowed(text),
    }
}

/// Whether an `Authorization` value carries one of `auth`'s users.
fn authorized(auth: &RtspAuth, value: Option<&[u8]>) -> bool {
    let Some(value) = value else { return false };
    let Some(encoded) = value
        .strip_prefix(b"Basic ")
        .or_else(|| value.strip_prefix(b"basic "))
    else {
        return false;
    };
    let Ok(decoded) = STANDARD.decode(encoded.trim_ascii()) else {
        return false;
    };
    auth.users.iter().any(|u| {
        let mut want = Vec::with_capacity(u.username.len() + u.password.len() + 1);
        want.extend_from_slice(u.username.as_bytes());
        want.push(b':');
        want.extend_from_slice(u.password.as_bytes());
        want == decoded
    })
}

impl Proxy {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Write what is gathered for the client; `false` if it is gone.
    async fn flush(&mut self) -> bool {
        if self.out.is_empty() {
            return true;
        }
        let n = self.out.len();
        let ok = self.client_wr.write_all(&self.out).await.is_ok();
        self.metrics.bytes_out.increment(n as u64);
        self.out.clear();
        if self.out.capacity() > 4 * FLUSH_AT {
            self.out = BytesMut::new();
        }
        ok
    }

    /// Queue a response made by the gateway.
    fn reply_local(&mut self, status: u16, cseq: Option<&[u8]>, extra: &[(&str, &str)]) {
        self.out
            .extend_from_slice(&rtsp::error_response(status, cseq, extra));
        self.rtsp.response(status, "gateway");
        self.metrics.observe(Duration::ZERO, true);
    }

    async fn client_message(&mut self, msg: Message) {
        match msg {
            Message::Interleaved(frame) => {
                let Some(&id) = self.channels.get(&frame.channel) else {
                    return;
                };
                let Some(up) = self.upstreams.get_mut(&id) else {
                    return;
                };
                let n = frame.wire().len() as u64;
                if up.wr.write_all(frame.wire()).await.is_err() {
                    self.upstream_closed(id, None);
                    return;
                }
                self.rtsp.media_to_upstream_tcp.increment(n);
            }
            Message::Response(resp) => {
                // The client answering a server's request (GET_PARAMETER, ANNOUNCE...).
                let Some(id) = self.server_asked else { return };
                let Some(up) = self.upstreams.get_mut(&id) else {
                    return;
                };
                let (from, to) = (up.client_base.clone(), up.up_base.clone());
                let headers: Vec<(&[u8], Cow<[u8]>)> = resp
                    .headers()
                    .map(|(n, v)| (n, swap(v, &from, &to)))
                    .collect();
                let body = swap(resp.body(), &from, &to);
                let mut msg = BytesMut::new();
                rtsp::write_response(
                    &mut msg,
                    resp.version,
                    resp.status,
                    resp.reason(),
                    headers.iter().map(|(n, v)| (*n, v.as_ref())),
                    &body,
                );
                if up.wr.write_all(&msg).await.is_err() {
                    self.upstream_closed(id, None);
                }
            }
            Message::Request(req) => self.request(req).await,
        }
    }

    async fn request(&mut self, req: Request) {
        let cseq = req.cseq().map(Bytes::copy_from_slice);
        let cseq = cseq.as_deref();
        if req.version != Version::RTSP_1_0 {
            self.reply_local(505, cseq, &[]);
            return;
        }
        if let Some(auth) = &self.listener.rtsp.auth
            && !authorized(auth, req.header("authorization"))
        {
            let challenge = format!("Basic realm=\"{}\"", auth.realm);
            self.reply_local(401, cseq, &[("WWW-Authenticate", &challenge)]);
            return;
        }
        let route = self
            .listener
            .routes
            .route_to(Protocol::Rtsp, &req, self.conn.destination);
        let size = Some(req.body().len() as u64);
        let mut permit = match self.conn.admit(Protocol::Rtsp, &req, route, size).await {
            Ok(permit) => permit,
            Err(refusal) => {
                let retry = matches!(
                    refusal.class(),
                    RefusalClass::TooMany | RefusalClass::Unavailable
                );
                let extra: &[(&str, &str)] = if retry { &[("Retry-After", "1")] } else { &[] };
                self.reply_local(refusal.status, cseq, extra);
                self.closing |= refusal.close;
                return;
            }
        };
        let bound = req.session_id().and_then(|sid| {
            let s = self.sessions.get(sid)?;
            s.last_seen.store(self.now_ms(), Ordering::Relaxed);
            Some(s.upstream)
        });
        let id = match bound {
            Some(id) if self.upstreams.contains_key(&id) => id,
            _ => match self.route(&req).await {
                Ok(id) => id,
                Err(status) => {
                    permit.log_refused(status);
                    self.reply_local(status, cseq, &[]);
                    return;
                }
            },
        };
        let Some(up) = self.upstreams.get(&id) else {
            permit.log_upstream_failed(502);
            self.reply_local(502, cseq, &[]);
            return;
        };
        if up.cluster.enter(&mut permit).is_err() {
            permit.log_refused(503);
            self.reply_local(503, cseq, &[("Retry-After", "1")]);
            return;
        }
        if permit.log().is_some() {
            permit.log_upstream(up.server);
        }
        let (client_base, up_base, local_ip) =
            (up.client_base.clone(), up.up_base.clone(), up.local_ip);
        let timeout = up.cluster.request_timeout;
        let method = req.method();
        let uri = url::with_base(req.uri(), &up_base).map_or(Cow::Borrowed(req.uri()), Cow::Owned);
        let mut setup = None;
        let mut headers: Vec<(&[u8], Cow<[u8]>)> = Vec::new();
        for (name, value) in req.headers() {
            if name.eq_ignore_ascii_case(b"authorization") && self.listener.rtsp.auth.is_some() {
                // The gateway's credentials stay at the gateway.
                continue;
            }
            if name.eq_ignore_ascii_case(b"transport") && method.eq_ignore_ascii_case(b"SETUP") {
                match self.relay_request_transport(value, local_ip).await {
                    Ok((rewritten, ports)) => {
                        setup = ports;
                        let value =
                            rewritten.map_or(Cow::Borrowed(value), |v| Cow::Owned(v.into_bytes()));
                        headers.push((name, value));
                    }
                    Err(status) => {
                        self.reply_local(status, cseq, &[]);
                        return;
                    }
                }
                continue;
            }
            headers.push((name, swap(value, &client_base, &up_base)));
        }
        let body = swap(req.body(), &client_base, &up_base);
        let mut msg = BytesMut::with_capacity(req.wire().len() + body.len() + 64);
        if permit.headers().is_empty() {
            rtsp::write_request(
                &mut msg,
                method,
                &uri,
                req.version,
                headers.iter().map(|(n, v)| (*n, v.as_ref())),
                &body,
            );
        } else {
            let fields = edited(&headers, |f| {
                edit_request(permit.headers(), f, self.conn.client);
            });
            rtsp::write_request(&mut msg, method, &uri, req.version, fields.iter(), &body);
        }
        let teardown = method.eq_ignore_ascii_case(b"TEARDOWN");
        let Some(up) = self.upstreams.get_mut(&id) else {
            return;
        };
        let request = up.cluster.begin(up.host);
        if up.wr.write_all(&msg).await.is_err() {
            self.upstream_closed(id, None);
            self.reply_local(502, cseq, &[]);
            return;
        }
        self.pending.push_back(Pending {
            _request: request,
            upstream: id,
            cseq: cseq.map(Bytes::copy_from_slice),
            teardown,
            setup,
            started: Instant::now(),
            deadline: tokio::time::Instant::now() + timeout,
            permit,
        });
    }

    /// The upstream for a request without a known session: the one already
    /// open for its route's cluster and the client's base URL, else a new one.
    async fn route(&mut self, req: &Request) -> Result<UpstreamId, u16> {
        let route = self
            .listener
            .routes
            .route_to(Protocol::Rtsp, req, self.conn.destination);
        let cluster = match route.map(|r| &r.action) {
            None => return Err(404),
            Some(Action::Direct(d)) => return Err(d.status),
            Some(action) => action
                .cluster()
                .map(|c| c.for_destination(self.conn.destination))
                .ok_or(503u16)?,
        };
        let client_base = match base_of(req.uri()) {
            Some(b) => b,
            // `OPTIONS *`: any upstream of the cluster will do.
            None => {
                if let Some((id, _)) = self
                    .upstreams
                    .iter()
                    .find(|(_, u)| Arc::ptr_eq(&u.cluster, &cluster))
                {
                    return Ok(*id);
                }
                let local = self
                    .local
                    .map_or_else(|| "gateway".to_owned(), |a| a.to_string());
                format!("rtsp://{local}").into_bytes()
            }
        };
        if let Some((id, _)) = self
            .upstreams
            .iter()
            .find(|(_, u)| Arc::ptr_eq(&u.cluster, &cluster) && u.client_base == client_base)
        {
            return Ok(*id);
        }
        let mut connected = None;
        let mut refused = 502;
        for host in cluster.hosts_for(req, self.conn.client) {
            match cluster.connect(host).await {
                Ok(mut tcp) => {
                    let ends = self.conn.endpoints(self.local);
                    if crate::upstream::send_proxy_header(&mut tcp, &cluster, ends)
                        .await
                        .is_err()
                    {
                        continue;
                    }
                    connected = Some((host, tcp));
                    break;
                }
                // A connection circuit breaker: unavailable, not a bad gateway.
                Err(e) if e.kind() == crate::error::ErrorKind::Overflow => {
                    refused = 503;
                    break;
                }
                Err(_) => {}
            }
        }
        let Some((host, tcp)) = connected else {
            return Err(refused);
        };
        let Some(address) = cluster.hosts.get(host).map(|h| h.address) else {
            return Err(502);
        };
        let local_ip = tcp.tcp().local_addr().map_or(address.ip(), |a| a.ip());
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let (rd, wr) = tcp.into_split();
        let reader = tokio::spawn(read_upstream(rd, id, self.limits, self.events.clone()));
        tracing::debug!(cluster = %cluster.name, upstream = %address, "RTSP upstream connected");
        self.upstreams.insert(
            id,
            Upstream {
                cluster,
                host,
                client_base,
                up_base: format!("rtsp://{address}").into_bytes(),
                wr,
                local_ip,
                server_ip: address.ip(),
                server: address,
                reader,
            },
        );
        Ok(id)
    }

    /// For a SETUP asking for UDP: bind the relay's port pairs and point the
    /// server at the upstream-side pair. The `Transport` value to send (`None`:
    /// unchanged) and the relay's ports (`None`: nothing to relay, as for
    /// interleaved); `Err(status)`: refuse the SETUP.
    async fn relay_request_transport(
        &self,
        value: &[u8],
        up_ip: IpAddr,
    ) -> Result<(Option<String>, Option<RelayPorts>), u16> {
        let Some(mut specs) = transport::parse(value) else {
            return Err(400);
        };
        if specs.iter().any(|s| s.is_interleaved()) {
            // Offering TCP interleaved: keep only those, media stays on this connection.
            specs.retain(|s| s.is_interleaved());
            return Ok((Some(transport::format(&specs)), None));
        }
        if specs.iter().any(|s| s.is_multicast()) || !self.listener.rtsp.udp_relay {
            return Err(461);
        }
        let Some(client_ports) = specs.iter().find_map(|s| s.ports("client_port")) else {
            return Ok((None, None));
        };
        let down_ip = self.local.map_or(up_ip, |a| a.ip());
        let (Ok(down), Ok(up)) = (bind_pair(down_ip).await, bind_pair(up_ip).await) else {
            tracing::warn!("RTSP: no UDP port pair free for a relay");
            return Err(503);
        };
        let (Ok(up_rtp), Ok(up_rtcp)) = (up.0.local_addr(), up.1.local_addr()) else {
            return Err(503);
        };
        for spec in &mut specs {
            if spec.ports("client_port").is_some() {
                spec.set(
                    "client_port",
                    Some(format!("{}-{}", up_rtp.port(), up_rtcp.port())),
                );
                spec.remove("destination");
            }
        }
        Ok((
            Some(transport::format(&specs)),
            Some(RelayPorts {
                down,
                up,
                client_ports,
            }),
        ))
    }

    async fn upstream_event(&mut self, ev: UpEvent) {
        match ev {
            UpEvent::Message(_, Message::Interleaved(frame)) => {
                self.rtsp
                    .media_to_client_tcp
                    .increment(frame.wire().len() as u64);
                self.out.extend_from_slice(frame.wire());
            }
            UpEvent::Message(id, Message::Response(resp)) => self.response(id, resp),
            UpEvent::Message(id, Message::Request(req)) => {
                let Some(up) = self.upstreams.get(&id) else {
                    return;
                };
                let (from, to) = (&up.up_base, &up.client_base);
                let uri =
                    url::with_base(req.uri(), to).map_or(Cow::Borrowed(req.uri()), Cow::Owned);
                let headers: Vec<(&[u8], Cow<[u8]>)> =
                    req.headers().map(|(n, v)| (n, swap(v, from, to))).collect();
                let body = swap(req.body(), from, to);
                rtsp::write_request(
                    &mut self.out,
                    req.method(),
                    &uri,
                    req.version,
                    headers.iter().map(|(n, v)| (*n, v.as_ref())),
                    &body,
                );
                self.server_asked = Some(id);
            }
            UpEvent::Closed(id, error) => self.upstream_closed(id, error),
        }
    }

    /// A response from upstream `id`: bind or release its session, finish a
    /// UDP relay, rewrite its URLs and queue it for the client.
    fn response(&mut self, id: UpstreamId, resp: Response) {
        let Some(up) = self.upstreams.get(&id) else {
            return;
        };
        let (up_base, client_base, server_ip) =
            (up.up_base.clone(), up.client_base.clone(), up.server_ip);
        let pending = self
            .pending
            .iter()
            .position(|p| p.upstream == id)
            .and_then(|i| self.pending.remove(i));
        let ok = (200..300).contains(&resp.status);
        self.rtsp.response(resp.status, "upstream");
        if let Some(p) = &pending {
            self.metrics
                .observe(p.started.elapsed(), resp.status >= 500);
        }
        let session = resp.session_id().map(<[u8]>::to_vec);
        if ok && let Some(sid) = &session {
            self.bind_session(sid, id, resp.header("session"));
        }
        let (teardown, mut setup, mut permit) = match pending {
            Some(p) => (p.teardown, p.setup, Some(p.permit)),
            None => (false, None, None),
        };
        if let Some(p) = &mut permit {
            p.log_status(resp.status);
        }
        let mut headers: Vec<(&[u8], Cow<[u8]>)> = Vec::new();
        for (name, value) in resp.headers() {
            if name.eq_ignore_ascii_case(b"transport") && ok {
                let rewritten = match setup.take() {
                    Some(ports) => self.start_relay(value, ports, server_ip, session.as_deref()),
                    None => {
                        self.bind_channels(value, id);
                        None
                    }
                };
                if let Some(v) = rewritten {
                    headers.push((name, Cow::Owned(v.into_bytes())));
                    continue;
                }
            }
            headers.push((name, swap(value, &up_base, &client_base)));
        }
        let body = swap(resp.body(), &up_base, &client_base);
        match permit
            .as_ref()
            .map(Permit::headers)
            .filter(|r| !r.is_empty())
        {
            None => rtsp::write_response(
                &mut self.out,
                resp.version,
                resp.status,
                resp.reason(),
                headers.iter().map(|(n, v)| (*n, v.as_ref())),
                &body,
            ),
            Some(rules) => {
                let fields = edited(&headers, |f| edit_response(rules, f));
                rtsp::write_response(
                    &mut self.out,
                    resp.version,
                    resp.status,
                    resp.reason(),
                    fields.iter(),
                    &body,
                );
            }
        }
        if teardown
            && ok
            && let Some(sid) = &session
        {
            self.release(sid, "teardown");
        }
    }

    fn bind_session(&mut self, sid: &[u8], id: UpstreamId, header: Option<&[u8]>) {
        if self.sessions.contains_key(sid) {
            return;
        }
        let timeout = header
            .and_then(rtsp::session_timeout)
            .map_or(self.listener.rtsp.session_timeout.get(), |s| {
                Duration::from_secs(s.saturating_mul(2))
            });
        self.rtsp.sessions.increment(1);
        self.rtsp.sessions_active.increment(1.0);
        self.sessions.insert(
            sid.to_vec(),
            MediaSession {
                upstream: id,
                relays: Vec::new(),
                last_seen: Arc::new(AtomicU64::new(self.now_ms())),
                timeout,
            },
        );
    }

    /// Record the interleaved channels a SETUP response confirmed.
    fn bind_channels(&mut self, value: &[u8], id: UpstreamId) {
        for spec in transport::parse(value).unwrap_or_default() {
            if let Some((a, b)) = spec.channels() {
                for c in a..=b {
                    self.channels.insert(c, id);
                }
            }
        }
    }

    /// Start the UDP relay of a SETUP the server accepted; the `Transport`
    /// value the client gets (gateway ports as `server_port`).
    fn start_relay(
        &mut self,
        value: &[u8],
        ports: RelayPorts,
        upstream_ip: IpAddr,
        session: Option<&[u8]>,
    ) -> Option<String> {
        let mut specs = transport::parse(value)?;
        let spec = specs.first_mut()?;
        let server_ports = spec.ports("server_port")?;
        let server_ip = spec
            .get("source")
            .flatten()
            .and_then(|s| s.parse::<IpAddr>().ok())
            .unwrap_or(upstream_ip);
        let client_ip = self.peer.map(|a| a.ip())?;
        let down_rtp = ports.down.0.local_addr().ok()?;
        let down_rtcp = ports.down.1.local_addr().ok()?;
        let (crtp, crtcp) = ports.client_ports;
        spec.set("client_port", Some(format!("{crtp}-{crtcp}")));
        spec.set(
            "server_port",
            Some(format!("{}-{}", down_rtp.port(), down_rtcp.port())),
        );
        if spec.get("source").is_some() {
            spec.set("source", Some(down_rtp.ip().to_string()));
        }
        if spec.get("destination").is_some() {
            spec.set("destination", Some(client_ip.to_string()));
        }
        let sid = session?;
        let session = self.sessions.get_mut(sid)?;
        let (down_rtp_s, down_rtcp_s) = (Arc::new(ports.down.0), Arc::new(ports.down.1));
        let (up_rtp_s, up_rtcp_s) = (Arc::new(ports.up.0), Arc::new(ports.up.1));
        let seen = &session.last_seen;
        let to_client = &self.rtsp.media_to_client_udp;
        let to_upstream = &self.rtsp.media_to_upstream_udp;
        let pumps = vec![
            tokio::spawn(pump(
                up_rtp_s.clone(),
                down_rtp_s.clone(),
                server_ip,
                SocketAddr::new(client_ip, crtp),
                to_client.clone(),
                None,
            )),
            tokio::spawn(pump(
                up_rtcp_s.clone(),
                down_rtcp_s.clone(),
                server_ip,
                SocketAddr::new(client_ip, crtcp),
                to_client.clone(),
                None,
            )),
            tokio::spawn(pump(
                down_rtp_s,
                up_rtp_s,
                client_ip,
                SocketAddr::new(server_ip, server_ports.0),
                to_upstream.clone(),
                Some((seen.clone(), self.epoch)),
            )),
            tokio::spawn(pump(
                down_rtcp_s,
                up_rtcp_s,
                client_ip,
                SocketAddr::new(server_ip, server_ports.1),
                to_upstream.clone(),
                Some((seen.clone(), self.epoch)),
            )),
        ];
        session.relays.push(Relay { pumps });
        Some(transport::format(&specs))
    }

    /// Release a media session (its relays stop).
    fn release(&mut self, sid: &[u8], reason: &'static str) {
        if self.sessions.remove(sid).is_some() {
            self.rtsp.released(reason);
            tracing::debug!(session = %String::from_utf8_lossy(sid), reason, "RTSP session released");
        }
    }

    /// Upstream `id` is gone: release its sessions, fail its requests; the
    /// client connection closes too if it had media from it.
    fn upstream_closed(&mut self, id: UpstreamId, error: Option<CodecError>) {
        let Some(up) = self.upstreams.remove(&id) else {
            return;
        };
        let sids: Vec<Vec<u8>> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.upstream == id)
            .map(|(k, _)| k.clone())
            .collect();
        match &error {
            Some(e) => {
                tracing::warn!(cluster = %up.cluster.name, error = %e, "RTSP upstream broke the protocol")
            }
            None => {
                tracing::info!(cluster = %up.cluster.name, sessions = sids.len(), "RTSP upstream closed; its sessions are released")
            }
        }
        for sid in &sids {
            self.release(sid, "upstream_closed");
        }
        let (failed, kept): (VecDeque<Pending>, VecDeque<Pending>) =
            std::mem::take(&mut self.pending)
                .into_iter()
                .partition(|p| p.upstream == id);
        self.pending = kept;
        for p in failed {
            self.reply_local(502, p.cseq.as_deref(), &[]);
        }
        self.channels.retain(|_, u| *u != id);
        if self.server_asked == Some(id) {
            self.server_asked = None;
        }
        if !sids.is_empty() {
            self.closing = true;
        }
    }

    /// Requests past their deadline: 504, and their upstream is dropped
    /// (its responses can no longer be matched in order).
    fn expire(&mut self) {
        let now = tokio::time::Instant::now();
        let late: Vec<(UpstreamId, Option<Bytes>)> = self
            .pending
            .iter()
            .filter(|p| p.deadline <= now)
            .map(|p| (p.upstream, p.cseq.clone()))
            .collect();
        for (id, cseq) in late {
            self.pending
                .retain(|p| !(p.upstream == id && p.cseq == cseq));
            self.reply_local(504, cseq.as_deref(), &[]);
            self.upstream_closed(id, None);
        }
    }

    /// Release UDP sessions the client has not refreshed within their timeout.
    fn sweep(&mut self) {
        let now = self.now_ms();
        let stale: Vec<Vec<u8>> = self
            .sessions
            .iter()
            .filter(|(_, s)| {
                !s.relays.is_empty()
                    && now.saturating_sub(s.last_seen.load(Ordering::Relaxed))
                        > s.timeout.as_millis() as u64
            })
            .map(|(k, _)| k.clone())
            .collect();
        for sid in stale {
            self.release(&sid, "timeout");
        }
    }
}

/// Read and decode one upstream connection, handing messages to the
/// connection task.
async fn read_upstream(
    mut rd: crate::upstream::Counted<UpstreamReadHalf>,
    id: UpstreamId,
    limits: Limits,
    events: mpsc::Sender<UpEvent>,
) {
    let mut decoder = MessageDecoder::new(limits);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(msg)) => {
                    if events.send(UpEvent::Message(id, msg)).await.is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = events.send(UpEvent::Closed(id, Some(e))).await;
                    return;
                }
            }
        }
        if buf.capacity() - buf.len() < 8 * 1024 {
            buf.reserve(64 * 1024);
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = events.send(UpEvent::Closed(id, None)).await;
                return;
            }
            Ok(_) => {}
        }
    }
}

/// Bind an RTP/RTCP pair of UDP ports (even, even + 1) on `ip`.
async fn bind_pair(ip: IpAddr) -> std::io::Result<(UdpSocket, UdpSocket)> {
    for _ in 0..64 {
        let rtp = UdpSocket::bind(SocketAddr::new(ip, 0)).await?;
        let port = rtp.local_addr()?.port();
        if port % 2 != 0 || port == u16::MAX {
            continue;
        }
        if let Ok(rtcp) = UdpSocket::bind(SocketAddr::new(ip, port + 1)).await {
            return Ok((rtp, rtcp));
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        "no free even/odd UDP port pair",
    ))
}

/// Forward datagrams arriving on `from` (sent by `peer_ip`) out of `via` to `to`.
async fn pump(
    from: Arc<UdpSocket>,
    via: Arc<UdpSocket>,
    peer_ip: IpAddr,
    to: SocketAddr,
    bytes: Counter,
    seen: Option<(Arc<AtomicU64>, Instant)>,
) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, sender) = match from.recv_from(&mut buf).await {
            Ok(x) => x,
            // An ICMP error from an earlier send (the peer's port closed for a
            // moment): keep relaying.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset
                ) =>
            {
                continue;
            }
            Err(_) => return,
        };
        if sender.ip() != peer_ip {
            continue;
        }
        let Some(datagram) = buf.get(..n) else {
            continue;
        };
        if via.send_to(datagram, to).await.is_ok() {
            bytes.increment(n as u64);
        }
        if let Some((last_seen, epoch)) = &seen {
            last_seen.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        }
    }
}

/// `headers` as a field list, edited by `edit` (the `headers` filter).
fn edited<'a>(
    headers: &'a [(&'a [u8], Cow<'a, [u8]>)],
    edit: impl FnOnce(&mut FieldList<'a>),
) -> FieldList<'a> {
    let mut fields = FieldList::with_capacity(headers.len() + 4);
    for (name, value) in headers {
        fields.push(name, value);
    }
    edit(&mut fields);
    fields
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RtspUser;

    #[test]
    fn basic_credentials() {
        let auth = RtspAuth {
            realm: "lab".into(),
            users: vec![RtspUser {
                username: "viewer".into(),
                password: "s3:cret".into(),
            }],
        };
        let header = |user_pass: &str| format!("Basic {}", STANDARD.encode(user_pass));
        assert!(authorized(&auth, Some(header("viewer:s3:cret").as_bytes())));
        assert!(!authorized(&auth, Some(header("viewer:s3").as_bytes())));
        assert!(!authorized(&auth, Some(header("other:s3:cret").as_bytes())));
        assert!(!authorized(&auth, Some(b"Digest username=\"viewer\"")));
        assert!(!authorized(&auth, Some(b"Basic !!!")));
        assert!(!authorized(&auth, None));
    }

    #[test]
    fn client_bases() {
        assert_eq!(
            base_of(b"RTSP://user:pw@gw.example:8554/cam/trackID=1?x").as_deref(),
            Some(&b"rtsp://gw.example:8554"[..])
        );
        assert_eq!(base_of(b"*"), None);
        assert_eq!(
            swap(b"a rtsp://up:1/x", b"rtsp://up:1", b"rtsp://gw:2").as_ref(),
            b"a rtsp://gw:2/x"
        );
    }
}
