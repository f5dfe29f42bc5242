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
}
