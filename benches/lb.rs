//! Load balancer picks: `Cluster::hosts_for(req).next()` (the host a request
//! tries first, as the drivers ask for it) for every `lb` policy with 10 and
//! 1000 hosts of mixed weights. The hashing policies hash a key that changes
//! per iteration.
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use switchyard::upstream::Cluster;
use switchyard_codecs::{Field, Metadata};

/// A request whose only metadata is a Redis-style key.
struct Key<'a>(&'a [u8]);

impl Metadata for Key<'_> {
    fn get(&self, field: &Field) -> Option<&[u8]> {
        (*field == Field::Key).then_some(self.0)
    }
}

fn cluster(lb: &str, hosts: usize) -> Cluster {
    let list: Vec<String> = (0..hosts)
        .map(|i| {
            format!(
                "{{address: \"10.{}.{}.{}:8080\", weight: {}}}",
                i / 65536,
                (i / 256) % 256,
                i % 256,
                1 + i % 4
            )
        })
        .collect();
    let yaml = format!(
        "listeners: [{{name: l, address: \"127.0.0.1:1\", protocols: [http1], route_table: t}}]\n\
         route_tables: [{{name: t, virtual_hosts: [{{name: a, domains: [\"*\"], routes: [{{cluster: c}}]}}]}}]\n\
         clusters:\n  - name: c\n    lb: {lb}\n    hash_on: key\n    hosts: [{}]\n",
        list.join(", ")
    );
    let config = switchyard::config::load_str(&yaml, "bench.yaml")
        .unwrap_or_else(|e| panic!("bench config: {e}"));
    Cluster::new(&config.clusters[0])
}

fn picks(c: &mut Criterion) {
    let keys: Vec<String> = (0..1024).map(|i| format!("user:{i}")).collect();
    for hosts in [10, 1000] {
        let mut group = c.benchmark_group(format!("pick/{hosts}_hosts"));
        for lb in [
            "round_robin",
            "weighted_round_robin",
            "random",
            "least_request",
            "ring_hash",
            "maglev",
        ] {
            let cluster = cluster(lb, hosts);
            let mut i = 0usize;
            group.bench_function(lb, |b| {
                b.iter(|| {
                    i = i.wrapping_add(1);
                    let key = Key(keys[i % keys.len()].as_bytes());
                    black_box(
                        cluster
                            .hosts_for(black_box(&key), std::net::Ipv4Addr::LOCALHOST.into())
                            .next(),
                    )
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, picks);
criterion_main!(benches);
