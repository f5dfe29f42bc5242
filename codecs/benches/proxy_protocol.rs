//! PROXY protocol header throughput: decoding HAProxy's `send-proxy` (v1)
//! and `send-proxy-v2` headers as captured (fuzz/seeds/proxy_protocol/), a
//! v2 header with TLVs (ALPN, authority, unique id), the `start` sniff a
//! listener with `accept: optional` runs on every connection, and encoding
//! both versions (what a cluster with `proxy_protocol` sends per connection).
use std::hint::black_box;
use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use switchyard_codecs::proxy_protocol::{
    self as pp, Addresses, Command, Limits, Tlv, Transport, tlv,
};

fn seed(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../fuzz/seeds/proxy_protocol/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

fn addresses() -> Addresses {
    Addresses::Inet {
        source: "203.0.113.7:40000".parse::<SocketAddr>().unwrap(),
        destination: "10.0.0.1:443".parse::<SocketAddr>().unwrap(),
    }
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("proxy_protocol/decode");
    let mut with_tlvs = BytesMut::new();
    let tlvs = [
        Tlv {
            kind: tlv::ALPN,
            value: Bytes::from_static(b"h2"),
        },
        Tlv {
            kind: tlv::AUTHORITY,
            value: Bytes::from_static(b"api.example.com"),
        },
        Tlv {
            kind: tlv::UNIQUE_ID,
            value: Bytes::from(vec![7u8; 32]),
        },
    ];
    pp::write_v2(
        &mut with_tlvs,
        Command::Proxy,
        Transport::Stream,
        &addresses(),
        &tlvs,
    )
    .unwrap();
    let cases = [
        ("haproxy-send-proxy", seed("haproxy-send-proxy.c2s.bin")),
        (
            "haproxy-send-proxy-v2",
            seed("haproxy-send-proxy-v2.c2s.bin"),
        ),
        ("v2-tcp4-3-tlvs", with_tlvs.to_vec()),
    ];
    for (name, bytes) in cases {
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(name, |b| {
            b.iter_batched(
                || BytesMut::from(&bytes[..]),
                |mut buf| black_box(pp::decode(&mut buf, &Limits::default()).unwrap().unwrap()),
                BatchSize::SmallInput,
            )
        });
    }
    let http = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    group.throughput(Throughput::Elements(1));
    group.bench_function("start-on-plain-http", |b| {
        b.iter(|| black_box(pp::start(black_box(http))))
    });
    group.finish();
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("proxy_protocol/encode");
    group.throughput(Throughput::Elements(1));
    let a = addresses();
    group.bench_function("v1-tcp4", |b| {
        let mut out = BytesMut::with_capacity(128);
        b.iter(|| {
            out.clear();
            pp::write_v1(&mut out, black_box(&a));
            black_box(out.len())
        })
    });
    group.bench_function("v2-tcp4", |b| {
        let mut out = BytesMut::with_capacity(128);
        b.iter(|| {
            out.clear();
            pp::write_v2(
                &mut out,
                Command::Proxy,
                Transport::Stream,
                black_box(&a),
                &[],
            )
            .unwrap();
            black_box(out.len())
        })
    });
    group.finish();
}

criterion_group!(benches, decode, encode);
criterion_main!(benches);
