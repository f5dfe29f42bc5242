//! The HTTP/1 codec over the captured vectors in `shared/vectors` (real
//! curl ↔ nginx sessions): every message is found, nothing is left over, and
//! the wire bytes of the parts concatenate back to the capture byte for byte.
//! Also: the sniffer matches every HTTP/1 client stream and rejects every
//! other protocol's.
use std::fs;
use std::path::{Path, PathBuf};

use bytes::BytesMut;
use switchyard_codecs::http1::{BodyLength, RequestDecoder, ResponseDecoder, sniff};
use switchyard_codecs::{Decoder, Part, Protocol, Verdict, WireHead};

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/vectors");

fn vectors_dir() -> PathBuf {
    let dir = PathBuf::from(VECTORS);
    assert!(
        dir.join("http1").is_dir(),
        "protocol test vectors not found at {} (expected the shared/ folder beside the repository clone)",
        dir.display()
    );
    dir
}

fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// `*.c2s.bin` / `*.s2c.bin` files of one protocol folder, sorted.
fn files(protocol: &str, suffix: &str) -> Vec<PathBuf> {
    let dir = vectors_dir().join(protocol);
    let mut out: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    out.sort();
    out
}

/// One decoded message: its head and its body bytes (framing included).
struct Message<H> {
    head: H,
    body: Vec<u8>,
    ended: bool,
}

/// Split a part sequence into messages, checking Head/Body/End order.
fn messages<H: WireHead>(parts: Vec<Part<H>>) -> Vec<Message<H>> {
    let mut out: Vec<Message<H>> = Vec::new();
    for part in parts {
        match part {
            Part::Head(head) => {
                if let Some(last) = out.last() {
                    assert!(
                        !last.head.has_body() || last.ended,
                        "head before the previous body ended"
                    );
                }
                out.push(Message {
                    head,
                    body: Vec::new(),
                    ended: false,
                });
            }
            Part::Body(bytes) => {
                let last = out.last_mut().expect("body before any head");
                assert!(
                    last.head.has_body() && !last.ended,
                    "body outside a message body"
                );
                last.body.extend_from_slice(&bytes);
            }
            Part::End => {
                let last = out.last_mut().expect("end before any head");
                assert!(
                    last.head.has_body() && !last.ended,
                    "end outside a message body"
                );
                last.ended = true;
            }
        }
    }
    for m in &out {
        assert_eq!(m.head.has_body(), m.ended, "message body not ended");
    }
    out
}

fn wire<H: WireHead>(messages: &[Message<H>]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in messages {
        out.extend_from_slice(m.head.wire());
        out.extend_from_slice(&m.body);
    }
    out
}

/// Decode a whole client stream, fed in `step`-byte reads.
fn decode_requests(
    bytes: &[u8],
    step: usize,
) -> Vec<Message<switchyard_codecs::http1::RequestHead>> {
    let mut dec = RequestDecoder::default();
    let mut buf = BytesMut::new();
    let mut parts = Vec::new();
    for chunk in bytes.chunks(step) {
        buf.extend_from_slice(chunk);
        while let Some(part) = dec.decode(&mut buf).expect("request stream decodes") {
            parts.push(part);
        }
    }
    assert!(buf.is_empty(), "{} request bytes left over", buf.len());
    assert!(dec.is_idle(), "request stream ends inside a message");
    messages(parts)
}

/// Decode a whole server stream answering `methods`, fed in `step`-byte reads.
fn decode_responses(
    bytes: &[u8],
    methods: &[Vec<u8>],
    step: usize,
) -> Vec<Message<switchyard_codecs::http1::ResponseHead>> {
    let mut dec = ResponseDecoder::default();
    for m in methods {
        dec.expect_response_to(m);
    }
    let mut buf = BytesMut::new();
    let mut parts = Vec::new();
    for chunk in bytes.chunks(step) {
        buf.extend_from_slice(chunk);
        while let Some(part) = dec.decode(&mut buf).expect("response stream decodes") {
            parts.push(part);
        }
    }
    while let Some(part) = dec
        .decode_eof(&mut buf)
        .expect("response stream ends cleanly")
    {
        let end = part == Part::End;
        parts.push(part);
        if end {
            break;
        }
    }
    assert!(buf.is_empty(), "{} response bytes left over", buf.len());
    messages(parts)
}

/// What each capture holds (see shared/vectors/README.md).
struct Expected {
    session: &'static str,
    /// (method, path, body length on the wire, expects 100-continue)
    requests: &'static [(&'static str, &'static str, usize, bool)],
    /// (status, body length)
    responses: &'static [(u16, usize)],
}

const SESSIONS: &[Expected] = &[
    Expected {
        session: "keepalive-get",
        requests: &[
            ("GET", "/index.html", 0, false),
            ("GET", "/hello", 0, false),
        ],
        responses: &[(200, 1100), (200, 17)],
    },
    Expected {
        session: "post-chunked",
        // one 321-byte (0x141) chunk: "141\r\n" + data + "\r\n" + "0\r\n\r\n"
        requests: &[("POST", "/upload", 5 + 321 + 2 + 5, false)],
        responses: &[(201, 7)],
    },
    Expected {
        session: "post-chunked-multichunk-expect100",
        // chunks of 12, 23 and 6 bytes, then the last-chunk
        requests: &[(
            "POST",
            "/upload",
            (3 + 12 + 2) + (4 + 23 + 2) + (3 + 6 + 2) + 5,
            true,
        )],
        responses: &[(100, 0), (201, 7)],
    },
    Expected {
        session: "expect-100-continue",
        requests: &[("POST", "/upload", 1982, true)],
        responses: &[(100, 0), (201, 7)],
    },
    Expected {
        session: "head-404-304",
        requests: &[
            ("HEAD", "/a.txt", 0, false),
            ("GET", "/missing.html", 0, false),
            ("GET", "/style.css", 0, false),
        ],
        responses: &[(200, 0), (404, 153), (304, 0)],
    },
];

#[test]
fn http1_vectors_are_all_described() {
    let mut sessions: Vec<String> = files("http1", ".c2s.bin")
        .iter()
        .map(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .trim_end_matches(".c2s.bin")
                .to_owned()
        })
        .collect();
    sessions.sort();
    let mut described: Vec<&str> = SESSIONS.iter().map(|s| s.session).collect();
    described.sort();
    assert_eq!(sessions, described);
    assert_eq!(files("http1", ".s2c.bin").len(), SESSIONS.len());
}

#[test]
fn http1_vectors_decode_byte_exact() {
    let dir = vectors_dir().join("http1");
    for expected in SESSIONS {
        let c2s = read(&dir.join(format!("{}.c2s.bin", expected.session)));
        let s2c = read(&dir.join(format!("{}.s2c.bin", expected.session)));
        for step in [c2s.len().max(1), 1, 7, 100] {
            let reqs = decode_requests(&c2s, step);
            assert_eq!(
                reqs.len(),
                expected.requests.len(),
                "{}: request count",
                expected.session
            );
            for (m, (method, path, body_len, expect_continue)) in reqs.iter().zip(expected.requests)
            {
                assert_eq!(m.head.method(), method.as_bytes(), "{}", expected.session);
                assert_eq!(m.head.path(), path.as_bytes(), "{}", expected.session);
                assert_eq!(
                    m.head.host(),
                    Some(&b"127.0.0.1:31080"[..]),
                    "{}",
                    expected.session
                );
                assert_eq!(
                    m.body.len(),
                    *body_len,
                    "{}: request body",
                    expected.session
                );
                assert_eq!(
                    m.head.expects_continue(),
                    *expect_continue,
                    "{}",
                    expected.session
                );
                assert!(m.head.keep_alive(), "{}", expected.session);
            }
            assert_eq!(wire(&reqs), c2s, "{}: request wire bytes", expected.session);

            let methods: Vec<Vec<u8>> = reqs.iter().map(|m| m.head.method().to_vec()).collect();
            let resps = decode_responses(&s2c, &methods, step.min(s2c.len()).max(1));
            assert_eq!(
                resps.len(),
                expected.responses.len(),
                "{}: response count",
                expected.session
            );
            for (m, (status, body_len)) in resps.iter().zip(expected.responses) {
                assert_eq!(m.head.status(), *status, "{}", expected.session);
                assert_eq!(
                    m.body.len(),
                    *body_len,
                    "{}: response body",
                    expected.session
                );
                assert_eq!(m.head.is_interim(), *status == 100, "{}", expected.session);
                assert!(m.head.keep_alive(), "{}", expected.session);
            }
            assert_eq!(
                wire(&resps),
                s2c,
                "{}: response wire bytes",
                expected.session
            );
        }
    }
}

#[test]
fn http1_vectors_framing_details() {
    let dir = vectors_dir().join("http1");
    let reqs = decode_requests(
        &read(&dir.join("post-chunked-multichunk-expect100.c2s.bin")),
        1,
    );
    assert_eq!(reqs[0].head.body(), BodyLength::Chunked);
    assert!(reqs[0].body.ends_with(b"0\r\n\r\n"));
    let reqs = decode_requests(&read(&dir.join("expect-100-continue.c2s.bin")), 64);
    assert_eq!(reqs[0].head.body(), BodyLength::Length(1982));
    let head = decode_requests(&read(&dir.join("head-404-304.c2s.bin")), 64);
    assert_eq!(
        head[2].head.header("if-none-match"),
        Some(&b"\"6b073a4b-36\""[..])
    );
    // The HEAD response declares Content-Length: 60 but carries no body.
    let methods: Vec<Vec<u8>> = head.iter().map(|m| m.head.method().to_vec()).collect();
    let resps = decode_responses(&read(&dir.join("head-404-304.s2c.bin")), &methods, 1000);
    assert_eq!(resps[0].head.header("content-length"), Some(&b"60"[..]));
    assert_eq!(resps[0].head.body(), BodyLength::Empty);
}

#[test]
fn http1_sniff_matches_http1_vectors() {
    for path in files("http1", ".c2s.bin") {
        let bytes = read(&path);
        assert_eq!(
            sniff(&bytes),
            Verdict::Match(Protocol::Http1),
            "{}",
            path.display()
        );
        let line_end = bytes
            .iter()
            .position(|b| *b == b'\n')
            .expect("a request line");
        for n in 0..line_end {
            assert_eq!(
                sniff(&bytes[..n]),
                Verdict::NeedMore,
                "{} prefix {n}",
                path.display()
            );
        }
    }
}

#[test]
fn http1_sniff_rejects_other_protocols() {
    let dir = vectors_dir();
    let mut checked = 0;
    let mut protocols: Vec<PathBuf> = fs::read_dir(&dir)
        .expect("vectors dir")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_dir() && !p.ends_with("http1"))
        .collect();
    protocols.sort();
    for protocol in protocols {
        let name = protocol.file_name().unwrap().to_string_lossy().into_owned();
        for path in files(&name, ".c2s.bin") {
            let bytes = read(&path);
            // Never a match on any prefix, and a firm reject on the stream.
            for n in 0..=bytes.len().min(256) {
                assert_ne!(
                    sniff(&bytes[..n]),
                    Verdict::Match(Protocol::Http1),
                    "{} prefix {n}",
                    path.display()
                );
            }
            assert_eq!(sniff(&bytes), Verdict::Reject, "{}", path.display());
            checked += 1;
        }
    }
    assert!(
        checked >= 30,
        "only {checked} other-protocol client streams found"
    );
}

#[test]
fn http1_sniff_rejects_redis_inline_commands() {
    let dir = vectors_dir().join("redis");
    for session in ["nc-inline-ping", "nc-inline", "nc-resp3-all-types"] {
        let bytes = read(&dir.join(format!("{session}.c2s.bin")));
        let first_line = bytes
            .iter()
            .position(|b| *b == b'\n')
            .expect("an inline command")
            + 1;
        assert_eq!(sniff(&bytes[..first_line]), Verdict::Reject, "{session}");
    }
}
