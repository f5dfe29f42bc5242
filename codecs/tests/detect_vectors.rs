//! Detection over the captured client streams in `shared/vectors`: each
//! protocol's `*.c2s.bin` is recognised with every protocol enabled, and fed
//! byte by byte it stays `NeedMore` until the match, never a wrong verdict.
use std::path::{Path, PathBuf};

use switchyard_codecs::{Protocol, Verdict, sniff};

fn vectors_dir() -> PathBuf {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/vectors"));
    assert!(
        dir.is_dir(),
        "test vectors not found at {}: the shared/ folder must sit beside the repository",
        dir.display()
    );
    dir.to_path_buf()
}

/// Every client stream of one protocol, by file name.
fn client_streams(proto: &str) -> Vec<(String, Vec<u8>)> {
    let dir = vectors_dir().join(proto);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".c2s.bin"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no *.c2s.bin in {}", dir.display());
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (
                format!("{proto}/{}", p.file_name().unwrap().to_string_lossy()),
                bytes,
            )
        })
        .collect()
}

/// How many bytes past the first match are re-checked (the verdict must hold).
const AFTER_MATCH: usize = 64;

/// Feed `bytes` prefix by prefix: `NeedMore` until the first `Match(expected)`,
/// which must hold for longer prefixes and for the whole stream.
fn assert_detected(name: &str, bytes: &[u8], expected: Protocol, enabled: &[Protocol]) {
    let mut matched_at = None;
    for n in 0..=bytes.len() {
        match sniff(&bytes[..n], enabled) {
            Verdict::NeedMore => {}
            Verdict::Match(p) if p == expected => {
                matched_at = Some(n);
                break;
            }
            other => panic!(
                "{name}: after {n} bytes {other:?} (expected NeedMore then Match({expected:?})); prefix {:?}",
                String::from_utf8_lossy(&bytes[..n])
            ),
        }
    }
    let at = matched_at.unwrap_or_else(|| panic!("{name}: never matched {expected:?}"));
    for n in (at..=bytes.len()).take(AFTER_MATCH).chain([bytes.len()]) {
        assert_eq!(
            sniff(&bytes[..n], enabled),
            Verdict::Match(expected),
            "{name}: verdict changed after {n} bytes"
        );
    }
}

fn check_protocol(dir: &str, expected: Protocol) {
    for (name, bytes) in client_streams(dir) {
        assert_detected(&name, &bytes, expected, &Protocol::ALL);
        // Alone, too.
        assert_detected(&name, &bytes, expected, &[expected]);
    }
}

#[test]
fn http1_vectors() {
    check_protocol("http1", Protocol::Http1);
}

#[test]
fn http2_vectors() {
    check_protocol("http2", Protocol::Http2);
}

#[test]
fn redis_vectors() {
    check_protocol("redis", Protocol::Redis);
}

#[test]
fn mqtt_vectors() {
    check_protocol("mqtt", Protocol::Mqtt);
}

#[test]
fn dubbo_vectors() {
    check_protocol("dubbo", Protocol::Dubbo);
}

#[test]
fn bolt_vectors() {
    check_protocol("bolt", Protocol::Bolt);
}

#[test]
fn rtsp_vectors() {
    check_protocol("rtsp", Protocol::Rtsp);
}

#[test]
fn tls_vectors() {
    check_protocol("tls", Protocol::Tls);
}

/// MySQL's server speaks first: its client's first bytes (a reply to the
/// greeting) must not be taken for anything else.
#[test]
fn mysql_vectors_match_nothing() {
    for (name, bytes) in client_streams("mysql") {
        for n in 0..=bytes.len() {
            let verdict = sniff(&bytes[..n], &Protocol::ALL);
            assert!(
                matches!(verdict, Verdict::NeedMore | Verdict::Reject),
                "{name}: after {n} bytes {verdict:?}"
            );
        }
        assert_eq!(sniff(&bytes, &[Protocol::Mysql]), Verdict::Reject);
    }
}

/// The server side of every session must not be taken for a client of
/// another protocol either, where it starts like one (e.g. a Redis `+OK`).
#[test]
fn server_streams_are_not_misdetected_as_redis_commands() {
    for name in ["redis/nc-inline.s2c.bin", "redis/cli-resp3-session.s2c.bin"] {
        let bytes = std::fs::read(vectors_dir().join(name)).unwrap();
        assert_eq!(sniff(&bytes, &[Protocol::Redis]), Verdict::Reject, "{name}");
    }
}

#[test]
fn look_alikes() {
    use Protocol::*;
    let all = &Protocol::ALL;
    // Redis inline commands vs HTTP/1 and RTSP request lines.
    assert_detected("inline PING", b"PING\r\n", Redis, all);
    assert_detected("inline GET", b"GET key\r\n", Redis, all);
    assert_detected("inline GET, LF only", b"GET key\n", Redis, all);
    assert_detected(
        "inline SET quoted",
        b"SET k \"GET / HTTP/1.1\"\r\n",
        Redis,
        all,
    );
    assert_detected("inline OPTIONS", b"OPTIONS\r\n", Redis, all);
    assert_detected("HTTP GET", b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", Http1, all);
    assert_detected(
        "HTTP GET 1.0",
        b"GET /index.html HTTP/1.0\r\n\r\n",
        Http1,
        all,
    );
    assert_detected(
        "RTSP OPTIONS *",
        b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n",
        Rtsp,
        all,
    );
    assert_detected(
        "RTSP/2.0",
        b"OPTIONS * RTSP/2.0\r\nCSeq: 1\r\n\r\n",
        Rtsp,
        all,
    );
    assert_detected(
        "HTTP OPTIONS *",
        b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
        Http1,
        all,
    );
    assert_detected(
        "h2 preface",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        Http2,
        all,
    );
    // With only Redis enabled, HTTP and RTSP lines are refused at their line end.
    for line in [
        &b"GET / HTTP/1.1\r\n"[..],
        b"OPTIONS rtsp://h/ RTSP/1.0\r\n",
        b"PRI * HTTP/2.0\r\n",
    ] {
        assert_eq!(sniff(line, &[Redis]), Verdict::Reject);
        assert_eq!(sniff(&line[..line.len() - 2], &[Redis]), Verdict::NeedMore);
    }
    // TLS vs the rest: three bytes decide.
    let hello = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01];
    assert_detected("TLS", &hello, Tls, all);
    assert_eq!(
        sniff(
            &hello,
            &[Redis, Http1, Http2, Mqtt, Dubbo, Bolt, Rtsp, Mysql]
        ),
        Verdict::Reject
    );
    assert_eq!(sniff(&[0x16, 0x03, 0x09], all), Verdict::Reject);
    // Binary protocols refuse text at once, and each other's magic.
    let binary = [Tls, Http2, Dubbo, Bolt, Mqtt, Mysql];
    assert_eq!(sniff(b"G", &binary), Verdict::Reject);
    assert_eq!(sniff(b"*", &binary), Verdict::Reject);
    assert_eq!(
        sniff(
            &[0xda, 0xbb, 0xc2],
            &[Tls, Http2, Bolt, Mqtt, Redis, Rtsp, Mysql]
        ),
        Verdict::Reject
    );
    assert_eq!(sniff(&[0x10, 0x19, 0x00, 0x04], all), Verdict::NeedMore);
    assert_eq!(sniff(b"\x10\x19\x00\x04MQTT", all), Verdict::Match(Mqtt));
    // Random bytes are refused by everyone at once.
    for first in [0x00u8, 0x03, 0x7f, 0x80, 0xff, b' '] {
        assert_eq!(sniff(&[first], all), Verdict::Reject, "{first:#x}");
    }
}
