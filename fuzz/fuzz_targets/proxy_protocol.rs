//! Fuzz the PROXY protocol header codec: `start` and `decode` never panic;
//! decoding in small reads gives the same header as at once (or an error
//! no later than once all bytes are in); a decoded header's `wire` is the
//! input's prefix and the rest is left untouched; v1 never exceeds 107
//! bytes; TLVs lie inside the header; re-encoding the addresses (v1 and v2,
//! with the TLVs) decodes back to the same addresses and TLVs.
//!
//! The whole input is the connection's first bytes; the read size comes
//! from its last byte. Seeds: `fuzz/seeds/proxy_protocol/` (the spec's
//! examples, HAProxy's `send-proxy`/`send-proxy-v2` output, edge cases).
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use switchyard_codecs::proxy_protocol::{
    self as pp, Addresses, Command, Limits, Start, Transport, Version,
};

fn small_reads(input: &[u8], chunk: usize, limits: &Limits) -> Option<Result<pp::Header, ()>> {
    let mut buf = BytesMut::new();
    for piece in input.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        match pp::decode(&mut buf, limits) {
            Ok(Some(h)) => return Some(Ok(h)),
            Ok(None) => {}
            Err(_) => return Some(Err(())),
        }
    }
    None
}

fuzz_target!(|input: &[u8]| {
    let chunk = 1 + usize::from(input.last().copied().unwrap_or(0) % 32);
    let limits = Limits {
        max_v2: 16 + usize::from(input.first().copied().unwrap_or(0)) * 4,
        ..Limits::default()
    };
    for limits in [Limits::default(), limits] {
        let _ = pp::start(input);
        let mut buf = BytesMut::from(input);
        let whole = pp::decode(&mut buf, &limits);
        let small = small_reads(input, chunk, &limits);
        match &whole {
            Ok(Some(h)) => {
                assert_eq!(&h.wire[..], &input[..h.wire.len()]);
                assert_eq!(&buf[..], &input[h.wire.len()..]);
                assert!(h.version == Version::V2 || h.wire.len() <= pp::V1_MAX);
                assert!(matches!(pp::start(input), Start::Header(v) if v == h.version));
                match &small {
                    Some(Ok(s)) => assert_eq!(s, h),
                    other => panic!("small reads disagree: {other:?} vs {h:?}"),
                }
                let body = h.tlvs.iter().map(|t| 3 + t.value.len()).sum::<usize>();
                assert!(body <= h.wire.len());
                // Re-encode.
                let mut out = BytesMut::new();
                pp::write_v2(&mut out, h.command, h.transport, &h.addresses, &h.tlvs)
                    .expect("a decoded header fits");
                let again = pp::decode(
                    &mut out,
                    &Limits {
                        max_v2: 70_000,
                        ..Limits::default()
                    },
                )
                .expect("re-encoded v2 decodes")
                .expect("whole");
                let want = match h.command {
                    Command::Local => Addresses::Unspec,
                    Command::Proxy => h.addresses.clone(),
                };
                let got = match again.command {
                    Command::Local => Addresses::Unspec,
                    Command::Proxy => again.addresses.clone(),
                };
                assert_eq!(got, want);
                assert_eq!(again.tlvs, h.tlvs);
                out.clear();
                pp::write_v1(&mut out, &h.addresses);
                assert!(out.len() <= pp::V1_MAX);
                let v1 = pp::decode(&mut out, &Limits::default())
                    .expect("re-encoded v1 decodes")
                    .expect("whole");
                if let Addresses::Inet {
                    source,
                    destination,
                } = &h.addresses
                    && source.is_ipv4() == destination.is_ipv4()
                {
                    assert_eq!(&v1.addresses, &h.addresses);
                }
                let _ = (Transport::Stream, h.source());
            }
            // Small reads may fail earlier (a prefix can already be wrong),
            // never succeed where the whole input failed.
            Err(_) => assert!(!matches!(small, Some(Ok(_)))),
            Ok(None) => assert!(small.is_none() || matches!(small, Some(Err(_)))),
        }
    }
});
