//! One port, both protocols, and the gateway as a process: detection and its
//! fallbacks, the admin API, reload on SIGHUP and drain on SIGTERM.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http_and_redis_clients_share_the_port_concurrently() {
    let server = RedisServer::start();
    let up = HttpUpstream::start();
    let gw = Template {
        redis: vec![server.addr()],
        http: vec![up.addr()],
        ..Default::default()
    }
    .start();
    let mut tasks = Vec::new();
    for t in 0..4 {
        let url = gw.url("/hello");
        tasks.push(tokio::spawn(async move {
            let client = http_client();
            for i in 0..200 {
                let r = client
                    .get(&url)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("http task {t} request {i}: {e}"));
                assert_eq!(r.status(), 200);
                assert_eq!(r.text().await.unwrap(), "hello from upstream\n");
            }
        }));
        let addr = gw.addr();
        tasks.push(tokio::spawn(async move {
            let mut con = redis_conn(addr).await;
            for i in 0..200 {
                let key = format!("task{t}:{i}");
                let _: () = redis::cmd("SET")
                    .arg(&key)
                    .arg(i)
                    .query_async(&mut con)
                    .await
                    .unwrap();
                let v: i64 = redis::cmd("GET")
                    .arg(&key)
                    .query_async(&mut con)
                    .await
                    .unwrap();
                assert_eq!(v, i);
                let _: i64 = redis::cmd("INCR")
                    .arg("shared:counter")
                    .query_async(&mut con)
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.expect("a client task failed");
    }
    let mut direct = RawConn::connect(server.addr());
    assert_eq!(direct.command(&["GET", "shared:counter"]), b"$3\r\n800\r\n");
}

#[test]
fn garbage_is_closed_while_other_clients_keep_working() {
    let server = RedisServer::start();
    let up = HttpUpstream::start();
    let gw = Template {
        redis: vec![server.addr()],
        http: vec![up.addr()],
        ..Default::default()
    }
    .start();
    let mut http = RawConn::connect(gw.addr());
    http.send(&get_request("/hello"));
    assert_eq!(http.response().status, 200);
    let mut red = RawConn::connect(gw.addr());
    assert_eq!(red.command(&["PING"]), b"+PONG\r\n");

    let mut bad = RawConn::connect(gw.addr());
    bad.send(b"\x00\xff\x13garbage\r\n");
    let (bytes, _) = bad.read_until_closed();
    assert!(
        bytes.is_empty(),
        "the gateway answered garbage with {bytes:?}"
    );

    http.send(&get_request("/hello"));
    assert_eq!(http.response().text(), "hello from upstream\n");
    assert_eq!(red.command(&["SET", "after-garbage", "1"]), b"+OK\r\n");
    let rejected = gw.metric(
        "switchyard_detect_failures_total",
        &[("listener", "edge"), ("reason", "rejected")],
    );
    assert_eq!(rejected, 1.0, "detection should have rejected the garbage");
}

#[test]
fn silent_client_is_closed_after_the_detect_timeout() {
    let gw = Template {
        listener: vec!["detect: {timeout: 500ms}"],
        ..Default::default()
    }
    .start();
    let mut c = RawConn::connect(gw.addr());
    let (bytes, _) = c.read_until_closed();
    assert!(bytes.is_empty());
    let timeouts = gw.metric(
        "switchyard_detect_failures_total",
        &[("listener", "edge"), ("reason", "timeout")],
    );
    assert_eq!(timeouts, 1.0);
    // A client that speaks is still served.
    let mut c = RawConn::connect(gw.addr());
    c.send(&get_request("/"));
    assert_eq!(c.response().text(), "gateway");
}

#[test]
fn unrecognised_bytes_fall_back_to_tcp_proxy() {
    let echo = EchoServer::start();
    let gw = Template {
        listener: vec!["detect: {fallback: {tcp_proxy: echo}}"],
        clusters: vec![format!("{{name: echo, hosts: [\"{}\"]}}", echo.addr())],
        ..Default::default()
    }
    .start();
    let mut c = RawConn::connect(gw.addr());
    for msg in [
        &b"\x00\xff\x13garbage\r\n"[..],
        b"more bytes, now unparsed: GET / HTTP/1.1\r\n\r\n",
        &[0u8; 3000],
    ] {
        c.send(msg);
        let mut got = vec![0u8; msg.len()];
        std::io::Read::read_exact(&mut c.reader, &mut got)
            .expect("the echo through the tcp_proxy fallback");
        assert_eq!(got, msg);
    }
    // A passthrough connection is one request of its cluster, counted and
    // timed when it closes.
    let echo_series = [("cluster", "echo")];
    assert_eq!(
        gw.metric("switchyard_upstream_requests_total", &echo_series),
        0.0
    );
    drop(c);
    wait_for("the passthrough connection to be counted", WAIT, || {
        let n = gw.metric("switchyard_upstream_requests_total", &echo_series);
        (n == 1.0).then_some(())
    });
    assert_eq!(
        gw.metric(
            "switchyard_upstream_request_duration_seconds_count",
            &echo_series
        ),
        1.0
    );
    // HTTP on the same listener is still parsed and answered by the gateway.
    let mut h = RawConn::connect(gw.addr());
    h.send(&get_request("/"));
    assert_eq!(h.response().text(), "gateway");
}

#[test]
fn admin_reports_metrics_config_and_readiness() {
    let server = RedisServer::start();
    let up = HttpUpstream::start();
    let ports = Ports::new();
    let gw = Gateway::start(
        &Template {
            redis: vec![server.addr()],
            http: vec![up.addr()],
            ..Default::default()
        }
        .render(&ports),
    );
    let mut h = RawConn::connect(gw.addr());
    for _ in 0..3 {
        h.send(&get_request("/hello"));
        assert_eq!(h.response().status, 200);
    }
    let mut r = RawConn::connect(gw.addr());
    for i in 0..5 {
        assert_eq!(r.command(&["SET", "m", &i.to_string()]), b"+OK\r\n");
    }
    let (text, http, redis) = wait_for("request counters of both protocols", WAIT, || {
        let text = gw.metrics();
        let http = metric_value(
            &text,
            "switchyard_requests_total",
            &[("listener", "edge"), ("protocol", "http1")],
        )?;
        let redis = metric_value(
            &text,
            "switchyard_requests_total",
            &[("listener", "edge"), ("protocol", "redis")],
        )?;
        (http >= 3.0 && redis >= 5.0).then_some((text.clone(), http, redis))
    });
    assert!(http >= 3.0 && redis >= 5.0, "{text}");

    let (status, config) = gw.admin_get("/config");
    assert_eq!(status, 200);
    assert!(config.contains("edge"), "{config}");
    assert!(
        config.contains(&format!("127.0.0.1:{}", ports.listen)),
        "{config}"
    );
    assert!(config.contains(&up.addr().to_string()), "{config}");

    assert_eq!(gw.admin_get("/ready"), (200, "ready\n".to_owned()));
    assert_eq!(gw.admin_get("/nope").0, 404);
}

/// A config answering every HTTP request with `body`.
fn direct_config(ports: &Ports, body: &str) -> String {
    Template {
        routes: vec![format!(
            "{{match: {{protocol: http1}}, direct_response: {{status: 200, body: {body}}}}}"
        )],
        no_http_default: true,
        ..Default::default()
    }
    .render(ports)
}

fn body_of_new_connection(gw: &Gateway) -> String {
    let mut c = RawConn::connect(gw.addr());
    c.send(&get_request("/"));
    c.response().text()
}

#[test]
fn sighup_reloads_the_config_and_rejects_broken_ones() {
    let ports = Ports::new();
    let gw = Gateway::start(&direct_config(&ports, "v1"));
    assert_eq!(body_of_new_connection(&gw), "v1");

    std::fs::write(&gw.config_path, direct_config(&ports, "v2")).unwrap();
    gw.signal("HUP");
    wait_for("new connections to see v2", WAIT, || {
        (body_of_new_connection(&gw) == "v2").then_some(())
    });

    // A config that does not validate (unknown cluster), then one that does not parse.
    let unknown_cluster = direct_config(&ports, "v3").replace(
        "direct_response: {status: 200, body: v3}",
        "cluster: nowhere",
    );
    let broken = direct_config(&ports, "v4").replace("route_tables:", "route_tables: [oops");
    for (i, bad) in [unknown_cluster, broken].into_iter().enumerate() {
        std::fs::write(&gw.config_path, bad).unwrap();
        gw.signal("HUP");
        wait_for("the gateway to log `reload rejected`", WAIT, || {
            (gw.log().matches("reload rejected").count() > i).then_some(())
        });
        assert_eq!(
            body_of_new_connection(&gw),
            "v2",
            "a rejected config must keep the running one"
        );
    }
    assert!(
        gw.log().contains("no cluster is named `nowhere`"),
        "the rejection should say why:\n{}",
        gw.log()
    );
}

#[test]
fn sigterm_lets_in_flight_requests_finish_then_exits() {
    let up = HttpUpstream::start();
    let mut gw = Template {
        http: vec![up.addr()],
        top: vec!["drain_timeout: 10s"],
        ..Default::default()
    }
    .start();
    let addr = gw.addr();
    let slow = std::thread::spawn(move || {
        let mut c = RawConn::connect(addr);
        c.send(&get_request("/slow/1500"));
        c.response()
    });
    wait_for("the slow request to reach the upstream", WAIT, || {
        let (_, n) = http_get(up.addr(), "/inflight").ok()?;
        (n.trim() != "0").then_some(())
    });
    gw.signal("TERM");
    // While draining: not ready, and no new connections.
    wait_for("/ready to answer 503 while draining", WAIT, || {
        (http_get(gw.admin, "/ready").ok()?.0 == 503).then_some(())
    });
    wait_for("the listener to stop accepting", WAIT, || {
        RawConn::try_connect(addr).is_err().then_some(())
    });
    let r = slow.join().expect("the slow request");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "slept 1500\n"),
        "{}",
        r.head
    );
    let status = gw.wait_exit(Duration::from_secs(15));
    assert!(
        status.success(),
        "the gateway exited with {status}\n{}",
        gw.log()
    );
}

#[test]
fn requests_split_into_single_bytes_are_detected() {
    let server = RedisServer::start();
    let up = HttpUpstream::start();
    let gw = Template {
        redis: vec![server.addr()],
        http: vec![up.addr()],
        ..Default::default()
    }
    .start();
    let trickle = |c: &mut RawConn, bytes: &[u8]| {
        for b in bytes {
            c.send(&[*b]);
            // Separate segments, so detection sees a growing prefix.
            std::thread::sleep(Duration::from_millis(2));
        }
    };
    let mut h = RawConn::connect(gw.addr());
    trickle(&mut h, &get_request("/hello"));
    assert_eq!(h.response().text(), "hello from upstream\n");
    let mut r = RawConn::connect(gw.addr());
    trickle(&mut r, &resp(&["PING"]));
    assert_eq!(r.reply().unwrap(), b"+PONG\r\n");
    let mut i = RawConn::connect(gw.addr());
    trickle(&mut i, b"PING\r\n");
    assert_eq!(i.reply().unwrap(), b"+PONG\r\n");
}

#[test]
fn idle_keep_alive_connections_are_closed_after_idle_timeout() {
    let server = RedisServer::start();
    let up = HttpUpstream::start();
    let gw = Template {
        redis: vec![server.addr()],
        http: vec![up.addr()],
        listener: vec!["idle_timeout: 500ms"],
        ..Default::default()
    }
    .start();
    let mut h = RawConn::connect(gw.addr());
    h.send(&get_request("/hello"));
    assert_eq!(h.response().status, 200);
    let mut r = RawConn::connect(gw.addr());
    assert_eq!(r.command(&["PING"]), b"+PONG\r\n");
    // A request slower than idle_timeout is not idleness.
    h.send(&get_request("/slow/1000"));
    assert_eq!(h.response().status, 200);
    assert_eq!(h.read_until_closed().0, b"");
    assert_eq!(r.read_until_closed().0, b"");
}

#[test]
fn sighup_reload_switches_cluster_hosts() {
    let a = HttpUpstream::start();
    let b = HttpUpstream::start();
    let ports = Ports::new();
    let config = |up: &HttpUpstream| {
        Template {
            http: vec![up.addr()],
            ..Default::default()
        }
        .render(&ports)
    };
    let gw = Gateway::start(&config(&a));
    let answered_by = || {
        let mut c = RawConn::connect(gw.addr());
        c.send(&get_request("/hello"));
        c.response().header("x-upstream-port").map(str::to_owned)
    };
    assert_eq!(answered_by(), Some(a.port.to_string()));
    std::fs::write(&gw.config_path, config(&b)).unwrap();
    gw.signal("HUP");
    wait_for("new connections to reach the new host", WAIT, || {
        (answered_by() == Some(b.port.to_string())).then_some(())
    });
}
