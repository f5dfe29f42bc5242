//! The Bolt codec over the captured sessions and the Java fixtures in
//! `shared/vectors/bolt`: every frame of both directions decodes (v2 CRCs
//! verified), with nothing left over and the same frames in any read size;
//! every request is answered under its id; services and methods are those the
//! vectors README describes.
mod common;

use bytes::Bytes;
use switchyard_codecs::bolt::{self, Frame, Kind, Version, cmd, codec, status};
use switchyard_codecs::{Field, Metadata, hessian2};

const SOFA_REQUEST: &[u8] = b"com.alipay.sofa.rpc.core.request.SofaRequest";
const SOFA_RESPONSE: &[u8] = b"com.alipay.sofa.rpc.core.response.SofaResponse";

fn read(name: &str) -> Vec<u8> {
    common::read("bolt", name)
}

/// All frames of one file, checked for leftovers, read sizes and wire bytes.
fn frames(name: &str) -> Vec<Frame> {
    let bytes = read(name);
    let frames = common::decode_checked(bolt::Decoder::default, &bytes, name, &[1, 3, 7, 22, 64]);
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
    let asked: Vec<u32> = c2s
        .iter()
        .filter(|f| f.kind() == Kind::Request)
        .map(Frame::request_id)
        .collect();
    let answered: Vec<u32> = s2c.iter().map(Frame::request_id).collect();
    assert_eq!(asked, answered, "{name}: request ids");
    for (req, resp) in c2s.iter().zip(&s2c) {
        assert_eq!(req.is_heartbeat(), resp.is_heartbeat(), "{name}");
        assert_eq!(req.version(), resp.version());
        assert_eq!(req.codec(), resp.codec());
    }
    (c2s, s2c)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A sofa-rpc-node request: the service in the `service` header; the method
/// only in the (pre-2.0 Hessian) body, so no RpcMethod.
fn check_node_request(f: &Frame, method: &str) {
    assert_eq!(f.kind(), Kind::Request);
    assert_eq!(f.cmd_code(), cmd::REQUEST);
    assert_eq!(f.codec(), codec::HESSIAN2);
    assert_eq!(f.timeout_ms(), Some(3000));
    assert_eq!(f.class_name(), SOFA_REQUEST);
    assert_eq!(f.header().len(), 48);
    assert_eq!(
        f.get(&Field::Service),
        Some(&b"com.nodejs.test.TestService:1.0.0"[..])
    );
    assert_eq!(f.get(&Field::RpcMethod), None);
    let content = f.content();
    let name = [&[method.len() as u8][..], method.as_bytes()].concat();
    assert!(contains(&content, &name), "method {method} not in the body");
}

fn check_node_response(f: &Frame, st: u16) {
    assert_eq!(f.kind(), Kind::Response);
    assert_eq!(f.cmd_code(), cmd::RESPONSE);
    assert_eq!(f.status(), Some(st));
    assert_eq!(f.timeout_ms(), None);
}

#[test]
fn v1_node_client_pipelined() {
    let (c2s, s2c) = session("v1-node-client-pipelined");
    assert_eq!(c2s.len(), 4);
    let ids: Vec<u32> = c2s.iter().map(Frame::request_id).collect();
    assert_eq!(ids, [1, 2, 3, 4]);
    check_node_request(&c2s[0], "plus");
    for f in &c2s[1..] {
        check_node_request(f, "echo");
    }
    for f in &c2s {
        assert_eq!(f.version(), Version::V1);
        assert_eq!(f.ver1(), None);
    }
    for f in &s2c {
        check_node_response(f, status::SUCCESS);
        assert_eq!(f.class_name(), SOFA_RESPONSE);
    }
}

#[test]
fn v1_node_client_error_heartbeat() {
    let (c2s, s2c) = session("v1-node-client-error-heartbeat");
    assert_eq!(c2s.len(), 4);
    check_node_request(&c2s[0], "plus");
    check_node_request(&c2s[1], "echo");
    check_node_request(&c2s[2], "noSuchMethod");
    let hb = &c2s[3];
    assert!(hb.is_heartbeat());
    assert_eq!(hb.kind(), Kind::Request);
    assert_eq!((hb.class_name(), hb.header()), (&b""[..], &b""[..]));
    assert!(hb.content().is_empty());
    assert_eq!(hb.get(&Field::Service), None);
    assert_eq!(
        hb.wire(),
        &bolt::heartbeat_request(Version::V1, hb.request_id())
    );

    check_node_response(&s2c[0], status::SUCCESS);
    check_node_response(&s2c[1], status::SUCCESS);
    check_node_response(&s2c[2], status::SERVER_EXCEPTION);
    assert!(contains(&s2c[2].content(), b"RpcServerException"));
    let hb = &s2c[3];
    assert!(hb.is_heartbeat() && !hb.is_request());
    assert_eq!(hb.status(), Some(status::SUCCESS));
    assert_eq!(
        hb.wire(),
        &bolt::heartbeat_response(Version::V1, hb.request_id())
    );
}

#[test]
fn v2_crc_node_client() {
    let (c2s, s2c) = session("v2-crc-node-client");
    assert_eq!((c2s.len(), s2c.len()), (1, 1));
    for f in c2s.iter().chain(&s2c) {
        assert_eq!(f.version(), Version::V2);
        assert_eq!(f.ver1(), Some(2));
        assert_eq!(f.switch(), Some(bolt::SWITCH_CRC));
        let crc = f.crc().unwrap();
        let wire = f.wire();
        assert_eq!(crc, bolt::crc32(&wire[..wire.len() - 4]));
    }
    check_node_request(&c2s[0], "plus");
    check_node_response(&s2c[0], status::SUCCESS);
    assert_eq!(s2c[0].class_name(), SOFA_RESPONSE);
}

#[test]
fn v1_protobuf_anthunder_client() {
    let (c2s, s2c) = session("v1-protobuf-anthunder-client");
    let req = &c2s[0];
    assert_eq!(req.request_id(), 0x2858_759e);
    assert_eq!(req.codec(), codec::PROTOBUF);
    assert_eq!(req.header().len(), 276);
    assert_eq!(&req.content()[..], b"ping-0");
    assert_eq!(
        req.get(&Field::Service),
        Some(&b"com.example.EchoService:1.0"[..])
    );
    assert_eq!(req.get(&Field::RpcMethod), Some(&b"echo"[..]));
    assert_eq!(
        req.get(&Field::Header("sofa_head_target_service".into())),
        Some(&b"com.example.EchoService:1.0"[..])
    );
    assert_eq!(
        req.get(&Field::Header("rpc_trace_context.sofaRpcId".into())),
        Some(&b"1"[..])
    );
    assert!(req.header_map().all(|r| r.is_ok()));
    assert_eq!(req.header_map().count(), 7);
    let resp = &s2c[0];
    assert_eq!(resp.status(), Some(status::SUCCESS));
    assert_eq!(&resp.content()[..], b"ping-0");
}

#[test]
fn java_fixtures() {
    let v2 = frames("java-v2-crc-response-sofaresponse.bin");
    assert_eq!(v2.len(), 1);
    let f = &v2[0];
    assert_eq!(f.version(), Version::V2);
    assert!(f.has_crc());
    assert_eq!(f.request_id(), 1);
    assert_eq!(f.codec(), codec::HESSIAN2);
    assert_eq!(f.status(), Some(status::SUCCESS));
    assert_eq!(f.class_name(), SOFA_RESPONSE);
    assert_eq!(f.content().len(), 750);
    // Flip one content bit: the CRC catches it.
    let mut bad = f.wire().to_vec();
    bad[100] ^= 0x40;
    assert!(Frame::parse(bad.into()).is_err());

    let v1 = frames("java-v1-response-rpcserverexception.bin");
    assert_eq!(v1.len(), 1);
    let f = &v1[0];
    assert_eq!(f.version(), Version::V1);
    assert_eq!(f.status(), Some(status::SERVER_EXCEPTION));
    assert_eq!(
        f.class_name(),
        b"com.alipay.remoting.rpc.exception.RpcServerException"
    );
    assert_eq!(f.content().len(), 1121);
}

#[test]
fn java_body_fixture_travels_as_content() {
    // A hessian body alone (SofaResponse with an error): carried unchanged
    // inside a frame. It is written in the pre-2.0 Hessian draft encoding
    // (`O` + inline type name), which the Hessian 2 reader refuses cleanly.
    let body = read("java-body-hessian-sofaresponse-with-error.bin");
    for v in [Version::V1, Version::V2] {
        let mut wire = bolt::response(v, 3, codec::HESSIAN2, status::SUCCESS, "").to_vec();
        // Rebuild by hand with the fixture as content, class SofaResponse.
        let head = if v == Version::V1 { 20 } else { 22 };
        wire.truncate(head);
        wire[head - 8..head - 6].copy_from_slice(&(SOFA_RESPONSE.len() as u16).to_be_bytes());
        wire[head - 4..head].copy_from_slice(&(body.len() as u32).to_be_bytes());
        wire.extend_from_slice(SOFA_RESPONSE);
        wire.extend_from_slice(&body);
        if v == Version::V2 {
            let crc = bolt::crc32(&wire);
            wire.extend_from_slice(&crc.to_be_bytes());
        }
        let f = Frame::parse(Bytes::from(wire)).unwrap();
        assert_eq!(&f.content()[..], &body[..]);
        assert_eq!(f.class_name(), SOFA_RESPONSE);
    }
    assert!(hessian2::skip(&body, &hessian2::Limits::default()).is_err());
}

#[test]
fn simple_map_fixture() {
    let bytes = read("fixture-header-simplemap.bin");
    let entries: Vec<(&[u8], Option<&[u8]>)> =
        bolt::header_map(&bytes).collect::<Result<_, _>>().unwrap();
    assert_eq!(entries.len(), 13);
    let get = |k: &[u8]| entries.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
    assert_eq!(
        get(b"service"),
        Some(Some(&b"com.alipay.sofa.rpc.protobuf.ProtoService:1.0"[..]))
    );
    assert_eq!(get(b"sofa_head_method_name"), Some(Some(&b"echoObj"[..])));
    assert_eq!(get(b"protocol"), Some(Some(&b"bolt"[..])));
    assert_eq!(get(b"sofa_head_target_app"), Some(None));
    assert_eq!(
        entries
            .iter()
            .filter(|(k, _)| k.starts_with(b"rpc_trace_context."))
            .count(),
        8
    );
    // Re-encoding gives the same bytes.
    assert_eq!(bolt::encode_header_map(entries.iter().copied()), bytes);
    // As the header of a request, it routes.
    let f = Frame::parse(bolt::request(
        Version::V1,
        false,
        1,
        codec::PROTOBUF,
        3000,
        SOFA_REQUEST,
        &bytes,
        b"",
    ))
    .unwrap();
    assert_eq!(
        f.get(&Field::Service),
        Some(&b"com.alipay.sofa.rpc.protobuf.ProtoService:1.0"[..])
    );
    assert_eq!(f.get(&Field::RpcMethod), Some(&b"echoObj"[..]));
}

#[test]
fn remapped_ids_keep_everything_else() {
    for name in [
        "v1-node-client-pipelined.c2s.bin",
        "v1-node-client-pipelined.s2c.bin",
        "v1-node-client-error-heartbeat.c2s.bin",
        "v1-node-client-error-heartbeat.s2c.bin",
        "v2-crc-node-client.c2s.bin",
        "v2-crc-node-client.s2c.bin",
        "v1-protobuf-anthunder-client.c2s.bin",
        "v1-protobuf-anthunder-client.s2c.bin",
        "java-v2-crc-response-sofaresponse.bin",
        "java-v1-response-rpcserverexception.bin",
    ] {
        for f in frames(name) {
            let g = Frame::parse(bolt::with_request_id(&f, 0x0a0b_0c0d)).unwrap();
            assert_eq!(g.request_id(), 0x0a0b_0c0d);
            assert_eq!(
                (
                    g.kind(),
                    g.cmd_code(),
                    g.codec(),
                    g.status(),
                    g.timeout_ms()
                ),
                (
                    f.kind(),
                    f.cmd_code(),
                    f.codec(),
                    f.status(),
                    f.timeout_ms()
                )
            );
            assert_eq!(g.class_name(), f.class_name());
            assert_eq!(g.header(), f.header());
            assert_eq!(g.content(), f.content());
            let back = bolt::with_request_id(&g, f.request_id());
            assert_eq!(&back, f.wire(), "{name}");
        }
    }
}
