//! Redis decode throughput: the captured redis-benchmark pipelines (SET, GET,
//! MSET) through the command decoder; the RESP3 all-types session and a
//! synthetic 1000-element array of bulk strings through the reply decoder.
use std::hint::black_box;

use bytes::BytesMut;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use switchyard_codecs::Decoder;
use switchyard_codecs::redis::{CommandDecoder, ReplyDecoder};

fn vector(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../../shared/vectors/redis/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

/// `*1000` of 16-byte bulk strings, as an MGET/LRANGE reply.
fn array_of_bulks(n: usize) -> Vec<u8> {
    let mut out = format!("*{n}\r\n").into_bytes();
    for i in 0..n {
        out.extend_from_slice(format!("$16\r\nvalue-{i:010}\r\n").as_bytes());
    }
    out
}

/// Decode `buf` to the end; returns the number of items.
fn drain<D: Decoder>(mut dec: D, mut buf: BytesMut) -> usize {
    let mut n = 0;
    while let Ok(Some(item)) = dec.decode(&mut buf) {
        black_box(&item);
        n += 1;
    }
    assert!(buf.is_empty(), "input did not decode completely");
    n
}

fn commands(c: &mut Criterion) {
    let mut group = c.benchmark_group("redis/command");
    for name in [
        "benchmark-pipeline-set",
        "benchmark-pipeline-get",
        "benchmark-pipeline-mset",
    ] {
        let input = vector(&format!("{name}.c2s.bin"));
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.bench_function(name, |b| {
            b.iter_batched(
                || BytesMut::from(&input[..]),
                |buf| drain(CommandDecoder::default(), buf),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn replies(c: &mut Criterion) {
    let mut group = c.benchmark_group("redis/reply");
    let inputs = [
        ("nc-resp3-all-types", vector("nc-resp3-all-types.s2c.bin")),
        ("array-1000-bulk", array_of_bulks(1000)),
    ];
    for (name, input) in &inputs {
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.bench_function(*name, |b| {
            b.iter_batched(
                || BytesMut::from(&input[..]),
                |buf| drain(ReplyDecoder::default(), buf),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

/// Sharding's per-key cost: the hash tag and CRC16 slot of typical keys, and
/// splitting a 10-key MGET reply into its elements (the merge step).
fn sharding(c: &mut Criterion) {
    use switchyard_codecs::redis::{Limits, array_elements, key_slot};
    let keys: Vec<String> = (0..1000)
        .map(|i| match i % 2 {
            0 => format!("key:{i:012}"),
            _ => format!("{{user:{i}}}.profile"),
        })
        .collect();
    let mut group = c.benchmark_group("redis/sharding");
    group.throughput(Throughput::Elements(keys.len() as u64));
    group.bench_function("key_slot_1000_keys", |b| {
        b.iter(|| {
            keys.iter()
                .map(|k| usize::from(key_slot(k.as_bytes())))
                .sum::<usize>()
        })
    });
    let mut reply = b"*10\r\n".to_vec();
    for i in 0..10 {
        reply.extend_from_slice(format!("$10\r\nvalue:{i:04}\r\n").as_bytes());
    }
    let reply = bytes::Bytes::from(reply);
    group.throughput(Throughput::Elements(1));
    group.bench_function("array_elements_mget10", |b| {
        b.iter(|| array_elements(&reply, Limits::default()).map_or(0, |e| e.len()))
    });
    group.finish();
}

criterion_group!(benches, commands, replies, sharding);
criterion_main!(benches);
