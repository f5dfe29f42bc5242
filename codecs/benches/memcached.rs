//! memcached decode throughput: a pipeline of 1000 `set`s (32-byte values),
//! of 1000 `get`s and of 1000 `mg`s through the request decoder; a
//! 100-key `get` reply through the reply decoder and the `VALUE` walker
//! that merges split multi-gets.
use std::hint::black_box;

use bytes::BytesMut;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use switchyard_codecs::Decoder;
use switchyard_codecs::memcached::{ReplyDecoder, RequestDecoder, values};

fn pipeline(line: impl Fn(usize) -> String) -> Vec<u8> {
    (0..1000).flat_map(|i| line(i).into_bytes()).collect()
}

fn drain<D: Decoder>(mut dec: D, mut buf: BytesMut) -> usize {
    let mut n = 0;
    while let Ok(Some(item)) = dec.decode(&mut buf) {
        black_box(&item);
        n += 1;
    }
    assert!(buf.is_empty(), "input did not decode completely");
    n
}

fn requests(c: &mut Criterion) {
    let mut group = c.benchmark_group("memcached/request");
    let inputs = [
        (
            "set",
            pipeline(|i| format!("set key:{i:08} 0 0 32\r\n{:032}\r\n", i)),
        ),
        ("get", pipeline(|i| format!("get key:{i:08}\r\n"))),
        ("mg", pipeline(|i| format!("mg key:{i:08} v f t\r\n"))),
    ];
    for (name, input) in &inputs {
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.bench_function(*name, |b| {
            b.iter_batched(
                || BytesMut::from(&input[..]),
                |buf| drain(RequestDecoder::default(), buf),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn replies(c: &mut Criterion) {
    let mut group = c.benchmark_group("memcached/reply");
    let mut input: Vec<u8> = (0..100)
        .flat_map(|i| format!("VALUE key:{i:08} 0 32\r\n{:032}\r\n", i).into_bytes())
        .collect();
    input.extend_from_slice(b"END\r\n");
    group.throughput(Throughput::Bytes(input.len() as u64));
    group.bench_function("get-100-values", |b| {
        b.iter_batched(
            || BytesMut::from(&input[..]),
            |buf| drain(ReplyDecoder::default(), buf),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("values-walk-100", |b| {
        b.iter(|| values(black_box(&input)).count())
    });
    group.finish();
}

criterion_group!(benches, requests, replies);
criterion_main!(benches);
