//! Auth scrambles of `mysql_native_password` and `caching_sha2_password`,
//! from both ends: what a client sends for a password and a nonce, and how a
//! server checks it against a stored hash (never the password itself).

use sha1::{Digest, Sha1};
use sha2::Sha256;

/// `mysql_native_password`.
pub const NATIVE: &[u8] = b"mysql_native_password";
/// `caching_sha2_password`.
pub const CACHING_SHA2: &[u8] = b"caching_sha2_password";

/// caching_sha2 "more data" status byte: the fast path (cached hash) succeeded.
pub const FAST_AUTH_SUCCESS: u8 = 3;
/// caching_sha2 "more data" status byte: send the password (over TLS) in full.
pub const PERFORM_FULL_AUTH: u8 = 4;
/// caching_sha2 client request for the server's RSA public key.
pub const REQUEST_PUBLIC_KEY: u8 = 2;

fn xor<const N: usize>(a: &[u8; N], b: &[u8; N]) -> [u8; N] {
    std::array::from_fn(|i| a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0))
}

fn sha1(parts: &[&[u8]]) -> [u8; 20] {
    let mut h = Sha1::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// Compare without an early exit.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The stored form of a native password: `SHA1(SHA1(password))`
/// (what `PASSWORD()` prints as `*HEX`).
pub fn native_hash(password: &[u8]) -> [u8; 20] {
    sha1(&[&sha1(&[password])])
}

/// Parse a `*` + 40 hex digits native hash (as `SELECT PASSWORD('x')` prints it).
pub fn parse_native_hash(text: &str) -> Option<[u8; 20]> {
    let hex = text.strip_prefix('*')?.as_bytes();
    if hex.len() != 40 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; 20];
    for (o, pair) in out.iter_mut().zip(hex.chunks(2)) {
        let [hi, lo] = pair else { return None };
        *o = digit(*hi)? << 4 | digit(*lo)?;
    }
    Some(out)
}

/// The client's `mysql_native_password` response: empty for an empty password,
/// else `SHA1(pw) XOR SHA1(nonce + SHA1(SHA1(pw)))`.
pub fn native_scramble(password: &[u8], nonce: &[u8]) -> Vec<u8> {
    if password.is_empty() {
        return Vec::new();
    }
    let stage1 = sha1(&[password]);
    let stage2 = sha1(&[&stage1]);
    xor(&stage1, &sha1(&[nonce, &stage2])).to_vec()
}

/// Check a `mysql_native_password` response against the stored
/// `SHA1(SHA1(pw))` (`None`: the user has an empty password).
pub fn native_verify(stored: Option<&[u8; 20]>, nonce: &[u8], response: &[u8]) -> bool {
    let Some(stored) = stored else {
        return response.is_empty();
    };
    let Ok(response) = <&[u8; 20]>::try_from(response) else {
        return false;
    };
    let stage1 = xor(response, &sha1(&[nonce, stored]));
    same(&sha1(&[&stage1]), stored)
}

/// The stored form of a caching_sha2 password for the fast path:
/// `SHA256(SHA256(password))`.
pub fn sha2_hash(password: &[u8]) -> [u8; 32] {
    sha256(&[&sha256(&[password])])
}

/// The client's `caching_sha2_password` response: empty for an empty password,
/// else `SHA256(pw) XOR SHA256(SHA256(SHA256(pw)) + nonce)`.
pub fn sha2_scramble(password: &[u8], nonce: &[u8]) -> Vec<u8> {
    if password.is_empty() {
        return Vec::new();
    }
    let stage1 = sha256(&[password]);
    let stage2 = sha256(&[&stage1]);
    xor(&stage1, &sha256(&[&stage2, nonce])).to_vec()
}

/// Check a `caching_sha2_password` fast-path response against the stored
/// `SHA256(SHA256(pw))` (`None`: the user has an empty password).
pub fn sha2_verify(stored: Option<&[u8; 32]>, nonce: &[u8], response: &[u8]) -> bool {
    let Some(stored) = stored else {
        return response.is_empty();
    };
    let Ok(response) = <&[u8; 32]>::try_from(response) else {
        return false;
    };
    let stage1 = xor(response, &sha256(&[stored, nonce]));
    same(&sha256(&[&stage1]), stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_hash_matches_mariadb_password_function() {
        // `PASSWORD('password')` is a well-known value.
        assert_eq!(
            Some(native_hash(b"password")),
            parse_native_hash("*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19")
        );
        assert_eq!(
            parse_native_hash("2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19"),
            None
        );
        assert_eq!(parse_native_hash("*2470C0"), None);
        assert_eq!(
            parse_native_hash("*ZZ70C0C06DEE42FD1618BB99005ADCA2EC9D1E19"),
            None
        );
    }

    #[test]
    fn native_scramble_verifies_and_wrong_password_does_not() {
        let nonce = b"abcdefghijklmnopqrst";
        let stored = native_hash(b"secret");
        assert!(native_verify(
            Some(&stored),
            nonce,
            &native_scramble(b"secret", nonce)
        ));
        assert!(!native_verify(
            Some(&stored),
            nonce,
            &native_scramble(b"Secret", nonce)
        ));
        assert!(!native_verify(
            Some(&stored),
            b"other-nonce-12345678",
            &native_scramble(b"secret", nonce)
        ));
        assert!(!native_verify(Some(&stored), nonce, b""));
        assert!(native_verify(None, nonce, b""));
        assert!(!native_verify(None, nonce, &native_scramble(b"x", nonce)));
    }

    #[test]
    fn sha2_scramble_verifies_and_wrong_password_does_not() {
        let nonce = b"abcdefghijklmnopqrst";
        let stored = sha2_hash(b"secret");
        assert!(sha2_verify(
            Some(&stored),
            nonce,
            &sha2_scramble(b"secret", nonce)
        ));
        assert!(!sha2_verify(
            Some(&stored),
            nonce,
            &sha2_scramble(b"secreT", nonce)
        ));
        assert!(!sha2_verify(
            Some(&stored),
            nonce,
            &native_scramble(b"secret", nonce)
        ));
        assert!(sha2_verify(None, nonce, b""));
    }
}
