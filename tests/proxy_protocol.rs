//! The PROXY protocol, with real peers on both sides.
//!
//! Downstream: HAProxy (`send-proxy`, `send-proxy-v2`) in front of the
//! gateway; the client connects to HAProxy from 127.0.0.2/127.0.0.3 (every
//! 127/8 address is local) while HAProxy reaches the gateway from
//! 127.0.0.1, so only the header can tell the gateway who the client is.
//! Raw-bytes clients send crafted headers (203.0.113.7) for HTTP/1 and Redis.
//! Upstream: the gateway sends v1/v2 to nginx `listen ... proxy_protocol`,
//! which answers with `$proxy_protocol_addr`.

mod common;

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};

use common::*;

/// A private HAProxy in TCP mode: one frontend per (port, server option)
/// pair, each sending to `gateway`; killed on drop.
struct Haproxy {
    child: Child,
    _dir: tempfile::TempDir,
    ports: Vec<u16>,
}

impl Haproxy {
    fn start(gateway: SocketAddr, server_options: &[&str]) -> Self {
        let bin = require("haproxy");
        let dir = tempfile::tempdir().unwrap();
        let mut conf = String::from(
            "global\n  maxconn 200\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n",
        );
        let mut ports = Vec::new();
        for (i, opt) in server_options.iter().enumerate() {
            let port = free_port();
            ports.push(port);
            conf += &format!(
                "frontend f{i}\n  bind 127.0.0.1:{port}\n  default_backend b{i}\nbackend b{i}\n  server gw {gateway} {opt}\n"
            );
        }
        let path = dir.path().join("haproxy.cfg");
        fs::write(&path, conf).unwrap();
        let log = fs::File::create(dir.path().join("haproxy.log")).unwrap();
        let child = Command::new(bin)
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn haproxy");
        let mut h = Haproxy {
            child,
            _dir: dir,
            ports,
        };
        for &port in &h.ports.clone() {
            wait_for(&format!("haproxy on {port}"), WAIT, || {
                if let Ok(Some(status)) = h.child.try_wait() {
                    panic!("haproxy exited: {status}");
                }
                TcpStream::connect(local(port)).ok().map(drop)
            });
        }
        h
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// nginx answering `pp=<$proxy_protocol_addr>:<port>` (and header `X-PP`)
/// on a `listen ... proxy_protocol` port.
fn nginx_expecting_proxy_protocol() -> Nginx {
    Nginx::start_with(
        &[],
        " proxy_protocol",
        "keepalive_requests 10000;",
        "default_type text/plain; add_header X-PP $proxy_protocol_addr always; \
         return 200 \"pp=$proxy_protocol_addr:$proxy_protocol_port\n\";",
    )
}

/// `curl -s` from source address `from` to `url`: (status, body).
fn curl_from(from: &str, url: &str) -> (u16, String) {
    let out = run_ok(curl().args([
        "-s",
        "--interface",
        from,
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
        url,
    ]));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap(), body.to_owned())
}

fn v1(source: &str, port: u16) -> Vec<u8> {
    format!("PROXY TCP4 {source} 127.0.0.1 {port} 80\r\n").into_bytes()
}

fn v2(source: [u8; 4], port: u16) -> Vec<u8> {
    let mut b = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    b.extend_from_slice(&[0x21, 0x11, 0, 12]);
    b.extend_from_slice(&source);
    b.extend_from_slice(&[127, 0, 0, 1]);
    b.extend_from_slice(&port.to_be_bytes());
    b.extend_from_slice(&80u16.to_be_bytes());
    b
}

fn pp_outcome(gw: &Gateway, outcome: &str) -> f64 {
    gw.metric(
        "switchyard_proxy_protocol_total",
        &[("listener", "edge"), ("outcome", outcome)],
    )
}

#[test]
fn behind_haproxy_the_header_source_is_the_client_for_filters_and_forwarded_for() {
    let echo = Nginx::start_echo("web", false);
    let ports = Ports::new();
    let t = Template {
        http: vec![echo.addr()],
        listener: vec![
            "proxy_protocol: {accept: required}",
            "filters: [{ip_access: {deny: [127.0.0.3]}}, {headers: {request: {forwarded_for: true}}}]",
        ],
        ..Default::default()
    };
    let gw = Gateway::start(&t.render(&ports));
    let haproxy = Haproxy::start(gw.addr(), &["send-proxy", "send-proxy-v2"]);
    for (i, &port) in haproxy.ports.iter().enumerate() {
        let url = format!("http://127.0.0.1:{port}/hello");
        // The socket peer is HAProxy (127.0.0.1); the header says 127.0.0.2.
        let (status, body) = curl_from("127.0.0.2", &url);
        assert_eq!(status, 200, "v{}: {body}", i + 1);
        assert!(
            body.contains("x-forwarded-for: 127.0.0.2\n"),
            "v{}: {body}",
            i + 1
        );
        // ip_access denies 127.0.0.3 by the header's address alone.
        let (status, body) = curl_from("127.0.0.3", &url);
        assert_eq!(status, 403, "v{}: {body}", i + 1);
    }
    assert!(pp_outcome(&gw, "accepted") >= 4.0);
    // A client straight to the gateway (no header) is closed on `required`.
    let mut c = RawConn::connect(gw.addr());
    c.send(&get_request("/hello"));
    let (got, _) = c.read_until_closed();
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    assert_eq!(pp_outcome(&gw, "missing"), 1.0);
}

#[test]
fn crafted_headers_decide_ip_access_for_http1_and_redis() {
    let redis = RedisServer::start();
    let echo = Nginx::start_echo("web", false);
    let t = Template {
        redis: vec![redis.addr()],
        http: vec![echo.addr()],
        listener: vec![
            "proxy_protocol: {accept: required, versions: [1, 2]}",
            "filters: [{ip_access: {deny: [203.0.113.0/24]}}, {headers: {request: {forwarded_for: true}}}]",
        ],
        ..Default::default()
    };
    let gw = t.start();
    let denied = [v1("203.0.113.7", 40000), v2([203, 0, 113, 7], 40000)];
    let allowed = [v1("198.51.100.9", 40001), v2([198, 51, 100, 9], 40001)];
    for (bad, good) in denied.iter().zip(&allowed) {
        // HTTP/1: the header and the request in one write.
        let mut c = RawConn::connect(gw.addr());
        c.send(&[bad.clone(), get_request("/x")].concat());
        assert_eq!(c.response().status, 403);
        let mut c = RawConn::connect(gw.addr());
        c.send(&[good.clone(), get_request("/x")].concat());
        let r = c.response();
        assert_eq!(r.status, 200);
        let body = String::from_utf8_lossy(&r.body).into_owned();
        assert!(body.contains("x-forwarded-for: 198.51.100.9\n"), "{body}");
        // Redis: the header in its own write, then commands.
        let mut c = RawConn::connect(gw.addr());
        c.send(bad);
        assert_eq!(c.command(&["PING"]), b"-ERR access denied\r\n");
        let mut c = RawConn::connect(gw.addr());
        c.send(good);
        assert_eq!(c.command(&["SET", "k", "v"]), b"+OK\r\n");
    }
    assert_eq!(pp_outcome(&gw, "accepted"), 8.0);
}

#[test]
fn missing_garbage_and_untrusted_headers_close_only_their_connection() {
    let t = Template {
        listener: vec!["proxy_protocol: {accept: required, versions: [1]}"],
        ..Default::default()
    };
    let gw = t.start();
    let mut held = RawConn::connect(gw.addr());
    held.send(&v1("198.51.100.9", 1));
    let bad: [&[u8]; 4] = [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"PROXY TCP9 1.2.3.4 1.2.3.4 1 2\r\nGET / HTTP/1.1\r\n\r\n",
        b"PROXY TCP4 1.2.3.4 1.2.3.4 99999 2\r\nGET / HTTP/1.1\r\n\r\n",
        // v2 on a listener that accepts v1 only.
        &[&v2([1, 2, 3, 4], 5)[..], b"GET / HTTP/1.1\r\n\r\n"].concat(),
    ];
    for b in bad {
        let mut c = RawConn::connect(gw.addr());
        c.send(b);
        let (got, _) = c.read_until_closed();
        assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    }
    assert_eq!(pp_outcome(&gw, "missing"), 1.0);
    assert_eq!(pp_outcome(&gw, "invalid"), 3.0);
    // The connection that sent a good header is untouched.
    held.send(&get_request("/"));
    let r = held.response();
    assert_eq!((r.status, &r.body[..]), (200, &b"gateway"[..]));

    // Only proxies in `trusted` may send a header.
    let t = Template {
        listener: vec!["proxy_protocol: {trusted: [10.0.0.0/8]}"],
        ..Default::default()
    };
    let gw = t.start();
    let mut c = RawConn::connect(gw.addr());
    c.send(&[v1("10.1.2.3", 1), get_request("/")].concat());
    let (got, _) = c.read_until_closed();
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    assert_eq!(pp_outcome(&gw, "untrusted"), 1.0);
}

#[test]
fn optional_uses_a_header_when_one_comes_first() {
    let t = Template {
        listener: vec![
            "proxy_protocol: {accept: optional}",
            "filters: [{ip_access: {deny: [203.0.113.7]}}]",
        ],
        ..Default::default()
    };
    let gw = t.start();
    // No header: served as the connection's own address.
    let (status, body) = curl_from("127.0.0.1", &gw.url("/"));
    assert_eq!((status, body.as_str()), (200, "gateway"));
    let mut c = RawConn::connect(gw.addr());
    c.send(&[v2([203, 0, 113, 7], 9), get_request("/")].concat());
    assert_eq!(c.response().status, 403);
    // A header in pieces (a prefix of the signature first) is waited for.
    let header = v2([203, 0, 113, 7], 9);
    let mut c = RawConn::connect(gw.addr());
    c.send(&header[..5]);
    std::thread::sleep(std::time::Duration::from_millis(50));
    c.send(&header[5..20]);
    std::thread::sleep(std::time::Duration::from_millis(50));
    c.send(&[&header[20..], &get_request("/")[..]].concat());
    assert_eq!(c.response().status, 403);
    // An optional listener still refuses a header from an untrusted peer.
    let t = Template {
        listener: vec!["proxy_protocol: {accept: optional, trusted: [10.0.0.0/8]}"],
        ..Default::default()
    };
    let gw = t.start();
    let (status, _) = curl_from("127.0.0.1", &gw.url("/"));
    assert_eq!(status, 200);
    let mut c = RawConn::connect(gw.addr());
    c.send(&[v1("10.1.2.3", 1), get_request("/")].concat());
    let (got, _) = c.read_until_closed();
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
}

#[test]
fn tcp_passthrough_sends_v1_and_v2_to_nginx_with_the_client_address() {
    let nginx = nginx_expecting_proxy_protocol();
    let (p1, p2, admin) = (free_port(), free_port(), free_port());
    // MQTT listeners whose non-MQTT bytes pass through to nginx; the second
    // accepts a PROXY header itself, and forwards its source.
    let yaml = format!(
        r#"admin: {{address: 127.0.0.1:{admin}}}
listeners:
  - name: edge
    address: 127.0.0.1:{p1}
    protocols: [mqtt]
    route_table: main
    detect: {{fallback: {{tcp_proxy: nginx_v1}}}}
  - name: behind
    address: 127.0.0.1:{p2}
    protocols: [mqtt]
    route_table: main
    detect: {{fallback: {{tcp_proxy: nginx_v2}}}}
    proxy_protocol: {{accept: required}}
route_tables:
  - name: main
    virtual_hosts:
      - {{name: any, domains: ["*"], routes: []}}
clusters:
  - {{name: nginx_v1, hosts: ["{n}"], proxy_protocol: v1}}
  - {{name: nginx_v2, hosts: ["{n}"], proxy_protocol: v2}}
"#,
        n = nginx.addr()
    );
    let gw = Gateway::start(&yaml);
    let (status, body) = curl_from("127.0.0.2", &format!("http://127.0.0.1:{p1}/"));
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("pp=127.0.0.2:"), "{body}");
    let mut c = RawConn::connect(gw.listener("behind"));
    c.send(&[v1("203.0.113.7", 40000), get_request("/")].concat());
    let r = c.response();
    assert_eq!(r.status, 200);
    assert_eq!(String::from_utf8_lossy(&r.body), "pp=203.0.113.7:40000\n");
    let mut c = RawConn::connect(gw.listener("behind"));
    c.send(&[v2([198, 51, 100, 9], 40001), get_request("/")].concat());
    let r = c.response();
    assert_eq!(String::from_utf8_lossy(&r.body), "pp=198.51.100.9:40001\n");
}

#[test]
fn config_check_refuses_proxy_protocol_on_pooled_clusters() {
    let yaml = |listener: &str, cluster: &str| {
        format!(
            r#"listeners:
  - {{name: edge, address: 127.0.0.1:1, protocols: [http1], route_table: main{listener}}}
route_tables:
  - name: main
    virtual_hosts:
      - {{name: any, domains: ["*"], routes: [{{cluster: web}}]}}
clusters:
  - {{name: web, hosts: ["127.0.0.1:2"]{cluster}}}
"#
        )
    };
    let err = switchyard::config::load_str(&yaml("", ", proxy_protocol: v2"), "t.yaml")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("clusters[web].proxy_protocol") && err.contains("pooled protocol"),
        "{err}"
    );
    for (listener, field) in [
        (
            ", proxy_protocol: {versions: [3]}",
            "proxy_protocol.versions",
        ),
        (", proxy_protocol: {trusted: []}", "proxy_protocol.trusted"),
        (
            ", proxy_protocol: {accept: sometimes}",
            "expected one of required, optional",
        ),
    ] {
        let err = switchyard::config::load_str(&yaml(listener, ""), "t.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.contains(field), "{listener}: {err}");
    }
    assert!(
        switchyard::config::load_str(&yaml(", proxy_protocol: {accept: optional}", ""), "t.yaml")
            .is_ok()
    );
}

#[test]
fn rate_limit_by_source_ip_counts_the_header_source() {
    let t = Template {
        listener: vec![
            "proxy_protocol: {accept: required}",
            "filters: [{rate_limit: {rate: 0.001, burst: 1, key: source_ip}}]",
        ],
        ..Default::default()
    };
    let gw = t.start();
    let status = |header: Vec<u8>| {
        let mut c = RawConn::connect(gw.addr());
        c.send(&[header, get_request("/")].concat());
        c.response().status
    };
    // One token per client address: the socket peer is 127.0.0.1 every time.
    assert_eq!(status(v1("203.0.113.7", 1)), 200);
    assert_eq!(status(v2([203, 0, 113, 7], 2)), 429);
    assert_eq!(status(v1("198.51.100.9", 3)), 200);
    assert_eq!(status(v2([198, 51, 100, 10], 4)), 200);
}

#[test]
fn local_unix_and_long_v2_headers_keep_the_real_address() {
    let t = Template {
        listener: vec![
            "proxy_protocol: {accept: required}",
            "filters: [{ip_access: {allow: [127.0.0.1]}}]",
        ],
        ..Default::default()
    };
    let gw = t.start();
    let sig = b"\r\n\r\n\0\r\nQUIT\n";
    // v2 UNIX (232 bytes, longer than a v1 line), v2 LOCAL with 300 bytes
    // of TLVs, v1 UNKNOWN: served as the socket's own client (127.0.0.1).
    let mut unix = sig.to_vec();
    unix.extend_from_slice(&[0x21, 0x31, 0, 216]);
    unix.extend_from_slice(&[b'/'; 216]);
    let mut local = sig.to_vec();
    local.extend_from_slice(&[0x20, 0x11, 0x01, 12 + 0x20]);
    local.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2, 0, 1, 0, 2]);
    local.extend_from_slice(&[0x04, 0x01, 0x1d]);
    local.extend_from_slice(&[0u8; 0x11d]);
    assert_eq!(local.len(), 16 + 300);
    for header in [unix, local, b"PROXY UNKNOWN\r\n".to_vec()] {
        let mut c = RawConn::connect(gw.addr());
        c.send(&[header, get_request("/")].concat());
        let r = c.response();
        assert_eq!((r.status, &r.body[..]), (200, &b"gateway"[..]));
    }
    // A PROXY header naming another address is denied by the same rule.
    let mut c = RawConn::connect(gw.addr());
    c.send(&[v1("10.9.9.9", 1), get_request("/")].concat());
    assert_eq!(c.response().status, 403);
    assert_eq!(pp_outcome(&gw, "accepted"), 4.0);
}
