//! The connection circuit breakers of a cluster (`circuit_breakers:
//! {max_connections, max_pending}`), through the gateway binary with real
//! peers: the Python HTTP/1.1 upstream and redis-server. Connections are
//! counted at the upstream's side (`ss`, `INFO clients`), not guessed.

mod common;

use std::net::SocketAddr;
use std::process::Command;

use common::*;

/// Established TCP connections whose destination is `addr` (the gateway's
/// side of its upstream connections; the tests' own probes are closed).
fn connections_to(addr: SocketAddr) -> usize {
    let out =
        run_ok(Command::new("ss").args(["-Htn", "state", "established", "dst", &addr.to_string()]));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count()
}

/// One HTTP/1 listener routing everything to cluster `web` at `hosts`, with
/// `cluster_extra` fields on the cluster.
fn http_config(hosts: &[SocketAddr], cluster_extra: &str) -> String {
    let ports = Ports::new();
    let hosts: Vec<String> = hosts.iter().map(|h| format!("\"{h}\"")).collect();
    format!(
        r#"admin: {{address: "127.0.0.1:{admin}"}}
listeners:
  - name: edge
    address: "127.0.0.1:{listen}"
    protocols: [http1]
    route_table: main
route_tables:
  - name: main
    virtual_hosts:
      - name: any
        domains: ["*"]
        routes:
          - {{cluster: web}}
clusters:
  - {{name: web, hosts: [{hosts}], {cluster_extra}}}
"#,
        admin = ports.admin,
        listen = ports.listen,
        hosts = hosts.join(", "),
    )
}

/// One `curl` of `url`: the status code.
fn status(url: &str) -> u16 {
    let out = run_ok(curl().args(["-s", "-o", "/dev/null", "-w", "%{http_code}", url]));
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a status code")
}

fn overflows(gw: &Gateway, cluster: &str, breaker: &str) -> f64 {
    gw.metric(
        "switchyard_upstream_overflow_total",
        &[("cluster", cluster), ("breaker", breaker)],
    )
}

/// The admin's `/clusters` entry of `name`.
fn cluster_report(gw: &Gateway, name: &str) -> serde_json::Value {
    let (status, body) = gw.admin_get("/clusters");
    assert_eq!(status, 200, "{body}");
    let all: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    all["clusters"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name).cloned())
        .unwrap_or_else(|| panic!("no cluster {name} in {body}"))
}

#[test]
fn http1_max_connections_queues_max_pending_and_refuses_the_rest() {
    let web = HttpUpstream::start();
    let gw = Gateway::start(&http_config(
        &[web.addr()],
        "connect_timeout: 30s, circuit_breakers: {max_requests: 100, max_connections: 2, max_pending: 1}",
    ));
    let slow: Vec<_> = (0..6)
        .map(|_| {
            let url = gw.url("/slow/3000");
            std::thread::spawn(move || status(&url))
        })
        .collect();
    // Two requests reach the upstream, one waits for a connection, and the
    // three others are refused while those are still sleeping.
    wait_for("two requests sleeping at the upstream", WAIT, || {
        let (_, body) = http_get(web.addr(), "/inflight").ok()?;
        (body.trim() == "2").then_some(())
    });
    wait_for("three requests refused by max_pending", WAIT, || {
        (overflows(&gw, "web", "max_pending") == 3.0).then_some(())
    });
    let (_, inflight) = http_get(web.addr(), "/inflight").unwrap();
    assert_eq!(inflight.trim(), "2");
    assert_eq!(connections_to(web.addr()), 2);
    let report = cluster_report(&gw, "web");
    assert_eq!(report["max_connections"], 2, "{report}");
    assert_eq!(report["max_pending"], 1, "{report}");
    assert_eq!(report["connections_open"], 2, "{report}");
    assert_eq!(report["requests_pending"], 1, "{report}");

    let mut statuses: Vec<u16> = slow.into_iter().map(|t| t.join().unwrap()).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 200, 503, 503, 503]);
    assert_eq!(overflows(&gw, "web", "max_pending"), 3.0);
    assert_eq!(overflows(&gw, "web", "max_connections"), 0.0);
    assert!(connections_to(web.addr()) <= 2);
    let report = cluster_report(&gw, "web");
    assert_eq!(report["requests_pending"], 0, "{report}");
    assert!(
        report["connections_open"].as_u64().unwrap() <= 2,
        "{report}"
    );

    // The refusal names the breaker.
    let held: Vec<_> = (0..2)
        .map(|_| {
            let url = gw.url("/slow/3000");
            std::thread::spawn(move || status(&url))
        })
        .collect();
    wait_for("two requests sleeping at the upstream", WAIT, || {
        let (_, body) = http_get(web.addr(), "/inflight").ok()?;
        (body.trim() == "2").then_some(())
    });
    let waiting = {
        let url = gw.url("/slow/0");
        std::thread::spawn(move || status(&url))
    };
    wait_for("one request waiting for a connection", WAIT, || {
        (cluster_report(&gw, "web")["requests_pending"] == 1).then_some(())
    });
    let out = run_ok(curl().args(["-s", "-i"]).arg(gw.url("/hello")));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(
        text.contains("cluster web is at its max_pending circuit breaker"),
        "{text}"
    );
    for t in held {
        assert_eq!(t.join().unwrap(), 200);
    }
    assert_eq!(waiting.join().unwrap(), 200);
}

#[test]
fn http1_wait_for_a_connection_ends_at_connect_timeout() {
    let web = HttpUpstream::start();
    let gw = Gateway::start(&http_config(
        &[web.addr()],
        "connect_timeout: 1s, circuit_breakers: {max_requests: 100, max_connections: 1}",
    ));
    let held = {
        let url = gw.url("/slow/5000");
        std::thread::spawn(move || status(&url))
    };
    wait_for("one request sleeping at the upstream", WAIT, || {
        let (_, body) = http_get(web.addr(), "/inflight").ok()?;
        (body.trim() == "1").then_some(())
    });
    // No max_pending: the request waits, and gives up at connect_timeout
    // (the held request sleeps far longer).
    assert_eq!(status(&gw.url("/hello")), 503);
    assert_eq!(overflows(&gw, "web", "max_connections"), 1.0);
    assert_eq!(overflows(&gw, "web", "max_pending"), 0.0);
    assert_eq!(held.join().unwrap(), 200);
}

#[test]
fn http1_idle_connection_of_another_host_is_closed_to_make_room() {
    let a = HttpUpstream::start();
    let b = HttpUpstream::start();
    let gw = Gateway::start(&http_config(
        &[a.addr(), b.addr()],
        "lb: round_robin, circuit_breakers: {max_requests: 100, max_connections: 1, max_pending: 0}",
    ));
    // Round robin alternates the hosts; each request finds the other host's
    // connection idle in the pool, the only one the limit allows.
    let mut ports = Vec::new();
    for _ in 0..4 {
        let out = run_ok(
            curl()
                .args(["-s", "-D", "-", "-o", "/dev/null"])
                .arg(gw.url("/hello")),
        );
        let head = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let port = head
            .lines()
            .find_map(|l| l.strip_prefix("X-Upstream-Port: "))
            .unwrap_or_else(|| panic!("{head}"))
            .trim()
            .to_string();
        ports.push(port);
        assert!(connections_to(a.addr()) + connections_to(b.addr()) <= 1);
    }
    assert!(ports.contains(&a.port.to_string()), "{ports:?}");
    assert!(ports.contains(&b.port.to_string()), "{ports:?}");
    assert_eq!(overflows(&gw, "web", "max_pending"), 0.0);
    assert_eq!(overflows(&gw, "web", "max_connections"), 0.0);
}

/// Gateway clients of the Redis server (`INFO clients`, minus the asking one).
fn redis_gateway_clients(direct: &mut RawConn) -> usize {
    let info = direct.command(&["INFO", "clients"]);
    let text = String::from_utf8_lossy(&info);
    let n: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("connected_clients:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    n - 1
}

/// A gateway for Redis whose cluster has `max_connections`, `max_pending: 0`
/// and `extra` cluster fields.
fn redis_gateway(redis: &RedisServer, max_connections: usize, extra: &str) -> Gateway {
    let ports = Ports::new();
    Gateway::start(&format!(
        r#"admin: {{address: "127.0.0.1:{admin}"}}
listeners:
  - name: edge
    address: "127.0.0.1:{listen}"
    protocols: [redis]
    route_table: main
route_tables:
  - name: main
    virtual_hosts:
      - name: any
        domains: ["*"]
        routes:
          - {{cluster: redis}}
clusters:
  - {{name: redis, hosts: ["{redis}"], circuit_breakers: {{max_requests: 100, max_connections: {max_connections}, max_pending: 0}}{extra}}}
"#,
        admin = ports.admin,
        listen = ports.listen,
        redis = redis.addr(),
    ))
}

#[test]
fn redis_sessions_past_max_connections_get_an_error() {
    let redis = RedisServer::start();
    let gw = redis_gateway(&redis, 2, ", redis: {shared_connections: 0}");
    let mut direct = RawConn::connect(redis.addr());
    // Without shared connections every session owns its upstream connection: two fit.
    let mut first = RawConn::connect(gw.addr());
    let mut second = RawConn::connect(gw.addr());
    assert_eq!(first.command(&["GET", "x"]), b"$-1\r\n");
    assert_eq!(second.command(&["GET", "x"]), b"$-1\r\n");
    let mut third = RawConn::connect(gw.addr());
    assert_eq!(
        third.command(&["GET", "x"]),
        b"-ERR cluster redis is at its max_pending circuit breaker\r\n"
    );
    assert_eq!(redis_gateway_clients(&mut direct), 2);
    assert_eq!(overflows(&gw, "redis", "max_pending"), 1.0);
    // When a session ends, its connection's slot is free for the next.
    drop(first);
    let reply = wait_for("the first session's connection to close", WAIT, || {
        let r = third.command(&["GET", "x"]);
        (r == b"$-1\r\n").then_some(r)
    });
    assert_eq!(reply, b"$-1\r\n");
    assert_eq!(second.command(&["GET", "x"]), b"$-1\r\n");
    assert!(redis_gateway_clients(&mut direct) <= 2);
}

/// With shared upstream connections (the default) stateless sessions fit in
/// one slot however many they are; a session that needs a connection of its
/// own (`SELECT 1`) needs a slot of its own.
#[test]
fn redis_shared_connections_count_once_and_dedicated_ones_need_a_slot() {
    let redis = RedisServer::start();
    let gw = redis_gateway(&redis, 1, "");
    let mut direct = RawConn::connect(redis.addr());
    let mut sessions: Vec<RawConn> = (0..5).map(|_| RawConn::connect(gw.addr())).collect();
    for s in &mut sessions {
        assert_eq!(s.command(&["GET", "x"]), b"$-1\r\n");
    }
    assert_eq!(redis_gateway_clients(&mut direct), 1);
    let mut stateful = RawConn::connect(gw.addr());
    assert_eq!(
        stateful.command(&["SELECT", "1"]),
        b"-ERR cluster redis is at its max_pending circuit breaker\r\n"
    );
    assert_eq!(overflows(&gw, "redis", "max_pending"), 1.0);
    // The others go on over the shared connection.
    assert_eq!(sessions[0].command(&["GET", "x"]), b"$-1\r\n");
    assert_eq!(redis_gateway_clients(&mut direct), 1);
}

#[test]
fn bad_connection_breakers_fail_switchyard_check_naming_the_field() {
    let yaml = http_config(
        &[local(free_port())],
        "circuit_breakers: {max_requests: 10, max_connections: 0}}\n  - {name: other, hosts: [\"127.0.0.1:1\"], circuit_breakers: {max_requests: 10, max_pending: 4}",
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchyard.yaml");
    std::fs::write(&path, &yaml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("check")
        .arg(&path)
        .output()
        .expect("run switchyard check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{yaml}\n{text}");
    assert!(
        text.contains("clusters[web].circuit_breakers.max_connections"),
        "{text}"
    );
    assert!(
        text.contains("clusters[other].circuit_breakers.max_pending"),
        "{text}"
    );
    assert!(
        text.contains("set circuit_breakers.max_connections too"),
        "{text}"
    );
}

#[test]
fn an_idle_connection_of_another_subset_view_is_closed_to_make_room() {
    let a = HttpUpstream::start();
    let b = HttpUpstream::start();
    let ports = Ports::new();
    // Each route's subset is a view of the cluster with its own idle pool;
    // the connection limit is the cluster's.
    let gw = Gateway::start(&format!(
        r#"admin: {{address: "127.0.0.1:{admin}"}}
listeners:
  - name: edge
    address: "127.0.0.1:{listen}"
    protocols: [http1]
    route_table: main
route_tables:
  - name: main
    virtual_hosts:
      - name: any
        domains: ["*"]
        routes:
          - {{match: {{path_prefix: /v1/}}, cluster: web, subset: {{version: v1}}}}
          - {{match: {{path_prefix: /v2/}}, cluster: web, subset: {{version: v2}}}}
clusters:
  - name: web
    hosts:
      - {{address: "{a}", labels: {{version: v1}}}}
      - {{address: "{b}", labels: {{version: v2}}}}
    circuit_breakers: {{max_requests: 100, max_connections: 1, max_pending: 0}}
"#,
        admin = ports.admin,
        listen = ports.listen,
        a = a.addr(),
        b = b.addr(),
    ));
    // The upstream answers these paths 404 itself (not the gateway's 503).
    for path in ["/v1/x", "/v2/x", "/v1/x", "/v2/x"] {
        assert_eq!(status(&gw.url(path)), 404, "{path}");
        assert!(connections_to(a.addr()) + connections_to(b.addr()) <= 1);
    }
    assert_eq!(overflows(&gw, "web", "max_pending"), 0.0);
}
