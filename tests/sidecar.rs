//! Sidecar interception (issue #16): real clients connect to real servers'
//! own addresses; iptables (set up by `labs/sidecar/intercept.sh`) redirects
//! those connections to a `transparent: redirect` listener, which reads each
//! one's original destination, sniffs its protocol, routes it (routes may
//! match `destination_ports`) and forwards it to that destination through a
//! `type: original_dst` cluster whose connections carry the `SO_MARK` the
//! rules let pass.
//!
//! Each test moves its own thread into a fresh network namespace
//! (`unshare(CLONE_NEWNET)`): every server, client and gateway it starts
//! from then on lives there, so the iptables rules touch nothing else, the
//! usual helpers (`RedisServer`, `Nginx`, `Mosquitto`, `Gateway`) work
//! unchanged, and the namespace is gone when its last process exits, even
//! after a panic.

mod common;

use std::io::Read;
use std::net::SocketAddr;
use std::process::{Command, Output};

use common::*;

/// The mark the gateway's upstream sockets carry and the rules let pass.
const MARK: &str = "1337";

/// Move the calling thread, and every thread and process it starts from
/// now on, into a network namespace of its own with loopback up.
fn own_network_namespace() {
    // SAFETY: unshare(2) reads no memory of ours; CLONE_NEWNET moves only
    // the calling thread to a new network namespace.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "unshare(CLONE_NEWNET) failed (the sidecar tests run as root): {}",
        std::io::Error::last_os_error()
    );
    run_ok(Command::new(require("ip")).args(["link", "set", "lo", "up"]));
}

/// Run `labs/sidecar/intercept.sh` with `args`.
fn intercept(args: &[&str]) -> Output {
    require("iptables");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/labs/sidecar/intercept.sh");
    run_ok(Command::new("bash").arg(script).args(args))
}

/// The nat table's rules, as `iptables -S` lists them.
fn nat_rules() -> String {
    let out = run_ok(Command::new(require("iptables")).args(["-w", "-t", "nat", "-S"]));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The gateway's outbound sidecar listener on `port` (127.0.0.1), with an
/// access log in `log`; a route denying connections to `denied_port`.
fn sidecar_config(port: u16, admin: u16, log: &std::path::Path, denied_port: u16) -> String {
    format!(
        r#"admin: {{address: "127.0.0.1:{admin}"}}
listeners:
  - name: outbound
    address: "127.0.0.1:{port}"
    transparent: redirect
    protocols: [http1, redis, mqtt]
    route_table: outbound
    detect: {{timeout: 500ms, fallback: {{tcp_proxy: passthrough}}}}
    access_log: {{path: "{log}", format: json}}
route_tables:
  - name: outbound
    virtual_hosts:
      - name: any
        domains: ["*"]
        routes:
          - name: no-second-redis
            match: {{destination_ports: [{denied_port}]}}
            filters: [{{ip_access: {{deny: ["0.0.0.0/0"]}}}}]
            cluster: original
          - {{name: out, cluster: original}}
clusters:
  - {{name: original, type: original_dst, mark: {MARK}, original_dst_header: x-envoy-original-dst-host}}
  - {{name: passthrough, type: original_dst, mark: {MARK}}}
"#,
        log = log.display()
    )
}

#[test]
fn intercepted_clients_reach_their_own_servers_through_the_gateway() {
    own_network_namespace();
    let page = b"served by the nginx the client asked for\n";
    let nginx = Nginx::start(&[("hello.txt", page)]);
    let other_page = b"served by the nginx the header named\n";
    let other_nginx = Nginx::start(&[("hello.txt", other_page)]);
    let redis = RedisServer::start();
    let denied = RedisServer::start();
    let broker = Mosquitto::start();
    let echo = EchoServer::start();
    let dir = tempfile::tempdir().unwrap();
    let access_log = dir.path().join("access.log");
    let ports = Ports::new();
    let gw = Gateway::start(&sidecar_config(
        ports.listen,
        ports.admin,
        &access_log,
        denied.port,
    ));
    let server_ports = [nginx.port, redis.port, denied.port, broker.port, echo.port]
        .map(|p| p.to_string())
        .join(",");
    let gateway_port = ports.listen.to_string();
    let up = [
        "up",
        "--ports",
        &server_ports,
        "--gateway-port",
        &gateway_port,
        "--mark",
        MARK,
    ];
    intercept(&up);
    intercept(&up);
    let rules = nat_rules();
    assert_eq!(
        rules.matches("-j SWITCHYARD_OUTPUT").count(),
        1,
        "`up` twice leaves one jump:\n{rules}"
    );
    assert_eq!(
        rules.matches("REDIRECT").count(),
        1,
        "and one REDIRECT:\n{rules}"
    );

    // HTTP: curl to nginx's own address gets nginx's page.
    let out = run_ok(curl().arg(format!("http://{}/hello.txt", nginx.addr())));
    assert_eq!(out.stdout, page);
    // With `original_dst_header`, a request may name its destination.
    let out = run_ok(
        curl()
            .arg("-H")
            .arg(format!("x-envoy-original-dst-host: {}", other_nginx.addr()))
            .arg(format!("http://{}/hello.txt", nginx.addr())),
    );
    assert_eq!(out.stdout, other_page);

    // Redis: the server that answers is the one the client addressed.
    let out = redis_cli(redis.addr(), &["CONFIG", "GET", "port"]);
    assert_eq!(text(&out), format!("port\n{}", redis.port));
    let out = redis_cli(redis.addr(), &["SET", "sidecar", "seen"]);
    assert_eq!(text(&out), "OK");
    let out = redis_cli(redis.addr(), &["GET", "sidecar"]);
    assert_eq!(text(&out), "seen");

    // The route on the second server's port refuses in Redis's words.
    let out = redis_cli(denied.addr(), &["PING"]);
    let said = text(&out);
    assert!(
        said.starts_with("ERR") || said.starts_with("(error) ERR"),
        "a denied destination is refused with -ERR, got {said:?}"
    );
    assert!(!said.contains("PONG"), "{said}");

    // MQTT: a retained message published and read back through the broker.
    run_ok(
        Command::new(require("mosquitto_pub"))
            .args(["-h", "127.0.0.1", "-p", &broker.port.to_string()])
            .args(["-i", "sidecar-pub", "-t", "sidecar/t", "-m", "via-sidecar"])
            .args(["-r", "-q", "1"]),
    );
    let out = run_ok(
        Command::new(require("mosquitto_sub"))
            .args(["-h", "127.0.0.1", "-p", &broker.port.to_string()])
            .args([
                "-i",
                "sidecar-sub",
                "-t",
                "sidecar/t",
                "-C",
                "1",
                "-W",
                "10",
            ]),
    );
    assert_eq!(text(&out), "via-sidecar");

    // Bytes no codec knows pass through as TCP to their destination.
    let unknown = b"\x00\x01 not a protocol the gateway knows\n";
    let mut raw = RawConn::connect(echo.addr());
    raw.send(unknown);
    let mut echoed = vec![0u8; unknown.len()];
    raw.stream()
        .try_clone()
        .unwrap()
        .read_exact(&mut echoed)
        .expect("the echo server's answer");
    assert_eq!(echoed, unknown);
    drop(raw);

    // Every connection went through the gateway, once: curl 2, redis-cli 4,
    // MQTT 2, raw 1. A loop (the gateway's own connections redirected back
    // to it) would show more.
    let conns = |protocol: &str| {
        gw.metric(
            "switchyard_downstream_connections_total",
            &[("listener", "outbound"), ("protocol", protocol)],
        )
    };
    wait_for("the passthrough connection to be counted", WAIT, || {
        (conns("tcp") == 1.0).then_some(())
    });
    assert_eq!(conns("http1"), 2.0);
    assert_eq!(conns("redis"), 4.0);
    assert_eq!(conns("mqtt"), 2.0);
    let upstream = gw.metric(
        "switchyard_upstream_connections_total",
        &[("cluster", "original")],
    );
    assert!(
        (4.0..=8.0).contains(&upstream),
        "the gateway connected out once per session at most (not to itself): {upstream}"
    );

    // The access log names each request's original destination.
    let log = wait_for("the access log lines", WAIT, || {
        let log = std::fs::read_to_string(&access_log).ok()?;
        (log.lines().count() >= 7).then_some(log)
    });
    for (protocol, port) in [
        ("http1", nginx.port),
        ("redis", redis.port),
        ("mqtt", broker.port),
    ] {
        let want = format!("\"destination\":\"127.0.0.1:{port}\"");
        assert!(
            log.lines()
                .any(|l| l.contains(&format!("\"protocol\":\"{protocol}\"")) && l.contains(&want)),
            "no {protocol} line with {want} in:\n{log}"
        );
    }
    let refused = format!("\"destination\":\"127.0.0.1:{}\"", denied.port);
    assert!(
        log.lines()
            .any(|l| l.contains(&refused) && l.contains("\"result\":\"refused\"")),
        "the denied request is logged refused:\n{log}"
    );

    // `down` removes the rules: clients reach the servers directly again.
    intercept(&["down"]);
    let rules = nat_rules();
    assert!(!rules.contains("SWITCHYARD"), "left behind:\n{rules}");
    let out = redis_cli(denied.addr(), &["PING"]);
    assert_eq!(text(&out), "PONG");
    assert_eq!(conns("redis"), 4.0, "not through the gateway any more");
}

#[test]
fn a_connection_addressed_to_the_gateway_itself_is_not_looped_back() {
    own_network_namespace();
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::new();
    let gw = Gateway::start(&sidecar_config(
        ports.listen,
        ports.admin,
        &dir.path().join("access.log"),
        1,
    ));
    let redis_port = redis.port.to_string();
    let gateway_port = ports.listen.to_string();
    intercept(&[
        "up",
        "--ports",
        &redis_port,
        "--gateway-port",
        &gateway_port,
        "--mark",
        MARK,
    ]);
    // Straight to the listener: no original destination, so nowhere to go.
    let gateway: SocketAddr = format!("127.0.0.1:{}", ports.listen).parse().unwrap();
    let out = redis_cli(gateway, &["PING"]);
    let said = text(&out);
    assert!(said.contains("ERR"), "answered with an error, got {said:?}");
    assert_eq!(
        gw.metric(
            "switchyard_upstream_connections_total",
            &[("cluster", "original")]
        ),
        0.0,
        "the gateway did not connect anywhere (least of all to itself)"
    );
    // An intercepted one still goes through.
    let out = redis_cli(redis.addr(), &["PING"]);
    assert_eq!(text(&out), "PONG");
}

#[test]
fn rpc_calls_reach_the_server_they_were_addressed_to() {
    own_network_namespace();
    // Two servers of each kind: each answers `whoami` with its own port, so
    // an answer from the wrong one (a shared connection of the other
    // destination) would show.
    let servers = [
        RpcServer::start(RpcKind::Bolt),
        RpcServer::start(RpcKind::Bolt),
        RpcServer::start(RpcKind::Dubbo),
        RpcServer::start(RpcKind::Dubbo),
    ];
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::new();
    let config = sidecar_config(ports.listen, ports.admin, &dir.path().join("access.log"), 1)
        .replace(
            "protocols: [http1, redis, mqtt]",
            "protocols: [dubbo, bolt]",
        );
    let gw = Gateway::start(&config);
    let server_ports = servers
        .iter()
        .map(|s| s.port.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let gateway_port = ports.listen.to_string();
    intercept(&[
        "up",
        "--ports",
        &server_ports,
        "--gateway-port",
        &gateway_port,
        "--mark",
        MARK,
    ]);
    for server in &servers {
        let kind = server.kind;
        let run = rpc_client(
            server.addr(),
            kind,
            std::time::Duration::from_secs(10),
            &[
                "2",
                "com.example.Other.whoami",
                "--then",
                "1",
                "plus",
                "20",
                "22",
            ],
        );
        let whoami: Vec<_> = run.steps[0].values.iter().flatten().cloned().collect();
        assert_eq!(
            whoami,
            [server.port.to_string(), server.port.to_string()],
            "{} on {}: {:?}",
            kind.name(),
            server.port,
            run.steps[0].error_text()
        );
        assert_eq!(run.steps[1].values, [Some("42".to_owned())]);
    }
    for (protocol, n) in [("bolt", 2.0), ("dubbo", 2.0)] {
        assert_eq!(
            gw.metric(
                "switchyard_downstream_connections_total",
                &[("listener", "outbound"), ("protocol", protocol)],
            ),
            n,
            "one client connection per run went through the gateway"
        );
    }
}

/// A named network namespace for a client "elsewhere", joined to the test's
/// own namespace by a veth pair: 10.88.0.1 on the test's side, 10.88.0.2 on
/// the client's. Deleted on drop (its veth end goes with it).
struct RemoteHost {
    name: String,
}

impl RemoteHost {
    fn create() -> Self {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("sy-sc-{}-{n}", std::process::id());
        let ip = require("ip");
        run_ok(Command::new(&ip).args(["netns", "add", &name]));
        let remote = RemoteHost { name };
        let n = remote.name.as_str();
        let steps: [&[&str]; 7] = [
            &[
                "link",
                "add",
                "sy-pod",
                "type",
                "veth",
                "peer",
                "name",
                "sy-remote",
                "netns",
                n,
            ],
            &["addr", "add", "10.88.0.1/24", "dev", "sy-pod"],
            &["link", "set", "sy-pod", "up"],
            &["-n", n, "link", "set", "lo", "up"],
            &["-n", n, "addr", "add", "10.88.0.2/24", "dev", "sy-remote"],
            &["-n", n, "link", "set", "sy-remote", "up"],
            &["-n", n, "route", "add", "default", "dev", "sy-remote"],
        ];
        for step in steps {
            run_ok(Command::new(&ip).args(step));
        }
        remote
    }

    /// `program` run inside the remote namespace.
    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(require("ip"));
        c.args(["netns", "exec", &self.name]).arg(require(program));
        c
    }
}

impl Drop for RemoteHost {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

#[test]
fn inbound_connections_reach_the_application_on_localhost_by_destination_port() {
    own_network_namespace();
    let remote = RemoteHost::create();
    // The application: two HTTP services on 127.0.0.1 only, out of the
    // remote client's reach but through the inbound listener.
    let app = Nginx::start(&[("hello.txt", b"the application\n")]);
    let admin_app = Nginx::start(&[("hello.txt", b"the admin service\n")]);
    let ports = Ports::new();
    let config = format!(
        r#"admin: {{address: "127.0.0.1:{admin}"}}
listeners:
  - name: inbound
    address: "0.0.0.0:{listen}"
    transparent: redirect
    protocols: [http1]
    route_table: inbound
route_tables:
  - name: inbound
    virtual_hosts:
      - name: app
        domains: ["*"]
        routes:
          - {{name: app, match: {{destination_ports: [{app}]}}, cluster: app}}
          - name: no-admin-from-outside
            match: {{destination_ports: [{admin_app}]}}
            filters: [{{ip_access: {{deny: ["10.88.0.0/24"]}}}}]
            cluster: admin-app
clusters:
  - {{name: app, hosts: ["127.0.0.1:{app}"], mark: {MARK}}}
  - {{name: admin-app, hosts: ["127.0.0.1:{admin_app}"], mark: {MARK}}}
"#,
        admin = ports.admin,
        listen = ports.listen,
        app = app.port,
        admin_app = admin_app.port,
    );
    let gw = Gateway::start(&config);
    let inbound_ports = format!("{},{}", app.port, admin_app.port);
    let gateway_port = ports.listen.to_string();
    intercept(&[
        "up",
        "--inbound-ports",
        &inbound_ports,
        "--inbound-port",
        &gateway_port,
        "--mark",
        MARK,
    ]);
    let rules = nat_rules();
    assert!(
        rules.contains("-A PREROUTING -p tcp -j SWITCHYARD_INBOUND")
            && !rules.contains("SWITCHYARD_OUTPUT"),
        "inbound only:\n{rules}"
    );
    let get = |port: u16| {
        remote
            .command("curl")
            .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"])
            .arg(format!("http://10.88.0.1:{port}/hello.txt"))
            .output()
            .expect("run curl in the remote namespace")
    };
    let out = get(app.port);
    assert_eq!(text(&out), "the application\n\n200", "{out:?}");
    let out = get(admin_app.port);
    assert!(text(&out).ends_with("403"), "refused by the route: {out:?}");
    assert_eq!(
        gw.metric(
            "switchyard_downstream_connections_total",
            &[("listener", "inbound"), ("protocol", "http1")],
        ),
        2.0
    );
    intercept(&["down"]);
    let out = get(app.port);
    assert!(
        !out.status.success(),
        "without the rule the application (on 127.0.0.1) is out of reach: {out:?}"
    );
}
