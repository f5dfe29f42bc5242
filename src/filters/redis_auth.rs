//! Redis client authentication at the gateway: `AUTH [user] password` and
//! `HELLO … AUTH user password` checked against the listener's configured
//! users, so clients never learn the servers' credentials.

use bytes::Bytes;
use switchyard_codecs::redis::{self, Command};

/// The users of one listener.
pub struct RedisAuth {
    users: Vec<(String, String)>,
}

/// What the gateway does with a command while authentication is on.
#[derive(Debug, PartialEq, Eq)]
pub enum AuthStep {
    /// Pass the command on.
    Pass,
    /// Answer the client with this and forward nothing.
    Reply(Bytes),
    /// `HELLO … AUTH` accepted: forward this `HELLO` without its `AUTH` part.
    Hello(Command),
}

const NOAUTH: &str = "NOAUTH Authentication required.";
const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

impl RedisAuth {
    /// `None` when the listener lists no users (authentication is off).
    pub fn new(users: &[crate::config::redis::RedisUser]) -> Option<Self> {
        (!users.is_empty()).then(|| Self {
            users: users
                .iter()
                .map(|u| (u.name.clone(), u.password.value.clone()))
                .collect(),
        })
    }

    fn accepts(&self, user: &[u8], password: &[u8]) -> bool {
        // Compare every user, in constant time per password, so the answer's
        // timing says nothing about which part was wrong.
        self.users.iter().fold(false, |ok, (u, p)| {
            ok | (u.as_bytes() == user && constant_time_eq(p.as_bytes(), password))
        })
    }

    /// Check `cmd` for a session that is `authed` (or not yet); sets `authed`
    /// on a successful `AUTH`.
    pub fn check(&self, cmd: &Command, authed: &mut bool) -> AuthStep {
        if cmd.is("AUTH") {
            let (user, password) = match cmd.argc() {
                2 => (&b"default"[..], cmd.arg(1).unwrap_or_default()),
                3 => (
                    cmd.arg(1).unwrap_or_default(),
                    cmd.arg(2).unwrap_or_default(),
                ),
                _ => {
                    return AuthStep::Reply(redis::error_reply(
                        "wrong number of arguments for 'auth' command",
                    ));
                }
            };
            return if self.accepts(user, password) {
                *authed = true;
                AuthStep::Reply(Bytes::from_static(b"+OK\r\n"))
            } else {
                AuthStep::Reply(redis::error_reply(WRONGPASS))
            };
        }
        if cmd.is("HELLO") {
            let args: Vec<&[u8]> = cmd.args().collect();
            let at = args
                .iter()
                .position(|a| a.eq_ignore_ascii_case(b"AUTH"))
                .filter(|&i| i >= 2);
            return match at {
                Some(i) => {
                    let (Some(user), Some(password)) = (args.get(i + 1), args.get(i + 2)) else {
                        return AuthStep::Reply(redis::error_reply(
                            "Syntax error in HELLO option 'AUTH'",
                        ));
                    };
                    if !self.accepts(user, password) {
                        return AuthStep::Reply(redis::error_reply(WRONGPASS));
                    }
                    *authed = true;
                    let kept = args
                        .iter()
                        .enumerate()
                        .filter(|&(j, _)| j < i || j > i + 2)
                        .map(|(_, a)| *a);
                    AuthStep::Hello(Command::from_args(kept))
                }
                None if *authed => AuthStep::Pass,
                None => AuthStep::Reply(redis::error_reply(
                    "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
                )),
            };
        }
        if *authed {
            AuthStep::Pass
        } else {
            AuthStep::Reply(redis::error_reply(NOAUTH))
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_saphyr::{Location, Spanned};
    use switchyard_codecs::WireHead;

    fn auth() -> RedisAuth {
        let user = |name: &str, pw: &str| crate::config::redis::RedisUser {
            name: name.to_owned(),
            password: Spanned::new(pw.to_owned(), Location::UNKNOWN, Location::UNKNOWN),
        };
        RedisAuth::new(&[user("default", "s3cret"), user("app", "apppw")]).unwrap()
    }

    fn cmd(args: &[&str]) -> Command {
        Command::from_args(args)
    }

    #[test]
    fn commands_before_auth_are_refused_and_auth_unlocks() {
        let a = auth();
        let mut authed = false;
        let noauth = AuthStep::Reply(Bytes::from_static(b"-NOAUTH Authentication required.\r\n"));
        assert_eq!(a.check(&cmd(&["GET", "k"]), &mut authed), noauth);
        let wrong = a.check(&cmd(&["AUTH", "nope"]), &mut authed);
        assert!(matches!(wrong, AuthStep::Reply(b) if b.starts_with(b"-WRONGPASS")));
        assert!(!authed);
        // A user's password is not another user's.
        let cross = a.check(&cmd(&["AUTH", "app", "s3cret"]), &mut authed);
        assert!(matches!(cross, AuthStep::Reply(b) if b.starts_with(b"-WRONGPASS")));
        let ok = a.check(&cmd(&["AUTH", "s3cret"]), &mut authed);
        assert_eq!(ok, AuthStep::Reply(Bytes::from_static(b"+OK\r\n")));
        assert!(authed);
        assert_eq!(a.check(&cmd(&["GET", "k"]), &mut authed), AuthStep::Pass);
    }

    #[test]
    fn hello_auth_is_checked_and_stripped() {
        let a = auth();
        let mut authed = false;
        let bare = a.check(&cmd(&["HELLO", "3"]), &mut authed);
        assert!(matches!(bare, AuthStep::Reply(b) if b.starts_with(b"-NOAUTH HELLO")));
        match a.check(
            &cmd(&["HELLO", "3", "AUTH", "app", "apppw", "SETNAME", "x"]),
            &mut authed,
        ) {
            AuthStep::Hello(h) => assert_eq!(h.wire(), cmd(&["HELLO", "3", "SETNAME", "x"]).wire()),
            other => panic!("{other:?}"),
        }
        assert!(authed);
        assert_eq!(a.check(&cmd(&["HELLO", "2"]), &mut authed), AuthStep::Pass);
    }
}
