//! A user database with hashed passwords, in mosquitto's password-file
//! formats so existing `mosquitto_passwd` files work unchanged:
//!
//! * `$7$<iterations>$<salt b64>$<hash b64>`: PBKDF2-HMAC-SHA512, 64-byte hash
//!   (mosquitto's default);
//! * `$6$<salt b64>$<hash b64>`: SHA-512 of password then salt.
//!
//! Passwords are compared in constant time.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha512};

/// A stored password hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordHash {
    Pbkdf2Sha512 {
        iterations: u32,
        salt: Vec<u8>,
        hash: Vec<u8>,
    },
    Sha512 {
        salt: Vec<u8>,
        hash: Vec<u8>,
    },
}

impl PasswordHash {
    /// Parse a `$7$...` or `$6$...` hash.
    pub fn parse(s: &str) -> Result<Self, String> {
        let b64 = |part: &str| {
            STANDARD
                .decode(part)
                .map_err(|e| format!("bad base64 ({e})"))
        };
        let parts: Vec<&str> = s.split('$').collect();
        match parts.as_slice() {
            ["", "7", iterations, salt, hash] => Ok(PasswordHash::Pbkdf2Sha512 {
                iterations: iterations.parse().map_err(|_| "bad iteration count".to_owned())?,
                salt: b64(salt)?,
                hash: b64(hash)?,
            }),
            ["", "6", salt, hash] => Ok(PasswordHash::Sha512 { salt: b64(salt)?, hash: b64(hash)? }),
            _ => Err("not a $7$ (PBKDF2-SHA512) or $6$ (SHA-512) password hash; make one with mosquitto_passwd".into()),
        }
    }

    /// Whether `password` matches.
    pub fn verify(&self, password: &[u8]) -> bool {
        match self {
            PasswordHash::Pbkdf2Sha512 {
                iterations,
                salt,
                hash,
            } => {
                let mut out = vec![0u8; hash.len()];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, *iterations, &mut out);
                constant_time_eq(&out, hash)
            }
            PasswordHash::Sha512 { salt, hash } => {
                let mut h = Sha512::new();
                h.update(password);
                h.update(salt);
                constant_time_eq(&h.finalize(), hash)
            }
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why a login failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No user name was given and anonymous logins are not allowed.
    NoCredentials,
    /// Unknown user or wrong password.
    BadCredentials,
}

/// Users and their password hashes.
#[derive(Debug, Clone, Default)]
pub struct Users {
    users: HashMap<Vec<u8>, PasswordHash>,
    allow_anonymous: bool,
}

impl Users {
    pub fn new(allow_anonymous: bool) -> Self {
        Self {
            users: HashMap::new(),
            allow_anonymous,
        }
    }

    pub fn insert(&mut self, user: &str, hash: PasswordHash) {
        self.users.insert(user.as_bytes().to_vec(), hash);
    }

    /// Read `user:hash` lines (mosquitto password-file format); `#` comments
    /// and blank lines are skipped. Errors name the line.
    pub fn load_password_file(&mut self, text: &str) -> Result<(), String> {
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, hash) = line
                .split_once(':')
                .ok_or_else(|| format!("line {}: expected user:hash", i + 1))?;
            let hash = PasswordHash::parse(hash).map_err(|e| format!("line {}: {e}", i + 1))?;
            self.insert(user, hash);
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Check a login. `Ok(())` for a known user with the right password, or
    /// for no user name at all when anonymous logins are allowed.
    pub fn check(&self, user: Option<&[u8]>, password: Option<&[u8]>) -> Result<(), Denied> {
        let Some(user) = user else {
            return if self.allow_anonymous {
                Ok(())
            } else {
                Err(Denied::NoCredentials)
            };
        };
        match (self.users.get(user), password) {
            (Some(hash), Some(pw)) if hash.verify(pw) => Ok(()),
            _ => Err(Denied::BadCredentials),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Written by `mosquitto_passwd -c -b pw alice secret1` and
    // `mosquitto_passwd -H sha512 -b pw bob secret2` (mosquitto 2.0.11).
    const FILE: &str = "\
# made by mosquitto_passwd
alice:$7$101$cew+6yPGRIheC/xU$f7N1WRXgVTjce3Jg3FWHPo6EhBMWivBAFjPFonRQi7XovwOWdtG0JgMtTE23hlzWx8tsGLl80QrkaReST2ol9w==
bob:$6$PBR5zJPMXN7S4T2Q$IwNloAK7ztYZNZmF1i5zN5II0R6BQesMu4Y59T2dj7znRNejof5PB7e3Vd2FNZWm9ggN6gkKca++vx+FvF1nXw==
";

    #[test]
    fn verifies_mosquitto_passwd_hashes() {
        let mut users = Users::new(false);
        users.load_password_file(FILE).unwrap();
        assert_eq!(users.len(), 2);
        assert_eq!(users.check(Some(b"alice"), Some(b"secret1")), Ok(()));
        assert_eq!(users.check(Some(b"bob"), Some(b"secret2")), Ok(()));
        assert_eq!(
            users.check(Some(b"alice"), Some(b"secret2")),
            Err(Denied::BadCredentials)
        );
        assert_eq!(users.check(Some(b"bob"), None), Err(Denied::BadCredentials));
        assert_eq!(
            users.check(Some(b"carol"), Some(b"x")),
            Err(Denied::BadCredentials)
        );
        assert_eq!(users.check(None, None), Err(Denied::NoCredentials));
        assert_eq!(Users::new(true).check(None, None), Ok(()));
    }

    #[test]
    fn names_the_bad_line() {
        let err = Users::new(false)
            .load_password_file("a:$7$1$AA==$AA==\nb:plain\n")
            .unwrap_err();
        assert!(err.starts_with("line 2:"), "{err}");
        let err = Users::new(false)
            .load_password_file("nocolon\n")
            .unwrap_err();
        assert!(err.starts_with("line 1:"), "{err}");
    }
}
