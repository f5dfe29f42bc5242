//! The Dubbo codec over the captured sessions in `shared/vectors/dubbo`: every
//! frame of both directions decodes, with nothing left over and the same
//! frames in any read size; every request is answered under its id; the
//! invocations are those the vectors README describes.
mod common;

use switchyard_codecs::dubbo::{self, Frame, status};
use switchyard_codecs::hessian2::{self, Value};
use switchyard_codecs::{Field, Metadata};

fn read(name: &str) -> Vec<u8> {
    common::read("dubbo", name)
}

/// All frames of one file, checked for leftovers, read sizes and wire bytes.
fn frames(name: &str) -> Vec<Frame> {
    let bytes = read(name);
    let frames = common::decode_checked(dubbo::Decoder::default, &bytes, name, &[1, 3, 7, 16, 64]);
    let wire: Vec<u8> = frames.iter().flat_map(|f| f.wire().to_vec()).collect();
    assert_eq!(wire, bytes, "{name}: wire bytes do not concatenate back");
    frames
}

/// Both directions of a session; every two-way request answered under its id, in order.
fn session(name: &str) -> (Vec<Frame>, Vec<Frame>) {
    let c2s = frames(&format!("{name}.c2s.bin"));
    let s2c = frames(&format!("{name}.s2c.bin"));
    assert!(
        c2s.iter().all(Frame::is_request),
        "{name}: c2s has a response"
    );
    assert!(
        s2c.iter().all(|f| !f.is_request()),
        "{name}: s2c has a request"
    );
    let asked: Vec<u64> = c2s
        .iter()
        .filter(|f| f.is_two_way())
        .map(Frame::request_id)
        .collect();
    let answered: Vec<u64> = s2c.iter().map(Frame::request_id).collect();
    assert_eq!(asked, answered, "{name}: request ids");
    for (req, resp) in c2s.iter().zip(&s2c) {
        assert_eq!(req.is_event(), resp.is_event(), "{name}: event flags");
        assert_eq!(req.serialization_id(), resp.serialization_id());
    }
    (c2s, s2c)
}

fn method(f: &Frame) -> &[u8] {
    f.get(&Field::RpcMethod).expect("a method")
}

/// The decoded arguments of a request.
fn args(f: &Frame) -> Vec<Value> {
    let inv = f.invocation().unwrap().unwrap();
    let mut r = hessian2::Reader::new(inv.args(), hessian2::Limits::default());
    let values = (0..inv.parameter_count())
        .map(|_| r.read_value().unwrap())
        .collect();
    assert!(r.is_at_end());
    values
}

/// The result of an OK response: the response-type int, then the value.
fn result(f: &Frame) -> Value {
    assert_eq!(f.status(), Some(status::OK));
    let body = f.body();
    let mut r = hessian2::Reader::new(&body, hessian2::Limits::default());
    // RESPONSE_VALUE (1) or RESPONSE_VALUE_WITH_ATTACHMENTS (4).
    let kind = r.read_value().unwrap();
    assert!(matches!(kind, Value::Int(1 | 4)), "{kind:?}");
    let value = r.read_value().unwrap();
    if kind == Value::Int(4) {
        r.skip_value().unwrap();
    }
    assert!(r.is_at_end());
    value
}

fn check_node_request(f: &Frame) {
    let inv = f.invocation().unwrap().unwrap();
    assert_eq!(inv.dubbo_version(), b"5.3.0");
    assert_eq!(inv.path(), b"com.nodejs.test.TestService");
    assert_eq!(inv.service_version(), b"1.0.0");
    assert_eq!(
        f.get(&Field::Service),
        Some(&b"com.nodejs.test.TestService"[..])
    );
    assert_eq!(f.get(&Field::Header("group".into())), Some(&b"HSF"[..]));
    assert_eq!(f.get(&Field::Header("version".into())), Some(&b"1.0.0"[..]));
    assert_eq!(
        f.get(&Field::Header("service".into())),
        Some(&b"com.nodejs.test.TestService:1.0.0"[..])
    );
    assert_eq!(inv.attachment("dubbo"), Some(&b"5.3.0"[..]));
}

#[test]
fn node_client_pipelined() {
    let (c2s, s2c) = session("node-client-pipelined");
    assert_eq!(c2s.len(), 4);
    let ids: Vec<u64> = c2s.iter().map(Frame::request_id).collect();
    assert_eq!(ids, [1, 2, 3, 4]);
    for f in &c2s {
        assert_eq!(f.flag(), 0xc2);
        check_node_request(f);
    }
    assert_eq!(method(&c2s[0]), b"plus");
    assert_eq!(args(&c2s[0]), [Value::Int(1), Value::Int(2)]);
    for f in &c2s[1..] {
        assert_eq!(method(f), b"echo");
        assert_eq!(
            f.invocation().unwrap().unwrap().parameter_types(),
            b"Ljava/lang/String;"
        );
        assert_eq!(args(f), [Value::String("x".repeat(64))]);
    }
    assert_eq!(result(&s2c[0]), Value::Int(3));
    for f in &s2c[1..] {
        assert_eq!(result(f), Value::String("x".repeat(64)));
        assert_eq!(f.invocation(), Ok(None));
    }
}

#[test]
fn node_client_error_heartbeat() {
    let (c2s, s2c) = session("node-client-error-heartbeat");
    assert_eq!(c2s.len(), 4);
    let ids: Vec<u64> = c2s.iter().map(Frame::request_id).collect();
    assert_eq!(ids, [1, 2, 3, 4]);
    for f in &c2s[..3] {
        check_node_request(f);
    }
    assert_eq!(method(&c2s[0]), b"plus");
    assert_eq!(args(&c2s[0]), [Value::Int(20), Value::Int(22)]);
    assert_eq!(method(&c2s[1]), b"echo");
    assert_eq!(args(&c2s[1]), [Value::string("héllo wörld ✓ 你好")]);
    assert_eq!(method(&c2s[2]), b"noSuchMethod");
    assert_eq!(args(&c2s[2]), [Value::string("x")]);
    // The heartbeat: an event with a null body, never parsed.
    let hb = &c2s[3];
    assert_eq!(hb.flag(), 0xe2);
    assert!(hb.is_heartbeat() && hb.is_two_way());
    assert_eq!(hb.invocation(), Ok(None));
    assert_eq!(hb.get(&Field::Service), None);
    assert_eq!(hb.wire()[..], dubbo::heartbeat_request(4)[..]);

    assert_eq!(result(&s2c[0]), Value::Int(42));
    assert_eq!(result(&s2c[1]), Value::string("héllo wörld ✓ 你好"));
    let err = &s2c[2];
    assert_eq!(err.status(), Some(status::SERVER_ERROR));
    let body = err.body();
    let (message, used) = hessian2::read_string(&body).unwrap();
    assert_eq!(used, body.len());
    assert_eq!(
        &*message,
        b"Can not find method: com.nodejs.test.TestService:1.0.0#noSuchMethod()"
    );
    // The gateway's own error response is byte-identical to the server's.
    assert_eq!(
        dubbo::response(
            3,
            status::SERVER_ERROR,
            dubbo::SERIALIZATION_HESSIAN2,
            std::str::from_utf8(&message).unwrap()
        ),
        err.wire()
    );
    let hb = &s2c[3];
    assert_eq!(hb.flag(), 0x22);
    assert!(hb.is_heartbeat());
    assert_eq!(
        dubbo::heartbeat_response(4, dubbo::SERIALIZATION_HESSIAN2),
        hb.wire()
    );
}

#[test]
fn python_client() {
    let (c2s, s2c) = session("python-dubbo-ssl-client");
    let ids: Vec<u64> = c2s.iter().map(Frame::request_id).collect();
    assert_eq!(ids, [0, 1]);
    for f in &c2s {
        let inv = f.invocation().unwrap().unwrap();
        assert_eq!(inv.dubbo_version(), b"2.7.23");
        assert_eq!(inv.path(), b"com.nodejs.test.TestService");
        // This client sends the `interface` attachment.
        assert_eq!(
            inv.attachment("interface"),
            Some(&b"com.nodejs.test.TestService"[..])
        );
        assert_eq!(
            f.get(&Field::Service),
            Some(&b"com.nodejs.test.TestService"[..])
        );
        assert_eq!(f.get(&Field::Header("group".into())), Some(&b"HSF"[..]));
        assert_eq!(f.get(&Field::Header("version".into())), Some(&b"1.0.0"[..]));
    }
    assert_eq!(method(&c2s[0]), b"plus");
    assert_eq!(args(&c2s[0]), [Value::Int(20), Value::Int(22)]);
    assert_eq!(method(&c2s[1]), b"echo");
    assert_eq!(args(&c2s[1]), [Value::string("hello dubbo")]);
    assert_eq!(result(&s2c[0]), Value::Int(42));
    assert_eq!(result(&s2c[1]), Value::string("hello dubbo"));
}

#[test]
fn remapped_ids_forward_the_same_bodies() {
    for name in [
        "node-client-pipelined",
        "node-client-error-heartbeat",
        "python-dubbo-ssl-client",
    ] {
        for dir in ["c2s", "s2c"] {
            for (i, f) in frames(&format!("{name}.{dir}.bin")).iter().enumerate() {
                let new_id = 1000 + i as u64;
                let mut wire = dubbo::header_with_request_id(f, new_id).to_vec();
                wire.extend_from_slice(&f.body());
                let g = Frame::parse(wire.into()).unwrap();
                assert_eq!(g.request_id(), new_id);
                assert_eq!((g.flag(), g.status()), (f.flag(), f.status()));
                assert_eq!(g.body(), f.body());
                assert_eq!(g.invocation(), f.invocation());
            }
        }
    }
}
