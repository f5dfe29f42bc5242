//! Decode one bench input N times, for instruction counts that do not care
//! about machine load:
//!
//! ```text
//! cargo build --release -p switchyard-codecs --example decode_loop
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/decode_loop bolt/v1-node-client-pipelined.c2s 1000
//! ```
//!
//! Instructions per decode = (Ir with N - Ir with 0) / N. The cases are the
//! inputs of `benches/rpc.rs`, `benches/mysql.rs` and `benches/http1.rs`;
//! `list` prints them.
use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use switchyard_codecs::mysql::response::Expect;
use switchyard_codecs::mysql::{self, PacketDecoder, ResponseState, Step, put_lenenc_str};
use switchyard_codecs::{Decoder, bolt, dubbo, hessian2, http1};

fn vector(path: &str) -> Vec<u8> {
    let path = format!("{}/../../shared/vectors/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
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
        {
            println!("{c}");
        }
        return;
    }
    let (group, name) = case.split_once('/').expect("case is group/name");
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
