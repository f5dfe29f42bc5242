//! Fuzz the memcached codec: the request decoder, the reply decoder, the
//! sniffer and the `VALUE` walker must never panic; when a stream decodes
//! without error, decoding it in small reads gives the same frames, whose
//! wire bytes joined are a prefix of the input; a request's keys are slices
//! of its line, and a retrieval reply's `VALUE` blocks are slices of it.
//!
//! The first input byte picks the read size, the limits and which decoder
//! runs; the rest is the stream.
//! Seeds: `fuzz/seeds/memcached/` (client and server streams recorded from
//! pymemcache and memcslap against memcached 1.6).
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use switchyard_codecs::memcached::{self, Limits, ReplyDecoder, RequestDecoder};
use switchyard_codecs::{Decoder, Field, Metadata};

fn run<D: Decoder>(mut dec: D, input: &[u8], chunk: usize) -> (Vec<D::Item>, bool) {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in input.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(item)) => out.push(item),
                Ok(None) => break,
                Err(_) => return (out, false),
            }
        }
    }
    (out, true)
}

fn limits(selector: u8) -> Limits {
    if selector & 0x80 == 0 {
        Limits::default()
    } else {
        Limits {
            max_line: 64,
            max_value: 32,
            max_keys: 4,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    let _ = memcached::sniff(input);
    let chunk = usize::from(selector & 0x0f) + 1;
    let limits = limits(selector);
    if selector & 0x40 == 0 {
        let (whole, ok) = run(RequestDecoder::new(limits), input, input.len().max(1));
        let (pieces, _) = run(RequestDecoder::new(limits), input, chunk);
        if ok {
            assert_eq!(whole, pieces);
        }
        let joined: Vec<u8> = whole.iter().flat_map(|r| r.wire().to_vec()).collect();
        assert!(input.starts_with(&joined));
        for r in &whole {
            let line = r.line();
            for key in r.keys() {
                assert!(memcached::valid_key(key));
                assert!(line.windows(key.len()).any(|w| w == key));
            }
            let _ = r.get(&Field::Command);
            let _ = r.get(&Field::Key);
            let _ = r.retrieval_prefix();
            if r.is_quiet_meta() {
                let _ = r.without_quiet();
            }
        }
    } else {
        let (whole, ok) = run(ReplyDecoder::new(limits), input, input.len().max(1));
        let (pieces, _) = run(ReplyDecoder::new(limits), input, chunk);
        if ok {
            assert_eq!(whole, pieces);
        }
        for r in &whole {
            let wire = r.wire();
            let mut at = 0;
            for v in memcached::values(wire) {
                assert_eq!(wire.get(at..at + v.block.len()), Some(v.block));
                at += v.block.len();
            }
        }
        let _ = memcached::values(input).count();
    }
});
