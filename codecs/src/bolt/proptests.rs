//! Property tests: the decoder never panics, chunking does not change the
//! frames, and encoded frames decode back to what was encoded.
use bytes::BytesMut;
use proptest::prelude::*;

use super::*;
use crate::Decoder as _;

fn drain(dec: &mut super::Decoder, buf: &mut BytesMut) -> (Vec<Frame>, bool) {
    let mut out = Vec::new();
    loop {
        match dec.decode(buf) {
            Ok(Some(f)) => out.push(f),
            Ok(None) => return (out, true),
            Err(_) => return (out, false),
        }
    }
}

fn chunked(input: &[u8], cuts: &[usize], limits: Limits) -> (Vec<Frame>, bool) {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    points.push(input.len());
    points.sort_unstable();
    let mut dec = super::Decoder::new(limits);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut from = 0;
    for to in points {
        buf.extend_from_slice(&input[from..to]);
        from = to;
        let (frames, ok) = drain(&mut dec, &mut buf);
        out.extend(frames);
        if !ok {
            return (out, false);
        }
    }
    (out, true)
}

fn version() -> impl Strategy<Value = Version> {
    prop_oneof![Just(Version::V1), Just(Version::V2)]
}

type Entry = (Vec<u8>, Option<Vec<u8>>);

fn entries() -> impl Strategy<Value = Vec<Entry>> {
    prop::collection::vec(
        (
            "[a-z_]{1,12}".prop_map(String::into_bytes),
            prop::option::of(prop::collection::vec(any::<u8>(), 0..16)),
        ),
        0..6,
    )
}

fn header_of(entries: &[Entry]) -> Vec<u8> {
    encode_header_map(entries.iter().map(|(k, v)| (&k[..], v.as_deref())))
}

/// Any frame the encoders make.
fn frame() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (
            version(),
            any::<bool>(),
            any::<u32>(),
            any::<u8>(),
            any::<i32>(),
            "[a-zA-Z.]{0,40}",
            entries(),
            prop::collection::vec(any::<u8>(), 0..64)
        )
            .prop_map(|(v, oneway, id, codec, timeout, class, entries, content)| {
                request(
                    v,
                    oneway,
                    id,
                    codec,
                    timeout,
                    class.as_bytes(),
                    &header_of(&entries),
                    &content,
                )
                .to_vec()
            }),
        (
            version(),
            any::<u32>(),
            any::<u8>(),
            any::<u16>(),
            ".{0,40}"
        )
            .prop_map(|(v, id, codec, st, msg)| response(v, id, codec, st, &msg).to_vec()),
        (version(), any::<u32>()).prop_map(|(v, id)| heartbeat_request(v, id).to_vec()),
        (version(), any::<u32>()).prop_map(|(v, id)| heartbeat_response(v, id).to_vec()),
    ]
}

/// Bolt-looking noise: plausible heads with random lengths and bodies.
fn noise() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![Just(1u8), Just(2u8), any::<u8>()],
        prop::collection::vec(
            prop_oneof![Just(0u8), Just(1u8), Just(2u8), any::<u8>()],
            0..24,
        ),
        prop::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(p, head, rest)| {
            let mut v = vec![p];
            v.extend(head);
            v.extend(rest);
            v
        })
}

/// Bit-at-a-time CRC32, the reference for the sliced one.
fn crc32_bitwise(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

proptest! {
    #[test]
    fn crc32_matches_the_reference(data in prop::collection::vec(any::<u8>(), 0..100)) {
        prop_assert_eq!(crc32(&data), crc32_bitwise(&data));
    }

    #[test]
    fn arbitrary_bytes_never_panic(input in prop_oneof![prop::collection::vec(any::<u8>(), 0..256), noise()], cuts in prop::collection::vec(any::<usize>(), 0..4)) {
        let (frames, _) = chunked(&input, &cuts, Limits { max_frame: 128 });
        for f in &frames {
            let _ = f.header_map().count();
            for field in [Field::Service, Field::RpcMethod, Field::Header("x".into())] {
                let _ = f.get(&field);
            }
            let _ = (f.timeout_ms(), f.status(), f.class_name(), f.content(), f.crc());
            let g = Frame::parse(with_request_id(f, 5)).unwrap();
            prop_assert_eq!(g.request_id(), 5);
        }
        let _ = header_map(&input).count();
    }

    #[test]
    fn chunking_does_not_change_frames(stream in prop::collection::vec(frame(), 1..6), cuts in prop::collection::vec(any::<usize>(), 0..8)) {
        let input: Vec<u8> = stream.concat();
        let (whole, ok) = chunked(&input, &[], Limits::default());
        prop_assert!(ok);
        prop_assert_eq!(whole.len(), stream.len());
        let (pieces, ok) = chunked(&input, &cuts, Limits::default());
        prop_assert!(ok);
        prop_assert_eq!(&pieces, &whole);
        for (f, wire) in whole.iter().zip(&stream) {
            prop_assert_eq!(&f.wire()[..], &wire[..]);
        }
    }

    #[test]
    fn request_round_trip(v in version(), oneway in any::<bool>(), id in any::<u32>(), codec in any::<u8>(), timeout in any::<i32>(), class in "[a-zA-Z.]{0,40}", entries in entries(), content in prop::collection::vec(any::<u8>(), 0..64), new_id in any::<u32>()) {
        let header = header_of(&entries);
        let f = Frame::parse(request(v, oneway, id, codec, timeout, class.as_bytes(), &header, &content)).unwrap();
        prop_assert_eq!(f.version(), v);
        prop_assert_eq!(f.kind(), if oneway { Kind::Oneway } else { Kind::Request });
        prop_assert_eq!(f.cmd_code(), cmd::REQUEST);
        prop_assert_eq!(f.request_id(), id);
        prop_assert_eq!(f.codec(), codec);
        prop_assert_eq!(f.timeout_ms(), Some(timeout));
        prop_assert_eq!(f.class_name(), class.as_bytes());
        prop_assert_eq!(&f.content()[..], &content[..]);
        let got: Vec<(Vec<u8>, Option<Vec<u8>>)> = f
            .header_map()
            .map(|r| r.map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec))))
            .collect::<Result<_, _>>()
            .unwrap();
        prop_assert_eq!(&got, &entries);
        for (k, val) in &entries {
            let name = String::from_utf8(k.clone()).unwrap();
            // The first entry with this key (any case) answers.
            let first = entries.iter().find(|(k2, _)| k2.eq_ignore_ascii_case(k)).unwrap();
            prop_assert_eq!(f.get(&Field::Header(name)), first.1.as_deref());
            let _ = val;
        }
        let g = Frame::parse(with_request_id(&f, new_id)).unwrap();
        prop_assert_eq!(g.request_id(), new_id);
        prop_assert_eq!(g.header(), f.header());
        prop_assert_eq!(g.content(), f.content());
    }

    #[test]
    fn response_round_trip(v in version(), id in any::<u32>(), st in any::<u16>(), msg in ".{0,300}") {
        let f = Frame::parse(response(v, id, codec::HESSIAN2, st, &msg)).unwrap();
        prop_assert_eq!(f.kind(), Kind::Response);
        prop_assert_eq!(f.request_id(), id);
        prop_assert_eq!(f.status(), Some(st));
        prop_assert_eq!(f.has_crc(), v == Version::V2);
        let content = f.content();
        if msg.is_empty() {
            prop_assert!(content.is_empty());
        } else {
            let (text, used) = crate::hessian2::read_string(&content).unwrap();
            prop_assert_eq!(used, content.len());
            prop_assert_eq!(&*text, msg.as_bytes());
        }
    }

    #[test]
    fn server_exception_round_trip(v in version(), id in any::<u32>(), st in any::<u16>(), msg in ".{0,300}") {
        let f = Frame::parse(server_exception(v, id, codec::HESSIAN2, st, &msg)).unwrap();
        prop_assert_eq!(f.kind(), Kind::Response);
        prop_assert_eq!(f.request_id(), id);
        prop_assert_eq!(f.status(), Some(st));
        let content = f.content();
        if msg.is_empty() {
            prop_assert!(content.is_empty() && f.class_name().is_empty());
        } else {
            prop_assert_eq!(f.class_name(), SERVER_EXCEPTION_CLASS.as_bytes());
            prop_assert_eq!(&content[..], &server_exception_content(&msg)[..]);
            // The message is there whole, right after the instance tag.
            let at = content.windows(2).position(|w| w == b"o\x90").unwrap() + 2;
            let skip = if content[at] == b'S' { 3 } else { 1 };
            prop_assert_eq!(&content[at + skip..at + skip + msg.len()], msg.as_bytes());
        }
    }
}
