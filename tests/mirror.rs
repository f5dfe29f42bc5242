//! The `mirror` stream filter through the gateway binary: copies of a share
//! of the requests go to a shadow cluster (a second nginx or redis-server)
//! while the clients' answers come from the primary; a dead or stuck shadow
//! changes no answer, and its failures and drops are only counted.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use common::*;

/// One listener sniffing HTTP/1, HTTP/2 and Redis: Redis to `redis` with
/// `redis_filters`, HTTP to `web` (over HTTP/1.1) with `http_filters`; `shadow` and
/// `redis_shadow` are the clusters the filters may mirror to.
fn config(
    web: SocketAddr,
    shadow: SocketAddr,
    redis: SocketAddr,
    redis_shadow: SocketAddr,
    http_filters: &str,
    redis_filters: &str,
) -> String {
    let ports = Ports::new();
    format!(
        r#"admin: {{address: "127.0.0.1:{admin}"}}
listeners:
  - name: edge
    address: "127.0.0.1:{listen}"
    protocols: [http1, http2, redis]
    route_table: main
route_tables:
  - name: main
    virtual_hosts:
      - name: any
        domains: ["*"]
        routes:
          - {{match: {{protocol: redis}}, cluster: redis, filters: {redis_filters}}}
          - {{cluster: web, filters: {http_filters}}}
clusters:
  - {{name: web, hosts: ["{web}"], protocol: http1}}
  - {{name: shadow, hosts: ["{shadow}"], request_timeout: 30s}}
  - {{name: redis, hosts: ["{redis}"]}}
  - {{name: redis_shadow, hosts: ["{redis_shadow}"]}}
"#,
        admin = ports.admin,
        listen = ports.listen,
    )
}

/// An address nobody listens on.
fn dead() -> SocketAddr {
    local(free_port())
}

/// `curl` `n` GETs of `path` on one keep-alive connection: the bodies, one a line.
fn get_many(gw: &Gateway, path: &str, n: usize) -> Vec<String> {
    let mut c = curl();
    c.args(["-w", "\\n"]);
    for _ in 0..n {
        c.arg(gw.url(path));
    }
    let out = run_ok(&mut c);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn mirrored(gw: &Gateway, cluster: &str, result: &str) -> f64 {
    gw.metric(
        "switchyard_mirror_requests_total",
        &[("cluster", cluster), ("result", result)],
    )
}

/// Wait until the shadow nginx has logged `n` requests: its log.
fn shadow_log(shadow: &Nginx, n: usize) -> Vec<String> {
    wait_for(
        &format!("{n} requests in the shadow's access log"),
        Duration::from_secs(20),
        || {
            let log = shadow.access_log();
            (log.len() >= n).then_some(log)
        },
    )
}

#[test]
fn http1_every_request_is_copied_to_the_shadow_with_a_shadow_host() {
    let web = Nginx::start(&[("x.txt", b"primary")]);
    let shadow = Nginx::start_logging(&[("x.txt", b"shadow")]);
    let gw = Gateway::start(&config(
        web.addr(),
        shadow.addr(),
        dead(),
        dead(),
        "[{mirror: {cluster: shadow}}]",
        "[]",
    ));
    let bodies = get_many(&gw, "/x.txt", 20);
    assert_eq!(
        bodies,
        vec!["primary".to_string(); 20],
        "answers from the primary"
    );
    // A request with a body (nginx answers a static file's POST 405, from
    // the primary, whose answer the client gets; the copy carries the body).
    let out = run_ok(curl().args([
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--data-binary",
        "hello",
        &gw.url("/x.txt?post"),
    ]));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "405");
    let log = shadow_log(&shadow, 21);
    let host = format!("127.0.0.1-shadow:{}", gw.addr().port());
    assert_eq!(
        log.iter()
            .filter(|l| **l == format!("GET {host} /x.txt"))
            .count(),
        20,
        "{log:?}"
    );
    assert!(log.contains(&format!("POST {host} /x.txt?post")), "{log:?}");
    wait_for("21 copies counted as sent", Duration::from_secs(10), || {
        (mirrored(&gw, "shadow", "sent") == 21.0).then_some(())
    });
    assert_eq!(mirrored(&gw, "shadow", "failed"), 0.0);
    assert_eq!(mirrored(&gw, "shadow", "dropped"), 0.0);
}

#[test]
fn http2_requests_without_a_body_are_copied_as_http11() {
    let web = Nginx::start(&[("x.txt", b"primary")]);
    let shadow = Nginx::start_logging(&[("x.txt", b"shadow")]);
    let gw = Gateway::start(&config(
        web.addr(),
        shadow.addr(),
        dead(),
        dead(),
        "[{mirror: {cluster: shadow}}]",
        "[]",
    ));
    // One curl per request: curl 7.88 fails on the second URL of a
    // prior-knowledge run (exit 16), against nginx's h2c as well.
    for _ in 0..10 {
        let out = run_ok(curl().args(["--http2-prior-knowledge", &gw.url("/x.txt")]));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "primary");
    }
    let log = shadow_log(&shadow, 10);
    let host = format!("127.0.0.1-shadow:{}", gw.addr().port());
    assert_eq!(log, vec![format!("GET {host} /x.txt"); 10]);
    wait_for("10 copies counted as sent", Duration::from_secs(10), || {
        (mirrored(&gw, "shadow", "sent") == 10.0).then_some(())
    });
}

/// A shadow that records each HTTP/1.1 request it reads (head, then the
/// `Content-Length` body) and answers `200 ok`.
fn recording_shadow() -> (SocketAddr, std::sync::mpsc::Receiver<(String, Vec<u8>)>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the shadow");
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut w = conn.try_clone().unwrap();
                let mut r = BufReader::new(conn);
                loop {
                    let mut head = String::new();
                    let mut line = String::new();
                    while r.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                        head.push_str(&line);
                        line.clear();
                    }
                    if head.is_empty() {
                        return;
                    }
                    let len = head
                        .lines()
                        .find_map(|l| {
                            let (n, v) = l.split_once(':')?;
                            n.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    let mut body = vec![0; len];
                    if r.read_exact(&mut body).is_err() {
                        return;
                    }
                    let _ = tx.send((head, body));
                    if w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (addr, rx)
}

/// HTTP/2 requests with a body are copied once the body is whole, with the
/// body's own `Content-Length` (the HTTP/2 client need not send one).
#[test]
fn http2_requests_with_a_body_are_copied_whole() {
    let web = HttpUpstream::start();
    let (shadow, seen) = recording_shadow();
    let gw = Gateway::start(&config(
        web.addr(),
        shadow,
        dead(),
        dead(),
        "[{mirror: {cluster: shadow}}]",
        "[]",
    ));
    let body = "x".repeat(20_000);
    let out = run_ok(
        curl()
            .args(["--http2-prior-knowledge", "-H", "content-length:"])
            .args(["--data-binary", &body, &gw.url("/echo")]),
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        body,
        "the primary's echo"
    );
    let (head, copied) = seen
        .recv_timeout(Duration::from_secs(20))
        .expect("a copy at the shadow");
    assert!(head.starts_with("POST /echo HTTP/1.1\r\n"), "{head}");
    assert!(
        head.contains(&format!("Host: 127.0.0.1-shadow:{}\r\n", gw.addr().port())),
        "{head}"
    );
    assert_eq!(copied, body.as_bytes());
    // A body past the 64 KiB kept for copies is not copied (counted dropped).
    let big = "y".repeat(100_000);
    let out = run_ok(curl().args(["--http2-prior-knowledge"]).args([
        "--data-binary",
        &big,
        &gw.url("/echo"),
    ]));
    assert_eq!(out.stdout.len(), big.len());
    wait_for(
        "the big copy counted as dropped",
        Duration::from_secs(10),
        || (mirrored(&gw, "shadow", "dropped") == 1.0).then_some(()),
    );
    assert_eq!(mirrored(&gw, "shadow", "sent"), 1.0);
    assert!(seen.try_recv().is_err(), "only the small body was copied");
}

#[test]
fn http1_percent_copies_about_that_share() {
    let web = Nginx::start(&[("x.txt", b"primary")]);
    let shadow = Nginx::start_logging(&[("x.txt", b"shadow")]);
    let gw = Gateway::start(&config(
        web.addr(),
        shadow.addr(),
        dead(),
        dead(),
        "[{mirror: {cluster: shadow, percent: 50}}]",
        "[]",
    ));
    let bodies = get_many(&gw, "/x.txt", 400);
    assert_eq!(bodies.iter().filter(|b| *b == "primary").count(), 400);
    // Every copy is answered (sent) or failed; wait until all are back.
    let copies = wait_for("the copies to come back", Duration::from_secs(20), || {
        let sent = mirrored(&gw, "shadow", "sent");
        let failed = mirrored(&gw, "shadow", "failed");
        let n = shadow.access_log().len();
        (sent + failed == n as f64 && sent > 0.0).then_some(n)
    });
    // Binomial(400, 0.5): 140..=260 is over 6 standard deviations wide.
    assert!((140..=260).contains(&copies), "{copies} of 400 copied");
}

#[test]
fn http1_a_dead_shadow_changes_no_answer() {
    let web = Nginx::start(&[("x.txt", b"primary")]);
    let gw = Gateway::start(&config(
        web.addr(),
        dead(),
        dead(),
        dead(),
        "[{mirror: {cluster: shadow}}]",
        "[]",
    ));
    let bodies = get_many(&gw, "/x.txt", 30);
    assert_eq!(bodies, vec!["primary".to_string(); 30]);
    wait_for("30 failed copies", Duration::from_secs(20), || {
        (mirrored(&gw, "shadow", "failed") == 30.0).then_some(())
    });
    assert_eq!(mirrored(&gw, "shadow", "sent"), 0.0);
}

#[test]
fn http1_copies_over_the_bound_are_dropped() {
    let web = Nginx::start(&[("x.txt", b"primary")]);
    // A shadow that accepts connections and never answers: every copy stays
    // in flight (the shadow's request timeout is 30 s).
    let stuck = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = stuck.local_addr().unwrap();
    std::thread::spawn(move || {
        let held: Vec<_> = stuck.incoming().map_while(Result::ok).collect();
        drop(held);
    });
    let gw = Gateway::start(&config(
        web.addr(),
        addr,
        dead(),
        dead(),
        "[{mirror: {cluster: shadow, max_in_flight: 8}}]",
        "[]",
    ));
    let bodies = get_many(&gw, "/x.txt", 100);
    assert_eq!(bodies, vec!["primary".to_string(); 100]);
    // 8 copies in flight at most: the 92 after them were dropped.
    assert_eq!(mirrored(&gw, "shadow", "dropped"), 92.0);
    assert_eq!(mirrored(&gw, "shadow", "sent"), 0.0);
}

/// `INFO commandstats` of a server: calls of `command` (0 when never called).
fn calls(server: &RedisServer, command: &str) -> u64 {
    let out = redis_cli(server.addr(), &["INFO", "commandstats"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().expect("a call count"))
}

#[test]
fn redis_reads_are_copied_and_writes_are_not() {
    let primary = RedisServer::start();
    let shadow = RedisServer::start();
    let gw = Gateway::start(&config(
        dead(),
        dead(),
        primary.addr(),
        shadow.addr(),
        "[]",
        "[{mirror: {cluster: redis_shadow}}]",
    ));
    let mut c = RawConn::connect(gw.addr());
    assert_eq!(c.command(&["SET", "k", "v"]), b"+OK\r\n");
    for _ in 0..10 {
        assert_eq!(
            c.command(&["GET", "k"]),
            b"$1\r\nv\r\n",
            "the primary's answer"
        );
    }
    assert_eq!(c.command(&["DEL", "k"]), b":1\r\n");
    wait_for("10 GETs on the shadow", Duration::from_secs(20), || {
        (calls(&shadow, "get") == 10).then_some(())
    });
    assert_eq!(calls(&shadow, "set"), 0, "writes are never copied");
    assert_eq!(calls(&shadow, "del"), 0, "writes are never copied");
    assert_eq!(calls(&primary, "get"), 10);
    wait_for("10 copies counted as sent", Duration::from_secs(10), || {
        (mirrored(&gw, "redis_shadow", "sent") == 10.0).then_some(())
    });
}

#[test]
fn bad_mirror_filters_are_config_errors_naming_the_field() {
    let check = |http_filters: &str| {
        let yaml = config(dead(), dead(), dead(), dead(), http_filters, "[]");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mirror.yaml");
        std::fs::write(&file, yaml).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .arg("check")
            .arg(&file)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{http_filters} passed the check");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = check("[{mirror: {cluster: nowhere, percent: 10}}]");
    assert!(
        err.contains("routes[1].filters[0].mirror.cluster: no cluster is named `nowhere`")
            && err.contains("defined clusters: redis, redis_shadow, shadow, web"),
        "{err}"
    );
    let err = check("[{mirror: {cluster: shadow, percent: 120}}]");
    assert!(
        err.contains("mirror.percent: 120 is not a percentage"),
        "{err}"
    );
    let err = check("[{mirror: {cluster: shadow, max_in_flight: 0}}]");
    assert!(err.contains("mirror.max_in_flight"), "{err}");
}
