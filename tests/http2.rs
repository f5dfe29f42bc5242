//! HTTP/2 (h2c and TLS+ALPN) and gRPC through the gateway binary.
//!
//! Upstreams: nginx (`listen ... http2`, h2c) and nginx HTTP/1.1, a Python
//! grpcio server (`tests/peers/grpc_peer.py`), and a small server on the `h2`
//! crate written here where a test needs what nginx cannot do (echo a body,
//! send trailers, reset a stream, GOAWAY). Clients: curl, nghttp and h2load
//! (Debian's nghttp2-client), grpcio, and the `h2` crate.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::grpc_peer::{GrpcServer, grpc_python, grpc_script};
use common::*;
use h2::{Reason, RecvStream};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};

// ---------------------------------------------------------------------------
// Config

/// A gateway with listener `edge` (http1, http2, redis on one port) and one
/// `*` virtual host holding `routes` (flow mappings, in order), plus
/// `clusters` (flow mappings) and extra listener fields.
fn gateway(routes: &[String], clusters: &[String], listener_extra: &[&str]) -> Gateway {
    gateway_with(&[], routes, clusters, listener_extra)
}

/// [`gateway`] with top-level config lines.
fn gateway_with(
    top: &[&str],
    routes: &[String],
    clusters: &[String],
    listener_extra: &[&str],
) -> Gateway {
    let ports = Ports::new();
    let mut y = top.iter().map(|t| format!("{t}\n")).collect::<String>();
    y += &format!(
        "admin:\n  address: 127.0.0.1:{}\nlisteners:\n  - name: edge\n    address: 127.0.0.1:{}\n    protocols: [http1, http2, redis]\n    route_table: main\n",
        ports.admin, ports.listen
    );
    for l in listener_extra {
        y += &format!("    {l}\n");
    }
    y += "route_tables:\n  - name: main\n    virtual_hosts:\n      - name: any\n        domains: [\"*\"]\n        routes:\n";
    for r in routes {
        y += &format!("          - {r}\n");
    }
    if !clusters.is_empty() {
        y += "clusters:\n";
        for c in clusters {
            y += &format!("  - {c}\n");
        }
    }
    Gateway::start(&y)
}

fn cluster(name: &str, addr: SocketAddr, extra: &str) -> String {
    format!("{{name: {name}, hosts: [\"{addr}\"]{extra}}}")
}

/// Static files both nginx instances serve.
fn files() -> Vec<(String, Vec<u8>)> {
    let mut f = vec![
        ("hello.txt".to_owned(), b"hello over h2\n".to_vec()),
        ("big.bin".to_owned(), pattern(3 << 20)),
        (
            "via-h1/f/42.txt".to_owned(),
            b"served over HTTP/1.1\n".to_vec(),
        ),
        ("h1/hello.txt".to_owned(), b"hello\n".to_vec()),
        ("goaway/hello.txt".to_owned(), b"hello\n".to_vec()),
    ];
    for i in 0..100 {
        f.push((
            format!("f/{i}.txt"),
            format!("file {i}\n").repeat(i + 1).into_bytes(),
        ));
    }
    f
}

fn nginx_h2c(keepalive_requests: u32) -> Nginx {
    let f = files();
    let refs: Vec<(&str, &[u8])> = f.iter().map(|(n, c)| (n.as_str(), c.as_slice())).collect();
    Nginx::start_h2c(&refs, keepalive_requests)
}

fn nginx_h1() -> Nginx {
    let f = files();
    let refs: Vec<(&str, &[u8])> = f.iter().map(|(n, c)| (n.as_str(), c.as_slice())).collect();
    Nginx::start(&refs)
}

// ---------------------------------------------------------------------------
// Command-line clients

/// Run a blocking command off the async runtime.
async fn run(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || run_ok(cmd.stdin(Stdio::null())))
        .await
        .expect("command task")
}

/// `curl --http2-prior-knowledge -i URL` (status line and headers without
/// `Date`, then the body).
async fn curl_h2c(url: &str) -> String {
    let mut c = curl();
    c.args(["--http2-prior-knowledge", "-i", url]);
    let out = run(c).await;
    String::from_utf8_lossy(&out.stdout)
        .split_inclusive('\n')
        .filter(|l| !l.to_ascii_lowercase().starts_with("date:"))
        .collect()
}

/// `curl` the body of `url` with extra args.
async fn curl_body(args: &[&str], url: &str) -> Vec<u8> {
    let mut c = curl();
    c.args(args).arg(url);
    run(c).await.stdout
}

/// The `requests:` and `status codes:` lines of an h2load run.
fn h2load_summary(out: &Output) -> (String, String) {
    let text = String::from_utf8_lossy(&out.stdout);
    let line = |prefix: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} line in h2load output:\n{text}"))
            .to_owned()
    };
    (line("requests:"), line("status codes:"))
}

async fn h2load(args: &[&str], url: &str) -> (String, String) {
    let mut c = Command::new(require("h2load"));
    c.args(args).arg(url);
    h2load_summary(&run(c).await)
}

// ---------------------------------------------------------------------------
// An HTTP/2 client on the h2 crate

type Sender = h2::client::SendRequest<Bytes>;

async fn h2_client(addr: SocketAddr) -> Sender {
    h2_client_conn(addr).await.0
}

/// A client and its connection's task (which ends when the connection closes).
async fn h2_client_conn(addr: SocketAddr) -> (Sender, tokio::task::JoinHandle<()>) {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let (send, conn) = h2::client::Builder::new()
        .initial_window_size(1 << 20)
        .initial_connection_window_size(4 << 20)
        .handshake(tcp)
        .await
        .expect("HTTP/2 handshake with the gateway");
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    (send, task)
}

/// A complete response: status, headers, body, trailers.
#[derive(Debug)]
struct Full {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
    trailers: Option<HeaderMap>,
}

async fn read_body(mut body: RecvStream) -> Result<(Vec<u8>, Option<HeaderMap>), h2::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        out.extend_from_slice(&chunk);
    }
    let trailers = body.trailers().await?;
    Ok((out, trailers))
}

async fn finish(resp: Response<RecvStream>) -> Result<Full, h2::Error> {
    let (head, body) = resp.into_parts();
    let (body, trailers) = read_body(body).await?;
    Ok(Full {
        status: head.status,
        headers: head.headers,
        body,
        trailers,
    })
}

fn request(method: &str, path: &str, headers: &[(&str, &str)]) -> Request<()> {
    let mut b = Request::builder()
        .method(method)
        .uri(format!("http://test.local{path}"));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap()
}

async fn get(send: &Sender, path: &str) -> Full {
    let mut s = send.clone().ready().await.expect("stream slot");
    let (resp, _) = s
        .send_request(request("GET", path, &[]), true)
        .expect("send request");
    finish(resp.await.unwrap_or_else(|e| panic!("GET {path}: {e}")))
        .await
        .unwrap_or_else(|e| panic!("GET {path} body: {e}"))
}

/// A request with a body (sent whole) and optional trailers.
async fn send_with_body(
    send: &Sender,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
    trailers: Option<HeaderMap>,
) -> Result<Full, h2::Error> {
    let mut s = send.clone().ready().await?;
    let (resp, mut stream) = s.send_request(request("POST", path, headers), false)?;
    stream.send_data(body, trailers.is_none())?;
    if let Some(t) = trailers {
        stream.send_trailers(t)?;
    }
    finish(resp.await?).await
}

/// A gRPC length-prefixed message.
fn grpc_frame(msg: &[u8]) -> Bytes {
    let mut b = vec![0u8];
    b.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    b.extend_from_slice(msg);
    Bytes::from(b)
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

// ---------------------------------------------------------------------------
// A test upstream on the h2 crate

/// What the test server saw.
#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    streams: AtomicUsize,
    /// Reset reasons of streams the client (the gateway) reset.
    resets: Mutex<Vec<Reason>>,
    /// Body bytes `/firehose` has handed to h2 (within the window it was given).
    sent: AtomicUsize,
}

/// An h2c server on a free port. Paths:
/// `/echo` streams the request body back as it arrives, then trailers
/// `x-echo-bytes` and the request's own trailers; `/trailers` answers "abc"
/// with trailers; `/reset-after-data` sends a head and some data, then
/// RST_STREAM(ENHANCE_YOUR_CALM); `/reset-before-head` resets at once;
/// `/hold` sends a head and waits for the client's reset; `/firehose` sends
/// 16 MiB as fast as flow control lets it; `.../slow/MS`
/// answers after MS milliseconds. With `goaway_after`, each connection is shut down
/// gracefully (GOAWAY) after that many streams.
struct TestH2 {
    addr: SocketAddr,
    seen: Arc<Seen>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestH2 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestH2 {
    async fn start(goaway_after: Option<usize>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let s = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                s.connections.fetch_add(1, Ordering::SeqCst);
                let s = s.clone();
                tokio::spawn(async move {
                    let Ok(mut conn) = h2::server::Builder::new()
                        .initial_window_size(1 << 20)
                        .handshake::<_, Bytes>(tcp)
                        .await
                    else {
                        return;
                    };
                    let mut n = 0;
                    while let Some(Ok((req, respond))) = conn.accept().await {
                        s.streams.fetch_add(1, Ordering::SeqCst);
                        tokio::spawn(handle(req, respond, s.clone()));
                        n += 1;
                        if goaway_after == Some(n) {
                            conn.graceful_shutdown();
                        }
                    }
                });
            }
        });
        TestH2 { addr, seen, task }
    }
}

async fn handle(
    req: Request<RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    seen: Arc<Seen>,
) {
    let path = req.uri().path().to_owned();
    let ok = || Response::builder().status(200).body(()).unwrap();
    match path.as_str() {
        "/echo" => {
            let mut body = req.into_body();
            let Ok(mut out) = respond.send_response(ok(), false) else {
                return;
            };
            let mut total = 0usize;
            while let Some(Ok(chunk)) = body.data().await {
                total += chunk.len();
                let n = chunk.len();
                if out.send_data(chunk, false).is_err() {
                    return;
                }
                let _ = body.flow_control().release_capacity(n);
            }
            let mut trailers = body.trailers().await.ok().flatten().unwrap_or_default();
            trailers.insert("x-echo-bytes", HeaderValue::from(total));
            let _ = out.send_trailers(trailers);
        }
        "/trailers" => {
            let Ok(mut out) = respond.send_response(ok(), false) else {
                return;
            };
            let _ = out.send_data(Bytes::from_static(b"abc"), false);
            let mut t = HeaderMap::new();
            t.insert("grpc-status", HeaderValue::from_static("0"));
            t.insert("x-trailer", HeaderValue::from_static("yes"));
            let _ = out.send_trailers(t);
        }
        "/reset-after-data" => {
            let Ok(mut out) = respond.send_response(ok(), false) else {
                return;
            };
            let _ = out.send_data(Bytes::from_static(b"partial"), false);
            tokio::time::sleep(Duration::from_millis(50)).await;
            out.send_reset(Reason::ENHANCE_YOUR_CALM);
        }
        "/reset-before-head" => respond.send_reset(Reason::ENHANCE_YOUR_CALM),
        "/firehose" => {
            // 16 MiB, each chunk only once the peer's window allows it.
            let Ok(mut out) = respond.send_response(ok(), false) else {
                return;
            };
            let chunk = Bytes::from(vec![7u8; 16 * 1024]);
            for i in 0..1024 {
                out.reserve_capacity(chunk.len());
                let mut cap = 0;
                while cap < chunk.len() {
                    match std::future::poll_fn(|cx| out.poll_capacity(cx)).await {
                        Some(Ok(n)) => cap = n,
                        _ => return,
                    }
                }
                if out.send_data(chunk.clone(), i == 1023).is_err() {
                    return;
                }
                seen.sent.fetch_add(chunk.len(), Ordering::SeqCst);
            }
        }
        "/hold" => {
            let Ok(mut out) = respond.send_response(ok(), false) else {
                return;
            };
            let _ = out.send_data(Bytes::from_static(b"held"), false);
            if let Ok(reason) = std::future::poll_fn(|cx| out.poll_reset(cx)).await {
                seen.resets.lock().unwrap().push(reason);
            }
        }
        p if p.contains("/slow/") => {
            let ms: u64 = p
                .rsplit_once("/slow/")
                .map_or(0, |(_, ms)| ms.parse().unwrap_or(0));
            tokio::time::sleep(Duration::from_millis(ms)).await;
            if let Ok(mut out) = respond.send_response(ok(), false) {
                let _ = out.send_data(Bytes::from_static(b"slow"), true);
            }
        }
        _ => {
            let resp = Response::builder().status(404).body(()).unwrap();
            let _ = respond.send_response(resp, true);
        }
    }
}

// ---------------------------------------------------------------------------
// Python grpcio peer

/// One grpcio call: the JSON line `grpc_peer.py call` prints.
async fn grpc_call(target: SocketAddr, method: &str, arg: &str, timeout: Option<f64>) -> String {
    let mut c = Command::new(grpc_python());
    c.arg(grpc_script())
        .args(["call", &target.to_string(), method, arg]);
    if let Some(t) = timeout {
        c.arg(t.to_string());
    }
    let out = run(c).await;
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

// ---------------------------------------------------------------------------
// Tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_and_nghttp_through_gateway_equal_direct_nginx() {
    let h2 = nginx_h2c(1_000_000);
    let h1 = nginx_h1();
    let gw = gateway(
        &[
            "{match: {path_prefix: /via-h1/}, cluster: web1}".into(),
            "{match: {path_exact: /direct}, direct_response: {status: 201, body: made here}}"
                .into(),
            "{cluster: web2}".into(),
        ],
        &[
            cluster("web2", h2.addr(), ", protocol: http2"),
            cluster("web1", h1.addr(), ", protocol: http1"),
        ],
        &[],
    );
    for path in ["/hello.txt", "/f/7.txt", "/missing"] {
        let direct = curl_h2c(&format!("http://{}{path}", h2.addr())).await;
        let via = curl_h2c(&gw.url(path)).await;
        assert_eq!(via, direct, "curl --http2-prior-knowledge -i {path}");
    }
    let big = curl_body(&["--http2-prior-knowledge"], &gw.url("/big.bin")).await;
    assert_same_bytes(&big, &pattern(3 << 20), "3 MB file over h2c");

    // HTTP/2 in, HTTP/1.1 out: what nginx serves over HTTP/1.1.
    for path in ["/via-h1/f/42.txt", "/via-h1/missing"] {
        let direct = curl_body(
            &["-w", "|%{http_code}"],
            &format!("http://{}{path}", h1.addr()),
        )
        .await;
        let via = curl_body(
            &["--http2-prior-knowledge", "-w", "|%{http_code}"],
            &gw.url(path),
        )
        .await;
        assert_eq!(
            String::from_utf8_lossy(&via),
            String::from_utf8_lossy(&direct),
            "{path}"
        );
    }

    let direct = curl_h2c(&gw.url("/direct")).await;
    assert!(direct.starts_with("HTTP/2 201"), "{direct}");
    assert!(direct.ends_with("\r\n\r\nmade here"), "{direct}");

    // nghttp (nghttp2's own client) gets the same body as from nginx directly.
    let mut c = Command::new(require("nghttp"));
    c.arg(format!("http://{}/f/99.txt", h2.addr()));
    let direct = run(c).await.stdout;
    let mut c = Command::new(require("nghttp"));
    c.arg(gw.url("/f/99.txt"));
    let via = run(c).await.stdout;
    assert_eq!(via, direct);
    assert_eq!(via, "file 99\n".repeat(100).into_bytes());
    // Several streams at once on one connection (-m), with verbose frames.
    let mut c = Command::new(require("nghttp"));
    c.args(["-nv", "-m", "20"]).arg(gw.url("/hello.txt"));
    let out = String::from_utf8_lossy(&run(c).await.stdout).into_owned();
    assert_eq!(out.matches(":status: 200").count(), 20, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2load_through_gateway_completes_without_errors() {
    let h2 = nginx_h2c(1_000_000);
    let h1 = nginx_h1();
    // nginx sends GOAWAY after every 100 streams on this one.
    let goaway = nginx_h2c(100);
    let gw = gateway(
        &[
            "{match: {path_prefix: /h1/}, cluster: web1}".into(),
            "{match: {path_prefix: /goaway/}, cluster: goaway}".into(),
            "{cluster: web2}".into(),
        ],
        &[
            cluster("web2", h2.addr(), ", protocol: http2"),
            cluster("web1", h1.addr(), ", protocol: http1"),
            cluster("goaway", goaway.addr(), ""),
        ],
        &[],
    );
    let (requests, codes) = h2load(
        &["-n", "2000", "-c", "4", "-m", "16"],
        &gw.url("/hello.txt"),
    )
    .await;
    assert_eq!(
        requests,
        "requests: 2000 total, 2000 started, 2000 done, 2000 succeeded, 0 failed, 0 errored, 0 timeout"
    );
    assert_eq!(codes, "status codes: 2000 2xx, 0 3xx, 0 4xx, 0 5xx");
    // The upstream side used few connections: one shared per host.
    let upstream_conns = gw.metric(
        "switchyard_upstream_connections_total",
        &[("cluster", "web2")],
    );
    assert!(
        (1.0..=2.0).contains(&upstream_conns),
        "h2 upstream connections: {upstream_conns}"
    );
    assert!(
        gw.metric(
            "switchyard_requests_total",
            &[("listener", "edge"), ("protocol", "http2")]
        ) >= 2000.0
    );
    assert_eq!(
        gw.metric(
            "switchyard_request_errors_total",
            &[("listener", "edge"), ("protocol", "http2")]
        ),
        0.0
    );

    // Translated to HTTP/1.1, on pooled connections.
    let (requests, codes) = h2load(
        &["-n", "1000", "-c", "4", "-m", "8"],
        &gw.url("/h1/hello.txt"),
    )
    .await;
    assert!(
        requests.contains("1000 succeeded, 0 failed, 0 errored"),
        "{requests}"
    );
    assert_eq!(codes, "status codes: 1000 2xx, 0 3xx, 0 4xx, 0 5xx");
    let h1_conns = gw.metric(
        "switchyard_upstream_connections_total",
        &[("cluster", "web1")],
    );
    assert!(
        h1_conns <= 40.0,
        "1000 requests, 32 at a time, took {h1_conns} HTTP/1 connections (pool not reused?)"
    );

    // An upstream that sends GOAWAY every 100 streams: new streams go to a
    // new connection, no request fails.
    let (requests, codes) = h2load(
        &["-n", "2000", "-c", "4", "-m", "16"],
        &gw.url("/goaway/hello.txt"),
    )
    .await;
    assert!(
        requests.contains("2000 succeeded, 0 failed, 0 errored"),
        "{requests}"
    );
    assert_eq!(codes, "status codes: 2000 2xx, 0 3xx, 0 4xx, 0 5xx");
    let reconnects = gw.metric(
        "switchyard_upstream_connections_total",
        &[("cluster", "goaway")],
    );
    assert!(
        reconnects >= 20.0,
        "2000 streams at 100 per connection took {reconnects} connections"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_streams_on_one_client_connection() {
    let h2 = nginx_h2c(1_000_000);
    let gw = gateway(
        &["{cluster: web}".into()],
        &[cluster("web", h2.addr(), "")],
        &[],
    );
    let send = h2_client(gw.addr()).await;
    let mut tasks = Vec::new();
    for i in 0..100 {
        let send = send.clone();
        tasks.push(tokio::spawn(async move {
            let r = get(&send, &format!("/f/{i}.txt")).await;
            (i, r)
        }));
    }
    for t in tasks {
        let (i, r) = t.await.unwrap();
        assert_eq!(r.status, 200, "/f/{i}.txt");
        assert_eq!(
            r.body,
            format!("file {i}\n").repeat(i + 1).into_bytes(),
            "/f/{i}.txt"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_megabyte_post_streams_both_ways() {
    let up = TestH2::start(None).await;
    let gw = gateway(
        &["{cluster: echo}".into()],
        &[cluster("echo", up.addr, "")],
        &[],
    );
    let send = h2_client(gw.addr()).await;
    let body = pattern(5 << 20);
    let mut s = send.clone().ready().await.unwrap();
    let (resp, mut stream) = s
        .send_request(request("POST", "/echo", &[]), false)
        .unwrap();
    // First chunk, then wait for its echo before sending the rest: the
    // gateway must pass bytes on as they come, not hold the body.
    let first = Bytes::copy_from_slice(&body[..64 * 1024]);
    stream.send_data(first, false).unwrap();
    let resp = tokio::time::timeout(WAIT, resp)
        .await
        .expect("response head")
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut echoed = resp.into_body();
    let mut got = Vec::new();
    while got.len() < 64 * 1024 {
        let chunk = tokio::time::timeout(WAIT, echoed.data())
            .await
            .expect("the first chunk's echo before the rest of the body is sent")
            .expect("more data")
            .unwrap();
        let _ = echoed.flow_control().release_capacity(chunk.len());
        got.extend_from_slice(&chunk);
    }
    // The rest, within the gateway's flow-control window, while reading.
    let rest = body[64 * 1024..].to_vec();
    let sender = tokio::spawn(async move {
        for chunk in rest.chunks(100_000) {
            stream.reserve_capacity(chunk.len());
            let mut sent = 0;
            while sent < chunk.len() {
                let cap = std::future::poll_fn(|cx| stream.poll_capacity(cx))
                    .await
                    .expect("capacity")
                    .unwrap();
                let n = cap.min(chunk.len() - sent);
                stream
                    .send_data(Bytes::copy_from_slice(&chunk[sent..sent + n]), false)
                    .unwrap();
                sent += n;
            }
        }
        let mut t = HeaderMap::new();
        t.insert("x-client-trailer", HeaderValue::from_static("done"));
        stream.send_trailers(t).unwrap();
    });
    let (rest, trailers) = tokio::time::timeout(Duration::from_secs(60), read_body(echoed))
        .await
        .expect("echo within 60 s")
        .unwrap();
    sender.await.unwrap();
    got.extend_from_slice(&rest);
    assert_same_bytes(&got, &body, "5 MB echoed through the gateway");
    let trailers = trailers.expect("trailers");
    assert_eq!(header(&trailers, "x-echo-bytes"), Some("5242880"));
    assert_eq!(
        header(&trailers, "x-client-trailer"),
        Some("done"),
        "request trailers reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailers_pass_through_both_ways() {
    let up = TestH2::start(None).await;
    let gw = gateway(&["{cluster: t}".into()], &[cluster("t", up.addr, "")], &[]);
    let send = h2_client(gw.addr()).await;
    let r = get(&send, "/trailers").await;
    assert_eq!(r.body, b"abc");
    let t = r.trailers.expect("response trailers");
    assert_eq!(header(&t, "grpc-status"), Some("0"));
    assert_eq!(header(&t, "x-trailer"), Some("yes"));

    let mut req_trailers = HeaderMap::new();
    req_trailers.insert("x-checksum", HeaderValue::from_static("c0ffee"));
    let r = send_with_body(
        &send,
        "/echo",
        &[],
        Bytes::from_static(b"payload"),
        Some(req_trailers),
    )
    .await
    .unwrap();
    assert_eq!(r.body, b"payload");
    let t = r.trailers.expect("echo trailers");
    assert_eq!(header(&t, "x-checksum"), Some("c0ffee"));
    assert_eq!(header(&t, "x-echo-bytes"), Some("7"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_resets_propagate_both_ways() {
    let up = TestH2::start(None).await;
    let gw = gateway(&["{cluster: t}".into()], &[cluster("t", up.addr, "")], &[]);
    let send = h2_client(gw.addr()).await;

    // Upstream resets after some data: the client's stream is reset with the same code.
    let mut s = send.clone().ready().await.unwrap();
    let (resp, _) = s
        .send_request(request("GET", "/reset-after-data", &[]), true)
        .unwrap();
    // (On a busy machine the reset may overtake the head inside the gateway:
    // then the client's stream is reset before its head, still with that code.)
    let err = match resp.await {
        Ok(resp) => {
            assert_eq!(resp.status(), 200);
            read_body(resp.into_body())
                .await
                .expect_err("a reset stream")
        }
        Err(e) => e,
    };
    assert_eq!(err.reason(), Some(Reason::ENHANCE_YOUR_CALM), "{err}");

    // Upstream resets before answering: the client sees that reset.
    let mut s = send.clone().ready().await.unwrap();
    let (resp, _) = s
        .send_request(request("GET", "/reset-before-head", &[]), true)
        .unwrap();
    let err = resp.await.expect_err("a reset stream");
    assert_eq!(err.reason(), Some(Reason::ENHANCE_YOUR_CALM), "{err}");

    // The client resets: the upstream stream is reset too.
    let mut s = send.clone().ready().await.unwrap();
    let (resp, mut req_stream) = s.send_request(request("GET", "/hold", &[]), true).unwrap();
    let resp = resp.await.unwrap();
    let mut body = resp.into_body();
    assert_eq!(body.data().await.unwrap().unwrap(), &b"held"[..]);
    req_stream.send_reset(Reason::CANCEL);
    wait_for("the upstream to see the reset", WAIT, || {
        let r = up.seen.resets.lock().unwrap();
        (!r.is_empty()).then(|| r.clone())
    });
    assert_eq!(*up.seen.resets.lock().unwrap(), vec![Reason::CANCEL]);

    // The connection is still good afterwards.
    assert_eq!(get(&send, "/trailers").await.body, b"abc");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_goaway_moves_new_requests_to_a_new_connection() {
    let up = TestH2::start(Some(5)).await;
    let gw = gateway(&["{cluster: t}".into()], &[cluster("t", up.addr, "")], &[]);
    let send = h2_client(gw.addr()).await;
    for i in 0..40 {
        let r = get(&send, "/trailers").await;
        assert_eq!(r.status, 200, "request {i}");
        assert_eq!(r.body, b"abc", "request {i}");
    }
    let conns = up.seen.connections.load(Ordering::SeqCst);
    assert!(
        (8..=12).contains(&conns),
        "40 streams at 5 per connection took {conns} connections"
    );
    assert_eq!(up.seen.streams.load(Ordering::SeqCst), 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_made_errors_and_timeouts() {
    let up = TestH2::start(None).await;
    let dead = free_port();
    let gw = gateway(
        &[
            "{match: {path_prefix: /dead}, cluster: dead}".into(),
            "{match: {path_prefix: /slow/}, cluster: t, timeout: 300ms}".into(),
            "{match: {path_prefix: /known}, cluster: t}".into(),
        ],
        &[
            cluster("t", up.addr, ""),
            format!("{{name: dead, hosts: [\"127.0.0.1:{dead}\"]}}"),
        ],
        &[],
    );
    let send = h2_client(gw.addr()).await;
    let r = get(&send, "/nothing-routes-here").await;
    assert_eq!(
        (r.status.as_u16(), r.body.as_slice()),
        (404, &b"no route"[..])
    );
    let r = get(&send, "/dead").await;
    assert_eq!(r.status, 502);
    assert_eq!(r.body, b"upstream connect error (cluster dead)");
    let started = Instant::now();
    let r = get(&send, "/slow/3000").await;
    assert_eq!(r.status, 504);
    assert_eq!(r.body, b"upstream request timeout (cluster t)");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let r = get(&send, "/slow/10").await;
    assert_eq!((r.status.as_u16(), r.body.as_slice()), (200, &b"slow"[..]));

    // gRPC requests get trailers-only answers with grpc-status.
    let grpc = [("content-type", "application/grpc"), ("te", "trailers")];
    let call = |path: &'static str, extra: Vec<(&'static str, &'static str)>| {
        let send = send.clone();
        let mut headers = grpc.to_vec();
        headers.extend(extra);
        async move {
            send_with_body(&send, path, &headers, grpc_frame(b"x"), None)
                .await
                .unwrap()
        }
    };
    let r = call("/dead.Svc/Call", vec![]).await;
    assert_eq!(r.status, 200);
    assert_eq!(header(&r.headers, "grpc-status"), Some("14"));
    assert_eq!(
        header(&r.headers, "grpc-message"),
        Some("upstream connect error (cluster dead)")
    );
    assert!(
        r.body.is_empty() && r.trailers.is_none(),
        "trailers-only: {r:?}"
    );
    let r = call("/no.Such/Method", vec![]).await;
    assert_eq!(header(&r.headers, "grpc-status"), Some("12"));
    // grpc-timeout shorter than the route's timeout wins.
    let started = Instant::now();
    let r = call("/known/slow/3000", vec![("grpc-timeout", "100m")]).await;
    let took = started.elapsed();
    assert_eq!(header(&r.headers, "grpc-status"), Some("4"), "{r:?}");
    assert_eq!(
        header(&r.headers, "grpc-message"),
        Some("upstream request timeout (cluster t)")
    );
    assert!(took < Duration::from_secs(1), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_filter_edits_grpc_metadata() {
    let server = GrpcServer::start();
    let gw = gateway(
        &[
            "{match: {path_prefix: /test.Echo/}, cluster: grpc, filters: [{headers: {request: {set: {x-env: prod}, add: {x-tag: edge}, remove: [user-agent], request_id: true}, response: {remove: [x-served-by]}}}]}"
                .into(),
        ],
        &[cluster("grpc", server.addr(), "")],
        &[],
    );
    // The one response of an OK call (`"responses": ["VALUE"]`).
    let value = |out: String| {
        assert!(out.contains(r#""code": "OK""#), "{out}");
        let (_, rest) = out.split_once(r#""responses": [""#).expect(&out);
        rest.split_once('"').expect(&out).0.to_owned()
    };
    assert_eq!(
        value(grpc_call(gw.addr(), "Metadata", "x-env", None).await),
        "prod"
    );
    assert_eq!(
        value(grpc_call(gw.addr(), "Metadata", "x-tag", None).await),
        "edge"
    );
    assert_eq!(
        value(grpc_call(gw.addr(), "Metadata", "user-agent", None).await),
        "-"
    );
    assert_eq!(
        value(grpc_call(gw.addr(), "Metadata", "x-request-id", None).await).len(),
        36
    );
    // Directly, the server sees none of it; grpcio's user agent is there.
    assert_eq!(
        value(grpc_call(server.addr(), "Metadata", "x-env", None).await),
        "-"
    );
    assert_ne!(
        value(grpc_call(server.addr(), "Metadata", "user-agent", None).await),
        "-"
    );
    // Trailers are not the response head: the server's trailer comes through.
    let out = grpc_call(gw.addr(), "Unary", "x", None).await;
    assert!(out.contains(r#""x-served-by": "python""#), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_through_gateway_equal_direct() {
    let server = GrpcServer::start();
    let gw = gateway(
        &[
            "{match: {path_exact: /test.Echo/Slow}, cluster: grpc, timeout: 300ms}".into(),
            "{match: {path_prefix: /test.Echo/}, cluster: grpc}".into(),
            "{match: {path_prefix: /dead.}, cluster: dead}".into(),
        ],
        &[
            cluster("grpc", server.addr(), ""),
            format!("{{name: dead, hosts: [\"127.0.0.1:{}\"]}}", free_port()),
        ],
        &[],
    );
    let direct = grpc_call(server.addr(), "Unary", "hello", None).await;
    assert_eq!(
        direct,
        r#"{"code": "OK", "details": null, "responses": ["echo:hello"], "trailers": {"x-served-by": "python"}}"#
    );
    assert_eq!(grpc_call(gw.addr(), "Unary", "hello", None).await, direct);

    let direct = grpc_call(server.addr(), "Stream", "5", None).await;
    assert!(
        direct.contains(r#""responses": ["msg-0", "msg-1", "msg-2", "msg-3", "msg-4"]"#),
        "{direct}"
    );
    assert_eq!(grpc_call(gw.addr(), "Stream", "5", None).await, direct);
    let many = grpc_call(gw.addr(), "Stream", "1000", None).await;
    assert!(
        many.contains(r#""msg-999"]"#) && many.contains(r#""code": "OK""#),
        "{many}"
    );

    // Streaming in both directions: client streaming and bidirectional.
    let direct = grpc_call(server.addr(), "Collect", "50", None).await;
    assert!(
        direct.contains(r#""m-0,m-1,"#) && direct.contains(r#"m-49"]"#),
        "{direct}"
    );
    assert_eq!(grpc_call(gw.addr(), "Collect", "50", None).await, direct);
    let direct = grpc_call(server.addr(), "Chat", "200", None).await;
    assert!(
        direct.contains(r#""re:m-0", "re:m-1""#) && direct.contains(r#""re:m-199"]"#),
        "{direct}"
    );
    assert_eq!(grpc_call(gw.addr(), "Chat", "200", None).await, direct);

    // Gateway-made gRPC errors, as the grpcio client reports them.
    assert_eq!(
        grpc_call(gw.addr(), "/dead.Svc/Call", "x", None).await,
        r#"{"code": "UNAVAILABLE", "details": "upstream connect error (cluster dead)", "responses": [], "trailers": {}}"#
    );
    assert_eq!(
        grpc_call(gw.addr(), "/other.Svc/Call", "x", None).await,
        r#"{"code": "UNIMPLEMENTED", "details": "no route", "responses": [], "trailers": {}}"#
    );
    assert_eq!(
        grpc_call(gw.addr(), "Slow", "3000", None).await,
        r#"{"code": "DEADLINE_EXCEEDED", "details": "upstream request timeout (cluster grpc)", "responses": [], "trailers": {}}"#
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_alpn_h2_and_h2c_http1_redis_share_the_port() {
    let h2 = nginx_h2c(1_000_000);
    let h1 = nginx_h1();
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let mut c = Command::new(require("openssl"));
    c.args([
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
    ])
    .args(["-subj", "/CN=localhost"])
    .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
    .arg("-keyout")
    .arg(&key)
    .arg("-out")
    .arg(&cert)
    .stderr(Stdio::null());
    run(c).await;
    let tls = format!(
        "tls: {{cert: \"{}\", key: \"{}\", alpn: [h2, http/1.1]}}",
        cert.display(),
        key.display()
    );
    let gw = gateway(
        &[
            "{match: {protocol: redis}, cluster: redis}".into(),
            "{match: {protocol: http1}, cluster: web1}".into(),
            "{match: {protocol: http2}, cluster: web2}".into(),
        ],
        &[
            cluster("web2", h2.addr(), ""),
            cluster("web1", h1.addr(), ""),
            cluster("redis", redis.addr(), ""),
        ],
        &[&tls],
    );
    let port = gw.addr().port();
    let https = format!("https://localhost:{port}/hello.txt");
    let cacert = cert.display().to_string();
    let with_version = |v: &'static str| {
        let cacert = cacert.clone();
        let https = https.clone();
        async move {
            let out = curl_body(&[v, "--cacert", &cacert, "-w", "|%{http_version}"], &https).await;
            String::from_utf8_lossy(&out).into_owned()
        }
    };
    assert_eq!(with_version("--http2").await, "hello over h2\n|2");
    assert_eq!(with_version("--http1.1").await, "hello over h2\n|1.1");

    // Plain h2c, HTTP/1.1 and Redis clients on the same port, at the same time.
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let url = gw.url("/hello.txt");
        tasks.push(tokio::spawn(async move {
            for _ in 0..20 {
                assert_eq!(
                    curl_body(&["--http2-prior-knowledge"], &url).await,
                    b"hello over h2\n"
                );
                assert_eq!(curl_body(&["--http1.1"], &url).await, b"hello over h2\n");
            }
        }));
    }
    let addr = gw.addr();
    tasks.push(tokio::spawn(async move {
        let mut con = redis_conn(addr).await;
        for i in 0..100 {
            let _: () = redis::cmd("SET")
                .arg("h2:k")
                .arg(i)
                .query_async(&mut con)
                .await
                .unwrap();
            let v: i64 = redis::cmd("GET")
                .arg("h2:k")
                .query_async(&mut con)
                .await
                .unwrap();
            assert_eq!(v, i);
        }
    }));
    for t in tasks {
        t.await.expect("a client task failed");
    }
    let mut c = Command::new(require("h2load"));
    c.args(["-n", "500", "-c", "2", "-m", "8"]).arg(&https);
    let (requests, codes) = h2load_summary(&run(c).await);
    assert!(
        requests.contains("500 succeeded, 0 failed, 0 errored"),
        "{requests}"
    );
    assert_eq!(codes, "status codes: 500 2xx, 0 3xx, 0 4xx, 0 5xx");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_lets_streams_finish_and_idle_connections_close() {
    let up = TestH2::start(None).await;
    let mut gw = gateway_with(
        &["drain_timeout: 10s"],
        &["{cluster: t}".into()],
        &[cluster("t", up.addr, "")],
        &["idle_timeout: 500ms"],
    );
    // A connection without streams is closed after the idle timeout.
    let (send, conn) = h2_client_conn(gw.addr()).await;
    assert_eq!(get(&send, "/trailers").await.body, b"abc");
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .expect("the idle connection is closed")
        .unwrap();
    let idle = started.elapsed();
    assert!(idle >= Duration::from_millis(400), "closed after {idle:?}");

    // SIGTERM: the stream in flight still gets its whole response.
    let (send, _conn) = h2_client_conn(gw.addr()).await;
    let slow = tokio::spawn(async move { get(&send, "/slow/1500").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.signal("TERM");
    let r = tokio::time::timeout(Duration::from_secs(5), slow)
        .await
        .expect("the slow stream finishes")
        .unwrap();
    assert_eq!((r.status.as_u16(), r.body.as_slice()), (200, &b"slow"[..]));
    let status = gw.wait_exit(Duration::from_secs(5));
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_holds_back_the_upstream() {
    let up = TestH2::start(None).await;
    let gw = gateway(&["{cluster: t}".into()], &[cluster("t", up.addr, "")], &[]);
    // A client with HTTP/2's default 64 KiB windows that does not read.
    let tcp = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut s = send.ready().await.unwrap();
    let (resp, _) = s
        .send_request(request("GET", "/firehose", &[]), true)
        .unwrap();
    let resp = resp.await.unwrap();
    assert_eq!(resp.status(), 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let sent = up.seen.sent.load(Ordering::SeqCst);
    // The gateway's stream window (1 MiB), the client's (64 KiB) and h2's
    // send buffer: the rest of the 16 MiB waits at the upstream.
    assert!(
        sent < 3 << 20,
        "the upstream could send {sent} bytes to a client that reads nothing"
    );
    let (body, _) = tokio::time::timeout(Duration::from_secs(30), read_body(resp.into_body()))
        .await
        .expect("the whole body once the client reads")
        .unwrap();
    assert_eq!(body.len(), 16 << 20);
    assert_eq!(up.seen.sent.load(Ordering::SeqCst), 16 << 20);
}

// ---------------------------------------------------------------------------
// HTTP/1.1 downstream, HTTP/2 upstream

/// A file holding `body`, for `curl --data-binary @file`.
fn body_file(name: &str, body: &[u8]) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("switchyard-h1h2-{}-{name}", std::process::id()));
    std::fs::write(&path, body).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_requests_to_an_http2_cluster_equal_direct_nginx() {
    let h2 = nginx_h2c(1_000_000);
    let gw = gateway(
        &["{cluster: web2}".into()],
        &[cluster("web2", h2.addr(), ", protocol: http2")],
        &[],
    );
    for path in ["/hello.txt", "/f/7.txt", "/f/99.txt", "/missing"] {
        let direct = curl_body(
            &["--http2-prior-knowledge", "-w", "|%{http_code}"],
            &format!("http://{}{path}", h2.addr()),
        )
        .await;
        let via = curl_body(
            &["--http1.1", "-w", "|%{http_code}|%{http_version}"],
            &gw.url(path),
        )
        .await;
        let mut want = direct.clone();
        want.extend_from_slice(b"|1.1");
        assert_eq!(
            String::from_utf8_lossy(&via),
            String::from_utf8_lossy(&want),
            "curl --http1.1 {path}"
        );
    }
    let big = curl_body(&["--http1.1"], &gw.url("/big.bin")).await;
    assert_same_bytes(&big, &pattern(3 << 20), "3 MB file, HTTP/1.1 in, h2c out");
    // A HEAD gets the head alone.
    let head = curl_body(&["--http1.1", "-sS", "-I"], &gw.url("/hello.txt")).await;
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-length: 14"), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_posts_to_an_http2_echo_come_back_byte_identical() {
    let up = TestH2::start(None).await;
    let gw = gateway(
        &["{cluster: echo}".into()],
        &[cluster("echo", up.addr, ", protocol: http2")],
        &[],
    );
    for (name, body) in [
        ("small", b"hello, h2\n".to_vec()),
        ("big", pattern(3 << 20)),
    ] {
        let file = body_file(name, &body);
        let data = format!("@{}", file.display());
        // Content-Length body (curl adds `Expect: 100-continue` to the big one).
        let got = curl_body(
            &["--http1.1", "-sS", "--fail", "--data-binary", &data],
            &gw.url("/echo"),
        )
        .await;
        assert_same_bytes(&got, &body, &format!("{name} Content-Length body echoed"));
        // Chunked body.
        let got = curl_body(
            &[
                "--http1.1",
                "-sS",
                "--fail",
                "-H",
                "Transfer-Encoding: chunked",
                "--data-binary",
                &data,
            ],
            &gw.url("/echo"),
        )
        .await;
        assert_same_bytes(&got, &body, &format!("{name} chunked body echoed"));
        let _ = std::fs::remove_file(file);
    }

    // On the wire: a chunked response whose trailers follow the last chunk.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    tcp.write_all(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n4;e=1\r\ndefg\r\n0\r\n\r\n",
    )
    .await
    .unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut raw))
        .await
        .expect("response within 10 s")
        .unwrap();
    let raw = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    assert!(raw.starts_with("http/1.1 200 ok\r\n"), "{raw}");
    assert!(raw.contains("\r\ntransfer-encoding: chunked\r\n"), "{raw}");
    assert!(raw.contains("\r\nconnection: close\r\n"), "{raw}");
    let body = raw.split_once("\r\n\r\n").unwrap().1;
    let dechunked: String = {
        let mut rest = body;
        let mut out = String::new();
        loop {
            let (size, after) = rest.split_once("\r\n").unwrap();
            let n = usize::from_str_radix(size, 16).unwrap();
            if n == 0 {
                assert_eq!(after, "x-echo-bytes: 7\r\n\r\n", "trailers");
                break out;
            }
            out.push_str(&after[..n]);
            rest = &after[n + 2..];
        }
    };
    assert_eq!(dechunked, "abcdefg");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_keep_alive_to_an_http2_cluster() {
    let h2 = nginx_h2c(1_000_000);
    let gw = gateway(
        &["{cluster: web2}".into()],
        &[cluster("web2", h2.addr(), ", protocol: http2")],
        &[],
    );
    // Ten requests on one HTTP/1.1 connection (curl reuses it: one connect).
    let mut args = vec!["--http1.1".to_owned(), "-sS".to_owned()];
    let mut want = String::new();
    for i in 0..10 {
        args.push(gw.url(&format!("/f/{i}.txt")));
        args.extend([
            "-w".to_owned(),
            "|%{http_code}|%{num_connects}\n".to_owned(),
        ]);
        want += &format!("file {i}\n").repeat(i + 1);
        want += &format!("|200|{}\n", u8::from(i == 0));
    }
    let mut c = curl();
    c.args(&args);
    let out = run(c).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_to_http2_cluster_failures_are_502_and_504() {
    let up = TestH2::start(None).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = closed.local_addr().unwrap();
    drop(closed);
    let gw = gateway(
        &[
            "{match: {path_prefix: /dead/}, cluster: dead}".into(),
            "{match: {path_prefix: /slow/}, cluster: echo, timeout: 300ms}".into(),
            "{cluster: echo}".into(),
        ],
        &[
            cluster("echo", up.addr, ", protocol: http2"),
            cluster("dead", dead, ", protocol: http2"),
        ],
        &[],
    );
    let code = |path: &'static str| {
        let url = gw.url(path);
        async move {
            let out = curl_body(
                &["--http1.1", "-s", "-o", "/dev/null", "-w", "%{http_code}"],
                &url,
            )
            .await;
            String::from_utf8_lossy(&out).into_owned()
        }
    };
    assert_eq!(code("/dead/x").await, "502");
    assert_eq!(code("/slow/3000").await, "504");
    assert_eq!(code("/slow/10").await, "200");
    assert_eq!(code("/nothing-here").await, "404");
}

/// The HTTP/1.1 path rules hold for HTTP/2 too: `/admin` guarded by a
/// direct 403 cannot be reached as `/%61dmin`, `//admin` or `/x/../admin`,
/// and upstreams get the normalised path with its query.
#[tokio::test(flavor = "multi_thread")]
async fn encoded_and_dotted_paths_cannot_bypass_a_prefix_route() {
    let up = nginx_h2c(1_000_000);
    let gw = gateway(
        &[
            "{match: {path_prefix: /admin}, direct_response: {status: 403, body: forbidden}}"
                .into(),
            "{match: {path_prefix: /}, cluster: t}".into(),
        ],
        &[cluster("t", up.addr(), ", protocol: http2")],
        &[],
    );
    for path in ["/%61dmin", "//admin", "/./admin", "/x/../admin/panel"] {
        let status = curl_body(
            &[
                "--http2-prior-knowledge",
                "--path-as-is",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
            ],
            &gw.url(path),
        )
        .await;
        assert_eq!(status, b"403", "{path} got past the /admin route");
    }
    let body = curl_body(
        &["--http2-prior-knowledge", "--path-as-is"],
        &gw.url("/x/..//%68ello.txt?q=1"),
    )
    .await;
    assert_eq!(body, b"hello over h2\n");
}

/// `health_check: {kind: grpc}` asks each host `grpc.health.v1.Health/Check`
/// over h2c: a grpcio server that says NOT_SERVING (while it still answers
/// calls) leaves the cluster, and comes back when it says SERVING again.
/// Which server answered is its `Whoami` (its port).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_health_checks_take_a_not_serving_host_out_and_bring_it_back() {
    let a = GrpcServer::start();
    let b = GrpcServer::start();
    let gw = gateway(
        &["{match: {path_prefix: /test.Echo/}, cluster: grpc}".into()],
        &[format!(
            "{{name: grpc, protocol: http2, failover: false, hosts: [\"{}\", \"{}\"], health_check: {{kind: grpc, interval: 200ms, timeout: 2s, unhealthy_threshold: 2, healthy_threshold: 2}}}}",
            a.addr(),
            b.addr()
        )],
        &[],
    );
    let (pa, pb) = (a.addr().port().to_string(), b.addr().port().to_string());
    let whoami = |n: usize| {
        let addr = gw.addr();
        async move {
            let mut seen = Vec::new();
            for _ in 0..n {
                let r = grpc_call(addr, "Whoami", "", None).await;
                seen.push(r);
            }
            seen
        }
    };
    let answered_by = |seen: &[String], port: &str| {
        seen.iter()
            .filter(|r| r.contains(&format!("\"responses\": [\"{port}\"]")))
            .count()
    };
    let limit = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = whoami(6).await;
        if answered_by(&seen, &pa) > 0 && answered_by(&seen, &pb) > 0 {
            break;
        }
        assert!(
            Instant::now() < limit,
            "calls never reached both servers: {seen:?}"
        );
    }
    let off = grpc_call(a.addr(), "SetServing", "0", None).await;
    assert!(off.contains("not serving"), "{off}");
    let limit = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = whoami(6).await;
        if answered_by(&seen, &pb) == 6 {
            break;
        }
        assert!(
            Instant::now() < limit,
            "the NOT_SERVING host stayed in: {seen:?}"
        );
    }
    let seen = whoami(10).await;
    assert_eq!(answered_by(&seen, &pb), 10, "{seen:?}");
    grpc_call(a.addr(), "SetServing", "1", None).await;
    let limit = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = whoami(6).await;
        if answered_by(&seen, &pa) > 0 {
            break;
        }
        assert!(Instant::now() < limit, "the host never came back: {seen:?}");
    }
}

/// An `http` health check over h2c (the cluster's `protocol: http2`; `kind`
/// inferred): an nginx whose health file is gone (it answers 404 but is up)
/// leaves the cluster, and comes back when the file is back. Which nginx
/// answered is its `who.txt`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_http_health_checks_take_a_failing_host_out_and_bring_it_back() {
    let a = nginx_h2c(1_000_000);
    let b = nginx_h2c(1_000_000);
    std::fs::write(a.root().join("who.txt"), "a").unwrap();
    std::fs::write(b.root().join("who.txt"), "b").unwrap();
    let gw = gateway(
        &["{cluster: web}".into()],
        &[format!(
            "{{name: web, protocol: http2, failover: false, hosts: [\"{}\", \"{}\"], health_check: {{path: /hello.txt, interval: 200ms, timeout: 2s, unhealthy_threshold: 2, healthy_threshold: 2}}}}",
            a.addr(),
            b.addr()
        )],
        &[],
    );
    let who = |n: usize| {
        let url = gw.url("/who.txt");
        async move {
            let mut seen = Vec::new();
            for _ in 0..n {
                let body = curl_body(&["--http2-prior-knowledge", "-s"], &url).await;
                seen.push(String::from_utf8_lossy(&body).into_owned());
            }
            seen
        }
    };
    let until = async |n: usize, want: &dyn Fn(&[String]) -> bool, what: &str| {
        let limit = Instant::now() + Duration::from_secs(60);
        loop {
            let seen = who(n).await;
            if want(&seen) {
                return seen;
            }
            assert!(Instant::now() < limit, "{what}: {seen:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    until(
        6,
        &|s| s.contains(&"a".into()) && s.contains(&"b".into()),
        "both hosts",
    )
    .await;
    std::fs::remove_file(a.root().join("hello.txt")).unwrap();
    until(
        10,
        &|s| s.iter().all(|w| w == "b"),
        "the failing host to leave",
    )
    .await;
    let seen = who(20).await;
    assert!(seen.iter().all(|w| w == "b"), "{seen:?}");
    std::fs::write(a.root().join("hello.txt"), "hello over h2\n").unwrap();
    until(6, &|s| s.contains(&"a".into()), "the host to come back").await;
}
