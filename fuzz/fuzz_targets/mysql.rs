//! Fuzz the MySQL codec from both sides. The first input byte picks the
//! read size and the response flavour; the rest is the stream.
//!
//! * Framing: no panic; the packets' wire bytes concatenate to a prefix of
//!   the input; reads of any size give the same packets as one read.
//! * Client side: the first packet through the greeting-response, SSLRequest
//!   and COM_CHANGE_USER parsers; every later packet as a command (command
//!   name and response shape, and COM_QUERY text through the statement
//!   classifier and the digest).
//! * Server side: the first packet through the greeting parser; every later
//!   packet through `ResponseState` (for the shape the first byte picks, with
//!   and without CLIENT_DEPRECATE_EOF), restarting after each finished
//!   response, plus OK / ERR / AuthSwitch parsers. Re-encoded greetings and
//!   handshake responses decode to the same fields.
//!
//! Seeds: `fuzz/seeds/mysql/` (client and server streams of the captured vectors).
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use switchyard_codecs::Decoder;
use switchyard_codecs::mysql::handshake::{
    encode_greeting, encode_handshake_response, is_ssl_request, parse_auth_switch,
    parse_change_user, parse_greeting, parse_handshake_response,
};
use switchyard_codecs::mysql::response::{Expect, parse_err, parse_ok};
use switchyard_codecs::mysql::{
    Command, Limits, Packet, PacketDecoder, ResponseState, Step, classify, command, digest,
};

fn run(input: &[u8], chunk: usize) -> (Vec<Packet>, bool) {
    let mut dec = PacketDecoder::new(Limits {
        max_message: 1 << 20,
    });
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in input.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(p)) => out.push(p),
                Ok(None) => break,
                Err(_) => return (out, false),
            }
        }
    }
    (out, true)
}

fuzz_target!(|data: &[u8]| {
    let Some((&knob, stream)) = data.split_first() else {
        return;
    };
    let (packets, _) = run(stream, stream.len());
    let wire: Vec<u8> = packets.iter().flat_map(|p| p.wire().to_vec()).collect();
    assert!(stream.starts_with(&wire));
    let (again, _) = run(stream, usize::from(knob % 13) + 1);
    assert_eq!(again, packets);

    // Client side.
    if let Some(first) = packets.first() {
        let payload = first.payload();
        let _ = is_ssl_request(&payload);
        if let Ok(h) = parse_handshake_response(&payload) {
            let back = parse_handshake_response(&encode_handshake_response(&h))
                .expect("re-encoded response");
            assert_eq!(
                (back.user, back.auth, back.database),
                (h.user, h.auth, h.database)
            );
        }
        let _ = parse_change_user(&payload, u32::from(knob) << 12 | 0xFFFF);
    }
    for p in packets.iter().skip(1) {
        let payload = p.payload();
        if let Some(&b) = payload.first() {
            let c = Command(b);
            let _ = (c.name(), c.expect());
            if b == command::QUERY {
                let sql = payload.get(1..).unwrap_or_default();
                let s = classify(sql);
                assert!(!(s.read && s.pins));
                assert!(digest(sql, 64).len() <= 64);
            }
        }
    }

    // Server side.
    if let Some(first) = packets.first()
        && let Ok(g) = parse_greeting(&first.payload())
        && g.nonce.len() == 20
        && !g.server_version.contains(&0)
    {
        let back = parse_greeting(&encode_greeting(&g)).expect("re-encoded greeting");
        assert_eq!(back.connection_id, g.connection_id);
        assert_eq!(back.server_version, g.server_version);
    }
    let shapes = [
        Expect::ResultSet,
        Expect::Prepare,
        Expect::Rows,
        Expect::Single,
        Expect::FieldList,
    ];
    let expect = shapes[usize::from(knob >> 4) % shapes.len()];
    let deprecate_eof = knob & 8 != 0;
    let mut state = ResponseState::new(expect, deprecate_eof);
    for p in packets.iter().skip(1) {
        let payload = p.payload();
        let _ = (
            parse_ok(&payload),
            parse_err(&payload),
            parse_auth_switch(&payload),
        );
        match state.feed(p) {
            Ok(Step::Done(_)) => state = ResponseState::new(expect, deprecate_eof),
            Ok(_) => {}
            Err(_) => state = ResponseState::new(expect, deprecate_eof),
        }
    }
});
