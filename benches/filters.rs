//! The request step's cost: a chain of five filters (ip_access, a per-client
//! rate limit, a concurrency limit, a fault that does not match, a payload
//! limit) per request, against an empty chain, on the metadata of an HTTP/1
//! request head. `cargo bench --bench filters`.
use std::hint::black_box;

use bytes::BytesMut;
use criterion::{Criterion, criterion_group, criterion_main};
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use switchyard::filters::chain::{FilterChain, Request, admit};
use switchyard_codecs::http1::{Limits, RequestDecoder};
use switchyard_codecs::{Decoder, Part, Protocol};

const FIVE: &str = r#"
filters:
  - ip_access: {allow: [10.0.0.0/8, 127.0.0.0/8], deny: [10.66.0.0/16]}
  - rate_limit: {rate: 1e12, burst: 1e12, key: source_ip}
  - concurrency_limit: {max: 1000000}
  - fault: {abort: {percent: 50, status: 503}, match: {field: "header:x-chaos", value: "on"}}
  - payload_limit: {max_bytes: 1048576}
"#;

fn chain(yaml: &str) -> FilterChain {
    #[derive(serde::Deserialize)]
    struct W {
        filters: Vec<serde_saphyr::Spanned<switchyard::config::filters::Filter>>,
    }
    let w: W = serde_saphyr::from_str(yaml).expect("filters");
    FilterChain::new(&w.filters, "bench")
}

fn bench(c: &mut Criterion) {
    let mut buf = BytesMut::from(
        &b"GET /api/v1/items?id=7 HTTP/1.1\r\nHost: api.example\r\nUser-Agent: bench\r\nAccept: */*\r\nX-Request-Id: 42\r\n\r\n"[..],
    );
    let Ok(Some(Part::Head(head))) = RequestDecoder::new(Limits::default()).decode(&mut buf) else {
        panic!("the request head decodes");
    };
    let req = Request {
        protocol: Protocol::Http1,
        meta: &head,
        client: "127.0.0.1".parse().expect("an address"),
        size: Some(0),
        endpoints: None,
    };
    // The chains here never wait: one poll gives the verdict.
    let verdict = |chain: &FilterChain| {
        let mut fut = pin!(admit([Some(chain), None], black_box(&req)));
        matches!(
            fut.as_mut().poll(&mut Context::from_waker(Waker::noop())),
            Poll::Ready(Ok(_))
        )
    };
    let none = chain("filters: []");
    let five = chain(FIVE);
    let mut g = c.benchmark_group("filter_chain");
    g.bench_function("empty", |b| b.iter(|| black_box(verdict(&none))));
    g.bench_function("five_filters", |b| b.iter(|| black_box(verdict(&five))));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
