//! RFC 9113 conformance of the gateway's downstream HTTP/2 server, in the
//! spirit of h2spec (not installable here): each case sends what the RFC
//! names, from raw frames written on a TCP socket where a well-behaved client
//! cannot produce it, and asserts the gateway's observable answer (GOAWAY or
//! RST_STREAM with the RFC's error code, or a correct response). After every
//! case a fresh connection with a real client (the `h2` crate) must still be
//! served: one connection's error affects no other.

mod common;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Instant;

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};

// ---------------------------------------------------------------------------
// Frame types, flags, settings and error codes (RFC 9113 §6, §7)

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const PRIORITY: u8 = 0x2;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;

const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

const SETTINGS_ENABLE_PUSH: u16 = 0x2;
const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;

const PROTOCOL_ERROR: u32 = 0x1;
const FLOW_CONTROL_ERROR: u32 = 0x3;
const FRAME_SIZE_ERROR: u32 = 0x6;
const REFUSED_STREAM: u32 = 0x7;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The default SETTINGS_MAX_FRAME_SIZE (RFC 9113 §6.5.2).
const DEFAULT_MAX_FRAME: usize = 16_384;

// ---------------------------------------------------------------------------
// A raw-frame helper

/// One frame: the 9-byte header's fields and the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Frame {
    ty: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

/// Encode a frame: 24-bit length, type, flags, reserved bit + 31-bit stream id.
fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("frame length");
    assert!(len < 1 << 24, "a frame payload fits 24 bits");
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(ty);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Read one frame; `Ok(None)` at a clean end of the connection.
fn read_frame(r: &mut impl Read) -> io::Result<Option<Frame>> {
    let mut head = [0u8; 9];
    let mut got = 0;
    while got < head.len() {
        match r.read(&mut head[got..])? {
            0 if got == 0 => return Ok(None),
            0 => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "EOF inside a frame header",
                ));
            }
            n => got += n,
        }
    }
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    Ok(Some(Frame {
        ty: head[3],
        flags: head[4],
        stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
        payload,
    }))
}

/// A SETTINGS payload from (identifier, value) pairs.
fn settings(pairs: &[(u16, u32)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (id, value) in pairs {
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&value.to_be_bytes());
    }
    out
}

/// The (identifier, value) pairs of a SETTINGS payload.
fn parse_settings(payload: &[u8]) -> Vec<(u16, u32)> {
    payload
        .chunks_exact(6)
        .map(|c| {
            (
                u16::from_be_bytes([c[0], c[1]]),
                u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
            )
        })
        .collect()
}

/// An HPACK integer with an `n`-bit prefix (RFC 7541 §5.1), high bits `first`.
fn hpack_int(out: &mut Vec<u8>, first: u8, n: u32, mut value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// A header block of literal fields without indexing, new names, no Huffman
/// (RFC 7541 §6.2.2): any name goes through as written, uppercase included.
fn hpack(headers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in headers {
        out.push(0x00);
        hpack_int(&mut out, 0, 7, name.len());
        out.extend_from_slice(name.as_bytes());
        hpack_int(&mut out, 0, 7, value.len());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

/// The pseudo-headers of a valid `GET path`.
fn get_headers(path: &str) -> Vec<(&'static str, String)> {
    vec![
        (":method", "GET".to_owned()),
        (":scheme", "http".to_owned()),
        (":authority", "test.local".to_owned()),
        (":path", path.to_owned()),
    ]
}

fn block(headers: &[(&str, String)]) -> Vec<u8> {
    let refs: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    hpack(&refs)
}

/// How the gateway answered a violation.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    /// GOAWAY with this error code (a connection error).
    GoAway(u32),
    /// RST_STREAM on this stream with this error code (a stream error).
    Reset(u32, u32),
    /// The connection ended without either.
    Closed,
}

/// A client connection made of raw frames.
struct Raw {
    tcp: TcpStream,
    /// The gateway's SETTINGS.
    server_settings: Vec<(u16, u32)>,
    /// Frames read while waiting for something else.
    seen: Vec<Frame>,
}

impl Raw {
    /// Connect without sending anything.
    fn connect_bare(addr: SocketAddr) -> TcpStream {
        let tcp = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        tcp.set_read_timeout(Some(WAIT)).unwrap();
        tcp.set_nodelay(true).unwrap();
        tcp
    }

    /// Connect, send the preface and `client_settings`, read the gateway's
    /// SETTINGS and acknowledge them, and wait for the gateway's ACK of ours
    /// (RFC 9113 §6.5.3).
    fn connect_with(addr: SocketAddr, client_settings: &[(u16, u32)]) -> Self {
        let mut tcp = Self::connect_bare(addr);
        let mut hello = PREFACE.to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &settings(client_settings)));
        tcp.write_all(&hello).unwrap();
        let mut raw = Raw {
            tcp,
            server_settings: Vec::new(),
            seen: Vec::new(),
        };
        let first = raw.next().expect("the gateway's SETTINGS");
        assert_eq!(
            (first.ty, first.flags & ACK, first.stream),
            (SETTINGS, 0, 0),
            "the server preface must start with a SETTINGS frame (§3.4): {first:?}"
        );
        raw.server_settings = parse_settings(&first.payload);
        raw.send(&frame(SETTINGS, ACK, 0, &[]));
        let ack = raw.wait_for(|f| f.ty == SETTINGS && f.flags & ACK != 0);
        assert!(
            ack.as_ref()
                .is_some_and(|f| f.payload.is_empty() && f.stream == 0),
            "want an empty SETTINGS ACK on stream 0 for our SETTINGS, got {ack:?}"
        );
        raw
    }

    fn connect(addr: SocketAddr) -> Self {
        Self::connect_with(addr, &[])
    }

    fn send(&mut self, bytes: &[u8]) {
        // The gateway may already have closed: what it answered is what counts.
        let _ = self.tcp.write_all(bytes);
    }

    /// The next frame; `None` when the connection ended (or was reset).
    fn next(&mut self) -> Option<Frame> {
        match read_frame(&mut self.tcp) {
            Ok(f) => f,
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut =>
            {
                panic!(
                    "no frame from the gateway within {WAIT:?}; so far: {:?}",
                    self.seen
                )
            }
            Err(_) => None,
        }
    }

    /// Read until a frame matches `want` (returned) or the connection ends.
    fn wait_for(&mut self, want: impl Fn(&Frame) -> bool) -> Option<Frame> {
        while let Some(f) = self.next() {
            if want(&f) {
                return Some(f);
            }
            self.seen.push(f);
        }
        None
    }

    /// Read until the gateway sends GOAWAY or a RST_STREAM, or closes. A
    /// RST_STREAM with NO_ERROR (a finished stream) is not an answer.
    fn answer(&mut self) -> Answer {
        let f = self.wait_for(|f| {
            f.ty == GOAWAY || (f.ty == RST_STREAM && f.payload.as_slice() != [0, 0, 0, 0])
        });
        match f {
            Some(f) if f.ty == GOAWAY => {
                assert!(f.payload.len() >= 8 && f.stream == 0, "bad GOAWAY {f:?}");
                Answer::GoAway(u32::from_be_bytes(f.payload[4..8].try_into().unwrap()))
            }
            Some(f) => {
                assert_eq!(f.payload.len(), 4, "bad RST_STREAM {f:?}");
                Answer::Reset(
                    f.stream,
                    u32::from_be_bytes(f.payload[..].try_into().unwrap()),
                )
            }
            None => Answer::Closed,
        }
    }

    /// After a GOAWAY for a connection error, the gateway closes the
    /// connection (RFC 9113 §5.4.1).
    #[track_caller]
    fn assert_closes(&mut self) {
        let started = Instant::now();
        let left = self.wait_for(|f| f.ty != GOAWAY && f.ty != WINDOW_UPDATE && f.ty != SETTINGS);
        assert!(
            left.is_none(),
            "want the connection closed after GOAWAY, got {left:?}"
        );
        assert!(started.elapsed() < WAIT);
    }
}

/// A connection error: GOAWAY with `code`, then the connection closed.
#[track_caller]
fn assert_goaway(raw: &mut Raw, code: u32, case: &str) {
    let answer = raw.answer();
    assert_eq!(
        answer,
        Answer::GoAway(code),
        "{case}: want GOAWAY with error code {code:#x}; frames before: {:?}",
        raw.seen
    );
    raw.assert_closes();
}

// ---------------------------------------------------------------------------
// The gateway

/// A gateway with listener `edge` (http1 and http2 on one port): `/hang/`
/// goes to an upstream that accepts and never answers, everything else gets
/// a direct response `200 ok`.
struct Setup {
    gw: Gateway,
    /// The silent upstream; kept open while the gateway runs.
    _hang: TcpListener,
}

fn setup() -> Setup {
    let hang = TcpListener::bind("127.0.0.1:0").expect("bind the silent upstream");
    let ports = Ports::new();
    let ports = (ports.admin, ports.listen);
    let yaml = [
        format!("admin:\n  address: 127.0.0.1:{}", ports.0),
        "listeners:".to_owned(),
        "  - name: edge".to_owned(),
        format!("    address: 127.0.0.1:{}", ports.1),
        "    protocols: [http1, http2]".to_owned(),
        "    route_table: main".to_owned(),
        "route_tables:".to_owned(),
        "  - name: main".to_owned(),
        "    virtual_hosts:".to_owned(),
        "      - name: any".to_owned(),
        "        domains: [\"*\"]".to_owned(),
        "        routes:".to_owned(),
        "          - {match: {path_prefix: /hang/}, cluster: hang}".to_owned(),
        "          - {direct_response: {status: 200, body: ok}}".to_owned(),
        "clusters:".to_owned(),
        format!(
            "  - {{name: hang, hosts: [\"{}\"]}}",
            hang.local_addr().unwrap()
        ),
    ]
    .join("\n");
    Setup {
        gw: Gateway::start(&yaml),
        _hang: hang,
    }
}

/// `GET path` with the `h2` crate's client on a fresh connection: (status, body).
async fn h2_get(addr: SocketAddr, path: &str) -> (StatusCode, Vec<u8>) {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let (send, conn) = h2::client::handshake(tcp)
        .await
        .expect("HTTP/2 handshake with the gateway");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut send: h2::client::SendRequest<Bytes> = send.ready().await.expect("a stream slot");
    let req = Request::builder()
        .uri(format!("http://test.local{path}"))
        .body(())
        .unwrap();
    let (resp, _) = send.send_request(req, true).expect("send the request");
    let resp = tokio::time::timeout(WAIT, resp)
        .await
        .expect("a response in time")
        .expect("a response");
    let status = resp.status();
    let mut body = resp.into_body();
    let mut out = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("the body");
        let _ = body.flow_control().release_capacity(chunk.len());
        out.extend_from_slice(&chunk);
    }
    (status, out)
}

/// A fresh connection with a real client is served as usual.
async fn assert_still_serves(s: &Setup) {
    let (status, body) = h2_get(s.gw.addr(), "/after").await;
    assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"ok"[..]));
}

/// Run a raw-socket case off the async runtime, then check a fresh connection.
async fn case(f: impl FnOnce(SocketAddr) + Send + 'static) {
    let s = setup();
    let addr = s.gw.addr();
    tokio::task::spawn_blocking(move || f(addr))
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    assert_still_serves(&s).await;
}

// ---------------------------------------------------------------------------
// Cases

/// A correct request from a real client gets a correct response; the
/// gateway's SETTINGS are valid and it acknowledges ours (§6.5.3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_client_gets_a_response_and_settings_are_acknowledged() {
    let s = setup();
    let (status, body) = h2_get(s.gw.addr(), "/").await;
    assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"ok"[..]));
    let addr = s.gw.addr();
    tokio::task::spawn_blocking(move || {
        // `connect` asserts the SETTINGS exchange; then a raw GET is answered
        // with HEADERS (and DATA) on its stream.
        let mut raw = Raw::connect(addr);
        let head = block(&get_headers("/"));
        raw.send(&frame(HEADERS, END_HEADERS | END_STREAM, 1, &head));
        let resp = raw.wait_for(|f| f.ty == HEADERS && f.stream == 1);
        assert!(resp.is_some(), "no response HEADERS: {:?}", raw.seen);
        // The gateway's own settings are within the RFC's bounds (§6.5.2).
        for (id, value) in &raw.server_settings {
            match *id {
                SETTINGS_ENABLE_PUSH => assert!(*value <= 1, "ENABLE_PUSH {value}"),
                SETTINGS_INITIAL_WINDOW_SIZE => assert!(*value <= 0x7fff_ffff),
                SETTINGS_MAX_FRAME_SIZE => assert!((16_384..=16_777_215).contains(value)),
                _ => {}
            }
        }
    })
    .await
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    assert_still_serves(&s).await;
}

/// §3.4: a client preface that is not the exact octets is a connection
/// error (PROTOCOL_ERROR); the gateway must not serve it as HTTP/2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_connection_preface_closes_the_connection() {
    case(|addr| {
        let mut tcp = Raw::connect_bare(addr);
        tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n").unwrap();
        tcp.write_all(&frame(SETTINGS, 0, 0, &[])).unwrap();
        let mut got = Vec::new();
        let started = Instant::now();
        let end = tcp.read_to_end(&mut got);
        assert!(
            end.is_ok() || started.elapsed() < WAIT,
            "the connection stayed open: {end:?}"
        );
        // Either nothing, a GOAWAY PROTOCOL_ERROR, or an HTTP/1.1 400: never
        // a served HTTP/2 connection (SETTINGS first with no GOAWAY).
        if got.starts_with(b"HTTP/1.1 ") {
            assert!(
                got.starts_with(b"HTTP/1.1 400"),
                "{:?}",
                String::from_utf8_lossy(&got)
            );
        } else if !got.is_empty() {
            let mut r = got.as_slice();
            let mut frames = Vec::new();
            while let Ok(Some(f)) = read_frame(&mut r) {
                frames.push(f);
            }
            let goaway = frames.iter().find(|f| f.ty == GOAWAY);
            assert!(
                goaway.is_some_and(|f| f.payload[4..8] == PROTOCOL_ERROR.to_be_bytes()),
                "want GOAWAY PROTOCOL_ERROR or a close, got {frames:?}"
            );
        }
    })
    .await;
}

/// §6.1: DATA on stream 0 is a connection error PROTOCOL_ERROR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_on_stream_zero_is_goaway_protocol_error() {
    case(|addr| {
        let mut raw = Raw::connect(addr);
        raw.send(&frame(DATA, 0, 0, b"hello"));
        assert_goaway(&mut raw, PROTOCOL_ERROR, "DATA on stream 0");
    })
    .await;
}

/// §5.1.1: a client opening an even (server-initiated) stream id is a
/// connection error PROTOCOL_ERROR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_on_an_even_stream_is_goaway_protocol_error() {
    case(|addr| {
        let mut raw = Raw::connect(addr);
        let head = block(&get_headers("/"));
        raw.send(&frame(HEADERS, END_HEADERS | END_STREAM, 2, &head));
        assert_goaway(&mut raw, PROTOCOL_ERROR, "HEADERS on stream 2");
    })
    .await;
}

/// §4.2: a frame larger than SETTINGS_MAX_FRAME_SIZE (the gateway's, by
/// default 16384) is a FRAME_SIZE_ERROR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_above_max_frame_size_is_goaway_frame_size_error() {
    case(|addr| {
        let mut raw = Raw::connect(addr);
        let max = raw
            .server_settings
            .iter()
            .find(|(id, _)| *id == SETTINGS_MAX_FRAME_SIZE)
            .map_or(DEFAULT_MAX_FRAME, |(_, v)| *v as usize);
        let head = block(&get_headers("/upload"));
        raw.send(&frame(HEADERS, END_HEADERS, 1, &head));
        raw.send(&frame(DATA, END_STREAM, 1, &vec![b'x'; max + 1]));
        assert_goaway(&mut raw, FRAME_SIZE_ERROR, "a DATA frame of max + 1 octets");
    })
    .await;
}

/// §6.5: a SETTINGS frame whose length is not a multiple of 6 is a
/// connection error FRAME_SIZE_ERROR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_with_a_length_not_a_multiple_of_six_is_goaway_frame_size_error() {
    case(|addr| {
        let mut raw = Raw::connect(addr);
        raw.send(&frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0]));
        assert_goaway(&mut raw, FRAME_SIZE_ERROR, "SETTINGS of 5 octets");
    })
    .await;
}

/// §6.5: a SETTINGS ACK with a payload is a connection error FRAME_SIZE_ERROR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settings_ack_with_a_payload_is_goaway_frame_size_error() {
    case(|addr| {
        let mut raw = Raw::connect(addr);
        raw.send(&frame(
            SETTINGS,
            ACK,
            0,
            &settings(&[(SETTINGS_MAX_CONCURRENT_STREAMS, 1)]),
        ));
        assert_goaway(&mut raw, FRAME_SIZE_ERROR, "SETTINGS ACK of 6 octets");
    })
    .await;
}

/// §6.5.2: SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1 is a connection error
/// FLOW_CONTROL_ERROR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_window_size_above_the_maximum_is_goaway_flow_control_error() {
    case(|addr| {
        let mut raw = Raw::connect(addr);
        raw.send(&frame(
            SETTINGS,
            0,
            0,
            &settings(&[(SETTINGS_INITIAL_WINDOW_SIZE, 0x8000_0000)]),
        ));
        assert_goaway(&mut raw, FLOW_CONTROL_ERROR, "INITIAL_WINDOW_SIZE 2^31");
    })
    .await;
}

/// §6.5.2: SETTINGS_ENABLE_PUSH other than 0 or 1 is a connection error
/// PROTOCOL_ERROR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enable_push_of_two_is_goaway_protocol_error() {
    case(|addr| {
        let mut raw = Raw::connect(addr);
        raw.send(&frame(
            SETTINGS,
            0,
            0,
            &settings(&[(SETTINGS_ENABLE_PUSH, 2)]),
        ));
        assert_goaway(&mut raw, PROTOCOL_ERROR, "ENABLE_PUSH 2");
    })
    .await;
}

/// §6.9: WINDOW_UPDATE with an increment of 0 on a stream is a stream error
/// PROTOCOL_ERROR (RST_STREAM; a GOAWAY PROTOCOL_ERROR is also allowed), on
/// stream 0 a connection error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_update_of_zero_is_a_protocol_error() {
    case(|addr| {
        let mut raw = Raw::connect(addr);
        // Stream 1 stays open: its upstream never answers.
        let head = block(&get_headers("/hang/1"));
        let mut bytes = frame(HEADERS, END_HEADERS | END_STREAM, 1, &head);
        bytes.extend(frame(WINDOW_UPDATE, 0, 1, &0u32.to_be_bytes()));
        raw.send(&bytes);
        let answer = raw.answer();
        assert!(
            matches!(
                answer,
                Answer::Reset(1, PROTOCOL_ERROR) | Answer::GoAway(PROTOCOL_ERROR)
            ),
            "WINDOW_UPDATE 0 on stream 1: want RST_STREAM or GOAWAY PROTOCOL_ERROR, got {answer:?}"
        );
        let mut raw = Raw::connect(addr);
        raw.send(&frame(WINDOW_UPDATE, 0, 0, &0u32.to_be_bytes()));
        assert_goaway(&mut raw, PROTOCOL_ERROR, "WINDOW_UPDATE 0 on stream 0");
    })
    .await;
}

/// §6.7: a PING is answered with a PING ACK carrying the same payload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_is_answered_with_the_same_payload() {
    case(|addr| {
        let mut raw = Raw::connect(addr);
        let payload = *b"sw1tchy!";
        raw.send(&frame(PING, 0, 0, &payload));
        let pong = raw.wait_for(|f| f.ty == PING);
        assert_eq!(
            pong,
            Some(Frame {
                ty: PING,
                flags: ACK,
                stream: 0,
                payload: payload.to_vec()
            }),
            "frames before: {:?}",
            raw.seen
        );
    })
    .await;
}

/// §6.7: a PING whose length is not 8 is a connection error FRAME_SIZE_ERROR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_of_the_wrong_length_is_goaway_frame_size_error() {
    case(|addr| {
        let mut raw = Raw::connect(addr);
        raw.send(&frame(PING, 0, 0, b"short"));
        assert_goaway(&mut raw, FRAME_SIZE_ERROR, "PING of 5 octets");
    })
    .await;
}

/// §8.2.1: a field name with uppercase characters makes the request
/// malformed: a stream error PROTOCOL_ERROR (§8.1.1), which an endpoint may
/// also treat as a connection error (§5.4): RST_STREAM or GOAWAY, both
/// PROTOCOL_ERROR. (The `h2` crate answers GOAWAY: its HPACK decoder rejects
/// the name before the request is looked at.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uppercase_header_name_is_a_protocol_error() {
    case(|addr| {
        let mut raw = Raw::connect(addr);
        let mut headers = get_headers("/");
        headers.push(("X-Upper", "1".to_owned()));
        raw.send(&frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            1,
            &block(&headers),
        ));
        let answer = raw.answer();
        assert!(
            matches!(
                answer,
                Answer::Reset(1, PROTOCOL_ERROR) | Answer::GoAway(PROTOCOL_ERROR)
            ),
            "uppercase field name: want RST_STREAM or GOAWAY PROTOCOL_ERROR, got {answer:?}; frames before: {:?}",
            raw.seen
        );
        // Never a response to a malformed request (§8.1.1).
        assert!(
            !raw.seen.iter().any(|f| f.ty == HEADERS),
            "a response to a malformed request: {:?}",
            raw.seen
        );
    })
    .await;
}

/// §8.2.2: a connection-specific field (`connection`) makes the request
/// malformed: a stream error PROTOCOL_ERROR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_specific_header_is_rst_stream_protocol_error() {
    case(|addr| {
        let mut raw = Raw::connect(addr);
        let mut headers = get_headers("/");
        headers.push(("connection", "keep-alive".to_owned()));
        raw.send(&frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            1,
            &block(&headers),
        ));
        let answer = raw.answer();
        assert_eq!(
            answer,
            Answer::Reset(1, PROTOCOL_ERROR),
            "connection: keep-alive: frames before: {:?}",
            raw.seen
        );
    })
    .await;
}

/// §8.3.1: a request without `:path` is malformed: a stream error
/// PROTOCOL_ERROR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_path_is_rst_stream_protocol_error() {
    case(|addr| {
        let mut raw = Raw::connect(addr);
        let headers: Vec<_> = get_headers("/")
            .into_iter()
            .filter(|(n, _)| *n != ":path")
            .collect();
        raw.send(&frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            1,
            &block(&headers),
        ));
        let answer = raw.answer();
        assert_eq!(
            answer,
            Answer::Reset(1, PROTOCOL_ERROR),
            "no :path: frames before: {:?}",
            raw.seen
        );
    })
    .await;
}

/// §6.10: a CONTINUATION not preceded by HEADERS (or PUSH_PROMISE or
/// CONTINUATION) without END_HEADERS is a connection error PROTOCOL_ERROR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuation_without_headers_is_goaway_protocol_error() {
    case(|addr| {
        let mut raw = Raw::connect(addr);
        let head = block(&get_headers("/"));
        raw.send(&frame(CONTINUATION, END_HEADERS, 1, &head));
        assert_goaway(&mut raw, PROTOCOL_ERROR, "CONTINUATION on an idle stream");
    })
    .await;
}

/// §5.3.1: a stream that depends on itself (PRIORITY) is a stream error
/// PROTOCOL_ERROR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_depending_on_itself_is_rst_stream_protocol_error() {
    case(|addr| {
        let mut raw = Raw::connect(addr);
        let mut payload = 3u32.to_be_bytes().to_vec();
        payload.push(16);
        raw.send(&frame(PRIORITY, 0, 3, &payload));
        let answer = raw.answer();
        assert!(
            matches!(
                answer,
                Answer::Reset(3, PROTOCOL_ERROR) | Answer::GoAway(PROTOCOL_ERROR)
            ),
            "PRIORITY on stream 3 depending on 3: got {answer:?}; frames before: {:?}",
            raw.seen
        );
    })
    .await;
}

/// §5.1.2: the gateway advertises SETTINGS_MAX_CONCURRENT_STREAMS; a stream
/// opened beyond it is refused (RST_STREAM REFUSED_STREAM) and the
/// connection goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_above_max_concurrent_streams_are_refused() {
    case(|addr| {
        let mut raw = Raw::connect(addr);
        let max = raw
            .server_settings
            .iter()
            .find(|(id, _)| *id == SETTINGS_MAX_CONCURRENT_STREAMS)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| {
                panic!(
                    "the gateway advertises no MAX_CONCURRENT_STREAMS: {:?}",
                    raw.server_settings
                )
            });
        assert!((1..=10_000).contains(&max), "MAX_CONCURRENT_STREAMS {max}");
        // `max` streams that stay open (their upstream never answers), then one more,
        // all in one write.
        let mut bytes = Vec::new();
        for i in 0..=max {
            let head = block(&get_headers(&format!("/hang/{i}")));
            bytes.extend(frame(HEADERS, END_HEADERS | END_STREAM, 2 * i + 1, &head));
        }
        raw.send(&bytes);
        let over = 2 * max + 1;
        let answer = raw.answer();
        assert_eq!(
            answer,
            Answer::Reset(over, REFUSED_STREAM),
            "stream {over} (number {} of {max} allowed)",
            max + 1
        );
        // The connection still works: PING is answered.
        raw.send(&frame(PING, 0, 0, b"still ok"));
        let pong = raw.wait_for(|f| f.ty == PING || f.ty == GOAWAY);
        assert!(
            pong.as_ref()
                .is_some_and(|f| f.ty == PING && f.flags == ACK && f.payload == b"still ok"),
            "after the refused stream: {pong:?}"
        );
    })
    .await;
}

/// Many violations on many connections at once leave a fresh connection's
/// requests unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_normal_get_works_while_other_connections_misbehave() {
    let s = setup();
    let addr = s.gw.addr();
    let bad = tokio::task::spawn_blocking(move || {
        let mut conns = Vec::new();
        for i in 0..20u32 {
            let mut raw = Raw::connect(addr);
            match i % 4 {
                0 => raw.send(&frame(DATA, 0, 0, b"x")),
                1 => raw.send(&frame(SETTINGS, 0, 0, &[1])),
                2 => raw.send(&frame(CONTINUATION, END_HEADERS, 1, &[])),
                _ => raw.send(&frame(HEADERS, END_HEADERS, 2, &block(&get_headers("/")))),
            }
            conns.push(raw);
        }
        for mut raw in conns {
            assert!(matches!(raw.answer(), Answer::GoAway(_)));
        }
    });
    for i in 0..10 {
        let (status, body) = h2_get(addr, &format!("/ok/{i}")).await;
        assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"ok"[..]));
    }
    bad.await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    assert_still_serves(&s).await;
}
