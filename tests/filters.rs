//! The shared stream filters (`filters:` on listeners and routes), through
//! the gateway binary with real clients and servers: each refuses, limits,
//! delays or aborts requests in the words of their own protocol, and counts
//! its verdicts. RPC (tests/rpc.rs), MQTT (tests/mqtt.rs) and MySQL
//! (tests/mysql.rs) have their own filter tests next to their other ones.

mod common;

use std::net::SocketAddr;

use common::*;

/// One listener sniffing HTTP/1, HTTP/2, Redis and RTSP with `listener`
/// extra lines; routes: Redis to `redis` (with `redis_filters`), HTTP/1 and
/// HTTP/2 to `web` (with `http_filters`), RTSP to a port nobody listens on.
fn config(
    redis: SocketAddr,
    web: SocketAddr,
    listener: &str,
    redis_filters: &str,
    http_filters: &str,
) -> String {
    let ports = Ports::new();
    format!(
        r#"admin: {{address: "127.0.0.1:{admin}"}}
listeners:
  - name: edge
    address: "127.0.0.1:{listen}"
    protocols: [http1, http2, redis, rtsp]
    route_table: main
{listener}
route_tables:
  - name: main
    virtual_hosts:
      - name: any
        domains: ["*"]
        routes:
          - {{match: {{protocol: redis}}, cluster: redis, filters: {redis_filters}}}
          - {{match: {{protocol: rtsp}}, cluster: nowhere}}
          - {{cluster: web, filters: {http_filters}}}
clusters:
  - {{name: redis, hosts: ["{redis}"]}}
  - {{name: web, hosts: ["{web}"]}}
  - {{name: nowhere, hosts: ["{nowhere}"]}}
"#,
        admin = ports.admin,
        listen = ports.listen,
        nowhere = local(free_port()),
    )
}

/// `curl` the URLs in one run (one keep-alive connection): each status code.
fn statuses(extra: &[&str], urls: &[String]) -> Vec<u16> {
    let mut c = curl();
    c.args(["-s", "-w", "%{http_code}\\n"]).args(extra);
    for url in urls {
        c.args(["-o", "/dev/null", url]);
    }
    let out = run_ok(&mut c);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().parse().expect("a status code"))
        .collect()
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

/// `n` pipelined `GET key` commands on one connection: their replies.
fn pipelined_gets(addr: SocketAddr, n: usize) -> Vec<Vec<u8>> {
    let mut c = RawConn::connect(addr);
    let mut batch = Vec::new();
    for i in 0..n {
        batch.extend_from_slice(&resp(&["GET", &format!("k{i}")]));
    }
    c.send(&batch);
    (0..n).map(|_| c.reply().expect("a reply")).collect()
}

/// Read one RTSP response head (the gateway's refusals have no body).
fn rtsp_head(c: &mut RawConn) -> String {
    use std::io::Read;
    let mut s = c.stream().try_clone().expect("clone the socket");
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).expect("an RTSP response head");
        got.push(byte[0]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// Two `GET /slow/6000` through the gateway, each on its own thread, once
/// both are sleeping at the upstream (so they hold their places); join
/// them for their statuses.
fn two_slow_requests(gw: &Gateway, web: &HttpUpstream) -> Vec<std::thread::JoinHandle<Vec<u16>>> {
    let slow = (0..2)
        .map(|_| {
            let url = gw.url("/slow/6000");
            std::thread::spawn(move || statuses(&[], &[url]))
        })
        .collect();
    wait_for("two requests sleeping at the upstream", WAIT, || {
        let (_, body) = http_get(web.addr(), "/inflight").ok()?;
        (body.trim() == "2").then_some(())
    });
    slow
}

/// A `BLPOP queue 0` through the gateway, once it blocks at the server:
/// (its connection, a direct connection to the server).
fn blocked_blpop(gw: &Gateway, redis: &RedisServer) -> (RawConn, RawConn) {
    let mut blocked = RawConn::connect(gw.addr());
    blocked.send(&resp(&["BLPOP", "queue", "0"]));
    let mut direct = RawConn::connect(redis.addr());
    wait_for("the BLPOP to block at the server", WAIT, || {
        let info = direct.command(&["INFO", "clients"]);
        String::from_utf8_lossy(&info)
            .contains("blocked_clients:1")
            .then_some(())
    });
    (blocked, direct)
}

/// Unblock the `BLPOP` of [`blocked_blpop`]: it gets its job.
fn release_blpop(blocked: &mut RawConn, direct: &mut RawConn) {
    assert_eq!(direct.command(&["LPUSH", "queue", "job"]), b":1\r\n");
    assert_eq!(
        blocked.reply().unwrap(),
        b"*2\r\n$5\r\nqueue\r\n$3\r\njob\r\n"
    );
}

#[test]
fn ip_access_refuses_every_protocol_in_its_own_words() {
    let redis = RedisServer::start();
    let web = HttpUpstream::start();
    let deny = "    filters: [{ip_access: {deny: [127.0.0.0/8]}}]";
    let gw = Gateway::start(&config(redis.addr(), web.addr(), deny, "[]", "[]"));
    // HTTP/1.1 and HTTP/2 (curl): 403 with the reason.
    for flags in [&["--http1.1"][..], &["--http2-prior-knowledge"][..]] {
        let out = run_ok(curl().args(["-s", "-i"]).args(flags).arg(gw.url("/hello")));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.starts_with("HTTP/1.1 403") || text.starts_with("HTTP/2 403"),
            "{flags:?}: {text}"
        );
        assert!(text.ends_with("access denied\n"), "{text}");
    }
    // Redis (redis-cli): an error reply, and the connection stays usable.
    let out = redis_cli(gw.addr(), &["SET", "k", "v"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "ERR access denied"
    );
    let mut c = RawConn::connect(gw.addr());
    assert_eq!(c.command(&["PING"]), b"-ERR access denied\r\n");
    assert_eq!(c.command(&["PING"]), b"-ERR access denied\r\n");
    // Nothing reached the server.
    let mut direct = RawConn::connect(redis.addr());
    assert_eq!(direct.command(&["EXISTS", "k"]), b":0\r\n");
    // RTSP: 403 with the request's CSeq.
    let mut c = RawConn::connect(gw.addr());
    c.send(b"OPTIONS rtsp://cam.example/live RTSP/1.0\r\nCSeq: 7\r\n\r\n");
    assert_eq!(
        rtsp_head(&mut c),
        "RTSP/1.0 403 Forbidden\r\nCSeq: 7\r\n\r\n"
    );
    assert!(
        gw.metric(
            "switchyard_filter_verdicts_total",
            &[
                ("filter", "ip_access"),
                ("scope", "listener:edge"),
                ("verdict", "refuse")
            ]
        ) >= 6.0
    );

    // The same listener allowing loopback serves all of them.
    let allow = "    filters: [{ip_access: {allow: [127.0.0.1/32, \"::1\"]}}]";
    let gw = Gateway::start(&config(redis.addr(), web.addr(), allow, "[]", "[]"));
    assert_eq!(statuses(&[], &[gw.url("/hello")]), [200]);
    let mut c = RawConn::connect(gw.addr());
    assert_eq!(c.command(&["SET", "k", "v"]), b"+OK\r\n");
}

#[test]
fn a_rate_limit_holds_under_a_burst_per_client_and_per_command() {
    let redis = RedisServer::start();
    let web = HttpUpstream::start();
    // One token per 1000 s: a burst gets exactly its `burst`, whatever the timing.
    let gw = Gateway::start(&config(
        redis.addr(),
        web.addr(),
        "",
        "[{rate_limit: {rate: 0.001, burst: 5, key: command}}]",
        "[{rate_limit: {rate: 0.001, burst: 10, key: source_ip}}]",
    ));
    let urls: Vec<String> = (0..30).map(|_| gw.url("/hello")).collect();
    let got = statuses(&[], &urls);
    assert_eq!((count(&got, 200), count(&got, 429)), (10, 20), "{got:?}");
    let out = run_ok(curl().args(["-s", "-i"]).arg(gw.url("/hello")));
    let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(text.contains("retry-after: 1"), "{text}");
    assert!(text.ends_with("rate limited\n"), "{text}");

    // Redis, keyed by command: GETs share one bucket, PING has its own.
    let replies = pipelined_gets(gw.addr(), 12);
    let refused = replies
        .iter()
        .filter(|r| r.as_slice() == b"-ERR rate limited\r\n")
        .count();
    assert_eq!(refused, 7, "{replies:?}");
    assert!(
        replies[..5].iter().all(|r| r.as_slice() == b"$-1\r\n"),
        "the first five are served, in order: {replies:?}"
    );
    let mut c = RawConn::connect(gw.addr());
    for _ in 0..5 {
        assert_eq!(c.command(&["PING"]), b"+PONG\r\n");
    }
    assert_eq!(c.command(&["PING"]), b"-ERR rate limited\r\n");
}

/// `over_limit: close`: the refusal, then the connection ends (HTTP/1 says
/// `Connection: close`; Redis answers the error and closes).
#[test]
fn a_rate_limit_that_closes_answers_then_ends_the_connection() {
    let redis = RedisServer::start();
    let web = HttpUpstream::start();
    let gw = Gateway::start(&config(
        redis.addr(),
        web.addr(),
        "",
        "[{rate_limit: {rate: 0.001, burst: 2, over_limit: close}}]",
        "[{rate_limit: {rate: 0.001, burst: 1, over_limit: close}}]",
    ));
    let mut c = RawConn::connect(gw.addr());
    let get = b"GET /hello HTTP/1.1\r\nHost: a\r\n\r\n";
    c.send(get);
    let first = read_response(&mut c.reader, false).expect("a response");
    assert_eq!(first.status, 200, "{}", first.head);
    c.send(get);
    let second = read_response(&mut c.reader, false).expect("a response");
    assert_eq!(second.status, 429, "{}", second.head);
    assert!(
        second.head.to_lowercase().contains("connection: close"),
        "{}",
        second.head
    );
    let (rest, _) = c.read_until_closed();
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));

    let mut r = RawConn::connect(gw.addr());
    assert_eq!(r.command(&["PING"]), b"+PONG\r\n");
    assert_eq!(r.command(&["PING"]), b"+PONG\r\n");
    r.send(&resp(&["PING"]));
    let (rest, _) = r.read_until_closed();
    assert_eq!(rest, b"-ERR rate limited\r\n");
}

#[test]
fn a_concurrency_limit_refuses_past_its_requests_in_flight() {
    let redis = RedisServer::start();
    let web = HttpUpstream::start();
    let gw = Gateway::start(&config(
        redis.addr(),
        web.addr(),
        "",
        "[{concurrency_limit: {max: 1}}]",
        "[{concurrency_limit: {max: 2}}]",
    ));
    // HTTP: two slow requests hold both places (seen at the upstream) ...
    let slow = two_slow_requests(&gw, &web);
    // ... so three more are refused at once with 503.
    let urls: Vec<String> = (0..3).map(|_| gw.url("/hello")).collect();
    assert_eq!(statuses(&[], &urls), [503, 503, 503]);
    for t in slow {
        assert_eq!(t.join().unwrap(), [200]);
    }
    assert_eq!(statuses(&[], &[gw.url("/hello")]), [200], "places released");

    // Redis: a blocked BLPOP holds the only place.
    let (mut blocked, mut direct) = blocked_blpop(&gw, &redis);
    let mut other = RawConn::connect(gw.addr());
    assert_eq!(
        other.command(&["GET", "x"]),
        b"-ERR too many requests in flight\r\n"
    );
    release_blpop(&mut blocked, &mut direct);
    assert_eq!(
        other.command(&["GET", "x"]),
        b"$-1\r\n",
        "its reply released the place"
    );
}

#[test]
fn a_fault_aborts_and_delays_about_its_share_and_only_where_it_matches() {
    let redis = RedisServer::start();
    let web = HttpUpstream::start();
    let gw = Gateway::start(&config(
        redis.addr(),
        web.addr(),
        "",
        "[{fault: {abort: {percent: 50, status: 503, message: injected}}}]",
        "[{fault: {abort: {percent: 25, status: 502}, delay: {percent: 40, duration: 1ms}, match: {field: 'header:x-chaos', value: 'on'}}}]",
    ));
    // HTTP: only requests with `x-chaos: on` are subject to the fault.
    let urls: Vec<String> = (0..400).map(|_| gw.url("/hello")).collect();
    let chaos = statuses(&["-H", "x-chaos: on"], &urls);
    assert_eq!(count(&chaos, 200) + count(&chaos, 502), 400, "{chaos:?}");
    // Binomial(400, 0.25): mean 100, sd 8.7; ±40 is 4.6 sd.
    let aborted = count(&chaos, 502);
    assert!((60..=140).contains(&aborted), "{aborted} of 400 aborted");
    // Delays are counted, not timed: 40 % of the requests not aborted.
    let delayed = gw.metric(
        "switchyard_filter_verdicts_total",
        // The HTTP route's fault (the Redis route has one too, which never delays).
        &[
            ("filter", "fault"),
            ("scope", "route:route2"),
            ("verdict", "delay"),
        ],
    );
    let mean = 0.4 * (400 - aborted) as f64;
    assert!(
        (delayed - mean).abs() <= 50.0,
        "{delayed} delayed, expected about {mean}"
    );
    let calm = statuses(&[], &urls[..200]);
    assert_eq!(count(&calm, 200), 200, "no fault without the header");

    // Redis: half the commands answered with the configured error.
    let replies = pipelined_gets(gw.addr(), 400);
    let errors = replies
        .iter()
        .filter(|r| r.as_slice() == b"-ERR injected\r\n")
        .count();
    let served = replies
        .iter()
        .filter(|r| r.as_slice() == b"$-1\r\n")
        .count();
    assert_eq!(errors + served, 400, "{replies:?}");
    assert!((160..=240).contains(&errors), "{errors} of 400 aborted");
}

#[test]
fn a_payload_limit_refuses_big_bodies_and_commands() {
    let redis = RedisServer::start();
    let web = HttpUpstream::start();
    let gw = Gateway::start(&config(
        redis.addr(),
        web.addr(),
        "",
        "[{payload_limit: {max_bytes: 1000}}]",
        "[{payload_limit: {max_bytes: 1000}}]",
    ));
    let small = "x".repeat(500);
    let big = "x".repeat(5000);
    let post = |body: &str| {
        let out = run_ok(
            curl()
                .args(["-s", "-i", "--data-binary", body])
                .arg(gw.url("/echo")),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let ok = post(&small);
    assert!(
        ok.starts_with("HTTP/1.1 200") && ok.ends_with(&small),
        "{ok}"
    );
    let refused = post(&big);
    assert!(refused.starts_with("HTTP/1.1 413"), "{refused}");
    assert!(refused.ends_with("payload too large\n"), "{refused}");
    // HTTP/2 declares its length too.
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
            .args(["--data-binary", &big])
            .arg(gw.url("/echo")),
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "413");

    let mut c = RawConn::connect(gw.addr());
    assert_eq!(c.command(&["SET", "small", &small]), b"+OK\r\n");
    assert_eq!(
        c.command(&["SET", "big", &big]),
        b"-ERR payload too large\r\n"
    );
    assert_eq!(c.command(&["EXISTS", "big"]), b":0\r\n");
}

#[test]
fn a_config_with_a_bad_filter_names_the_field_and_the_fix() {
    let yaml = config(
        local(1),
        local(2),
        "    filters: [{ip_access: {deny: [10.0.0.0/33]}}]",
        "[{rate_limit: {rate: 0}}]",
        "[{fault: {abort: {percent: 150}}}]",
    );
    let err = switchyard::config::load_str(&yaml, "bad.yaml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("bad.yaml:") && err.contains("0..=32"), "{err}");
    let yaml = config(
        local(1),
        local(2),
        "",
        "[{rate_limit: {rate: 0}}]",
        "[{fault: {abort: {percent: 150}}}]",
    );
    let err = switchyard::config::load_str(&yaml, "bad.yaml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("filters[0].rate_limit.rate"), "{err}");
    assert!(err.contains("filters[0].fault.abort.percent"), "{err}");
    assert!(err.contains("use 0 to 100"), "{err}");
}

#[test]
fn a_cluster_circuit_breaker_counts_requests_from_every_route() {
    let redis = RedisServer::start();
    let web = HttpUpstream::start();
    let yaml = config(redis.addr(), web.addr(), "", "[]", "[]")
        .replace(
            &format!("{{name: web, hosts: [\"{}\"]}}", web.addr()),
            &format!("{{name: web, hosts: [\"{}\"], circuit_breakers: {{max_requests: 2}}}}", web.addr()),
        )
        .replace(
            &format!("{{name: redis, hosts: [\"{}\"]}}", redis.addr()),
            &format!("{{name: redis, hosts: [\"{}\"], circuit_breakers: {{max_requests: 1}}}}", redis.addr()),
        )
        .replace(
            "          - {cluster: web, filters: []}\n",
            "          - {match: {path_prefix: /slow}, cluster: web}\n          - {cluster: web, filters: []}\n",
        );
    assert_eq!(yaml.matches("circuit_breakers").count(), 2, "{yaml}");
    let gw = Gateway::start(&yaml);
    // Two slow requests on one route fill the cluster ...
    let slow = two_slow_requests(&gw, &web);
    // ... so the other route's requests overflow: 503 at once.
    let out = run_ok(curl().args(["-s", "-i"]).arg(gw.url("/hello")));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(
        text.ends_with("cluster web is at its max_requests circuit breaker\n"),
        "{text}"
    );
    for t in slow {
        assert_eq!(t.join().unwrap(), [200]);
    }
    assert_eq!(statuses(&[], &[gw.url("/hello")]), [200]);
    assert_eq!(
        gw.metric(
            "switchyard_upstream_overflow_total",
            &[("cluster", "web"), ("breaker", "max_requests")]
        ),
        1.0
    );

    // Redis: a blocked BLPOP is the one request in flight.
    let (mut blocked, mut direct) = blocked_blpop(&gw, &redis);
    let mut other = RawConn::connect(gw.addr());
    assert_eq!(
        other.command(&["GET", "x"]),
        b"-ERR cluster redis is at its max_requests circuit breaker\r\n"
    );
    release_blpop(&mut blocked, &mut direct);
    assert_eq!(other.command(&["GET", "x"]), b"$-1\r\n");
}
