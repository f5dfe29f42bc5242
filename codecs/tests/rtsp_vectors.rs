//! The RTSP codec over captured ffprobe ↔ gst-rtsp-server sessions (both
//! directions, TCP-interleaved and UDP control), decoded whole and in small
//! reads, and every message checked against `rtsp-types` as an independent
//! parser (a differential oracle).

mod common;

use common::{decode_checked, read};
use switchyard_codecs::rtsp::{Message, MessageDecoder, Version};

/// Decode one vector file and compare each message with rtsp-types' parse of
/// the same bytes; returns the messages.
fn decode_and_compare(name: &str) -> Vec<Message> {
    let bytes = read("rtsp", name);
    let msgs = decode_checked(MessageDecoder::default, &bytes, name, &[1, 3, 17, 512]);
    let mut at = 0;
    for (i, msg) in msgs.iter().enumerate() {
        let (oracle, used): (rtsp_types::Message<Vec<u8>>, usize) =
            rtsp_types::Message::parse(&bytes[at..])
                .unwrap_or_else(|e| panic!("{name}: rtsp-types cannot parse message {i}: {e}"));
        let ours_len = match msg {
            Message::Request(r) => r.wire().len() + r.body().len(),
            Message::Response(r) => r.wire().len() + r.body().len(),
            Message::Interleaved(f) => f.wire().len(),
        };
        assert_eq!(used, ours_len, "{name}: message {i} length");
        let same_headers = |ours: Vec<(&[u8], &[u8])>, theirs: Vec<(String, String)>| {
            let mut ours: Vec<(String, String)> = ours
                .into_iter()
                .map(|(n, v)| {
                    (
                        String::from_utf8_lossy(n).to_ascii_lowercase(),
                        String::from_utf8_lossy(v).into_owned(),
                    )
                })
                .collect();
            let mut theirs: Vec<(String, String)> = theirs
                .into_iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), v))
                .collect();
            ours.sort();
            theirs.sort();
            assert_eq!(ours, theirs, "{name}: message {i} headers");
        };
        match (msg, &oracle) {
            (Message::Request(r), rtsp_types::Message::Request(o)) => {
                let method: &str = o.method().into();
                assert_eq!(r.method(), method.as_bytes(), "{name}: message {i} method");
                let uri = std::str::from_utf8(r.uri()).unwrap();
                let theirs = o.request_uri().map(|u| u.as_str().to_owned());
                assert_eq!(Some(uri.to_owned()), theirs, "{name}: message {i} URI");
                assert_eq!(r.version, Version::RTSP_1_0);
                assert_eq!(o.version(), rtsp_types::Version::V1_0);
                assert_eq!(r.body().as_ref(), o.body().as_slice());
                same_headers(
                    r.headers().collect(),
                    o.headers()
                        .map(|(n, v)| (n.as_str().to_owned(), v.as_str().to_owned()))
                        .collect(),
                );
            }
            (Message::Response(r), rtsp_types::Message::Response(o)) => {
                assert_eq!(
                    r.status,
                    u16::from(o.status()),
                    "{name}: message {i} status"
                );
                assert_eq!(r.reason(), o.reason_phrase().as_bytes());
                assert_eq!(r.body().as_ref(), o.body().as_slice());
                same_headers(
                    r.headers().collect(),
                    o.headers()
                        .map(|(n, v)| (n.as_str().to_owned(), v.as_str().to_owned()))
                        .collect(),
                );
            }
            (Message::Interleaved(f), rtsp_types::Message::Data(o)) => {
                assert_eq!(f.channel, o.channel_id(), "{name}: message {i} channel");
                assert_eq!(f.payload(), o.as_slice(), "{name}: message {i} payload");
            }
            (ours, theirs) => {
                panic!("{name}: message {i}: we decode {ours:?}, rtsp-types {theirs:?}")
            }
        }
        at += used;
    }
    assert_eq!(
        at,
        bytes.len(),
        "{name}: rtsp-types walk ends where ours does"
    );
    msgs
}

fn methods(msgs: &[Message]) -> Vec<String> {
    msgs.iter()
        .filter_map(|m| match m {
            Message::Request(r) => Some(String::from_utf8_lossy(r.method()).into_owned()),
            _ => None,
        })
        .collect()
}

#[test]
fn tcp_interleaved_session_client_side() {
    let msgs = decode_and_compare("ffprobe-tcp-interleaved.c2s.bin");
    assert_eq!(
        methods(&msgs),
        ["OPTIONS", "DESCRIBE", "SETUP", "SETUP", "PLAY", "TEARDOWN"]
    );
    let transports: Vec<_> = msgs
        .iter()
        .filter_map(|m| match m {
            Message::Request(r) => r.header("transport").map(|t| t.to_vec()),
            _ => None,
        })
        .collect();
    assert_eq!(transports.len(), 2);
    let spec = &switchyard_codecs::rtsp::transport::parse(&transports[1]).unwrap()[0];
    assert!(spec.is_interleaved());
    assert_eq!(spec.channels(), Some((2, 3)));
}

#[test]
fn tcp_interleaved_session_server_side() {
    let msgs = decode_and_compare("ffprobe-tcp-interleaved.s2c.bin");
    let responses: Vec<_> = msgs
        .iter()
        .filter_map(|m| match m {
            Message::Response(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(responses.len(), 5);
    assert!(responses.iter().all(|r| r.status == 200));
    let sdp = responses[1].body();
    // Content-Length: 706 on the wire (the vectors README rounds it to "708-byte").
    assert_eq!(sdp.len(), 706, "the DESCRIBE reply's SDP");
    assert!(responses[1].header("content-base").is_some());
    let frames: Vec<_> = msgs
        .iter()
        .filter_map(|m| match m {
            Message::Interleaved(f) => Some(f),
            _ => None,
        })
        .collect();
    assert_eq!(frames.len(), 35);
    assert!(frames.iter().all(|f| [0, 1, 2, 3].contains(&f.channel)));
    // RTP version 2 in every RTP packet on the even channels.
    assert!(
        frames
            .iter()
            .filter(|f| f.channel % 2 == 0)
            .all(|f| f.payload()[0] >> 6 == 2)
    );
    let rtp_bytes: usize = frames.iter().map(|f| f.wire().len()).sum();
    assert_eq!(rtp_bytes, 32592);
}

#[test]
fn udp_control_session_both_sides() {
    let c2s = decode_and_compare("ffprobe-udp-control.c2s.bin");
    assert_eq!(
        methods(&c2s),
        ["OPTIONS", "DESCRIBE", "SETUP", "SETUP", "PLAY", "TEARDOWN"]
    );
    let s2c = decode_and_compare("ffprobe-udp-control.s2c.bin");
    assert_eq!(s2c.len(), 6);
    let mut server_ports = 0;
    for m in &s2c {
        let Message::Response(r) = m else {
            panic!("only responses on the UDP control connection")
        };
        assert_eq!(r.status, 200);
        if let Some(t) = r.header("transport") {
            let spec = &switchyard_codecs::rtsp::transport::parse(t).unwrap()[0];
            assert!(!spec.is_interleaved());
            assert!(spec.ports("client_port").is_some());
            assert!(spec.ports("server_port").is_some());
            server_ports += 1;
        }
    }
    assert_eq!(server_ports, 2);
    assert!(
        s2c.iter()
            .any(|m| matches!(m, Message::Response(r) if r.header("rtp-info").is_some()))
    );
}
