//! Fuzz the multiplexed RPC driver (`switchyard::proxy::rpc::serve::<Dubbo>`,
//! over `stream::multiplex::MuxConn`): arbitrary client bytes go through the
//! real driver to an in-process Dubbo upstream on loopback that answers each
//! two-way request with status OK and a body naming the fingerprint of the
//! request's exact bytes less its request id (the gateway remaps ids).
//! Invariants, per input:
//!
//! * no panic, no hang: the driver ends the connection once the client has
//!   half-closed, and by itself after a frame its codec rejects (the client
//!   then keeps its side open);
//! * every two-way request gets exactly one response with the client's own
//!   request id: the upstream's, whose fingerprint is that request's (header
//!   and body forwarded byte-exact but for the id), or a gateway error status;
//!   every heartbeat gets a heartbeat response; one-way requests get nothing;
//!   the client gets nothing else.
//!
//! Seeds: `fuzz/seeds/dubbo/` (captured client streams).
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
use switchyard::proxy::rpc::Dubbo;
use switchyard_codecs::Decoder as _;
use switchyard_codecs::dubbo::{self, Decoder, Frame, Limits, status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CONFIG: &str = r#"
listeners:
  - name: fuzz
    address: 127.0.0.1:1
    protocol: dubbo
    route_table: rt
route_tables:
  - name: rt
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - name: all
            match: { protocol: dubbo }
            cluster: up
clusters:
  - name: up
    hosts: ["{UPSTREAM}"]
    connect_timeout: 2s
    request_timeout: 5s
"#;

/// The fingerprint of a frame's bytes without its request id (bytes 4..12).
fn fingerprint(f: &Frame) -> String {
    let w = f.wire();
    let mut bytes = Vec::with_capacity(w.len());
    bytes.extend_from_slice(w.get(..4).unwrap_or_default());
    bytes.extend_from_slice(w.get(12..).unwrap_or_default());
    echo::fingerprint(&bytes)
}

/// The upstream: OK + fingerprint to each two-way request, heartbeat
/// responses to heartbeats, nothing to one-way requests.
async fn upstream(mut s: TcpStream) {
    let mut dec = Decoder::new(Limits::default());
    let mut buf = BytesMut::with_capacity(8192);
    loop {
        let mut out = Vec::new();
        let mut bad = false;
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(f)) if f.is_request() && f.is_heartbeat() => out.extend_from_slice(
                    &dubbo::heartbeat_response(f.request_id(), f.serialization_id()),
                ),
                Ok(Some(f)) if f.is_request() && f.is_two_way() => {
                    out.extend_from_slice(&dubbo::encode(
                        f.serialization_id(),
                        status::OK,
                        f.request_id(),
                        fingerprint(&f).as_bytes(),
                    ))
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
    type Id = u64;
    fn id(&self) -> u64 {
        self.request_id()
    }
    fn answer(&self) -> Answer {
        if self.is_request() {
            Answer::Other
        } else if self.is_heartbeat() {
            Answer::Heartbeat
        } else {
            match self.status() {
                Some(status::OK) => Answer::Ok(self.body()),
                Some(_) => Answer::Error,
                None => Answer::Other,
            }
        }
    }
    fn describe(&self) -> String {
        format!("{:?}", (self.request_id(), self.status(), self.body()))
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
            Ok(Some(f)) if f.is_request() && f.is_heartbeat() => {
                expect.push(Expect::Heartbeat(f.request_id()))
            }
            Ok(Some(f)) if f.is_request() && f.is_two_way() => expect.push(Expect::Response(
                f.request_id(),
                fingerprint(&f).into_bytes(),
            )),
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(_) => {
                rejected = true;
                break;
            }
        }
    }

    let seen = h.exchange(data, !rejected, switchyard::proxy::rpc::serve::<Dubbo>);

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
