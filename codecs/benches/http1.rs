//! HTTP/1 decode throughput: the captured keep-alive GET stream (two
//! pipelined request heads) and a synthetic request with a 64 KiB chunked body.
use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use switchyard_codecs::Decoder;
use switchyard_codecs::http1::RequestDecoder;

const KEEPALIVE_GET: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/vectors/http1/keepalive-get.c2s.bin"
);

/// A POST with a 64 KiB body in 4 KiB chunks (with an extension on each).
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

/// Decode `input` to the end; returns the number of parts.
fn decode_all(input: &Bytes) -> usize {
    let mut dec = RequestDecoder::default();
    let mut buf = BytesMut::from(&input[..]);
    let mut parts = 0;
    while let Ok(Some(part)) = dec.decode(&mut buf) {
        black_box(&part);
        parts += 1;
    }
    assert!(buf.is_empty(), "input did not decode completely");
    parts
}

fn bench(c: &mut Criterion) {
    let keepalive = Bytes::from(std::fs::read(KEEPALIVE_GET).unwrap_or_else(|e| {
        panic!(
            "reading {KEEPALIVE_GET}: {e} (the shared/ vectors folder must sit beside the clone)"
        )
    }));
    let chunked = Bytes::from(chunked_64k());
    let mut group = c.benchmark_group("http1");
    group.throughput(Throughput::Bytes(keepalive.len() as u64));
    group.bench_function("decode keepalive-get requests", |b| {
        b.iter(|| decode_all(black_box(&keepalive)))
    });
    group.throughput(Throughput::Bytes(chunked.len() as u64));
    group.bench_function("decode 64KiB chunked request", |b| {
        b.iter(|| decode_all(black_box(&chunked)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
