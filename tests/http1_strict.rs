//! HTTP/1.1 strictness through the gateway (issue #10): what a strict
//! upstream receives when clients send heads our parser reads leniently
//! (bare LF, absolute-form targets, hop-by-hop fields, repeated
//! Content-Length, unnormalised paths), and what clients get back for heads a
//! server must refuse (no Host, broken chunk sizes, a head trickled byte by
//! byte).
//!
//! The upstream here is `StrictUpstream`: a server that splits lines on CRLF
//! only, as a strict origin does, and records every head and body it reads,
//! so a test can see exactly which requests reached it. Real peers (nginx,
//! curl) check the same rules where a real program shows them.
mod common;

use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::*;

/// One request as a strict (CRLF-only) upstream read it.
#[derive(Debug, Clone)]
struct Seen {
    head: String,
    body: Vec<u8>,
}

impl Seen {
    fn request_line(&self) -> &str {
        self.head.split("\r\n").next().unwrap_or_default()
    }
    /// Every value of the field `name` (case-insensitive).
    fn fields(&self, name: &str) -> Vec<String> {
        self.head
            .split("\r\n")
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
            .collect()
    }
}

/// A strict HTTP/1.1 origin: heads end at the first CRLF CRLF, fields are
/// split on CRLF only, a body is read only by a `Content-Length` it can see.
/// Every request is answered with `response`.
struct StrictUpstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl StrictUpstream {
    fn start(response: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let log = log.clone();
                thread::spawn(move || serve_strict(conn, &log, response));
            }
        });
        StrictUpstream { addr, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Wait until `n` requests were read, and return them.
    fn wait_seen(&self, n: usize) -> Vec<Seen> {
        wait_for(&format!("{n} requests at the upstream"), WAIT, || {
            let s = self.seen();
            (s.len() >= n).then_some(s)
        })
    }
}

fn serve_strict(conn: TcpStream, log: &Mutex<Vec<Seen>>, response: &str) {
    let mut rd = BufReader::new(conn.try_clone().expect("clone"));
    let mut wr = conn;
    loop {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8];
            if rd.read_exact(&mut byte).is_err() {
                return;
            }
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let length = head
            .split("\r\n")
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        if rd.read_exact(&mut body).is_err() {
            return;
        }
        log.lock().unwrap().push(Seen { head, body });
        if wr.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

const OK: &str = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

fn gateway_to(up: &StrictUpstream) -> Gateway {
    Template {
        http: vec![up.addr],
        ..Default::default()
    }
    .start()
}

/// Send raw bytes and read the first response.
fn send(gw: &Gateway, bytes: &[u8]) -> Response {
    let mut c = RawConn::connect(gw.addr());
    c.send(bytes);
    c.response()
}

#[test]
fn bare_lf_cannot_smuggle_a_request_past_a_strict_upstream() {
    let up = StrictUpstream::start(OK);
    let gw = gateway_to(&up);
    let smuggled = b"GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n";
    let mut req = format!(
        "POST /x HTTP/1.1\r\nHost: t\nContent-Length: {}\r\n\r\n",
        smuggled.len()
    )
    .into_bytes();
    req.extend_from_slice(smuggled);
    let r = send(&gw, &req);
    assert_eq!(r.status, 200, "{}", r.head);
    // A second request on a fresh connection lets the upstream log settle.
    assert_eq!(send(&gw, &get_request("/after")).status, 200);
    let seen = up.wait_seen(2);
    let paths: Vec<&str> = seen.iter().map(Seen::request_line).collect();
    assert!(
        !paths.iter().any(|l| l.contains("/smuggled")),
        "a request was smuggled to the upstream: {paths:?}"
    );
    let post = &seen[0];
    assert_eq!(post.request_line(), "POST /x HTTP/1.1");
    assert_eq!(post.fields("host"), ["t"], "{:?}", post.head);
    assert_eq!(
        post.body, smuggled,
        "the body reached the upstream as a body"
    );
    assert!(
        !post.head.replace("\r\n", "").contains('\n'),
        "bare LF forwarded: {:?}",
        post.head
    );
}

#[test]
fn absolute_form_target_routes_on_its_authority_and_sets_host() {
    let a = StrictUpstream::start(OK);
    let b = StrictUpstream::start(OK);
    let gw = Template {
        virtual_hosts: vec![
            "{name: a, domains: [a.example], routes: [{match: {path_prefix: /}, cluster: a}]}"
                .into(),
            "{name: b, domains: [b.example], routes: [{match: {path_prefix: /}, cluster: b}]}"
                .into(),
        ],
        clusters: vec![
            format!("{{name: a, hosts: [\"{}\"]}}", a.addr),
            format!("{{name: b, hosts: [\"{}\"]}}", b.addr),
        ],
        ..Default::default()
    }
    .start();
    let r = send(
        &gw,
        b"GET http://a.example/x?q=1 HTTP/1.1\r\nHost: b.example\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{}", r.head);
    let seen = a.wait_seen(1);
    assert_eq!(seen[0].request_line(), "GET /x?q=1 HTTP/1.1");
    assert_eq!(seen[0].fields("host"), ["a.example"]);
    assert!(
        b.seen().is_empty(),
        "the Host header's vhost got it: {:?}",
        b.seen()
    );

    // curl as a forward-proxy client sends absolute-form targets.
    // (`curl()` turns proxies off; this one must use the gateway as its proxy.)
    let out = run_ok(Command::new(require("curl")).args([
        "-sS",
        "--max-time",
        "30",
        "-x",
        &format!("http://{}", gw.addr()),
        "-H",
        "Host: b.example",
        "http://a.example/curl",
    ]));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok");
    let seen = a.wait_seen(2);
    assert_eq!(seen[1].request_line(), "GET /curl HTTP/1.1");
    assert_eq!(seen[1].fields("host"), ["a.example"]);
    assert!(b.seen().is_empty());
}

#[test]
fn hop_by_hop_fields_are_not_forwarded_either_way() {
    let up = StrictUpstream::start(
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive, X-Up-Hop\r\n\
         X-Up-Hop: 1\r\nKeep-Alive: timeout=5\r\nX-Up-Kept: 1\r\n\r\nok",
    );
    let gw = gateway_to(&up);
    let r = send(
        &gw,
        b"GET / HTTP/1.1\r\nHost: t\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\n\
          Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: gzip\r\nUpgrade: foo\r\n\
          X-Kept: yes\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{}", r.head);
    let seen = &up.wait_seen(1)[0];
    for hop in [
        "connection",
        "x-secret",
        "keep-alive",
        "proxy-connection",
        "te",
        "upgrade",
    ] {
        assert!(
            seen.fields(hop).is_empty(),
            "{hop} forwarded: {:?}",
            seen.head
        );
    }
    assert_eq!(seen.fields("x-kept"), ["yes"]);
    for hop in ["x-up-hop", "keep-alive"] {
        assert_eq!(r.header(hop), None, "{hop} reached the client: {}", r.head);
    }
    assert_eq!(r.header("x-up-kept"), Some("1"));

    // `TE: trailers` is end-to-end enough to keep (gRPC needs it).
    let r = send(&gw, b"GET /t HTTP/1.1\r\nHost: t\r\nTE: trailers\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(up.wait_seen(2)[1].fields("te"), ["trailers"]);
}

#[test]
fn repeated_content_length_is_forwarded_once() {
    let up = StrictUpstream::start(OK);
    let gw = gateway_to(&up);
    let r = send(
        &gw,
        b"POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: 5, 5\r\n\r\nhello",
    );
    assert_eq!(r.status, 200, "{}", r.head);
    let r = send(
        &gw,
        b"POST /b HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    );
    assert_eq!(r.status, 200, "{}", r.head);
    for seen in up.wait_seen(2) {
        assert_eq!(seen.fields("content-length"), ["5"], "{:?}", seen.head);
        assert_eq!(seen.body, b"hello");
    }
}

#[test]
fn http11_request_without_host_is_refused() {
    let up = StrictUpstream::start(OK);
    let gw = gateway_to(&up);
    let r = send(&gw, b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(r.status, 400, "{}", r.head);
    // HTTP/1.0 has no such rule.
    let r = send(&gw, b"GET /old HTTP/1.0\r\n\r\n");
    assert_eq!(r.status, 200, "{}", r.head);
    let seen = up.wait_seen(1);
    assert_eq!(seen.len(), 1, "only the HTTP/1.0 request went up: {seen:?}");
    assert_eq!(seen[0].request_line(), "GET /old HTTP/1.0");
}

#[test]
fn malformed_chunk_sizes_get_400_before_the_close() {
    let up = StrictUpstream::start(OK);
    let gw = gateway_to(&up);
    for size in ["0x10", "10zz", "-1", "fffffffffffffffffffff"] {
        let mut c = RawConn::connect(gw.addr());
        c.send(
            format!(
                "POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n{size}\r\nabc\r\n0\r\n\r\n"
            )
            .as_bytes(),
        );
        let r = c.response();
        assert_eq!(r.status, 400, "chunk size {size}: {}", r.head);
        let (_, closed) = c.read_until_closed();
        assert_eq!(
            closed,
            Closed::Eof,
            "chunk size {size}: the connection closes"
        );
    }
}

#[test]
fn http10_keep_alive_is_confirmed_to_the_client() {
    let up = StrictUpstream::start(OK);
    let gw = gateway_to(&up);
    let mut c = RawConn::connect(gw.addr());
    for path in ["/one", "/two"] {
        c.send(format!("GET {path} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").as_bytes());
        let r = c.response();
        assert_eq!(r.status, 200, "{}", r.head);
        assert_eq!(r.header("connection"), Some("keep-alive"), "{}", r.head);
    }
    assert_eq!(up.wait_seen(2).len(), 2);
}

/// Routes that guard `/admin` with a direct 403, everything else to `up`.
fn guarded(up: SocketAddr, listener: Vec<&str>) -> Gateway {
    Template {
        http: vec![up],
        listener,
        routes: vec![
            "{match: {path_prefix: /admin}, direct_response: {status: 403, body: forbidden}}"
                .into(),
        ],
        ..Default::default()
    }
    .start()
}

#[test]
fn encoded_and_dotted_paths_cannot_bypass_a_prefix_route() {
    let up = StrictUpstream::start(OK);
    let gw = guarded(up.addr, vec![]);
    for path in [
        "/admin",
        "/%61dmin",
        "//admin",
        "/./admin",
        "/x/../admin",
        "/%2e/admin/x",
    ] {
        let r = send(&gw, &get_request(path));
        assert_eq!(
            r.status, 403,
            "{path} got past the /admin route: {}",
            r.head
        );
    }
    // curl sends the path as it is with --path-as-is.
    let out = run_ok(curl().args([
        "-sS",
        "--path-as-is",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &gw.url("/x/../admin/panel"),
    ]));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "403");
    assert!(
        up.seen().is_empty(),
        "reached the upstream: {:?}",
        up.seen()
    );

    // Other paths go up normalised, the query kept.
    assert_eq!(
        send(&gw, &get_request("/a/./b/%7Euser//c?x=/../y")).status,
        200
    );
    assert_eq!(
        up.wait_seen(1)[0].request_line(),
        "GET /a/b/~user/c?x=/../y HTTP/1.1"
    );
    assert_eq!(send(&gw, &get_request("/bad%zz")).status, 400);
}

#[test]
fn path_normalisation_is_configurable() {
    let up = StrictUpstream::start(OK);
    let gw = guarded(
        up.addr,
        vec!["http1: {merge_slashes: false, forward_path: original}"],
    );
    // Dot segments still normalise; double slashes no longer merge.
    assert_eq!(send(&gw, &get_request("/x/../admin")).status, 403);
    assert_eq!(send(&gw, &get_request("//admin")).status, 200);
    assert_eq!(send(&gw, &get_request("/a/./b")).status, 200);
    let seen = up.wait_seen(2);
    assert_eq!(seen[0].request_line(), "GET //admin HTTP/1.1");
    assert_eq!(
        seen[1].request_line(),
        "GET /a/./b HTTP/1.1",
        "original path forwarded"
    );
}

#[test]
fn a_trickled_head_is_timed_out_with_408() {
    let up = StrictUpstream::start(OK);
    let gw = Template {
        http: vec![up.addr],
        listener: vec!["request_head_timeout: 1s", "idle_timeout: 60s"],
        ..Default::default()
    }
    .start();
    let mut c = RawConn::connect(gw.addr());
    // The request line at once (detection sees HTTP/1.1), then the fields one
    // byte every 300 ms: each read is quick, the head never completes in time.
    c.send(b"GET /slow HTTP/1.1\r\n");
    let head = b"Host: t\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut answered = None;
    for byte in head.iter() {
        if !c.send_lossy(&[*byte]) {
            break;
        }
        thread::sleep(Duration::from_millis(300));
        c.stream().set_nonblocking(true).unwrap();
        let mut peek = [0u8; 1];
        let got = c.stream().peek(&mut peek);
        c.stream().set_nonblocking(false).unwrap();
        if matches!(got, Ok(n) if n > 0) {
            answered = Some(());
            break;
        }
    }
    assert!(
        answered.is_some(),
        "the gateway waited for the whole trickled head"
    );
    let r = c.response();
    assert_eq!(r.status, 408, "{}", r.head);
    assert!(up.seen().is_empty());
    // Other clients are served meanwhile and after.
    assert_eq!(send(&gw, &get_request("/fast")).status, 200);
}

#[test]
fn listen_backlog_defaults_to_the_system_maximum_and_is_configurable() {
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .expect("somaxconn")
        .trim()
        .parse()
        .unwrap();
    for (fields, want) in [(vec![], somaxconn), (vec!["backlog: 77"], 77)] {
        let gw = Template {
            listener: fields,
            ..Default::default()
        }
        .start();
        // `ss -ltn`: for a listening socket, Send-Q is the backlog.
        let out = Command::new(require("ss"))
            .args(["-ltnH", &format!("sport = :{}", gw.addr().port())])
            .output()
            .expect("ss");
        let text = String::from_utf8_lossy(&out.stdout);
        let send_q: u32 = text
            .split_whitespace()
            .nth(2)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("ss output: {text:?}"));
        assert_eq!(send_q, want, "{text}");
    }
}

#[test]
fn gateway_answers_to_head_carry_no_body() {
    let up = StrictUpstream::start(OK);
    let gw = Template {
        http: vec![up.addr],
        no_http_default: true,
        routes: vec!["{match: {path_prefix: /up}, cluster: web}".into()],
        ..Default::default()
    }
    .start();
    let mut c = RawConn::connect(gw.addr());
    c.send(b"HEAD /nowhere HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.head_response();
    assert_eq!(r.status, 404, "{}", r.head);
    // Had the 404 carried its body, this response would start with it.
    c.send(&get_request("/up/x"));
    let r = c.response();
    assert_eq!((r.status, r.text().as_str()), (200, "ok"), "{}", r.head);
    // A HEAD with a broken chunked body: 400, and still no body.
    let mut c = RawConn::connect(gw.addr());
    c.send(b"HEAD /up/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n");
    let r = c.head_response();
    assert_eq!(r.status, 400, "{}", r.head);
    let (rest, _) = c.read_until_closed();
    assert!(rest.is_empty(), "a body after the 400 to HEAD: {rest:?}");
}
