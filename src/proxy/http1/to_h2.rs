//! HTTP/1.1 requests to `protocol: http2` clusters: each request becomes a
//! stream on the host's shared h2c connection (opened as the HTTP/2 driver
//! opens them). The request head is translated (`:authority` from `Host`,
//! hop-by-hop fields dropped), its body de-chunked and sent as DATA within
//! the upstream's flow-control window; the response comes back as HTTP/1.1,
//! chunked unless the upstream gave a `content-length`, its trailers as
//! chunked trailers.

use std::future::poll_fn;
use std::time::Duration;

use crate::filters::headers::edit_request;
use bytes::{Bytes, BytesMut};
use h2::{Reason, RecvStream, SendStream};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, Uri, Version};
use switchyard_codecs::http1::{self, BodyLength, RequestDecoder, RequestHead};
use switchyard_codecs::{Decoder, Part, WireHead};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::{After, COALESCE, Downstream, SendError, fail};
use crate::net::stream::ReadHalf;
use crate::observe::ConnMetrics;
use crate::proxy::http2::{Failure, H2Stream, open_h2, strip_hop_by_hop};
use crate::proxy::{Conn, read_more};
use crate::upstream::Cluster;

/// Request fields that do not cross into HTTP/2 (RFC 9113 §8.2.2), `Host`
/// (it becomes `:authority`) and `Expect` (the gateway answers `100` itself).
const DROPPED: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "host",
    "expect",
];

/// Forward one HTTP/1 request to an HTTP/2 cluster and relay the response.
pub(super) async fn forward(
    head: &RequestHead,
    path: Option<&[u8]>,
    edits: &super::Edits<'_>,
    down: &mut Downstream,
    cluster: &Cluster,
    timeout: Duration,
    conn: &Conn,
) -> (After, bool) {
    let metrics = &conn.metrics;
    if head.method().eq_ignore_ascii_case(b"CONNECT") {
        let text = format!(
            "CONNECT is not supported to an HTTP/2 cluster (cluster {})",
            cluster.name
        );
        return (fail(head, down, 501, &text, metrics).await, true);
    }
    let req = h2_request(head, path, cluster).and_then(|mut req| {
        if let Some(host) = edits.host {
            crate::proxy::http2::set_authority(req.uri_mut(), host).ok()?;
        }
        edit_request(edits.headers, req.headers_mut(), edits.client);
        if let Some(tp) = edits
            .traceparent
            .and_then(|v| http::HeaderValue::from_str(v).ok())
        {
            req.headers_mut().insert("traceparent", tp);
        }
        Some(req)
    });
    let Some(req) = req else {
        return (
            fail(
                head,
                down,
                400,
                "request target not valid for HTTP/2",
                metrics,
            )
            .await,
            true,
        );
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let has_body = head.has_body();
    let chunked = head.body() == BodyLength::Chunked;
    let mut hosts = cluster.hosts_for(head, edits.client);
    let Some(mut host) = hosts.next() else {
        return failure(head, down, cluster, Failure::NoHost, metrics).await;
    };
    let mut tries = 0;
    let make = || {
        // Each attempt needs its own `Request` (it is not `Clone`).
        let r = &req;
        let mut out = Request::new(());
        *out.method_mut() = r.method().clone();
        *out.uri_mut() = r.uri().clone();
        *out.version_mut() = Version::HTTP_2;
        *out.headers_mut() = r.headers().clone();
        out
    };
    loop {
        let opened = open_h2(
            cluster,
            &mut hosts,
            &mut host,
            &mut tries,
            deadline,
            &make,
            !has_body,
            std::future::pending(),
        )
        .await;
        let H2Stream {
            conn: h2conn,
            resp,
            send: mut up_send,
        } = match opened {
            Ok(s) => s,
            Err(f) => {
                let f = f.unwrap_or(Failure::UpstreamError);
                return failure(head, down, cluster, f, metrics).await;
            }
        };
        if has_body && head.expects_continue() {
            // The upstream never sees `Expect`: let the client send its body.
            if down
                .wr
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .is_err()
            {
                up_send.send_reset(Reason::CANCEL);
                return (After::Close, true);
            }
        }

        let (sent, relayed) = {
            let Downstream {
                rd,
                wr,
                buf,
                decoder,
                tally,
            } = &mut *down;
            tally.upstream = cluster.hosts.get(host).map(|h| h.address);
            let wr = &mut super::Counted {
                inner: wr,
                sent: &mut tally.bytes_out,
            };
            let status = &mut tally.status;
            let send = async {
                if has_body {
                    send_body(rd, buf, decoder, &mut up_send, chunked, metrics).await
                } else {
                    Ok(())
                }
            };
            let relay = relay(
                head,
                resp,
                edits.headers,
                wr,
                deadline,
                timeout,
                metrics,
                status,
            );
            tokio::pin!(send, relay);
            let mut sent: Option<Result<(), SendError>> = None;
            loop {
                tokio::select! {
                    r = &mut send, if sent.is_none() => sent = Some(r),
                    r = &mut relay => break (sent, r),
                }
                if matches!(sent, Some(Err(SendError::Downstream))) {
                    break (sent, Err(RelayError::Downstream));
                }
            }
        };
        let body_complete = !has_body || matches!(sent, Some(Ok(())));
        if !body_complete {
            // The response ended (or failed) before the request body did.
            up_send.send_reset(Reason::CANCEL);
        }
        if matches!(relayed, Err(RelayError::Upstream | RelayError::Timeout)) {
            cluster.record(host, crate::upstream::Outcome::GatewayError);
        }
        return match relayed {
            Ok(keep_alive) => {
                let keep = keep_alive && head.keep_alive() && body_complete;
                (if keep { After::KeepAlive } else { After::Close }, false)
            }
            Err(RelayError::Downstream | RelayError::Forwarded) => (After::Close, true),
            Err(RelayError::Refused) if !has_body && tries < 3 => {
                cluster.h2_retire(host, &h2conn);
                continue;
            }
            Err(RelayError::Refused | RelayError::Upstream) => {
                down.tally.upstream_failed = true;
                fail_after_send(
                    head,
                    down,
                    cluster,
                    Failure::UpstreamError,
                    body_complete,
                    metrics,
                )
                .await
            }
            Err(RelayError::Timeout) => {
                down.tally.upstream_failed = true;
                fail_after_send(
                    head,
                    down,
                    cluster,
                    Failure::Timeout,
                    body_complete,
                    metrics,
                )
                .await
            }
        };
    }
}

/// Answer a gateway-made failure (naming the cluster) before any of the
/// request went up: the request body is skipped (as for any local answer)
/// and the connection kept if the client wants it.
async fn failure(
    head: &RequestHead,
    down: &mut Downstream,
    cluster: &Cluster,
    f: Failure,
    metrics: &ConnMetrics,
) -> (After, bool) {
    let (status, what) = f.http();
    let text = format!("{what} (cluster {})", cluster.name);
    down.tally.upstream_failed = true;
    (fail(head, down, status, &text, metrics).await, true)
}

/// Answer a failure after the request went up: the connection stays only if
/// the request body was read completely (a partly read one is not waited
/// for: the answer says `Connection: close`).
async fn fail_after_send(
    head: &RequestHead,
    down: &mut Downstream,
    cluster: &Cluster,
    f: Failure,
    body_complete: bool,
    metrics: &ConnMetrics,
) -> (After, bool) {
    let (status, what) = f.http();
    let text = format!("{what} (cluster {})", cluster.name);
    let keep = head.keep_alive() && (body_complete || !head.has_body());
    let resp = super::answer_to(head, &http1::error_response(status, &text, !keep));
    let written = down.wr.write_all(&resp).await;
    if written.is_ok() {
        metrics.bytes_out.increment(resp.len() as u64);
        down.tally.answered(&resp);
    }
    let keep = keep && written.is_ok();
    (if keep { After::KeepAlive } else { After::Close }, true)
}

/// The HTTP/2 request head: method, `:scheme` (https to a TLS cluster,
/// else http), `:authority` from an
/// absolute-form target or `Host`, `:path` from `path` (the normalised path,
/// when given) or the target's, with its query; no hop-by-hop fields, `TE`
/// only as `trailers`.
fn h2_request(head: &RequestHead, path: Option<&[u8]>, cluster: &Cluster) -> Option<Request<()>> {
    let method = Method::from_bytes(head.method()).ok()?;
    let authority = match head.effective_host() {
        Some(h) if !h.is_empty() => std::str::from_utf8(h).ok()?.to_owned(),
        _ => cluster.name.clone(),
    };
    let mut path_and_query = path.unwrap_or(head.path()).to_vec();
    path_and_query.extend_from_slice(head.query());
    let uri = Uri::builder()
        .scheme(if cluster.speaks_tls() {
            "https"
        } else {
            "http"
        })
        .authority(authority)
        .path_and_query(path_and_query)
        .build()
        .ok()?;
    let mut headers = HeaderMap::new();
    let named: Vec<Vec<u8>> = head
        .header("connection")
        .map(|v| {
            v.split(|b| *b == b',')
                .map(|t| t.trim_ascii().to_ascii_lowercase())
                .collect()
        })
        .unwrap_or_default();
    let mut trailers = false;
    for (name, value) in head.headers() {
        if DROPPED
            .iter()
            .any(|d| name.eq_ignore_ascii_case(d.as_bytes()))
            || named.iter().any(|n| name.eq_ignore_ascii_case(n))
        {
            continue;
        }
        if name.eq_ignore_ascii_case(b"te") {
            trailers |= value
                .split(|b| *b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"trailers"));
            continue;
        }
        let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) else {
            continue;
        };
        headers.append(n, v);
    }
    if trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    let mut req = Request::new(());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_2;
    *req.headers_mut() = headers;
    Some(req)
}

/// Stream the request body up as DATA, de-chunked, within the stream's window.
async fn send_body(
    rd: &mut ReadHalf,
    buf: &mut BytesMut,
    decoder: &mut RequestDecoder,
    up: &mut SendStream<Bytes>,
    chunked: bool,
    metrics: &ConnMetrics,
) -> Result<(), SendError> {
    let mut dechunk = Dechunk::new(chunked);
    let mut pieces = Vec::new();
    loop {
        match decoder.decode(buf) {
            Ok(Some(Part::Body(b))) => {
                dechunk.feed(b, &mut pieces);
                for piece in pieces.drain(..) {
                    push(up, piece).await?;
                }
            }
            Ok(Some(Part::End)) => {
                return up
                    .send_data(Bytes::new(), true)
                    .map_err(|_| SendError::Upstream);
            }
            Ok(Some(Part::Head(_))) | Err(_) => return Err(SendError::Downstream),
            Ok(None) => match read_more(rd, buf, metrics).await {
                Ok(0) | Err(_) => return Err(SendError::Downstream),
                Ok(_) => {}
            },
        }
    }
}

/// Send `data` as soon as the stream has window for it, piece by piece.
async fn push(up: &mut SendStream<Bytes>, mut data: Bytes) -> Result<(), SendError> {
    while !data.is_empty() {
        up.reserve_capacity(data.len());
        let mut cap = up.capacity();
        while cap == 0 {
            match poll_fn(|cx| up.poll_capacity(cx)).await {
                Some(Ok(n)) => cap = n,
                Some(Err(_)) | None => return Err(SendError::Upstream),
            }
        }
        let piece = data.split_to(cap.min(data.len()));
        up.send_data(piece, false)
            .map_err(|_| SendError::Upstream)?;
    }
    Ok(())
}

/// Why relaying the response failed.
enum RelayError {
    /// The client went away.
    Downstream,
    /// The upstream failed after part of the response reached the client.
    Forwarded,
    /// The stream was refused before the upstream processed it.
    Refused,
    /// The upstream failed before the response head.
    Upstream,
    /// No response head within the timeout.
    Timeout,
}

/// Wait for the response head (within `deadline`), then write it and its
/// body to the client as HTTP/1.1 (its status in `answered`, for the
/// access log). `Ok(keep_alive)` when it all went out.
#[allow(clippy::too_many_arguments)]
async fn relay<W: AsyncWrite + Unpin>(
    head: &RequestHead,
    resp: h2::client::ResponseFuture,
    edits: &[std::sync::Arc<crate::filters::headers::HeaderRules>],
    down: &mut W,
    deadline: tokio::time::Instant,
    timeout: Duration,
    metrics: &ConnMetrics,
    answered: &mut u16,
) -> Result<bool, RelayError> {
    let resp: Response<RecvStream> = match tokio::time::timeout_at(deadline, resp).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            let refused =
                e.reason() == Some(Reason::REFUSED_STREAM) || (e.is_go_away() && e.is_remote());
            tracing::debug!(error = %e, "upstream stream failed before its response");
            return Err(if refused {
                RelayError::Refused
            } else {
                RelayError::Upstream
            });
        }
        Err(_) => {
            tracing::debug!("no upstream response within {timeout:?}");
            return Err(RelayError::Timeout);
        }
    };
    let (parts, mut body) = resp.into_parts();
    let status = parts.status.as_u16();
    *answered = status;
    let no_body = head.method().eq_ignore_ascii_case(b"HEAD")
        || status == 204
        || status == 304
        || (100..200).contains(&status);
    let mut headers = strip_hop_by_hop(parts.headers);
    crate::filters::headers::edit_response(edits, &mut headers);
    let length = headers.contains_key(header::CONTENT_LENGTH);
    let http10 = head.version() == http1::Version::Http10;
    // Framing of the body towards the client.
    let (chunked, mut keep_alive) = if no_body || length || body.is_end_stream() {
        (false, true)
    } else if http10 {
        (false, false) // close-delimited
    } else {
        (true, true)
    };
    keep_alive &= head.keep_alive();
    let mut out = BytesMut::with_capacity(512);
    out.extend_from_slice(
        format!("HTTP/1.1 {status} {}\r\n", http1::reason_phrase(status)).as_bytes(),
    );
    for (name, value) in &headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    } else if !no_body && !length && body.is_end_stream() {
        out.extend_from_slice(b"content-length: 0\r\n");
    }
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    } else if http10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if no_body || body.is_end_stream() {
        write_out(down, &mut out, metrics)
            .await
            .map_err(|()| RelayError::Downstream)?;
        return Ok(keep_alive);
    }
    let mut forwarded = false;
    let upstream_failed = |forwarded: bool| {
        if forwarded {
            RelayError::Forwarded
        } else {
            RelayError::Upstream
        }
    };
    loop {
        match body.data().await {
            Some(Ok(data)) => {
                let _ = body.flow_control().release_capacity(data.len());
                if data.is_empty() {
                    continue;
                }
                if chunked {
                    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                }
                if data.len() >= COALESCE {
                    write_out(down, &mut out, metrics)
                        .await
                        .map_err(|()| RelayError::Downstream)?;
                    down.write_all(&data)
                        .await
                        .map_err(|_| RelayError::Downstream)?;
                    metrics.bytes_out.increment(data.len() as u64);
                } else {
                    out.extend_from_slice(&data);
                }
                if chunked {
                    out.extend_from_slice(b"\r\n");
                }
                write_out(down, &mut out, metrics)
                    .await
                    .map_err(|()| RelayError::Downstream)?;
                forwarded = true;
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "upstream stream failed mid-response");
                return Err(upstream_failed(forwarded || !out.is_empty()));
            }
            None => break,
        }
    }
    let trailers = match poll_fn(|cx| body.poll_trailers(cx)).await {
        Ok(t) => t,
        Err(e) => {
            tracing::debug!(error = %e, "upstream stream failed in its trailers");
            return Err(upstream_failed(true));
        }
    };
    if chunked {
        out.extend_from_slice(b"0\r\n");
        if let Some(t) = trailers {
            for (name, value) in &strip_hop_by_hop(t) {
                out.extend_from_slice(name.as_str().as_bytes());
                out.extend_from_slice(b": ");
                out.extend_from_slice(value.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
        }
        out.extend_from_slice(b"\r\n");
    }
    write_out(down, &mut out, metrics)
        .await
        .map_err(|()| RelayError::Downstream)?;
    Ok(keep_alive)
}

async fn write_out<W: AsyncWrite + Unpin>(
    down: &mut W,
    out: &mut BytesMut,
    metrics: &ConnMetrics,
) -> Result<(), ()> {
    if out.is_empty() {
        return Ok(());
    }
    down.write_all(out).await.map_err(|_| ())?;
    metrics.bytes_out.increment(out.len() as u64);
    out.clear();
    Ok(())
}

/// A streaming de-chunker over the raw body slices the HTTP/1 codec yields
/// (chunk framing included; the codec has already checked the framing, so
/// this only finds the data in it). A non-chunked body passes through.
#[derive(Debug)]
pub(super) struct Dechunk {
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not chunked: every byte is data.
    Plain,
    /// In a chunk-size line: the size so far; whether past its digits.
    Size { value: u64, past_digits: bool },
    /// Inside chunk data.
    Data { remaining: u64 },
    /// After chunk data: skipping its CRLF.
    DataEnd,
    /// After the last chunk: trailer fields, dropped.
    Trailers,
}

impl Dechunk {
    pub(super) fn new(chunked: bool) -> Self {
        Self {
            state: if chunked {
                State::Size {
                    value: 0,
                    past_digits: false,
                }
            } else {
                State::Plain
            },
        }
    }

    /// Append the data slices of `wire` (zero-copy) to `out`.
    pub(super) fn feed(&mut self, wire: Bytes, out: &mut Vec<Bytes>) {
        let mut i = 0;
        while i < wire.len() {
            match &mut self.state {
                State::Plain => {
                    out.push(wire.slice(i..));
                    return;
                }
                State::Data { remaining } => {
                    let n = usize::try_from(*remaining)
                        .map_or(wire.len() - i, |r| r.min(wire.len() - i));
                    out.push(wire.slice(i..i + n));
                    *remaining -= n as u64;
                    i += n;
                    if *remaining == 0 {
                        self.state = State::DataEnd;
                    }
                }
                State::Size { value, past_digits } => {
                    let b = wire[i];
                    i += 1;
                    if b == b'\n' {
                        self.state = if *value == 0 {
                            State::Trailers
                        } else {
                            State::Data { remaining: *value }
                        };
                    } else if !*past_digits && let Some(d) = (b as char).to_digit(16) {
                        *value = value.saturating_mul(16).saturating_add(u64::from(d));
                    } else {
                        *past_digits = true;
                    }
                }
                State::DataEnd => {
                    let b = wire[i];
                    i += 1;
                    if b == b'\n' {
                        self.state = State::Size {
                            value: 0,
                            past_digits: false,
                        };
                    }
                }
                State::Trailers => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunked: bool, parts: &[&[u8]]) -> Vec<u8> {
        let mut d = Dechunk::new(chunked);
        let mut out = Vec::new();
        for p in parts {
            d.feed(Bytes::copy_from_slice(p), &mut out);
        }
        out.concat()
    }

    #[test]
    fn dechunks_across_any_split() {
        let wire = b"5\r\nhello\r\n1;ext=1\r\n \r\nA \r\n0123456789\r\n0\r\nx-t: 1\r\n\r\n";
        let want = b"hello 0123456789".to_vec();
        assert_eq!(run(true, &[wire]), want);
        for cut in 0..wire.len() {
            assert_eq!(
                run(true, &[&wire[..cut], &wire[cut..]]),
                want,
                "cut at {cut}"
            );
        }
        let bytes: Vec<&[u8]> = wire.chunks(1).collect();
        assert_eq!(run(true, &bytes), want);
    }

    #[test]
    fn plain_bodies_pass_through() {
        assert_eq!(
            run(false, &[b"abc", b"\r\n0\r\n"]),
            b"abc\r\n0\r\n".to_vec()
        );
    }
}
