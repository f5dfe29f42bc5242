use bytes::BytesMut;
use proptest::prelude::*;

use super::*;

/// From `rtsp/ffprobe-tcp-interleaved.c2s.bin`.
const SETUP: &[u8] = b"SETUP rtsp://127.0.0.1:31554/test/stream=0 RTSP/1.0\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\nCSeq: 3\r\nUser-Agent: Lavf59.27.100\r\n\r\n";

const DESCRIBE_OK: &[u8] = b"RTSP/1.0 200 OK\r\nCSeq: 2\r\nContent-Type: application/sdp\r\nContent-Base: rtsp://127.0.0.1:31554/test/\r\nContent-Length: 10\r\n\r\nv=0\r\ns=x\r\n";

fn decode_one(bytes: &[u8]) -> Result<Option<Message>, CodecError> {
    MessageDecoder::default().decode(&mut BytesMut::from(bytes))
}

fn all(bytes: &[u8], chunk: usize) -> Vec<Message> {
    let mut dec = MessageDecoder::default();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in bytes.chunks(chunk) {
        buf.extend_from_slice(piece);
        while let Some(m) = dec.decode(&mut buf).unwrap() {
            out.push(m);
        }
    }
    assert!(buf.is_empty());
    out
}

#[test]
fn request_head_and_metadata() {
    let Some(Message::Request(r)) = decode_one(SETUP).unwrap() else {
        panic!("not a request")
    };
    assert_eq!(r.method(), b"SETUP");
    assert_eq!(r.uri(), b"rtsp://127.0.0.1:31554/test/stream=0");
    assert_eq!(r.version, Version::RTSP_1_0);
    assert_eq!(r.cseq(), Some(&b"3"[..]));
    assert_eq!(r.wire().as_ref(), SETUP);
    assert!(r.body().is_empty());
    assert_eq!(r.get(&Field::Host), Some(&b"127.0.0.1:31554"[..]));
    assert_eq!(r.get(&Field::Path), Some(&b"/test/stream=0"[..]));
    assert_eq!(r.get(&Field::Method), Some(&b"SETUP"[..]));
    assert_eq!(
        r.get(&Field::Header("transport".into())),
        Some(&b"RTP/AVP/TCP;unicast;interleaved=0-1"[..])
    );
}

#[test]
fn response_with_body_in_any_split() {
    for chunk in 1..DESCRIBE_OK.len() {
        let msgs = all(DESCRIBE_OK, chunk);
        let [Message::Response(r)] = msgs.as_slice() else {
            panic!("{msgs:?}")
        };
        assert_eq!(r.status, 200);
        assert_eq!(r.reason(), b"OK");
        assert_eq!(r.body().as_ref(), b"v=0\r\ns=x\r\n");
        assert_eq!(
            r.header("content-base"),
            Some(&b"rtsp://127.0.0.1:31554/test/"[..])
        );
    }
}

#[test]
fn interleaved_frames_between_messages() {
    let mut stream = Vec::new();
    stream.extend_from_slice(b"$\x00\x00\x03abc");
    stream.extend_from_slice(DESCRIBE_OK);
    stream.extend_from_slice(b"$\x01\x00\x00");
    stream.extend_from_slice(b"\r\n");
    stream.extend_from_slice(SETUP);
    for chunk in [1, 2, 3, 7, stream.len()] {
        let msgs = all(&stream, chunk);
        assert_eq!(msgs.len(), 4);
        let Message::Interleaved(f) = &msgs[0] else {
            panic!()
        };
        assert_eq!((f.channel, f.payload()), (0, &b"abc"[..]));
        assert_eq!(f.wire().as_ref(), b"$\x00\x00\x03abc");
        assert!(
            matches!(&msgs[2], Message::Interleaved(f) if f.channel == 1 && f.payload().is_empty())
        );
        assert!(matches!(&msgs[3], Message::Request(_)));
    }
}

#[test]
fn status_line_without_a_reason() {
    // Found by the fuzz target: the reason's range must lie inside the head
    // even when there is none, so two decodes of the same bytes are equal.
    let bytes = b"RTSP/1.0 200\r\nCSeq: 1\r\n\r\n";
    let Some(Message::Response(r)) = decode_one(bytes).unwrap() else {
        panic!()
    };
    assert_eq!((r.status, r.reason()), (200, &b""[..]));
    assert_eq!(Some(Message::Response(r)), decode_one(bytes).unwrap());
}

#[test]
fn rtsp_2_requests_decode_with_their_version() {
    let Some(Message::Request(r)) = decode_one(b"OPTIONS * RTSP/2.0\r\nCSeq: 1\r\n\r\n").unwrap()
    else {
        panic!()
    };
    assert_eq!(r.version, Version { major: 2, minor: 0 });
    assert_eq!(r.get(&Field::Path), Some(&b"*"[..]));
    assert_eq!(r.get(&Field::Host), None);
}

#[test]
fn malformed_and_oversized() {
    for bad in [
        &b"GARBAGE\r\n\r\n"[..],
        b"\x16\x03\x01\x00",
        b"OPTIONS * HTTP/1.1\r\n",
        b"RTSP/1.0 2000 OK\r\n\r\n",
        b"RTSP/x 200 OK\r\n\r\n",
        b"OPTIONS * RTSP/1.0\r\nContent-Length: x\r\n\r\n",
        b"OPTIONS * RTSP/1.0\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"OPTIONS * RTSP/1.0\r\nbad header\r\n\r\n",
        b"OPT(ONS * RTSP/1.0\r\n\r\n",
    ] {
        assert!(
            matches!(decode_one(bad), Err(CodecError::Malformed { .. })),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    assert_eq!(
        decode_one(b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n").unwrap(),
        None
    );
    let limits = Limits {
        max_head_bytes: 64,
        max_headers: 4,
        max_body_bytes: 8,
    };
    let mut dec = MessageDecoder::new(limits);
    let big = [&b"OPTIONS * RTSP/1.0\r\nX: "[..], &[b'a'; 100]].concat();
    assert!(matches!(
        dec.decode(&mut BytesMut::from(&big[..])),
        Err(CodecError::HeadTooLarge { .. })
    ));
    let mut dec = MessageDecoder::new(limits);
    let body = b"ANNOUNCE rtsp://a/ RTSP/1.0\r\nContent-Length: 9\r\n\r\n";
    assert!(matches!(
        dec.decode(&mut BytesMut::from(&body[..])),
        Err(CodecError::FrameTooLarge { .. })
    ));
}

#[test]
fn writes_messages_with_fresh_content_length() {
    let Some(Message::Response(r)) = decode_one(DESCRIBE_OK).unwrap() else {
        panic!()
    };
    let mut out = BytesMut::new();
    write_response(
        &mut out,
        r.version,
        r.status,
        r.reason(),
        r.headers(),
        b"v=0\r\n",
    );
    let Some(Message::Response(again)) = decode_one(&out).unwrap() else {
        panic!()
    };
    assert_eq!(again.body().as_ref(), b"v=0\r\n");
    assert_eq!(again.header("content-length"), Some(&b"5"[..]));
    assert_eq!(again.cseq(), Some(&b"2"[..]));
    let e = error_response(505, Some(b"7"), &[]);
    assert_eq!(
        e.as_ref(),
        b"RTSP/1.0 505 RTSP Version Not Supported\r\nCSeq: 7\r\n\r\n"
    );
    let mut out = BytesMut::new();
    write_request(
        &mut out,
        b"PLAY",
        b"rtsp://x/a",
        Version::RTSP_1_0,
        [(&b"CSeq"[..], &b"4"[..])],
        b"",
    );
    assert_eq!(out.as_ref(), b"PLAY rtsp://x/a RTSP/1.0\r\nCSeq: 4\r\n\r\n");
    assert_eq!(write_interleaved(&mut out, 0, &[0; 70_000]), None);
}

#[test]
fn session_header_parts() {
    assert_eq!(session_id(b"AbC123;timeout=60"), b"AbC123");
    assert_eq!(session_id(b" 42 "), b"42");
    assert_eq!(session_timeout(b"AbC123; timeout = 60"), Some(60));
    assert_eq!(session_timeout(b"AbC123"), None);
}

proptest! {
    #[test]
    fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut dec = MessageDecoder::default();
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = dec.decode(&mut buf) {}
    }

    #[test]
    fn split_reads_give_the_same_messages(split in 1usize..200) {
        let mut stream = Vec::new();
        stream.extend_from_slice(SETUP);
        stream.extend_from_slice(b"$\x02\x00\x05hello");
        stream.extend_from_slice(DESCRIBE_OK);
        prop_assert_eq!(all(&stream, split), all(&stream, stream.len()));
    }
}
