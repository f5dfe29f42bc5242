//! Fuzz the Redis codec: the command decoder, the reply decoder and the value
//! model must never panic; when a stream decodes without error, decoding it in
//! small reads must give the same frames, whose wire bytes are a prefix of the
//! input; every decoded reply must convert to a value that encodes and decodes
//! back to itself; the sharding helpers (hash tag, key slot, the elements of
//! an array reply) never panic, and an array's elements re-joined under its
//! header are the reply itself.
//!
//! The first input byte picks the read size and the limits; the rest is the stream.
//! Seeds: `fuzz/seeds/redis/` (client and server streams of the captured vectors).
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use switchyard_codecs::redis::{self, CommandDecoder, Limits, ReplyDecoder, Value};
use switchyard_codecs::{Decoder, Field, Metadata, WireHead};

/// Decode `input` in reads of `chunk` bytes: the items, and whether it ended
/// without error.
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
            max_bulk: 256,
            max_elements: 16,
            max_inline: 64,
            max_depth: 4,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    let limits = limits(selector);
    let chunk = usize::from(selector & 0x3f) + 1;

    // Commands.
    let (whole, ok) = run(CommandDecoder::new(limits), input, input.len());
    for cmd in &whole {
        assert!(cmd.argc() >= 1);
        assert!(input.len() >= cmd.wire().len());
        let _ = cmd.is_read_only();
        for key in cmd.keys() {
            assert!(redis::key_slot(key) < redis::SLOTS);
            let tag = redis::hash_tag(key, b'{', b'}');
            assert!(tag.len() <= key.len());
        }
        let _ = cmd.get(&Field::Key);
        let _ = cmd.get(&Field::Command);
    }
    let (pieces, ok_pieces) = run(CommandDecoder::new(limits), input, chunk);
    if ok && ok_pieces {
        assert_eq!(whole, pieces, "commands differ in reads of {chunk}");
    }

    // Replies.
    let (whole, ok) = run(ReplyDecoder::new(limits), input, input.len());
    let wire: Vec<u8> = whole
        .iter()
        .flat_map(|r| r.wire().iter().copied())
        .collect();
    assert!(
        input.starts_with(&wire),
        "reply wire bytes are not the input"
    );
    for reply in &whole {
        if let Some(elements) = redis::array_elements(reply.wire(), limits) {
            let joined: Vec<u8> = elements.iter().flat_map(|e| e.iter().copied()).collect();
            assert!(
                reply.wire().ends_with(&joined),
                "array elements are not the reply's tail"
            );
        }
        let value = reply
            .to_value()
            .expect("a framed reply converts to a value");
        let mut encoded = BytesMut::new();
        value.encode(&mut encoded);
        let back = Value::decode(&mut encoded, &Limits::default())
            .expect("an encoded value decodes")
            .expect("an encoded value is complete");
        assert_eq!(back, value);
        assert!(encoded.is_empty());
    }
    let (pieces, ok_pieces) = run(ReplyDecoder::new(limits), input, chunk);
    if ok && ok_pieces {
        assert_eq!(whole, pieces, "replies differ in reads of {chunk}");
    }

    let _ = redis::sniff(input);
});
