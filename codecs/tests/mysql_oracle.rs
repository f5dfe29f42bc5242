//! The MySQL codec against an independent implementation, `mysql_common`
//! (the protocol crate under mysql_async), on the captured sessions: the
//! greeting and HandshakeResponse41 fields agree, and both crates' auth
//! scrambles agree — with each other and with what the real mariadb client
//! sent for the vectors' known password.

mod common;

use mysql_common::io::ParseBuf;
use mysql_common::packets::{HandshakePacket, HandshakeResponse as OracleResponse};
use mysql_common::proto::MyDeserialize;
use switchyard_codecs::mysql::handshake::{parse_greeting, parse_handshake_response};
use switchyard_codecs::mysql::{Limits, PacketDecoder, auth};

const SESSIONS: [&str; 5] = [
    "mariadb-cli-native-password-queries",
    "mariadb-cli-ed25519-authswitch",
    "connector-python-prepared-binary",
    "pymysql-text-multistatement",
    "pymysql-login-err-access-denied",
];

fn first_payload(name: &str) -> Vec<u8> {
    let bytes = common::read("mysql", name);
    let (packets, _) =
        common::decode_all(PacketDecoder::new(Limits::default()), &bytes, bytes.len());
    packets[0].payload().to_vec()
}

#[test]
fn greetings_agree_with_mysql_common() {
    for s in SESSIONS {
        let payload = first_payload(&format!("{s}.s2c.bin"));
        let ours = parse_greeting(&payload).unwrap();
        let theirs = HandshakePacket::deserialize((), &mut ParseBuf(&payload)).unwrap();
        assert_eq!(ours.server_version, theirs.server_version_ref(), "{s}");
        assert_eq!(ours.connection_id, theirs.connection_id(), "{s}");
        assert_eq!(ours.nonce, theirs.nonce(), "{s}");
        assert_eq!(ours.capabilities, theirs.capabilities().bits(), "{s}");
        assert_eq!(Some(&ours.plugin[..]), theirs.auth_plugin_name_ref(), "{s}");
    }
}

#[test]
fn handshake_responses_agree_with_mysql_common() {
    for s in SESSIONS {
        let payload = first_payload(&format!("{s}.c2s.bin"));
        let ours = parse_handshake_response(&payload).unwrap();
        let theirs = OracleResponse::deserialize((), &mut ParseBuf(&payload)).unwrap();
        assert_eq!(ours.user, theirs.user(), "{s}");
        assert_eq!(ours.auth, theirs.scramble_buf(), "{s}");
        assert_eq!(ours.database.as_deref(), theirs.db_name(), "{s}");
        assert_eq!(ours.capabilities, theirs.capabilities().bits(), "{s}");
    }
}

#[test]
fn scrambles_agree_with_mysql_common_and_the_real_client() {
    let nonce = b"0123456789abcdefghij";
    for pw in [
        &b"x"[..],
        b"native-pass-1",
        b"a much longer password \xc3\xa9",
    ] {
        assert_eq!(
            auth::native_scramble(pw, nonce),
            mysql_common::scramble::scramble_native(nonce, pw)
                .unwrap()
                .to_vec()
        );
        assert_eq!(
            auth::sha2_scramble(pw, nonce),
            mysql_common::scramble::scramble_sha256(nonce, pw)
                .unwrap()
                .to_vec()
        );
    }
    // The mariadb CLI logged in as vec_native / native-pass-1 (vectors README).
    let greeting = parse_greeting(&first_payload(
        "mariadb-cli-native-password-queries.s2c.bin",
    ))
    .unwrap();
    let login = parse_handshake_response(&first_payload(
        "mariadb-cli-native-password-queries.c2s.bin",
    ))
    .unwrap();
    assert_eq!(
        auth::native_scramble(b"native-pass-1", &greeting.nonce),
        login.auth
    );
    let stored = auth::native_hash(b"native-pass-1");
    assert!(auth::native_verify(
        Some(&stored),
        &greeting.nonce,
        &login.auth
    ));
    assert!(!auth::native_verify(
        Some(&auth::native_hash(b"native-pass-2")),
        &greeting.nonce,
        &login.auth
    ));
}
