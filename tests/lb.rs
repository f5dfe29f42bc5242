//! Load balancing and subset routing through the gateway binary, against real
//! upstreams (nginx, the Python HTTP upstream, the Node Dubbo server of
//! `tests/peers/rpc`). Everything is counted (responses by body or by
//! `X-Upstream-Port`, calls in each server's log), nothing is timed.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use bytes::BytesMut;
use common::*;
use switchyard_codecs::{Decoder, dubbo};

/// An nginx serving `body` at `/who` and at `/<dir>/who` for each of `dirs`
/// (the gateway forwards paths unchanged).
fn who(body: &str, dirs: &[&str]) -> Nginx {
    let paths: Vec<String> = std::iter::once("who".to_owned())
        .chain(dirs.iter().map(|d| format!("{d}/who")))
        .collect();
    let files: Vec<(&str, &[u8])> = paths
        .iter()
        .map(|p| (p.as_str(), body.as_bytes()))
        .collect();
    Nginx::start(&files)
}

/// A host entry in flow style with a weight and labels.
fn host(addr: SocketAddr, weight: u32, labels: &str) -> String {
    format!("{{address: \"{addr}\", weight: {weight}, labels: {{{labels}}}}}")
}

/// GET `url` `n` times over `clients` concurrent keep-alive connections
/// (with `headers`); the count of each (status, body) seen.
async fn tally(
    url: &str,
    n: usize,
    clients: usize,
    headers: &[(&str, &str)],
) -> HashMap<(u16, String), usize> {
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (client, url) = (client.clone(), url.to_owned());
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let share = n / clients + usize::from(c < n % clients);
        tasks.push(tokio::spawn(async move {
            let mut seen: HashMap<(u16, String), usize> = HashMap::new();
            for _ in 0..share {
                let mut req = client.get(&url);
                for (k, v) in &headers {
                    req = req.header(k, v);
                }
                let resp = req
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("GET {url}: {e}"));
                let status = resp.status().as_u16();
                let body = resp.text().await.expect("a body");
                *seen.entry((status, body)).or_default() += 1;
            }
            seen
        }));
    }
    let mut all = HashMap::new();
    for t in tasks {
        for (k, v) in t.await.expect("a client task") {
            *all.entry(k).or_default() += v;
        }
    }
    all
}

fn ok(t: &HashMap<(u16, String), usize>, body: &str) -> usize {
    t.get(&(200, body.to_owned())).copied().unwrap_or(0)
}

/// 10,000 real requests per policy split 1:3 between two nginx upstreams
/// within ±5 % (random: within 4 standard deviations where that is wider).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_split_of_10k_real_requests_within_five_percent() {
    let policies = ["weighted_round_robin", "random", "least_request"];
    let (a, b) = (who("a", &policies), who("b", &policies));
    let hosts = format!(
        "[{}, {}]",
        host(a.addr(), 1, "name: a"),
        host(b.addr(), 3, "name: b")
    );
    let gw = Template {
        routes: policies
            .iter()
            .map(|p| format!("{{match: {{path_prefix: /{p}/}}, cluster: {p}}}"))
            .collect(),
        clusters: policies
            .iter()
            .map(|p| format!("{{name: {p}, lb: {p}, hosts: {hosts}}}"))
            .collect(),
        ..Default::default()
    }
    .start();
    for p in policies {
        let url = gw.url(&format!("/{p}/who"));
        // least_request departs from the weights under concurrency (on
        // purpose: toward the less loaded host); one request at a time, its
        // draws are weighted alone.
        let clients = if p == "least_request" { 1 } else { 4 };
        let t = tally(&url, 10_000, clients, &[]).await;
        let (got_a, got_b) = (ok(&t, "a"), ok(&t, "b"));
        assert_eq!(got_a + got_b, 10_000, "{p}: every request answered: {t:?}");
        eprintln!("{p}: a {got_a}, b {got_b} of 10000 (weights 1:3)");
        let want_b: f64 = 7_500.0;
        let sd = (10_000.0f64 * 0.75 * 0.25).sqrt();
        let tolerance = if p == "weighted_round_robin" {
            want_b * 0.05
        } else {
            (want_b * 0.05).max(4.0 * sd)
        };
        assert!(
            (got_b as f64 - want_b).abs() <= tolerance,
            "{p}: weight 3 of 4 got {got_b} of 10000 (a: {got_a})"
        );
    }
}

/// Canary by header over HTTP: `x-version` picks the hosts labelled with
/// that version; without it (or with an unknown one) `any` falls back to the
/// whole cluster and `none` answers as an empty cluster does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_canary_by_header_goes_to_the_labelled_hosts() {
    let (v1, v2) = (
        who("v1", &["stable", "strict"]),
        who("v2", &["stable", "strict"]),
    );
    let hosts = format!(
        "[{}, {}]",
        host(v1.addr(), 1, "version: v1"),
        host(v2.addr(), 1, "version: v2")
    );
    let gw = Template {
        routes: vec![
            "{match: {path_prefix: /strict/}, cluster: app, subset_from_header: {header: x-version, label: version}, subset_fallback: none}".into(),
            "{match: {path_prefix: /stable/}, cluster: app, subset: {version: v1}}".into(),
            "{cluster: app, subset_from_header: {header: x-version, label: version}}".into(),
        ],
        clusters: vec![format!("{{name: app, hosts: {hosts}}}")],
        ..Default::default()
    }
    .start();
    let url = gw.url("/who");
    let t = tally(&url, 200, 2, &[("x-version", "v2")]).await;
    assert_eq!(ok(&t, "v2"), 200, "{t:?}");
    let t = tally(&url, 200, 2, &[("x-version", "v1")]).await;
    assert_eq!(ok(&t, "v1"), 200, "{t:?}");
    // No header, unknown value: the whole cluster, both hosts in turn.
    let t = tally(&url, 200, 1, &[]).await;
    assert_eq!((ok(&t, "v1"), ok(&t, "v2")), (100, 100), "{t:?}");
    let t = tally(&url, 200, 1, &[("x-version", "v9")]).await;
    assert_eq!((ok(&t, "v1"), ok(&t, "v2")), (100, 100), "{t:?}");
    // A static subset ignores the header.
    let stable = gw.url("/stable/who");
    let t = tally(&stable, 100, 1, &[("x-version", "v2")]).await;
    assert_eq!(ok(&t, "v1"), 100, "{t:?}");
    let strict = gw.url("/strict/who");
    let t = tally(&strict, 50, 1, &[("x-version", "v2")]).await;
    assert_eq!(ok(&t, "v2"), 50, "{t:?}");
    // `none`: no upstream at all for an unknown version (502, as an empty cluster).
    let t = tally(&strict, 20, 1, &[("x-version", "v9")]).await;
    let statuses: Vec<u16> = t.keys().map(|(s, _)| *s).collect();
    assert_eq!(statuses, [502], "{t:?}");
}

/// A Dubbo request for `com.example.Calc.slow("1")` with attachment
/// `x-version: version` (Hessian 2, two-way, as dubbo-remoting encodes one).
fn dubbo_slow_call(id: u64, version: Option<&str>) -> bytes::Bytes {
    use switchyard_codecs::hessian2::write_string;
    let calc = "com.example.Calc";
    let mut body = Vec::new();
    for s in ["2.0.2", calc, "1.0", "slow", "Ljava/lang/String;", "1"] {
        write_string(&mut body, s);
    }
    body.push(b'H');
    let mut attachments = vec![("path", calc), ("version", "1.0")];
    attachments.extend(version.map(|v| ("x-version", v)));
    for (k, v) in attachments {
        write_string(&mut body, k);
        write_string(&mut body, v);
    }
    body.push(b'Z');
    let flag = dubbo::FLAG_REQUEST | dubbo::FLAG_TWO_WAY | dubbo::SERIALIZATION_HESSIAN2;
    dubbo::encode(flag, 0, id, &body)
}

/// Send `count` calls on one connection and read as many responses.
fn dubbo_calls(addr: SocketAddr, count: u64, version: Option<&str>) {
    let mut s = TcpStream::connect(addr).expect("connect to the gateway");
    s.set_read_timeout(Some(WAIT)).unwrap();
    for id in 1..=count {
        s.write_all(&dubbo_slow_call(id, version))
            .expect("write a call");
    }
    let mut decoder = dubbo::Decoder::default();
    let mut buf = BytesMut::new();
    let mut chunk = [0u8; 4096];
    let mut got = 0;
    while got < count {
        match decoder.decode(&mut buf) {
            Ok(Some(_)) => {
                got += 1;
                continue;
            }
            Ok(None) => {}
            Err(e) => panic!("the gateway's answer does not decode: {e}"),
        }
        let n = s.read(&mut chunk).expect("responses");
        assert!(n > 0, "the gateway closed after {got} of {count} responses");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Canary by header over Dubbo: the `x-version` attachment picks the real
/// Node servers labelled with that version (counted in their logs).
#[test]
fn dubbo_canary_by_attachment_goes_to_the_labelled_servers() {
    let stable = RpcServer::start(RpcKind::Dubbo);
    let canary = RpcServer::start(RpcKind::Dubbo);
    let ports = Ports::new();
    let yaml = format!(
        "admin:\n  address: 127.0.0.1:{}\nlisteners:\n  - name: mesh\n    address: 127.0.0.1:{}\n    protocols: [dubbo]\n    route_table: rpc\n\
         route_tables:\n  - name: rpc\n    virtual_hosts:\n      - name: any\n        domains: [\"*\"]\n        routes:\n\
         \x20         - {{cluster: calc, subset: {{track: stable}}, subset_from_header: {{header: x-version, label: version}}}}\n\
         clusters:\n  - name: calc\n    hosts: [{}, {}]\n",
        ports.admin,
        ports.listen,
        host(stable.addr(), 1, "version: v1, track: stable"),
        host(canary.addr(), 1, "version: v2, track: stable"),
    );
    let gw = Gateway::start(&yaml);
    dubbo_calls(gw.addr(), 12, Some("v2"));
    assert_eq!(
        (stable.slow_calls_started(), canary.slow_calls_started()),
        (0, 12),
        "x-version: v2 goes to the canary only"
    );
    dubbo_calls(gw.addr(), 8, Some("v1"));
    assert_eq!(
        (stable.slow_calls_started(), canary.slow_calls_started()),
        (8, 12)
    );
    // Without the attachment: any host of the static subset.
    dubbo_calls(gw.addr(), 10, None);
    assert_eq!(
        stable.slow_calls_started() + canary.slow_calls_started(),
        30
    );
}

/// The Python upstream's count of `/slow` requests sleeping right now.
fn sleeping(up: &HttpUpstream) -> usize {
    let (status, body) = http_get(up.addr(), "/inflight").expect("GET /inflight");
    assert_eq!(status, 200);
    body.trim().parse().expect("a count")
}

/// `least_request` sends new requests away from a host that holds requests
/// open; `round_robin` over the same hosts does not (the control).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_request_avoids_the_host_holding_requests() {
    let (busy, idle) = (HttpUpstream::start(), HttpUpstream::start());
    let hosts = format!(
        "[{}, {}]",
        host(busy.addr(), 1, "name: busy"),
        host(idle.addr(), 1, "name: idle")
    );
    let gw = Template {
        routes: vec![
            // The held requests go to `busy` through a subset of the same
            // cluster: subset views share their hosts' in-flight counts.
            "{match: {path_prefix: /slow/}, cluster: lr, subset: {name: busy}}".into(),
            "{match: {path_prefix: /rr/}, cluster: rr}".into(),
            "{cluster: lr}".into(),
        ],
        clusters: vec![
            format!("{{name: lr, lb: least_request, request_timeout: 120s, hosts: {hosts}}}"),
            format!("{{name: rr, lb: round_robin, hosts: {hosts}}}"),
        ],
        ..Default::default()
    }
    .start();
    let held: Vec<_> = (0..4)
        .map(|_| {
            let url = gw.url("/slow/100000");
            tokio::spawn(async move { reqwest::get(url).await.map(|r| r.status()) })
        })
        .collect();
    wait_for("4 requests held at the busy host", WAIT, || {
        (sleeping(&busy) == 4).then_some(())
    });
    let client = reqwest::Client::new();
    let count = |url: String| {
        let client = client.clone();
        async move {
            let mut at: HashMap<String, usize> = HashMap::new();
            for _ in 0..100 {
                let r = client.get(&url).send().await.expect("GET");
                let port = r.headers()["x-upstream-port"].to_str().unwrap().to_owned();
                *at.entry(port).or_default() += 1;
            }
            at
        }
    };
    let lr = count(gw.url("/hello")).await;
    let rr = count(gw.url("/rr/hello")).await;
    // The held requests were still held all along (else the count proves nothing).
    assert_eq!(sleeping(&busy), 4);
    let (busy_port, idle_port) = (busy.port.to_string(), idle.port.to_string());
    assert_eq!(
        (lr.get(&busy_port), lr.get(&idle_port)),
        (None, Some(&100)),
        "least_request: every new request to the idle host"
    );
    assert_eq!(
        (rr.get(&busy_port), rr.get(&idle_port)),
        (Some(&50), Some(&50)),
        "round_robin ignores load"
    );
    for h in held {
        h.abort();
    }
}

/// `maglev` on the path over HTTP/1.1: each path always reaches the same
/// upstream, and the paths spread over both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maglev_keeps_each_path_on_one_upstream() {
    let (a, b) = (HttpUpstream::start(), HttpUpstream::start());
    let gw = Template {
        routes: vec!["{cluster: hashed}".into()],
        clusters: vec![format!(
            "{{name: hashed, lb: maglev, hash_on: path, hosts: [\"{}\", \"{}\"]}}",
            a.addr(),
            b.addr()
        )],
        ..Default::default()
    }
    .start();
    let client = reqwest::Client::new();
    let mut owners: HashMap<String, usize> = HashMap::new();
    for k in 0..20 {
        let path = format!("/hello/{k}");
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..5 {
            let r = client.get(gw.url(&path)).send().await.expect("GET");
            seen.insert(r.headers()["x-upstream-port"].to_str().unwrap().to_owned());
        }
        assert_eq!(seen.len(), 1, "{path} reached {seen:?}");
        *owners.entry(seen.into_iter().next().unwrap()).or_default() += 1;
    }
    assert_eq!(owners.len(), 2, "20 paths all on one host: {owners:?}");
}

/// `hash_on: source_ip`: each client address reaches one upstream whatever
/// it asks for, and the clients spread over both upstreams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_ip_hashing_keeps_each_client_on_one_upstream() {
    let (a, b) = (HttpUpstream::start(), HttpUpstream::start());
    let gw = Template {
        routes: vec!["{cluster: sticky}".into()],
        clusters: vec![format!(
            "{{name: sticky, lb: ring_hash, hash_on: source_ip, hosts: [\"{}\", \"{}\"]}}",
            a.addr(),
            b.addr()
        )],
        ..Default::default()
    }
    .start();
    let mut owners: HashMap<String, usize> = HashMap::new();
    for last in 2..=17u8 {
        let source = std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, last));
        let mut seen = std::collections::BTreeSet::new();
        for k in 0..4 {
            // A fresh connection per request: the hash, not a kept-alive
            // connection, holds the client to its upstream.
            let client = reqwest::Client::builder()
                .local_address(source)
                .pool_max_idle_per_host(0)
                .build()
                .unwrap();
            let r = client
                .get(gw.url(&format!("/hello?k={k}")))
                .send()
                .await
                .expect("GET");
            assert_eq!(r.status(), 200);
            seen.insert(r.headers()["x-upstream-port"].to_str().unwrap().to_owned());
        }
        assert_eq!(seen.len(), 1, "{source} reached {seen:?}");
        *owners.entry(seen.into_iter().next().unwrap()).or_default() += 1;
    }
    assert_eq!(
        owners.len(),
        2,
        "16 clients all on one upstream: {owners:?}"
    );
}
