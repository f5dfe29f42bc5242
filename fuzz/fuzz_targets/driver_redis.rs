//! Fuzz the Redis driver (`switchyard::proxy::redis::serve`, the ordered
//! pipelined shape): arbitrary client bytes go through the real driver to an
//! in-process upstream on loopback that answers every command it decodes with
//! `+<fingerprint of the command's wire bytes>`. Invariants, per input:
//!
//! * no panic, no hang: the driver ends the connection once the client has
//!   half-closed, and by itself after a protocol error (the client then keeps
//!   its side open: a driver that kept reading would hang, so buffering stops
//!   at the codec's limits);
//! * one reply per complete command, in order: each is either the upstream's
//!   fingerprint of exactly that command (forwarded byte-exact) or a gateway
//!   answer (`-ERR ...`, or the direct response of the `TIME` route);
//! * `QUIT` is answered `+OK` and ends the connection; after `SUBSCRIBE`,
//!   `PSUBSCRIBE`, `SSUBSCRIBE` or `MONITOR` the session is a tunnel and every
//!   later command reaches the upstream byte-exact;
//! * bytes the codec rejects get one `-ERR Protocol error: ...` and a close.
//!
//! Seeds: `fuzz/seeds/redis/` (captured client streams).
#![no_main]

#[path = "common/driver.rs"]
mod driver;
#[path = "common/echo.rs"]
mod echo;

use std::sync::OnceLock;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use switchyard_codecs::redis::{Command, CommandDecoder, Limits, ReplyDecoder};
use switchyard_codecs::{Decoder, WireHead};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CONFIG: &str = r#"
listeners:
  - name: fuzz
    address: 127.0.0.1:1
    protocol: redis
    route_table: rt
    redis: { max_bulk: 512, max_elements: 64, max_pipeline: 8 }
route_tables:
  - name: rt
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - name: time
            match: { protocol: redis, commands: [TIME] }
            direct_response: { status: 200, body: "fuzz" }
          - name: all
            match: { protocol: redis }
            cluster: up
clusters:
  - name: up
    hosts: ["{UPSTREAM}"]
    connect_timeout: 2s
    request_timeout: 5s
"#;

/// The upstream: one `+<fingerprint>` per command, in order; closes on bytes
/// it cannot decode (as redis-server does after its protocol error).
async fn upstream(mut s: TcpStream) {
    let mut dec = CommandDecoder::new(Limits::default());
    let mut buf = BytesMut::with_capacity(8192);
    loop {
        let mut out = Vec::new();
        let mut bad = false;
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(cmd)) => out.extend_from_slice(
                    format!("+{}\r\n", echo::fingerprint(cmd.wire())).as_bytes(),
                ),
                Ok(None) => break,
                Err(_) => {
                    bad = true;
                    break;
                }
            }
        }
        if (!out.is_empty() && s.write_all(&out).await.is_err()) || bad {
            return;
        }
        match s.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

fn harness() -> &'static driver::Harness {
    static H: OnceLock<driver::Harness> = OnceLock::new();
    H.get_or_init(|| driver::Harness::new(CONFIG, |l| driver::accept_each(l, upstream)))
}

fn forwarded(cmd: &Command) -> Vec<u8> {
    format!("+{}\r\n", echo::fingerprint(cmd.wire())).into_bytes()
}

fn push_mode(cmd: &Command) -> bool {
    ["SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE", "MONITOR"]
        .iter()
        .any(|n| cmd.is(n))
}

fuzz_target!(|data: &[u8]| {
    let h = harness();
    let limits = h.listener.redis;

    // What the driver's own decoder makes of the input.
    let mut dec = CommandDecoder::new(limits);
    let mut buf = BytesMut::from(data);
    let mut cmds = Vec::new();
    let mut rejected = false;
    loop {
        match dec.decode(&mut buf) {
            Ok(Some(cmd)) => cmds.push(cmd),
            Ok(None) => break,
            Err(_) => {
                rejected = true;
                break;
            }
        }
    }
    // A tunnel or QUIT ends the driver's own decoding: bytes after them are
    // not its to reject.
    let ends = cmds.iter().position(|c| c.is("QUIT") || push_mode(c));
    let expect_error = rejected && ends.is_none();

    let seen = h.exchange(data, !expect_error, switchyard::proxy::redis::serve);

    let mut out = BytesMut::from(&seen.output[..]);
    let mut rdec = ReplyDecoder::new(Limits::default());
    let mut replies = Vec::new();
    while let Ok(Some(r)) = rdec.decode(&mut out) {
        replies.push(r.wire().to_vec());
    }
    if !seen.reset {
        assert!(
            out.is_empty(),
            "the client got bytes that are no reply: {out:?}"
        );
    }
    let mut replies = replies.into_iter();
    // With a reset, the client may have lost the end of its replies: check
    // the ones it got.
    let complete = !seen.reset;
    let mut tunnel = false;
    for cmd in &cmds {
        let Some(reply) = replies.next() else {
            assert!(!complete, "no reply to {cmd:?} (and later commands)");
            return;
        };
        if tunnel {
            assert_eq!(
                reply,
                forwarded(cmd),
                "in the tunnel, {cmd:?} was not forwarded byte-exact"
            );
            continue;
        }
        if cmd.is("QUIT") {
            assert_eq!(reply, b"+OK\r\n", "QUIT answered {reply:?}");
            assert!(replies.next().is_none(), "replies after QUIT");
            return;
        }
        if push_mode(cmd) {
            if reply.starts_with(b"-") {
                // The tunnel could not be set up: the connection ends there.
                assert!(replies.next().is_none(), "replies after a failed tunnel");
                return;
            }
            assert_eq!(
                reply,
                forwarded(cmd),
                "{cmd:?} did not open a byte-exact tunnel"
            );
            tunnel = true;
            continue;
        }
        let ok = reply == forwarded(cmd)
            || reply.starts_with(b"-")
            || (cmd.is("TIME") && reply == b"+fuzz\r\n");
        assert!(
            ok,
            "{cmd:?} got neither its upstream reply nor a gateway answer: {:?}",
            String::from_utf8_lossy(&reply)
        );
    }
    if expect_error {
        match replies.next() {
            Some(r) => assert!(
                r.starts_with(b"-ERR Protocol error"),
                "rejected bytes answered {:?}",
                String::from_utf8_lossy(&r)
            ),
            None => assert!(!complete, "rejected bytes got no protocol error"),
        }
    }
    assert!(replies.next().is_none(), "more replies than commands");
});
