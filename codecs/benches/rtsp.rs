//! RTSP decode throughput: the captured ffprobe ↔ gst-rtsp-server session
//! from the server side (five replies with an SDP, then 35 interleaved RTP
//! frames), a synthetic stream of 1000 interleaved 1400-byte RTP frames (the
//! proxy's media hot path), and the control-path rewrite of a DESCRIBE reply
//! (URLs in Content-Base and the SDP, Content-Length fixed).
use std::hint::black_box;

use bytes::BytesMut;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use switchyard_codecs::Decoder as _;
use switchyard_codecs::rtsp::{Message, MessageDecoder, url, write_interleaved, write_response};

fn vector(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../../shared/vectors/rtsp/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

fn drain(mut buf: BytesMut) -> usize {
    let mut dec = MessageDecoder::default();
    let mut n = 0;
    while let Ok(Some(m)) = dec.decode(&mut buf) {
        black_box(&m);
        n += 1;
    }
    assert!(buf.is_empty(), "input did not decode completely");
    n
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("rtsp/decode");
    let session = vector("ffprobe-tcp-interleaved.s2c.bin");
    group.throughput(Throughput::Bytes(session.len() as u64));
    group.bench_function("ffprobe-tcp-interleaved.s2c", |b| {
        b.iter_batched(
            || BytesMut::from(&session[..]),
            drain,
            BatchSize::SmallInput,
        )
    });
    let mut frames = BytesMut::new();
    for i in 0..1000u32 {
        let mut rtp = vec![0x80, 96];
        rtp.extend_from_slice(&(i as u16).to_be_bytes());
        rtp.resize(1400, (i % 251) as u8);
        write_interleaved(&mut frames, (i % 2 * 2) as u8, &rtp).unwrap();
    }
    group.throughput(Throughput::Bytes(frames.len() as u64));
    group.bench_function("interleaved-1000x1400B", |b| {
        b.iter_batched(|| frames.clone(), drain, BatchSize::SmallInput)
    });
    group.finish();
}

fn rewrite(c: &mut Criterion) {
    let session = vector("ffprobe-tcp-interleaved.s2c.bin");
    let mut buf = BytesMut::from(&session[..]);
    let mut dec = MessageDecoder::default();
    let describe = loop {
        match dec.decode(&mut buf) {
            Ok(Some(Message::Response(r))) if !r.body().is_empty() => break r,
            Ok(Some(_)) => continue,
            other => panic!("no DESCRIBE reply: {other:?}"),
        }
    };
    let from = b"rtsp://127.0.0.1:31554";
    let to = b"rtsp://gateway.example:8554";
    let mut group = c.benchmark_group("rtsp/rewrite");
    group.throughput(Throughput::Bytes(
        (describe.wire().len() + describe.body().len()) as u64,
    ));
    group.bench_function("describe-reply", |b| {
        b.iter(|| {
            let headers: Vec<(&[u8], Vec<u8>)> = describe
                .headers()
                .map(|(n, v)| {
                    (
                        n,
                        url::replace_base(v, from, to).unwrap_or_else(|| v.to_vec()),
                    )
                })
                .collect();
            let body = url::replace_base(describe.body(), from, to);
            let mut out = BytesMut::with_capacity(2048);
            write_response(
                &mut out,
                describe.version,
                describe.status,
                describe.reason(),
                headers.iter().map(|(n, v)| (*n, v.as_slice())),
                body.as_deref().unwrap_or(describe.body()),
            );
            black_box(out)
        })
    });
    group.finish();
}

criterion_group!(benches, decode, rewrite);
criterion_main!(benches);
