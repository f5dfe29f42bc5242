//! Fuzz the Redis driver (`switchyard::proxy::redis::serve`, the ordered
//! pipelined shape): arbitrary client bytes go through the real driver to an
//! in-process upstream on loopback that answers as a redis-server does
//! (`common/redis_model.rs`: reply counts, `CLIENT REPLY`, `MULTI`/`EXEC`,
//! (un)subscribe acknowledgements, RESP3 pushes out of band), each command
//! it has no rule for with `+<fingerprint of the command's wire bytes>`.
//!
//! The same model, run over the client's own commands, says what the client
//! must get: exactly the bytes a direct connection to that server would
//! give, except where the gateway answers by itself (`TIME`: the route's
//! direct response; `QUIT`; the protocol error before it closes). So every
//! command's replies come in order, each forwarded command is answered with
//! its own fingerprint (it reached the upstream byte-exact), nothing is
//! answered twice or dropped unless Redis drops it. Per input:
//!
//! * no panic, no hang: the driver ends the connection once the client has
//!   half-closed, and by itself after a protocol error (the client then keeps
//!   its side open: a driver that kept reading would hang, so buffering stops
//!   at the codec's limits);
//! * the client's bytes are the model's, byte for byte (a prefix of them if
//!   the connection was reset);
//! * after `SUBSCRIBE`, `PSUBSCRIBE`, `SSUBSCRIBE`, `MONITOR`, `SYNC` or
//!   `PSYNC` the session is a tunnel to a fresh connection on which the
//!   session state was replayed: later bytes reach the upstream as they are.
//!
//! Seeds: `fuzz/seeds/redis/` (captured client streams).
#![no_main]

#[path = "common/driver.rs"]
mod driver;
#[path = "common/redis_model.rs"]
mod model;

use std::sync::OnceLock;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use model::{Redis, text};
use switchyard_codecs::redis::{self, Command, CommandDecoder, Limits, ReplyDecoder};
use switchyard_codecs::{CodecError, Decoder, WireHead};
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

/// The direct response of the `time` route.
const TIME_REPLY: &[u8] = b"+fuzz\r\n";

/// One decoding step over a client's or the upstream's bytes.
enum Read {
    Command(Command),
    /// Bytes that are no command (an error reply, as the decoder words it).
    Rejected(Vec<u8>),
    /// Needs more bytes.
    End,
}

/// The next command in `buf`, telling `redis` of empty commands skipped
/// on the way (`*0`, blank lines: the decoder consumes them silently).
fn next(dec: &mut CommandDecoder, buf: &mut BytesMut, redis: &mut Redis) -> Read {
    let len = buf.len();
    let r = dec.decode(buf);
    let wire = match &r {
        Ok(Some(c)) => c.wire().len(),
        _ => 0,
    };
    if len - buf.len() > wire {
        redis.empty();
    }
    match r {
        Ok(Some(cmd)) => Read::Command(cmd),
        Ok(None) => Read::End,
        Err(e) => Read::Rejected(error_reply(dec, &e)),
    }
}

fn error_reply(dec: &CommandDecoder, e: &CodecError) -> Vec<u8> {
    dec.error_reply(e).to_vec()
}

/// The upstream: a redis-server as the model has it; closes after `QUIT` and
/// after its protocol error.
async fn upstream(mut s: TcpStream) {
    let mut redis = Redis::default();
    let mut dec = CommandDecoder::new(Limits::default());
    let mut buf = BytesMut::with_capacity(8192);
    loop {
        let mut out = Vec::new();
        let mut close = false;
        while !close {
            match next(&mut dec, &mut buf, &mut redis) {
                Read::Command(cmd) => close = redis.command(&cmd, &mut out),
                Read::Rejected(err) => {
                    redis.protocol_error(&err, &mut out);
                    close = true;
                }
                Read::End => break,
            }
        }
        if (!out.is_empty() && s.write_all(&out).await.is_err()) || close {
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

/// Commands that turn the session into a tunnel (outside `MULTI`).
fn tunnels(cmd: &Command) -> bool {
    [
        "SUBSCRIBE",
        "PSUBSCRIBE",
        "SSUBSCRIBE",
        "MONITOR",
        "SYNC",
        "PSYNC",
    ]
    .iter()
    .any(|n| cmd.is(n))
}

/// What the client must get for `data`, and whether the gateway ends the
/// connection by itself before the client's end (a protocol error).
struct Expected {
    bytes: Vec<u8>,
    rejected: bool,
    /// The model's replies fit the listener's reply limits.
    within_limits: bool,
}

fn expected(data: &[u8], limits: Limits) -> Expected {
    let mut redis = Redis::default();
    let mut out = Vec::new();
    let mut dec = CommandDecoder::new(limits);
    let mut buf = BytesMut::from(data);
    let mut rejected = false;
    loop {
        match next(&mut dec, &mut buf, &mut redis) {
            Read::End => break,
            Read::Rejected(err) => {
                redis.protocol_error(&err, &mut out);
                rejected = true;
                break;
            }
            Read::Command(cmd) if cmd.is("TIME") => redis.answered_for(TIME_REPLY, &mut out),
            // QUIT: the gateway answers it as the server would, and closes.
            Read::Command(cmd) if cmd.is("QUIT") => {
                redis.answered_for(b"+OK\r\n", &mut out);
                break;
            }
            Read::Command(cmd) if tunnels(&cmd) && !redis.in_multi() => {
                // A fresh upstream connection: the session's AUTH, HELLO,
                // SELECT, CLIENT SETNAME and reply mode are carried over,
                // client tracking is not (it is the old connection's).
                redis.forget_tracking();
                if !redis.command(&cmd, &mut out) {
                    // From here on the upstream reads the client's bytes.
                    let mut dec = CommandDecoder::new(Limits::default());
                    loop {
                        match next(&mut dec, &mut buf, &mut redis) {
                            Read::Command(cmd) => {
                                if redis.command(&cmd, &mut out) {
                                    break;
                                }
                            }
                            Read::Rejected(err) => {
                                redis.protocol_error(&err, &mut out);
                                break;
                            }
                            Read::End => break,
                        }
                    }
                }
                break;
            }
            Read::Command(cmd) => {
                redis.command(&cmd, &mut out);
            }
        }
    }
    Expected {
        bytes: out,
        rejected,
        within_limits: redis.longest_array <= limits.max_elements
            && redis.longest_channel <= limits.max_bulk,
    }
}

/// Where two frame sequences part, for a failure message.
fn diff(got: &[Vec<u8>], want: &[Vec<u8>]) -> String {
    let Some(at) = (0..got.len().max(want.len())).find(|&i| got.get(i) != want.get(i)) else {
        return String::new();
    };
    let show = |v: &[Vec<u8>]| {
        v.iter()
            .skip(at.saturating_sub(3))
            .take(8)
            .map(|f| text(f))
            .collect::<Vec<_>>()
    };
    format!(
        "\nframe {at} of {} got / {} wanted differs; from frame {}:\n got: {:?}\nwant: {:?}\n",
        got.len(),
        want.len(),
        at.saturating_sub(3),
        show(got),
        show(want)
    )
}

/// The frames of `bytes`: the replies, the out-of-band pushes, and the bytes
/// at the end that are no whole frame (an array's header whose elements
/// Redis did not send, with `CLIENT REPLY OFF` run inside `EXEC`, takes the
/// next frames as its elements and may be left open).
fn frames(bytes: &[u8]) -> (Vec<Vec<u8>>, Vec<Vec<u8>>, Vec<u8>) {
    let mut buf = BytesMut::from(bytes);
    let mut dec = ReplyDecoder::new(Limits::default());
    let (mut replies, mut pushes) = (Vec::new(), Vec::new());
    while let Ok(Some(r)) = dec.decode(&mut buf) {
        if redis::is_out_of_band(r.wire()) {
            pushes.push(r.wire().to_vec());
        } else {
            replies.push(r.wire().to_vec());
        }
    }
    (replies, pushes, buf.to_vec())
}

fuzz_target!(|data: &[u8]| {
    let h = harness();
    let want = expected(data, h.listener.redis);
    // After a protocol error only the driver can end the exchange.
    let seen = h.exchange(data, !want.rejected, switchyard::proxy::redis::serve);
    if !want.within_limits {
        // The upstream's replies are over the listener's limits: the gateway
        // refuses them (and the session's later replies), as configured.
        return;
    }
    // Pushes are out of band: a client takes them wherever they come, and the
    // gateway passes them on as they come (ahead of a reply it made itself,
    // say). They are compared among themselves, the replies among theirs.
    let (got, got_pushes, tail) = frames(&seen.output);
    let (want_replies, want_pushes, want_tail) = frames(&want.bytes);
    if seen.reset {
        // The client may have lost the end of its replies.
        assert!(
            want_replies.starts_with(&got) && want_pushes.starts_with(&got_pushes),
            "the client got other replies than Redis would send (connection reset): {}{}",
            diff(&got, &want_replies),
            diff(&got_pushes, &want_pushes)
        );
    } else {
        assert!(
            got == want_replies && got_pushes == want_pushes && tail == want_tail,
            "the client got other replies than Redis would send: {}{}ending {:?}, not {:?}",
            diff(&got, &want_replies),
            diff(&got_pushes, &want_pushes),
            text(&tail),
            text(&want_tail)
        );
    }
});
