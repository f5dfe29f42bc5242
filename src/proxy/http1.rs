//! HTTP/1.1 through the gateway: keep-alive downstream connections, one
//! exchange at a time on an exclusive upstream connection taken from the
//! cluster's pool, bodies streamed both ways as they arrive (never buffered
//! whole), `Expect: 100-continue` and upgrades (101) passed through.

use std::time::{Duration, Instant};

use crate::net::stream::{ReadHalf, Stream, WriteHalf};
use bytes::{Bytes, BytesMut};
use switchyard_codecs::http1::{
    self, BodyLength, ClientConnection, RequestDecoder, RequestHead, ResponseDecoder,
};
use switchyard_codecs::{CodecError, Decoder, Field, Metadata, Part, Protocol, WireHead};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::{Conn, drained, read_more};
use crate::config::{ForwardPath, UpstreamProtocol};
use crate::error::{Error, ErrorKind};
use crate::filters::chain::{Refusal, RefusalClass};
use crate::filters::headers::{HeaderRules, edit_request, edit_response};
use crate::net::deadline::HeadDeadline;
use crate::observe::ConnMetrics;
use crate::router::Action;
use crate::stream::session::splice;
use crate::stream::websocket::WebSocket;
use crate::upstream::retry::MAX_KEPT_BODY;
use crate::upstream::{Cluster, Failure, Outcome, Retries, RetryPolicy, UpstreamConn};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha1::{Digest, Sha1};
use std::sync::Arc;

mod to_h2;

/// Writes smaller than this are gathered into one buffer before a syscall.
const COALESCE: usize = 16 * 1024;

/// The downstream side of one HTTP/1 connection.
struct Downstream {
    rd: ReadHalf,
    wr: WriteHalf,
    buf: BytesMut,
    decoder: RequestDecoder,
    /// What the access log records of the current exchange.
    tally: Tally,
}

/// The answer to the current request, as the access log records it.
#[derive(Default)]
struct Tally {
    status: u16,
    bytes_out: u64,
    upstream: Option<std::net::SocketAddr>,
    upstream_failed: bool,
    local_refusal: bool,
}

impl Tally {
    /// A local answer `resp` went out.
    fn answered(&mut self, resp: &[u8]) {
        self.status = resp
            .get(9..12)
            .and_then(|s| std::str::from_utf8(s).ok())
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        self.bytes_out += resp.len() as u64;
    }
}

/// What happens to the downstream connection after an exchange.
enum After {
    KeepAlive,
    Close,
    /// 101 Switching Protocols: splice the two connections.
    Upgrade(UpstreamConn, BytesMut),
    /// The gateway accepted a WebSocket upgrade: serve this protocol inside it.
    WebSocket(Protocol),
}

/// Serve one downstream HTTP/1 connection; `buf` holds the bytes detection read.
pub async fn serve(stream: Stream, buf: BytesMut, mut conn: Conn) {
    let limits = conn.listener.http1;
    let (rd, wr) = stream.into_split();
    let mut down = Downstream {
        rd,
        wr,
        buf,
        decoder: RequestDecoder::new(limits),
        tally: Tally::default(),
    };
    // After an error answer the client may still be sending: read and drop
    // its bytes for a moment before closing, so the close is a FIN and the
    // answer is not lost to a reset.
    let mut linger = false;
    loop {
        let head = match next_head(&mut down, &mut conn).await {
            Ok(Some(head)) => head,
            Ok(None) => break,
            Err(e) => {
                let (status, text) = match e {
                    ReadError::Codec(CodecError::HeadTooLarge { .. }) => {
                        (431, "request header fields too large")
                    }
                    ReadError::Codec(_) => (400, "malformed request"),
                    ReadError::HeadTimeout => (408, "request head timeout"),
                    ReadError::IdleTimeout | ReadError::Io => break,
                };
                conn.metrics.observe(Duration::ZERO, true);
                let _ = down
                    .wr
                    .write_all(&http1::error_response(status, text, true))
                    .await;
                linger = true;
                break;
            }
        };
        let started = Instant::now();
        let path = match checked_path(&head, &conn.listener.http1_paths) {
            Ok(path) => path,
            Err(text) => {
                conn.metrics.observe(Duration::ZERO, true);
                let resp = answer_to(&head, &http1::error_response(400, text, true));
                let _ = down.wr.write_all(&resp).await;
                linger = true;
                break;
            }
        };
        let (after, failed) = exchange(&head, path.as_deref(), &mut down, &conn).await;
        conn.metrics.observe(started.elapsed(), failed);
        match after {
            After::KeepAlive if !conn.draining() => {}
            After::KeepAlive | After::Close => {
                linger = failed;
                break;
            }
            After::Upgrade(up, up_buf) => {
                upgrade(down, up, up_buf, &conn).await;
                return;
            }
            After::WebSocket(protocol) => {
                let Downstream { rd, wr, buf, .. } = down;
                let Some(stream) = rd.reunite(wr) else { return };
                let max_frame = conn
                    .listener
                    .mqtt
                    .as_ref()
                    .map_or(1 << 20, |m| m.max_packet + 16);
                let ws = Stream::Ws(Box::new(WebSocket::new(stream, buf, max_frame)));
                let inner = conn.inner(protocol);
                let _active = inner.metrics.connection();
                if protocol == Protocol::Mqtt {
                    super::mqtt::serve(ws, BytesMut::new(), inner).await;
                }
                return;
            }
        }
    }
    let _ = down.wr.shutdown().await;
    if linger {
        let drain = async {
            let mut sink = BytesMut::new();
            let mut total = 0;
            while total < LINGER_BYTES {
                sink.clear();
                match read_more(&mut down.rd, &mut sink, &conn.metrics).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n,
                }
            }
        };
        let _ = tokio::time::timeout(conn.listener.http1_paths.lingering_close.get(), drain).await;
    }
}

/// How many bytes a connection is drained of, at most, before it closes after
/// an error answer (for at most `http1.lingering_close`).
const LINGER_BYTES: usize = 256 * 1024;

enum ReadError {
    Codec(CodecError),
    Io,
    IdleTimeout,
    /// A head started but did not end within `request_head_timeout`.
    HeadTimeout,
}

/// The checks a server makes on a request head beyond its syntax, and the
/// normalised path routes match (`None`: the path as sent). `Err`: the text of
/// a `400`.
fn checked_path(
    head: &RequestHead,
    policy: &crate::config::Http1Limits,
) -> Result<Option<Vec<u8>>, &'static str> {
    // RFC 9112 §3.2: a server MUST answer 400 to an HTTP/1.1 request without Host.
    if head.version() == http1::Version::Http11 && head.host().is_none() {
        return Err("HTTP/1.1 request without a Host header");
    }
    super::normalized_path(head.path(), policy)
        .map_err(|_| "invalid percent-encoding in the request path")
}

/// A request as the router sees it: the head with the normalised path.
struct Normalized<'a> {
    head: &'a RequestHead,
    path: &'a [u8],
}

impl Metadata for Normalized<'_> {
    fn get(&self, field: &Field) -> Option<&[u8]> {
        match field {
            Field::Path => Some(self.path),
            other => self.head.get(other),
        }
    }

    fn for_each_header(&self, f: &mut dyn FnMut(&[u8], &[u8])) {
        self.head.for_each_header(f);
    }
}

/// Wait for the next request head, within the idle timeout, and once its
/// first byte is in, within the listener's `request_head_timeout`; `None` at
/// a clean end (EOF between requests, or draining).
async fn next_head(
    down: &mut Downstream,
    conn: &mut Conn,
) -> Result<Option<RequestHead>, ReadError> {
    let deadline = tokio::time::Instant::now() + conn.listener.idle_timeout;
    let mut timer = HeadDeadline::new(conn.listener.request_head_timeout);
    loop {
        match down.decoder.decode(&mut down.buf) {
            Ok(Some(Part::Head(head))) => return Ok(Some(head)),
            Ok(Some(_)) => {
                return Err(ReadError::Codec(CodecError::malformed(
                    "http1",
                    "body without a head",
                )));
            }
            Ok(None) => {}
            Err(e) => return Err(ReadError::Codec(e)),
        }
        let between_requests = down.buf.is_empty();
        // A slowloris client trickles a head: bound the whole head, not each read.
        timer.update(false, !between_requests);
        tokio::select! {
            r = read_more(&mut down.rd, &mut down.buf, &conn.metrics) => match r {
                Ok(0) if between_requests => return Ok(None),
                Ok(0) => return Err(ReadError::Io),
                Ok(_) => {}
                Err(_) => return Err(ReadError::Io),
            },
            () = timer.expired() => return Err(ReadError::HeadTimeout),
            () = tokio::time::sleep_until(deadline), if !timer.armed() => return Err(ReadError::IdleTimeout),
            () = drained(&mut conn.drain), if between_requests => return Ok(None),
        }
    }
}

/// Handle one request: route it (on `path` when normalisation changed it),
/// answer it locally or forward it. Returns what to do with the connection
/// and whether the request failed.
async fn exchange(
    head: &RequestHead,
    path: Option<&[u8]>,
    down: &mut Downstream,
    conn: &Conn,
) -> (After, bool) {
    let normalized;
    let meta: &(dyn Metadata + Sync) = match path {
        Some(path) => {
            normalized = Normalized { head, path };
            &normalized
        }
        None => head,
    };
    let route = conn
        .listener
        .routes
        .route_to(Protocol::Http1, meta, conn.destination);
    let size = match head.body() {
        BodyLength::Length(n) => Some(n),
        _ => None,
    };
    // Held until the response is relayed: the request is in flight till then.
    let mut permit = match conn.admit(Protocol::Http1, meta, route, size).await {
        Ok(permit) => permit,
        Err(refusal) => return (refuse(head, down, &refusal, &conn.metrics).await, true),
    };
    down.tally = Tally::default();
    let out = routed(head, path, down, conn, route, &mut permit).await;
    if let Some(r) = permit.log() {
        let t = &down.tally;
        r.status = (t.status != 0).then_some(t.status.into());
        r.bytes_out = Some(t.bytes_out);
        r.upstream = t.upstream;
        if t.upstream_failed {
            r.upstream_failed(t.status);
        } else if t.local_refusal {
            r.refused(t.status);
        }
    }
    out
}

/// [`exchange`] once the request is admitted.
async fn routed(
    head: &RequestHead,
    path: Option<&[u8]>,
    down: &mut Downstream,
    conn: &Conn,
    route: Option<&crate::router::Route>,
    permit: &mut crate::filters::chain::Permit,
) -> (After, bool) {
    let cluster = match route.map(|r| &r.action) {
        None => {
            down.tally.local_refusal = true;
            return (fail(head, down, 404, "no route", &conn.metrics).await, true);
        }
        Some(Action::WebSocket(protocol)) => {
            return (accept_websocket(head, down, *protocol).await, false);
        }
        Some(Action::Direct(d)) => {
            let resp = http1::response(
                d.status,
                &[("Content-Type", &d.content_type)],
                &d.body,
                !head.keep_alive(),
            );
            return (local(head, down, &resp, &conn.metrics).await, false);
        }
        Some(Action::Redirect(r)) => {
            let scheme = if matches!(down.rd, ReadHalf::Tls(_)) {
                "https"
            } else {
                "http"
            };
            let matched = path.unwrap_or(head.path());
            let location = r.location(scheme, head.effective_host(), matched, head.query());
            let location = String::from_utf8_lossy(&location);
            let resp = http1::response(
                r.status,
                &[("Location", &location)],
                b"",
                !head.keep_alive(),
            );
            return (local(head, down, &resp, &conn.metrics).await, false);
        }
        Some(action @ Action::ClusterHeader { .. }) => match action.cluster_for(head) {
            Some(c) => c.clone(),
            None => {
                let after = fail(head, down, 503, "cluster not found", &conn.metrics).await;
                return (after, true);
            }
        },
        Some(action) => match action.cluster_for(head) {
            Some(c) => c.for_request(conn.destination, head),
            None => {
                return (
                    local(
                        head,
                        down,
                        &http1::error_response(503, "no cluster available", true),
                        &conn.metrics,
                    )
                    .await,
                    true,
                );
            }
        },
    };
    if let Err(refusal) = cluster.enter(permit) {
        down.tally.local_refusal = true;
        return (refuse(head, down, &refusal, &conn.metrics).await, true);
    }
    let timeout = route
        .and_then(|r| r.timeout)
        .unwrap_or(cluster.request_timeout);
    let rewrite = route.and_then(|r| r.rewrite.as_deref());
    // A rewrite applies to the path the route matched on (normalised or not).
    let rewritten = rewrite
        .and_then(|r| r.path.as_ref())
        .map(|p| p.apply(path.unwrap_or(head.path())));
    let forward_path = rewritten
        .as_deref()
        .or(path.filter(|_| conn.listener.http1_paths.forward_path == ForwardPath::Normalized));
    // The copy goes to the path the upstream gets (header edits aside).
    if let Some(mirror) = conn.mirror(permit) {
        mirror_copy(mirror, head, forward_path, &down.buf);
    }
    let traceparent = permit.trace_attempt(None);
    let edits = Edits {
        host: rewrite.and_then(|r| r.host.as_deref()),
        headers: permit.headers(),
        client: conn.client,
        traceparent: traceparent.as_deref(),
    };
    if cluster.protocol == Some(UpstreamProtocol::Http2) {
        return to_h2::forward(head, forward_path, &edits, down, &cluster, timeout, conn).await;
    }
    let outgoing = if edits.is_empty() {
        head.forwarded(forward_path)
    } else {
        head.forwarded_with(forward_path, |fields| {
            if let Some(host) = edits.host {
                fields.set(b"Host", host);
            }
            edit_request(edits.headers, fields, edits.client);
            if let Some(tp) = edits.traceparent {
                fields.set(b"traceparent", tp.as_bytes());
            }
        })
    };
    forward(
        head,
        &outgoing,
        edits.headers,
        down,
        &cluster,
        timeout,
        route.and_then(|r| r.retry.as_deref()),
        conn,
    )
    .await
}

/// What the route and the filters change in a request going upstream and
/// in its response.
pub(super) struct Edits<'a> {
    /// `host_rewrite`.
    pub(super) host: Option<&'a [u8]>,
    /// The rules of the `headers` filters the request passed.
    pub(super) headers: &'a [Arc<HeaderRules>],
    pub(super) client: std::net::IpAddr,
    /// The W3C `traceparent` of the upstream attempt (under `tracing`).
    pub(super) traceparent: Option<&'a str>,
}

impl Edits<'_> {
    fn is_empty(&self) -> bool {
        self.host.is_none() && self.headers.is_empty() && self.traceparent.is_none()
    }
}

/// Hand a copy of the request to `mirror` when its whole body is in `buf`
/// already (no body, or a `Content-Length` of at most
/// [`super::mirror::MAX_HTTP_BODY`] that came with the head); upgrades,
/// `CONNECT` and `Expect: 100-continue` requests are not copied.
fn mirror_copy(
    mirror: &std::sync::Arc<super::mirror::Mirror>,
    head: &RequestHead,
    path: Option<&[u8]>,
    buf: &BytesMut,
) {
    let body = match head.body() {
        BodyLength::Empty => Some(Bytes::new()),
        BodyLength::Length(n) if n <= super::mirror::MAX_HTTP_BODY => usize::try_from(n)
            .ok()
            .and_then(|n| buf.get(..n))
            .map(Bytes::copy_from_slice),
        _ => None,
    };
    match body {
        Some(body)
            if !head.is_upgrade()
                && !head.expects_continue()
                && !head.method().eq_ignore_ascii_case(b"CONNECT") =>
        {
            mirror.http1(
                head.shadowed(path, super::mirror::SHADOW_SUFFIX),
                body,
                head.method().eq_ignore_ascii_case(b"HEAD"),
            );
        }
        _ => mirror.skip(),
    }
}

/// Answer a WebSocket upgrade request (RFC 6455 §4.2) for `protocol`.
async fn accept_websocket(head: &RequestHead, down: &mut Downstream, protocol: Protocol) -> After {
    let token = |name: &str, want: &[u8]| {
        head.header(name).is_some_and(|v| {
            v.split(|b| *b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(want))
        })
    };
    let key = head.header("sec-websocket-key");
    let upgrade = head.method() == b"GET"
        && token("upgrade", b"websocket")
        && token("connection", b"upgrade");
    let (Some(key), true) = (key, upgrade) else {
        let resp = http1::response(
            426,
            &[
                ("Upgrade", "websocket"),
                ("Content-Type", "text/plain; charset=utf-8"),
            ],
            b"this route takes WebSocket upgrades only\n",
            true,
        );
        let _ = down.wr.write_all(&resp).await;
        return After::Close;
    };
    if head.header("sec-websocket-version") != Some(b"13") {
        let resp = http1::response(426, &[("Sec-WebSocket-Version", "13")], b"", true);
        let _ = down.wr.write_all(&resp).await;
        return After::Close;
    }
    let mut sha = Sha1::new();
    sha.update(key.trim_ascii());
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let accept = STANDARD.encode(sha.finalize());
    let name = protocol.name();
    let mut resp = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n"
    );
    if token("sec-websocket-protocol", name.as_bytes()) {
        resp.push_str(&format!("Sec-WebSocket-Protocol: {name}\r\n"));
    }
    resp.push_str("\r\n");
    match down.wr.write_all(resp.as_bytes()).await {
        Ok(()) => After::WebSocket(protocol),
        Err(_) => After::Close,
    }
}

/// Answer a request the filters refused: `refusal`'s status with its
/// message as a plain-text body. A request refused for its size (or by a
/// filter that closes) is not read further: the answer goes out at once
/// and the connection closes.
async fn refuse(
    head: &RequestHead,
    down: &mut Downstream,
    refusal: &Refusal,
    metrics: &ConnMetrics,
) -> After {
    let too_large = refusal.class() == RefusalClass::TooLarge && head.has_body();
    let close = too_large || refusal.close;
    let resp = refusal_response(refusal, !head.keep_alive() || close);
    if close {
        let resp = answer_to(head, &resp);
        if down.wr.write_all(&resp).await.is_ok() {
            metrics.bytes_out.increment(resp.len() as u64);
            down.tally.answered(&resp);
        }
        return After::Close;
    }
    local(head, down, &resp, metrics).await
}

/// An HTTP/1.1 response for a refusal (also used for HTTP/1 over HTTP/2 answers).
pub(super) fn refusal_response(refusal: &Refusal, close: bool) -> Bytes {
    let body = format!("{}\n", refusal.message);
    let mut headers = vec![("Content-Type", "text/plain; charset=utf-8")];
    if matches!(
        refusal.class(),
        RefusalClass::TooMany | RefusalClass::Unavailable
    ) {
        headers.push(("Retry-After", "1"));
    }
    http1::response(refusal.status, &headers, body.as_bytes(), close)
}

/// Answer from the gateway: skip the request body, then write `resp`.
async fn local(
    head: &RequestHead,
    down: &mut Downstream,
    resp: &Bytes,
    metrics: &ConnMetrics,
) -> After {
    let mut keep = head.keep_alive();
    if head.has_body() {
        if head.expects_continue() {
            // The client waits for 100 before sending the body; answer and close.
            keep = false;
        } else {
            match skip_body(down, metrics).await {
                Ok(()) => {}
                Err(ReadError::Codec(_)) => {
                    let _ = down.wr.write_all(&malformed_body(head)).await;
                    return After::Close;
                }
                Err(_) => return After::Close,
            }
        }
    }
    let resp = answer_to(head, resp);
    let written = down.wr.write_all(&resp).await;
    if written.is_ok() {
        metrics.bytes_out.increment(resp.len() as u64);
        down.tally.answered(&resp);
    }
    match written {
        Ok(()) if keep => After::KeepAlive,
        _ => After::Close,
    }
}

async fn skip_body(down: &mut Downstream, metrics: &ConnMetrics) -> Result<(), ReadError> {
    loop {
        match down.decoder.decode(&mut down.buf) {
            Ok(Some(Part::End)) => return Ok(()),
            Ok(Some(_)) => {}
            Ok(None) => match read_more(&mut down.rd, &mut down.buf, metrics).await {
                Ok(0) => return Err(ReadError::Io),
                Ok(_) => {}
                Err(_) => return Err(ReadError::Io),
            },
            Err(e) => return Err(ReadError::Codec(e)),
        }
    }
}

/// How relaying the response ended.
struct Relayed {
    keep_alive: bool,
    upgraded: bool,
    /// The response head was held back for a retry: nothing reached the
    /// client; `keep_alive` says whether the response is over (no body).
    held: bool,
}

/// Stands in for the relay's result when the request body broke first.
const MALFORMED: Relayed = Relayed {
    keep_alive: false,
    upgraded: false,
    held: false,
};

/// A failed relay: whether any response byte had reached the client.
struct RelayError {
    error: Error,
    forwarded: bool,
}

/// The answer to a request whose body framing is broken (a bad chunk size).
fn malformed_body(head: &RequestHead) -> Bytes {
    answer_to(
        head,
        &http1::error_response(400, "malformed request body", true),
    )
}

/// A gateway-made response as it goes to the client of `head`: without its
/// body when the request was `HEAD` (RFC 9110 §9.3.2; the client would read
/// the body as the next response).
pub(super) fn answer_to(head: &RequestHead, resp: &Bytes) -> Bytes {
    if !head.method().eq_ignore_ascii_case(b"HEAD") {
        return resp.clone();
    }
    match resp.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(end) => resp.slice(..end + 4),
        None => resp.clone(),
    }
}

/// The request body across the tries of one request.
enum Body {
    /// Still with the client: the next try streams it from there, keeping a
    /// copy in `Some(buf)` for a retry.
    Unread(Option<BytesMut>),
    /// Read completely and kept (or there is none): a retry sends it again.
    Kept(Bytes),
    /// Read, in part or whole, and not kept: no other try can send it.
    Gone,
}

impl Body {
    /// The body of a request about to be forwarded: kept for a retry when
    /// the route retries and may re-send the request, and the body is known
    /// or turns out to be at most [`MAX_KEPT_BODY`].
    fn of(head: &RequestHead, keep: bool) -> Self {
        if !head.has_body() {
            return Body::Kept(Bytes::new());
        }
        let small = match head.body() {
            BodyLength::Length(n) => n <= MAX_KEPT_BODY as u64,
            _ => true,
        };
        Body::Unread((keep && small).then(BytesMut::new))
    }

    /// Whether another try can still send the whole request.
    fn resendable(&self) -> bool {
        !matches!(self, Body::Gone)
    }
}

/// Forward one request (its head as `outgoing`) to the cluster and relay the
/// response, retrying under the route's `retry` policy.
#[allow(clippy::too_many_arguments)]
async fn forward(
    head: &RequestHead,
    outgoing: &Bytes,
    response_edits: &[Arc<HeaderRules>],
    down: &mut Downstream,
    cluster: &Cluster,
    timeout: Duration,
    retry: Option<&RetryPolicy>,
    conn: &Conn,
) -> (After, bool) {
    let limits = conn.listener.http1;
    let mut retries = retry.map(|p| Retries::new(p, cluster, p.http_idempotent(head.method())));
    let mut body = Body::of(head, retries.as_ref().is_some_and(|r| r.resendable()));
    let try_timeout = retry.and_then(|p| p.per_try_timeout).unwrap_or(timeout);
    // Retries walk every host in order; one try takes the next (all of the
    // rest when the cluster fails over on connect errors).
    let per_try = if retry.is_none() || cluster.fails_over() {
        usize::MAX
    } else {
        1
    };
    let fresh_order = || match retry {
        Some(_) => cluster.retry_order(head, conn.client),
        None => cluster.hosts_for(head, conn.client),
    };
    let mut order = fresh_order();
    let mut stale_retried = false;
    loop {
        let mut checked = cluster.checkout(order.by_ref().take(per_try)).await;
        if matches!(&checked, Err(e) if e.kind() == ErrorKind::NoHost)
            && retries.as_ref().is_some_and(|r| r.made() > 0)
        {
            // Every host had a try: start over (a one-host cluster retries it).
            order = fresh_order();
            checked = cluster.checkout(order.by_ref().take(per_try)).await;
        }
        let (host, mut up, reused) = match checked {
            Ok(x) => x,
            Err(e) => {
                if let (Some(r), Some(failure)) = (retries.as_mut(), Failure::of_error(&e))
                    && body.resendable()
                    && r.again(failure)
                {
                    r.backoff().await;
                    continue;
                }
                let (status, text) = match e.kind() {
                    ErrorKind::Overflow => (503, e.to_string()),
                    ErrorKind::ConnectTimeout => (
                        504,
                        format!("upstream connect error (cluster {})", cluster.name),
                    ),
                    _ => (
                        502,
                        format!("upstream connect error (cluster {})", cluster.name),
                    ),
                };
                down.tally.upstream_failed = true;
                return (fail(head, down, status, &text, &conn.metrics).await, true);
            }
        };
        let _in_flight = cluster.begin(host);
        down.tally.upstream = cluster.hosts.get(host).map(|h| h.address);
        let mut up_buf = BytesMut::with_capacity(4096);
        let mut up_dec = ResponseDecoder::new(limits);
        up_dec.expect_response_to(head.method());

        let answered = std::sync::atomic::AtomicBool::new(false);
        let status = std::sync::atomic::AtomicU16::new(0);
        // Set once the whole request went out and can go out again.
        let whole = std::sync::atomic::AtomicBool::new(false);
        let mut hold = |s: u16| {
            whole.load(std::sync::atomic::Ordering::Relaxed)
                && retries
                    .as_mut()
                    .is_some_and(|r| r.again(Failure::Status(s)))
        };
        let (sent, relayed) = {
            let (up_rd, mut up_wr) = up.split();
            let Downstream {
                rd,
                wr,
                buf,
                decoder,
                tally,
            } = &mut *down;
            let wr = &mut Counted {
                inner: wr,
                sent: &mut tally.bytes_out,
            };
            let send = send_request(
                head,
                outgoing,
                Source {
                    rd,
                    buf,
                    decoder,
                    body: &mut body,
                    whole: &whole,
                },
                &mut up_wr,
                &conn.metrics,
            );
            let connect = head.method().eq_ignore_ascii_case(b"CONNECT");
            let relay = relay_response(
                up_rd,
                &mut up_buf,
                &mut up_dec,
                wr,
                Client {
                    version: head.version(),
                    keep_alive: head.keep_alive(),
                    tunnel_request: connect,
                    answered: &answered,
                    status: &status,
                    edits: response_edits,
                    hold: &mut hold,
                },
                try_timeout,
                &conn.metrics,
            );
            tokio::pin!(send, relay);
            let mut sent: Option<Result<(), SendError>> = None;
            loop {
                tokio::select! {
                    r = &mut send, if sent.is_none() => sent = Some(r),
                    r = &mut relay => break (sent, r),
                }
                match sent {
                    Some(Err(SendError::Downstream)) => {
                        // The client is gone mid-body: nothing to answer.
                        return (After::Close, true);
                    }
                    Some(Err(SendError::Malformed)) => break (sent, Ok(MALFORMED)),
                    _ => {}
                }
            }
        };
        if matches!(sent, Some(Err(SendError::Malformed))) {
            // A broken body framing (bad chunk size): the upstream connection
            // is spoilt; the client gets a 400 unless a response has started.
            if !answered.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = down.wr.write_all(&malformed_body(head)).await;
            }
            return (After::Close, true);
        }
        let body_complete = matches!(sent, Some(Ok(())));
        let answered_status = status.load(std::sync::atomic::Ordering::Relaxed);
        if answered_status != 0 {
            down.tally.status = answered_status;
        }
        match &relayed {
            Ok(_) => cluster.record(
                host,
                Outcome::of_status(status.load(std::sync::atomic::Ordering::Relaxed)),
            ),
            // A pooled connection the server had closed says nothing of the host.
            Err(e) if reused && e.error.kind() == ErrorKind::UpstreamClosed => {}
            Err(e) => Outcome::of_error(&e.error).map_or((), |o| cluster.record(host, o)),
        }
        match relayed {
            Ok(r) if r.held => {
                // The answer was a retriable status: discard it and try again.
                if r.keep_alive && body_complete && up_buf.is_empty() {
                    cluster.pool.put(host, up);
                }
                if let Some(r) = &retries {
                    r.backoff().await;
                }
                continue;
            }
            Ok(r) => {
                if r.upgraded {
                    return (After::Upgrade(up, up_buf), false);
                }
                if r.keep_alive && body_complete && up_buf.is_empty() {
                    cluster.pool.put(host, up);
                }
                let keep = r.keep_alive && head.keep_alive() && body_complete;
                return (if keep { After::KeepAlive } else { After::Close }, false);
            }
            Err(RelayError {
                error,
                forwarded: false,
            }) if reused
                && !stale_retried
                && !head.has_body()
                && error.kind() == ErrorKind::UpstreamClosed =>
            {
                // A pooled connection the server had already closed: retry once on a new one.
                tracing::debug!(cluster = %cluster.name, "retrying on a fresh connection: {error}");
                stale_retried = true;
                order = fresh_order();
                continue;
            }
            Err(RelayError { error, forwarded }) => {
                if !forwarded
                    && let (Some(r), Some(failure)) = (retries.as_mut(), Failure::of_error(&error))
                    && body.resendable()
                    && r.again(failure)
                {
                    tracing::debug!(cluster = %cluster.name, %error, "retrying");
                    r.backoff().await;
                    continue;
                }
                tracing::debug!(cluster = %cluster.name, %error, "upstream request failed");
                if forwarded {
                    return (After::Close, true);
                }
                let (status, what) = match error.kind() {
                    ErrorKind::UpstreamTimeout => (504, "upstream request timeout"),
                    _ => (502, "upstream connection error"),
                };
                down.tally.upstream_failed = true;
                let text = format!("{what} (cluster {})", cluster.name);
                let after = if body_complete && head.has_body() {
                    // The body was read (sent upstream): answer at once,
                    // without waiting for a body to skip.
                    let keep = head.keep_alive();
                    let resp = answer_to(head, &http1::error_response(status, &text, !keep));
                    match down.wr.write_all(&resp).await {
                        Ok(()) => {
                            conn.metrics.bytes_out.increment(resp.len() as u64);
                            if keep { After::KeepAlive } else { After::Close }
                        }
                        Err(_) => After::Close,
                    }
                } else if body_complete {
                    fail(head, down, status, &text, &conn.metrics).await
                } else {
                    let resp = answer_to(head, &http1::error_response(status, &text, true));
                    let _ = down.wr.write_all(&resp).await;
                    After::Close
                };
                return (after, true);
            }
        }
    }
}

/// Answer a failed request with `status`, keeping the connection if the
/// request was read completely and the client wants keep-alive.
async fn fail(
    head: &RequestHead,
    down: &mut Downstream,
    status: u16,
    text: &str,
    metrics: &ConnMetrics,
) -> After {
    let resp = http1::error_response(status, text, !head.keep_alive());
    local(head, down, &resp, metrics).await
}

enum SendError {
    /// Reading the request body from the client failed.
    Downstream,
    /// The client's body framing is malformed (a bad chunk line).
    Malformed,
    /// Writing to the upstream failed (it may still answer).
    Upstream,
}

/// Where a try's request body comes from: the client's connection, or what
/// an earlier try kept.
struct Source<'a> {
    rd: &'a mut ReadHalf,
    buf: &'a mut BytesMut,
    decoder: &'a mut RequestDecoder,
    body: &'a mut Body,
    /// Set once the whole request went out and is kept for another try.
    whole: &'a std::sync::atomic::AtomicBool,
}

/// Write the request head (`outgoing`) and its body to the upstream: the
/// kept body, or the client's streamed as it comes (keeping a copy up to
/// [`MAX_KEPT_BODY`] when asked).
async fn send_request<W: AsyncWrite + Unpin>(
    head: &RequestHead,
    outgoing: &Bytes,
    src: Source<'_>,
    up: &mut W,
    metrics: &ConnMetrics,
) -> Result<(), SendError> {
    let Source {
        rd,
        buf,
        decoder,
        body,
        whole,
    } = src;
    let mut keep = match std::mem::replace(body, Body::Gone) {
        Body::Kept(kept) => {
            up.write_all(outgoing)
                .await
                .map_err(|_| SendError::Upstream)?;
            if !kept.is_empty() {
                up.write_all(&kept).await.map_err(|_| SendError::Upstream)?;
            }
            *body = Body::Kept(kept);
            whole.store(true, std::sync::atomic::Ordering::Relaxed);
            return Ok(());
        }
        Body::Unread(keep) => keep,
        Body::Gone => return Err(SendError::Downstream),
    };
    debug_assert!(head.has_body());
    let mut out = BytesMut::with_capacity(outgoing.len() + 1024);
    out.extend_from_slice(outgoing);
    loop {
        match decoder.decode(buf) {
            Ok(Some(Part::Body(b))) => {
                if let Some(k) = &mut keep {
                    if k.len() + b.len() > MAX_KEPT_BODY {
                        keep = None;
                    } else {
                        k.extend_from_slice(&b);
                    }
                }
                if b.len() >= COALESCE {
                    flush(up, &mut out).await?;
                    up.write_all(&b).await.map_err(|_| SendError::Upstream)?;
                } else {
                    out.extend_from_slice(&b);
                }
            }
            Ok(Some(Part::End)) => {
                flush(up, &mut out).await?;
                if let Some(k) = keep {
                    *body = Body::Kept(k.freeze());
                    whole.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                return Ok(());
            }
            Ok(Some(Part::Head(_))) => return Err(SendError::Downstream),
            Err(_) => return Err(SendError::Malformed),
            Ok(None) => {
                flush(up, &mut out).await?;
                match read_more(rd, buf, metrics).await {
                    Ok(0) | Err(_) => return Err(SendError::Downstream),
                    Ok(_) => {}
                }
            }
        }
    }
}

async fn flush<W: AsyncWrite + Unpin>(w: &mut W, out: &mut BytesMut) -> Result<(), SendError> {
    if !out.is_empty() {
        w.write_all(out).await.map_err(|_| SendError::Upstream)?;
        out.clear();
    }
    Ok(())
}

/// What the response relay needs to know of the client.
struct Client<'a> {
    version: http1::Version,
    keep_alive: bool,
    /// The request was a `CONNECT`.
    tunnel_request: bool,
    /// Set once any response byte went to the client.
    answered: &'a std::sync::atomic::AtomicBool,
    /// The final response's status, once its head came (outlier detection).
    status: &'a std::sync::atomic::AtomicU16,
    /// The `headers` filters' rules for the final response head.
    edits: &'a [Arc<HeaderRules>],
    /// Asked with a final head's status before it goes out: `true` holds
    /// it back (a retry was decided).
    hold: &'a mut (dyn FnMut(u16) -> bool + Send),
}

/// Read the response (interim ones too) and pass it to the client as it comes.
/// The final head goes out without hop-by-hop fields and with the gateway's
/// own `Connection` field for this client.
async fn relay_response<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    mut up: R,
    buf: &mut BytesMut,
    decoder: &mut ResponseDecoder,
    down: &mut W,
    client: Client<'_>,
    timeout: Duration,
    metrics: &ConnMetrics,
) -> Result<Relayed, RelayError> {
    let tunnel_request = client.tunnel_request;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut forwarded = false;
    let mut final_head: Option<(bool, bool)> = None; // (keep_alive, upgraded)
    let mut out = BytesMut::new();
    let err = |error: Error, forwarded: bool| RelayError { error, forwarded };
    loop {
        // Take every part the buffer holds, then write them in one go.
        loop {
            let part = match decoder.decode(buf) {
                Ok(Some(part)) => part,
                Ok(None) => break,
                Err(e) => {
                    let e = Error::upstream(ErrorKind::UpstreamProtocol, "malformed response")
                        .with_source(e);
                    return Err(err(e, forwarded));
                }
            };
            client
                .answered
                .store(true, std::sync::atomic::Ordering::Relaxed);
            match part {
                Part::Head(h) if h.is_interim() => out.extend_from_slice(h.wire()),
                Part::Head(h) => {
                    client
                        .status
                        .store(h.status(), std::sync::atomic::Ordering::Relaxed);
                    let upgraded =
                        h.status() == 101 || (tunnel_request && (200..300).contains(&h.status()));
                    // Nothing reached the client yet: a retry may replace this answer.
                    if !forwarded && out.is_empty() && !upgraded && (client.hold)(h.status()) {
                        return Ok(Relayed {
                            keep_alive: h.keep_alive() && !h.has_body(),
                            upgraded: false,
                            held: true,
                        });
                    }
                    let keep = h.keep_alive() && client.keep_alive;
                    let says = match (keep, client.version) {
                        (false, _) => ClientConnection::Close,
                        (true, http1::Version::Http10) => ClientConnection::KeepAlive,
                        (true, http1::Version::Http11) => ClientConnection::Persistent,
                    };
                    if client.edits.is_empty() {
                        out.extend_from_slice(&h.forwarded(says));
                    } else {
                        out.extend_from_slice(
                            &h.forwarded_with(says, |f| edit_response(client.edits, f)),
                        );
                    }
                    {
                        // 101, or a 2xx to CONNECT: the connection becomes a tunnel.
                        final_head = Some((h.keep_alive(), upgraded));
                        if upgraded || !h.has_body() {
                            write_out(down, &mut out, metrics)
                                .await
                                .map_err(|e| err(e, true))?;
                            return Ok(Relayed {
                                keep_alive: h.keep_alive(),
                                upgraded,
                                held: false,
                            });
                        }
                    }
                }
                Part::Body(b) if b.len() >= COALESCE => {
                    write_out(down, &mut out, metrics)
                        .await
                        .map_err(|e| err(e, true))?;
                    down.write_all(&b)
                        .await
                        .map_err(|e| err(downstream_gone(e), true))?;
                    metrics.bytes_out.increment(b.len() as u64);
                    forwarded = true;
                }
                Part::Body(b) => out.extend_from_slice(&b),
                Part::End => {
                    write_out(down, &mut out, metrics)
                        .await
                        .map_err(|e| err(e, true))?;
                    let (keep_alive, upgraded) = final_head.unwrap_or((false, false));
                    return Ok(Relayed {
                        keep_alive,
                        upgraded,
                        held: false,
                    });
                }
            }
        }
        if !out.is_empty() {
            forwarded = true;
            write_out(down, &mut out, metrics)
                .await
                .map_err(|e| err(e, true))?;
        }
        if buf.capacity() - buf.len() < 2048 {
            buf.reserve(16 * 1024);
        }
        let read = async {
            use tokio::io::AsyncReadExt;
            up.read_buf(buf).await
        };
        let n = if final_head.is_some() {
            read.await
        } else {
            match tokio::time::timeout_at(deadline, read).await {
                Ok(r) => r,
                Err(_) => {
                    let e = Error::upstream(
                        ErrorKind::UpstreamTimeout,
                        format!("no response within {timeout:?}"),
                    );
                    return Err(err(e, forwarded));
                }
            }
        };
        match n {
            Ok(0) => {
                // EOF: the end of a close-delimited body, or a broken exchange.
                loop {
                    match decoder.decode_eof(buf) {
                        Ok(Some(Part::Body(b))) => out.extend_from_slice(&b),
                        Ok(Some(Part::End)) => {
                            write_out(down, &mut out, metrics)
                                .await
                                .map_err(|e| err(e, true))?;
                            return Ok(Relayed {
                                keep_alive: false,
                                upgraded: false,
                                held: false,
                            });
                        }
                        Ok(Some(Part::Head(_)) | None) | Err(_) => break,
                    }
                }
                let e = Error::upstream(
                    ErrorKind::UpstreamClosed,
                    "the upstream closed the connection mid-response",
                );
                return Err(err(e, forwarded || !out.is_empty()));
            }
            Ok(_) => {}
            Err(e) => {
                let e = Error::upstream(ErrorKind::UpstreamClosed, "reading the response failed")
                    .with_source(e);
                return Err(err(e, forwarded));
            }
        }
    }
}

async fn write_out<W: AsyncWrite + Unpin>(
    down: &mut W,
    out: &mut BytesMut,
    metrics: &ConnMetrics,
) -> Result<(), Error> {
    if out.is_empty() {
        return Ok(());
    }
    down.write_all(out).await.map_err(downstream_gone)?;
    metrics.bytes_out.increment(out.len() as u64);
    out.clear();
    Ok(())
}

fn downstream_gone(e: std::io::Error) -> Error {
    Error::new(
        ErrorKind::Io,
        crate::error::Side::Downstream,
        "writing to the client failed",
    )
    .with_source(e)
}

/// After 101 Switching Protocols: bytes already read on either side go first,
/// then the two connections are spliced.
async fn upgrade(down: Downstream, mut up: UpstreamConn, up_buf: BytesMut, conn: &Conn) {
    let Downstream {
        rd, mut wr, buf, ..
    } = down;
    if wr.write_all(&up_buf).await.is_err() || up.write_all(&buf).await.is_err() {
        return;
    }
    let Some(down) = rd.reunite(wr) else { return };
    let _ = splice(down, up, Some(conn.listener.idle_timeout)).await;
}

/// A writer counting the bytes written through it (the access log's
/// `bytes_out` of a relayed response).
struct Counted<'a, W> {
    inner: &'a mut W,
    sent: &'a mut u64,
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Counted<'_, W> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let r = std::pin::Pin::new(&mut *this.inner).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = &r {
            *this.sent += *n as u64;
        }
        r
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}
