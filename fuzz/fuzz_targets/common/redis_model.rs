//! What a redis-server (7.x) sends back on one connection, frame by frame,
//! for the commands it reads — written from Redis's documentation and its
//! source (`networking.c`: `resetClient`, `prepareClientToWrite`; `multi.c`;
//! `pubsub.c`; `CLIENT REPLY`, `RESET`, `HELLO`, `CLIENT TRACKING`), not from
//! the gateway's code. It models what decides *how many* frames come back and
//! *which* are dropped; every other command answers `+<fingerprint of its
//! wire bytes>` (see `echo.rs`), so a reply shows which command it answers.
//!
//! The `driver_redis` target runs it twice: as its in-process upstream
//! server, and over the client's own commands to know what the client must
//! get through the gateway (the same bytes as from a direct connection).
//!
//! Modelled:
//! * `CLIENT REPLY ON|OFF|SKIP`: OFF drops every reply, SKIP the next
//!   command's; pushes (and `(un)subscribe` acknowledgements, which Redis
//!   sends as pushes) go out anyway. An empty command (`*0`, a blank line)
//!   counts as a command for SKIP (Redis resets the client after it).
//! * `MULTI`/`EXEC`/`DISCARD`: commands queue (`+QUEUED`) except `EXEC`,
//!   `DISCARD`, `MULTI`, `WATCH`, `QUIT`, `RESET`; a command refused while
//!   queuing (here: a wrong number of arguments) makes `EXEC` answer
//!   `-EXECABORT`, and a refused `EXEC` ends the transaction. `EXEC` writes
//!   its array header, then runs each queued command as if alone, so a
//!   queued `CLIENT REPLY` changes the mode in the middle of the array and a
//!   queued (un)subscribe writes one acknowledgement per channel into it.
//! * `(P|S)UNSUBSCRIBE` answer once per channel (once with none);
//!   `(P|S)SUBSCRIBE` once per channel (arrays in RESP2, pushes after
//!   `HELLO 3`).
//! * `CLIENT TRACKING ON`: from then on, the server pushes an invalidation
//!   (`>2 invalidate ...`) ahead of the reply to some commands (those whose
//!   wire length is a multiple of 3: a stand-in for "a key it read was
//!   changed"), never ahead of a `CLIENT REPLY`.
//! * `RESET` ends `MULTI`, turns replies on (but not for itself after a
//!   SKIP), RESP2, tracking off; `QUIT` answers `+OK` and closes.
//!
//! Not modelled: the command table (every other command is valid), the
//! subscriber context's command restrictions, published messages.

use switchyard_codecs::WireHead;
use switchyard_codecs::redis::Command;

#[path = "echo.rs"]
mod echo;

/// `+<fingerprint>`: the reply to a command the model has no rule for.
pub fn fingerprint_reply(wire: &[u8]) -> Vec<u8> {
    format!("+{}\r\n", echo::fingerprint(wire)).into_bytes()
}

/// One connection's state, as redis-server keeps it.
#[derive(Debug, Default)]
pub struct Redis {
    resp3: bool,
    /// `CLIENT_REPLY_OFF`.
    off: bool,
    /// `CLIENT_REPLY_SKIP`: this command's replies are dropped.
    skip: bool,
    /// `CLIENT_REPLY_SKIP_NEXT`.
    skip_next: bool,
    /// Inside `MULTI`: the queued commands.
    multi: Option<Vec<Command>>,
    /// A command was refused while queuing.
    dirty: bool,
    tracking: bool,
    /// The longest `EXEC` array sent (a client's reply limits apply to it).
    pub longest_array: usize,
    /// The longest channel name acknowledged.
    pub longest_channel: usize,
}

fn is_any(cmd: &Command, names: &[&str]) -> bool {
    names.iter().any(|n| cmd.is(n))
}

fn arg_is(cmd: &Command, i: usize, word: &str) -> bool {
    cmd.arg(i)
        .is_some_and(|a| a.eq_ignore_ascii_case(word.as_bytes()))
}

/// `CLIENT REPLY ...` (any arguments).
pub fn is_client_reply(cmd: &Command) -> bool {
    cmd.is("CLIENT") && arg_is(cmd, 1, "REPLY")
}

impl Redis {
    pub fn in_multi(&self) -> bool {
        self.multi.is_some()
    }

    /// Tracking is a property of the connection it was turned on for.
    pub fn forget_tracking(&mut self) {
        self.tracking = false;
    }

    /// Write `frame` unless the reply mode drops it (`push`: sent anyway).
    fn emit(&self, out: &mut Vec<u8>, frame: &[u8], push: bool) {
        if push || !(self.off || self.skip) {
            out.extend_from_slice(frame);
        }
    }

    /// After each command read (`resetClient`): SKIP lasts one command.
    fn reset_client(&mut self) {
        self.skip = std::mem::take(&mut self.skip_next);
    }

    /// An empty command (`*0`, `*-1`, a blank line): no reply, but the client
    /// is reset as after any command.
    pub fn empty(&mut self) {
        self.reset_client();
    }

    /// The protocol error `reply` for bytes that are no command (the
    /// connection closes after it).
    pub fn protocol_error(&mut self, reply: &[u8], out: &mut Vec<u8>) {
        self.emit(out, reply, false);
    }

    /// A reply made in place of the server's (by the gateway), in the
    /// command's reply mode.
    pub fn answered_for(&mut self, reply: &[u8], out: &mut Vec<u8>) {
        self.emit(out, reply, false);
        self.reset_client();
    }

    /// Read one command: its frames go to `out`. `true`: the server closes
    /// the connection after them (`QUIT`).
    pub fn command(&mut self, cmd: &Command, out: &mut Vec<u8>) -> bool {
        if self.tracking && !is_client_reply(cmd) && cmd.wire().len() % 3 == 0 {
            let fp = echo::fingerprint(cmd.wire());
            let push = format!(">2\r\n$10\r\ninvalidate\r\n*1\r\n${}\r\n{fp}\r\n", fp.len());
            self.emit(out, push.as_bytes(), true);
        }
        let mut close = false;
        if let Some(arity) = self.arity_error(cmd) {
            match self.multi.as_mut() {
                // A refused EXEC discards the transaction.
                Some(_) if cmd.is("EXEC") => {
                    self.multi = None;
                    let err = format!("-EXECABORT Transaction discarded because of: {arity}\r\n");
                    self.emit(out, err.as_bytes(), false);
                }
                Some(_) => {
                    self.dirty = true;
                    self.emit(out, format!("-ERR {arity}\r\n").as_bytes(), false);
                }
                None => self.emit(out, format!("-ERR {arity}\r\n").as_bytes(), false),
            }
        } else if let Some(queue) = self
            .multi
            .as_mut()
            .filter(|_| !is_any(cmd, &["EXEC", "DISCARD", "MULTI", "WATCH", "QUIT", "RESET"]))
        {
            queue.push(cmd.clone());
            self.emit(out, b"+QUEUED\r\n", false);
        } else {
            close = self.run(cmd, out);
        }
        self.reset_client();
        close
    }

    /// The commands whose number of arguments the model checks.
    fn arity_error(&self, cmd: &Command) -> Option<String> {
        let n = cmd.argc();
        let exact = |want: usize| (n != want).then_some(());
        let bad = if is_any(cmd, &["MULTI", "EXEC", "DISCARD", "RESET"]) {
            exact(1)
        } else if is_client_reply(cmd) {
            exact(3)
        } else if is_any(
            cmd,
            &["CLIENT", "WATCH", "SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE"],
        ) {
            (n < 2).then_some(())
        } else {
            None
        };
        bad.map(|()| {
            format!(
                "wrong number of arguments for '{}' command",
                String::from_utf8_lossy(cmd.name()).to_lowercase()
            )
        })
    }

    /// Run `cmd` (alone, or queued inside `EXEC`).
    fn run(&mut self, cmd: &Command, out: &mut Vec<u8>) -> bool {
        let fp = || fingerprint_reply(cmd.wire());
        if cmd.is("MULTI") {
            if self.multi.is_some() {
                self.emit(out, b"-ERR MULTI calls can not be nested\r\n", false);
            } else {
                self.multi = Some(Vec::new());
                self.dirty = false;
                self.emit(out, b"+OK\r\n", false);
            }
        } else if cmd.is("EXEC") {
            match self.multi.take() {
                None => self.emit(out, b"-ERR EXEC without MULTI\r\n", false),
                Some(_) if self.dirty => self.emit(
                    out,
                    b"-EXECABORT Transaction discarded because of previous errors.\r\n",
                    false,
                ),
                Some(queue) => {
                    self.longest_array = self.longest_array.max(queue.len());
                    self.emit(out, format!("*{}\r\n", queue.len()).as_bytes(), false);
                    for queued in &queue {
                        // (Nothing queued closes or nests: see `command`.)
                        self.run(queued, out);
                    }
                }
            }
        } else if cmd.is("DISCARD") {
            match self.multi.take() {
                None => self.emit(out, b"-ERR DISCARD without MULTI\r\n", false),
                Some(_) => self.emit(out, b"+OK\r\n", false),
            }
        } else if cmd.is("WATCH") && self.multi.is_some() {
            self.emit(out, b"-ERR WATCH inside MULTI is not allowed\r\n", false);
        } else if cmd.is("RESET") {
            self.multi = None;
            self.dirty = false;
            self.off = false;
            self.skip_next = false;
            self.resp3 = false;
            self.tracking = false;
            self.emit(out, b"+RESET\r\n", false);
        } else if cmd.is("QUIT") {
            self.emit(out, b"+OK\r\n", false);
            return true;
        } else if is_client_reply(cmd) {
            if arg_is(cmd, 2, "ON") {
                self.off = false;
                self.skip = false;
                self.emit(out, b"+OK\r\n", false);
            } else if arg_is(cmd, 2, "OFF") {
                self.off = true;
            } else if arg_is(cmd, 2, "SKIP") {
                if !self.off {
                    self.skip_next = true;
                }
            } else {
                self.emit(out, b"-ERR syntax error\r\n", false);
            }
        } else if let Some(kind) = ["unsubscribe", "punsubscribe", "sunsubscribe"]
            .into_iter()
            .find(|k| cmd.is(k))
        {
            let channels: Vec<Option<&[u8]>> = if cmd.argc() == 1 {
                vec![None]
            } else {
                cmd.args().skip(1).map(Some).collect()
            };
            for ch in channels {
                self.ack(kind, ch, out);
            }
        } else if let Some(kind) = ["subscribe", "psubscribe", "ssubscribe"]
            .into_iter()
            .find(|k| cmd.is(k))
        {
            for ch in cmd.args().skip(1) {
                self.ack(kind, Some(ch), out);
            }
        } else {
            if cmd.is("HELLO") {
                if arg_is(cmd, 1, "3") {
                    self.resp3 = true;
                } else if arg_is(cmd, 1, "2") {
                    self.resp3 = false;
                }
            } else if cmd.is("CLIENT") && arg_is(cmd, 1, "TRACKING") {
                if arg_is(cmd, 2, "ON") {
                    self.tracking = true;
                } else if arg_is(cmd, 2, "OFF") {
                    self.tracking = false;
                }
            }
            self.emit(out, &fp(), false);
        }
        false
    }

    /// A (un)subscribe acknowledgement: `[kind, channel or nil, 0]`.
    fn ack(&mut self, kind: &str, channel: Option<&[u8]>, out: &mut Vec<u8>) {
        let mut f = Vec::with_capacity(48);
        f.extend_from_slice(if self.resp3 { b">3\r\n" } else { b"*3\r\n" });
        f.extend_from_slice(format!("${}\r\n{kind}\r\n", kind.len()).as_bytes());
        match channel {
            Some(ch) => {
                self.longest_channel = self.longest_channel.max(ch.len());
                f.extend_from_slice(format!("${}\r\n", ch.len()).as_bytes());
                f.extend_from_slice(ch);
                f.extend_from_slice(b"\r\n");
            }
            None if self.resp3 => f.extend_from_slice(b"_\r\n"),
            None => f.extend_from_slice(b"$-1\r\n"),
        }
        f.extend_from_slice(b":0\r\n");
        self.emit(out, &f, true);
    }
}

/// Bytes as text for assertion messages.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
