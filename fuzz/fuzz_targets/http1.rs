//! Fuzz the HTTP/1 codec: the request decoder, the response decoder (with
//! HEAD/CONNECT/GET expectations) and the sniffer must never panic, and when
//! a stream decodes without error, decoding it in small reads must give the
//! same messages, with wire bytes that concatenate back to the input.
//!
//! Seeds: `fuzz/seeds/http1/` (client and server streams of the captured vectors).
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use switchyard_codecs::http1::{self, Limits, RequestDecoder, ResponseDecoder};
use switchyard_codecs::{CodecError, Decoder, Part, WireHead};

/// Parts with consecutive body slices merged, so read sizes don't matter.
#[derive(Debug, PartialEq, Eq)]
enum N {
    Head(Vec<u8>),
    Body(Vec<u8>),
    End,
}

fn push<H: WireHead>(out: &mut Vec<N>, part: Part<H>) {
    match part {
        Part::Head(h) => out.push(N::Head(h.wire().to_vec())),
        Part::Body(b) => match out.last_mut() {
            Some(N::Body(acc)) => acc.extend_from_slice(&b),
            _ => out.push(N::Body(b.to_vec())),
        },
        Part::End => out.push(N::End),
    }
}

fn run<D, H>(
    mut dec: D,
    data: &[u8],
    step: usize,
    eof: impl Fn(&mut D, &mut BytesMut) -> Result<Option<Part<H>>, CodecError>,
) -> Result<(Vec<N>, usize), CodecError>
where
    D: Decoder<Item = Part<H>>,
    H: WireHead,
{
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in data.chunks(step.max(1)) {
        buf.extend_from_slice(chunk);
        while let Some(part) = dec.decode(&mut buf)? {
            push(&mut out, part);
        }
    }
    for _ in 0..4 {
        match eof(&mut dec, &mut buf)? {
            Some(Part::End) => {
                out.push(N::End);
                break;
            }
            Some(part) => push(&mut out, part),
            None => break,
        }
    }
    Ok((out, buf.len()))
}

fn check<D, H>(
    make: impl Fn() -> D,
    data: &[u8],
    step: usize,
    eof: impl Fn(&mut D, &mut BytesMut) -> Result<Option<Part<H>>, CodecError> + Copy,
) where
    D: Decoder<Item = Part<H>>,
    H: WireHead,
{
    let whole = run(make(), data, data.len(), eof);
    let split = run(make(), data, step, eof);
    if let (Ok((whole, left_whole)), Ok((split, left_split))) = (whole, split) {
        assert_eq!(whole, split, "read size changed the decoded messages");
        assert_eq!(left_whole, left_split);
        // The wire bytes are the input in order, less only empty lines
        // skipped before a head; the rest is what is left in the buffer.
        let mut cursor = 0;
        for part in &whole {
            let bytes = match part {
                N::Head(b) => {
                    while data.get(cursor).is_some_and(|b| *b == b'\r' || *b == b'\n') {
                        cursor += 1;
                    }
                    b
                }
                N::Body(b) => b,
                N::End => continue,
            };
            assert!(
                data[cursor..].starts_with(bytes),
                "wire bytes differ from the input"
            );
            cursor += bytes.len();
        }
        let rest = &data[cursor..];
        assert!(rest.len() >= left_whole);
        assert!(
            rest[..rest.len() - left_whole]
                .iter()
                .all(|b| *b == b'\r' || *b == b'\n')
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = http1::sniff(data);
    let step = 1 + data.iter().map(|b| usize::from(*b)).sum::<usize>() % 31;
    let limits = if data.first().is_some_and(|b| b & 1 == 1) {
        Limits {
            max_head_bytes: 256,
            max_headers: 8,
        }
    } else {
        Limits::default()
    };
    check(|| RequestDecoder::new(limits), data, step, |_, _| Ok(None));
    for method in [&b"GET"[..], b"HEAD", b"CONNECT"] {
        check(
            || {
                let mut dec = ResponseDecoder::new(limits);
                dec.expect_response_to(method);
                dec.expect_response_to(b"GET");
                dec
            },
            data,
            step,
            |dec: &mut ResponseDecoder, buf| dec.decode_eof(buf),
        );
    }
});
