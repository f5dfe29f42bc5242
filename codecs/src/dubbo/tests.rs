//! Unit tests of the Dubbo codec on literal bytes.
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

/// `plus(20, 22)` from `dubbo/python-dubbo-ssl-client.c2s.bin` (dubbo-ssl-python,
/// request id 0): attachments path, interface, version, group.
fn python_plus() -> Vec<u8> {
    hex("dabbc20000000000000000000000009406322e372e32331b636f6d2e6e6f64656a732e746573742e5465737453657276
         69636505312e302e3004706c7573024949a4a64804706174681b636f6d2e6e6f64656a732e746573742e546573745365
         727669636509696e746572666163651b636f6d2e6e6f64656a732e746573742e54657374536572766963650776657273
         696f6e05312e302e300567726f7570034853465a")
}

/// The status-80 response of `dubbo/node-client-error-heartbeat.s2c.bin` (id 3).
fn method_not_found() -> Vec<u8> {
    hex("dabb0250000000000000000300000047304543616e206e6f742066696e64206d6574686f643a20636f6d2e6e6f6465
         6a732e746573742e54657374536572766963653a312e302e30236e6f537563684d6574686f642829")
}

/// Heartbeat request (flag 0xe2) and response (flag 0x22) of the same session (id 4).
const HEARTBEAT_REQUEST: &[u8] = &[
    0xda, 0xbb, 0xe2, 0x00, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 1, b'N',
];
const HEARTBEAT_RESPONSE: &[u8] = &[
    0xda, 0xbb, 0x22, 0x14, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 1, b'N',
];

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

/// First bytes of `dubbo/node-client-pipelined.c2s.bin` (flag 0xc2:
/// request | two-way | hessian2) and a heartbeat event (flag 0xe2).
const REQUEST: &[u8] = &[0xda, 0xbb, 0xc2, 0x00, 0x00, 0x00, 0x00, 0x00];
const HEARTBEAT: &[u8] = &[0xda, 0xbb, 0xe2, 0x00];

#[test]
fn requests() {
    for frame in [REQUEST, HEARTBEAT] {
        for n in 0..3 {
            assert_eq!(sniff(&frame[..n]), Verdict::NeedMore);
        }
        for n in 3..=frame.len() {
            assert_eq!(sniff(&frame[..n]), Verdict::Match(Protocol::Dubbo));
        }
    }
}

#[test]
fn rejects() {
    // A response (flag 0x02: no request bit) is not a client's first frame.
    assert_eq!(sniff(&[0xda, 0xbb, 0x02]), Verdict::Reject);
    assert_eq!(sniff(&[0xda, 0xbc]), Verdict::Reject);
    assert_eq!(sniff(&[0xdb]), Verdict::Reject);
    assert_eq!(sniff(b"GET"), Verdict::Reject);
}

#[test]
fn request_header_and_invocation() {
    let wire = python_plus();
    let f = one(&wire);
    assert_eq!(f.wire(), &wire[..]);
    assert!(f.is_request() && f.is_two_way() && !f.is_event() && !f.is_heartbeat());
    assert_eq!(f.serialization_id(), SERIALIZATION_HESSIAN2);
    assert_eq!(f.status(), None);
    assert_eq!(f.request_id(), 0);
    assert_eq!(f.body_len(), 0x94);
    assert_eq!(f.body(), wire[16..]);

    let inv = f.invocation().unwrap().unwrap();
    assert_eq!(inv.dubbo_version(), b"2.7.23");
    assert_eq!(inv.path(), b"com.nodejs.test.TestService");
    assert_eq!(inv.service_version(), b"1.0.0");
    assert_eq!(inv.method(), b"plus");
    assert_eq!(inv.parameter_types(), b"II");
    assert_eq!(inv.parameter_count(), 2);
    assert_eq!(&inv.args()[..], &[0xa4, 0xa6]);
    assert_eq!(inv.attachments_wire().first(), Some(&b'H'));
    assert_eq!(inv.attachments_wire().last(), Some(&b'Z'));
    let keys: Vec<&[u8]> = inv.attachments().iter().map(|(k, _)| &k[..]).collect();
    assert_eq!(keys, [&b"path"[..], b"interface", b"version", b"group"]);
    assert_eq!(inv.attachment("GROUP"), Some(&b"HSF"[..]));

    assert_eq!(
        f.get(&Field::Service),
        Some(&b"com.nodejs.test.TestService"[..])
    );
    assert_eq!(f.get(&Field::RpcMethod), Some(&b"plus"[..]));
    assert_eq!(f.get(&Field::Header("version".into())), Some(&b"1.0.0"[..]));
    assert_eq!(f.get(&Field::Header("group".into())), Some(&b"HSF"[..]));
    assert_eq!(f.get(&Field::Header("timeout".into())), None);
    assert_eq!(f.get(&Field::Path), None);

    // The invocation is a view: its strings point into the frame.
    let body = f.body();
    let range = body.as_ptr_range();
    assert!(range.contains(&inv.method().as_ptr()));
}

#[test]
fn responses_and_events_are_not_parsed() {
    let f = one(&method_not_found());
    assert!(!f.is_request() && !f.is_two_way() && !f.is_event());
    assert_eq!(f.status(), Some(status::SERVER_ERROR));
    assert_eq!(f.request_id(), 3);
    assert_eq!(f.invocation(), Ok(None));
    assert_eq!(f.get(&Field::Service), None);

    let hb = one(HEARTBEAT_REQUEST);
    assert!(hb.is_request() && hb.is_two_way() && hb.is_event() && hb.is_heartbeat());
    assert_eq!(hb.invocation(), Ok(None));
    let hb = one(HEARTBEAT_RESPONSE);
    assert!(!hb.is_request() && hb.is_event() && hb.is_heartbeat());
    assert_eq!(hb.status(), Some(status::OK));

    // Another serialization (fastjson, id 6) is never looked into.
    let mut other = python_plus();
    other[2] = 0xc6;
    let f = one(&other);
    assert_eq!(f.serialization_id(), 6);
    assert_eq!(f.invocation(), Ok(None));
}

#[test]
fn encoders_match_the_captures() {
    assert_eq!(heartbeat_request(4), HEARTBEAT_REQUEST);
    assert_eq!(
        heartbeat_response(4, SERIALIZATION_HESSIAN2),
        HEARTBEAT_RESPONSE
    );
    let expected = method_not_found();
    let message = std::str::from_utf8(&expected[18..]).unwrap();
    assert_eq!(
        response(3, status::SERVER_ERROR, SERIALIZATION_HESSIAN2, message),
        expected
    );
    let f = one(&response(9, status::SERVICE_NOT_FOUND, 2, "no route"));
    assert_eq!(f.status(), Some(60));
    assert_eq!(f.request_id(), 9);
    assert_eq!(
        crate::hessian2::read_string(&f.body()).unwrap().0.as_ref(),
        b"no route"
    );
}

#[test]
fn request_id_remap() {
    let wire = python_plus();
    let f = one(&wire);
    let h = header_with_request_id(&f, 0x0102_0304_0506_0708);
    let mut again = h.to_vec();
    again.extend_from_slice(&f.body());
    let g = one(&again);
    assert_eq!(g.request_id(), 0x0102_0304_0506_0708);
    assert_eq!(g.body(), f.body());
    assert_eq!(g.header()[..4], f.header()[..4]);
    assert_eq!(g.header()[12..], f.header()[12..]);
}

#[test]
fn incremental_and_limits() {
    let wire = python_plus();
    let mut dec = super::Decoder::default();
    let mut buf = BytesMut::new();
    for (i, b) in wire.iter().enumerate() {
        buf.extend_from_slice(&[*b]);
        let got = dec.decode(&mut buf).unwrap();
        assert_eq!(got.is_some(), i == wire.len() - 1, "{i}");
    }
    // Over the limit as soon as the header is there.
    let mut dec = super::Decoder::new(Limits { max_body: 0x93 });
    let mut buf = BytesMut::from(&wire[..16]);
    assert!(matches!(
        dec.decode(&mut buf),
        Err(CodecError::FrameTooLarge { size: 0x94, .. })
    ));
    let mut dec = super::Decoder::new(Limits { max_body: 0x94 });
    assert!(
        dec.decode(&mut BytesMut::from(&wire[..]))
            .unwrap()
            .is_some()
    );
    // A 4 GiB announcement does not reserve 4 GiB.
    let mut huge = BytesMut::from(
        &[
            0xda, 0xbb, 0xc2, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xfe,
        ][..],
    );
    let mut dec = super::Decoder::new(Limits {
        max_body: usize::MAX,
    });
    assert_eq!(dec.decode(&mut huge), Ok(None));
    assert!(huge.capacity() < 1024 * 1024);
}

#[test]
fn bad_magic() {
    for input in [&[0xdb][..], &[0xda, 0xbc], b"GET / HTTP/1.1\r\n\r\n"] {
        assert!(matches!(frames(input), Err(CodecError::Malformed { .. })));
    }
    assert_eq!(frames(&[0xda]).unwrap().0.len(), 0);
}

#[test]
fn frame_parse() {
    let wire = Bytes::from(python_plus());
    assert_eq!(Frame::parse(wire.clone()).unwrap().wire(), &wire);
    assert!(Frame::parse(wire.slice(..20)).is_err());
    let mut longer = wire.to_vec();
    longer.push(0);
    assert!(Frame::parse(Bytes::from(longer)).is_err());
}

#[test]
fn descriptors() {
    for (desc, n) in [
        (&b""[..], 0),
        (b"I", 1),
        (b"II", 2),
        (b"Ljava/lang/String;", 1),
        (b"Ljava/lang/String;I[J", 3),
        (b"[[Ljava/lang/Object;ZBCDFIJS", 9),
        (
            b"Ljava/lang/String;[Ljava/lang/String;[Ljava/lang/Object;",
            3,
        ),
    ] {
        assert_eq!(parameter_count(desc), Ok(n), "{desc:?}");
    }
    for bad in [&b"L"[..], b"L;", b"Ljava/lang/String", b"[", b"X", b"I,I"] {
        assert!(parameter_count(bad).is_err(), "{bad:?}");
    }
}

/// Build a Hessian 2 request body from its parts.
pub(super) fn request_body(
    strings: [&str; 5],
    args: &[crate::hessian2::Value],
    attachments: Option<&[(&str, &str)]>,
) -> Vec<u8> {
    let mut body = Vec::new();
    for s in strings {
        crate::hessian2::write_string(&mut body, s);
    }
    for a in args {
        a.encode(&mut body);
    }
    if let Some(attachments) = attachments {
        body.push(b'H');
        for (k, v) in attachments {
            crate::hessian2::write_string(&mut body, k);
            crate::hessian2::write_string(&mut body, v);
        }
        body.push(b'Z');
    }
    body
}

#[test]
fn invocation_variants() {
    use crate::hessian2::Value;
    // Object arguments whose class is then used in the attachments; a non-string
    // attachment value is skipped; an interface attachment wins over the path.
    let point = Value::Object {
        class: "P".into(),
        fields: vec![("x".into(), Value::Int(1))],
    };
    let mut body = request_body(
        ["2.0.2", "svc.Path", "", "m", "Lcom/P;[I"],
        &[
            point,
            Value::List {
                type_name: Some("[int".into()),
                items: vec![Value::Int(7)],
            },
        ],
        None,
    );
    body.extend_from_slice(b"H\x09interface\x05iface\x01o\x60\x92\x07timeout\x043000Z");
    let f = one(&encode(0xc2, 0, 5, &body));
    let inv = f.invocation().unwrap().unwrap();
    assert_eq!(inv.parameter_count(), 2);
    assert_eq!(inv.service(), b"iface");
    assert_eq!(f.get(&Field::Service), Some(&b"iface"[..]));
    assert_eq!(f.get(&Field::Header("timeout".into())), Some(&b"3000"[..]));
    assert_eq!(inv.attachments().len(), 2);
    assert_eq!(f.get(&Field::Header("version".into())), None);

    // No attachments at all; a null service version.
    let mut body = Vec::new();
    for s in ["2.0.2", "svc"] {
        crate::hessian2::write_string(&mut body, s);
    }
    body.push(b'N');
    for s in ["m", ""] {
        crate::hessian2::write_string(&mut body, s);
    }
    let f = one(&encode(0xc2, 0, 6, &body));
    let inv = f.invocation().unwrap().unwrap();
    assert_eq!(inv.service_version(), b"");
    assert!(inv.attachments().is_empty());
    assert_eq!(f.get(&Field::Service), Some(&b"svc"[..]));

    // A chunked method name is joined into its own buffer.
    let mut body = Vec::new();
    for s in ["2.0.2", "svc", "1"] {
        crate::hessian2::write_string(&mut body, s);
    }
    body.extend_from_slice(b"R\x00\x02paS\x00\x02ng\x00");
    body.extend_from_slice(b"H\x01k\x01vZ");
    let f = one(&encode(0xc2, 0, 7, &body));
    assert_eq!(f.get(&Field::RpcMethod), Some(&b"pang"[..]));

    // Malformed bodies: an error from invocation(), None from the metadata.
    for body in [
        &b""[..],
        b"\x05",
        b"\x012\x01s\x011\x01m\x01I",
        b"\x012\x01s\x011\x01m\x01X\x91H",
        b"\x012\x01s\x011\x01m\x00\x91",
    ] {
        let f = one(&encode(0xc2, 0, 8, body));
        assert!(f.invocation().is_err(), "{body:02x?}");
        assert_eq!(f.get(&Field::Service), None);
    }
}

#[test]
fn frames_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Frame>();
    send_sync::<Invocation>();
    send_sync::<super::Decoder>();
}

#[test]
fn attachments_edited_keep_the_call() {
    let f = one(&python_plus());
    let wire = with_attachments(&f, |a| {
        a.set(b"GROUP", b"edge");
        a.remove(b"interface");
        a.add(b"x-env", b"prod");
    })
    .unwrap()
    .unwrap();
    let g = Frame::parse(wire).unwrap();
    assert_eq!(
        g.header()[..12],
        f.header()[..12],
        "flag, status and id kept"
    );
    let (a, b) = (
        f.invocation().unwrap().unwrap(),
        g.invocation().unwrap().unwrap(),
    );
    assert_eq!((a.method(), a.args()), (b.method(), b.args()));
    let entries: Vec<(&[u8], &[u8])> = b
        .attachments()
        .iter()
        .map(|(k, v)| (&k[..], &v[..]))
        .collect();
    assert_eq!(
        entries,
        [
            (&b"path"[..], &b"com.nodejs.test.TestService"[..]),
            (b"version", b"1.0.0"),
            (b"group", b"edge"),
            (b"x-env", b"prod"),
        ]
    );
    // Not a request with an invocation: nothing to edit.
    let heartbeat = one(&heartbeat_request(3));
    assert_eq!(with_attachments(&heartbeat, |_| {}).unwrap(), None);
}
