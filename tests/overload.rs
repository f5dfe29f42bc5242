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

use common::mariadb::{MariaDb, PROXY_PASSWORD, PROXY_USER};
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
fn a_trickled_http2_headers_frame_is_cut_at_the_head_timeout() {
    let redis = RedisServer::start();
    let mqtt = Mosquitto::start();
    let gw = slowloris_gateway(&redis, &mqtt);
    // Preface and SETTINGS at once; then a 64-byte HEADERS frame on stream 1,
    // its header and 30 bytes of its block trickled (it never completes).
    let fast = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
    let mut slow = b"\x00\x00\x40\x01\x04\x00\x00\x00\x01".to_vec();
    slow.extend_from_slice(&[0x82; 30]);
    let (got, _) = trickle(gw.addr(), fast, &slow);
    // The server's SETTINGS came first; the close is what counts.
    assert!(got.len() >= 9 && got[3] == 4, "{got:?}");
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

// ---------------------------------------------------------------------------
// The overload manager

fn vector(file: &str) -> Vec<u8> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/vectors");
    std::fs::read(dir.join(file)).unwrap_or_else(|e| panic!("read vector {file}: {e}"))
}

/// The first whole frame of a captured Dubbo or Bolt session.
fn first_frame<D: switchyard_codecs::Decoder>(file: &str, mut decoder: D) -> (Vec<u8>, D::Item) {
    let all = vector(file);
    let mut buf = bytes::BytesMut::from(&all[..]);
    let frame = decoder.decode(&mut buf).unwrap().expect("a whole frame");
    (all[..all.len() - buf.len()].to_vec(), frame)
}

/// Send `request` on a new connection and read until the gateway closes.
fn ask(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut c = RawConn::connect(addr);
    c.send(request);
    c.read_until_closed().0
}

fn decode_one<D: switchyard_codecs::Decoder>(bytes: &[u8], mut decoder: D) -> D::Item {
    let mut buf = bytes::BytesMut::from(bytes);
    decoder
        .decode(&mut buf)
        .unwrap_or_else(|e| panic!("the answer does not decode: {e}: {bytes:?}"))
        .unwrap_or_else(|| panic!("no whole frame in the answer: {bytes:?}"))
}

/// Every protocol's busy answer, on new connections of an overloaded gateway.
fn assert_every_protocol_is_shed(gw: &Gateway) {
    let addr = gw.addr();
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    assert_eq!(
        text(ask(addr, &resp(&["PING"]))),
        "-ERR max number of clients reached\r\n"
    );
    let http = text(ask(addr, &get_request("/")));
    assert!(http.starts_with("HTTP/1.1 503 "), "{http}");
    // MQTT 3.1.1: CONNACK 3 (server unavailable); MQTT 5: CONNACK 0x89 (server busy).
    assert_eq!(
        ask(addr, b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00"),
        b"\x20\x02\x00\x03"
    );
    assert_eq!(
        ask(addr, b"\x10\x0d\x00\x04MQTT\x05\x02\x00\x3c\x00\x00\x00"),
        b"\x20\x03\x00\x89\x00"
    );
    let (req, sent) = first_frame(
        "dubbo/node-client-pipelined.c2s.bin",
        dubbo::Decoder::new(dubbo::Limits::default()),
    );
    let got = decode_one(
        &ask(addr, &req),
        dubbo::Decoder::new(dubbo::Limits::default()),
    );
    assert_eq!(got.request_id(), sent.request_id());
    assert_eq!(
        got.status(),
        Some(dubbo::status::SERVER_THREADPOOL_EXHAUSTED_ERROR)
    );
    let (req, sent) = first_frame(
        "bolt/v1-node-client-pipelined.c2s.bin",
        bolt::Decoder::new(bolt::Limits::default()),
    );
    let got = decode_one(
        &ask(addr, &req),
        bolt::Decoder::new(bolt::Limits::default()),
    );
    assert_eq!(got.request_id(), sent.request_id());
    assert_eq!(got.status(), Some(bolt::status::SERVER_THREADPOOL_BUSY));
    let rtsp = text(ask(
        addr,
        b"OPTIONS rtsp://127.0.0.1/cam RTSP/1.0\r\nCSeq: 7\r\n\r\n",
    ));
    assert!(rtsp.starts_with("RTSP/1.0 503 "), "{rtsp}");
    assert!(rtsp.contains("CSeq: 7\r\n"), "{rtsp}");
    // HTTP/2: the preface, then our SETTINGS and a GOAWAY that processed no stream.
    let h2 = ask(
        addr,
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00",
    );
    let goaway = h2
        .windows(4)
        .position(|w| w[3] == 7)
        .filter(|&i| i >= 9)
        .unwrap_or_else(|| panic!("no GOAWAY in {h2:?}"));
    // Stream 0, last stream id 0.
    assert_eq!(&h2[goaway + 5..goaway + 13], &[0u8; 8], "{h2:?}");
}

use switchyard_codecs::{bolt, dubbo};

#[test]
fn past_the_connection_threshold_every_protocol_is_shed_until_connections_close() {
    let redis = RedisServer::start();
    let mqtt = Mosquitto::start();
    let gw = Gateway::start(&config(
        &Ports::new(),
        redis.addr(),
        mqtt.addr(),
        &[],
        "overload:\n  max_connections: 3\n",
    ));
    // Three clients are served and stay connected.
    let mut held: Vec<RawConn> = (0..3).map(|_| RawConn::connect(gw.addr())).collect();
    for c in &mut held {
        assert_eq!(c.command(&["PING"]), b"+PONG\r\n");
    }
    assert_every_protocol_is_shed(&gw);
    assert!(gw.metric("switchyard_overload_shed_total", &[("protocol", "redis")]) >= 1.0);
    // The held clients are untouched.
    for c in &mut held {
        assert_eq!(c.command(&["PING"]), b"+PONG\r\n");
    }
    // One leaves: a new client is served again.
    drop(held.pop());
    wait_for("a new client to be served after one left", WAIT, || {
        let mut c = RawConn::connect(gw.addr());
        c.send(&resp(&["PING"]));
        (c.reply().ok()? == b"+PONG\r\n").then_some(())
    });
}

#[test]
fn past_the_memory_threshold_new_connections_are_shed_until_it_is_raised() {
    let redis = RedisServer::start();
    let mqtt = Mosquitto::start();
    // 1 MiB: far below what the gateway itself takes.
    let top = "overload:\n  max_rss_bytes: 1048576\n  check_interval: 100ms\n";
    let yaml = config(&Ports::new(), redis.addr(), mqtt.addr(), &[], top);
    let gw = Gateway::start(&yaml);
    assert_every_protocol_is_shed(&gw);
    assert!(gw.metric("switchyard_process_resident_memory_bytes", &[]) > 1_048_576.0);
    assert_eq!(gw.metric("switchyard_overload_active", &[]), 1.0);
    // Pressure drops (the limit is raised on reload): served again.
    std::fs::write(
        &gw.config_path,
        yaml.replace("max_rss_bytes: 1048576", "max_rss_bytes: 8589934592"),
    )
    .unwrap();
    gw.signal("HUP");
    wait_for("the gateway to serve again", WAIT, || {
        let mut c = RawConn::connect(gw.addr());
        c.send(&resp(&["PING"]));
        (c.reply().ok()? == b"+PONG\r\n").then_some(())
    });
    assert_eq!(gw.metric("switchyard_overload_active", &[]), 0.0);
}

#[test]
fn with_stop_accepting_new_connections_wait_until_one_leaves() {
    let redis = RedisServer::start();
    let mqtt = Mosquitto::start();
    let gw = Gateway::start(&config(
        &Ports::new(),
        redis.addr(),
        mqtt.addr(),
        &[],
        "overload:\n  max_connections: 2\n  action: stop_accepting\n",
    ));
    let mut held: Vec<RawConn> = (0..2).map(|_| RawConn::connect(gw.addr())).collect();
    for c in &mut held {
        assert_eq!(c.command(&["PING"]), b"+PONG\r\n");
    }
    // The third waits in the accept queue, unanswered.
    let mut third = RawConn::connect(gw.addr());
    third.send(&resp(&["PING"]));
    wait_for("the accept loop to pause", WAIT, || {
        (gw.metric("switchyard_overload_accept_paused", &[]) == 1.0).then_some(())
    });
    drop(held.pop());
    assert_eq!(third.reply().unwrap(), b"+PONG\r\n");
    // Full again (two open), then empty: accepting resumes.
    drop((held, third));
    wait_for("the accept loop to resume", WAIT, || {
        (gw.metric("switchyard_overload_accept_paused", &[]) == 0.0).then_some(())
    });
    let mut c = RawConn::connect(gw.addr());
    assert_eq!(c.command(&["PING"]), b"+PONG\r\n");
}

// ---------------------------------------------------------------------------
// Many connections that never finish detection

/// The gateway's resident memory, from /proc.
fn rss_bytes(pid: u32) -> u64 {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Make sure this process (and the gateway it spawns) may hold `n` more files.
fn raise_nofile(n: u64) {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let mut nums = line
        .split_whitespace()
        .filter_map(|w| w.parse::<u64>().ok());
    let (soft, hard) = (nums.next().unwrap_or(0), nums.next().unwrap_or(0));
    assert!(
        hard >= n,
        "RLIMIT_NOFILE hard limit {hard} is below the {n} files this test needs"
    );
    if soft < n {
        let ok = std::process::Command::new("prlimit")
            .arg(format!("--pid={}", std::process::id()))
            .arg(format!("--nofile={hard}:{hard}"))
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "could not raise RLIMIT_NOFILE to {hard} with prlimit");
    }
}

/// The detection timeout of the silent-connections test (its config says `15s`).
const DETECT_TIMEOUT: Duration = Duration::from_secs(15);

#[test]
fn ten_thousand_silent_connections_are_closed_by_detection_and_give_memory_back() {
    const N: usize = 10_000;
    raise_nofile(N as u64 + 1_000);
    let redis = RedisServer::start();
    let mqtt = Mosquitto::start();
    let gw = Gateway::start(&config(
        &Ports::new(),
        redis.addr(),
        mqtt.addr(),
        // Long enough for all of them to be open at once.
        &["detect: {timeout: 15s}", "idle_timeout: 300s"],
        "",
    ));
    // Warm up every path once, then take the baseline.
    for _ in 0..3 {
        let mut c = RawConn::connect(gw.addr());
        assert_eq!(c.command(&["PING"]), b"+PONG\r\n");
    }
    let pid = gw.pid();
    let (rss0, fds0) = (rss_bytes(pid), open_fds(pid));
    // Nothing at all, or the first bytes of each sniffed protocol, short of a verdict.
    let prefixes: [&[u8]; 8] = [
        b"",
        b"*",
        b"GET /",
        b"\x10",
        b"\xda",
        b"\x01",
        b"PRI * HTTP",
        b"OPTIONS rtsp",
    ];
    let mut conns = Vec::with_capacity(N);
    for i in 0..N {
        let mut s = TcpStream::connect(gw.addr()).expect("connect");
        let prefix = prefixes[i % prefixes.len()];
        if !prefix.is_empty() {
            s.write_all(prefix).unwrap();
        }
        conns.push(s);
    }
    // The accept loop may still be catching up on a loaded machine: wait
    // (well within the detection timeout) until the gateway holds them all.
    let fds_peak = wait_for(
        &format!("the gateway to hold all {N} connections open at once"),
        WAIT,
        || {
            let fds = open_fds(pid);
            (fds >= fds0 + N * 99 / 100).then_some(fds)
        },
    );
    let rss_peak = rss_bytes(pid);
    // Every one is closed by the gateway: EOF (or a reset), never a byte.
    // The first ones wait out the whole detection timeout from their connect.
    for s in &mut conns {
        s.set_read_timeout(Some(DETECT_TIMEOUT + WAIT)).unwrap();
        let mut b = [0u8; 16];
        match s.read(&mut b) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("a silent connection got {other:?} instead of a close"),
        }
    }
    drop(conns);
    wait_for("the gateway's sockets to be closed", WAIT, || {
        (open_fds(pid) <= fds0 + 5).then_some(())
    });
    // Memory back near the baseline: the gateway hands the allocator's
    // freed memory back once the storm is over (within a check interval):
    // at most a quarter of what the peak added stays.
    let added = rss_peak.saturating_sub(rss0);
    let what = format!(
        "RSS back under {} KiB (baseline {} KiB, peak {} KiB)",
        (rss0 + added / 4) / 1024,
        rss0 / 1024,
        rss_peak / 1024
    );
    let rss1 = wait_for(&what, WAIT, || {
        let rss = rss_bytes(pid);
        (rss <= rss0 + added / 4).then_some(rss)
    });
    eprintln!(
        "{N} silent connections: rss {} KiB -> peak {} KiB ({} B each) -> after {} KiB; fds {fds0} -> {fds_peak} -> {}",
        rss0 / 1024,
        rss_peak / 1024,
        rss_peak.saturating_sub(rss0) / N as u64,
        rss1 / 1024,
        open_fds(pid)
    );
    let failed: f64 = ["timeout", "rejected", "closed"]
        .iter()
        .map(|r| gw.metric("switchyard_detect_failures_total", &[("reason", r)]))
        .sum();
    assert!(failed >= N as f64, "detection failures counted: {failed}");
    // And the gateway still serves.
    let mut c = RawConn::connect(gw.addr());
    assert_eq!(c.command(&["PING"]), b"+PONG\r\n");
}

// ---------------------------------------------------------------------------
// MySQL (a private mariadbd; the gateway answers the handshake itself)

fn mysql_gateway(db: &MariaDb, top: &str) -> Gateway {
    Gateway::start(&format!(
        "admin: {{ address: \"127.0.0.1:{admin}\" }}\n{top}listeners:\n  - name: db\n    address: \"127.0.0.1:{port}\"\n    protocol: mysql\n    route_table: sql\n    request_head_timeout: 1s\n    idle_timeout: 120s\n    mysql:\n      users:\n        - {{ username: app, password: app-pw }}\nroute_tables:\n  - name: sql\n    virtual_hosts:\n      - name: any\n        domains: [\"*\"]\n        routes:\n          - cluster: primary\nclusters:\n  - name: primary\n    hosts: [\"127.0.0.1:{db}\"]\n    mysql: {{ user: {PROXY_USER}, password: {PROXY_PASSWORD}, max_connections: 8 }}\n",
        admin = free_port(),
        port = free_port(),
        db = db.port,
    ))
}

/// PyMySQL logs in through the gateway, runs a query, then trickles a
/// COM_QUERY one byte per 500 ms (all but its last byte). Prints `closed`
/// when the gateway closes the connection, `open` if the trickle ends first.
const MYSQL_TRICKLE: &str = r#"
import pymysql, socket, sys
c = pymysql.connect(host="127.0.0.1", port=int(sys.argv[1]), user="app", password="app-pw")
cur = c.cursor(); cur.execute("SELECT 41 + 1"); print("query", cur.fetchone()[0])
s = c._sock
q = b"SELECT 'trickled' FROM DUAL"
pkt = (len(q) + 1).to_bytes(3, "little") + b"\x00" + b"\x03" + q
s.settimeout(0.5)
for b in pkt[:-1]:
    try:
        s.send(bytes([b]))
        if s.recv(100) == b"":
            print("closed"); sys.exit(0)
    except socket.timeout:
        pass
    except OSError:
        print("closed"); sys.exit(0)
print("open")
"#;

#[test]
fn mysql_trickled_command_is_cut_and_overload_answers_err_1040() {
    let db = MariaDb::start();
    let gw = mysql_gateway(&db, "");
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(MYSQL_TRICKLE)
        .arg(gw.addr().port().to_string())
        .output()
        .expect("run python3 (PyMySQL)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.trim(),
        "query 42\nclosed",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(gw);
    // Past an RSS threshold of 1 MiB: the mariadb client gets ERR 1040.
    let gw = mysql_gateway(&db, "overload: { max_rss_bytes: 1048576 }\n");
    let out = std::process::Command::new(require("mariadb"))
        .args(["--no-defaults", "-uapp", "-papp-pw", "-h127.0.0.1"])
        .arg(format!("-P{}", gw.addr().port()))
        .args(["-e", "SELECT 1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("1040") && err.contains("Too many connections"),
        "{err}"
    );
}

/// The second stage: past `shed_requests_rss_bytes`, requests on connections
/// already open get their protocol's busy answer (the connections stay open
/// and are served again once the pressure drops).
#[test]
fn past_the_request_threshold_open_connections_get_busy_answers_until_it_is_raised() {
    let redis = RedisServer::start();
    let mqtt = Mosquitto::start();
    let calm = "overload:\n  check_interval: 100ms\n";
    let yaml = config(&Ports::new(), redis.addr(), mqtt.addr(), &[], calm);
    let gw = Gateway::start(&yaml);
    let mut r = RawConn::connect(gw.addr());
    assert_eq!(r.command(&["PING"]), b"+PONG\r\n");
    let mut h = RawConn::connect(gw.addr());
    h.send(&get_request("/"));
    assert_eq!(h.response().status, 200);

    // 1 MiB: far below what the gateway itself takes.
    let pressed = calm.replace(
        "check_interval",
        "shed_requests_rss_bytes: 1048576\n  check_interval",
    );
    std::fs::write(&gw.config_path, yaml.replace(calm, &pressed)).unwrap();
    gw.signal("HUP");
    wait_for(
        "the open Redis connection to get busy answers",
        WAIT,
        || (r.command(&["PING"]) == b"-ERR gateway overloaded, try again later\r\n").then_some(()),
    );
    h.send(&get_request("/"));
    let resp = h.response();
    assert_eq!(resp.status, 503, "{resp:?}");
    assert_eq!(resp.header("retry-after"), Some("1"));
    // New connections are accepted (no connection threshold) and answered busy.
    let mut m = RawConn::connect(gw.addr());
    m.send(b"\x10\x0e\x00\x04MQTT\x04\x02\x00\x3c\x00\x02id");
    let (got, _) = m.read_until_closed();
    assert_eq!(got, b"\x20\x02\x00\x03", "CONNACK 3, server unavailable");
    let out = run_ok(
        curl()
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--http2-prior-knowledge",
            ])
            .arg(gw.url("/")),
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "503");
    assert!(
        gw.metric(
            "switchyard_overload_shed_requests_total",
            &[("protocol", "redis")]
        ) >= 1.0
    );

    // Pressure drops: the same connections are served again.
    std::fs::write(&gw.config_path, &yaml).unwrap();
    gw.signal("HUP");
    wait_for("the open Redis connection to be served again", WAIT, || {
        (r.command(&["PING"]) == b"+PONG\r\n").then_some(())
    });
    h.send(&get_request("/"));
    assert_eq!(h.response().status, 200);
}
