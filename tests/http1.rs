//! HTTP/1.1 through the gateway binary, against real upstreams (the Python
//! upstream of `tests/peers/http_upstream.py`, nginx) with real clients
//! (reqwest, curl) and raw sockets where the wire matters.

mod common;

use std::collections::HashMap;

use common::*;

/// Status, headers (lower-cased names, without `Date`) and body of a GET.
async fn fetch(client: &reqwest::Client, url: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let resp = client
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .filter(|(k, _)| k.as_str() != "date")
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = resp
        .bytes()
        .await
        .unwrap_or_else(|e| panic!("GET {url} body: {e}"))
        .to_vec();
    (status, headers, body)
}

/// `curl -i URL` output without the `Date:` line.
fn curl_i(url: &str) -> String {
    let out = run_ok(curl().args(["-i", url]));
    String::from_utf8_lossy(&out.stdout)
        .split_inclusive('\n')
        .filter(|l| !l.to_ascii_lowercase().starts_with("date:"))
        .collect()
}

fn port_of(r: &Response) -> u16 {
    r.header("x-upstream-port")
        .unwrap_or_else(|| panic!("no X-Upstream-Port in:\n{}", r.head))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn get_through_gateway_equals_direct_python_upstream() {
    let up = HttpUpstream::start();
    let gw = Template {
        http: vec![up.addr()],
        ..Default::default()
    }
    .start();
    let client = http_client();
    for path in [
        "/hello",
        "/bytes/1000",
        "/status/404",
        "/status/204",
        "/stream/200000",
    ] {
        let direct = fetch(&client, &up.url(path)).await;
        let via = fetch(&client, &gw.url(path)).await;
        assert_eq!(via.0, direct.0, "status of {path}");
        assert_eq!(via.1, direct.1, "headers of {path}");
        assert_same_bytes(&via.2, &direct.2, path);
    }
    let direct = curl_i(&up.url("/hello"));
    assert!(direct.contains("hello from upstream"), "{direct}");
    assert_eq!(curl_i(&gw.url("/hello")), direct);
}

#[tokio::test]
async fn get_through_gateway_equals_direct_nginx() {
    let page = b"<html><body>switchyard test page</body></html>\n".to_vec();
    let data = pattern(300_000);
    let nginx = Nginx::start(&[
        ("index.html", &page),
        ("data.bin", &data),
        ("dir/note.txt", b"a note\n"),
    ]);
    let gw = Template {
        http: vec![nginx.addr()],
        ..Default::default()
    }
    .start();
    let client = http_client();
    let direct_url = |p: &str| format!("http://{}{p}", nginx.addr());
    for path in ["/", "/index.html", "/data.bin", "/dir/note.txt", "/missing"] {
        let direct = fetch(&client, &direct_url(path)).await;
        let via = fetch(&client, &gw.url(path)).await;
        assert_eq!(via.0, direct.0, "status of {path}");
        assert_eq!(via.1, direct.1, "headers of {path}");
        assert_same_bytes(&via.2, &direct.2, path);
    }
    assert_same_bytes(
        &fetch(&client, &gw.url("/data.bin")).await.2,
        &data,
        "data.bin",
    );
    let direct = curl_i(&direct_url("/index.html"));
    assert!(direct.contains("switchyard test page"), "{direct}");
    assert_eq!(curl_i(&gw.url("/index.html")), direct);
}

#[test]
fn keep_alive_reuses_one_connection_downstream_and_few_upstream() {
    let up = HttpUpstream::start();
    let gw = Template {
        http: vec![up.addr()],
        ..Default::default()
    }
    .start();
    let url = gw.url("/hello");
    let mut cmd = curl();
    cmd.args(["-w", "%{http_code} %{num_connects}\n"]);
    for _ in 0..20 {
        cmd.args(["-o", "/dev/null", &url]);
    }
    let out = run_ok(&mut cmd);
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 20, "{text}");
    let mut connects = 0;
    for l in &lines {
        let (code, n) = l.split_once(' ').unwrap();
        assert_eq!(code, "200", "{text}");
        connects += n.parse::<u32>().unwrap();
    }
    assert_eq!(
        connects, 1,
        "curl opened more than one connection to the gateway:\n{text}"
    );
    let downstream = gw.metric(
        "switchyard_downstream_connections_total",
        &[("listener", "edge"), ("protocol", "http1")],
    );
    assert_eq!(
        downstream, 1.0,
        "downstream connections seen by the gateway"
    );
    // One connection of the startup probe, and at most two for the 20 requests.
    let upstream = gw.metric(
        "switchyard_upstream_connections_total",
        &[("cluster", "web")],
    );
    assert!(
        (1.0..=3.0).contains(&upstream),
        "upstream connections for 20 keep-alive requests: {upstream}"
    );
}

#[test]
fn chunked_request_gets_chunked_response_with_the_same_body() {
    let up = HttpUpstream::start();
    let gw = Template {
        http: vec![up.addr()],
        ..Default::default()
    }
    .start();
    let dir = tempfile::tempdir().unwrap();
    let body = pattern(300_000);
    let file = dir.path().join("body.bin");
    std::fs::write(&file, &body).unwrap();
    let headers = dir.path().join("headers.txt");
    let out_file = dir.path().join("out.bin");
    run_ok(
        curl()
            .args(["-H", "Transfer-Encoding: chunked", "--data-binary"])
            .arg(format!("@{}", file.display()))
            .arg("-D")
            .arg(&headers)
            .arg("-o")
            .arg(&out_file)
            .arg(gw.url("/echo")),
    );
    let head = std::fs::read_to_string(&headers)
        .unwrap()
        .to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        head.contains("transfer-encoding: chunked"),
        "the upstream saw no chunked request, or the response lost its chunking:\n{head}"
    );
    assert_same_bytes(&std::fs::read(&out_file).unwrap(), &body, "echoed body");

    // The same on the wire: chunks of odd sizes, with a chunk extension and a trailer.
    let mut c = RawConn::connect(gw.addr());
    c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n1\r\n,\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 200, "{}", r.head);
    assert!(r.chunked, "response not chunked:\n{}", r.head);
    assert_eq!(r.text(), "hello, world");
    // The connection is still usable.
    c.send(&get_request("/hello"));
    assert_eq!(c.response().text(), "hello from upstream\n");
}

#[tokio::test]
async fn ten_megabytes_stream_both_ways() {
    const N: usize = 10 * 1024 * 1024;
    let up = HttpUpstream::start();
    let gw = Template {
        http: vec![up.addr()],
        ..Default::default()
    }
    .start();
    let client = http_client();
    let data = pattern(N);

    // Upload with Content-Length.
    let resp = client
        .post(gw.url("/echo"))
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_same_bytes(
        &resp.bytes().await.unwrap(),
        &data,
        "10 MB echo (content-length)",
    );

    // Upload chunked (a streamed body of 64 KiB pieces).
    let pieces: Vec<Result<Vec<u8>, std::io::Error>> =
        data.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(pieces));
    let resp = client
        .post(gw.url("/echo"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()
            .get("transfer-encoding")
            .map(|v| v.as_bytes()),
        Some(&b"chunked"[..])
    );
    assert_same_bytes(&resp.bytes().await.unwrap(), &data, "10 MB echo (chunked)");

    // Download chunked.
    let resp = client
        .get(gw.url(&format!("/stream/{N}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_same_bytes(&resp.bytes().await.unwrap(), &data, "10 MB download");
}

#[test]
fn expect_100_continue_is_passed_through() {
    let up = HttpUpstream::start();
    let gw = Template {
        http: vec![up.addr()],
        ..Default::default()
    }
    .start();
    let dir = tempfile::tempdir().unwrap();
    let body = pattern(200_000);
    let file = dir.path().join("body.bin");
    std::fs::write(&file, &body).unwrap();
    let out_file = dir.path().join("out.bin");
    let out = run_ok(
        curl()
            .args([
                "-v",
                "-H",
                "Expect: 100-continue",
                "--expect100-timeout",
                "20",
                "-w",
                "%{http_code}",
                "--data-binary",
            ])
            .arg(format!("@{}", file.display()))
            .arg("-o")
            .arg(&out_file)
            .arg(gw.url("/echo")),
    );
    let verbose = String::from_utf8_lossy(&out.stderr);
    assert!(
        verbose.contains("> Expect: 100-continue"),
        "curl did not send Expect:\n{verbose}"
    );
    assert!(
        verbose.contains("< HTTP/1.1 100 Continue"),
        "no 100 Continue reached curl:\n{verbose}"
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    assert_same_bytes(&std::fs::read(&out_file).unwrap(), &body, "echoed body");
}

#[test]
fn http10_request_without_keep_alive_is_answered_then_closed() {
    let up = HttpUpstream::start();
    let gw = Template {
        http: vec![up.addr()],
        routes: vec![
            "{match: {path_exact: /local}, direct_response: {status: 200, body: local answer}}"
                .into(),
        ],
        ..Default::default()
    }
    .start();
    for (path, want) in [
        ("/hello", "hello from upstream"),
        ("/local", "local answer"),
    ] {
        let mut c = RawConn::connect(gw.addr());
        c.send(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes());
        let (bytes, closed) = c.read_until_closed();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            text.starts_with("HTTP/1.") && text[..12].ends_with(" 200"),
            "{path}: {text}"
        );
        assert!(text.contains(want), "{path}: {text}");
        assert_eq!(closed, Closed::Eof, "{path}");
    }
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let up = HttpUpstream::start();
    let gw = Template {
        http: vec![up.addr()],
        ..Default::default()
    }
    .start();
    let mut c = RawConn::connect(gw.addr());
    let mut burst = get_request("/bytes/5");
    burst.extend(get_request("/hello"));
    burst.extend(get_request("/status/404"));
    c.send(&burst);
    let r1 = c.response();
    let r2 = c.response();
    let r3 = c.response();
    assert_eq!((r1.status, r1.header("x-path")), (200, Some("/bytes/5")));
    assert_eq!(r1.body, pattern(5));
    assert_eq!((r2.status, r2.header("x-path")), (200, Some("/hello")));
    assert_eq!(r2.text(), "hello from upstream\n");
    assert_eq!((r3.status, r3.header("x-path")), (404, Some("/status/404")));
    c.send(&get_request("/hello"));
    assert_eq!(c.response().status, 200);
}

#[test]
fn upstream_down_gives_502_and_keep_alive_survives() {
    let dead = local(free_port());
    let gw = Template {
        routes: vec![
            "{match: {path_prefix: /down}, cluster: dead}".into(),
            "{match: {path_exact: /direct}, direct_response: {status: 200, body: still here}}"
                .into(),
        ],
        clusters: vec![format!(
            "{{name: dead, hosts: [\"{dead}\"], connect_timeout: 1s}}"
        )],
        ..Default::default()
    }
    .start();
    let mut c = RawConn::connect(gw.addr());
    c.send(&get_request("/down/x"));
    let r = c.response();
    assert_eq!(r.status, 502, "{}", r.head);
    assert!(
        !r.body.is_empty() && r.body.len() < 200,
        "body: {:?}",
        r.text()
    );
    c.send(&get_request("/direct"));
    let r = c.response();
    assert_eq!((r.status, r.text().as_str()), (200, "still here"));
}

#[test]
fn upstream_timeout_gives_504() {
    let up = HttpUpstream::start();
    let gw = Template {
        http: vec![up.addr()],
        routes: vec![
            format!("{{match: {{headers: [{{name: x-strict, present: true}}]}}, cluster: strict}}"),
            "{match: {path_prefix: /slow/}, cluster: web, timeout: 300ms}".into(),
        ],
        clusters: vec![format!(
            "{{name: strict, hosts: [\"{}\"], request_timeout: 300ms}}",
            up.addr()
        )],
        ..Default::default()
    }
    .start();
    // The route's timeout.
    let mut c = RawConn::connect(gw.addr());
    c.send(&get_request("/slow/2000"));
    let r = c.response();
    assert_eq!(r.status, 504, "route timeout:\n{}{}", r.head, r.text());
    // A fast answer on the same route is fine.
    let mut c = RawConn::connect(gw.addr());
    c.send(&get_request("/slow/1"));
    assert_eq!(c.response().status, 200);
    // The cluster's request_timeout.
    let mut c = RawConn::connect(gw.addr());
    c.send(b"GET /slow/2000 HTTP/1.1\r\nHost: t\r\nX-Strict: 1\r\n\r\n");
    let r = c.response();
    assert_eq!(
        r.status,
        504,
        "cluster request_timeout:\n{}{}",
        r.head,
        r.text()
    );
}

#[test]
fn oversize_request_head_gets_431_and_close() {
    let up = HttpUpstream::start();
    let gw = Template {
        http: vec![up.addr()],
        ..Default::default()
    }
    .start();
    let mut c = RawConn::connect(gw.addr());
    let mut req = b"GET /hello HTTP/1.1\r\nHost: t\r\nX-Big: ".to_vec();
    req.extend(std::iter::repeat_n(b'a', 100 * 1024));
    req.extend_from_slice(b"\r\n\r\n");
    c.send_lossy(&req);
    let (bytes, _) = c.read_until_closed();
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        text.starts_with("HTTP/1.1 431"),
        "want a 431 then close, got: {text:?}"
    );
}

#[test]
fn direct_response_as_configured_and_404_without_route() {
    let gw = Template {
        routes: vec![
            "{match: {path_exact: /teapot}, direct_response: {status: 418, body: short and stout, content_type: text/x-teapot}}"
                .into(),
            "{match: {path_prefix: /plain}, direct_response: {body: plain}}".into(),
        ],
        no_http_default: true,
        ..Default::default()
    }
    .start();
    let mut c = RawConn::connect(gw.addr());
    c.send(&get_request("/teapot"));
    let r = c.response();
    assert_eq!(r.status, 418, "{}", r.head);
    assert_eq!(r.header("content-type"), Some("text/x-teapot"));
    assert_eq!(r.text(), "short and stout");
    c.send(&get_request("/plain/x"));
    let r = c.response();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.text(), "plain");
    c.send(&get_request("/teapot/more"));
    assert_eq!(
        c.response().status,
        404,
        "path_exact must not match a longer path"
    );
    c.send(&get_request("/nothing"));
    assert_eq!(c.response().status, 404);
}

#[test]
fn routes_by_path_header_and_host_to_different_clusters() {
    let a = HttpUpstream::start();
    let b = HttpUpstream::start();
    let gw = Template {
        virtual_hosts: vec![
            "{name: b-site, domains: [\"b.example\", \"*.b.example\"], routes: [{cluster: b}]}"
                .into(),
        ],
        routes: vec![
            "{match: {path_prefix: /bytes/, headers: [{name: x-pick, exact: b}]}, cluster: b}"
                .into(),
            "{match: {path_exact: /hello}, cluster: a}".into(),
            "{match: {path_prefix: /bytes/}, cluster: a}".into(),
            "{match: {path_prefix: /status/}, cluster: b}".into(),
        ],
        clusters: vec![
            format!("{{name: a, hosts: [\"{}\"]}}", a.addr()),
            format!("{{name: b, hosts: [\"{}\"]}}", b.addr()),
        ],
        no_http_default: true,
        ..Default::default()
    }
    .start();
    let mut c = RawConn::connect(gw.addr());
    let mut ask = |req: String| {
        c.send(req.as_bytes());
        c.response()
    };
    let get = |path: &str, extra: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: plain.example\r\n{extra}\r\n")
    };
    let cases = [
        (get("/hello", ""), a.port),
        (get("/bytes/3", ""), a.port),
        (get("/bytes/3", "X-Pick: b\r\n"), b.port),
        (get("/bytes/3", "X-Pick: c\r\n"), a.port),
        (get("/status/200", ""), b.port),
        (
            "GET /hello HTTP/1.1\r\nHost: b.example\r\n\r\n".into(),
            b.port,
        ),
        (
            "GET /hello HTTP/1.1\r\nHost: www.b.example:8080\r\n\r\n".into(),
            b.port,
        ),
        (
            "GET /hello HTTP/1.1\r\nHost: c.example\r\n\r\n".into(),
            a.port,
        ),
    ];
    for (req, want) in cases {
        let r = ask(req.clone());
        assert_eq!(r.status, 200, "{req}{}", r.head);
        assert_eq!(port_of(&r), want, "wrong upstream for:\n{req}");
    }
    let r = ask(get("/hello/x", ""));
    assert_eq!(r.status, 404, "path_exact /hello took /hello/x");
    assert_eq!(
        r.header("x-upstream-port"),
        None,
        "the 404 must come from the gateway"
    );
}

/// Which upstream answered each of `n` requests on one connection.
fn ports_of(gw: &Gateway, n: usize) -> Vec<u16> {
    let mut c = RawConn::connect(gw.addr());
    (0..n)
        .map(|_| {
            c.send(&get_request("/hello"));
            let r = c.response();
            assert_eq!(r.status, 200);
            port_of(&r)
        })
        .collect()
}

#[test]
fn round_robin_alternates_between_hosts() {
    let a = HttpUpstream::start();
    let b = HttpUpstream::start();
    let gw = Template {
        http: vec![a.addr(), b.addr()],
        cluster_fields: vec!["lb: round_robin"],
        ..Default::default()
    }
    .start();
    let seq = ports_of(&gw, 10);
    for w in seq.windows(2) {
        assert_ne!(w[0], w[1], "round robin repeated a host: {seq:?}");
    }
    let a_count = seq.iter().filter(|&&p| p == a.port).count();
    assert_eq!(a_count, 5, "{seq:?}");
}

#[test]
fn weighted_round_robin_follows_weights() {
    let a = HttpUpstream::start();
    let b = HttpUpstream::start();
    let gw = Template {
        routes: vec!["{match: {protocol: http1}, cluster: wrr}".into()],
        clusters: vec![format!(
            "{{name: wrr, lb: weighted_round_robin, hosts: [{{address: \"{}\", weight: 3}}, {{address: \"{}\", weight: 1}}]}}",
            a.addr(),
            b.addr()
        )],
        no_http_default: true,
        ..Default::default()
    }
    .start();
    let seq = ports_of(&gw, 40);
    let mut counts: HashMap<u16, usize> = HashMap::new();
    for p in &seq {
        *counts.entry(*p).or_default() += 1;
    }
    assert_eq!(
        (counts.get(&a.port).copied(), counts.get(&b.port).copied()),
        (Some(30), Some(10)),
        "{seq:?}"
    );
}

#[test]
fn upgrade_101_is_spliced_both_ways() {
    let up = HttpUpstream::start();
    let gw = Template {
        http: vec![up.addr()],
        ..Default::default()
    }
    .start();
    let mut c = RawConn::connect(gw.addr());
    c.send(b"GET /upgrade HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n");
    let r = c.head_response();
    assert_eq!(r.status, 101, "{}", r.head);
    assert_eq!(r.header("upgrade"), Some("echo"));
    for msg in [
        &b"raw bytes after the upgrade\x00\xff"[..],
        b"GET / HTTP/1.1\r\n\r\n",
    ] {
        c.send(msg);
        let mut got = vec![0u8; msg.len()];
        std::io::Read::read_exact(&mut c.reader, &mut got)
            .expect("echo through the upgraded connection");
        assert_eq!(got, msg);
    }
}

#[test]
fn upstream_closing_after_response_is_not_reused() {
    let up = HttpUpstream::start();
    let gw = Template {
        http: vec![up.addr()],
        ..Default::default()
    }
    .start();
    let mut c = RawConn::connect(gw.addr());
    for _ in 0..3 {
        c.send(&get_request("/close"));
        let r = c.response();
        assert_eq!((r.status, r.text().as_str()), (200, "bye\n"));
        if r.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
        {
            // The gateway passed the upstream's close on: it must then close too.
            let (rest, _) = c.read_until_closed();
            assert!(rest.is_empty());
            c = RawConn::connect(gw.addr());
        }
        c.send(&get_request("/hello"));
        assert_eq!(
            c.response().status,
            200,
            "a request after an upstream close"
        );
    }
}

#[test]
fn head_response_has_no_body_and_keep_alive_continues() {
    let up = HttpUpstream::start();
    let gw = Template {
        http: vec![up.addr()],
        ..Default::default()
    }
    .start();
    let mut c = RawConn::connect(gw.addr());
    c.send(b"HEAD /bytes/1000 HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.head_response();
    assert_eq!(
        (r.status, r.header("content-length")),
        (200, Some("1000")),
        "{}",
        r.head
    );
    c.send(b"HEAD /stream/100000 HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.head_response();
    assert_eq!(
        (r.status, r.header("transfer-encoding")),
        (200, Some("chunked")),
        "{}",
        r.head
    );
    // Had the gateway waited for (or passed on) a body, this would be out of step.
    c.send(&get_request("/hello"));
    let r = c.response();
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "hello from upstream\n"),
        "{}",
        r.head
    );
}

#[test]
fn close_delimited_upstream_body_is_relayed_whole() {
    let up = HttpUpstream::start();
    let gw = Template {
        http: vec![up.addr()],
        ..Default::default()
    }
    .start();
    let mut c = RawConn::connect(gw.addr());
    c.send(&get_request("/eof-body/300000"));
    let r = c.response();
    assert_eq!(r.status, 200, "{}", r.head);
    if r.header("content-length").is_none() && !r.chunked {
        // Passed on close-delimited: the body ended with the connection.
        assert_eq!(
            r.header("connection")
                .map(str::to_ascii_lowercase)
                .as_deref(),
            Some("close")
        );
    }
    assert_same_bytes(&r.body, &pattern(300_000), "close-delimited body");
}

#[test]
fn oversize_upstream_response_head_gives_502() {
    let up = HttpUpstream::start();
    let gw = Template {
        http: vec![up.addr()],
        ..Default::default()
    }
    .start();
    let mut c = RawConn::connect(gw.addr());
    c.send(&get_request("/big-header/1000"));
    assert_eq!(c.response().status, 200);
    c.send(&get_request("/big-header/70000"));
    let r = c.response();
    assert_eq!(
        r.status, 502,
        "a 70 KB upstream head over the 64 KiB limit:\n{}",
        r.head
    );
    assert!(r.header("x-big").is_none());
}

#[test]
fn ambiguous_or_invalid_framing_is_refused_with_400() {
    let up = HttpUpstream::start();
    let gw = Template {
        http: vec![up.addr()],
        ..Default::default()
    }
    .start();
    let smuggles: [&[u8]; 5] = [
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /hello HTTP/1.1\r\nHost: t\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nhello",
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: -5\r\n\r\nhello",
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\nhello",
        b"GET /hello HTTP/1.1\r\nHost: t\r\n Folded: header\r\n\r\n",
    ];
    for req in smuggles {
        let mut c = RawConn::connect(gw.addr());
        c.send_lossy(req);
        let (bytes, _) = c.read_until_closed();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            text.starts_with("HTTP/1.1 400") && text.matches("HTTP/1.1").count() == 1,
            "want one 400 then close for {:?}, got {text:?}",
            String::from_utf8_lossy(req)
        );
    }
}

#[test]
fn too_many_request_headers_get_431() {
    let up = HttpUpstream::start();
    let gw = Template {
        http: vec![up.addr()],
        listener: vec!["http1: {max_headers: 32}"],
        ..Default::default()
    }
    .start();
    let mut headers = String::new();
    for i in 0..20 {
        headers += &format!("X-H{i}: v\r\n");
    }
    let mut c = RawConn::connect(gw.addr());
    c.send(format!("GET /hello HTTP/1.1\r\nHost: t\r\n{headers}\r\n").as_bytes());
    assert_eq!(c.response().status, 200, "20 headers are within 32");
    for i in 20..100 {
        headers += &format!("X-H{i}: v\r\n");
    }
    c.send(format!("GET /hello HTTP/1.1\r\nHost: t\r\n{headers}\r\n").as_bytes());
    let (bytes, _) = c.read_until_closed();
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("HTTP/1.1 431"), "{text:?}");
}

#[test]
fn restarted_upstream_gets_fresh_connections() {
    let mut up = HttpUpstream::start();
    let gw = Template {
        http: vec![up.addr()],
        ..Default::default()
    }
    .start();
    let mut c = RawConn::connect(gw.addr());
    c.send(&get_request("/hello"));
    assert_eq!(c.response().status, 200);
    // The pooled upstream connection dies with the old process.
    up.restart();
    for _ in 0..3 {
        c.send(&get_request("/hello"));
        let r = c.response();
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "hello from upstream\n"),
            "{}",
            r.head
        );
    }
}

#[test]
fn connection_close_request_closes_after_the_response() {
    let up = HttpUpstream::start();
    let gw = Template {
        http: vec![up.addr()],
        ..Default::default()
    }
    .start();
    let mut c = RawConn::connect(gw.addr());
    c.send(&get_request("/hello"));
    assert_eq!(c.response().status, 200);
    c.send(b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let r = c.response();
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "hello from upstream\n")
    );
    assert_eq!(c.read_until_closed(), (Vec::new(), Closed::Eof));
}

#[test]
fn nginx_conditional_and_range_requests_keep_the_connection_in_step() {
    let data = pattern(100_000);
    let nginx = Nginx::start(&[("data.bin", &data)]);
    let gw = Template {
        http: vec![nginx.addr()],
        ..Default::default()
    }
    .start();
    let mut c = RawConn::connect(gw.addr());
    c.send(&get_request("/data.bin"));
    let r = c.response();
    assert_eq!(r.status, 200);
    let etag = r.header("etag").expect("nginx sends an ETag").to_owned();
    // 304: a head only, even though it describes a 100 000-byte entity.
    c.send(
        format!("GET /data.bin HTTP/1.1\r\nHost: t\r\nIf-None-Match: {etag}\r\n\r\n").as_bytes(),
    );
    let r = c.response();
    assert_eq!(r.status, 304, "{}", r.head);
    // 206: a byte range.
    c.send(b"GET /data.bin HTTP/1.1\r\nHost: t\r\nRange: bytes=1000-1999\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 206, "{}", r.head);
    assert_eq!(r.body, &data[1000..2000]);
    // HEAD: the head of the full entity, no body.
    c.send(b"HEAD /data.bin HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.head_response();
    assert_eq!(
        (r.status, r.header("content-length")),
        (200, Some("100000"))
    );
    c.send(&get_request("/data.bin"));
    let r = c.response();
    assert_eq!(r.status, 200);
    assert_same_bytes(&r.body, &data, "data.bin after 304, 206 and HEAD");
}
