//! The captured MySQL sessions (`shared/vectors/mysql/`): framing in any
//! read size, the greeting and HandshakeResponse41, and a full replay of
//! every command's response through `ResponseState`, which must end each
//! response exactly where the next one starts and consume every byte.

mod common;

use bytes::BytesMut;
use switchyard_codecs::Decoder;
use switchyard_codecs::mysql::handshake::{
    parse_auth_switch, parse_greeting, parse_handshake_response,
};
use switchyard_codecs::mysql::response::parse_err;
use switchyard_codecs::mysql::{
    Command, Limits, Packet, PacketDecoder, ResponseState, Step, cap, classify, command,
};

const SESSIONS: [&str; 5] = [
    "mariadb-cli-native-password-queries",
    "mariadb-cli-ed25519-authswitch",
    "connector-python-prepared-binary",
    "pymysql-text-multistatement",
    "pymysql-login-err-access-denied",
];

fn packets(name: &str) -> Vec<Packet> {
    let bytes = common::read("mysql", name);
    common::decode_checked(
        || PacketDecoder::new(Limits::default()),
        &bytes,
        name,
        &[1, 3, 7, 64],
    )
}

/// Replay one session: the login exchange, then each client command against
/// the server packets its response takes. Returns the commands' names.
fn replay(session: &str) -> Vec<&'static str> {
    let c2s = packets(&format!("{session}.c2s.bin"));
    let s2c = packets(&format!("{session}.s2c.bin"));
    let greeting = parse_greeting(&s2c[0].payload()).unwrap();
    assert!(
        greeting
            .server_version
            .starts_with(b"5.5.5-10.11.19-MariaDB"),
        "{session}"
    );
    assert_eq!(greeting.nonce.len(), 20, "{session}");
    assert_eq!(greeting.plugin, b"mysql_native_password");
    let login = parse_handshake_response(&c2s[0].payload()).unwrap();
    assert_eq!(c2s[0].seq(), 1);
    let caps = login.capabilities & greeting.capabilities;
    let deprecate_eof = caps & cap::DEPRECATE_EOF != 0;

    // Login: server packets up to the OK or ERR; client packets answer auth switches.
    let mut server = s2c.iter().skip(1).peekable();
    let mut client = c2s.iter().skip(1).peekable();
    loop {
        let p = server.next().expect("login ended without OK/ERR");
        match p.first_byte() {
            Some(0x00) => break,
            Some(0xFF) => {
                let err = parse_err(&p.payload()).unwrap();
                assert_eq!(err.code, 1044, "{session}");
                assert_eq!(&err.sql_state, b"42000");
                assert!(server.next().is_none() && client.next().is_none());
                return vec!["login refused"];
            }
            Some(0xFE) => {
                let (plugin, nonce) = parse_auth_switch(&p.payload()).unwrap();
                assert_eq!(plugin, b"client_ed25519");
                assert_eq!(nonce.len(), 32);
                let answer = client.next().unwrap();
                assert_eq!(answer.payload_len(), 64);
            }
            other => panic!("{session}: unexpected login packet {other:?}"),
        }
    }

    let mut names = Vec::new();
    for cmd in client {
        assert_eq!(cmd.seq(), 0, "{session}: commands start at sequence 0");
        let command = Command(cmd.first_byte().unwrap());
        names.push(command.name());
        if command.0 == command::QUERY {
            // Classification runs on every captured statement without surprises.
            let _ = classify(&cmd.payload()[1..]);
        }
        let mut state = ResponseState::new(command.expect().unwrap(), deprecate_eof);
        let mut seq = cmd.seq();
        while !state.is_done() {
            let p = server
                .next()
                .unwrap_or_else(|| panic!("{session}: {} response cut short", command.name()));
            seq = seq.wrapping_add(1);
            assert_eq!(
                p.seq(),
                seq,
                "{session}: {} response sequence",
                command.name()
            );
            match state.feed(p).unwrap() {
                Step::More | Step::Done(_) => {}
                Step::LocalInfile => panic!("no LOCAL INFILE in the vectors"),
            }
        }
        // Nothing left of this response: the next server packet starts a new one.
        if let Some(next) = server.peek() {
            assert_eq!(
                next.seq(),
                1,
                "{session}: response to {} ran over",
                command.name()
            );
        }
    }
    assert!(
        server.next().is_none(),
        "{session}: server bytes left after the last response"
    );
    names
}

#[test]
fn every_session_replays_to_the_last_byte() {
    for s in SESSIONS {
        replay(s);
    }
}

#[test]
fn mariadb_cli_session_has_six_queries_and_quit() {
    let names = replay("mariadb-cli-native-password-queries");
    assert_eq!(
        names.iter().filter(|n| **n == "COM_QUERY").count(),
        6,
        "{names:?}"
    );
    assert_eq!(names.last(), Some(&"COM_QUIT"));
    let login = parse_handshake_response(
        &packets("mariadb-cli-native-password-queries.c2s.bin")[0].payload(),
    )
    .unwrap();
    assert_eq!(login.user, b"vec_native");
    assert_eq!(login.auth.len(), 20);
    assert!(login.database.is_some());
    assert_eq!(login.plugin.as_deref(), Some(&b"mysql_native_password"[..]));
}

#[test]
fn prepared_session_has_three_prepare_execute_close_rounds() {
    let names = replay("connector-python-prepared-binary");
    for n in [
        "COM_STMT_PREPARE",
        "COM_STMT_EXECUTE",
        "COM_STMT_CLOSE",
        "COM_STMT_RESET",
    ] {
        assert_eq!(
            names.iter().filter(|x| **x == n).count(),
            3,
            "{n}: {names:?}"
        );
    }
    assert_eq!(names.iter().filter(|x| **x == "COM_PING").count(), 2);
}

#[test]
fn multistatement_session_sees_init_db_and_ping() {
    let names = replay("pymysql-text-multistatement");
    assert!(
        names.contains(&"COM_INIT_DB") && names.contains(&"COM_PING"),
        "{names:?}"
    );
    assert_eq!(replay("pymysql-login-err-access-denied"), ["login refused"]);
}

#[test]
fn a_message_limit_below_the_session_is_an_error() {
    let bytes = common::read("mysql", "pymysql-text-multistatement.s2c.bin");
    let mut dec = PacketDecoder::new(Limits { max_message: 16 });
    let mut buf = BytesMut::from(&bytes[..]);
    let mut result = Ok(None);
    for _ in 0..1000 {
        result = dec.decode(&mut buf);
        if !matches!(result, Ok(Some(_))) {
            break;
        }
    }
    assert!(result.is_err());
}
