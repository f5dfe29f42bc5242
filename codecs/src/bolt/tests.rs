//! Unit tests of the Bolt codec on literal bytes.
use bytes::{Bytes, BytesMut};

use super::*;
use crate::Decoder as _;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn frames(input: &[u8]) -> Result<(Vec<Frame>, usize), CodecError> {
    let mut dec = super::Decoder::default();
    let mut buf = BytesMut::from(input);
    let mut out = Vec::new();
    while let Some(f) = dec.decode(&mut buf)? {
        out.push(f);
    }
    Ok((out, buf.len()))
}

fn one(input: &[u8]) -> Frame {
    let (mut fs, left) = frames(input).unwrap();
    assert_eq!((fs.len(), left), (1, 0));
    fs.remove(0)
}

/// `bolt/v2-crc-node-client.s2c.bin`: a v2 response with CRC (id 1, SofaResponse 42).
fn v2_response() -> Vec<u8> {
    hex("0202000002010000000101010000002e000000000062636f6d2e616c697061792e736f66612e7270632e636f72652e72
         6573706f6e73652e536f6661526573706f6e73654fbe636f6d2e616c697061792e736f66612e7270632e636f72652e72
         6573706f6e73652e536f6661526573706f6e7365940769734572726f72086572726f724d73670b617070526573706f6e
         73650d726573706f6e736550726f70736f90464eba4e104632a6")
}

/// `bolt/v1-protobuf-anthunder-client.s2c.bin`: a v1 response, codec 11, body "ping-0".
fn anthunder_response() -> Vec<u8> {
    hex("01000002012858759e0b0000002e000000000006636f6d2e616c697061792e736f66612e7270632e636f72652e726573
         706f6e73652e536f6661526573706f6e736570696e672d30")
}

/// Heartbeat (id 4) and its answer from `bolt/v1-node-client-error-heartbeat.*`.
const V1_HEARTBEAT_REQUEST: &[u8] = &[
    0x01, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x04, 0x01, 0x00, 0x00, 0x0b, 0xb8, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
];
const V1_HEARTBEAT_RESPONSE: &[u8] = &[
    0x01, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00,
];

// ---- sniffing (unchanged from the sniffer-only module) ---------------------

/// Header of `bolt/v1-node-client-pipelined.c2s.bin`: request, cmdcode 1,
/// ver2 1, id 1, codec 1 (hessian2), timeout 3000, class 44, header 48, content 247.
const V1_REQUEST: &[u8] = &[
    0x01, 0x01, 0x00, 0x01, 0x01, 0x00, 0x00, 0x00, 0x01, 0x01, 0x00, 0x00, 0x0b, 0xb8, 0x00, 0x2c,
    0x00, 0x30, 0x00, 0x00, 0x00, 0xf7, 0x63, 0x6f,
];
/// Header of `bolt/v1-protobuf-anthunder-client.c2s.bin` (codec 11, protobuf).
const V1_ANTHUNDER: &[u8] = &[
    0x01, 0x01, 0x00, 0x01, 0x01, 0x28, 0x58, 0x75, 0x9e, 0x0b, 0x00, 0x00, 0x0b, 0xb8, 0x00, 0x2c,
    0x01, 0x14, 0x00, 0x00, 0x00, 0x06,
];
/// Header of `bolt/v2-crc-node-client.c2s.bin`: ver1 2, switch 1 (CRC).
const V2_REQUEST: &[u8] = &[
    0x02, 0x02, 0x01, 0x00, 0x01, 0x01, 0x00, 0x00, 0x00, 0x01, 0x01, 0x01, 0x00, 0x00, 0x0b, 0xb8,
    0x00, 0x2c, 0x00, 0x30, 0x00, 0x00, 0x00, 0xca, 0x63,
];
/// A v1 heartbeat request (cmdcode 0, no class/header/content).
const V1_HEARTBEAT: &[u8] = &[
    0x01, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x05, 0x01, 0x00, 0x00, 0x0b, 0xb8, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
];
/// Header of `bolt/java-v1-response-rpcserverexception.bin` (response, status 2).
const V1_RESPONSE: &[u8] = &[
    0x01, 0x00, 0x00, 0x02, 0x01, 0x00, 0x00, 0x00, 0x01, 0x01, 0x00, 0x02, 0x00, 0x34, 0x00, 0x00,
    0x00, 0x00, 0x04, 0x61,
];
/// Header of `bolt/java-v2-crc-response-sofaresponse.bin`.
const V2_RESPONSE: &[u8] = &[
    0x02, 0x02, 0x00, 0x00, 0x02, 0x01, 0x00, 0x00, 0x00, 0x01, 0x01, 0x01, 0x00, 0x00, 0x00, 0x2e,
    0x00, 0x00, 0x00, 0x00, 0x02, 0xee,
];

fn check(frame: &[u8], header_len: usize) {
    for n in 0..header_len {
        assert_eq!(sniff(&frame[..n]), Verdict::NeedMore, "{n}");
    }
    for n in header_len..=frame.len() {
        assert_eq!(sniff(&frame[..n]), Verdict::Match(Protocol::Bolt), "{n}");
    }
}

#[test]
fn headers() {
    check(V1_REQUEST, 22);
    check(V1_ANTHUNDER, 22);
    check(V1_HEARTBEAT, 22);
    check(V2_REQUEST, 24);
    check(V1_RESPONSE, 20);
    check(V2_RESPONSE, 22);
}

#[test]
fn rejects() {
    assert_eq!(sniff(&[0x03]), Verdict::Reject);
    assert_eq!(sniff(b"GET"), Verdict::Reject);
    // Unknown command type.
    assert_eq!(sniff(&[0x01, 0x03]), Verdict::Reject);
    // cmdcode out of range, or not fitting the type.
    assert_eq!(sniff(&[0x01, 0x01, 0x01]), Verdict::Reject);
    assert_eq!(sniff(&[0x01, 0x01, 0x00, 0x02]), Verdict::Reject);
    assert_eq!(sniff(&[0x01, 0x00, 0x00, 0x01]), Verdict::Reject);
    assert_eq!(sniff(&[0x02, 0x02, 0x01, 0x00, 0x03]), Verdict::Reject);
    // v2 switch with unknown bits.
    let mut v2 = V2_REQUEST.to_vec();
    v2[11] = 0x82;
    assert_eq!(sniff(&v2), Verdict::Reject);
    // Absurd content length.
    let mut v1 = V1_REQUEST.to_vec();
    v1[18] = 0x80;
    assert_eq!(sniff(&v1), Verdict::Reject);
    // Response status high byte.
    let mut r = V1_RESPONSE.to_vec();
    r[10] = 0x12;
    assert_eq!(sniff(&r), Verdict::Reject);
}

// ---- decoding ---------------------------------------------------------------

#[test]
fn v2_response_with_crc() {
    let wire = v2_response();
    let f = one(&wire);
    assert_eq!(f.wire(), &wire[..]);
    assert_eq!(f.version(), Version::V2);
    assert_eq!(f.kind(), Kind::Response);
    assert!(!f.is_request() && !f.is_heartbeat());
    assert_eq!(f.cmd_code(), cmd::RESPONSE);
    assert_eq!((f.ver1(), f.ver2()), (Some(2), 1));
    assert_eq!(f.request_id(), 1);
    assert_eq!(f.codec(), codec::HESSIAN2);
    assert_eq!(f.switch(), Some(SWITCH_CRC));
    assert!(f.has_crc());
    assert_eq!(f.crc(), Some(0x1046_32a6));
    assert_eq!(f.status(), Some(status::SUCCESS));
    assert_eq!(f.timeout_ms(), None);
    assert_eq!(
        f.class_name(),
        b"com.alipay.sofa.rpc.core.response.SofaResponse"
    );
    assert_eq!(f.header(), b"");
    assert_eq!(f.content().len(), 0x62);
    assert_eq!(f.content()[..2], [0x4f, 0xbe]);
    assert_eq!(f.get(&Field::Service), None);

    // Any flipped bit fails the CRC.
    for at in [0x20, wire.len() - 5, wire.len() - 1] {
        let mut bad = wire.clone();
        bad[at] ^= 0x01;
        assert_eq!(
            frames(&bad).unwrap_err(),
            CodecError::malformed("bolt", "CRC32 mismatch"),
            "{at}"
        );
    }
    // Without the CRC switch the same bytes are a shorter frame + garbage.
    assert_eq!(crc32(&wire[..wire.len() - 4]), 0x1046_32a6);
}

#[test]
fn v1_response_codec_11() {
    let f = one(&anthunder_response());
    assert_eq!(f.version(), Version::V1);
    assert_eq!((f.ver1(), f.switch(), f.crc()), (None, None, None));
    assert_eq!(f.request_id(), 0x2858_759e);
    assert_eq!(f.codec(), codec::PROTOBUF);
    assert_eq!(&f.content()[..], b"ping-0");
}

#[test]
fn heartbeats() {
    let req = one(V1_HEARTBEAT_REQUEST);
    assert!(req.is_heartbeat() && req.is_request());
    assert_eq!(req.kind(), Kind::Request);
    assert_eq!(req.timeout_ms(), Some(3000));
    assert_eq!(req.request_id(), 4);
    assert_eq!((req.class_name(), req.header()), (&b""[..], &b""[..]));
    assert!(req.content().is_empty());
    let resp = one(V1_HEARTBEAT_RESPONSE);
    assert!(resp.is_heartbeat() && !resp.is_request());
    assert_eq!(resp.status(), Some(status::SUCCESS));

    assert_eq!(heartbeat_request(Version::V1, 4), V1_HEARTBEAT_REQUEST);
    assert_eq!(heartbeat_response(Version::V1, 4), V1_HEARTBEAT_RESPONSE);
    for v in [Version::V1, Version::V2] {
        let f = one(&heartbeat_request(v, 77));
        assert!(f.is_heartbeat() && f.is_request() && f.request_id() == 77);
        assert_eq!(f.version(), v);
        assert_eq!(f.has_crc(), v == Version::V2);
        let f = one(&heartbeat_response(v, 77));
        assert!(f.is_heartbeat() && !f.is_request() && f.request_id() == 77);
    }
}

#[test]
fn request_with_header_map() {
    let header = encode_header_map([
        (
            &b"sofa_head_target_service"[..],
            Some(&b"com.example.EchoService:1.0"[..]),
        ),
        (b"sofa_head_method_name", Some(b"echo")),
        (b"sofa_head_target_app", None),
        (b"uid", Some(b"")),
    ]);
    for v in [Version::V1, Version::V2] {
        let wire = request(v, false, 9, codec::HESSIAN2, 1500, b"cls", &header, b"body");
        let f = one(&wire);
        assert_eq!(f.kind(), Kind::Request);
        assert_eq!(f.cmd_code(), cmd::REQUEST);
        assert_eq!(f.timeout_ms(), Some(1500));
        assert_eq!(f.status(), None);
        assert_eq!(f.class_name(), b"cls");
        assert_eq!(f.header(), &header[..]);
        assert_eq!(&f.content()[..], b"body");
        let entries: Vec<_> = f.header_map().map(Result::unwrap).collect();
        assert_eq!(entries.len(), 4);
        assert_eq!(entries[2], (&b"sofa_head_target_app"[..], None));
        assert_eq!(entries[3], (&b"uid"[..], Some(&b""[..])));
        assert_eq!(
            f.get(&Field::Service),
            Some(&b"com.example.EchoService:1.0"[..])
        );
        assert_eq!(f.get(&Field::RpcMethod), Some(&b"echo"[..]));
        assert_eq!(f.get(&Field::Header("UID".into())), Some(&b""[..]));
        assert_eq!(f.get(&Field::Header("sofa_head_target_app".into())), None);
        assert_eq!(f.get(&Field::Host), None);
    }
    // `service` wins over `sofa_head_target_service`.
    let header = encode_header_map([
        (&b"sofa_head_target_service"[..], Some(&b"b"[..])),
        (b"service", Some(b"a")),
    ]);
    let f = one(&request(Version::V1, true, 1, 1, 0, b"", &header, b""));
    assert_eq!(f.kind(), Kind::Oneway);
    assert!(f.is_request());
    assert_eq!(f.get(&Field::Service), Some(&b"a"[..]));
}

#[test]
fn malformed_header_maps() {
    let cases: &[&[u8]] = &[
        &[0, 0, 0],
        &[0, 0, 0, 5, b'a'],
        &[0xff, 0xff, 0xff, 0xfe],
        &[0, 0, 0, 1, b'k'],
        &[0, 0, 0, 1, b'k', 0, 0, 0, 9, b'v'],
    ];
    for bytes in cases {
        let items: Vec<_> = header_map(bytes).collect();
        assert!(items.last().unwrap().is_err(), "{bytes:?}");
        assert_eq!(items.iter().filter(|r| r.is_err()).count(), 1);
    }
    // A frame whose header is not a simple map still decodes; lookups find nothing.
    let f = one(&request(
        Version::V1,
        false,
        1,
        1,
        0,
        b"",
        b"\x00\x00\x00\x09x",
        b"",
    ));
    assert_eq!(f.get(&Field::Service), None);
    assert_eq!(header_map(b"").count(), 0);
}

#[test]
fn responses_encode() {
    for v in [Version::V1, Version::V2] {
        let f = one(&response(
            v,
            12,
            codec::HESSIAN2,
            status::NO_PROCESSOR,
            "no route to service",
        ));
        assert_eq!(f.version(), v);
        assert_eq!(f.kind(), Kind::Response);
        assert_eq!(f.cmd_code(), cmd::RESPONSE);
        assert_eq!(f.status(), Some(status::NO_PROCESSOR));
        assert_eq!(f.request_id(), 12);
        assert_eq!(f.class_name(), b"");
        assert_eq!(&f.content()[..], b"\x13no route to service");
        let long = "x".repeat(40);
        let f = one(&response(v, 12, codec::HESSIAN2, status::TIMEOUT, &long));
        let content = f.content();
        assert_eq!(
            crate::hessian2::read_string(&content).unwrap().0.as_ref(),
            long.as_bytes()
        );
        assert_eq!(content[0], b'S');
        // Protobuf (or an empty message): no content.
        let f = one(&response(
            v,
            12,
            codec::PROTOBUF,
            status::TIMEOUT,
            "timeout",
        ));
        assert!(f.content().is_empty());
        let f = one(&response(v, 12, codec::HESSIAN2, status::TIMEOUT, ""));
        assert!(f.content().is_empty());
    }
}

#[test]
fn request_id_remap() {
    let wire = v2_response();
    let f = one(&wire);
    let g = one(&with_request_id(&f, 0xdead_beef));
    assert_eq!(g.request_id(), 0xdead_beef);
    assert_eq!(g.content(), f.content());
    assert_ne!(g.crc(), f.crc());
    let back = with_request_id(&g, 1);
    assert_eq!(back, wire);
    let f = one(&anthunder_response());
    let g = one(&with_request_id(&f, 7));
    assert_eq!(g.request_id(), 7);
    assert_eq!(g.wire()[9..], f.wire()[9..]);
}

#[test]
fn incremental_and_limits() {
    let wire = v2_response();
    let mut dec = super::Decoder::default();
    let mut buf = BytesMut::new();
    for (i, b) in wire.iter().enumerate() {
        buf.extend_from_slice(&[*b]);
        let got = dec.decode(&mut buf).unwrap();
        assert_eq!(got.is_some(), i == wire.len() - 1, "{i}");
    }
    // Over the limit as soon as the fixed head is there.
    let mut dec = super::Decoder::new(Limits {
        max_frame: wire.len() - 1,
    });
    assert!(matches!(
        dec.decode(&mut BytesMut::from(&wire[..22])),
        Err(CodecError::FrameTooLarge { size: 170, .. })
    ));
    let mut dec = super::Decoder::new(Limits {
        max_frame: wire.len(),
    });
    assert!(
        dec.decode(&mut BytesMut::from(&wire[..]))
            .unwrap()
            .is_some()
    );
    // A 4 GiB announcement does not reserve 4 GiB.
    let mut huge = BytesMut::from(&V1_REQUEST[..22]);
    huge[18..22].copy_from_slice(&[0xff, 0xff, 0xff, 0xf0]);
    let mut dec = super::Decoder::new(Limits {
        max_frame: usize::MAX,
    });
    assert_eq!(dec.decode(&mut huge), Ok(None));
    assert!(huge.capacity() < 1024 * 1024);
}

#[test]
fn bad_heads() {
    for input in [
        &[0x03][..],
        &[0x00],
        &[0x01, 0x03],
        &[0x02, 0x02, 0x07],
        b"GET /",
    ] {
        assert!(
            matches!(frames(input), Err(CodecError::Malformed { .. })),
            "{input:?}"
        );
    }
    assert_eq!(frames(&[0x01]).unwrap().0.len(), 0);
    assert_eq!(frames(&[0x02, 0x02]).unwrap().0.len(), 0);
}

#[test]
fn frame_parse() {
    let wire = Bytes::from(v2_response());
    assert_eq!(Frame::parse(wire.clone()).unwrap().wire(), &wire);
    assert!(Frame::parse(wire.slice(..30)).is_err());
    assert!(Frame::parse(wire.slice(..5)).is_err());
    let mut longer = wire.to_vec();
    longer.push(0);
    assert!(Frame::parse(Bytes::from(longer)).is_err());
}

#[test]
fn crc32_check_values() {
    assert_eq!(crc32(b""), 0);
    assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    assert_eq!(
        crc32(b"The quick brown fox jumps over the lazy dog"),
        0x414f_a339
    );
}

#[test]
fn frames_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Frame>();
    send_sync::<super::Decoder>();
}

/// sofa-bolt-node's server encoding `new Error('no route for service X')` as
/// the content of an error response (its RpcServerException, Hessian as SOFA
/// stacks write it), captured from the library.
const NODE_SERVER_EXCEPTION: &str = "4fc834636f6d2e616c697061792e72656d6f74696e672e7270632e657863657074696f6e2e527063536572766572457863657074696f6e930d64657461696c4d6573736167650a737461636b54726163650563617573656f901d4572726f723a206e6f20726f75746520666f72207365727669636520585674001c5b6a6176612e6c616e672e537461636b5472616365456c656d656e746e007a4e";

#[test]
fn server_exceptions_are_written_as_sofa_servers_write_them() {
    assert_eq!(
        server_exception_content("Error: no route for service X"),
        hex(NODE_SERVER_EXCEPTION)
    );
    for v in [Version::V1, Version::V2] {
        let f = one(&server_exception(
            v,
            12,
            codec::HESSIAN2,
            status::NO_PROCESSOR,
            "switchyard: no route",
        ));
        assert_eq!(f.version(), v);
        assert_eq!(f.kind(), Kind::Response);
        assert_eq!(f.status(), Some(status::NO_PROCESSOR));
        assert_eq!(f.request_id(), 12);
        assert_eq!(f.class_name(), SERVER_EXCEPTION_CLASS.as_bytes());
        assert_eq!(
            &f.content()[..],
            &server_exception_content("switchyard: no route")[..]
        );
        // A message past 31 UTF-16 units is one `S` chunk.
        let long = "é".repeat(40);
        let content = server_exception_content(&long);
        let at = content.windows(2).position(|w| w == b"o\x90").unwrap() + 2;
        assert_eq!(&content[at..at + 3], b"S\x00\x28");
        assert_eq!(&content[at + 3..at + 3 + long.len()], long.as_bytes());
        // Protobuf, or no message: the status alone.
        for (codec, message) in [(codec::PROTOBUF, "timeout"), (codec::HESSIAN2, "")] {
            let f = one(&server_exception(v, 12, codec, status::TIMEOUT, message));
            assert!(f.content().is_empty() && f.class_name().is_empty());
        }
    }
}

#[test]
fn a_new_header_keeps_the_rest_of_the_frame() {
    let header = encode_header_map([(&b"service"[..], Some(&b"a"[..]))]);
    for version in [Version::V1, Version::V2] {
        let f = one(&request(
            version,
            false,
            7,
            1,
            3000,
            b"com.x.Req",
            &header,
            b"content",
        ));
        let new = encode_header_map([
            (&b"service"[..], Some(&b"a"[..])),
            (b"x-env", Some(b"prod")),
        ]);
        let g = Frame::parse(with_header(&f, &new).unwrap()).expect("a valid frame (CRC too)");
        assert_eq!(g.has_crc(), f.has_crc());
        assert_eq!(
            (
                g.request_id(),
                g.timeout_ms(),
                g.class_name(),
                &g.content()[..]
            ),
            (7, Some(3000), &b"com.x.Req"[..], &b"content"[..])
        );
        assert_eq!(g.header_value("x-env"), Some(&b"prod"[..]));
        assert_eq!(g.header_value("service"), Some(&b"a"[..]));
    }
}
