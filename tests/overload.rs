//! Overload and slow clients, through the gateway binary: requests trickled a
//! byte at a time (slowloris) on every protocol are cut at the listener's
//! `request_head_timeout`; the overload manager sheds new connections with
//! each protocol's "busy" answer past its thresholds and recovers; thousands
//! of connections that never send are closed by the detection timeout and
//! give their memory back.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::*;

/// One listener sniffing every protocol: Redis to `redis`, MQTT to `mqtt`,
/// Dubbo, Bolt and RTSP to `rpc_rtsp` (requests that never complete never
/// reach it), HTTP/1 answered directly. `extra` holds listener fields and
/// `top` top-level blocks.
fn config(
    ports: &Ports,
    redis: SocketAddr,
    mqtt: SocketAddr,
    listener: &[&str],
    top: &str,
) -> String {
    let mut y = format!("admin:\n  address: 127.0.0.1:{}\n{top}", ports.admin);
    y += &format!(
        "listeners:\n  - name: edge\n    address: 127.0.0.1:{}\n    protocols: [http1, http2, redis, mqtt, dubbo, bolt, rtsp]\n    route_table: main\n",
        ports.listen
    );
    for l in listener {
        y += &format!("    {l}\n");
    }
    y += "route_tables:\n  - name: main\n    virtual_hosts:\n      - name: any\n        domains: [\"*\"]\n        routes:\n";
    y += "          - {match: {protocol: redis}, cluster: redis}\n";
    y += "          - {match: {protocol: mqtt}, cluster: brokers}\n";
    y += "          - {match: {protocol: dubbo}, cluster: rpc}\n";
    y += "          - {match: {protocol: bolt}, cluster: rpc}\n";
    y += "          - {match: {protocol: rtsp}, cluster: rpc}\n";
    y += "          - {match: {protocol: http1}, direct_response: {status: 200, body: gateway}}\n";
    y += "          - {match: {protocol: http2}, direct_response: {status: 200, body: gateway}}\n";
    y += &format!(
        "clusters:\n  - {{name: redis, hosts: [\"{redis}\"]}}\n  - {{name: brokers, hosts: [\"{mqtt}\"]}}\n  - {{name: rpc, hosts: [\"{}\"]}}\n",
        local(free_port())
    );
    y
}

// ---------------------------------------------------------------------------
// Slowloris

/// Send `fast` at once, then trickle `slow` one byte every 500 ms from another
/// thread (stopping at the first failed write), and read what the gateway
/// sends until it closes the connection. Panics if the connection is still
/// open [`WAIT`] after the last byte the gateway sent: the trickle outlasts
/// `request_head_timeout` (1 s in these tests) many times over.
fn trickle(addr: SocketAddr, fast: &[u8], slow: &[u8]) -> (Vec<u8>, Closed) {
    let mut c = RawConn::connect(addr);
    c.send(fast);
    let mut writer = c.stream().try_clone().expect("clone the socket");
    let slow = slow.to_vec();
    let t = std::thread::spawn(move || {
        for b in slow {
            if writer.write_all(&[b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    let out = c.read_until_closed();
    drop(c);
    let _ = t.join();
    out
}

fn slowloris_gateway(redis: &RedisServer, mqtt: &Mosquitto) -> Gateway {
    Gateway::start(&config(
        &Ports::new(),
        redis.addr(),
        mqtt.addr(),
        &[
            "request_head_timeout: 1s",
            "idle_timeout: 120s",
            "mqtt: {connect_timeout: 60s}",
        ],
        "",
    ))
}

#[test]
fn a_trickled_redis_command_is_cut_at_the_head_timeout() {
    let server = RedisServer::start();
    let mqtt = Mosquitto::start();
    let gw = slowloris_gateway(&server, &mqtt);
    // A whole command is served; a SET whose bulk never completes is cut.
    let set = b"*3\r\n$3\r\nSET\r\n$4\r\nslow\r\n$100\r\n0123456789012345678901234567890123456789";
    let (got, _) = trickle(gw.addr(), b"*1\r\n$4\r\nPING\r\n", set);
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("+PONG\r\n-ERR "), "{text:?}");
    assert!(text.contains("request_head_timeout"), "{text:?}");
    // Nothing of the trickled SET reached the server.
    let mut c = RawConn::connect(server.addr());
    assert_eq!(c.command(&["EXISTS", "slow"]), b":0\r\n");
    // Other clients are served meanwhile and after.
    let mut c = RawConn::connect(gw.addr());
    assert_eq!(c.command(&["PING"]), b"+PONG\r\n");
}

#[test]
fn a_trickled_mqtt_connect_and_publish_are_cut_at_the_head_timeout() {
    let redis = RedisServer::start();
    let mqtt = Mosquitto::start();
    let gw = slowloris_gateway(&redis, &mqtt);
    // MQTT 3.1.1 CONNECT with a 60-byte client id: the first 8 bytes let
    // detection match, the rest trickles (all but its last byte).
    let mut connect = b"\x10\x48\x00\x04MQTT\x04\x02\x00\x3c\x00\x3c".to_vec();
    connect.extend_from_slice(&[b'c'; 60]);
    let (got, _) = trickle(gw.addr(), &connect[..8], &connect[8..connect.len() - 1]);
    assert!(
        got.is_empty(),
        "no CONNACK for an unfinished CONNECT: {got:?}"
    );
    // After a whole CONNECT, a PUBLISH trickled is cut too.
    let mut connect = b"\x10\x16\x00\x04MQTT\x04\x02\x00\x3c\x00\x0a".to_vec();
    connect.extend_from_slice(b"slowclient");
    let mut publish = b"\x30\x70\x00\x04slow".to_vec();
    publish.extend_from_slice(&[b'p'; 40]);
    let (got, _) = trickle(gw.addr(), &connect, &publish);
    assert_eq!(got, b"\x20\x02\x00\x00", "CONNACK, then the close");
}

#[test]
fn trickled_dubbo_and_bolt_frames_are_cut_at_the_head_timeout() {
    let redis = RedisServer::start();
    let mqtt = Mosquitto::start();
    let gw = slowloris_gateway(&redis, &mqtt);
    let vectors = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/vectors");
    for (file, header) in [
        ("dubbo/node-client-pipelined.c2s.bin", 16),
        ("bolt/v1-node-client-pipelined.c2s.bin", 22),
    ] {
        let frames = std::fs::read(vectors.join(file)).expect("read a captured session");
        // The header at once, 30 bytes of the body (far from its end) trickled.
        let (got, _) = trickle(gw.addr(), &frames[..header], &frames[header..header + 30]);
        assert!(got.is_empty(), "{file}: {got:?}");
    }
}

#[test]
fn a_trickled_rtsp_head_is_cut_at_the_head_timeout() {
    let redis = RedisServer::start();
    let mqtt = Mosquitto::start();
    let gw = slowloris_gateway(&redis, &mqtt);
    let (got, _) = trickle(
        gw.addr(),
        b"OPTIONS rtsp://127.0.0.1/cam RTSP/1.0\r\n",
        b"CSeq: 1\r\nUser-Agent: slowloris/1.0\r\n",
    );
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("RTSP/1.0 408 "), "{text:?}");
}

#[test]
fn a_whole_request_sent_slowly_but_in_time_is_served() {
    // The deadline is per request: many requests, each in time, are fine.
    let server = RedisServer::start();
    let mqtt = Mosquitto::start();
    let gw = slowloris_gateway(&server, &mqtt);
    let mut c = TcpStream::connect(gw.addr()).unwrap();
    c.set_read_timeout(Some(WAIT)).unwrap();
    for i in 0..4 {
        let cmd = resp(&["SET", &format!("k{i}"), "v"]);
        let (a, b) = cmd.split_at(cmd.len() / 2);
        c.write_all(a).unwrap();
        std::thread::sleep(Duration::from_millis(400));
        c.write_all(b).unwrap();
        let mut reply = [0u8; 5];
        c.read_exact(&mut reply).unwrap();
        assert_eq!(&reply, b"+OK\r\n");
    }
}
