//! Decodes one benchmark input `ITERATIONS` times, for instruction counts under
//! `valgrind --tool=callgrind` (repeatable on a loaded machine, unlike
//! wall-clock figures). The inputs are the criterion benches' inputs.
//!
//! ```text
//! cargo build --release -p switchyard-codecs --example decode_loop
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/decode_loop redis-set 1000
//! ```
//!
//! Run it with two iteration counts and divide the difference by the
//! difference in decodes (printed) to get instructions per decode without the
//! set-up (reading the vectors, building the synthetic inputs).
use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use switchyard_codecs::Decoder;
use switchyard_codecs::{mqtt, proxy_protocol as pp, redis, rtsp};

fn read(path: &str) -> Vec<u8> {
    let path = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

fn vector(path: &str) -> Vec<u8> {
    read(&format!("../../shared/vectors/{path}"))
}

fn array_of_bulks(n: usize) -> Vec<u8> {
    let mut out = format!("*{n}\r\n").into_bytes();
    for i in 0..n {
        out.extend_from_slice(format!("$16\r\nvalue-{i:010}\r\n").as_bytes());
    }
    out
}

fn publishes(n: usize, v5: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        let topic = format!("sensors/{:02}/temp", i % 16);
        let mut body = Vec::new();
        body.extend_from_slice(&(topic.len() as u16).to_be_bytes());
        body.extend_from_slice(topic.as_bytes());
        body.extend_from_slice(&((i % 65_535) as u16 + 1).to_be_bytes());
        if v5 {
            let prop = b"\x26\x00\x04unit\x00\x01C";
            body.push(prop.len() as u8);
            body.extend_from_slice(prop);
        }
        body.extend((0..64u8).map(|b| b.wrapping_add(i as u8)));
        out.push(0x32);
        out.push(body.len() as u8);
        out.extend_from_slice(&body);
    }
    out
}

fn interleaved_frames() -> Vec<u8> {
    let mut frames = BytesMut::new();
    for i in 0..1000u32 {
        let mut rtp = vec![0x80, 96];
        rtp.extend_from_slice(&(i as u16).to_be_bytes());
        rtp.resize(1400, (i % 251) as u8);
        rtsp::write_interleaved(&mut frames, (i % 2 * 2) as u8, &rtp).expect("frame fits");
    }
    frames.to_vec()
}

fn v2_with_tlvs() -> Vec<u8> {
    let addresses = pp::Addresses::Inet {
        source: "203.0.113.7:40000".parse().expect("address"),
        destination: "10.0.0.1:443".parse().expect("address"),
    };
    let tlvs = [
        pp::Tlv {
            kind: pp::tlv::ALPN,
            value: Bytes::from_static(b"h2"),
        },
        pp::Tlv {
            kind: pp::tlv::AUTHORITY,
            value: Bytes::from_static(b"api.example.com"),
        },
        pp::Tlv {
            kind: pp::tlv::UNIQUE_ID,
            value: Bytes::from(vec![7u8; 32]),
        },
    ];
    let mut out = BytesMut::new();
    pp::write_v2(
        &mut out,
        pp::Command::Proxy,
        pp::Transport::Stream,
        &addresses,
        &tlvs,
    )
    .expect("header fits");
    out.to_vec()
}

/// Decodes `input` to the end with a fresh decoder; returns the decodes.
fn drain<D: Decoder>(mut dec: D, input: &[u8]) -> usize {
    let mut buf = BytesMut::from(input);
    let mut n = 0;
    while let Ok(Some(item)) = dec.decode(&mut buf) {
        black_box(&item);
        n += 1;
    }
    assert!(buf.is_empty(), "input did not decode completely");
    n
}

const CASES: &[&str] = &[
    "redis-set",
    "redis-get",
    "redis-mset",
    "redis-resp3-all-types",
    "redis-array-1000-bulk",
    "mqtt-paho-v5-session",
    "mqtt-publish-v311",
    "mqtt-publish-v5",
    "rtsp-ffprobe-session",
    "rtsp-interleaved",
    "pp-v1",
    "pp-v2",
    "pp-v2-tlvs",
];

fn main() {
    let mut args = std::env::args().skip(1);
    let case = args.next().unwrap_or_default();
    let iterations: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(1);
    let input = match case.as_str() {
        "redis-set" => vector("redis/benchmark-pipeline-set.c2s.bin"),
        "redis-get" => vector("redis/benchmark-pipeline-get.c2s.bin"),
        "redis-mset" => vector("redis/benchmark-pipeline-mset.c2s.bin"),
        "redis-resp3-all-types" => vector("redis/nc-resp3-all-types.s2c.bin"),
        "redis-array-1000-bulk" => array_of_bulks(1000),
        "mqtt-paho-v5-session" => vector("mqtt/v5-paho-python-full-session.c2s.bin"),
        "mqtt-publish-v311" => publishes(1000, false),
        "mqtt-publish-v5" => publishes(1000, true),
        "rtsp-ffprobe-session" => vector("rtsp/ffprobe-tcp-interleaved.s2c.bin"),
        "rtsp-interleaved" => interleaved_frames(),
        "pp-v1" => read("../fuzz/seeds/proxy_protocol/haproxy-send-proxy.c2s.bin"),
        "pp-v2" => read("../fuzz/seeds/proxy_protocol/haproxy-send-proxy-v2.c2s.bin"),
        "pp-v2-tlvs" => v2_with_tlvs(),
        _ => {
            eprintln!("usage: decode_loop CASE [ITERATIONS]; CASE is one of {CASES:?}");
            std::process::exit(2);
        }
    };
    let mut decodes = 0;
    for _ in 0..iterations {
        decodes += match case.split('-').next() {
            Some("redis") if case.contains("resp3") || case.contains("array") => {
                drain(redis::ReplyDecoder::default(), &input)
            }
            Some("redis") => drain(redis::CommandDecoder::default(), &input),
            Some("mqtt") if case.ends_with("v5") => drain(
                mqtt::Decoder::with_version(mqtt::Limits::default(), mqtt::Version::V5),
                &input,
            ),
            Some("mqtt") if case.ends_with("v311") => drain(
                mqtt::Decoder::with_version(mqtt::Limits::default(), mqtt::Version::V311),
                &input,
            ),
            Some("mqtt") => drain(mqtt::Decoder::default(), &input),
            Some("rtsp") => drain(rtsp::MessageDecoder::default(), &input),
            _ => {
                let mut buf = BytesMut::from(&input[..]);
                let header = pp::decode(&mut buf, &pp::Limits::default());
                black_box(header.expect("valid header").expect("complete header"));
                1
            }
        };
    }
    println!("{case}: {decodes} decodes");
}
