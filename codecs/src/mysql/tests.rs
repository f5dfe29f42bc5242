//! Unit tests on literal bytes; the captured sessions are replayed in
//! `codecs/tests/mysql_vectors.rs`.

use bytes::BytesMut;

use super::handshake::*;
use super::response::*;
use super::*;
use crate::Decoder;

fn packets(bytes: &[u8]) -> Vec<Packet> {
    let mut dec = PacketDecoder::new(Limits::default());
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Some(p) = dec.decode(&mut buf).unwrap() {
        out.push(p);
    }
    assert!(buf.is_empty());
    out
}

fn pkt(seq: u8, payload: &[u8]) -> Vec<u8> {
    packet(seq, payload).to_vec()
}

#[test]
fn framing_needs_the_whole_packet_and_keeps_the_wire_bytes() {
    let wire = pkt(0, b"\x03SELECT 1");
    let mut dec = PacketDecoder::default();
    for n in 0..wire.len() {
        let mut buf = BytesMut::from(&wire[..n]);
        assert_eq!(dec.decode(&mut buf).unwrap(), None, "{n} bytes");
    }
    let p = &packets(&wire)[0];
    assert_eq!(p.wire().as_ref(), &wire[..]);
    assert_eq!(p.seq(), 0);
    assert_eq!(p.first_byte(), Some(command::QUERY));
    assert_eq!(&p.payload()[..], b"\x03SELECT 1");
    assert!(!p.continues() && !p.is_continuation());
}

#[test]
fn messages_over_16mb_are_split_and_marked() {
    let big = vec![7u8; MAX_PAYLOAD];
    let mut wire = Vec::new();
    wire.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0]);
    wire.extend_from_slice(&big);
    wire.extend_from_slice(&pkt(1, b"tail"));
    wire.extend_from_slice(&pkt(0, b"\x0e"));
    let ps = packets(&wire);
    assert_eq!(ps.len(), 3);
    assert!(ps[0].continues() && !ps[0].is_continuation());
    assert!(!ps[1].continues() && ps[1].is_continuation());
    assert!(!ps[2].is_continuation());
    // The message limit counts every packet of the message.
    let mut dec = PacketDecoder::new(Limits {
        max_message: MAX_PAYLOAD + 2,
    });
    let mut buf = BytesMut::from(&wire[..]);
    assert!(dec.decode(&mut buf).unwrap().is_some());
    assert!(matches!(
        dec.decode(&mut buf),
        Err(CodecError::FrameTooLarge { .. })
    ));
}

#[test]
fn over_limit_is_refused_before_the_body_arrives() {
    let mut dec = PacketDecoder::new(Limits { max_message: 100 });
    let mut buf = BytesMut::from(&[0x00, 0x10, 0x00, 0x00][..]);
    assert!(matches!(
        dec.decode(&mut buf),
        Err(CodecError::FrameTooLarge { size: 4096, .. })
    ));
}

#[test]
fn greeting_round_trips() {
    let g = Greeting {
        server_version: b"5.5.5-10.11.19-switchyard".to_vec(),
        connection_id: 42,
        nonce: b"0123456789abcdefghij".to_vec(),
        capabilities: cap::PROTOCOL_41
            | cap::SECURE_CONNECTION
            | cap::PLUGIN_AUTH
            | cap::DEPRECATE_EOF,
        ext_capabilities: 0,
        collation: 45,
        status: status::AUTOCOMMIT,
        plugin: auth::NATIVE.to_vec(),
    };
    assert_eq!(parse_greeting(&encode_greeting(&g)).unwrap(), g);
    // MariaDB's extended capabilities ride in the reserved bytes, with
    // CLIENT_MYSQL cleared; a MySQL greeting (CLIENT_MYSQL set) has none.
    let maria = Greeting {
        ext_capabilities: mariadb_cap::STMT_BULK_OPERATIONS | mariadb_cap::PROGRESS,
        ..g.clone()
    };
    assert_eq!(parse_greeting(&encode_greeting(&maria)).unwrap(), maria);
    let mysql = Greeting {
        capabilities: g.capabilities | cap::LONG_PASSWORD,
        ..g
    };
    let mut wire = encode_greeting(&mysql);
    let ext_at = wire.len() - (auth::NATIVE.len() + 1) - 13 - 4;
    wire[ext_at] = 0xFF;
    assert_eq!(parse_greeting(&wire).unwrap().ext_capabilities, 0);
}

#[test]
fn handshake_response_round_trips() {
    let h = HandshakeResponse {
        capabilities: cap::PROTOCOL_41 | cap::SECURE_CONNECTION | cap::LONG_PASSWORD,
        ext_capabilities: 0,
        max_packet: 1 << 24,
        collation: 45,
        user: b"app".to_vec(),
        auth: vec![1; 20],
        database: Some(b"shop".to_vec()),
        plugin: Some(auth::NATIVE.to_vec()),
        attrs: Some(b"\x04_pid\x0212".to_vec()),
    };
    let back = parse_handshake_response(&encode_handshake_response(&h)).unwrap();
    assert_eq!(back.user, h.user);
    assert_eq!(back.auth, h.auth);
    assert_eq!(back.database, h.database);
    assert_eq!(back.plugin, h.plugin);
    assert_eq!(back.attrs, h.attrs);
    assert_eq!(back.ext_capabilities, 0);
    let maria = HandshakeResponse {
        ext_capabilities: mariadb_cap::STMT_BULK_OPERATIONS,
        ..h.clone()
    };
    let back = parse_handshake_response(&encode_handshake_response(&maria)).unwrap();
    assert_eq!(back.ext_capabilities, mariadb_cap::STMT_BULK_OPERATIONS);
    assert_eq!(back.capabilities & cap::LONG_PASSWORD, 0);
    assert!(!is_ssl_request(&encode_handshake_response(&h)));
    let mut ssl = encode_handshake_response(&HandshakeResponse {
        capabilities: cap::PROTOCOL_41 | cap::SSL,
        ..h.clone()
    });
    ssl.truncate(32);
    assert!(is_ssl_request(&ssl));
    // Truncated responses are errors, never panics.
    let full = encode_handshake_response(&h);
    for n in 0..40 {
        assert!(parse_handshake_response(&full[..n]).is_err(), "{n}");
    }
}

#[test]
fn auth_switch_round_trips() {
    let p = encode_auth_switch(auth::CACHING_SHA2, b"01234567890123456789");
    assert_eq!(
        parse_auth_switch(&p).unwrap(),
        (
            auth::CACHING_SHA2.to_vec(),
            b"01234567890123456789".to_vec()
        )
    );
}

#[test]
fn ok_and_err_round_trip() {
    let ok = OkPacket {
        affected_rows: 300,
        last_insert_id: 7,
        status: status::IN_TRANS,
        warnings: 1,
    };
    assert_eq!(parse_ok(&encode_ok(&ok)).unwrap(), ok);
    let err = ErrPacket::new(er::ACCESS_DENIED, b"28000", "Access denied for user 'x'");
    assert_eq!(parse_err(&err.encode()).unwrap(), err);
}

fn run(state: &mut ResponseState, wire: &[u8]) -> Vec<Step> {
    packets(wire)
        .iter()
        .map(|p| state.feed(p).unwrap())
        .collect()
}

fn column(name: &str) -> Vec<u8> {
    let mut out = BytesMut::new();
    for s in ["def", "db", "t", "t", name, name] {
        put_lenenc_str(&mut out, s.as_bytes());
    }
    out.extend_from_slice(&[0x0c, 0x21, 0, 0, 1, 0, 0xfd, 0, 0, 0, 0, 0]);
    out.to_vec()
}

#[test]
fn result_set_with_classic_eof_then_more_results() {
    let eof_more = [0xFE, 0, 0, 0x0A, 0];
    let eof_last = [0xFE, 0, 0, 0x02, 0];
    let mut wire = Vec::new();
    wire.extend(pkt(1, &[1]));
    wire.extend(pkt(2, &column("a")));
    wire.extend(pkt(3, &eof_last));
    wire.extend(pkt(4, b"\x011"));
    wire.extend(pkt(5, &eof_more));
    wire.extend(pkt(
        6,
        &encode_ok(&OkPacket {
            affected_rows: 1,
            last_insert_id: 0,
            status: 2,
            warnings: 0,
        }),
    ));
    let mut state = ResponseState::new(Expect::ResultSet, false);
    let steps = run(&mut state, &wire);
    assert_eq!(steps[..5], [Step::More; 5]);
    assert_eq!(steps[5], Step::Done(Some(2)));
    assert!(state.is_done());
}

#[test]
fn result_set_with_deprecate_eof_ends_on_ok_with_fe_header() {
    let mut ok_fe = encode_ok(&OkPacket {
        affected_rows: 0,
        last_insert_id: 0,
        status: status::IN_TRANS,
        warnings: 0,
    });
    ok_fe[0] = 0xFE;
    // A row whose first column is 0xFE-length-prefixed would be ≥ 9 bytes and < 16 MB only
    // without DEPRECATE_EOF; with it, any 0xFE packet under 16 MB ends the rows.
    let mut wire = Vec::new();
    wire.extend(pkt(1, &[2]));
    wire.extend(pkt(2, &column("a")));
    wire.extend(pkt(3, &column("b")));
    wire.extend(pkt(4, b"\x011\xfb"));
    wire.extend(pkt(5, &ok_fe));
    let mut state = ResponseState::new(Expect::ResultSet, true);
    assert_eq!(
        run(&mut state, &wire),
        [
            Step::More,
            Step::More,
            Step::More,
            Step::More,
            Step::Done(Some(status::IN_TRANS))
        ]
    );
    // A packet after the end is an error, not a panic.
    assert!(
        state
            .feed(&packets(&pkt(6, b"\x00\x00\x00\x02\x00\x00\x00"))[0])
            .is_err()
    );
}

#[test]
fn err_ends_a_response_anywhere() {
    let err = ErrPacket::new(1317, b"70100", "Query execution was interrupted").encode();
    let mut wire = Vec::new();
    wire.extend(pkt(1, &[1]));
    wire.extend(pkt(2, &column("a")));
    wire.extend(pkt(3, b"\x011"));
    wire.extend(pkt(4, &err));
    let mut state = ResponseState::new(Expect::ResultSet, true);
    assert_eq!(run(&mut state, &wire).last(), Some(&Step::Done(None)));
}

#[test]
fn mariadb_progress_reports_do_not_end_a_response() {
    // 0xFF, code 0xFFFF, stage 1 of 2, max stage 2, progress 50.000%, "copy"
    let progress = b"\xff\xff\xff\x01\x01\x02\x50\xc3\x00\x04copy";
    let ok = encode_ok(&OkPacket {
        affected_rows: 3,
        last_insert_id: 0,
        status: status::AUTOCOMMIT,
        warnings: 0,
    });
    let mut wire = Vec::new();
    wire.extend(pkt(1, progress));
    wire.extend(pkt(2, &ok));
    let mut state = ResponseState::new(Expect::ResultSet, true);
    assert_eq!(
        run(&mut state, &wire),
        [Step::More, Step::Done(Some(status::AUTOCOMMIT))]
    );
}

#[test]
fn local_infile_request_then_ok() {
    let mut state = ResponseState::new(Expect::ResultSet, true);
    let req = packets(&pkt(1, b"\xfb/tmp/data.csv"));
    assert_eq!(state.feed(&req[0]).unwrap(), Step::LocalInfile);
    let ok = packets(&pkt(
        4,
        &encode_ok(&OkPacket {
            affected_rows: 3,
            last_insert_id: 0,
            status: 2,
            warnings: 0,
        }),
    ));
    assert_eq!(state.feed(&ok[0]).unwrap(), Step::Done(Some(2)));
}

#[test]
fn prepare_ok_with_params_and_columns() {
    // stmt 1, 1 column, 2 params.
    let head = [0u8, 1, 0, 0, 0, 1, 0, 2, 0, 0, 0, 0];
    for deprecate_eof in [false, true] {
        let mut wire = Vec::new();
        let mut seq = 1;
        let mut push = |payload: &[u8]| {
            wire.extend(pkt(seq, payload));
            seq += 1;
        };
        push(&head);
        push(&column("?"));
        push(&column("?"));
        if !deprecate_eof {
            push(&[0xFE, 0, 0, 2, 0]);
        }
        push(&column("a"));
        if !deprecate_eof {
            push(&[0xFE, 0, 0, 2, 0]);
        }
        let mut state = ResponseState::new(Expect::Prepare, deprecate_eof);
        let steps = run(&mut state, &wire);
        assert_eq!(
            steps.last(),
            Some(&Step::Done(None)),
            "deprecate_eof {deprecate_eof}"
        );
        assert!(steps[..steps.len() - 1].iter().all(|s| *s == Step::More));
    }
    let mut state = ResponseState::new(Expect::Prepare, true);
    assert_eq!(
        run(&mut state, &pkt(1, &[0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])),
        [Step::Done(None)]
    );
}

#[test]
fn single_packet_responses_and_nothing() {
    let mut state = ResponseState::new(Expect::Single, true);
    assert_eq!(
        run(&mut state, &pkt(1, &[0, 0, 0, 2, 0, 0, 0])),
        [Step::Done(Some(2))]
    );
    assert!(ResponseState::new(Expect::Nothing, true).is_done());
}

#[test]
fn garbage_never_panics() {
    let mut seed = 0x1234_5678u32;
    for _ in 0..2000 {
        let len = (seed % 40) as usize;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (seed >> 16) as u8
            })
            .collect();
        let _ = parse_greeting(&bytes);
        let _ = parse_handshake_response(&bytes);
        let _ = parse_change_user(&bytes, u32::MAX);
        let _ = parse_ok(&bytes);
        let _ = parse_err(&bytes);
        let _ = parse_auth_switch(&bytes);
        let _ = command::classify(&bytes);
        let _ = command::digest(&bytes, 64);
        for expect in [
            Expect::ResultSet,
            Expect::Prepare,
            Expect::Rows,
            Expect::Single,
            Expect::FieldList,
        ] {
            let mut state = ResponseState::new(expect, seed.is_multiple_of(2));
            let mut dec = PacketDecoder::default();
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(p)) = dec.decode(&mut buf) {
                if state.feed(&p).is_err() {
                    break;
                }
            }
        }
    }
}
