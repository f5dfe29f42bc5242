//! MQTT decode throughput: the captured paho-mqtt 5 client session (CONNECT
//! with properties, SUBSCRIBE, PUBLISH QoS 0/1/2, acks, UNSUBSCRIBE,
//! DISCONNECT) and a synthetic stream of 1000 QoS 1 PUBLISH packets with
//! 64-byte payloads, in MQTT 3.1.1 and 5 (with a user property); plus the
//! mount-point re-encoding of a PUBLISH.
use std::hint::black_box;

use bytes::BytesMut;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use switchyard_codecs::Decoder as _;
use switchyard_codecs::mqtt::{Decoder, Limits, Version, publish_with_topic, topic};

fn vector(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../../shared/vectors/mqtt/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

/// `n` QoS 1 PUBLISH packets to `sensors/<i % 16>/temp` with 64-byte
/// payloads; MQTT 5 ones carry one user property.
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
        assert!(body.len() < 128);
        out.push(body.len() as u8);
        out.extend_from_slice(&body);
    }
    out
}

/// Decode `buf` to the end; returns the number of packets.
fn drain(mut dec: Decoder, mut buf: BytesMut) -> usize {
    let mut n = 0;
    while let Ok(Some(p)) = dec.decode(&mut buf) {
        black_box(&p);
        n += 1;
    }
    assert!(buf.is_empty(), "input did not decode completely");
    n
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("mqtt/decode");

    let paho = vector("v5-paho-python-full-session.c2s.bin");
    group.throughput(Throughput::Bytes(paho.len() as u64));
    group.bench_function("v5-paho-python-full-session.c2s", |b| {
        b.iter_batched(
            || BytesMut::from(&paho[..]),
            |buf| drain(Decoder::default(), buf),
            BatchSize::SmallInput,
        )
    });

    for (name, version) in [
        ("publish-qos1-64b-x1000-v311", Version::V311),
        ("publish-qos1-64b-x1000-v5", Version::V5),
    ] {
        let input = publishes(1000, version == Version::V5);
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.bench_function(name, |b| {
            b.iter_batched(
                || BytesMut::from(&input[..]),
                |buf| drain(Decoder::with_version(Limits::default(), version), buf),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn rewrite(c: &mut Criterion) {
    let mut group = c.benchmark_group("mqtt/rewrite");
    let input = publishes(1, true);
    let mut buf = BytesMut::from(&input[..]);
    let packet = Decoder::with_version(Limits::default(), Version::V5)
        .decode(&mut buf)
        .unwrap()
        .unwrap();
    let publish = packet.as_publish().unwrap();
    group.throughput(Throughput::Bytes(input.len() as u64));
    group.bench_function("publish_with_topic-mount", |b| {
        b.iter(|| {
            let mounted = topic::mount(b"tenant-0001/", publish.topic());
            black_box(publish_with_topic(publish, &mounted).unwrap())
        })
    });
    group.finish();
}

criterion_group!(benches, decode, rewrite);
criterion_main!(benches);
