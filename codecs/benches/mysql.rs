//! MySQL decode throughput: the captured server streams split into packets
//! and walked through `ResponseState` (as the proxy does for every response),
//! a synthetic 10 000-row result set, and the statement classifier and digest
//! on sysbench's queries.
use std::hint::black_box;

use bytes::BytesMut;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use switchyard_codecs::Decoder;
use switchyard_codecs::mysql::response::Expect;
use switchyard_codecs::mysql::{
    Limits, PacketDecoder, ResponseState, Step, classify, digest, packet, put_lenenc_str,
};

fn vector(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../../shared/vectors/mysql/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

/// A text result set: 2 columns, `rows` rows, CLIENT_DEPRECATE_EOF framing.
fn result_set(rows: usize) -> Vec<u8> {
    let mut out = packet(1, &[2]).to_vec();
    let mut seq = 2u8;
    let mut push = |payload: &[u8], out: &mut Vec<u8>| {
        out.extend_from_slice(&packet(seq, payload));
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

/// Split into packets and walk the response state machine, restarting after each response.
fn walk(buf: BytesMut) -> usize {
    let mut buf = buf;
    let mut dec = PacketDecoder::new(Limits::default());
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

fn responses(c: &mut Criterion) {
    let mut group = c.benchmark_group("mysql/response");
    let inputs = [
        (
            "pymysql-text-multistatement",
            vector("pymysql-text-multistatement.s2c.bin"),
        ),
        (
            "connector-python-prepared-binary",
            vector("connector-python-prepared-binary.s2c.bin"),
        ),
        ("result-set-10000-rows", result_set(10_000)),
    ];
    for (name, input) in &inputs {
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.bench_function(*name, |b| {
            b.iter_batched(|| BytesMut::from(&input[..]), walk, BatchSize::SmallInput)
        });
    }
    group.finish();
}

fn statements(c: &mut Criterion) {
    let mut group = c.benchmark_group("mysql/statement");
    let queries: [&[u8]; 4] = [
        b"SELECT c FROM sbtest1 WHERE id=5012",
        b"SELECT SUM(k) FROM sbtest1 WHERE id BETWEEN 4501 AND 4600",
        b"UPDATE sbtest1 SET k=k+1 WHERE id=4990",
        b"SELECT DISTINCT c FROM sbtest1 WHERE id BETWEEN 1 AND 100 ORDER BY c FOR UPDATE",
    ];
    let bytes: usize = queries.iter().map(|q| q.len()).sum();
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("classify-sysbench", |b| {
        b.iter(|| {
            queries
                .iter()
                .map(|q| classify(black_box(q)).read as usize)
                .sum::<usize>()
        })
    });
    group.bench_function("digest-sysbench", |b| {
        b.iter(|| {
            queries
                .iter()
                .map(|q| digest(black_box(q), 512).len())
                .sum::<usize>()
        })
    });
    group.finish();
}

criterion_group!(benches, responses, statements);
criterion_main!(benches);
