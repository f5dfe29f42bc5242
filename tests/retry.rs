//! Route retry policies through the gateway binary, against real peers: a
//! private nginx that answers 503 to everything (logging each request it
//! sees) beside the Python HTTP upstream, and a host address nobody listens
//! on. Clients write raw HTTP/1.1; the counts come from nginx's access log,
//! the answers and the gateway's `/metrics`. Nothing is timed.

mod common;

use std::net::SocketAddr;

use common::*;

/// A gateway with one HTTP/1 listener. Routes: requests with an `x-idem`
/// header (the same policy with `idempotent: true`), then everything else, to cluster `up` (`hosts`
/// in order, round robin, plus `cluster_extra`), each with `retry: {retry}`.
fn gateway(hosts: &[SocketAddr], retry: &str, cluster_extra: &str) -> Gateway {
    let ports = Ports::new();
    let hosts: Vec<String> = hosts.iter().map(|a| format!("\"{a}\"")).collect();
    Gateway::start(&format!(
        "admin:\n  address: 127.0.0.1:{admin}\n\
         listeners:\n  - name: front\n    address: 127.0.0.1:{listen}\n    protocols: [http1]\n    route_table: all\n\
         route_tables:\n  - name: all\n    virtual_hosts:\n      - name: any\n        domains: [\"*\"]\n        routes:\n\
         \x20         - {{match: {{headers: [{{name: x-idem, present: true}}]}}, cluster: up, retry: {{{retry}, idempotent: true}}}}\n\
         \x20         - {{cluster: up, retry: {{{retry}}}}}\n\
         clusters:\n  - {{name: up, failover: false, hosts: [{hosts}]{cluster_extra}}}\n",
        admin = ports.admin,
        listen = ports.listen,
        hosts = hosts.join(", "),
    ))
}

/// One request on a fresh connection: (status, body).
fn request(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    request_with(addr, method, path, "", body)
}

/// As [`request`], with `extra` header lines (each ending in CRLF).
fn request_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    extra: &str,
    body: &str,
) -> (u16, String) {
    let mut c = RawConn::connect(addr);
    c.send(
        format!(
            "{method} {path} HTTP/1.1\r\nHost: test\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    let r = c.response();
    (r.status, r.text())
}

fn retries(gw: &Gateway, reason: &str) -> f64 {
    gw.metric(
        "switchyard_upstream_retries_total",
        &[("cluster", "up"), ("reason", reason)],
    )
}

#[test]
fn http1_retries_a_retriable_status_on_the_other_host_for_gets_only() {
    let bad = Nginx::start_answering_logged(503);
    let good = HttpUpstream::start();
    let gw = gateway(
        &[bad.addr(), good.addr()],
        "retry_on: [retriable_status], retriable_statuses: [503], backoff: {base: 1ms}",
        "",
    );
    // Round robin: half the first tries go to the 503 host; each is retried
    // on the other one.
    for i in 0..10 {
        let (status, body) = request(gw.addr(), "GET", "/hello", "");
        assert_eq!(status, 200, "GET {i}: {body}");
    }
    let seen = bad.requests();
    assert_eq!(
        seen, 5,
        "the 503 host saw every other first try, never a retry"
    );
    assert_eq!(retries(&gw, "status"), 5.0);

    // A POST may have had effects: its 503 goes to the client.
    let statuses: Vec<u16> = (0..4)
        .map(|i| request(gw.addr(), "POST", "/echo", &format!("post {i}")).0)
        .collect();
    let failed = statuses.iter().filter(|s| **s == 503).count();
    assert_eq!(failed, 2, "{statuses:?}");
    assert_eq!(bad.requests(), seen + 2, "a POST is sent once");
    assert_eq!(retries(&gw, "status"), 5.0, "no POST was retried");

    // Unless the route says its requests are idempotent: the kept body is
    // sent again, whole.
    for i in 0..4 {
        let payload = format!("payload {i} {}", "x".repeat(1000 * i));
        let (status, body) = request_with(gw.addr(), "POST", "/echo", "X-Idem: 1\r\n", &payload);
        assert_eq!(status, 200, "POST {i}: {body}");
        assert_eq!(body, payload);
    }
    assert_eq!(bad.requests(), seen + 4);
    assert_eq!(retries(&gw, "status"), 7.0);
}

#[test]
fn connect_failure_is_retried_on_the_other_host_even_for_posts() {
    let good = HttpUpstream::start();
    let closed = local(free_port());
    let gw = gateway(
        &[closed, good.addr()],
        "retry_on: [connect_failure], backoff: {base: 1ms}",
        "",
    );
    for i in 0..6 {
        let payload = format!("body {i}");
        let (status, body) = request(gw.addr(), "POST", "/echo", &payload);
        assert_eq!(status, 200, "POST {i}: {body}");
        assert_eq!(body, payload);
    }
    // Without failover, every other request picked the closed port first.
    assert_eq!(retries(&gw, "connect_failure"), 3.0);
}

#[test]
fn resets_and_per_try_timeouts_are_retried_on_the_other_host() {
    let good = HttpUpstream::start();
    // A host that accepts and closes at once (a reset before any answer)...
    let closing = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closing_addr = closing.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in closing.incoming() {
            drop(s);
        }
    });
    // ...and one whose kernel completes connects that nobody ever answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gw = gateway(
        &[closing_addr, good.addr()],
        "retry_on: [reset], backoff: {base: 1ms}",
        "",
    );
    for i in 0..4 {
        let (status, body) = request(gw.addr(), "GET", "/hello", "");
        assert_eq!(status, 200, "GET {i}: {body}");
    }
    assert_eq!(retries(&gw, "reset"), 2.0);
    drop(gw);

    let gw = gateway(
        &[silent.local_addr().unwrap(), good.addr()],
        "retry_on: [timeout], per_try_timeout: 300ms, backoff: {base: 1ms}",
        "",
    );
    for i in 0..4 {
        let (status, body) = request(gw.addr(), "GET", "/hello", "");
        assert_eq!(status, 200, "GET {i}: {body}");
    }
    assert_eq!(retries(&gw, "timeout"), 2.0);
    // A POST is not re-sent after its try timed out: the client gets 504.
    let statuses: Vec<u16> = (0..2)
        .map(|i| request(gw.addr(), "POST", "/echo", &format!("p{i}")).0)
        .collect();
    assert!(statuses.contains(&504), "{statuses:?}");
    assert_eq!(retries(&gw, "timeout"), 2.0);
}

#[test]
fn max_retries_breaker_lets_the_failed_answer_through_and_counts_it() {
    let bad = Nginx::start_answering_logged(503);
    let good = HttpUpstream::start();
    let gw = gateway(
        &[bad.addr(), good.addr()],
        "retry_on: [gateway_error], backoff: {base: 1ms}",
        ", circuit_breakers: {max_retries: 0}",
    );
    let statuses: Vec<u16> = (0..8)
        .map(|_| request(gw.addr(), "GET", "/hello", "").0)
        .collect();
    let failed = statuses.iter().filter(|s| **s == 503).count();
    assert_eq!(failed, 4, "{statuses:?}");
    assert_eq!(bad.requests(), 4);
    assert_eq!(retries(&gw, "status"), 0.0);
    assert_eq!(
        gw.metric(
            "switchyard_upstream_overflow_total",
            &[("cluster", "up"), ("breaker", "max_retries")]
        ),
        4.0
    );
    let (status, body) = http_get(gw.admin, "/clusters").expect("admin /clusters");
    assert_eq!(status, 200, "{body}");
    let all: serde_json::Value = serde_json::from_str(&body).expect("/clusters is JSON");
    let up = &all["clusters"][0];
    assert_eq!(up["max_retries"], 0, "{body}");
    assert_eq!(up["retries_in_flight"], 0, "{body}");
}

// ---------------------------------------------------------------------------
// gRPC (HTTP/2): grpcio servers and the grpcio client (tests/peers/grpc_peer.py)

fn grpc_python() -> std::path::PathBuf {
    let python = require("python3");
    let ok = std::process::Command::new(&python)
        .args(["-c", "import grpc"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "the Python grpcio package is missing: `python3 -m pip install grpcio` (.ci/run does)"
    );
    python
}

fn grpc_script() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/grpc_peer.py")
}

/// A grpcio server (`mode` "" or "unavailable"), killed on drop.
struct GrpcServer {
    child: std::process::Child,
    port: u16,
}

impl GrpcServer {
    fn start(mode: &str) -> Self {
        let port = free_port();
        let mut child = std::process::Command::new(grpc_python())
            .arg(grpc_script())
            .args(["server", &port.to_string(), mode])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("spawn grpc_peer.py server");
        wait_for(
            "the grpcio server",
            std::time::Duration::from_secs(30),
            || {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("grpc_peer.py server exited with {status}");
                }
                std::net::TcpStream::connect(local(port)).ok()
            },
        );
        GrpcServer { child, port }
    }

    fn addr(&self) -> SocketAddr {
        local(self.port)
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One grpcio unary call of `method`: the JSON line `grpc_peer.py call` prints.
fn grpc_call(target: SocketAddr, method: &str, arg: &str) -> String {
    let out = run_ok(
        std::process::Command::new(grpc_python())
            .arg(grpc_script())
            .args(["call", &target.to_string(), method, arg, "20"]),
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The JSON string value right after `key` (which ends with its opening quote).
fn json_str<'a>(out: &'a str, key: &str) -> &'a str {
    let rest = out.split_once(key).map_or("", |(_, r)| r);
    rest.split('"').next().unwrap_or("")
}

/// A gateway taking h2c on one listener, to an HTTP/2 cluster of `hosts`
/// (round robin, no failover) with `retry: {retry}` on every route.
fn h2_gateway(hosts: &[SocketAddr], retry: &str) -> Gateway {
    let ports = Ports::new();
    let hosts: Vec<String> = hosts.iter().map(|a| format!("\"{a}\"")).collect();
    Gateway::start(&format!(
        "admin:\n  address: 127.0.0.1:{admin}\n\
         listeners:\n  - name: front\n    address: 127.0.0.1:{listen}\n    protocols: [http2]\n    route_table: all\n\
         route_tables:\n  - name: all\n    virtual_hosts:\n      - name: any\n        domains: [\"*\"]\n        routes:\n\
         \x20         - {{cluster: up, retry: {{{retry}}}}}\n\
         clusters:\n  - {{name: up, protocol: http2, failover: false, hosts: [{hosts}]}}\n",
        admin = ports.admin,
        listen = ports.listen,
        hosts = hosts.join(", "),
    ))
}

#[test]
fn grpc_unavailable_is_retried_on_the_other_host_only_when_idempotent() {
    let bad = GrpcServer::start("unavailable");
    let good = GrpcServer::start("");
    let seen = || -> usize {
        let out = grpc_call(bad.addr(), "Count", "");
        json_str(&out, "\"responses\": [\"")
            .parse()
            .unwrap_or_else(|_| panic!("{out}"))
    };
    let policy = "retry_on: [unavailable], backoff: {base: 1ms}";

    // Not idempotent: a gRPC call is never re-sent, the client sees UNAVAILABLE.
    let gw = h2_gateway(&[bad.addr(), good.addr()], policy);
    let codes: Vec<String> = (0..4)
        .map(|i| {
            let out = grpc_call(gw.addr(), "Unary", &format!("x{i}"));
            json_str(&out, "\"code\": \"").to_owned()
        })
        .collect();
    assert_eq!(
        codes.iter().filter(|c| *c == "UNAVAILABLE").count(),
        2,
        "{codes:?}"
    );
    assert_eq!(seen(), 2);
    assert_eq!(retries(&gw, "grpc_status"), 0.0);
    drop(gw);

    // idempotent: true: retried on the other host, every call is OK.
    let gw = h2_gateway(
        &[bad.addr(), good.addr()],
        &format!("{policy}, idempotent: true"),
    );
    for i in 0..4 {
        let out = grpc_call(gw.addr(), "Unary", &format!("y{i}"));
        assert!(
            out.starts_with(&format!(
                "{{\"code\": \"OK\", \"details\": null, \"responses\": [\"echo:y{i}\"]"
            )),
            "{out}"
        );
    }
    assert_eq!(seen(), 4, "the failing host saw each retried call once");
    assert_eq!(retries(&gw, "grpc_status"), 2.0);
}

// ---------------------------------------------------------------------------
// Bolt: Node sofa-rpc-node servers and client (tests/peers/rpc/peer.js)

/// A gateway taking Bolt, to cluster `up` of `hosts` (round robin, no
/// failover) with `retry: {retry}`.
fn bolt_gateway(hosts: &[SocketAddr], retry: &str) -> Gateway {
    let ports = Ports::new();
    let hosts: Vec<String> = hosts.iter().map(|a| format!("\"{a}\"")).collect();
    Gateway::start(&format!(
        "admin:\n  address: 127.0.0.1:{admin}\n\
         listeners:\n  - name: front\n    address: 127.0.0.1:{listen}\n    protocols: [bolt]\n    route_table: all\n\
         route_tables:\n  - name: all\n    virtual_hosts:\n      - name: any\n        domains: [\"*\"]\n        routes:\n\
         \x20         - {{cluster: up, retry: {{{retry}}}}}\n\
         clusters:\n  - {{name: up, failover: false, hosts: [{hosts}]}}\n",
        admin = ports.admin,
        listen = ports.listen,
        hosts = hosts.join(", "),
    ))
}

#[test]
fn bolt_server_exception_is_retried_on_the_other_host_only_when_idempotent() {
    let bad = RpcServer::start_failing(RpcKind::Bolt);
    let good = RpcServer::start(RpcKind::Bolt);
    let policy = "retry_on: [server_error], backoff: {base: 1ms}";
    // One call after the other: round robin alternates the first tries.
    let mut args = vec!["1", "com.example.Other.whoami"];
    for _ in 1..6 {
        args.extend(["--then", "1", "com.example.Other.whoami"]);
    }
    let timeout = std::time::Duration::from_secs(20);

    let gw = bolt_gateway(&[bad.addr(), good.addr()], policy);
    let run = rpc_client(gw.addr(), RpcKind::Bolt, timeout, &args);
    let errors: usize = run.steps.iter().map(|s| s.errors).sum();
    assert_eq!(
        errors, 3,
        "not idempotent: the server's exception reaches the client"
    );
    assert_eq!(retries(&gw, "server_error"), 0.0);
    drop(gw);

    let gw = bolt_gateway(
        &[bad.addr(), good.addr()],
        &format!("{policy}, idempotent: true"),
    );
    let run = rpc_client(gw.addr(), RpcKind::Bolt, timeout, &args);
    let good_port = good.port.to_string();
    for (i, s) in run.steps.iter().enumerate() {
        assert_eq!(s.errors, 0, "call {i}: {:?}", s.messages);
        assert_eq!(s.values, [Some(good_port.clone())], "call {i}");
    }
    assert_eq!(retries(&gw, "server_error"), 3.0);
}

#[test]
fn max_retries_bounds_the_retries_in_flight_across_requests() {
    let bad = Nginx::start_answering_logged(503);
    let good = HttpUpstream::start();
    let gw = gateway(
        &[bad.addr(), good.addr()],
        "retry_on: [retriable_status], retriable_statuses: [503], backoff: {base: 1ms}",
        ", circuit_breakers: {max_retries: 1}",
    );
    // Four requests at once: two first tries get the 503 host. The first
    // retry holds the one place while the good host sleeps on it for
    // seconds, so the other finds the breaker full and its 503 goes out.
    let addr = gw.addr();
    let threads: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(move || request(addr, "GET", "/slow/4000", "").0))
        .collect();
    let mut statuses: Vec<u16> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 200, 503]);
    assert_eq!(bad.requests(), 2);
    assert_eq!(retries(&gw, "status"), 1.0);
    assert_eq!(
        gw.metric(
            "switchyard_upstream_overflow_total",
            &[("cluster", "up"), ("breaker", "max_retries")]
        ),
        1.0
    );
}
