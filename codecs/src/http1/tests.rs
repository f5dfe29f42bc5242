//! Unit tests over literal bytes, and property tests.
use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;

use super::*;
use crate::{Protocol, Verdict};

// ---------------------------------------------------------------- helpers

/// A part sequence with consecutive `Body` slices merged, for comparisons
/// that must not depend on how the input was split.
#[derive(Debug, Clone, PartialEq, Eq)]
enum N {
    Head(Bytes),
    Body(Vec<u8>),
    End,
}

fn normalize<H: WireHead>(parts: &[Part<H>]) -> Vec<N> {
    let mut out: Vec<N> = Vec::new();
    for part in parts {
        match part {
            Part::Head(h) => out.push(N::Head(h.wire().clone())),
            Part::Body(b) => match out.last_mut() {
                Some(N::Body(acc)) => acc.extend_from_slice(b),
                _ => out.push(N::Body(b.to_vec())),
            },
            Part::End => out.push(N::End),
        }
    }
    out
}

/// Concatenation of every wire byte the parts carry.
fn wire_bytes<H: WireHead>(parts: &[Part<H>]) -> Vec<u8> {
    let mut out = Vec::new();
    for part in parts {
        match part {
            Part::Head(h) => out.extend_from_slice(h.wire()),
            Part::Body(b) => out.extend_from_slice(b),
            Part::End => {}
        }
    }
    out
}

/// Feed `chunks` one after another to a request decoder, decoding after each.
fn feed_requests(
    chunks: &[&[u8]],
    limits: Limits,
) -> (Vec<Part<RequestHead>>, BytesMut, Option<CodecError>) {
    let mut dec = RequestDecoder::new(limits);
    let mut buf = BytesMut::new();
    let mut parts = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(p)) => parts.push(p),
                Ok(None) => break,
                Err(e) => return (parts, buf, Some(e)),
            }
        }
    }
    (parts, buf, None)
}

fn requests(input: &[u8]) -> Vec<Part<RequestHead>> {
    let (parts, rest, err) = feed_requests(&[input], Limits::default());
    assert_eq!(err, None, "unexpected error");
    assert!(rest.is_empty(), "left over: {rest:?}");
    parts
}

fn request_error(input: &[u8]) -> CodecError {
    request_error_with(input, Limits::default())
}

fn request_error_with(input: &[u8], limits: Limits) -> CodecError {
    let (_, _, err) = feed_requests(&[input], limits);
    err.unwrap_or_else(|| panic!("no error for {:?}", String::from_utf8_lossy(input)))
}

/// Feed `chunks` to a response decoder told about `methods` up front, then EOF.
fn feed_responses(
    chunks: &[&[u8]],
    methods: &[&[u8]],
    limits: Limits,
) -> (Vec<Part<ResponseHead>>, BytesMut, Option<CodecError>) {
    let mut dec = ResponseDecoder::new(limits);
    for m in methods {
        dec.expect_response_to(m);
    }
    let mut buf = BytesMut::new();
    let mut parts = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(p)) => parts.push(p),
                Ok(None) => break,
                Err(e) => return (parts, buf, Some(e)),
            }
        }
    }
    loop {
        match dec.decode_eof(&mut buf) {
            Ok(Some(Part::End)) => {
                parts.push(Part::End);
                break;
            }
            Ok(Some(p)) => parts.push(p),
            Ok(None) => break,
            Err(e) => return (parts, buf, Some(e)),
        }
    }
    (parts, buf, None)
}

fn responses(input: &[u8], methods: &[&[u8]]) -> Vec<Part<ResponseHead>> {
    let (parts, rest, err) = feed_responses(&[input], methods, Limits::default());
    assert_eq!(err, None, "unexpected error");
    assert!(rest.is_empty(), "left over: {rest:?}");
    parts
}

fn req_head(part: &Part<RequestHead>) -> &RequestHead {
    match part {
        Part::Head(h) => h,
        other => panic!("expected a head, got {other:?}"),
    }
}

fn res_head(part: &Part<ResponseHead>) -> &ResponseHead {
    match part {
        Part::Head(h) => h,
        other => panic!("expected a head, got {other:?}"),
    }
}

fn is_malformed(e: &CodecError) -> bool {
    matches!(e, CodecError::Malformed { .. })
}

// ---------------------------------------------------------------- requests

#[test]
fn http1_get_head_view() {
    let input = b"GET /index.html?x=1&y HTTP/1.1\r\nHost: example.com:8080\r\nUser-Agent: t\r\nX-Empty:\r\nX-Pad: \t padded \t\r\n\r\n";
    let parts = requests(input);
    assert_eq!(parts.len(), 1);
    let h = req_head(&parts[0]);
    assert_eq!(h.method(), b"GET");
    assert_eq!(h.target(), b"/index.html?x=1&y");
    assert_eq!(h.path(), b"/index.html");
    assert_eq!(h.version(), Version::Http11);
    assert_eq!(h.header("host"), Some(&b"example.com:8080"[..]));
    assert_eq!(h.header("HOST"), Some(&b"example.com:8080"[..]));
    assert_eq!(h.header("x-empty"), Some(&b""[..]));
    assert_eq!(h.header("x-pad"), Some(&b"padded"[..]));
    assert_eq!(h.header("missing"), None);
    assert_eq!(h.headers().count(), 4);
    assert_eq!(
        h.headers().next(),
        Some((&b"Host"[..], &b"example.com:8080"[..]))
    );
    assert_eq!(h.host(), Some(&b"example.com:8080"[..]));
    assert_eq!(h.body(), BodyLength::Empty);
    assert!(!h.has_body());
    assert!(h.keep_alive());
    assert!(!h.expects_continue());
    assert!(!h.is_upgrade());
    assert_eq!(&h.wire()[..], &input[..]);
    assert_eq!(h.get(&Field::Method), Some(&b"GET"[..]));
    assert_eq!(h.get(&Field::Host), Some(&b"example.com:8080"[..]));
    assert_eq!(h.get(&Field::Path), Some(&b"/index.html"[..]));
    assert_eq!(h.get(&Field::Header("user-agent".into())), Some(&b"t"[..]));
    assert_eq!(h.get(&Field::Command), None);
    assert_eq!(h.get(&Field::Key), None);
}

#[test]
fn http1_get_needs_more_until_blank_line() {
    let mut dec = RequestDecoder::default();
    let mut buf = BytesMut::new();
    for piece in [&b"GET / HT"[..], b"TP/1.1\r\n", b"Host: a\r\n", b"\r"] {
        buf.extend_from_slice(piece);
        assert_eq!(dec.decode(&mut buf), Ok(None));
    }
    buf.extend_from_slice(b"\n");
    let part = dec.decode(&mut buf).unwrap().unwrap();
    assert_eq!(req_head(&part).path(), b"/");
    assert!(buf.is_empty());
    assert_eq!(dec.decode(&mut buf), Ok(None));
    assert!(dec.is_idle());
}

#[test]
fn http1_target_forms() {
    let h = |input: &[u8]| req_head(&requests(input)[0]).clone();
    let abs = h(b"GET http://example.com:80/a/b?q=1 HTTP/1.1\r\nHost: example.com\r\n\r\n");
    assert_eq!(abs.path(), b"/a/b");
    assert_eq!(abs.target(), b"http://example.com:80/a/b?q=1");
    let abs_root = h(b"GET http://example.com?q HTTP/1.1\r\nHost: example.com\r\n\r\n");
    assert_eq!(abs_root.path(), b"/");
    let star = h(b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(star.path(), b"*");
    let connect = h(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n");
    assert_eq!(connect.path(), b"");
    assert_eq!(connect.method(), b"CONNECT");
    let frag = h(b"GET /a#frag HTTP/1.1\r\n\r\n");
    assert_eq!(frag.path(), b"/a");
    assert_eq!(frag.host(), None);
    assert_eq!(frag.get(&Field::Host), None);
}

#[test]
fn http1_post_content_length_streams() {
    let mut dec = RequestDecoder::default();
    let mut buf =
        BytesMut::from(&b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n0123"[..]);
    let head = dec.decode(&mut buf).unwrap().unwrap();
    let h = req_head(&head);
    assert_eq!(h.body(), BodyLength::Length(10));
    assert!(h.has_body());
    assert_eq!(
        dec.decode(&mut buf),
        Ok(Some(Part::Body(Bytes::from_static(b"0123"))))
    );
    assert_eq!(dec.decode(&mut buf), Ok(None));
    assert!(!dec.is_idle());
    buf.extend_from_slice(b"456789GET / HTTP/1.1\r\n\r\n");
    assert_eq!(
        dec.decode(&mut buf),
        Ok(Some(Part::Body(Bytes::from_static(b"456789"))))
    );
    assert_eq!(dec.decode(&mut buf), Ok(Some(Part::End)));
    let next = dec.decode(&mut buf).unwrap().unwrap();
    assert_eq!(req_head(&next).method(), b"GET");
    assert!(buf.is_empty());
}

#[test]
fn http1_content_length_zero_and_duplicates() {
    let parts = requests(b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(parts.len(), 1);
    assert_eq!(req_head(&parts[0]).body(), BodyLength::Empty);
    // The same value repeated is allowed (RFC 9110 §8.6).
    let parts =
        requests(b"POST / HTTP/1.1\r\nContent-Length: 3, 3\r\nContent-Length: 3\r\n\r\nabc");
    assert_eq!(req_head(&parts[0]).body(), BodyLength::Length(3));
    assert_eq!(
        normalize(&parts[1..]),
        vec![N::Body(b"abc".to_vec()), N::End]
    );
}

#[test]
fn http1_large_body_streams_in_pieces() {
    let total = 10 * 1024 * 1024;
    let mut dec = RequestDecoder::default();
    let mut buf =
        BytesMut::from(format!("PUT /big HTTP/1.1\r\nContent-Length: {total}\r\n\r\n").as_bytes());
    assert!(matches!(dec.decode(&mut buf), Ok(Some(Part::Head(_)))));
    let piece = vec![b'x'; 64 * 1024];
    let mut seen = 0;
    let mut ended = false;
    while !ended {
        if buf.is_empty() {
            buf.extend_from_slice(&piece);
        }
        match dec.decode(&mut buf).unwrap() {
            Some(Part::Body(b)) => {
                assert!(b.len() <= piece.len());
                seen += b.len();
            }
            Some(Part::End) => ended = true,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, total);
}

const CHUNKED: &[u8] = b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
5;name=value;flag\r\nhello\r\n\
1A ; spaced=\"q v\"\r\nabcdefghijklmnopqrstuvwxyz\r\n\
0\r\nX-Trailer: t1\r\nChecksum:abc\r\n\r\n";

#[test]
fn http1_chunked_with_extensions_and_trailers() {
    let parts = requests(CHUNKED);
    let head_len = CHUNKED.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let h = req_head(&parts[0]);
    assert_eq!(h.body(), BodyLength::Chunked);
    assert_eq!(h.header("transfer-encoding"), Some(&b"chunked"[..]));
    assert_eq!(&h.wire()[..], &CHUNKED[..head_len]);
    // The body is forwarded exactly as on the wire, framing included.
    assert_eq!(
        normalize(&parts[1..]),
        vec![N::Body(CHUNKED[head_len..].to_vec()), N::End]
    );
    assert_eq!(wire_bytes(&parts), CHUNKED);
}

#[test]
fn http1_chunked_byte_by_byte() {
    let pieces: Vec<&[u8]> = CHUNKED.chunks(1).collect();
    let (parts, rest, err) = feed_requests(&pieces, Limits::default());
    assert_eq!(err, None);
    assert!(rest.is_empty());
    assert_eq!(normalize(&parts), normalize(&requests(CHUNKED)));
    // Every body byte was handed out as soon as it arrived.
    assert!(parts.iter().filter(|p| matches!(p, Part::Body(_))).count() > 40);
}

#[test]
fn http1_chunked_transfer_coding_list() {
    let parts = requests(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n");
    assert_eq!(req_head(&parts[0]).body(), BodyLength::Chunked);
    let parts = requests(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: CHUNKED\r\n\r\n0\r\n\r\n");
    assert_eq!(req_head(&parts[0]).body(), BodyLength::Chunked);
    assert_eq!(parts.len(), 3);
}

#[test]
fn http1_chunked_errors() {
    let head = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
    let case = |body: &[u8]| request_error(&[&head[..], body].concat());
    assert!(is_malformed(&case(b"zz\r\n")), "non-hex size");
    assert!(is_malformed(&case(b";ext\r\n")), "no digits");
    assert!(
        is_malformed(&case(b"1FFFFFFFFFFFFFFFF\r\n")),
        "size overflow"
    );
    assert!(is_malformed(&case(b"3\r\nabcX")), "no CRLF after data");
    assert!(is_malformed(&case(b"3\nabc\r\n")), "bare LF after size");
    assert!(is_malformed(&case(b"3\rabc\r\n")), "bare CR after size");
    assert!(
        is_malformed(&case(b"3;a\x00b\r\n")),
        "control byte in extension"
    );
    assert!(is_malformed(&case(b"3 x\r\n")), "junk after size");
    assert!(
        is_malformed(&case(b"0\r\nbad trailer\r\n\r\n")),
        "trailer without colon"
    );
    assert!(
        is_malformed(&case(b"0\r\nX: a\r\n folded\r\n\r\n")),
        "obs-fold in trailers"
    );
    assert!(
        is_malformed(&case(b"0\r\nX: a\n\r\n")),
        "bare LF in trailers"
    );
    let long_ext = [&b"1;"[..], &vec![b'a'; MAX_CHUNK_LINE]].concat();
    assert!(matches!(
        case(&long_ext),
        CodecError::FrameTooLarge {
            what: "chunk-size line",
            ..
        }
    ));
    let limits = Limits {
        max_head_bytes: 128,
        ..Limits::default()
    };
    let trailers = [
        &head[..],
        b"0\r\n",
        &b"X: yyyyyyyyyy\r\n".repeat(20),
        b"\r\n",
    ]
    .concat();
    assert!(matches!(
        request_error_with(&trailers, limits),
        CodecError::HeadTooLarge { limit: 128 }
    ));
}

#[test]
fn http1_pipelined_requests() {
    let input = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nPOST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nxyz\
PUT /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\nDELETE /d HTTP/1.1\r\nHost: h\r\n\r\n";
    let parts = requests(input);
    let methods: Vec<&[u8]> = parts
        .iter()
        .filter_map(|p| match p {
            Part::Head(h) => Some(h.method()),
            _ => None,
        })
        .collect();
    assert_eq!(methods, vec![&b"GET"[..], b"POST", b"PUT", b"DELETE"]);
    let kinds: Vec<&str> = parts
        .iter()
        .map(|p| match p {
            Part::Head(_) => "H",
            Part::Body(_) => "B",
            Part::End => "E",
        })
        .collect();
    assert_eq!(kinds, vec!["H", "H", "B", "E", "H", "B", "E", "H"]);
    assert_eq!(wire_bytes(&parts), input);
}

#[test]
fn http1_leading_empty_lines_skipped() {
    let parts = requests(
        b"\r\n\r\n\nGET / HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n\r\nGET /3 HTTP/1.1\r\n\r\n",
    );
    assert_eq!(parts.len(), 3);
    assert_eq!(&req_head(&parts[0]).wire()[..], b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(req_head(&parts[2]).path(), b"/3");
    let limits = Limits {
        max_head_bytes: 64,
        ..Limits::default()
    };
    assert!(matches!(
        request_error_with(&b"\r\n".repeat(40), limits),
        CodecError::HeadTooLarge { .. }
    ));
    assert!(is_malformed(&request_error(b"\rGET / HTTP/1.1\r\n\r\n")));
}

#[test]
fn http1_bare_lf_heads() {
    let parts = requests(b"GET /lf HTTP/1.1\nHost: h\n\nGET /x HTTP/1.1\r\n\r\n");
    assert_eq!(parts.len(), 2);
    assert_eq!(req_head(&parts[0]).host(), Some(&b"h"[..]));
}

#[test]
fn http1_http10_keep_alive() {
    let h = |input: &[u8]| req_head(&requests(input)[0]).clone();
    let plain = h(b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(plain.version(), Version::Http10);
    assert!(!plain.keep_alive());
    assert!(h(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive());
    assert!(!h(b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n").keep_alive());
    let posted = requests(b"POST / HTTP/1.0\r\nContent-Length: 2\r\n\r\nok");
    assert_eq!(req_head(&posted[0]).body(), BodyLength::Length(2));
    assert!(is_malformed(&request_error(
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    )));
}

#[test]
fn http1_connection_close() {
    let h = |input: &[u8]| req_head(&requests(input)[0]).clone();
    assert!(!h(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive());
    assert!(!h(b"GET / HTTP/1.1\r\nConnection: foo, CLOSE\r\n\r\n").keep_alive());
    assert!(!h(b"GET / HTTP/1.1\r\nConnection: foo\r\nConnection: close\r\n\r\n").keep_alive());
    assert!(h(b"GET / HTTP/1.1\r\nConnection: closed\r\n\r\n").keep_alive());
}

#[test]
fn http1_expect_continue_and_upgrade() {
    let h = |input: &[u8]| req_head(&requests(input)[0]).clone();
    let cont = requests(b"PUT / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\nx");
    assert!(req_head(&cont[0]).expects_continue());
    let ws = h(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n");
    assert!(ws.is_upgrade());
    assert!(!h(b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n").is_upgrade());
    assert!(!h(b"GET / HTTP/1.1\r\nConnection: upgrade\r\n\r\n").is_upgrade());
}

#[test]
fn http1_smuggling_defences() {
    let cases: &[&[u8]] = &[
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        b"POST / HTTP/1.1\r\nContent-Length: 3, 4\r\n\r\nabcd",
        b"POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 1 2\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length:\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding:\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length : 3\r\n\r\nabc",
        b"POST / HTTP/1.1\r\n Transfer-Encoding: chunked\r\n\r\n",
    ];
    for case in cases {
        let e = request_error(case);
        assert!(
            is_malformed(&e),
            "{:?} gave {e:?}",
            String::from_utf8_lossy(case)
        );
    }
}

#[test]
fn http1_oversize_head() {
    let limits = Limits {
        max_head_bytes: 64,
        max_headers: 4,
    };
    // No complete head yet, but already over the limit.
    let e = request_error_with(
        &[&b"GET / HTTP/1.1\r\nX: "[..], &[b'a'; 100]].concat(),
        limits,
    );
    assert_eq!(e, CodecError::HeadTooLarge { limit: 64 });
    // A complete head over the limit.
    let e = request_error_with(
        &[&b"GET / HTTP/1.1\r\nX: "[..], &[b'a'; 60], b"\r\n\r\n"].concat(),
        limits,
    );
    assert_eq!(e, CodecError::HeadTooLarge { limit: 64 });
    // Exactly at the limit is fine.
    let at = [&b"GET / HTTP/1.1\r\nX: "[..], &[b'a'; 41], b"\r\n\r\n"].concat();
    assert_eq!(at.len(), 64);
    let (parts, _, err) = feed_requests(&[&at], limits);
    assert_eq!((parts.len(), err), (1, None));
    // Too many headers.
    let e = request_error_with(
        b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\n\r\n",
        limits,
    );
    assert!(matches!(e, CodecError::HeadTooLarge { .. }));
    // Many headers are fine under a larger limit (heap-allocated slots).
    let many: Vec<u8> = (0..300)
        .flat_map(|i| format!("H{i}: v\r\n").into_bytes())
        .collect();
    let input = [&b"GET / HTTP/1.1\r\n"[..], &many, b"\r\n"].concat();
    let (parts, _, err) = feed_requests(
        &[&input],
        Limits {
            max_head_bytes: 64 * 1024,
            max_headers: 300,
        },
    );
    assert_eq!(err, None);
    assert_eq!(req_head(&parts[0]).headers().count(), 300);
    let e = request_error(&input);
    assert!(matches!(e, CodecError::HeadTooLarge { .. }));
}

#[test]
fn http1_garbage_rejected_early() {
    // TLS ClientHello, binary junk, Redis RESP: rejected on the first bytes,
    // without waiting for a blank line.
    for junk in [
        &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..],
        b"\x00\x01\x02",
        b"*2\r\n$4\r\nPING\r\n",
    ] {
        let mut dec = RequestDecoder::default();
        let mut buf = BytesMut::from(junk);
        assert!(is_malformed(&dec.decode(&mut buf).unwrap_err()), "{junk:?}");
    }
    assert!(is_malformed(&request_error(b"GET / HTTP/2.0\r\n\r\n")));
    assert!(is_malformed(&request_error(b"GET  / HTTP/1.1\r\n\r\n")));
    assert!(is_malformed(&request_error(
        b"GET / HTTP/1.1\r\nBad Header\r\n\r\n"
    )));
    assert!(is_malformed(&request_error(b"G(T / HTTP/1.1\r\n\r\n")));
}

// ---------------------------------------------------------------- responses

#[test]
fn http1_response_content_length() {
    let input = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello";
    let parts = responses(input, &[b"GET"]);
    let h = res_head(&parts[0]);
    assert_eq!(h.status(), 200);
    assert_eq!(h.version(), Version::Http11);
    assert_eq!(h.body(), BodyLength::Length(5));
    assert_eq!(h.header("content-type"), Some(&b"text/plain"[..]));
    assert_eq!(h.headers().count(), 2);
    assert!(h.keep_alive());
    assert!(!h.is_interim());
    assert_eq!(
        normalize(&parts[1..]),
        vec![N::Body(b"hello".to_vec()), N::End]
    );
}

#[test]
fn http1_response_to_head_has_no_body() {
    let input = b"HTTP/1.1 200 OK\r\nContent-Length: 60\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    let parts = responses(input, &[b"HEAD", b"head", b"GET"]);
    assert_eq!(parts.len(), 5);
    assert_eq!(res_head(&parts[0]).body(), BodyLength::Empty);
    assert!(res_head(&parts[0]).keep_alive());
    assert_eq!(res_head(&parts[1]).body(), BodyLength::Empty);
    assert_eq!(res_head(&parts[2]).body(), BodyLength::Length(2));
}

#[test]
fn http1_response_204_304_no_body() {
    let input = b"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\nHTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\nETag: \"x\"\r\n\r\n\
HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n";
    let parts = responses(input, &[b"GET", b"GET", b"GET"]);
    assert_eq!(parts.len(), 3);
    for p in &parts {
        assert!(!res_head(p).has_body());
        assert!(res_head(p).keep_alive());
    }
}

#[test]
fn http1_interim_responses() {
    let input = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n\
HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx";
    // HEAD for the second request: the interim responses must not consume the first.
    let parts = responses(input, &[b"POST", b"HEAD"]);
    assert_eq!(parts.len(), 5);
    assert!(res_head(&parts[0]).is_interim());
    assert!(!res_head(&parts[0]).has_body());
    assert!(res_head(&parts[1]).is_interim());
    assert_eq!(res_head(&parts[2]).body(), BodyLength::Length(1));
    assert!(!res_head(&parts[2]).is_interim());
}

#[test]
fn http1_switching_protocols() {
    let mut dec = ResponseDecoder::default();
    dec.expect_response_to(b"GET");
    let mut buf = BytesMut::from(
        &b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x05hello"[..],
    );
    let part = dec.decode(&mut buf).unwrap().unwrap();
    let h = res_head(&part);
    assert_eq!(h.status(), 101);
    assert!(!h.is_interim());
    assert!(!h.has_body());
    assert!(!h.keep_alive());
    // The tunnel bytes are left to the caller.
    assert_eq!(&buf[..], b"\x81\x05hello");
}

#[test]
fn http1_connect_tunnel() {
    let mut dec = ResponseDecoder::default();
    dec.expect_response_to(b"CONNECT");
    let mut buf = BytesMut::from(&b"HTTP/1.1 200 Connection Established\r\n\r\n\x16\x03\x01"[..]);
    let part = dec.decode(&mut buf).unwrap().unwrap();
    assert!(!res_head(&part).has_body());
    assert!(!res_head(&part).keep_alive());
    assert_eq!(buf.len(), 3);
}

#[test]
fn http1_response_until_close() {
    let mut dec = ResponseDecoder::default();
    dec.expect_response_to(b"GET");
    let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nfirst"[..]);
    let part = dec.decode(&mut buf).unwrap().unwrap();
    assert_eq!(res_head(&part).body(), BodyLength::UntilClose);
    assert!(!res_head(&part).keep_alive());
    assert_eq!(
        dec.decode(&mut buf),
        Ok(Some(Part::Body(Bytes::from_static(b"first"))))
    );
    assert_eq!(dec.decode(&mut buf), Ok(None));
    buf.extend_from_slice(b" second");
    assert_eq!(
        dec.decode(&mut buf),
        Ok(Some(Part::Body(Bytes::from_static(b" second"))))
    );
    assert_eq!(dec.decode_eof(&mut buf), Ok(Some(Part::End)));
    assert_eq!(dec.decode_eof(&mut buf), Ok(None));
    // Leftover bytes at EOF come out as a last Body first.
    let mut dec = ResponseDecoder::default();
    let mut buf = BytesMut::from(&b"HTTP/1.0 200 OK\r\n\r\n"[..]);
    assert!(dec.decode(&mut buf).unwrap().is_some());
    buf.extend_from_slice(b"tail");
    assert_eq!(
        dec.decode_eof(&mut buf),
        Ok(Some(Part::Body(Bytes::from_static(b"tail"))))
    );
    assert_eq!(dec.decode_eof(&mut buf), Ok(Some(Part::End)));
}

#[test]
fn http1_response_chunked_and_framing_rules() {
    let input = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 99\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    let parts = responses(input, &[b"GET"]);
    assert_eq!(res_head(&parts[0]).body(), BodyLength::Chunked);
    assert_eq!(
        normalize(&parts[1..]),
        vec![N::Body(b"3\r\nabc\r\n0\r\n\r\n".to_vec()), N::End]
    );
    // A final coding other than chunked: read until close.
    let parts = responses(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzz",
        &[b"GET"],
    );
    assert_eq!(res_head(&parts[0]).body(), BodyLength::UntilClose);
    assert_eq!(parts.len(), 3);
    let (_, _, err) = feed_responses(
        &[b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n"],
        &[],
        Limits::default(),
    );
    assert!(is_malformed(&err.unwrap()));
    let (_, _, err) = feed_responses(&[b"HTTP/1.1 099 Odd\r\n\r\n"], &[], Limits::default());
    assert!(is_malformed(&err.unwrap()));
}

#[test]
fn http1_response_keep_alive() {
    let h = |input: &[u8]| res_head(&responses(input, &[b"GET"])[0]).clone();
    assert!(!h(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").keep_alive());
    assert!(!h(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").keep_alive());
    let ka = h(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n");
    assert!(ka.keep_alive());
    assert_eq!(ka.version(), Version::Http10);
}

#[test]
fn http1_decode_eof_truncated() {
    let (_, _, err) = feed_responses(
        &[b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"],
        &[],
        Limits::default(),
    );
    assert!(is_malformed(&err.unwrap()));
    let (_, _, err) = feed_responses(&[b"HTTP/1.1 200 OK\r\nContent-"], &[], Limits::default());
    assert!(is_malformed(&err.unwrap()));
    let mut dec = ResponseDecoder::default();
    assert_eq!(dec.decode_eof(&mut BytesMut::new()), Ok(None));
}

#[test]
fn http1_response_oversize_head() {
    let limits = Limits {
        max_head_bytes: 32,
        max_headers: 2,
    };
    let (_, _, err) = feed_responses(
        &[&[&b"HTTP/1.1 200 OK\r\nX: "[..], &[b'a'; 40]].concat()],
        &[],
        limits,
    );
    assert_eq!(err, Some(CodecError::HeadTooLarge { limit: 32 }));
    let (_, _, err) = feed_responses(
        &[b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"],
        &[],
        Limits {
            max_head_bytes: 1024,
            max_headers: 2,
        },
    );
    assert!(matches!(err, Some(CodecError::HeadTooLarge { .. })));
}

// ---------------------------------------------------------------- encoding

#[test]
fn http1_error_response_bytes() {
    assert_eq!(
        &error_response(404, "no route\n", false)[..],
        &b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 9\r\n\r\nno route\n"[..]
    );
    assert_eq!(
        &error_response(503, "", true)[..],
        &b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"[..]
    );
    // It decodes as a response.
    let parts = responses(&error_response(431, "too big", true), &[b"GET"]);
    assert_eq!(res_head(&parts[0]).status(), 431);
    assert!(!res_head(&parts[0]).keep_alive());
}

#[test]
fn http1_reason_phrases() {
    let expected = [
        (200, "OK"),
        (201, "Created"),
        (204, "No Content"),
        (400, "Bad Request"),
        (403, "Forbidden"),
        (404, "Not Found"),
        (405, "Method Not Allowed"),
        (408, "Request Timeout"),
        (413, "Content Too Large"),
        (421, "Misdirected Request"),
        (429, "Too Many Requests"),
        (431, "Request Header Fields Too Large"),
        (500, "Internal Server Error"),
        (501, "Not Implemented"),
        (502, "Bad Gateway"),
        (503, "Service Unavailable"),
        (504, "Gateway Timeout"),
    ];
    for (status, reason) in expected {
        assert_eq!(reason_phrase(status), reason);
        let line = format!("HTTP/1.1 {status} {reason}\r\n");
        assert!(error_response(status, "", false).starts_with(line.as_bytes()));
    }
    assert_eq!(reason_phrase(599), "");
    assert!(error_response(599, "", false).starts_with(b"HTTP/1.1 599 \r\n"));
    assert!(error_response(42, "", false).starts_with(b"HTTP/1.1 500 Internal Server Error\r\n"));
}

#[test]
fn http1_response_builder() {
    let r = response(
        200,
        &[
            ("Content-Type", "application/json"),
            ("Content-Length", "999"),
            ("X-Bad", "a\r\nInjected: 1"),
            ("Connection", "keep-alive"),
        ],
        b"{}",
        false,
    );
    assert_eq!(
        &r[..],
        &b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n{}"[..]
    );
    let r = response(
        301,
        &[("Location", "/new"), ("Connection", "keep-alive")],
        b"",
        true,
    );
    assert_eq!(&r[..], &b"HTTP/1.1 301 Moved Permanently\r\nLocation: /new\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"[..]);
    let r = response(204, &[], b"ignored", false);
    assert_eq!(&r[..], &b"HTTP/1.1 204 No Content\r\n\r\n"[..]);
}

// ---------------------------------------------------------------- sniff

#[test]
fn http1_sniff_matches_request_lines() {
    let m = Verdict::Match(Protocol::Http1);
    assert_eq!(sniff(b"GET / HTTP/1.1\r\n"), m);
    assert_eq!(sniff(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"), m);
    assert_eq!(sniff(b"POST /x?y HTTP/1.0\r\n"), m);
    assert_eq!(sniff(b"OPTIONS * HTTP/1.1\n"), m);
    assert_eq!(sniff(b"CONNECT example.com:443 HTTP/1.1\r\n"), m);
    assert_eq!(sniff(b"\r\n\r\nGET / HTTP/1.1\r\n"), m);
    assert_eq!(sniff(b"M-SEARCH * HTTP/1.1\r\n"), m);
}

#[test]
fn http1_sniff_needs_more_on_prefixes() {
    let line = b"GET /index.html HTTP/1.1\r\n";
    for n in 0..line.len() {
        assert_eq!(sniff(&line[..n]), Verdict::NeedMore, "prefix {n}");
    }
    assert_eq!(sniff(b"\r\n"), Verdict::NeedMore);
    assert_eq!(sniff(b"\r"), Verdict::NeedMore);
    assert_eq!(sniff(b"GET key"), Verdict::NeedMore);
    assert_eq!(sniff(b"PING"), Verdict::NeedMore);
}

#[test]
fn http1_sniff_rejects_lookalikes() {
    let rejects: &[&[u8]] = &[
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"PRI * HTTP/2",
        b"OPTIONS rtsp://127.0.0.1:8554/test RTSP/1.0\r\n",
        b"DESCRIBE rtsp://h/s RTSP/1.0\r\nCSeq: 2\r\n",
        b"OPTIONS rtsp://h RTSP",
        b"GET key\r\n",
        b"PING\r\n",
        b"SET a b\r\n",
        b"GET a b",
        b"*1\r\n$4\r\nPING\r\n",
        b"\x16\x03\x01\x00\xa5",
        b"\xda\xbb\xc2\x00",
        b"\x01\x01\x00",
        b"\x10\x1a\x00\x04MQTT",
        b" GET / HTTP/1.1\r\n",
        b"GET  / HTTP/1.1\r\n",
        b"GET / HTTP/1.1 \r\n",
        b"GET / HTTP/1.2\r\n",
        b"GET / http/1.1\r\n",
        b"GET /\x00 HTTP/1.1\r\n",
        b"GET / HTTP/1.1\rX",
        b"\rGET",
        b"G\tET / HTTP/1.1\r\n",
    ];
    for r in rejects {
        assert_eq!(
            sniff(r),
            Verdict::Reject,
            "{:?}",
            String::from_utf8_lossy(r)
        );
    }
}

#[test]
fn http1_sniff_bounded() {
    let mut long = b"GET /".to_vec();
    long.resize(SNIFF_LIMIT - 1, b'a');
    assert_eq!(sniff(&long), Verdict::NeedMore);
    long.push(b'a');
    assert_eq!(sniff(&long), Verdict::Reject);
    assert_eq!(sniff(&b"\r\n".repeat(SNIFF_LIMIT)), Verdict::Reject);
}

#[test]
fn http1_sniff_via_detect() {
    assert_eq!(
        crate::sniff(b"GET / HTTP/1.1\r\n", &[Protocol::Http1]),
        Verdict::Match(Protocol::Http1)
    );
}

// ---------------------------------------------------------------- properties

#[derive(Debug, Clone)]
enum GenBody {
    None,
    Length(Vec<u8>),
    Chunked {
        chunks: Vec<(Vec<u8>, Option<String>)>,
        trailers: Vec<(String, String)>,
        upper: bool,
    },
}

impl GenBody {
    /// Framing header lines and the body's wire bytes.
    fn render(&self) -> (String, Vec<u8>) {
        match self {
            GenBody::None => (String::new(), Vec::new()),
            GenBody::Length(b) => (format!("Content-Length: {}\r\n", b.len()), b.clone()),
            GenBody::Chunked {
                chunks,
                trailers,
                upper,
            } => {
                let mut out = Vec::new();
                for (data, ext) in chunks {
                    let size = if *upper {
                        format!("{:X}", data.len())
                    } else {
                        format!("{:x}", data.len())
                    };
                    out.extend_from_slice(size.as_bytes());
                    if let Some(ext) = ext {
                        out.push(b';');
                        out.extend_from_slice(ext.as_bytes());
                    }
                    out.extend_from_slice(b"\r\n");
                    out.extend_from_slice(data);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\n");
                for (name, value) in trailers {
                    out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
                }
                out.extend_from_slice(b"\r\n");
                ("Transfer-Encoding: chunked\r\n".to_owned(), out)
            }
        }
    }
}

fn arb_body() -> impl Strategy<Value = GenBody> {
    prop_oneof![
        Just(GenBody::None),
        vec(any::<u8>(), 1..300).prop_map(GenBody::Length),
        (
            vec(
                (
                    vec(any::<u8>(), 1..120),
                    proptest::option::of("[a-z]{1,5}(=[a-z0-9]{1,5})?")
                ),
                0..5
            ),
            vec(("[A-Za-z][A-Za-z0-9-]{0,8}", "[!-~]{0,12}"), 0..3),
            any::<bool>(),
        )
            .prop_map(|(chunks, trailers, upper)| GenBody::Chunked {
                chunks,
                trailers,
                upper
            }),
    ]
}

fn arb_headers() -> impl Strategy<Value = Vec<(String, String)>> {
    vec(
        ("X-[A-Za-z0-9-]{1,10}", "([!-~]([ -~]{0,15}[!-~])?)?"),
        0..5,
    )
}

/// One request: its bytes and what decoding it must give.
fn arb_request() -> impl Strategy<Value = (Vec<u8>, Vec<N>)> {
    (
        prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]),
        "/[a-z0-9/._-]{0,20}(\\?[a-z0-9=&]{0,10})?",
        any::<bool>(),
        arb_headers(),
        arb_body(),
    )
        .prop_map(|(method, path, http10, headers, body)| {
            let http10 = http10 && !matches!(body, GenBody::Chunked { .. });
            let version = if http10 { "HTTP/1.0" } else { "HTTP/1.1" };
            let (framing, body_bytes) = body.render();
            let mut head = format!("{method} {path} {version}\r\nHost: example.test\r\n");
            for (name, value) in headers {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            head.push_str(&framing);
            head.push_str("\r\n");
            let mut expected = vec![N::Head(Bytes::from(head.clone().into_bytes()))];
            if !body_bytes.is_empty() {
                expected.push(N::Body(body_bytes.clone()));
                expected.push(N::End);
            }
            ([head.into_bytes(), body_bytes].concat(), expected)
        })
}

fn arb_request_stream() -> impl Strategy<Value = (Vec<u8>, Vec<N>)> {
    vec(arb_request(), 1..5).prop_map(|reqs| {
        let mut input = Vec::new();
        let mut expected = Vec::new();
        for (bytes, exp) in reqs {
            input.extend_from_slice(&bytes);
            expected.extend(exp);
        }
        (input, expected)
    })
}

/// One exchange on the response side: the request method, the response
/// bytes (maybe after a `100 Continue`) and the expected parts.
fn arb_response(last: bool) -> impl Strategy<Value = (&'static str, Vec<u8>, Vec<N>)> {
    (
        prop::sample::select(vec!["GET", "HEAD", "POST"]),
        any::<bool>(),
        prop::sample::select(vec![200u16, 201, 204, 304, 404, 500]),
        arb_headers(),
        arb_body(),
        any::<bool>(),
    )
        .prop_map(
            move |(method, interim, status, headers, body, until_close)| {
                let bodiless = method == "HEAD" || status == 204 || status == 304;
                let until_close = last && until_close && !bodiless;
                let (framing, body_bytes) = body.render();
                let framing = if until_close || (status == 204 && method != "HEAD") {
                    String::new()
                } else if framing.is_empty() && !bodiless {
                    "Content-Length: 0\r\n".to_owned()
                } else {
                    framing
                };
                let body_bytes = if bodiless { Vec::new() } else { body_bytes };
                let mut input = Vec::new();
                let mut expected = Vec::new();
                if interim {
                    let continue_head = b"HTTP/1.1 100 Continue\r\n\r\n";
                    input.extend_from_slice(continue_head);
                    expected.push(N::Head(Bytes::from_static(continue_head)));
                }
                let mut head = format!(
                    "HTTP/1.1 {status} {}\r\nServer: test\r\n",
                    reason_phrase(status)
                );
                for (name, value) in headers {
                    head.push_str(&format!("{name}: {value}\r\n"));
                }
                head.push_str(&framing);
                head.push_str("\r\n");
                input.extend_from_slice(head.as_bytes());
                input.extend_from_slice(&body_bytes);
                expected.push(N::Head(Bytes::from(head.into_bytes())));
                if !body_bytes.is_empty() {
                    expected.push(N::Body(body_bytes));
                    expected.push(N::End);
                } else if until_close {
                    expected.push(N::End);
                }
                (method, input, expected)
            },
        )
}

fn arb_response_stream() -> impl Strategy<Value = (Vec<&'static str>, Vec<u8>, Vec<N>)> {
    (vec(arb_response(false), 0..4), arb_response(true)).prop_map(|(mut exchanges, last)| {
        exchanges.push(last);
        let mut methods = Vec::new();
        let mut input = Vec::new();
        let mut expected = Vec::new();
        for (method, bytes, exp) in exchanges {
            methods.push(method);
            input.extend_from_slice(&bytes);
            expected.extend(exp);
        }
        (methods, input, expected)
    })
}

/// Split `input` at the given cut points.
fn split_at_points<'a>(input: &'a [u8], cuts: &[prop::sample::Index]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
    points.sort_unstable();
    points.dedup();
    let mut pieces = Vec::new();
    let mut start = 0;
    for p in points {
        pieces.push(&input[start..p]);
        start = p;
    }
    pieces.push(&input[start..]);
    pieces
}

/// Run both decoders and the sniffer over `input`; only panics matter.
fn decode_anything(input: &[u8], limits: Limits) {
    let _ = sniff(input);
    let mut dec = RequestDecoder::new(limits);
    let mut buf = BytesMut::from(input);
    for _ in 0..10_000 {
        match dec.decode(&mut buf) {
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    let mut dec = ResponseDecoder::new(limits);
    dec.expect_response_to(b"GET");
    dec.expect_response_to(b"HEAD");
    let mut buf = BytesMut::from(input);
    for _ in 0..10_000 {
        match dec.decode(&mut buf) {
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    for _ in 0..10_000 {
        match dec.decode_eof(&mut buf) {
            Ok(Some(Part::End)) | Ok(None) | Err(_) => break,
            Ok(Some(_)) => {}
        }
    }
}

proptest! {
    #[test]
    fn http1_prop_any_bytes_never_panic(input in vec(any::<u8>(), 0..2048)) {
        decode_anything(&input, Limits::default());
        decode_anything(&input, Limits { max_head_bytes: 64, max_headers: 2 });
    }

    #[test]
    fn http1_prop_near_http_never_panics(
        (input, _) in arb_request_stream(),
        flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut input = input;
        for (at, byte) in flips {
            let i = at.index(input.len());
            input[i] = byte;
        }
        decode_anything(&input, Limits::default());
        decode_anything(&input, Limits { max_head_bytes: 128, max_headers: 3 });
    }

    #[test]
    fn http1_prop_requests_split_anywhere(
        (input, expected) in arb_request_stream(),
        cuts in vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let (whole, rest, err) = feed_requests(&[&input], Limits::default());
        prop_assert_eq!(err, None);
        prop_assert!(rest.is_empty());
        prop_assert_eq!(&normalize(&whole), &expected);
        prop_assert_eq!(wire_bytes(&whole), input.clone());

        let pieces = split_at_points(&input, &cuts);
        let (split, rest, err) = feed_requests(&pieces, Limits::default());
        prop_assert_eq!(err, None);
        prop_assert!(rest.is_empty());
        prop_assert_eq!(normalize(&split), expected);
        prop_assert_eq!(wire_bytes(&split), input);
    }

    #[test]
    fn http1_prop_responses_split_anywhere(
        (methods, input, expected) in arb_response_stream(),
        cuts in vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let methods: Vec<&[u8]> = methods.iter().map(|m| m.as_bytes()).collect();
        let (whole, rest, err) = feed_responses(&[&input], &methods, Limits::default());
        prop_assert_eq!(err, None);
        prop_assert!(rest.is_empty());
        prop_assert_eq!(&normalize(&whole), &expected);
        prop_assert_eq!(wire_bytes(&whole), input.clone());

        let pieces = split_at_points(&input, &cuts);
        let (split, rest, err) = feed_responses(&pieces, &methods, Limits::default());
        prop_assert_eq!(err, None);
        prop_assert!(rest.is_empty());
        prop_assert_eq!(normalize(&split), expected);
        prop_assert_eq!(wire_bytes(&split), input);
    }

    #[test]
    fn http1_prop_sniff_matches_generated_requests((input, _) in arb_request_stream(), cut in any::<prop::sample::Index>()) {
        prop_assert_eq!(sniff(&input), Verdict::Match(Protocol::Http1));
        let line_end = input.iter().position(|b| *b == b'\n').unwrap_or(0);
        let prefix = &input[..cut.index(line_end)];
        prop_assert_eq!(sniff(prefix), Verdict::NeedMore);
    }
}
