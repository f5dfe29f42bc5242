//! Detection throughput: `sniff` over the first bytes of every captured
//! client session in ../shared/vectors, with every protocol enabled.

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use switchyard_codecs::{Protocol, sniff};

fn first_flights() -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors");
    let mut out = Vec::new();
    let dirs = std::fs::read_dir(&root).unwrap_or_else(|e| panic!("{}: {e}", root.display()));
    for dir in dirs.flatten().filter(|d| d.path().is_dir()) {
        for f in std::fs::read_dir(dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = f.file_name().to_string_lossy().into_owned();
            if name.ends_with(".c2s.bin") {
                let mut bytes = std::fs::read(f.path()).unwrap_or_default();
                bytes.truncate(256);
                out.push(bytes);
            }
        }
    }
    out
}

fn bench(c: &mut Criterion) {
    let flights = first_flights();
    let total: usize = flights.iter().map(Vec::len).sum();
    let mut g = c.benchmark_group("detect");
    g.throughput(Throughput::Elements(flights.len() as u64));
    g.bench_function(
        format!(
            "sniff_all_protocols_{}_sessions_{total}_bytes",
            flights.len()
        ),
        |b| {
            b.iter(|| {
                for f in &flights {
                    black_box(sniff(black_box(f), &Protocol::ALL));
                }
            })
        },
    );
    // The nine protocols before memcached joined the registry: the same
    // work as the benchmark above did then (registry before/after).
    let nine: Vec<Protocol> = Protocol::ALL
        .into_iter()
        .filter(|p| *p != Protocol::Memcached)
        .collect();
    g.bench_function(
        format!(
            "sniff_nine_protocols_{}_sessions_{total}_bytes",
            flights.len()
        ),
        |b| {
            b.iter(|| {
                for f in &flights {
                    black_box(sniff(black_box(f), &nine));
                }
            })
        },
    );
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
