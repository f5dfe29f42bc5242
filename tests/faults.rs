//! Upstream faults, per stream shape, through the gateway binary with real
//! servers and clients: an upstream killed mid-request, one that accepts and
//! never answers, one that answers garbage, and a black-holed address. Pending
//! requests must fail fast with their protocol's error, nothing may hang, and
//! the gateway must not leak sockets (its /proc/PID/fd count comes back).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;

/// A TCP server on a free port that accepts every connection and then either
/// never answers (`answer: None`) or, after the first bytes of each request,
/// writes `answer` (garbage). Stops on drop.
struct BadServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl BadServer {
    fn start(answer: Option<&'static [u8]>) -> Self {
        let listener = TcpListener::bind(local(0)).unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        if let Some(answer) = answer {
                            std::thread::spawn(move || {
                                let mut buf = [0u8; 4096];
                                while let Ok(n) = s.read(&mut buf) {
                                    if n == 0 || s.write_all(answer).is_err() {
                                        break;
                                    }
                                }
                            });
                        } else {
                            held.push(s);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        BadServer { addr, stop }
    }
}

impl Drop for BadServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// After the clients are gone, the gateway's sockets are back to `before`.
fn assert_no_fd_leak(gw: &Gateway, before: usize) {
    let pid = gw.pid();
    wait_for("the gateway's sockets to be closed", WAIT, || {
        (open_fds(pid) <= before).then_some(())
    });
}

fn redis_gateway(host: SocketAddr) -> Gateway {
    Template {
        redis: vec![host],
        cluster_fields: vec!["request_timeout: 1s", "connect_timeout: 1s"],
        ..Default::default()
    }
    .start()
}

// ---------------------------------------------------------------------------
// Ordered (Redis)

#[test]
fn redis_upstream_killed_mid_request_fails_the_pending_command_at_once() {
    let mut server = RedisServer::start();
    // A long request timeout: the answer must come from the kill, not a timer.
    let gw = Template {
        redis: vec![server.addr()],
        cluster_fields: vec!["request_timeout: 60s"],
        ..Default::default()
    }
    .start();
    let before = open_fds(gw.pid());
    let mut c = RawConn::connect(gw.addr());
    assert_eq!(c.command(&["PING"]), b"+PONG\r\n");
    c.send(&resp(&["BLPOP", "never", "0"]));
    c.send(&resp(&["GET", "after"]));
    // The BLPOP is on the server (it shows in CLIENT LIST) when it dies.
    wait_for("the BLPOP to reach the server", WAIT, || {
        let mut d = RawConn::connect(server.addr());
        let list = String::from_utf8_lossy(&d.command(&["CLIENT", "LIST"])).into_owned();
        list.contains("cmd=blpop").then_some(())
    });
    server.kill();
    // Both pending commands get an error at once.
    for _ in 0..2 {
        let reply =
            String::from_utf8_lossy(&c.reply().expect("an answer, not a hang")).into_owned();
        assert!(reply.starts_with("-ERR the upstream closed"), "{reply}");
    }
    drop(c);
    assert_no_fd_leak(&gw, before);
}

#[test]
fn redis_upstream_that_never_answers_times_out_with_an_error() {
    let server = BadServer::start(None);
    let gw = redis_gateway(server.addr);
    let before = open_fds(gw.pid());
    let mut c = RawConn::connect(gw.addr());
    // A pipeline: every command pending gets its error.
    c.send(&[resp(&["GET", "a"]), resp(&["GET", "b"])].concat());
    for _ in 0..2 {
        let reply = String::from_utf8_lossy(&c.reply().unwrap()).into_owned();
        assert_eq!(reply, "-ERR upstream request timeout\r\n");
    }
    drop(c);
    assert_no_fd_leak(&gw, before);
}

#[test]
fn redis_upstream_that_answers_garbage_gets_an_error_not_a_hang() {
    let server = BadServer::start(Some(b"HTTP/1.1 400 Bad Request\r\n\r\n\x00\x01garbage"));
    let gw = redis_gateway(server.addr);
    let before = open_fds(gw.pid());
    let mut c = RawConn::connect(gw.addr());
    c.send(&[resp(&["GET", "a"]), resp(&["GET", "b"])].concat());
    for _ in 0..2 {
        let reply = String::from_utf8_lossy(&c.reply().unwrap()).into_owned();
        assert!(
            reply.starts_with("-ERR the upstream reply was refused"),
            "{reply}"
        );
    }
    // The client connection goes on: the next command gets an answer too.
    let reply = String::from_utf8_lossy(&c.command(&["GET", "c"])).into_owned();
    assert!(reply.starts_with("-ERR "), "{reply}");
    drop(c);
    assert_no_fd_leak(&gw, before);
}

// ---------------------------------------------------------------------------
// Session (MQTT)

#[test]
fn mqtt_broker_killed_mid_session_closes_the_client_and_leaks_nothing() {
    let mut broker = Mosquitto::start();
    let gw = Gateway::start(&format!(
        "admin:\n  address: 127.0.0.1:{admin}\nlisteners:\n  - name: mq\n    address: 127.0.0.1:{listen}\n    protocols: [mqtt]\n    route_table: main\nroute_tables:\n  - name: main\n    virtual_hosts:\n      - name: any\n        domains: [\"*\"]\n        routes:\n          - {{match: {{protocol: mqtt}}, cluster: brokers}}\nclusters:\n  - {{name: brokers, hosts: [\"{broker}\"], connect_timeout: 1s}}\n",
        admin = free_port(),
        listen = free_port(),
        broker = broker.addr(),
    ));
    let before = open_fds(gw.pid());
    let mut c = RawConn::connect(gw.addr());
    c.send(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00");
    let mut connack = [0u8; 4];
    c.reader.read_exact(&mut connack).unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0]);
    // A QoS 1 PUBLISH whose PUBACK never comes: the broker dies.
    broker.kill();
    c.send(b"\x32\x0a\x00\x04kill\x00\x01hi");
    let (rest, _) = c.read_until_closed();
    assert!(
        rest.is_empty() || rest[0] != 0x40,
        "no PUBACK from a dead broker: {rest:?}"
    );
    assert_no_fd_leak(&gw, before);
}

#[test]
fn mqtt_broker_that_never_answers_connack_gets_the_client_refused() {
    let server = BadServer::start(None);
    let gw = Gateway::start(&format!(
        "admin:\n  address: 127.0.0.1:{admin}\nlisteners:\n  - name: mq\n    address: 127.0.0.1:{listen}\n    protocols: [mqtt]\n    route_table: main\nroute_tables:\n  - name: main\n    virtual_hosts:\n      - name: any\n        domains: [\"*\"]\n        routes:\n          - {{match: {{protocol: mqtt}}, cluster: brokers}}\nclusters:\n  - {{name: brokers, hosts: [\"{broker}\"], connect_timeout: 1s, request_timeout: 1s}}\n",
        admin = free_port(),
        listen = free_port(),
        broker = server.addr,
    ));
    let before = open_fds(gw.pid());
    let mut c = RawConn::connect(gw.addr());
    c.send(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00");
    let (got, _) = c.read_until_closed();
    // CONNACK 3 (server unavailable), or a plain close.
    assert!(got.is_empty() || got == b"\x20\x02\x00\x03", "{got:?}");
    assert_no_fd_leak(&gw, before);
}

#[test]
fn mqtt_broker_that_answers_garbage_gets_the_client_refused_or_closed() {
    let server = BadServer::start(Some(b"\xff\xff\xff\xff\xffnot mqtt at all"));
    let gw = Gateway::start(&format!(
        "admin:\n  address: 127.0.0.1:{admin}\nlisteners:\n  - name: mq\n    address: 127.0.0.1:{listen}\n    protocols: [mqtt]\n    route_table: main\nroute_tables:\n  - name: main\n    virtual_hosts:\n      - name: any\n        domains: [\"*\"]\n        routes:\n          - {{match: {{protocol: mqtt}}, cluster: brokers}}\nclusters:\n  - {{name: brokers, hosts: [\"{broker}\"], connect_timeout: 1s, request_timeout: 1s}}\n",
        admin = free_port(),
        listen = free_port(),
        broker = server.addr,
    ));
    let before = open_fds(gw.pid());
    let mut c = RawConn::connect(gw.addr());
    c.send(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00");
    let (got, _) = c.read_until_closed();
    // The garbage never reaches the client: CONNACK 3 (server unavailable), or a plain close.
    assert!(got.is_empty() || got == b"\x20\x02\x00\x03", "{got:?}");
    assert_no_fd_leak(&gw, before);
}

// ---------------------------------------------------------------------------
// A black-holed upstream address

/// A network namespace of its own (deleted on drop) with a veth pair inside
/// it: 192.0.2.1/24 on one end, a permanent neighbour entry for 192.0.2.2 on
/// it, and no address on the other end, so packets to 192.0.2.2 leave and
/// are silently dropped: connecting there hangs, as to a host that vanished.
/// The gateway and the client run inside the namespace; nothing leaves it.
/// (This kernel has no `prio`/`netem` qdisc and the machine no iptables, so
/// the drop is the veth's, not a filter's.)
struct BlackHole {
    name: String,
}

const BLACK_HOLE: &str = "192.0.2.2:6379";

impl BlackHole {
    fn create() -> Option<Self> {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("sy-bh-{}-{n}", std::process::id());
        let ip = |args: &[&str]| {
            std::process::Command::new("ip")
                .args(args)
                .status()
                .is_ok_and(|s| s.success())
        };
        if !ip(&["netns", "add", &name]) {
            return None;
        }
        let hole = BlackHole { name };
        let n = hole.name.as_str();
        let steps: [&[&str]; 6] = [
            &["link", "set", "lo", "up"],
            &[
                "link", "add", "sy-va", "type", "veth", "peer", "name", "sy-vb",
            ],
            &["addr", "add", "192.0.2.1/24", "dev", "sy-va"],
            &["link", "set", "sy-va", "up"],
            &["link", "set", "sy-vb", "up"],
            &[
                "neigh",
                "add",
                "192.0.2.2",
                "lladdr",
                "02:00:00:00:00:02",
                "dev",
                "sy-va",
                "nud",
                "permanent",
            ],
        ];
        let ok = steps.iter().all(|step| {
            let mut args = vec!["-n", n];
            args.extend_from_slice(step);
            ip(&args)
        });
        ok.then_some(hole)
    }

    fn command(&self, program: &str) -> std::process::Command {
        let mut c = std::process::Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }
}

/// A gateway running inside a [`BlackHole`]'s namespace, killed on drop.
struct NsGateway {
    child: std::process::Child,
    dir: tempfile::TempDir,
}

impl BlackHole {
    /// Run the gateway on `yaml` inside the namespace; returns once its
    /// admin server (which `yaml` must put on 127.0.0.1:19901) is ready.
    fn gateway(&self, yaml: &str) -> NsGateway {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("switchyard.yaml");
        std::fs::write(&config, yaml).unwrap();
        let log = std::fs::File::create(dir.path().join("gateway.log")).unwrap();
        let child = self
            .command(env!("CARGO_BIN_EXE_switchyard"))
            .arg("run")
            .arg("-c")
            .arg(&config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let gw = NsGateway { child, dir };
        wait_for("the gateway in the namespace to be ready", WAIT, || {
            let out = self
                .command(&require("curl").display().to_string())
                .args(["-s", "http://127.0.0.1:19901/ready"])
                .output()
                .ok()?;
            out.status.success().then_some(())
        });
        gw
    }
}

impl NsGateway {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default()
    }
}

impl Drop for NsGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

#[test]
fn a_black_holed_redis_upstream_fails_at_the_connect_timeout() {
    let hole = BlackHole::create()
        .expect("`ip netns add` and veth pairs must work here (root, iproute2): the black-hole test needs them");
    require("redis-cli");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("switchyard.yaml");
    // Inside the namespace every port is free.
    let yaml = Template {
        redis: vec![BLACK_HOLE.parse().unwrap()],
        cluster_fields: vec!["connect_timeout: 1s", "request_timeout: 1s"],
        ..Default::default()
    }
    .render(&Ports {
        listen: 16379,
        admin: 19901,
    });
    std::fs::write(&config, yaml).unwrap();
    let log = std::fs::File::create(dir.path().join("gateway.log")).unwrap();
    let mut gw = hole
        .command(env!("CARGO_BIN_EXE_switchyard"))
        .arg("run")
        .arg("-c")
        .arg(&config)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let cli = |args: &[&str]| {
        let out = hole
            .command("redis-cli")
            .args(["-h", "127.0.0.1", "-p", "16379"])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    wait_for("the gateway in the namespace to listen", WAIT, || {
        cli(&["QUIT"]).contains("OK").then_some(())
    });
    // Both commands of a pipeline fail with the connect error, not a hang.
    let got = {
        let mut child = hole
            .command("redis-cli")
            .args(["-h", "127.0.0.1", "-p", "16379"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"GET a\nGET b\n")
            .unwrap();
        let out = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let _ = gw.kill();
    let _ = gw.wait();
    let log = std::fs::read_to_string(dir.path().join("gateway.log")).unwrap_or_default();
    assert_eq!(
        got.matches("upstream connect error").count(),
        2,
        "redis-cli got {got:?}\n---- gateway log ----\n{log}"
    );
}

// ---------------------------------------------------------------------------
// Multiplexed (Dubbo, with the first call of a captured sofa-rpc-node session)

use switchyard_codecs::{Decoder, dubbo};

fn dubbo_gateway(host: SocketAddr) -> Gateway {
    Gateway::start(&format!(
        "admin:\n  address: 127.0.0.1:{admin}\nlisteners:\n  - name: mesh\n    address: 127.0.0.1:{listen}\n    protocols: [dubbo, bolt]\n    route_table: rpc\nroute_tables:\n  - name: rpc\n    virtual_hosts:\n      - name: any\n        domains: [\"*\"]\n        routes:\n          - {{match: {{protocol: dubbo}}, cluster: up}}\nclusters:\n  - {{name: up, hosts: [\"{host}\"], connect_timeout: 1s, request_timeout: 1s}}\n",
        admin = free_port(),
        listen = free_port(),
    ))
}

/// The first call of a captured session, and its request id.
fn dubbo_call() -> (Vec<u8>, u64) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/vectors");
    let all = std::fs::read(dir.join("dubbo/node-client-pipelined.c2s.bin")).unwrap();
    let mut buf = bytes::BytesMut::from(&all[..]);
    let frame = dubbo::Decoder::new(dubbo::Limits::default())
        .decode(&mut buf)
        .unwrap()
        .unwrap();
    (all[..all.len() - buf.len()].to_vec(), frame.request_id())
}

/// Send the call and read the gateway's response frame.
fn dubbo_answer(gw: &Gateway) -> dubbo::Frame {
    let (call, id) = dubbo_call();
    let mut s = std::net::TcpStream::connect(gw.addr()).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(&call).unwrap();
    let mut buf = bytes::BytesMut::new();
    let mut decoder = dubbo::Decoder::new(dubbo::Limits::default());
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(f) = decoder.decode(&mut buf).unwrap() {
            assert_eq!(f.request_id(), id);
            return f;
        }
        let n = s.read(&mut chunk).expect("an answer, not a hang");
        assert!(n > 0, "closed without an answer");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[test]
fn dubbo_upstream_that_never_answers_gets_server_timeout() {
    let server = BadServer::start(None);
    let gw = dubbo_gateway(server.addr);
    let before = open_fds(gw.pid());
    let f = dubbo_answer(&gw);
    assert_eq!(f.status(), Some(dubbo::status::SERVER_TIMEOUT));
    // The client's socket is closed; the host's shared upstream connections
    // (two per host, shared by every client) stay.
    assert_no_fd_leak(&gw, before + 2);
}

#[test]
fn dubbo_upstream_that_answers_garbage_fails_the_call_at_once() {
    let server = BadServer::start(Some(b"\xda\xbbgarbage that is no dubbo header at all"));
    let gw = dubbo_gateway(server.addr);
    let before = open_fds(gw.pid());
    let f = dubbo_answer(&gw);
    assert_eq!(f.status(), Some(dubbo::status::SERVER_ERROR));
    // The client's socket is closed; the host may keep a shared upstream
    // connection that carried no call (two per host, shared by every client).
    assert_no_fd_leak(&gw, before + 2);
}

#[test]
fn a_black_holed_mqtt_broker_gets_the_client_refused_not_hung() {
    let hole = BlackHole::create()
        .expect("`ip netns add` and veth pairs must work here (root, iproute2): the black-hole test needs them");
    let gw = hole.gateway(&format!(
        "admin:\n  address: 127.0.0.1:19901\nlisteners:\n  - name: mq\n    address: 127.0.0.1:11883\n    protocols: [mqtt]\n    route_table: main\nroute_tables:\n  - name: main\n    virtual_hosts:\n      - name: any\n        domains: [\"*\"]\n        routes:\n          - {{match: {{protocol: mqtt}}, cluster: brokers}}\nclusters:\n  - {{name: brokers, hosts: [\"{}\"], connect_timeout: 1s}}\n",
        BLACK_HOLE.replace("6379", "1883")
    ));
    // mosquitto_pub, bounded by `timeout` so that a hang fails the test.
    let out = hole
        .command("timeout")
        .args(["30", &require("mosquitto_pub").display().to_string()])
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            "11883",
            "-t",
            "t",
            "-m",
            "x",
            "-q",
            "1",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(
        out.status.code(),
        Some(124),
        "mosquitto_pub hung\n{}",
        gw.log()
    );
    assert!(
        err.contains("unavailable"),
        "mosquitto_pub: {err}\n{}",
        gw.log()
    );
}

#[test]
fn a_black_holed_dubbo_upstream_fails_the_call_not_hangs() {
    let hole = BlackHole::create()
        .expect("`ip netns add` and veth pairs must work here (root, iproute2): the black-hole test needs them");
    let gw = hole.gateway(&format!(
        "admin:\n  address: 127.0.0.1:19901\nlisteners:\n  - name: mesh\n    address: 127.0.0.1:12200\n    protocols: [dubbo, bolt]\n    route_table: rpc\nroute_tables:\n  - name: rpc\n    virtual_hosts:\n      - name: any\n        domains: [\"*\"]\n        routes:\n          - {{match: {{protocol: dubbo}}, cluster: up}}\nclusters:\n  - {{name: up, hosts: [\"{}\"], connect_timeout: 1s, request_timeout: 1s}}\n",
        BLACK_HOLE.replace("6379", "20880")
    ));
    let dir = tempfile::tempdir().unwrap();
    let call = dir.path().join("call.bin");
    std::fs::write(&call, dubbo_call().0).unwrap();
    // The captured call sent raw from inside the namespace; the answer's
    // 16-byte header read back (status is its 4th byte).
    let script = "import socket,sys\ns=socket.create_connection(('127.0.0.1',12200))\ns.settimeout(20)\ns.sendall(open(sys.argv[1],'rb').read())\nh=b''\nwhile len(h)<16:\n  d=s.recv(16-len(h))\n  if not d: break\n  h+=d\nprint(h[3] if len(h)==16 else 'closed')\n";
    let out = hole
        .command("python3")
        .args(["-c", script])
        .arg(&call)
        .output()
        .unwrap();
    let got = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        got.trim(),
        dubbo::status::SERVER_ERROR.to_string(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        gw.log()
    );
}
