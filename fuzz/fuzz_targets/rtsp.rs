//! Fuzz the RTSP codec: the decoder must never panic; decoded messages'
//! bytes concatenate to a prefix of the input; decoding in small reads gives
//! the same messages as at once; every view, the metadata, the URL,
//! `Session` and `Transport` helpers are reachable; a request or response
//! written back with its headers and body decodes to the same message.
//!
//! The whole input is the stream (so the seeds are the captured vectors as
//! they are); the read size is derived from the input's first byte.
//! Seeds: `fuzz/seeds/rtsp/` (both directions of the captured ffprobe sessions).
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use switchyard_codecs::rtsp::{self, Message, MessageDecoder, transport, url};
use switchyard_codecs::{Decoder as _, Field, Metadata};

fn run(input: &[u8], chunk: usize) -> (Vec<Message>, usize, bool) {
    let mut dec = MessageDecoder::default();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut used = 0;
    for piece in input.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(m)) => {
                    used += len(&m);
                    out.push(m)
                }
                Ok(None) => break,
                Err(_) => return (out, used, false),
            }
        }
    }
    (out, used, true)
}

fn len(m: &Message) -> usize {
    match m {
        Message::Request(r) => r.wire().len() + r.body().len(),
        Message::Response(r) => r.wire().len() + r.body().len(),
        Message::Interleaved(f) => f.wire().len(),
    }
}

fn one(bytes: &[u8]) -> Message {
    let mut buf = BytesMut::from(bytes);
    match MessageDecoder::default().decode(&mut buf) {
        Ok(Some(m)) => m,
        other => panic!("re-encoded message does not decode: {other:?}"),
    }
}

fuzz_target!(|input: &[u8]| {
    let chunk = 1 + usize::from(input.first().copied().unwrap_or(0) % 64);
    let (whole, used, _) = run(input, input.len().max(1));
    let (small, _, _) = run(input, chunk);
    // Small reads may stop earlier on an error found in a partial head only
    // if the whole read failed too; the messages they did give agree.
    assert!(small.len() <= whole.len() || whole.is_empty());
    for (a, b) in small.iter().zip(&whole) {
        assert_eq!(a, b);
    }
    assert!(used <= input.len());
    for m in &whole {
        match m {
            Message::Request(r) => {
                for f in [
                    Field::Method,
                    Field::Host,
                    Field::Path,
                    Field::Header("cseq".into()),
                ] {
                    let _ = r.get(&f);
                }
                if let Some(u) = url::Url::parse(r.uri()) {
                    let _ = url::with_base(r.uri(), b"rtsp://gw:1");
                    let _ = url::replace_base(r.body(), u.host_port, b"gw:1");
                }
                if let Some(s) = r.header("session") {
                    let _ = rtsp::session_timeout(s);
                }
                if let Some(t) = r.header("transport").and_then(transport::parse) {
                    for spec in &t {
                        let _ = (
                            spec.ports("client_port"),
                            spec.channels(),
                            spec.is_interleaved(),
                        );
                    }
                    let _ = transport::format(&t);
                }
                let mut out = BytesMut::new();
                rtsp::write_request(
                    &mut out,
                    r.method(),
                    r.uri(),
                    r.version,
                    r.headers(),
                    r.body(),
                );
                let Message::Request(again) = one(&out) else {
                    panic!("not a request")
                };
                assert_eq!(
                    (again.method(), again.uri(), again.body()),
                    (r.method(), r.uri(), r.body())
                );
            }
            Message::Response(r) => {
                let mut out = BytesMut::new();
                rtsp::write_response(
                    &mut out,
                    r.version,
                    r.status,
                    r.reason(),
                    r.headers(),
                    r.body(),
                );
                let Message::Response(again) = one(&out) else {
                    panic!("not a response")
                };
                assert_eq!((again.status, again.body()), (r.status, r.body()));
            }
            Message::Interleaved(f) => {
                let mut out = BytesMut::new();
                rtsp::write_interleaved(&mut out, f.channel, f.payload()).expect("payload fits");
                assert_eq!(&out[..], &f.wire()[..]);
            }
        }
    }
});
