//! Fuzz the Dubbo codec: the decoder, the lazy invocation parser, the metadata
//! lookups, the Hessian 2 reader over bodies and the sniffer must never panic;
//! when a stream decodes without error, decoding it in small reads must give
//! the same frames, whose wire bytes are a prefix of the input; a frame moved
//! to another request id keeps its body and invocation; a request whose
//! attachments are edited parses again with the edit in place.
//!
//! The read size comes from the input length (no selector byte, so the
//! captured streams are seeds as they are). Seeds: `fuzz/seeds/dubbo/`.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use switchyard_codecs::dubbo::{self, Frame, Limits};
use switchyard_codecs::{Decoder, Field, Metadata, hessian2};

/// Decode `input` in reads of `chunk` bytes: the frames, and whether it ended
/// without error.
fn run(limits: Limits, input: &[u8], chunk: usize) -> (Vec<Frame>, bool) {
    let mut dec = dubbo::Decoder::new(limits);
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
    let body = frame.body();
    assert_eq!(frame.header().len() + body.len(), frame.wire().len());
    match frame.invocation() {
        Ok(Some(inv)) => {
            assert!(frame.is_request() && !frame.is_event());
            assert!(inv.args().len() + inv.attachments_wire().len() <= body.len());
            assert_eq!(frame.get(&Field::RpcMethod), Some(inv.method()));
            assert_eq!(frame.get(&Field::Service), Some(inv.service()));
            for (k, _) in inv.attachments() {
                if let Ok(name) = std::str::from_utf8(k) {
                    assert!(frame.get(&Field::Header(name.to_owned())).is_some());
                }
            }
        }
        Ok(None) => assert_eq!(frame.get(&Field::Service), None),
        Err(_) => assert_eq!(frame.get(&Field::RpcMethod), None),
    }
    let _ = frame.get(&Field::Header("version".into()));
    // Remapping the id keeps everything else.
    let mut moved = dubbo::header_with_request_id(frame, !frame.request_id()).to_vec();
    moved.extend_from_slice(&body);
    let again = Frame::parse(moved.into()).expect("a remapped frame parses");
    assert_eq!(again.request_id(), !frame.request_id());
    assert_eq!(again.body(), body);
    assert_eq!(again.invocation(), frame.invocation());
    // Editing the attachments (the `headers` filter) writes a request that
    // parses again: the same method, and the edit in place.
    if let Ok(Some(edited)) = dubbo::with_attachments(frame, |f| f.set(b"x-fuzz", b"1")) {
        let again = Frame::parse(edited).expect("an edited frame parses");
        match (frame.invocation(), again.invocation()) {
            (Ok(Some(was)), Ok(Some(now))) => {
                assert_eq!(was.method(), now.method());
                assert_eq!(now.attachment("x-fuzz"), Some(&b"1"[..]));
            }
            (_, now) => panic!("the edited frame's invocation: {now:?}"),
        }
    }
    // The Hessian reader over any body.
    let limits = hessian2::Limits::default();
    let skipped = hessian2::skip(&body, &limits);
    if let Ok((_, used)) = hessian2::read_value(&body, &limits) {
        assert_eq!(skipped, Ok(used));
    }
}

fuzz_target!(|input: &[u8]| {
    let chunk = input.len() % 31 + 1;
    for limits in [Limits::default(), Limits { max_body: 64 }] {
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
    let _ = dubbo::parameter_count(input);
    let _ = dubbo::sniff(input);
});
