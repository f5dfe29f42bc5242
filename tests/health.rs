//! Upstream health through the gateway binary, against real peers: active
//! health checks take a dead host out of a cluster and bring it back (HTTP,
//! Redis, MQTT, Bolt; MySQL is in tests/mysql.rs), and outlier detection
//! ejects a host that answers 503 to everything and lets it back after the
//! ejection time.
//!
//! The clusters run with `failover: false`: without health checks, a request
//! the balancer gives to a dead host fails, so "every request succeeds" proves
//! the checks took the host out. Nothing is timed: each phase waits (with a
//! generous limit) until the traffic shows the change, then counts where
//! requests go.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::*;

/// Long enough for a few check intervals on a loaded machine.
const CHANGE: Duration = Duration::from_secs(30);

/// Fast checks: a host is out after 2 failed checks, back after 2 passed ones.
const CHECK: &str = "interval: 200ms, timeout: 1s, unhealthy_threshold: 2, healthy_threshold: 2";

/// A gateway with one listener speaking `protocol`, every request routed to
/// cluster `up` (`hosts`, plus `extra` fields).
fn gateway(protocol: &str, hosts: &[SocketAddr], extra: &str) -> Gateway {
    let ports = Ports::new();
    let hosts: Vec<String> = hosts.iter().map(|a| format!("\"{a}\"")).collect();
    Gateway::start(&format!(
        "admin:\n  address: 127.0.0.1:{admin}\nlisteners:\n  - name: front\n    address: 127.0.0.1:{listen}\n    protocols: [{protocol}]\n    route_table: all\nroute_tables:\n  - name: all\n    virtual_hosts:\n      - name: any\n        domains: [\"*\"]\n        routes:\n          - {{cluster: up}}\nclusters:\n  - {{name: up, failover: false, hosts: [{hosts}], {extra}}}\n",
        admin = ports.admin,
        listen = ports.listen,
        hosts = hosts.join(", "),
    ))
}

/// Run `one` `n` times; `Some(answers)` only when every one answered.
fn all_answer<T>(n: usize, mut one: impl FnMut() -> Option<T>) -> Option<Vec<T>> {
    (0..n).map(|_| one()).collect()
}

/// Wait until `n` requests in a row all answer and satisfy `want`; returns
/// those answers.
#[track_caller]
fn until_all<T: std::fmt::Debug>(
    what: &str,
    n: usize,
    mut one: impl FnMut() -> Option<T>,
    want: impl Fn(&[T]) -> bool,
) -> Vec<T> {
    wait_for(what, CHANGE, || {
        all_answer(n, &mut one).filter(|answers| want(answers))
    })
}

// HTTP

/// `GET /hello` on a new connection: the status and the upstream's port.
/// One host of one cluster as the admin's `/clusters` shows it.
fn admin_host(gw: &Gateway, cluster: &str, host: SocketAddr) -> serde_json::Value {
    let (status, body) = http_get(gw.admin, "/clusters").expect("admin /clusters");
    assert_eq!(status, 200, "{body}");
    let all: serde_json::Value = serde_json::from_str(&body).expect("/clusters is JSON");
    let c = all["clusters"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == cluster))
        .unwrap_or_else(|| panic!("cluster {cluster} in {body}"));
    c["hosts"]
        .as_array()
        .and_then(|hs| hs.iter().find(|h| h["address"] == host.to_string()))
        .unwrap_or_else(|| panic!("host {host} in {body}"))
        .clone()
}

fn http_hello(addr: SocketAddr) -> Option<(u16, String)> {
    let mut c = RawConn::try_connect(addr).ok()?;
    c.reader
        .get_mut()
        .write_all(
            format!("GET /hello HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .ok()?;
    let r = read_response(&mut c.reader, false).ok()?;
    let port = r
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("x-upstream-port"))
        .map_or_else(String::new, |(_, v)| v.clone());
    Some((r.status, port))
}

#[test]
fn http_health_checks_take_a_dead_host_out_and_bring_it_back() {
    let mut a = HttpUpstream::start();
    let b = HttpUpstream::start();
    let gw = gateway(
        "http1",
        &[a.addr(), b.addr()],
        &format!("health_check: {{kind: http, path: /hello, expected_statuses: [200], {CHECK}}}"),
    );
    let (pa, pb) = (a.port.to_string(), b.port.to_string());
    let both = until_all(
        "both hosts to answer",
        10,
        || http_hello(gw.addr()),
        |r| {
            r.iter().all(|(s, _)| *s == 200)
                && r.iter().any(|(_, p)| *p == pa)
                && r.iter().any(|(_, p)| *p == pb)
        },
    );
    assert_eq!(both.len(), 10);

    a.kill();
    // Until the checks notice, a request given to `a` fails (no failover).
    let only_b = until_all(
        "the dead host to leave the cluster",
        20,
        || http_hello(gw.addr()),
        |r| r.iter().all(|(s, p)| *s == 200 && *p == pb),
    );
    assert_eq!(only_b.len(), 20);
    // And it stays out: 40 more, every one answered by b.
    let more = all_answer(40, || http_hello(gw.addr())).expect("every request answered");
    assert!(more.iter().all(|(s, p)| *s == 200 && *p == pb), "{more:?}");
    // The admin shows it out, and why.
    let out = admin_host(&gw, "up", a.addr());
    assert_eq!(out["health"]["available"], false, "{out}");
    assert_eq!(out["health"]["failing_active_checks"], true, "{out}");
    assert_eq!(admin_host(&gw, "up", b.addr())["health"]["available"], true);

    a.restart();
    let back = until_all(
        "the host to come back",
        10,
        || http_hello(gw.addr()),
        |r| r.iter().all(|(s, _)| *s == 200) && r.iter().any(|(_, p)| *p == pa),
    );
    let again = admin_host(&gw, "up", a.addr());
    assert_eq!(again["health"]["available"], true, "{again}");
    assert_eq!(again["health"]["failing_active_checks"], false, "{again}");
    let to_a = back.iter().filter(|(_, p)| *p == pa).count();
    assert!(
        (1..10).contains(&to_a),
        "both hosts share the traffic again: {back:?}"
    );
    let log = gw.log();
    assert!(log.contains("upstream host is unhealthy"), "{log}");
    assert!(log.contains("upstream host is healthy again"), "{log}");
    let metrics = http_get(gw.admin, "/metrics").expect("metrics").1;
    assert!(
        metrics.contains(&format!(
            "switchyard_upstream_host_healthy{{cluster=\"up\",host=\"{}\"}} 1",
            a.addr()
        )),
        "{metrics}"
    );
}

#[test]
fn outlier_detection_ejects_a_host_answering_503_and_lets_it_back() {
    let bad = Nginx::start_answering(503);
    let good = HttpUpstream::start();
    let gw = gateway(
        "http1",
        &[bad.addr(), good.addr()],
        "outlier_detection: {consecutive_server_errors: 3, base_ejection_time: 2s, max_ejection_percent: 50}",
    );
    // Round robin from one client: requests alternate, so the bad host
    // answers requests 1, 3, 5 with 503 and is ejected after the third.
    let first = all_answer(30, || http_hello(gw.addr())).expect("every request answered");
    let statuses: Vec<u16> = first.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 503).count(),
        3,
        "exactly consecutive_server_errors 503s, then only the good host: {statuses:?}"
    );
    assert!(statuses[6..].iter().all(|s| *s == 200), "{statuses:?}");
    let ejected = admin_host(&gw, "up", bad.addr());
    assert_eq!(ejected["health"]["available"], false, "{ejected}");
    assert_eq!(ejected["health"]["ejections"], 1, "{ejected}");
    assert!(
        ejected["health"]["ejected_ms_left"].as_u64() > Some(0),
        "{ejected}"
    );
    assert_eq!(
        ejected["health"]["failing_active_checks"], false,
        "{ejected}"
    );
    // After the ejection time the bad host is tried again (and fails again).
    let again = wait_for("the ejected host to come back", CHANGE, || {
        http_hello(gw.addr()).filter(|(s, _)| *s == 503)
    });
    assert_eq!(again.0, 503);
    let metrics = http_get(gw.admin, "/metrics").expect("metrics").1;
    assert!(
        metrics.contains(&format!(
            "switchyard_upstream_ejections_total{{cluster=\"up\",host=\"{}\"}}",
            bad.addr()
        )),
        "{metrics}"
    );
    let log = gw.log();
    assert!(
        log.contains("ejected after server errors in a row"),
        "{log}"
    );
    assert!(log.contains("ejection is over"), "{log}");
}

// Redis

/// `GET who` on a new connection: the value, `None` on an error reply or no answer.
fn redis_who(addr: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(&resp(&["GET", "who"])).ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 256];
    loop {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        // `$1\r\na\r\n`
        let text = String::from_utf8_lossy(&buf).to_string();
        if text.starts_with('-') {
            return None;
        }
        let mut lines = text.split("\r\n");
        if let (Some(_), Some(value)) = (lines.next(), lines.next())
            && text.matches("\r\n").count() >= 2
        {
            return Some(value.to_owned());
        }
    }
}

fn redis_set_who(r: &RedisServer, who: &str) {
    let mut s = TcpStream::connect(r.addr()).expect("redis directly");
    s.write_all(&resp(&["SET", "who", who])).unwrap();
    let mut ok = [0u8; 5];
    s.read_exact(&mut ok).unwrap();
    assert_eq!(&ok, b"+OK\r\n");
}

#[test]
fn redis_health_checks_take_a_dead_host_out_and_bring_it_back() {
    let mut a = RedisServer::start();
    let b = RedisServer::start();
    redis_set_who(&a, "a");
    redis_set_who(&b, "b");
    let gw = gateway(
        "redis",
        &[a.addr(), b.addr()],
        &format!("health_check: {{kind: redis, {CHECK}}}"),
    );
    until_all(
        "both hosts to answer",
        10,
        || redis_who(gw.addr()),
        |r| r.iter().any(|w| w == "a") && r.iter().any(|w| w == "b"),
    );

    a.kill();
    until_all(
        "the dead host to leave the cluster",
        20,
        || redis_who(gw.addr()),
        |r| r.iter().all(|w| w == "b"),
    );
    let more = all_answer(40, || redis_who(gw.addr())).expect("every session answered");
    assert!(more.iter().all(|w| w == "b"), "{more:?}");

    a.restart();
    redis_set_who(&a, "a");
    let back = until_all(
        "the host to come back",
        10,
        || redis_who(gw.addr()),
        |r| r.iter().any(|w| w == "a"),
    );
    assert!(back.iter().any(|w| w == "b"), "{back:?}");
}

// MQTT

/// CONNECT as `id` through `addr`, wait for the CONNACK, DISCONNECT.
/// `true` when the CONNACK accepted the client.
fn mqtt_connect(addr: SocketAddr, id: &str) -> Option<bool> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut connect = vec![0x10, 0, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 30];
    connect.extend_from_slice(&(id.len() as u16).to_be_bytes());
    connect.extend_from_slice(id.as_bytes());
    connect[1] = (connect.len() - 2) as u8;
    s.write_all(&connect).ok()?;
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack).ok()?;
    let _ = s.write_all(&[0xe0, 0]);
    Some(connack == [0x20, 2, 0, 0])
}

#[test]
fn mqtt_health_checks_take_a_dead_broker_out_and_bring_it_back() {
    let mut a = Mosquitto::start();
    let b = Mosquitto::start();
    let gw = gateway(
        "mqtt",
        &[a.addr(), b.addr()],
        &format!("health_check: {{kind: mqtt, {CHECK}}}"),
    );
    let mut n = 0;
    let mut session = || {
        n += 1;
        let id = format!("health-test-{n}");
        mqtt_connect(gw.addr(), &id).filter(|ok| *ok).map(|_| id)
    };
    let seen = |broker: &Mosquitto, id: &String| broker.log().contains(&format!(" as {id} "));
    let both = until_all("clients to reach both brokers", 10, &mut session, |_| true);
    wait_for("the brokers to log the sessions", CHANGE, || {
        (both.iter().any(|id| seen(&a, id)) && both.iter().any(|id| seen(&b, id))).then_some(())
    });

    a.kill();
    let ids = until_all(
        "the dead broker to leave the cluster",
        20,
        &mut session,
        |_| true,
    );
    // Every one of those sessions reached broker b (its log names them).
    wait_for("b to log the sessions", CHANGE, || {
        ids.iter().all(|id| seen(&b, id)).then_some(())
    });

    a.restart();
    let mut tried = Vec::new();
    wait_for("the restarted broker to get sessions again", CHANGE, || {
        tried.extend(session());
        tried.iter().any(|id| seen(&a, id)).then_some(())
    });
    // The health check's own sessions say who they are.
    assert!(b.log().contains("switchyard-health-"), "{}", b.log());
}

// Bolt

#[test]
fn bolt_health_checks_take_a_dead_server_out_and_bring_it_back() {
    rpc_health_checks_take_a_dead_server_out_and_bring_it_back(RpcKind::Bolt);
}

#[test]
fn dubbo_health_checks_take_a_dead_server_out_and_bring_it_back() {
    rpc_health_checks_take_a_dead_server_out_and_bring_it_back(RpcKind::Dubbo);
}

/// The `bolt` / `dubbo` check is the protocol's heartbeat.
fn rpc_health_checks_take_a_dead_server_out_and_bring_it_back(kind: RpcKind) {
    let mut a = RpcServer::start(kind);
    let b = RpcServer::start(kind);
    let gw = gateway(
        kind.name(),
        &[a.addr(), b.addr()],
        &format!("health_check: {{kind: {}, {CHECK}}}", kind.name()),
    );
    let (pa, pb) = (a.port.to_string(), b.port.to_string());
    let whoami = |n: &str| {
        let run = rpc_client(
            gw.addr(),
            kind,
            Duration::from_secs(20),
            &[n, "com.example.Other.whoami"],
        );
        run.steps.into_iter().next()
    };
    wait_for("calls to reach both servers", CHANGE, || {
        let step = whoami("10")?;
        (step.errors == 0
            && step.values.contains(&Some(pa.clone()))
            && step.values.contains(&Some(pb.clone())))
        .then_some(())
    });

    a.kill();
    let step = wait_for("the dead server to leave the cluster", CHANGE, || {
        whoami("20").filter(|s| s.errors == 0)
    });
    assert!(
        step.values
            .iter()
            .all(|v| v.as_deref() == Some(pb.as_str())),
        "{:?}",
        step.values
    );

    a.restart();
    wait_for("the server to come back", CHANGE, || {
        let step = whoami("10")?;
        (step.errors == 0 && step.values.contains(&Some(pa.clone()))).then_some(())
    });
}

#[test]
fn outlier_detection_ejects_a_bolt_server_answering_server_exceptions() {
    let bad = RpcServer::start_failing(RpcKind::Bolt);
    let good = RpcServer::start(RpcKind::Bolt);
    let gw = gateway(
        "bolt",
        &[bad.addr(), good.addr()],
        "outlier_detection: {consecutive_server_errors: 3, base_ejection_time: 2s, max_ejection_percent: 50}",
    );
    // One call after the other (steps), on one connection: round robin
    // alternates, so the failing server gets calls 1, 3, 5, then is ejected.
    let mut args = vec!["1", "com.example.Other.whoami"];
    for _ in 1..30 {
        args.extend(["--then", "1", "com.example.Other.whoami"]);
    }
    let run = rpc_client(gw.addr(), RpcKind::Bolt, Duration::from_secs(20), &args);
    let errors: Vec<usize> = run.steps.iter().map(|s| s.errors).collect();
    assert_eq!(errors.iter().sum::<usize>(), 3, "{errors:?}");
    assert_eq!(&errors[..6], [1, 0, 1, 0, 1, 0]);
    let good_port = good.port.to_string();
    assert!(
        run.steps[6..]
            .iter()
            .all(|s| s.values == [Some(good_port.clone())]),
        "every call after the ejection reaches the good server"
    );
    assert!(
        run.steps[0]
            .messages
            .keys()
            .any(|m| m.contains("failing on purpose")),
        "the server's own error reached the client: {:?}",
        run.steps[0].messages
    );
    // After the ejection time the failing server gets calls again.
    wait_for("the ejected server to come back", CHANGE, || {
        let run = rpc_client(
            gw.addr(),
            RpcKind::Bolt,
            Duration::from_secs(20),
            &["2", "com.example.Other.whoami"],
        );
        (run.steps[0].errors > 0).then_some(())
    });
    assert!(
        gw.log().contains("ejected after server errors in a row"),
        "{}",
        gw.log()
    );
}
