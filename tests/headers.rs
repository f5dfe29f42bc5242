//! The `headers` filter and the HTTP route actions (`redirect`,
//! `prefix_rewrite`, `regex_rewrite`, `host_rewrite`, `cluster_header`),
//! through the gateway binary with curl (HTTP/1.1 and HTTP/2 with prior
//! knowledge) against real upstreams: the Python `http_upstream.py`
//! (`GET /headers` answers the request's header lines) and private nginx
//! instances that answer what a request looked like when it came
//! (`Nginx::start_echo`: path, host, a few headers).

mod common;

use std::net::SocketAddr;
use std::process::Command;

use common::*;

/// curl's output for one request: the response head and body.
struct Got {
    head: String,
    body: String,
}

impl Got {
    fn status(&self) -> u16 {
        self.head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    /// Values of response header `name`, case-insensitively.
    fn header(&self, name: &str) -> Vec<String> {
        self.head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
            .collect()
    }

    /// Lines of the body that start with `name:` (the upstream's echo of a
    /// request header), their values.
    fn echoed(&self, name: &str) -> Vec<String> {
        self.body
            .lines()
            .filter_map(|l| l.split_once(':'))
            .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
            .collect()
    }
}

/// `curl URL` with `args` (HTTP/2 with prior knowledge when `h2`).
fn get(url: &str, h2: bool, args: &[&str]) -> Got {
    let dir = tempfile::tempdir().unwrap();
    let head = dir.path().join("head");
    let mut c: Command = curl();
    c.arg("-D").arg(&head).args(args);
    if h2 {
        c.arg("--http2-prior-knowledge");
    }
    let out = run_ok(c.arg(url));
    Got {
        head: std::fs::read_to_string(&head).unwrap(),
        body: String::from_utf8_lossy(&out.stdout).into_owned(),
    }
}

fn headers_config(web: SocketAddr, echo_h2: SocketAddr) -> String {
    let ports = Ports::new();
    format!(
        r#"admin: {{address: "127.0.0.1:{admin}"}}
listeners:
  - name: edge
    address: "127.0.0.1:{listen}"
    protocols: [http1, http2]
    route_table: main
    filters:
      - headers:
          request:
            remove: [x-internal]
            set: {{x-env: prod}}
            add: {{x-tag: edge}}
            forwarded_for: true
            request_id: true
          response:
            set: {{x-served-by: switchyard}}
            remove: [server, x-upstream]
route_tables:
  - name: main
    virtual_hosts:
      - name: any
        domains: ["*"]
        routes:
          - match: {{path_prefix: /h2/}}
            cluster: echo_h2
            filters: [{{headers: {{request: {{set: {{x-route: h2}}, remove: [x-tag]}}}}}}]
          - cluster: web
clusters:
  - {{name: web, protocol: http1, hosts: ["{web}"]}}
  - {{name: echo_h2, protocol: http2, hosts: ["{echo_h2}"]}}
"#,
        admin = ports.admin,
        listen = ports.listen,
    )
}

/// What a client sends: headers the filter must remove, replace and extend.
const CLIENT_HEADERS: [&str; 8] = [
    "-H",
    "X-Internal: secret",
    "-H",
    "X-Env: dev",
    "-H",
    "X-Tag: a",
    "-H",
    "X-Forwarded-For: 10.9.9.9",
];

fn assert_request_edited(got: &Got, what: &str) {
    assert_eq!(got.status(), 200, "{what}: {}{}", got.head, got.body);
    assert!(
        got.echoed("x-internal").is_empty(),
        "{what}: removed: {}",
        got.body
    );
    assert_eq!(
        got.echoed("x-env"),
        ["prod"],
        "{what}: set replaces: {}",
        got.body
    );
    assert_eq!(
        got.echoed("x-tag"),
        ["a", "edge"],
        "{what}: add appends: {}",
        got.body
    );
    assert_eq!(
        got.echoed("x-forwarded-for"),
        ["10.9.9.9, 127.0.0.1"],
        "{what}: {}",
        got.body
    );
    let id = got.echoed("x-request-id");
    assert!(
        id.len() == 1 && id[0].len() == 36 && id[0].as_bytes()[14] == b'4',
        "{what}: a UUID v4 request id: {id:?}"
    );
    assert_eq!(
        got.echoed("content-length").len(),
        0,
        "{what}: {}",
        got.body
    );
    assert_eq!(
        got.echoed("host").len(),
        1,
        "{what}: one Host: {}",
        got.body
    );
}

fn assert_response_edited(got: &Got, what: &str) {
    assert!(
        got.header("server").is_empty(),
        "{what}: server removed: {}",
        got.head
    );
    assert_eq!(
        got.header("x-served-by"),
        ["switchyard"],
        "{what}: {}",
        got.head
    );
}

#[test]
fn headers_filter_edits_http1_and_http2_requests_and_responses() {
    let web = HttpUpstream::start();
    let echo_h2 = Nginx::start_echo("h2", true);
    let gw = Gateway::start(&headers_config(web.addr(), echo_h2.addr()));

    // HTTP/1.1 in, HTTP/1.1 out: the head is written anew.
    let got = get(&gw.url("/headers"), false, &CLIENT_HEADERS);
    assert_request_edited(&got, "HTTP/1.1");
    assert_response_edited(&got, "HTTP/1.1");
    // A client that sent a request id keeps it.
    let mut args = CLIENT_HEADERS.to_vec();
    args.extend(["-H", "X-Request-Id: mine"]);
    let got = get(&gw.url("/headers"), false, &args);
    assert_eq!(got.echoed("x-request-id"), ["mine"]);

    // HTTP/2 in, HTTP/1.1 out.
    let got = get(&gw.url("/headers"), true, &CLIENT_HEADERS);
    assert_request_edited(&got, "HTTP/2 to HTTP/1.1");
    assert_response_edited(&got, "HTTP/2 to HTTP/1.1");

    // HTTP/2 in, HTTP/2 out (HPACK), then the route's filter after the listener's.
    for h2 in [true, false] {
        let got = get(&gw.url("/h2/x"), h2, &CLIENT_HEADERS);
        assert_eq!(got.status(), 200, "{}{}", got.head, got.body);
        assert_eq!(got.echoed("x-env"), ["prod"], "{}", got.body);
        assert_eq!(got.echoed("x-internal"), ["-"], "{}", got.body);
        assert_eq!(
            got.echoed("x-tag"),
            ["-"],
            "the route's filter removed it: {}",
            got.body
        );
        assert_eq!(got.echoed("x-forwarded-for"), ["10.9.9.9, 127.0.0.1"]);
        assert_eq!(got.echoed("x-request-id")[0].len(), 36);
        assert_response_edited(
            &got,
            if h2 {
                "HTTP/2 to h2c"
            } else {
                "HTTP/1.1 to h2c"
            },
        );
        assert!(got.header("x-upstream").is_empty(), "{}", got.head);
    }
}

fn actions_config(a: SocketAddr, b: SocketAddr) -> String {
    let ports = Ports::new();
    format!(
        r#"admin: {{address: "127.0.0.1:{admin}"}}
listeners:
  - name: edge
    address: "127.0.0.1:{listen}"
    protocols: [http1, http2]
    route_table: main
route_tables:
  - name: main
    virtual_hosts:
      - name: any
        domains: ["*"]
        routes:
          - match: {{path_prefix: /old/}}
            redirect: {{prefix_rewrite: /new/}}
          - match: {{path_exact: /moved}}
            redirect: {{scheme: https, host: example.org, port: 8443, path: /there, status: 308, strip_query: true}}
          - match: {{path_prefix: /api/}}
            prefix_rewrite: /v2/
            cluster: a
          - match: {{path_prefix: /re/}}
            regex_rewrite: {{pattern: "^/re/([a-z]+)/([a-z]+)", substitution: "/$2/$1"}}
            cluster: a
          - match: {{path_prefix: /host}}
            host_rewrite: backend.internal:8080
            cluster: a
          - match: {{path_prefix: /pick}}
            cluster_header: x-cluster
clusters:
  - {{name: a, protocol: http1, hosts: ["{a}"]}}
  - {{name: b, protocol: http1, hosts: ["{b}"]}}
"#,
        admin = ports.admin,
        listen = ports.listen,
    )
}

#[test]
fn route_actions_redirect_rewrite_and_choose_clusters() {
    let a = Nginx::start_echo("a", false);
    let b = Nginx::start_echo("b", false);
    let gw = Gateway::start(&actions_config(a.addr(), b.addr()));
    let port = gw.addr().port();
    for h2 in [false, true] {
        let what = if h2 { "HTTP/2" } else { "HTTP/1.1" };
        let first = |g: &Got| g.body.lines().next().unwrap_or_default().to_owned();

        let got = get(&gw.url("/old/x?q=1"), h2, &[]);
        assert_eq!(got.status(), 301, "{what}: {}", got.head);
        assert_eq!(
            got.header("location"),
            [format!("http://127.0.0.1:{port}/new/x?q=1")],
            "{what}"
        );
        let got = get(&gw.url("/moved?q=1"), h2, &[]);
        assert_eq!(got.status(), 308, "{what}: {}", got.head);
        assert_eq!(
            got.header("location"),
            ["https://example.org:8443/there"],
            "{what}"
        );

        // The upstream sees the rewritten path (query kept); the client nothing.
        let got = get(&gw.url("/api/users?id=7"), h2, &[]);
        assert_eq!(
            first(&got),
            format!("a /v2/users?id=7 127.0.0.1:{port}"),
            "{what}"
        );
        let got = get(&gw.url("/re/one/two/rest"), h2, &[]);
        assert_eq!(
            first(&got),
            format!("a /two/one/rest 127.0.0.1:{port}"),
            "{what}"
        );
        let got = get(&gw.url("/host"), h2, &[]);
        assert_eq!(first(&got), "a /host backend.internal:8080", "{what}");

        // The cluster named by a header; missing or unknown: 503.
        let got = get(&gw.url("/pick"), h2, &["-H", "x-cluster: b"]);
        assert_eq!(first(&got), format!("b /pick 127.0.0.1:{port}"), "{what}");
        let got = get(&gw.url("/pick"), h2, &["-H", "x-cluster: a"]);
        assert_eq!(first(&got), format!("a /pick 127.0.0.1:{port}"), "{what}");
        for args in [&[][..], &["-H", "x-cluster: nope"][..]] {
            let got = get(&gw.url("/pick"), h2, args);
            assert_eq!(got.status(), 503, "{what}: {}", got.head);
            assert!(
                got.body.contains("cluster not found"),
                "{what}: {}",
                got.body
            );
        }
    }
}

#[test]
fn a_rewrite_applies_to_the_normalised_path_the_route_matched() {
    let a = Nginx::start_echo("a", false);
    let ports = Ports::new();
    let yaml = format!(
        r#"admin: {{address: "127.0.0.1:{admin}"}}
listeners:
  - name: edge
    address: "127.0.0.1:{listen}"
    protocols: [http1, http2]
    route_table: main
    http1: {{normalize_path: true, merge_slashes: true, forward_path: original}}
route_tables:
  - name: main
    virtual_hosts:
      - name: any
        domains: ["*"]
        routes:
          - {{match: {{path_prefix: /api/}}, prefix_rewrite: /v2/, cluster: a}}
clusters:
  - {{name: a, protocol: http1, hosts: ["{a}"]}}
"#,
        admin = ports.admin,
        listen = ports.listen,
        a = a.addr(),
    );
    let gw = Gateway::start(&yaml);
    for h2 in [false, true] {
        let got = get(&gw.url("//api/x/../y"), h2, &["--path-as-is"]);
        let first = got.body.lines().next().unwrap_or_default().to_owned();
        assert!(first.starts_with("a /v2/y "), "h2={h2}: {first}");
    }
}

/// Two listeners to one Dubbo server: `edited` with a `headers` filter on
/// its route, `plain` without.
fn rpc_config(server: SocketAddr) -> String {
    let ports = Ports::new();
    let plain = free_port();
    format!(
        r#"admin: {{address: "127.0.0.1:{admin}"}}
listeners:
  - {{name: edited, address: "127.0.0.1:{listen}", protocols: [dubbo, bolt], route_table: edited}}
  - {{name: plain, address: "127.0.0.1:{plain}", protocols: [dubbo, bolt], route_table: plain}}
route_tables:
  - name: edited
    virtual_hosts:
      - name: any
        domains: ["*"]
        routes:
          - cluster: rpc
            filters:
              - headers: {{request: {{set: {{x-env: prod, path: com.example.Calc}}, add: {{x-tag: edge}}, remove: [x-none]}}}}
  - name: plain
    virtual_hosts:
      - {{name: any, domains: ["*"], routes: [{{cluster: rpc}}]}}
clusters:
  - {{name: rpc, hosts: ["{server}"]}}
"#,
        admin = ports.admin,
        listen = ports.listen,
    )
}

#[test]
fn headers_filter_sets_dubbo_attachments_the_server_sees() {
    let server = RpcServer::start(RpcKind::Dubbo);
    let gw = Gateway::start(&rpc_config(server.addr()));
    let timeout = std::time::Duration::from_secs(10);
    let run = |addr: SocketAddr| {
        let run = rpc_client(
            addr,
            RpcKind::Dubbo,
            timeout,
            &[
                "1",
                "attachment",
                "x-env",
                "--then",
                "1",
                "attachment",
                "x-tag",
                "--then",
                "1",
                "attachment",
                "path",
                "--then",
                "2",
                "plus",
                "$i",
                "40",
            ],
        );
        run.steps
            .iter()
            .map(|s| {
                assert_eq!(s.errors, 0, "{}", s.error_text());
                s.values
                    .iter()
                    .map(|v| v.clone().unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect::<Vec<_>>()
    };
    // Through the filter: the attachments are edited, the call intact.
    assert_eq!(
        run(gw.listener("edited")),
        ["prod", "edge", "com.example.Calc", "40,41"]
    );
    // Without it, the server sees none of them.
    assert_eq!(
        run(gw.listener("plain")),
        ["-", "-", "com.example.Calc", "40,41"]
    );
}

/// An RTSP server that records each request it reads and answers `200 OK`
/// with its CSeq, a `Server` and an `X-Up` header. (GStreamer's RTSP server,
/// the real one the RTSP tests use, cannot show the headers it got.)
fn recording_rtsp_server() -> (SocketAddr, std::sync::mpsc::Receiver<String>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut rd = BufReader::new(conn.try_clone().unwrap());
                let mut wr = conn;
                loop {
                    let mut head = String::new();
                    loop {
                        let mut line = String::new();
                        if rd.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        head.push_str(&line);
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let cseq = head
                        .lines()
                        .find_map(|l| l.strip_prefix("CSeq: "))
                        .unwrap_or("0")
                        .to_owned();
                    let _ = tx.send(head);
                    let answer = format!(
                        "RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nServer: recorder\r\nX-Up: 1\r\n\
                         Public: OPTIONS, DESCRIBE\r\n\r\n"
                    );
                    if wr.write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, rx)
}

#[test]
fn headers_filter_edits_rtsp_requests_and_responses() {
    let (server, requests) = recording_rtsp_server();
    let ports = Ports::new();
    let yaml = format!(
        r#"admin: {{address: "127.0.0.1:{admin}"}}
listeners:
  - name: media
    address: "127.0.0.1:{listen}"
    protocols: [rtsp]
    route_table: main
route_tables:
  - name: main
    virtual_hosts:
      - name: any
        domains: ["*"]
        routes:
          - cluster: cams
            filters:
              - headers:
                  request: {{set: {{x-env: prod}}, remove: [user-agent], forwarded_for: true}}
                  response: {{remove: [server, x-up], set: {{x-served-by: switchyard}}}}
clusters:
  - {{name: cams, hosts: ["{server}"]}}
"#,
        admin = ports.admin,
        listen = ports.listen,
    );
    let gw = Gateway::start(&yaml);
    let out = run_ok(curl().args(["-i", "-X", "OPTIONS", &format!("rtsp://{}/cam", gw.addr())]));
    let head = requests
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("the server got the request");
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("\r\nx-env: prod\r\n"), "{head}");
    assert!(
        lower.contains("\r\nx-forwarded-for: 127.0.0.1\r\n"),
        "{head}"
    );
    assert!(!lower.contains("user-agent"), "{head}");
    assert!(lower.contains("\r\ncseq: "), "{head}");
    let answer = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(answer.starts_with("rtsp/1.0 200"), "{answer}");
    assert!(answer.contains("x-served-by: switchyard"), "{answer}");
    assert!(
        !answer.contains("server: recorder") && !answer.contains("x-up"),
        "{answer}"
    );
}
