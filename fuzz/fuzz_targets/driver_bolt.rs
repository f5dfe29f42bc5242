//! Fuzz the multiplexed RPC driver with SOFA Bolt v1/v2
//! (`switchyard::proxy::rpc::serve::<Bolt>`, over `MuxConn`): arbitrary client
//! bytes go through the real driver to an in-process Bolt upstream on
//! loopback that answers each request with status SUCCESS and, as content, the
//! fingerprint of the request's exact bytes with its id set to 0 (the gateway
//! remaps ids, and recomputes a v2 CRC). Invariants, per input:
//!
//! * no panic, no hang: the driver ends the connection once the client has
//!   half-closed, and by itself after a frame its codec rejects (bad CRC,
//!   over `max_frame`, malformed; the client then keeps its side open);
//! * every request gets exactly one response with the client's own id: the
//!   upstream's, whose fingerprint is that request's (forwarded byte-exact but
//!   for the id), or a gateway error status; every heartbeat a heartbeat
//!   response; one-way requests nothing; the client gets nothing else.
//!
//! Seeds: `fuzz/seeds/bolt/` (captured client streams, Java fixtures).
#![no_main]

#[path = "common/driver.rs"]
mod driver;
#[path = "common/echo.rs"]
mod echo;
#[path = "common/rpc_answers.rs"]
mod rpc_answers;

use std::sync::OnceLock;

use rpc_answers::{Answer, Expect};

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use switchyard::proxy::rpc::Bolt;
use switchyard_codecs::Decoder as _;
use switchyard_codecs::bolt::{self, Decoder, Frame, Kind, Limits, codec, status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CONFIG: &str = r#"
listeners:
  - name: fuzz
    address: 127.0.0.1:1
    protocol: bolt
    route_table: rt
route_tables:
  - name: rt
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - name: all
            match: { protocol: bolt }
            cluster: up
clusters:
  - name: up
    hosts: ["{UPSTREAM}"]
    connect_timeout: 2s
    request_timeout: 5s
"#;

/// The fingerprint of a frame's bytes with its request id set to 0.
fn fingerprint(f: &Frame) -> String {
    echo::fingerprint(&bolt::with_request_id(f, 0))
}

/// The upstream's answer to request `f` (Hessian 2 content: the fingerprint).
fn answer(f: &Frame, id: u32) -> bytes::Bytes {
    bolt::response(
        f.version(),
        id,
        codec::HESSIAN2,
        status::SUCCESS,
        &fingerprint(f),
    )
}

/// The upstream: SUCCESS + fingerprint to each request, heartbeat responses
/// to heartbeats, nothing to one-way requests.
async fn upstream(mut s: TcpStream) {
    let mut dec = Decoder::new(Limits::default());
    let mut buf = BytesMut::with_capacity(8192);
    loop {
        let mut out = Vec::new();
        let mut bad = false;
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(f)) if f.kind() == Kind::Request && f.is_heartbeat() => {
                    out.extend_from_slice(&bolt::heartbeat_response(f.version(), f.request_id()))
                }
                Ok(Some(f)) if f.kind() == Kind::Request => {
                    out.extend_from_slice(&answer(&f, f.request_id()))
                }
                Ok(Some(_)) => {}
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

impl rpc_answers::AnswerFrame for Frame {
    type Id = u32;
    fn id(&self) -> u32 {
        self.request_id()
    }
    fn answer(&self) -> Answer {
        if self.kind() != Kind::Response {
            Answer::Other
        } else if self.is_heartbeat() {
            Answer::Heartbeat
        } else {
            match self.status() {
                Some(status::SUCCESS) => Answer::Ok(self.content()),
                Some(_) => Answer::Error,
                None => Answer::Other,
            }
        }
    }
    fn describe(&self) -> String {
        format!("{:?}", (self.request_id(), self.status(), self.content()))
    }
}

fuzz_target!(|data: &[u8]| {
    let h = harness();
    let mut dec = Decoder::new(Limits::default());
    let mut buf = BytesMut::from(data);
    let mut expect = Vec::new();
    let mut rejected = false;
    loop {
        match dec.decode(&mut buf) {
            Ok(Some(f)) if f.kind() == Kind::Request && f.is_heartbeat() => {
                expect.push(Expect::Heartbeat(f.request_id()))
            }
            Ok(Some(f)) if f.kind() == Kind::Request => {
                let content = Frame::parse(answer(&f, f.request_id()))
                    .expect("the upstream's answer parses")
                    .content()
                    .to_vec();
                expect.push(Expect::Response(f.request_id(), content))
            }
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(_) => {
                rejected = true;
                break;
            }
        }
    }

    let seen = h.exchange(data, !rejected, switchyard::proxy::rpc::serve::<Bolt>);

    let mut out = BytesMut::from(&seen.output[..]);
    let mut got: Vec<Frame> = Vec::new();
    let mut rdec = Decoder::new(Limits::default());
    loop {
        match rdec.decode(&mut out) {
            Ok(Some(f)) => got.push(f),
            Ok(None) => break,
            Err(e) => panic!("the client got a frame it cannot decode: {e}"),
        }
    }
    if !seen.reset {
        assert!(out.is_empty(), "the client got a cut frame");
    }
    rpc_answers::check(expect, got, seen.reset);
});
