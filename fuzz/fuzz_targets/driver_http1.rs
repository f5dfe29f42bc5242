//! Fuzz the HTTP/1 driver (`switchyard::proxy::http1::serve`, the ordered
//! exclusive shape): arbitrary client bytes go through the real driver to an
//! in-process upstream on loopback that decodes each request and answers it
//! with `x-echo: <fingerprint of the request's exact bytes, head and body>`
//! (`100 Continue` first when asked; `405` to `CONNECT`, so no tunnel).
//! Invariants, per input:
//!
//! * no panic, no hang: the driver ends the connection once the client has
//!   half-closed, and by itself after bytes its codec rejects (the client then
//!   keeps its side open: a driver that kept reading would hang, so buffering
//!   stops at `max_head_bytes`);
//! * one final response per complete request, in order: either the
//!   upstream's, whose fingerprint is exactly that request's as the codec
//!   says it goes upstream (`RequestHead::forwarded` with the normalised
//!   path: byte-exact unless a rewrite is due), or a gateway-made error
//!   (>= 400) that ends the connection;
//!   a request without keep-alive ends it after its response;
//! * a rejected head gets `400` (or `431` when over the limits) and a close;
//!   so does an HTTP/1.1 head without `Host` or with a bad percent-escape in
//!   its path.
//!
//! Seeds: `fuzz/seeds/http1/` (captured client streams and edge cases).
#![no_main]

#[path = "common/driver.rs"]
mod driver;
#[path = "common/echo.rs"]
mod echo;

use std::sync::OnceLock;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use std::borrow::Cow;

use switchyard_codecs::http1::{self, Limits, RequestDecoder, ResponseDecoder, Version};
use switchyard_codecs::{CodecError, Decoder, Part, WireHead};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CONFIG: &str = r#"
listeners:
  - name: fuzz
    address: 127.0.0.1:1
    protocol: http1
    route_table: rt
    http1: { max_head_bytes: 1024, max_headers: 16, lingering_close: 0s }
route_tables:
  - name: rt
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - name: all
            match: { protocol: http1 }
            cluster: up
clusters:
  - name: up
    hosts: ["{UPSTREAM}"]
    connect_timeout: 2s
    request_timeout: 5s
"#;

/// The upstream: answers each complete request with its fingerprint; closes
/// after a request without keep-alive or on bytes it cannot decode.
async fn upstream(mut s: TcpStream) {
    let mut dec = RequestDecoder::new(Limits::default());
    let mut buf = BytesMut::with_capacity(8192);
    let mut wire = Vec::new();
    let mut method = Vec::new();
    let mut keep = true;
    loop {
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(Part::Head(h))) => {
                    wire.clear();
                    wire.extend_from_slice(h.wire());
                    method = h.method().to_vec();
                    keep = h.keep_alive();
                    if h.expects_continue()
                        && s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await.is_err()
                    {
                        return;
                    }
                    // A head without a body is the whole request (no `End`).
                    if !h.has_body() && !answer(&mut s, &method, &wire, keep).await {
                        return;
                    }
                }
                Ok(Some(Part::Body(b))) => wire.extend_from_slice(&b),
                Ok(Some(Part::End)) => {
                    if !answer(&mut s, &method, &wire, keep).await {
                        return;
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        match s.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Answer one request with its fingerprint; `false`: the connection is done.
async fn answer(s: &mut TcpStream, method: &[u8], wire: &[u8], keep: bool) -> bool {
    let status = if method.eq_ignore_ascii_case(b"CONNECT") {
        "405 Method Not Allowed"
    } else {
        "200 OK"
    };
    let close = if keep { "" } else { "Connection: close\r\n" };
    let resp = format!(
        "HTTP/1.1 {status}\r\nx-echo: {}\r\nContent-Length: 0\r\n{close}\r\n",
        echo::fingerprint(wire)
    );
    s.write_all(resp.as_bytes()).await.is_ok() && keep
}

fn harness() -> &'static driver::Harness {
    static H: OnceLock<driver::Harness> = OnceLock::new();
    H.get_or_init(|| driver::Harness::new(CONFIG, |l| driver::accept_each(l, upstream)))
}

/// A request as the driver's decoder sees it.
struct Req {
    method: Vec<u8>,
    wire: Vec<u8>,
    keep_alive: bool,
}

/// A final response as the client sees it.
#[derive(Debug)]
struct Resp {
    status: u16,
    echo: Option<Vec<u8>>,
    keep_alive: bool,
}

fuzz_target!(|data: &[u8]| {
    let h = harness();
    let limits = h.listener.http1;

    // What the driver's own decoder makes of the input: complete requests,
    // whether one is left unfinished, and whether (and where) it rejects.
    let mut dec = RequestDecoder::new(limits);
    let mut buf = BytesMut::from(data);
    let mut done: Vec<Req> = Vec::new();
    let mut open: Option<Req> = None;
    let mut rejected: Option<CodecError> = None;
    // The method of a head the driver (not its codec) refused.
    let mut refused_method: Option<Vec<u8>> = None;
    loop {
        match dec.decode(&mut buf) {
            Ok(Some(Part::Head(head))) => {
                // The driver's checks beyond the codec: HTTP/1.1 needs a
                // Host, and a path must normalise; else 400 and a close.
                // (Its 400 answers the head's method: no body after a HEAD.)
                let path = match http1::normalize_path(head.path(), true) {
                    Ok(Cow::Owned(p)) => Some(p),
                    Ok(Cow::Borrowed(_)) => None,
                    Err(_) => {
                        rejected = Some(CodecError::malformed("http1", "bad path"));
                        refused_method = Some(head.method().to_vec());
                        break;
                    }
                };
                if head.version() == Version::Http11 && head.host().is_none() {
                    rejected = Some(CodecError::malformed("http1", "no Host"));
                    refused_method = Some(head.method().to_vec());
                    break;
                }
                // What goes upstream: the wire bytes, or the head written
                // anew (hop-by-hop fields out, normalised path, ...).
                let req = Req {
                    method: head.method().to_vec(),
                    wire: head.forwarded(path.as_deref()).to_vec(),
                    keep_alive: head.keep_alive(),
                };
                // A head without a body is the whole request (no `End`).
                if head.has_body() {
                    open = Some(req);
                } else {
                    done.push(req);
                }
            }
            Ok(Some(Part::Body(b))) => {
                if let Some(r) = open.as_mut() {
                    r.wire.extend_from_slice(&b)
                }
            }
            Ok(Some(Part::End)) => done.extend(open.take()),
            Ok(None) => break,
            Err(e) => {
                rejected = Some(e);
                break;
            }
        }
    }
    // The driver stops reading after a request that ends the connection.
    if let Some(last) = done.iter().position(|r| !r.keep_alive) {
        done.truncate(last + 1);
        open = None;
        rejected = None;
    }
    let head_rejected = rejected.is_some() && open.is_none();

    let seen = h.exchange(data, rejected.is_none(), switchyard::proxy::http1::serve);

    let mut rdec = ResponseDecoder::new(Limits::default());
    for r in done.iter().chain(open.iter()) {
        rdec.expect_response_to(&r.method);
    }
    if let Some(method) = refused_method.as_deref().filter(|_| rejected.is_some()) {
        rdec.expect_response_to(method);
    }
    let mut out = BytesMut::from(&seen.output[..]);
    let mut resps = Vec::new();
    let mut interim = false;
    loop {
        let part = match rdec.decode(&mut out) {
            Ok(Some(p)) => p,
            Ok(None) => match rdec.decode_eof(&mut out) {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => {
                    assert!(seen.reset, "the client got a cut response: {e}");
                    break;
                }
            },
            Err(e) => panic!(
                "the client got bytes that are no response: {e}: {:?}",
                String::from_utf8_lossy(&seen.output)
            ),
        };
        match part {
            Part::Head(head) if head.is_interim() => interim = true,
            Part::Head(head) => {
                interim = false;
                resps.push(Resp {
                    status: head.status(),
                    echo: head.header("x-echo").map(<[u8]>::to_vec),
                    keep_alive: head.keep_alive(),
                });
            }
            Part::Body(_) => assert!(!interim, "an interim response with a body"),
            Part::End => {}
        }
    }
    let complete = !seen.reset;
    let mut resps = resps.into_iter();
    for (i, req) in done.iter().enumerate() {
        let Some(resp) = resps.next() else {
            assert!(
                !complete,
                "no response to request {i} of {} ({:?})",
                done.len(),
                String::from_utf8_lossy(&req.wire)
            );
            return;
        };
        let fp = echo::fingerprint(&req.wire).into_bytes();
        let forwarded = resp.echo.as_deref() == Some(&fp[..]);
        assert!(
            forwarded || (resp.status >= 400 && resp.echo.is_none()),
            "request {i} got neither its upstream response nor a gateway error: {resp:?} for {:?}",
            String::from_utf8_lossy(&req.wire)
        );
        // A gateway error may end the connection (without saying so when the
        // client cannot read on); a response that ends it must be the last.
        if !resp.keep_alive || !req.keep_alive {
            assert!(
                resps.next().is_none(),
                "responses after one that ends the connection: {:?}",
                String::from_utf8_lossy(&seen.output)
            );
            return;
        }
    }
    // After the complete requests: an unfinished one may get a gateway error,
    // a rejected head must get 400/431.
    match resps.next() {
        Some(resp) => {
            assert!(
                resp.status >= 400 && resp.echo.is_none(),
                "an unfinished or rejected request got {resp:?}"
            );
            if head_rejected {
                let too_large = matches!(rejected, Some(CodecError::HeadTooLarge { .. }));
                assert_eq!(
                    resp.status,
                    if too_large { 431 } else { 400 },
                    "{rejected:?}"
                );
            }
        }
        None => assert!(
            !(head_rejected && complete),
            "a rejected head got no answer ({rejected:?})"
        ),
    }
    assert!(
        resps.next().is_none(),
        "more responses than requests: {:?}",
        String::from_utf8_lossy(&seen.output)
    );
});
