//! Fuzz the MQTT driver (`switchyard::proxy::mqtt::serve`, the session shape):
//! arbitrary client bytes go through the real driver to an in-process broker
//! on loopback that answers CONNECT with CONNACK and records every packet it
//! decodes. No ACL, users or mount point are configured, so the gateway has
//! nothing to answer itself: every client packet must reach the broker.
//! Invariants, per input:
//!
//! * no panic, no hang: the driver ends the session once the client has
//!   half-closed, and by itself after bytes its codec rejects (the client then
//!   keeps its side open: a driver that kept reading would hang, so buffering
//!   stops at `max_packet_size`);
//! * a first packet that is no CONNECT opens no broker connection; after a
//!   CONNECT the client's first bytes are the broker's CONNACK, byte-exact;
//! * the broker receives exactly the client's complete packets, in order and
//!   byte-exact, up to the first one the gateway's codec rejects — including
//!   the packets that arrived in the same read as the rejected one.
//!
//! Seeds: `fuzz/seeds/mqtt/` (captured client streams).
#![no_main]

#[path = "common/driver.rs"]
mod driver;

use std::sync::{Mutex, OnceLock};

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use switchyard_codecs::Decoder as _;
use switchyard_codecs::mqtt::{self, Body, Decoder, Limits, TopicAliases};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

const CONFIG: &str = r#"
listeners:
  - name: fuzz
    address: 127.0.0.1:1
    protocol: mqtt
    route_table: rt
    mqtt: { max_packet_size: 2048, connect_timeout: 5s }
route_tables:
  - name: rt
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - name: all
            match: { protocol: mqtt }
            cluster: up
clusters:
  - name: up
    hosts: ["{UPSTREAM}"]
    connect_timeout: 2s
    request_timeout: 5s
"#;

/// Each broker connection's packets (wire bytes), sent when it closes.
type Log = Vec<Vec<u8>>;

fn logs() -> &'static Mutex<Option<mpsc::UnboundedReceiver<Log>>> {
    static L: OnceLock<Mutex<Option<mpsc::UnboundedReceiver<Log>>>> = OnceLock::new();
    L.get_or_init(|| Mutex::new(None))
}

/// The broker: CONNACK (accepted) to the CONNECT, then records every packet.
async fn broker(mut s: TcpStream, tx: mpsc::UnboundedSender<Log>) {
    let mut dec = Decoder::new(Limits {
        max_packet: 1 << 20,
    });
    let mut buf = BytesMut::with_capacity(8192);
    let mut log = Log::new();
    'conn: loop {
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(p)) => {
                    log.push(p.wire().to_vec());
                    if let Some(c) = p.as_connect()
                        && s.write_all(&mqtt::connack(c.version(), false, 0))
                            .await
                            .is_err()
                    {
                        break 'conn;
                    }
                }
                Ok(None) => break,
                Err(_) => break 'conn,
            }
        }
        match s.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    let _ = tx.send(log);
}

fn harness() -> &'static driver::Harness {
    static H: OnceLock<driver::Harness> = OnceLock::new();
    H.get_or_init(|| {
        let (tx, rx) = mpsc::unbounded_channel();
        *logs().lock().expect("log lock") = Some(rx);
        driver::Harness::new(CONFIG, move |l| {
            driver::accept_each(l, move |s| broker(s, tx.clone()))
        })
    })
}

fuzz_target!(|data: &[u8]| {
    let h = harness();
    let max_packet = h.listener.mqtt.as_ref().map_or(1 << 20, |m| m.max_packet);

    // What the driver makes of the input: its decoder, and the topic aliases
    // it resolves (an unknown alias is malformed too).
    let mut dec = Decoder::new(Limits { max_packet });
    let mut aliases = TopicAliases::new(u16::MAX);
    let mut buf = BytesMut::from(data);
    let mut packets: Vec<Vec<u8>> = Vec::new();
    let mut rejected = false;
    let mut connect = None;
    loop {
        match dec.decode(&mut buf) {
            Ok(Some(p)) => {
                if packets.is_empty() {
                    connect = p.as_connect().map(|c| c.version());
                    if connect.is_none() {
                        break;
                    }
                }
                if let Body::Publish(publish) = p.body()
                    && aliases.resolve(publish).is_err()
                {
                    rejected = true;
                    break;
                }
                packets.push(p.wire().to_vec());
            }
            Ok(None) => break,
            Err(_) => {
                rejected = true;
                break;
            }
        }
    }

    let seen = h.exchange(data, !rejected, switchyard::proxy::mqtt::serve);

    let Some(version) = connect else {
        assert!(
            seen.output.is_empty(),
            "no CONNECT, yet the client got {:?}",
            seen.output
        );
        return;
    };
    // The session was bound: the broker's log comes when its connection closes.
    let log = h.rt.block_on(async {
        let mut rx = logs()
            .lock()
            .expect("log lock")
            .take()
            .expect("log receiver");
        let log = tokio::time::timeout(driver::HANG, rx.recv()).await;
        *logs().lock().expect("log lock") = Some(rx);
        log.expect("the broker connection outlived the session")
            .expect("the broker is gone")
    });
    let connack = mqtt::connack(version, false, 0);
    assert!(
        seen.output.starts_with(&connack) || seen.reset,
        "the client's first bytes are not the broker's CONNACK: {:?}",
        seen.output
    );
    assert!(
        log.len() <= packets.len() && log[..] == packets[..log.len()],
        "the broker got packets the client did not send, or not byte-exact"
    );
    assert_eq!(
        log.len(),
        packets.len(),
        "the broker got {} of the client's {} complete packets (rejected bytes after them: {rejected})",
        log.len(),
        packets.len()
    );
});
