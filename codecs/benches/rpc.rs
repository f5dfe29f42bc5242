//! Dubbo and Bolt decode throughput over the captured client streams, the
//! lazy Dubbo invocation parse of one request, and Hessian 2 `skip` over a
//! Java-made object graph.
use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use switchyard_codecs::dubbo::Frame;
use switchyard_codecs::{Decoder, bolt, dubbo, hessian2};

fn vector(path: &str) -> Vec<u8> {
    let path = format!("{}/../../shared/vectors/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

/// Decode `buf` to the end; returns the number of frames.
fn drain<D: Decoder>(mut dec: D, mut buf: BytesMut) -> usize {
    let mut n = 0;
    while let Ok(Some(item)) = dec.decode(&mut buf) {
        black_box(&item);
        n += 1;
    }
    assert!(buf.is_empty(), "input did not decode completely");
    n
}

fn dubbo_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("dubbo/decode");
    for name in [
        "node-client-pipelined.c2s",
        "node-client-error-heartbeat.c2s",
        "python-dubbo-ssl-client.c2s",
    ] {
        let input = vector(&format!("dubbo/{name}.bin"));
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.bench_function(name, |b| {
            b.iter_batched(
                || BytesMut::from(&input[..]),
                |buf| drain(dubbo::Decoder::default(), buf),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn dubbo_invocation(c: &mut Criterion) {
    let mut group = c.benchmark_group("dubbo/invocation");
    for (name, index) in [
        ("node-client-pipelined.c2s#echo", 1),
        ("python-dubbo-ssl-client.c2s#plus", 0),
    ] {
        let file = name.split('#').next().unwrap_or(name);
        let mut buf = BytesMut::from(&vector(&format!("dubbo/{file}.bin"))[..]);
        let mut dec = dubbo::Decoder::default();
        let frames: Vec<Frame> =
            std::iter::from_fn(|| dec.decode(&mut buf).ok().flatten()).collect();
        let frame = frames[index].clone();
        group.throughput(Throughput::Bytes(frame.wire().len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                let inv = frame.parse_invocation().unwrap().unwrap();
                black_box(inv.method().len() + inv.attachments().len())
            })
        });
    }
    group.finish();
}

fn bolt_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("bolt/decode");
    for name in [
        "v1-node-client-pipelined.c2s",
        "v1-node-client-error-heartbeat.c2s",
        "v1-protobuf-anthunder-client.c2s",
        "v2-crc-node-client.c2s",
        "java-v2-crc-response-sofaresponse",
    ] {
        let input = vector(&format!("bolt/{name}.bin"));
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.bench_function(name, |b| {
            b.iter_batched(
                || BytesMut::from(&input[..]),
                |buf| drain(bolt::Decoder::default(), buf),
                BatchSize::SmallInput,
            )
        });
    }
    // Header map lookup (Service + RpcMethod) of the anthunder request.
    let mut buf = BytesMut::from(&vector("bolt/v1-protobuf-anthunder-client.c2s.bin")[..]);
    let frame = bolt::Decoder::default().decode(&mut buf).unwrap().unwrap();
    group.throughput(Throughput::Bytes(frame.header().len() as u64));
    group.bench_function("header-map-lookup", |b| {
        use switchyard_codecs::{Field, Metadata};
        b.iter(|| {
            black_box(frame.get(&Field::Service));
            black_box(frame.get(&Field::RpcMethod))
        })
    });
    group.finish();
}

fn hessian2_skip(c: &mut Criterion) {
    let mut group = c.benchmark_group("hessian2/skip");
    for name in [
        "exception/UndeclaredThrowableException",
        "map/car_list",
        "string/large_string_32768",
    ] {
        let input = Bytes::from(vector(&format!("hessian2/{name}.bin")));
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| hessian2::skip(black_box(&input), &hessian2::Limits::default()).unwrap())
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    dubbo_decode,
    dubbo_invocation,
    bolt_decode,
    hessian2_skip
);
criterion_main!(benches);
