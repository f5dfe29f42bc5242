//! Fuzz the Bolt codec: the decoder (with v2 CRC checks), the header-map
//! reader, the metadata lookups and the sniffer must never panic; when a
//! stream decodes without error, decoding it in small reads must give the same
//! frames, whose wire bytes are a prefix of the input; a frame moved to another
//! request id (CRC recomputed) parses back with everything else unchanged,
//! and so does a frame given a new header map.
//!
//! The read size comes from the input length (no selector byte, so the
//! captured streams are seeds as they are). Seeds: `fuzz/seeds/bolt/`.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use switchyard_codecs::bolt::{self, Frame, Limits};
use switchyard_codecs::{Decoder, Field, Metadata};

/// Decode `input` in reads of `chunk` bytes: the frames, and whether it ended
/// without error.
fn run(limits: Limits, input: &[u8], chunk: usize) -> (Vec<Frame>, bool) {
    let mut dec = bolt::Decoder::new(limits);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in input.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(f)) => out.push(f),
                Ok(None) => break,
                Err(_) => return (out, false),
            }
        }
    }
    (out, true)
}

fn check(frame: &Frame) {
    let parts = frame.class_name().len() + frame.header().len() + frame.content().len();
    assert!(parts < frame.wire().len());
    assert_eq!(frame.timeout_ms().is_some(), frame.is_request());
    assert_eq!(frame.status().is_some(), !frame.is_request());
    if let Some(crc) = frame.crc() {
        let wire = frame.wire();
        assert_eq!(crc, bolt::crc32(&wire[..wire.len() - 4]));
    }
    let entries: Vec<_> = frame.header_map().collect();
    assert!(entries.iter().filter(|e| e.is_err()).count() <= 1);
    for field in [
        Field::Service,
        Field::RpcMethod,
        Field::Header("service".into()),
    ] {
        let _ = frame.get(&field);
    }
    // A new header map (the `headers` filter) keeps the rest of the frame,
    // with its length fields and CRC right.
    let header = bolt::encode_header_map([(&b"x-fuzz"[..], Some(&b"1"[..]))]);
    if let Some(edited) = bolt::with_header(frame, &header) {
        let again = Frame::parse(edited).expect("a frame with a new header parses");
        assert_eq!(again.header(), &header[..]);
        assert_eq!(
            (again.class_name(), again.content(), again.request_id()),
            (frame.class_name(), frame.content(), frame.request_id())
        );
        if let Some(crc) = again.crc() {
            let wire = again.wire();
            assert_eq!(crc, bolt::crc32(&wire[..wire.len() - 4]));
        }
    }
    let id = frame.request_id().wrapping_add(1);
    let moved = Frame::parse(bolt::with_request_id(frame, id)).expect("a remapped frame parses");
    assert_eq!(moved.request_id(), id);
    assert_eq!(
        (
            moved.kind(),
            moved.cmd_code(),
            moved.codec(),
            moved.status(),
            moved.timeout_ms()
        ),
        (
            frame.kind(),
            frame.cmd_code(),
            frame.codec(),
            frame.status(),
            frame.timeout_ms()
        )
    );
    assert_eq!(moved.header(), frame.header());
    assert_eq!(moved.content(), frame.content());
}

fuzz_target!(|input: &[u8]| {
    let chunk = input.len() % 31 + 1;
    for limits in [Limits::default(), Limits { max_frame: 96 }] {
        let (whole, ok) = run(limits, input, input.len());
        let wire: Vec<u8> = whole.iter().flat_map(|f| f.wire().to_vec()).collect();
        assert!(input.starts_with(&wire), "wire bytes are not the input");
        for frame in &whole {
            check(frame);
        }
        let (pieces, ok_pieces) = run(limits, input, chunk);
        if ok && ok_pieces {
            assert_eq!(whole, pieces, "frames differ in reads of {chunk}");
        }
    }
    let _ = bolt::header_map(input).count();
    let _ = bolt::sniff(input);
});
