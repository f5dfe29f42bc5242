//! Property tests: the decoder never panics, chunking does not change the
//! frames, and encoded frames and invocations decode back to what was encoded.
use bytes::BytesMut;
use proptest::prelude::*;

use super::tests::request_body;
use super::*;
use crate::Decoder as _;
use crate::hessian2::Value;

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

fn arg() -> impl Strategy<Value = (u8, Value)> {
    prop_oneof![
        any::<i32>().prop_map(|i| (b'I', Value::Int(i))),
        any::<i64>().prop_map(|i| (b'J', Value::Long(i))),
        any::<bool>().prop_map(|b| (b'Z', Value::Bool(b))),
        ".{0,20}".prop_map(|s| (b'S', Value::String(s))),
        prop::collection::vec(any::<i32>(), 0..5).prop_map(|v| (
            b'[',
            Value::List {
                type_name: Some("[int".into()),
                items: v.into_iter().map(Value::Int).collect()
            }
        )),
        (any::<i32>(), ".{0,8}").prop_map(|(i, s)| (
            b'O',
            Value::Object {
                class: "com.example.Arg".into(),
                fields: vec![("n".into(), Value::Int(i)), ("s".into(), Value::String(s))],
            }
        )),
    ]
}

fn descriptor_of(kind: u8) -> &'static str {
    match kind {
        b'I' => "I",
        b'J' => "J",
        b'Z' => "Z",
        b'S' => "Ljava/lang/String;",
        b'[' => "[I",
        _ => "Lcom/example/Arg;",
    }
}

/// A request, a response, or a heartbeat, as (wire bytes, request id).
fn frame() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (
            any::<u64>(),
            prop::collection::vec(arg(), 0..4),
            "[a-z.]{1,20}",
            "[a-z]{1,10}"
        )
            .prop_map(|(id, args, svc, method)| {
                let desc: String = args.iter().map(|(k, _)| descriptor_of(*k)).collect();
                let values: Vec<Value> = args.into_iter().map(|(_, v)| v).collect();
                let body = request_body(
                    ["2.0.2", &svc, "1.0", &method, &desc],
                    &values,
                    Some(&[("path", &svc), ("group", "g")]),
                );
                encode(0xc2, 0, id, &body).to_vec()
            }),
        (any::<u64>(), any::<u8>(), ".{0,40}")
            .prop_map(|(id, st, msg)| response(id, st, 2, &msg).to_vec()),
        any::<u64>().prop_map(|id| heartbeat_request(id).to_vec()),
        any::<u64>().prop_map(|id| heartbeat_response(id, 2).to_vec()),
        (any::<u64>(), prop::collection::vec(any::<u8>(), 0..64))
            .prop_map(|(id, body)| encode(0x02, 20, id, &body).to_vec()),
    ]
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(input in prop::collection::vec(any::<u8>(), 0..256), cuts in prop::collection::vec(any::<usize>(), 0..4)) {
        let (frames, _) = chunked(&input, &cuts, Limits { max_body: 128 });
        for f in &frames {
            let _ = f.invocation();
            let _ = f.get(&Field::Service);
        }
    }

    #[test]
    fn magic_noise_never_panics(body in prop::collection::vec(any::<u8>(), 0..96), flag in any::<u8>()) {
        // A well-framed frame whose body is noise: the invocation parser must cope.
        let wire = encode(flag | FLAG_REQUEST, 0, 1, &body);
        let f = Frame::parse(wire).unwrap();
        let _ = f.invocation();
        for field in [Field::Service, Field::RpcMethod, Field::Header("group".into())] {
            let _ = f.get(&field);
        }
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
            if f.is_request() && !f.is_event() {
                let inv = f.invocation().unwrap().unwrap();
                prop_assert_eq!(inv.attachment("group"), Some(&b"g"[..]));
                prop_assert_eq!(f.get(&Field::Service), Some(inv.path()));
            }
        }
    }

    #[test]
    fn invocation_round_trip(args in prop::collection::vec(arg(), 0..6), svc in "[a-zA-Z.]{1,40}", method in ".{1,20}", attachments in prop::collection::vec(("[a-z]{1,8}", ".{0,12}"), 0..6)) {
        let desc: String = args.iter().map(|(k, _)| descriptor_of(*k)).collect();
        let values: Vec<Value> = args.into_iter().map(|(_, v)| v).collect();
        let pairs: Vec<(&str, &str)> = attachments.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let body = request_body(["2.0.2", &svc, "1.0", &method, &desc], &values, Some(&pairs));
        let f = Frame::parse(encode(0xc2, 0, 42, &body)).unwrap();
        let inv = f.invocation().unwrap().unwrap();
        prop_assert_eq!(inv.path(), svc.as_bytes());
        prop_assert_eq!(inv.method(), method.as_bytes());
        prop_assert_eq!(inv.parameter_count(), values.len());
        let got: Vec<(&[u8], &[u8])> = inv.attachments().iter().map(|(k, v)| (&k[..], &v[..])).collect();
        let want: Vec<(&[u8], &[u8])> = pairs.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())).collect();
        prop_assert_eq!(got, want);
        // The args slice holds exactly the encoded arguments.
        let mut r = crate::hessian2::Reader::new(inv.args(), crate::hessian2::Limits::default());
        for v in &values {
            prop_assert_eq!(&r.read_value().unwrap(), v);
        }
        prop_assert!(r.is_at_end());
    }

    #[test]
    fn encoders_round_trip(id in any::<u64>(), st in any::<u8>(), sid in 0u8..32, msg in ".{0,200}", new_id in any::<u64>()) {
        let f = Frame::parse(response(id, st, sid, &msg)).unwrap();
        prop_assert!(!f.is_request() && !f.is_event());
        prop_assert_eq!(f.request_id(), id);
        prop_assert_eq!(f.status(), Some(st));
        prop_assert_eq!(f.serialization_id(), sid);
        let body = f.body();
        let (text, used) = crate::hessian2::read_string(&body).unwrap();
        prop_assert_eq!(used, f.body_len());
        prop_assert_eq!(&*text, msg.as_bytes());

        let hb = Frame::parse(heartbeat_request(id)).unwrap();
        prop_assert!(hb.is_heartbeat() && hb.is_two_way() && hb.request_id() == id);
        let hb = Frame::parse(heartbeat_response(id, sid)).unwrap();
        prop_assert!(hb.is_heartbeat() && !hb.is_request() && hb.request_id() == id);
        prop_assert_eq!(hb.serialization_id(), sid);

        let mut moved = header_with_request_id(&f, new_id).to_vec();
        moved.extend_from_slice(&f.body());
        let g = Frame::parse(moved.into()).unwrap();
        prop_assert_eq!(g.request_id(), new_id);
        prop_assert_eq!(g.status(), f.status());
        prop_assert_eq!(g.body(), f.body());
    }
}
