//! HTTP/2 (h2c with prior knowledge, or `h2` by ALPN inside TLS) and gRPC
//! through the gateway.
//!
//! The downstream connection is served with the `h2` crate; each request
//! stream runs in its own task: it is routed on its [`Head`] metadata, then
//! answered by the gateway or forwarded
//!
//! * to an HTTP/2 cluster, as a stream on the host's shared connection
//!   ([`crate::upstream::MuxPool`]): bodies stream both ways within the
//!   peers' flow-control windows, trailers pass both ways, a reset on one side
//!   resets the other, and a request refused by a GOAWAY or `REFUSED_STREAM`
//!   (so never processed) is retried on a fresh connection when it has no
//!   body;
//! * to an HTTP/1.1 cluster, translated by hyper's HTTP/1 client on a
//!   connection taken from (and given back to) the cluster's idle pool.
//!
//! Failures the gateway answers itself are HTTP statuses (404, 502, 503,
//! 504), or for gRPC requests (`content-type: application/grpc*`) a
//! trailers-only `200` with `grpc-status` and `grpc-message`.

mod body;
mod io;

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use hyper_util::rt::TokioIo;
use switchyard_codecs::{Field, Metadata, Protocol};
use tokio::sync::oneshot;

use self::body::{H2Body, Pump, PumpError, ReqBody, RetryBody};
use self::io::CountedIo;
use super::{Conn, drained};
use crate::config::UpstreamProtocol;
use crate::error::{Error, ErrorKind};
use crate::filters::chain::{Refusal, RefusalClass};
use crate::filters::headers::{HeaderRules, edit_request, edit_response};
use crate::net::stream::Stream;
use crate::router::Action;
use crate::upstream::retry::Failure as RetryFailure;
use crate::upstream::{Cluster, H2Conn, HostOrder, Outcome, Retries};

/// Per-stream receive window offered to clients.
const STREAM_WINDOW: u32 = 1 << 20;
/// Connection receive window offered to clients.
const CONN_WINDOW: u32 = 8 << 20;
/// Most concurrent streams a client may open on one connection.
const MAX_STREAMS: u32 = 256;

/// What every stream task of one downstream connection shares.
struct Shared {
    /// The connection's listener, metrics, client and overload state.
    conn: Conn,
    /// Streams in progress.
    active: AtomicUsize,
    /// When the connection started, and when its last stream ended (ms after that).
    started: tokio::time::Instant,
    last_end_ms: AtomicU64,
}

impl Shared {
    /// When the connection last became idle (no stream in progress).
    fn idle_since(&self) -> tokio::time::Instant {
        self.started + Duration::from_millis(self.last_end_ms.load(Ordering::Relaxed))
    }
}

/// Counts a stream in progress; counts it out when dropped.
struct Active(Arc<Shared>);

impl Drop for Active {
    fn drop(&mut self) {
        let ms = self.0.started.elapsed().as_millis();
        self.0
            .last_end_ms
            .store(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::Relaxed);
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serve one downstream HTTP/2 connection; `buf` holds the bytes detection
/// read (the connection preface), replayed to the HTTP/2 server first.
pub async fn serve(stream: Stream, buf: BytesMut, mut conn: Conn) {
    let listener = conn.listener.clone();
    let io = CountedIo::new(
        buf.freeze(),
        stream,
        conn.metrics.clone(),
        listener.request_head_timeout,
    );
    let mut builder = h2::server::Builder::new();
    builder
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONN_WINDOW)
        .max_concurrent_streams(MAX_STREAMS)
        .max_header_list_size(u32::try_from(listener.http1.max_head_bytes).unwrap_or(u32::MAX));
    let handshake = tokio::time::timeout(listener.detect_timeout, builder.handshake(io)).await;
    let mut h2 = match handshake {
        Ok(Ok(h2)) => h2,
        Ok(Err(e)) => {
            tracing::debug!(listener = %listener.name, error = %e, "HTTP/2 handshake failed");
            return;
        }
        Err(_) => return,
    };
    let shared = Arc::new(Shared {
        conn: conn.inner(Protocol::Http2),
        active: AtomicUsize::new(0),
        started: tokio::time::Instant::now(),
        last_end_ms: AtomicU64::new(0),
    });
    let idle = listener.idle_timeout;
    let mut idle_at = tokio::time::Instant::now() + idle;
    let mut closing = false;
    loop {
        tokio::select! {
            next = h2.accept() => match next {
                Some(Ok((req, respond))) => {
                    shared.active.fetch_add(1, Ordering::Relaxed);
                    let active = Active(shared.clone());
                    idle_at = tokio::time::Instant::now() + idle;
                    tokio::spawn(async move {
                        let started = Instant::now();
                        let failed = exchange(req, respond, &active.0).await;
                        active.0.conn.metrics.observe(started.elapsed(), failed);
                        drop(active);
                    });
                }
                Some(Err(e)) => {
                    tracing::debug!(listener = %listener.name, error = %e, "HTTP/2 connection error");
                    break;
                }
                None => break,
            },
            () = drained(&mut conn.drain), if !closing => {
                // GOAWAY: streams in progress finish, no new ones.
                h2.graceful_shutdown();
                closing = true;
            }
            () = tokio::time::sleep_until(idle_at), if !closing => {
                let now = tokio::time::Instant::now();
                if shared.active.load(Ordering::Relaxed) > 0 {
                    idle_at = now + idle;
                } else if shared.idle_since() + idle > now {
                    idle_at = shared.idle_since() + idle;
                } else {
                    // Idle for `idle_timeout`: GOAWAY and close.
                    h2.graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

/// A request head's routing metadata.
struct Head<'a> {
    parts: &'a Parts,
    /// `(service, method)` of a gRPC call (`/pkg.Service/Method`).
    rpc: Option<(&'a str, &'a str)>,
    /// The normalised path routes match, when it differs from `:path`'s.
    path: Option<&'a [u8]>,
}

impl<'a> Head<'a> {
    fn new(parts: &'a Parts, grpc: bool) -> Self {
        let rpc = grpc
            .then(|| parts.uri.path().strip_prefix('/')?.split_once('/'))
            .flatten();
        Self {
            parts,
            rpc,
            path: None,
        }
    }
}

/// Normalise `:path` by the listener's path policy (the same rules as
/// HTTP/1.1: see `codecs::http1::normalize_path`). Returns the normalised
/// path when routes must match one that differs from `:path`'s, after
/// putting it into `parts.uri` when the policy forwards it. `Err`: a bad
/// percent-escape.
fn normalize(
    parts: &mut Parts,
    policy: &crate::config::Http1Limits,
) -> Result<Option<Vec<u8>>, ()> {
    let Some(path) = super::normalized_path(parts.uri.path().as_bytes(), policy).map_err(|_| ())?
    else {
        return Ok(None);
    };
    if policy.forward_path == crate::config::ForwardPath::Normalized {
        let mut pq = path.clone();
        if let Some(q) = parts.uri.query() {
            pq.push(b'?');
            pq.extend_from_slice(q.as_bytes());
        }
        let mut uri = std::mem::take(&mut parts.uri).into_parts();
        uri.path_and_query = http::uri::PathAndQuery::try_from(pq).ok();
        parts.uri = Uri::from_parts(uri).map_err(|_| ())?;
        return Ok(None);
    }
    Ok(Some(path))
}

impl Metadata for Head<'_> {
    fn get(&self, field: &Field) -> Option<&[u8]> {
        let p = self.parts;
        match field {
            Field::Method => Some(p.method.as_str().as_bytes()),
            Field::Host => p
                .uri
                .authority()
                .map(|a| a.as_str().as_bytes())
                .or_else(|| p.headers.get(header::HOST).map(HeaderValue::as_bytes)),
            Field::Path => Some(self.path.unwrap_or(p.uri.path().as_bytes())),
            Field::Header(name) => p.headers.get(name.as_str()).map(HeaderValue::as_bytes),
            Field::Service => self.rpc.map(|(s, _)| s.as_bytes()),
            Field::RpcMethod => self.rpc.map(|(_, m)| m.as_bytes()),
            _ => None,
        }
    }

    fn for_each_header(&self, f: &mut dyn FnMut(&[u8], &[u8])) {
        for (name, value) in &self.parts.headers {
            f(name.as_str().as_bytes(), value.as_bytes());
        }
    }
}

/// Whether a request is a gRPC call.
fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// A failure the gateway answers itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    NoRoute,
    NoCluster,
    NoHost,
    ConnectFailed,
    ConnectTimeout,
    UpstreamError,
    Timeout,
    Unsupported,
    /// A `cluster_header` route's header is missing or names no cluster.
    ClusterNotFound,
}

impl Failure {
    pub(crate) fn of(e: &Error) -> Self {
        match e.kind() {
            ErrorKind::NoHost | ErrorKind::Overflow => Failure::NoHost,
            ErrorKind::ConnectTimeout => Failure::ConnectTimeout,
            ErrorKind::ConnectFailed => Failure::ConnectFailed,
            ErrorKind::UpstreamTimeout => Failure::Timeout,
            _ => Failure::UpstreamError,
        }
    }

    /// HTTP status and text.
    pub(crate) fn http(self) -> (u16, &'static str) {
        match self {
            Failure::NoRoute => (404, "no route"),
            Failure::NoCluster | Failure::NoHost => (503, "no cluster available"),
            Failure::ConnectFailed => (502, "upstream connect error"),
            Failure::ConnectTimeout => (504, "upstream connect timeout"),
            Failure::UpstreamError => (502, "upstream connection error"),
            Failure::Timeout => (504, "upstream request timeout"),
            Failure::Unsupported => (501, "not supported over HTTP/2"),
            Failure::ClusterNotFound => (503, "cluster not found"),
        }
    }

    /// gRPC status code.
    fn grpc(self) -> u32 {
        match self {
            Failure::NoRoute | Failure::Unsupported => 12, // UNIMPLEMENTED
            Failure::Timeout => 4,                         // DEADLINE_EXCEEDED
            _ => 14,                                       // UNAVAILABLE
        }
    }
}

/// Handle one request stream; returns whether it failed.
async fn exchange(req: Request<RecvStream>, mut respond: SendResponse<Bytes>, sh: &Shared) -> bool {
    let (mut parts, body) = req.into_parts();
    let grpc = is_grpc(&parts.headers);
    let Ok(path) = normalize(&mut parts, &sh.conn.listener.http1_paths) else {
        let text = Bytes::from_static(b"invalid percent-encoding in the request path\n");
        direct(&mut respond, 400, "text/plain; charset=utf-8", text);
        return true;
    };
    let mut head = Head::new(&parts, grpc);
    head.path = path.as_deref();
    let route = sh
        .conn
        .listener
        .routes
        .route_to(Protocol::Http2, &head, sh.conn.destination);
    let size = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok());
    // Held until the response is relayed: the request is in flight till then.
    let mut permit = match sh.conn.admit(Protocol::Http2, &head, route, size).await {
        Ok(permit) => permit,
        Err(refusal) => {
            refuse(&mut respond, grpc, &refusal);
            drain_unread(body).await;
            return true;
        }
    };
    let Some(route) = route else {
        permit.log_refused(404);
        answer(&mut respond, grpc, Failure::NoRoute, None);
        drain_unread(body).await;
        return true;
    };
    let cluster = match &route.action {
        Action::Direct(d) => {
            permit.log_status(d.status);
            direct(&mut respond, d.status, &d.content_type, d.body.clone());
            drain_unread(body).await;
            return false;
        }
        Action::WebSocket(_) => {
            answer(&mut respond, grpc, Failure::Unsupported, None);
            return true;
        }
        Action::Redirect(r) => {
            let scheme = parts.uri.scheme_str().unwrap_or("http");
            let host = head.get(&Field::Host);
            let matched = head.path.unwrap_or(parts.uri.path().as_bytes());
            let query = parts
                .uri
                .query()
                .map(|q| format!("?{q}"))
                .unwrap_or_default();
            let location = r.location(scheme, host, matched, query.as_bytes());
            redirect(&mut respond, r.status, &location);
            drain_unread(body).await;
            return false;
        }
        action => match action.cluster_for(&head) {
            Some(c) => c.for_request(sh.conn.destination, &head),
            None => {
                let failure = match action {
                    Action::ClusterHeader { .. } => Failure::ClusterNotFound,
                    _ => Failure::NoCluster,
                };
                answer(&mut respond, grpc, failure, None);
                drain_unread(body).await;
                return true;
            }
        },
    };
    if let Err(refusal) = cluster.enter(&mut permit) {
        permit.log_refused(refusal.status);
        refuse(&mut respond, grpc, &refusal);
        drain_unread(body).await;
        return true;
    }
    // A request with a body is copied once its body is whole (kept up to 64 KiB).
    let mut body_copy = match sh.conn.mirror(&mut permit) {
        Some(mirror) => mirror_copy(mirror, &parts, &body, grpc),
        None => None,
    };
    let mut timeout = route.timeout.unwrap_or(cluster.request_timeout);
    if let Some(t) = grpc_timeout(&parts.headers) {
        timeout = timeout.min(t);
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let hosts = match route.retry {
        Some(_) => cluster.retry_order(&head, sh.conn.client),
        None => cluster.hosts_for(&head, sh.conn.client),
    };
    if let Some(rewrite) = route.rewrite.as_deref() {
        // A rewrite applies to the path the route matched on.
        let path = rewrite
            .path
            .as_ref()
            .map(|p| p.apply(head.path.unwrap_or(parts.uri.path().as_bytes())));
        let applied = path
            .map_or(Ok(()), |p| set_path(&mut parts.uri, &p))
            .and_then(|()| {
                rewrite.host.as_ref().map_or(Ok(()), |h| {
                    if let Ok(v) = HeaderValue::from_bytes(h)
                        && parts.headers.contains_key(header::HOST)
                    {
                        parts.headers.insert(header::HOST, v);
                    }
                    set_authority(&mut parts.uri, h)
                })
            });
        if applied.is_err() {
            let text = Bytes::from_static(b"the rewritten request target is not valid\n");
            direct(&mut respond, 500, "text/plain; charset=utf-8", text);
            drain_unread(body).await;
            return true;
        }
    }
    edit_request(permit.headers(), &mut parts.headers, sh.conn.client);
    if let Some(tp) = permit
        .trace_attempt(None)
        .and_then(|v| http::HeaderValue::from_str(&v).ok())
    {
        parts.headers.insert("traceparent", tp);
    }
    let tally = Tally::default();
    let up = Upstream {
        cluster: &cluster,
        hosts,
        deadline,
        grpc,
        edits: permit.headers(),
        tally: &tally,
    };
    let failed = match cluster.protocol.unwrap_or(UpstreamProtocol::Http2) {
        UpstreamProtocol::Http2 => {
            // gRPC calls are re-sent only when the route says so.
            let retries = route.retry.as_ref().map(|p| {
                let resendable = if grpc {
                    p.idempotent
                } else {
                    p.http_idempotent(parts.method.as_str().as_bytes())
                };
                Retries::new(p, &cluster, resendable)
            });
            forward_h2(up, &parts, body, respond, retries, body_copy.take()).await
        }
        UpstreamProtocol::Http1 => forward_h1(up, &parts, body, respond, body_copy.take()).await,
    };
    tally.log(&mut permit, &cluster);
    failed
}

/// Hand `mirror` an HTTP/1.1 copy of a request without a body (its
/// `:authority` with `-shadow` as `Host`), or, for a request with a body,
/// the [`BodyCopy`] to send once the body is whole. gRPC calls (which need
/// HTTP/2 end to end) are not copied.
fn mirror_copy(
    mirror: &Arc<super::mirror::Mirror>,
    parts: &Parts,
    body: &RecvStream,
    grpc: bool,
) -> Option<BodyCopy> {
    let copy = BodyCopy {
        mirror: mirror.clone(),
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        headers: parts.headers.clone(),
    };
    if grpc || copy.host().is_none() {
        mirror.skip();
        None
    } else if body.is_end_stream() {
        copy.send(Bytes::new());
        None
    } else {
        Some(copy)
    }
}

/// A copy of a request for a `mirror`, sent as HTTP/1.1 when its body is
/// whole (or counted as dropped when the body is too long to keep).
pub(super) struct BodyCopy {
    mirror: Arc<super::mirror::Mirror>,
    method: Method,
    uri: http::Uri,
    headers: http::HeaderMap,
}

impl BodyCopy {
    fn host(&self) -> Option<&[u8]> {
        self.uri
            .authority()
            .map(|a| a.as_str().as_bytes())
            .or_else(|| self.headers.get(header::HOST).map(HeaderValue::as_bytes))
    }

    /// Send the copy with `body`.
    pub(super) fn send(self, body: Bytes) {
        let Some(host) = self.host() else {
            return self.mirror.skip();
        };
        let target = self.uri.path_and_query().map_or("/", |p| p.as_str());
        let head = switchyard_codecs::http1::shadow_request_head(
            self.method.as_str().as_bytes(),
            target.as_bytes(),
            host,
            self.headers
                .iter()
                .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes())),
            super::mirror::SHADOW_SUFFIX,
            body.len(),
        );
        self.mirror.http1(head, body, self.method == Method::HEAD);
    }

    /// Count the copy as dropped (its body was not kept).
    pub(super) fn skip(self) {
        self.mirror.skip();
    }
}

/// Where and how one request goes upstream.
struct Upstream<'a> {
    cluster: &'a Arc<Cluster>,
    hosts: HostOrder<'a>,
    deadline: tokio::time::Instant,
    grpc: bool,
    /// The `headers` filters' rules for the response.
    edits: &'a [Arc<HeaderRules>],
    /// What the access log records of the answer.
    tally: &'a Tally,
}

impl Upstream<'_> {
    /// Answer `respond` with a gateway-made failure naming the cluster.
    fn fail(&self, respond: &mut SendResponse<Bytes>, failure: Failure) -> bool {
        answer(respond, self.grpc, failure, Some(&self.cluster.name));
        self.tally.failed(failure, self.grpc);
        true
    }
}

/// The answer to a stream, as the access log records it (atomics: the
/// exchange future is `Send`).
#[derive(Default)]
struct Tally {
    status: std::sync::atomic::AtomicU32,
    /// `grpc-status` + 1 (0: none).
    grpc: std::sync::atomic::AtomicU32,
    /// The host's index + 1 (0: none).
    host: std::sync::atomic::AtomicUsize,
    failed: std::sync::atomic::AtomicBool,
    bytes_out: std::sync::atomic::AtomicU64,
}

impl Tally {
    fn set(&self, field: &std::sync::atomic::AtomicU32, v: u32) {
        field.store(v, std::sync::atomic::Ordering::Relaxed);
    }

    fn failed(&self, failure: Failure, grpc: bool) {
        self.set(
            &self.status,
            if grpc { 200 } else { failure.http().0.into() },
        );
        if grpc {
            self.set(&self.grpc, failure.grpc() + 1);
        }
        self.failed
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn head(&self, host: usize, status: u16, grpc: Option<&HeaderValue>) {
        self.set(&self.status, status.into());
        if let Some(g) = grpc.and_then(|v| v.to_str().ok()?.parse::<u32>().ok()) {
            self.set(&self.grpc, g + 1);
        }
        self.host
            .store(host + 1, std::sync::atomic::Ordering::Relaxed);
    }

    fn body(&self, pump: &Pump) {
        self.bytes_out
            .store(pump.sent, std::sync::atomic::Ordering::Relaxed);
        if let Some(g) = pump.grpc_status {
            self.set(&self.grpc, g + 1);
        }
    }

    /// Fill in the access log record (no-op without one).
    fn log(&self, permit: &mut crate::filters::chain::Permit, cluster: &Cluster) {
        use std::sync::atomic::Ordering::Relaxed;
        let Some(r) = permit.log() else { return };
        let status = self.status.load(Relaxed);
        r.status = (status != 0).then_some(status);
        r.grpc_status = self.grpc.load(Relaxed).checked_sub(1);
        r.upstream = self
            .host
            .load(Relaxed)
            .checked_sub(1)
            .and_then(|h| cluster.hosts.get(h))
            .map(|h| h.address);
        r.bytes_out = Some(self.bytes_out.load(Relaxed));
        if self.failed.load(Relaxed) {
            r.upstream_failed(status as u16);
        }
    }
}

/// The `grpc-timeout` header (`<1..8 digits><H|M|S|m|u|n>`), if valid.
fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get("grpc-timeout")?.as_bytes();
    let (unit, digits) = v.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Answer with a gateway-made failure: an HTTP status with a text body, or
/// for gRPC a trailers-only response with `grpc-status` and `grpc-message`.
fn answer(respond: &mut SendResponse<Bytes>, grpc: bool, failure: Failure, cluster: Option<&str>) {
    let (status, text) = failure.http();
    let text = match cluster {
        Some(c) if failure != Failure::NoRoute => format!("{text} (cluster {c})"),
        _ => text.to_owned(),
    };
    if grpc {
        grpc_status_only(respond, failure.grpc(), &text);
    } else {
        direct(
            respond,
            status,
            "text/plain; charset=utf-8",
            Bytes::from(text),
        );
    }
}

/// After answering a request whose body was not read: read and drop what
/// the client still sends (at most 256 KiB, for at most 1 s), so that the
/// stream ends with the client's END_STREAM, not with a reset the client may
/// read before the answer (curl then reports a framing error instead of the
/// status). A larger or slower body is cut by the reset as before.
async fn drain_unread(mut body: RecvStream) {
    if body.is_end_stream() {
        return;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let mut left: usize = 256 * 1024;
        while let Some(Ok(chunk)) = body.data().await {
            let _ = body.flow_control().release_capacity(chunk.len());
            match left.checked_sub(chunk.len()) {
                Some(l) => left = l,
                None => break,
            }
        }
    })
    .await;
}

/// A gRPC trailers-only response: `grpc-status` and `grpc-message` in the
/// one HEADERS frame that ends the stream.
fn grpc_status_only(respond: &mut SendResponse<Bytes>, status: u32, message: &str) {
    let mut resp = Response::new(());
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert("grpc-status", HeaderValue::from(status));
    if let Ok(v) = HeaderValue::from_str(&percent_encode(message)) {
        h.insert("grpc-message", v);
    }
    let _ = respond.send_response(resp, true);
}

/// Answer a request the filters refused: for gRPC a trailers-only response
/// with the refusal's gRPC status, else its HTTP status and message.
fn refuse(respond: &mut SendResponse<Bytes>, grpc: bool, refusal: &Refusal) {
    if grpc {
        grpc_status_only(respond, refusal.grpc_status(), &refusal.message);
        return;
    }
    let mut resp = Response::new(());
    *resp.status_mut() =
        StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if matches!(
        refusal.class(),
        RefusalClass::TooMany | RefusalClass::Unavailable
    ) {
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    let body = Bytes::from(format!("{}\n", refusal.message));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    if let Ok(mut send) = respond.send_response(resp, false) {
        let _ = send.send_data(body, true);
    }
}

/// `grpc-message` encoding: printable ASCII except `%` as is, the rest `%XX`.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A redirect from the gateway: `status` with `Location`, no body.
fn redirect(respond: &mut SendResponse<Bytes>, status: u16, location: &[u8]) {
    let mut resp = Response::new(());
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::MOVED_PERMANENTLY);
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_bytes(location) {
        h.insert(header::LOCATION, v);
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    let _ = respond.send_response(resp, true);
}

/// Put `path` (keeping the query) into `uri`.
fn set_path(uri: &mut Uri, path: &[u8]) -> Result<(), ()> {
    let mut pq = path.to_vec();
    if let Some(q) = uri.query() {
        pq.push(b'?');
        pq.extend_from_slice(q.as_bytes());
    }
    let mut p = std::mem::take(uri).into_parts();
    p.path_and_query = Some(http::uri::PathAndQuery::try_from(pq).map_err(|_| ())?);
    *uri = Uri::from_parts(p).map_err(|_| ())?;
    Ok(())
}

/// Put `host` into `uri` as its authority (`:authority` upstream).
pub(crate) fn set_authority(uri: &mut Uri, host: &[u8]) -> Result<(), ()> {
    let mut p = std::mem::take(uri).into_parts();
    p.authority = Some(http::uri::Authority::try_from(host).map_err(|_| ())?);
    if p.scheme.is_none() {
        p.scheme = Some(http::uri::Scheme::HTTP);
    }
    if p.path_and_query.is_none() {
        p.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    *uri = Uri::from_parts(p).map_err(|_| ())?;
    Ok(())
}

/// A complete response from the gateway.
fn direct(respond: &mut SendResponse<Bytes>, status: u16, content_type: &str, body: Bytes) {
    let mut resp = Response::new(());
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(content_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    match respond.send_response(resp, body.is_empty()) {
        Ok(mut stream) if !body.is_empty() => {
            let _ = stream.send_data(body, true);
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------
// HTTP/2 upstream

/// How one attempt on an upstream HTTP/2 stream ended.
enum Attempt {
    /// Done; whether it failed.
    Done(bool),
    /// Refused before the upstream processed it: try a fresh connection.
    Retry,
    /// The route's retry policy decided to try again (nothing reached the
    /// client).
    Again,
}

/// One try's deadline and the request's retry state.
struct Policy<'a, 'b> {
    deadline: tokio::time::Instant,
    retries: Option<&'a mut Retries<'b>>,
}

impl Policy<'_, '_> {
    /// Decide to retry after `failure`: the request body went out whole and
    /// is kept (or there is none), and the policy allows it.
    fn again(&mut self, failure: RetryFailure, body: &Option<RetryBody>, req_done: bool) -> bool {
        req_done
            && body.as_ref().is_none_or(RetryBody::is_whole)
            && self.retries.as_mut().is_some_and(|r| r.again(failure))
    }
}

/// Forward one request stream to an HTTP/2 cluster, retrying under the
/// route's policy (`retries`) on the next host.
async fn forward_h2(
    mut up: Upstream<'_>,
    parts: &Parts,
    body: RecvStream,
    mut respond: SendResponse<Bytes>,
    mut retries: Option<Retries<'_>>,
    copy: Option<BodyCopy>,
) -> bool {
    let cluster = up.cluster;
    let empty = body.is_end_stream();
    let keep = retries.as_ref().is_some_and(|r| r.resendable());
    let mut body = Some(RetryBody::live(body, keep, copy));
    let per_try = retries.as_ref().and_then(|r| r.policy().per_try_timeout);
    let Some(mut host) = up.hosts.next() else {
        return up.fail(&mut respond, Failure::NoHost);
    };
    let mut tries = 0;
    loop {
        let deadline = per_try.map_or(up.deadline, |t| {
            up.deadline.min(tokio::time::Instant::now() + t)
        });
        let cancelled = poll_fn(|cx| respond.poll_reset(cx).map(|_| ()));
        let stream = open_h2(
            cluster,
            &mut up.hosts,
            &mut host,
            &mut tries,
            up.deadline,
            &|| h2_request(parts),
            empty,
            cancelled,
        )
        .await;
        let H2Stream {
            conn,
            resp,
            send: up_send,
        } = match stream {
            Ok(s) => s,
            Err(Some(failure)) => return up.fail(&mut respond, failure),
            Err(None) => {
                tracing::debug!("client reset the stream while it waited for an upstream stream");
                return true;
            }
        };
        let mut req_body = if empty { None } else { body.take() };
        let _in_flight = cluster.begin(host);
        match relay_h2(
            &up,
            host,
            &mut req_body,
            up_send,
            resp,
            &mut respond,
            tries < 3 && empty,
            Policy {
                deadline,
                retries: retries.as_mut(),
            },
        )
        .await
        {
            Attempt::Done(failed) => return failed,
            Attempt::Retry => {
                cluster.h2_retire(host, &conn);
            }
            Attempt::Again => {
                // The route's policy retries: the kept body, on the next host.
                body = req_body.as_ref().and_then(RetryBody::again);
                host = up.hosts.next().unwrap_or(host);
                tries = 0;
                if let Some(r) = &retries {
                    r.backoff().await;
                }
            }
        }
    }
}

/// A request stream opened on a cluster's shared HTTP/2 connection.
pub(crate) struct H2Stream {
    pub(crate) conn: Arc<H2Conn>,
    pub(crate) resp: h2::client::ResponseFuture,
    pub(crate) send: SendStream<Bytes>,
}

/// Open a stream for the request `req()` builds on the shared connection to
/// `host` (moving on through `hosts` while connecting fails; retiring a
/// connection that refuses the stream and trying again, `tries` counting the
/// attempts, at most 3), within `deadline`. `Err(None)`: `cancelled` fired.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn open_h2(
    cluster: &Cluster,
    hosts: &mut HostOrder<'_>,
    host: &mut usize,
    tries: &mut u32,
    deadline: tokio::time::Instant,
    req: &(dyn Fn() -> Request<()> + Sync),
    end_of_stream: bool,
    cancelled: impl Future<Output = ()>,
) -> Result<H2Stream, Option<Failure>> {
    tokio::pin!(cancelled);
    loop {
        *tries += 1;
        let conn = match cluster.h2(*host).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(cluster = %cluster.name, error = %e, "upstream connect failed");
                match hosts.next() {
                    Some(next) => {
                        *host = next;
                        continue;
                    }
                    None => return Err(Some(Failure::of(&e))),
                }
            }
        };
        let ready = tokio::select! {
            r = tokio::time::timeout_at(deadline, conn.sender().ready()) => r,
            () = &mut cancelled => return Err(None),
        };
        let mut send = match ready {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                cluster.h2_retire(*host, &conn);
                if *tries < 3 {
                    continue;
                }
                tracing::debug!(cluster = %cluster.name, error = %e, "upstream HTTP/2 connection refused the stream");
                return Err(Some(Failure::UpstreamError));
            }
            Err(_) => return Err(Some(Failure::Timeout)),
        };
        match send.send_request(req(), end_of_stream) {
            Ok((resp, send)) => return Ok(H2Stream { conn, resp, send }),
            Err(e) => {
                cluster.h2_retire(*host, &conn);
                if *tries < 3 {
                    continue;
                }
                tracing::debug!(cluster = %cluster.name, error = %e, "sending to the upstream failed");
                return Err(Some(Failure::UpstreamError));
            }
        }
    }
}

/// The upstream request: the client's head as it came (pseudo-headers and
/// all fields; HTTP/2 has no hop-by-hop fields to drop).
fn h2_request(parts: &Parts) -> Request<()> {
    let mut req = Request::new(());
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = Version::HTTP_2;
    *req.headers_mut() = parts.headers.clone();
    req
}

/// One stream's journey: request body up, response head and body down,
/// resets both ways.
#[allow(clippy::too_many_arguments)]
async fn relay_h2(
    up: &Upstream<'_>,
    host: usize,
    req_body: &mut Option<RetryBody>,
    mut up_send: SendStream<Bytes>,
    mut resp: h2::client::ResponseFuture,
    respond: &mut SendResponse<Bytes>,
    may_retry: bool,
    mut policy: Policy<'_, '_>,
) -> Attempt {
    let mut req_pump = Pump::default();
    let mut req_done = req_body.is_none();
    let deadline = tokio::time::sleep_until(policy.deadline);
    tokio::pin!(deadline);

    enum Step {
        Req(Result<(), PumpError>),
        Head(Result<Response<RecvStream>, h2::Error>),
        Timeout,
        ClientReset(Option<Reason>),
    }
    // Until the response head: the request body goes up meanwhile.
    let head = loop {
        let step = poll_fn(|cx| {
            if let Some(b) = req_body.as_mut().filter(|_| !req_done)
                && let Poll::Ready(r) = req_pump.poll(cx, Pin::new(b), &mut up_send)
            {
                return Poll::Ready(Step::Req(r));
            }
            if let Poll::Ready(r) = Pin::new(&mut resp).poll(cx) {
                return Poll::Ready(Step::Head(r));
            }
            if deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Step::Timeout);
            }
            if let Poll::Ready(r) = respond.poll_reset(cx) {
                return Poll::Ready(Step::ClientReset(r.ok()));
            }
            Poll::Pending
        })
        .await;
        match step {
            Step::Req(Ok(())) => req_done = true,
            Step::Req(Err(PumpError::Src(reason))) | Step::ClientReset(reason) => {
                // The client reset the stream (or its connection died).
                up_send.send_reset(reason.unwrap_or(Reason::CANCEL));
                return Attempt::Done(true);
            }
            Step::Req(Err(PumpError::Dst(Some(Reason::NO_ERROR)))) => {
                // The upstream wants no more of the body but will answer.
                req_done = true;
            }
            Step::Req(Err(PumpError::Dst(reason))) => {
                respond.send_reset(reason.unwrap_or(Reason::INTERNAL_ERROR));
                return Attempt::Done(true);
            }
            Step::Timeout => {
                up.cluster.record(host, Outcome::GatewayError);
                up_send.send_reset(Reason::CANCEL);
                if policy.again(RetryFailure::Timeout, req_body, req_done) {
                    return Attempt::Again;
                }
                up.fail(respond, Failure::Timeout);
                return Attempt::Done(true);
            }
            Step::Head(Ok(r)) => {
                up.tally
                    .head(host, r.status().as_u16(), r.headers().get("grpc-status"));
                let grpc_status = r.headers().get("grpc-status").map(|v| v.as_bytes());
                let outcome = Outcome::of_head(r.status().as_u16(), grpc_status);
                up.cluster.record(host, outcome);
                // A failed answer (HTTP status, or a trailers-only gRPC
                // status) may be replaced by a retry: nothing went out yet.
                let failure =
                    match grpc_status.and_then(|s| std::str::from_utf8(s).ok()?.parse().ok()) {
                        Some(code) => RetryFailure::Grpc(code),
                        None => RetryFailure::Status(r.status().as_u16()),
                    };
                if !matches!(failure, RetryFailure::Grpc(0))
                    && policy.again(failure, req_body, req_done)
                {
                    up_send.send_reset(Reason::CANCEL);
                    return Attempt::Again;
                }
                break r;
            }
            Step::Head(Err(e)) => {
                let refused =
                    e.reason() == Some(Reason::REFUSED_STREAM) || (e.is_go_away() && e.is_remote());
                if refused && may_retry {
                    return Attempt::Retry;
                }
                up.cluster.record(host, Outcome::GatewayError);
                tracing::debug!(cluster = %up.cluster.name, error = %e, "upstream stream failed before its response");
                if policy.again(RetryFailure::Reset, req_body, req_done) {
                    return Attempt::Again;
                }
                match e.reason() {
                    Some(reason) if e.is_reset() && e.is_remote() => respond.send_reset(reason),
                    _ => {
                        up.fail(respond, Failure::UpstreamError);
                    }
                }
                return Attempt::Done(true);
            }
        }
    };

    let (head, up_body) = head.into_parts();
    let mut resp_body = H2Body::new(up_body);
    let mut out = Response::new(());
    *out.status_mut() = head.status;
    *out.headers_mut() = head.headers;
    edit_response(up.edits, out.headers_mut());
    let mut down_send = match respond.send_response(out, resp_body.is_end_stream()) {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, "sending the response head to the client failed");
            up_send.send_reset(Reason::CANCEL);
            return Attempt::Done(true);
        }
    };
    let mut resp_pump = Pump::default();
    let mut resp_done = resp_body.is_end_stream();
    while !resp_done {
        // (is the step about the request body?, how its pump ended)
        let step = poll_fn(|cx| {
            if let Some(b) = req_body.as_mut().filter(|_| !req_done)
                && let Poll::Ready(r) = req_pump.poll(cx, Pin::new(b), &mut up_send)
            {
                return Poll::Ready((true, r));
            }
            resp_pump
                .poll(cx, Pin::new(&mut resp_body), &mut down_send)
                .map(|r| (false, r))
        })
        .await;
        match step {
            (true, Ok(()) | Err(PumpError::Dst(Some(Reason::NO_ERROR)))) => req_done = true,
            (true, Err(PumpError::Src(reason))) | (false, Err(PumpError::Dst(reason))) => {
                // The client reset the stream (or its connection died).
                up_send.send_reset(reason.unwrap_or(Reason::CANCEL));
                return Attempt::Done(true);
            }
            (true, Err(PumpError::Dst(reason))) | (false, Err(PumpError::Src(reason))) => {
                // The upstream reset the stream (or its connection died).
                down_send.send_reset(reason.unwrap_or(Reason::INTERNAL_ERROR));
                up_send.send_reset(Reason::CANCEL);
                return Attempt::Done(true);
            }
            (false, Ok(())) => resp_done = true,
        }
    }
    if !req_done {
        // The response is complete, so the rest of the request body is not
        // needed (RFC 9113 §8.1): stop the upstream side; the client's side
        // is reset with NO_ERROR by h2 when its handles drop.
        up_send.send_reset(Reason::CANCEL);
    }
    up.tally.body(&resp_pump);
    Attempt::Done(false)
}

// ---------------------------------------------------------------------------
// HTTP/1.1 upstream

/// Hop-by-hop fields, which HTTP/2 forbids.
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "trailer",
];

/// Forward one request stream to an HTTP/1.1 cluster.
async fn forward_h1(
    mut up: Upstream<'_>,
    parts: &Parts,
    body: RecvStream,
    mut respond: SendResponse<Bytes>,
    copy: Option<BodyCopy>,
) -> bool {
    let cluster = up.cluster.clone();
    let empty = body.is_end_stream();
    let mut body = Some(RetryBody::live(body, false, copy));
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (host, tcp, reused) = match cluster.checkout(&mut up.hosts).await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(cluster = %cluster.name, error = %e, "upstream connect failed");
                return up.fail(&mut respond, Failure::of(&e));
            }
        };
        let _in_flight = cluster.begin(host);
        let handshake = hyper::client::conn::http1::Builder::new()
            .handshake::<_, ReqBody>(TokioIo::new(tcp))
            .await;
        let (mut sender, connection) = match handshake {
            Ok(x) => x,
            Err(_) => return up.fail(&mut respond, Failure::UpstreamError),
        };
        let (done_tx, done_rx) = oneshot::channel();
        tokio::spawn(drive_h1(connection, done_rx, cluster.clone(), host));
        let req_body = match (empty, body.take()) {
            (false, Some(b)) => ReqBody::H2(b),
            _ => ReqBody::Empty,
        };
        let req = h1_request(parts, req_body);
        let sent = tokio::select! {
            r = tokio::time::timeout_at(up.deadline, sender.send_request(req)) => r,
            _ = poll_fn(|cx| respond.poll_reset(cx)) => return true,
        };
        let resp = match sent {
            Ok(Ok(resp)) => resp,
            Ok(Err(e)) if reused && attempt == 1 && empty => {
                // A pooled connection the server had closed: retry once.
                tracing::debug!(cluster = %cluster.name, error = %e, "retrying on a fresh connection");
                continue;
            }
            Ok(Err(e)) => {
                tracing::debug!(cluster = %cluster.name, error = %e, "upstream HTTP/1 request failed");
                cluster.record(host, Outcome::GatewayError);
                return up.fail(&mut respond, Failure::UpstreamError);
            }
            Err(_) => {
                cluster.record(host, Outcome::GatewayError);
                return up.fail(&mut respond, Failure::Timeout);
            }
        };
        cluster.record(host, Outcome::of_status(resp.status().as_u16()));
        up.tally.head(host, resp.status().as_u16(), None);
        let keep_alive = resp.version() == Version::HTTP_11
            && !resp.headers().get_all(header::CONNECTION).iter().any(|v| {
                v.as_bytes()
                    .split(|b| *b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
            });
        let (head, mut resp_body) = resp.into_parts();
        let mut out = Response::new(());
        *out.status_mut() = head.status;
        *out.headers_mut() = strip_hop_by_hop(head.headers);
        edit_response(up.edits, out.headers_mut());
        let eos = resp_body.is_end_stream();
        let mut down_send = match respond.send_response(out, eos) {
            Ok(s) => s,
            Err(_) => return true,
        };
        let mut ok = true;
        if !eos {
            let mut pump = Pump::default();
            let r = poll_fn(|cx| pump.poll(cx, Pin::new(&mut resp_body), &mut down_send)).await;
            match r {
                Ok(()) => {}
                Err(PumpError::Src(reason)) => {
                    down_send.send_reset(reason.unwrap_or(Reason::INTERNAL_ERROR));
                    ok = false;
                }
                Err(PumpError::Dst(_)) => ok = false,
            }
            up.tally.body(&pump);
        }
        let _ = done_tx.send(ok && keep_alive);
        drop(sender);
        return !ok;
    }
}

/// Drive one HTTP/1 upstream connection; when the exchange ended cleanly on
/// a keep-alive connection, give the connection back to the cluster's pool.
async fn drive_h1(
    connection: hyper::client::conn::http1::Connection<
        TokioIo<crate::upstream::UpstreamConn>,
        ReqBody,
    >,
    mut done: oneshot::Receiver<bool>,
    cluster: Arc<Cluster>,
    host: usize,
) {
    let connection = connection.without_shutdown();
    tokio::pin!(connection);
    let parts = tokio::select! {
        r = &mut connection => match (r, (&mut done).await) {
            (Ok(parts), Ok(true)) => parts,
            _ => return,
        },
        reusable = &mut done => {
            if reusable != Ok(true) {
                return;
            }
            match tokio::time::timeout(Duration::from_secs(1), &mut connection).await {
                Ok(Ok(parts)) => parts,
                _ => return,
            }
        }
    };
    if parts.read_buf.is_empty() {
        cluster.pool.put(host, parts.io.into_inner());
    }
}

/// The HTTP/1.1 request for an HTTP/2 one: origin-form target, `Host` from
/// `:authority`, no `TE` (HTTP/1 would need `Connection: TE` for it).
fn h1_request(parts: &Parts, body: ReqBody) -> Request<ReqBody> {
    let mut req = Request::new(body);
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts
        .uri
        .path_and_query()
        .and_then(|pq| Uri::try_from(pq.as_str()).ok())
        .unwrap_or_else(|| Uri::from_static("/"));
    if parts.method == Method::OPTIONS && parts.uri.path() == "*" {
        *req.uri_mut() = Uri::from_static("*");
    }
    *req.version_mut() = Version::HTTP_11;
    let mut headers = parts.headers.clone();
    headers.remove(header::TE);
    if !headers.contains_key(header::HOST)
        && let Some(a) = parts.uri.authority()
        && let Ok(v) = HeaderValue::from_str(a.as_str())
    {
        headers.insert(header::HOST, v);
    }
    *req.headers_mut() = headers;
    req
}

/// Drop the fields HTTP/2 forbids, and those `Connection` names.
pub(crate) fn strip_hop_by_hop(mut headers: HeaderMap) -> HeaderMap {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .filter_map(|t| HeaderName::from_bytes(t.trim_ascii()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts() {
        let t = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert("grpc-timeout", HeaderValue::from_static(v));
            grpc_timeout(&h)
        };
        assert_eq!(t("1S"), Some(Duration::from_secs(1)));
        assert_eq!(t("250m"), Some(Duration::from_millis(250)));
        assert_eq!(t("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(t("99999999n"), Some(Duration::from_nanos(99_999_999)));
        assert_eq!(t("123456789S"), None, "at most 8 digits");
        assert_eq!(t("S"), None);
        assert_eq!(t("10x"), None);
        assert_eq!(t("-1S"), None);
    }

    #[test]
    fn grpc_message_is_percent_encoded() {
        assert_eq!(percent_encode("no route"), "no route");
        assert_eq!(percent_encode("50% ü\n"), "50%25 %C3%BC%0A");
    }

    #[test]
    fn metadata_of_a_grpc_call() {
        let req = Request::builder()
            .method("POST")
            .uri("http://api.example:8080/pkg.Greeter/SayHello?x=1")
            .header("content-type", "application/grpc+proto")
            .header("X-Tenant", "a")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        assert!(is_grpc(&parts.headers));
        let head = Head::new(&parts, true);
        assert_eq!(head.get(&Field::Method), Some(&b"POST"[..]));
        assert_eq!(head.get(&Field::Host), Some(&b"api.example:8080"[..]));
        assert_eq!(head.get(&Field::Path), Some(&b"/pkg.Greeter/SayHello"[..]));
        assert_eq!(head.get(&Field::Service), Some(&b"pkg.Greeter"[..]));
        assert_eq!(head.get(&Field::RpcMethod), Some(&b"SayHello"[..]));
        assert_eq!(head.get(&Field::Header("x-tenant".into())), Some(&b"a"[..]));
        assert_eq!(head.get(&Field::Header("X-TENANT".into())), Some(&b"a"[..]));
    }

    #[test]
    fn hop_by_hop_fields_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("close, x-private"));
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("content-type", HeaderValue::from_static("text/plain"));
        let h = strip_hop_by_hop(h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("content-type"));
    }
}
