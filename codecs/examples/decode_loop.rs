//! Decode one bench input N times, for instruction counts that do not care
//! about machine load (`valgrind --tool=callgrind`; repeatable on a loaded
//! machine, unlike wall-clock figures):
//!
//! ```text
//! cargo build --release -p switchyard-codecs --example decode_loop
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/decode_loop bolt/v1-node-client-pipelined.c2s 1000
//! ```
//!
//! Instructions per decode = (Ir with N - Ir with 0) / N. The cases are the
//! inputs of `benches/rpc.rs`, `benches/mysql.rs`, `benches/http1.rs` (cases
//! named `group/name`) and of the Redis, MQTT, RTSP and PROXY protocol
//! benches (cases without a `/`, e.g. `redis-set`); `list` prints them.
use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use switchyard_codecs::mysql::response::Expect;
use switchyard_codecs::mysql::{self, PacketDecoder, ResponseState, Step, put_lenenc_str};
use switchyard_codecs::{Decoder, bolt, dubbo, hessian2, http1};
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

/// As `benches/mysql.rs`: a 2-column text result set of `rows` rows.
fn result_set(rows: usize) -> Vec<u8> {
    let mut out = mysql::packet(1, &[2]).to_vec();
    let mut seq = 2u8;
    let mut push = |payload: &[u8], out: &mut Vec<u8>| {
        out.extend_from_slice(&mysql::packet(seq, payload));
        seq = seq.wrapping_add(1);
    };
    for name in ["id", "c"] {
        let mut col = BytesMut::new();
        for s in ["def", "sbtest", "sbtest1", "sbtest1", name, name] {
            put_lenenc_str(&mut col, s.as_bytes());
        }
        col.extend_from_slice(&[0x0c, 0x21, 0, 0, 1, 0, 0xfd, 0, 0, 0, 0, 0]);
        push(&col, &mut out);
    }
    for i in 0..rows {
        let mut row = BytesMut::new();
        put_lenenc_str(&mut row, i.to_string().as_bytes());
        put_lenenc_str(&mut row, format!("{i:0>119}").as_bytes());
        push(&row, &mut out);
    }
    push(&[0xFE, 0, 0, 2, 0, 0, 0], &mut out);
    out
}

fn mysql_walk(input: &[u8]) -> usize {
    let mut buf = BytesMut::from(input);
    let mut dec = PacketDecoder::new(mysql::Limits::default());
    let mut state = ResponseState::new(Expect::ResultSet, true);
    let mut n = 0;
    while let Ok(Some(p)) = dec.decode(&mut buf) {
        if let Ok(Step::Done(_)) | Err(_) = state.feed(&p) {
            state = ResponseState::new(Expect::ResultSet, true);
        }
        black_box(&p);
        n += 1;
    }
    n
}

/// As `benches/http1.rs`: a POST with a 64 KiB body in 4 KiB chunks.
fn chunked_64k() -> Vec<u8> {
    let mut out =
        b"POST /upload HTTP/1.1\r\nHost: bench.test\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    let chunk = vec![b'x'; 4096];
    for _ in 0..16 {
        out.extend_from_slice(b"1000;ext=1\r\n");
        out.extend_from_slice(&chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

const CASES: [&str; 17] = [
    "dubbo/node-client-pipelined.c2s",
    "dubbo/node-client-error-heartbeat.c2s",
    "dubbo/python-dubbo-ssl-client.c2s",
    "dubbo-invocation/node-client-pipelined.c2s#1",
    "dubbo-invocation/python-dubbo-ssl-client.c2s#0",
    "bolt/v1-node-client-pipelined.c2s",
    "bolt/v1-node-client-error-heartbeat.c2s",
    "bolt/v1-protobuf-anthunder-client.c2s",
    "bolt/v2-crc-node-client.c2s",
    "bolt/java-v2-crc-response-sofaresponse",
    "bolt-header-map/v1-protobuf-anthunder-client.c2s",
    "hessian2/exception/UndeclaredThrowableException",
    "hessian2/map/car_list",
    "hessian2/string/large_string_32768",
    "mysql/pymysql-text-multistatement.s2c",
    "mysql/connector-python-prepared-binary.s2c",
    "mysql/result-set-10000-rows",
];

fn main() {
    let mut args = std::env::args().skip(1);
    let case = args.next().unwrap_or_else(|| "list".into());
    let times: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(1);
    if case == "list" {
        for c in CASES
            .iter()
            .chain(&["http1/keepalive-get.c2s", "http1/chunked-64k"])
            .chain(LINE_AND_BINARY_CASES)
        {
            println!("{c}");
        }
        return;
    }
    let Some((group, name)) = case.split_once('/') else {
        let decodes = line_and_binary_case(&case, times);
        println!("{case}: {decodes} decodes");
        return;
    };
    let mut n = 0;
    match group {
        "dubbo" | "bolt" => {
            let input = vector(&format!("{case}.bin"));
            for _ in 0..times {
                n += if group == "dubbo" {
                    drain(dubbo::Decoder::default(), &input)
                } else {
                    drain(bolt::Decoder::default(), &input)
                };
            }
        }
        "dubbo-invocation" => {
            let (file, index) = name.split_once('#').expect("name#index");
            let mut buf = BytesMut::from(&vector(&format!("dubbo/{file}.bin"))[..]);
            let mut dec = dubbo::Decoder::default();
            let frames: Vec<dubbo::Frame> =
                std::iter::from_fn(|| dec.decode(&mut buf).ok().flatten()).collect();
            let frame = &frames[index.parse::<usize>().expect("index")];
            for _ in 0..times {
                let inv = frame.parse_invocation().unwrap().unwrap();
                n += black_box(inv.method().len() + inv.attachments().len());
            }
        }
        "bolt-header-map" => {
            // As `bolt/decode/header-map-lookup`: Service + RpcMethod of one frame.
            use switchyard_codecs::{Field, Metadata};
            let mut buf = BytesMut::from(&vector(&format!("bolt/{name}.bin"))[..]);
            let frame = bolt::Decoder::default().decode(&mut buf).unwrap().unwrap();
            for _ in 0..times {
                n += black_box(frame.get(&Field::Service)).map_or(0, <[u8]>::len);
                n += black_box(frame.get(&Field::RpcMethod)).map_or(0, <[u8]>::len);
            }
        }
        "hessian2" => {
            let input = Bytes::from(vector(&format!("{case}.bin")));
            for _ in 0..times {
                n += hessian2::skip(black_box(&input), &hessian2::Limits::default()).unwrap();
            }
        }
        "mysql" => {
            let input = if name == "result-set-10000-rows" {
                result_set(10_000)
            } else {
                vector(&format!("{case}.bin"))
            };
            for _ in 0..times {
                n += mysql_walk(&input);
            }
        }
        "http1" => {
            let input = if name == "chunked-64k" {
                chunked_64k()
            } else {
                vector(&format!("{case}.bin"))
            };
            for _ in 0..times {
                n += drain(http1::RequestDecoder::default(), &input);
            }
        }
        _ => panic!("unknown case {case}"),
    }
    black_box(n);
}

/// The Redis, MQTT, RTSP and PROXY protocol cases.
const LINE_AND_BINARY_CASES: &[&str] = &[
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

/// Decode one of [`LINE_AND_BINARY_CASES`] `iterations` times; the decodes.
fn line_and_binary_case(case: &str, iterations: usize) -> usize {
    let input = match case {
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
            eprintln!(
                "usage: decode_loop CASE [ITERATIONS]; CASE is one of {CASES:?} or {LINE_AND_BINARY_CASES:?}"
            );
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
    decodes
}
