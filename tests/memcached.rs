//! memcached through the gateway, with private `memcached` servers and real
//! clients (pymemcache, memcslap), on a sniffing listener shared with HTTP
//! and Redis; placement and multi-get merging compared with twemproxy over
//! the same servers, replies compared byte for byte with memcached's own.
mod common;

use std::io::{BufRead, Read, Write};
use std::net::SocketAddr;
use std::process::Command;

use common::*;

/// A gateway whose listener `edge` sniffs http1, redis and memcached;
/// memcached goes to cluster `cache` over `servers` (sharded with a
/// `memcached` block when `sharded`), Redis to `redis`.
fn gateway(servers: &[(SocketAddr, u32)], sharded: bool, redis: Option<SocketAddr>) -> Gateway {
    let ports = Ports::new();
    let hosts: Vec<String> = servers
        .iter()
        .map(|(a, w)| format!("{{address: \"{a}\", weight: {w}}}"))
        .collect();
    let mut y = format!(
        "admin:\n  address: 127.0.0.1:{}\nlisteners:\n  - name: edge\n    address: 127.0.0.1:{}\n    protocols: [http1, redis, memcached]\n    route_table: main\n",
        ports.admin, ports.listen
    );
    y += "route_tables:\n  - name: main\n    virtual_hosts:\n      - name: any\n        domains: [\"*\"]\n        routes:\n";
    y += "          - {match: {protocol: memcached}, cluster: cache}\n";
    if redis.is_some() {
        y += "          - {match: {protocol: redis}, cluster: redis}\n";
    }
    y += "          - {match: {protocol: http1}, direct_response: {status: 200, body: gateway}}\n";
    y += &format!(
        "clusters:\n  - name: cache\n    request_timeout: 2s\n    hosts: [{}]\n",
        hosts.join(", ")
    );
    if sharded {
        y += "    memcached: {hash: fnv1a_64}\n";
    }
    if let Some(r) = redis {
        y += &format!("  - name: redis\n    hosts: [\"{r}\"]\n");
    }
    Gateway::start(&y)
}

/// A raw memcached client: write bytes, read replies.
struct Mc {
    conn: RawConn,
}

impl Mc {
    fn connect(addr: SocketAddr) -> Self {
        Mc {
            conn: RawConn::connect(addr),
        }
    }

    fn line(&mut self) -> Vec<u8> {
        let mut line = Vec::new();
        self.conn.reader.read_until(b'\n', &mut line).unwrap();
        assert!(line.ends_with(b"\n"), "connection ended mid-line: {line:?}");
        line
    }

    /// Send `request` and read `replies` replies (a retrieval's `VALUE`
    /// blocks and `END` are one; a `VA` line and its data are one).
    fn ask(&mut self, request: &[u8], replies: usize) -> String {
        self.conn.reader.get_mut().write_all(request).unwrap();
        let mut out = Vec::new();
        for _ in 0..replies {
            loop {
                let line = self.line();
                out.extend_from_slice(&line);
                let text = String::from_utf8_lossy(&line).trim_end().to_owned();
                let mut data = |n: usize| {
                    let mut d = vec![0u8; n + 2];
                    self.conn.reader.read_exact(&mut d).unwrap();
                    d
                };
                if let Some(rest) = text.strip_prefix("VALUE ") {
                    let n: usize = rest.split(' ').nth(2).unwrap().parse().unwrap();
                    out.extend(data(n));
                    continue;
                }
                if text.starts_with("STAT ") {
                    continue;
                }
                if let Some(rest) = text.strip_prefix("VA ") {
                    let n: usize = rest.split(' ').next().unwrap().parse().unwrap();
                    out.extend(data(n));
                }
                break;
            }
        }
        String::from_utf8(out).unwrap()
    }
}

fn three_servers() -> (Vec<MemcachedServer>, Vec<(SocketAddr, u32)>) {
    let shards: Vec<MemcachedServer> = (0..3).map(|_| MemcachedServer::start()).collect();
    let servers = shards
        .iter()
        .map(MemcachedServer::addr)
        .zip([1, 2, 1])
        .collect();
    (shards, servers)
}

/// Keys varying in their first characters (twemproxy's fnv1a_64 puts keys
/// differing only in a last digit next to each other on the ring).
fn keys(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("{i}:user:{}", i * 7919 % 1000))
        .collect()
}

#[test]
fn ketama_places_keys_where_twemproxy_does() {
    let (shards, servers) = three_servers();
    let twem = Twemproxy::memcached(&servers);
    let gw = gateway(&servers, true, None);
    let keys = keys(300);
    let mut t = Mc::connect(twem.addr());
    for k in &keys {
        assert_eq!(
            t.ask(format!("set {k} 0 0 {}\r\n{k}\r\n", k.len()).as_bytes(), 1),
            "STORED\r\n"
        );
    }
    // Written through twemproxy, each key is found through the gateway...
    let mut g = Mc::connect(gw.addr());
    for k in &keys {
        let want = format!("VALUE {k} 0 {}\r\n{k}\r\nEND\r\n", k.len());
        assert_eq!(g.ask(format!("get {k}\r\n").as_bytes(), 1), want, "{k}");
    }
    // ...and on exactly one server; every server holds some.
    let mut direct: Vec<Mc> = shards.iter().map(|s| Mc::connect(s.addr())).collect();
    let mut held = [0usize; 3];
    for k in &keys {
        let on: Vec<usize> = (0..3)
            .filter(|&i| direct[i].ask(format!("get {k}\r\n").as_bytes(), 1) != "END\r\n")
            .collect();
        assert_eq!(on.len(), 1, "{k} is on {on:?}");
        held[on[0]] += 1;
    }
    assert!(held.iter().all(|&n| n > 0), "{held:?}");
    // The weight-2 server holds about half.
    assert!(held[1] > held[0] && held[1] > held[2], "{held:?}");
}

#[test]
fn multi_get_across_shards_answers_as_twemproxy_does() {
    let (_shards, servers) = three_servers();
    let twem = Twemproxy::memcached(&servers);
    let gw = gateway(&servers, true, None);
    let mut g = Mc::connect(gw.addr());
    let keys = keys(40);
    for (i, k) in keys.iter().enumerate() {
        let v = format!("value-{i}");
        let set = format!("set {k} {i} 0 {}\r\n{v}\r\n", v.len());
        assert_eq!(g.ask(set.as_bytes(), 1), "STORED\r\n");
    }
    // Keys over every shard, some missing, one repeated.
    let mut asked: Vec<&str> = keys.iter().map(String::as_str).collect();
    asked.insert(5, "missing:1");
    asked.push("missing:2");
    asked.push(&keys[3]);
    let get = format!("get {}\r\n", asked.join(" "));
    let mut t = Mc::connect(twem.addr());
    let through_gw = g.ask(get.as_bytes(), 1);
    // The same VALUE blocks as twemproxy (which does not keep the client's
    // key order across servers: compared as sets)...
    assert_eq!(blocks(&through_gw), blocks(&t.ask(get.as_bytes(), 1)));
    // ...but in the client's key order, as memcached itself answers, one END.
    let listed: Vec<&str> = through_gw
        .lines()
        .filter_map(|l| l.strip_prefix("VALUE "))
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    let mut want: Vec<&str> = keys.iter().map(String::as_str).collect();
    want.push(&keys[3]);
    assert_eq!(listed, want);
    assert_eq!(through_gw.matches("END\r\n").count(), 1);
    // gets: the same cas ids as the servers give twemproxy.
    let gets = format!("gets {}\r\n", asked.join(" "));
    assert_eq!(
        blocks(&g.ask(gets.as_bytes(), 1)),
        blocks(&t.ask(gets.as_bytes(), 1))
    );
}

/// A retrieval reply's `VALUE` blocks, sorted, and its last line.
fn blocks(reply: &str) -> (Vec<String>, String) {
    let mut lines = reply.split_inclusive("\r\n");
    let mut out = Vec::new();
    let mut last = String::new();
    while let Some(line) = lines.next() {
        if line.starts_with("VALUE ") {
            out.push(format!("{line}{}", lines.next().unwrap_or_default()));
        } else {
            last = line.to_owned();
        }
    }
    out.sort();
    (out, last)
}

/// The same bytes to memcached itself and to the gateway (one host) get the
/// same answer: classic and meta commands, noreply, quiet mode, bad input.
#[test]
fn answers_as_memcached_itself() {
    // Two servers, so that both sessions start from the same (empty) state.
    let server = MemcachedServer::start();
    let behind = MemcachedServer::start();
    let gw = gateway(&[(behind.addr(), 1)], false, None);
    let session: &[(&[u8], usize)] = &[
        (b"set a 3 0 5\r\nhello\r\n", 1),
        (b"set n 0 0 1 noreply\r\n7\r\nget a n\r\n", 1),
        (b"gets a\r\n", 1),
        (
            b"append a 0 0 1\r\n!\r\nprepend a 0 0 1 noreply\r\n>\r\nget a\r\n",
            2,
        ),
        (b"incr n 5\r\ndecr n 100\r\nincr missing 1\r\n", 3),
        (b"add a 0 0 1\r\nx\r\nreplace nope 0 0 1\r\nx\r\n", 2),
        (b"touch a 100\r\ngat 0 a\r\n", 2),
        (b"ms m 3 T0 F5\r\nabc\r\nmg m v f k\r\nmg nope v\r\n", 3),
        (
            b"ms q 1 q\r\nz\r\nmg q v q\r\nmg nope v q\r\nmd q q\r\nmd q q\r\nmn\r\n",
            3,
        ),
        (b"ma n\r\nma n v D10\r\n", 2),
        (
            b"delete a\r\ndelete a\r\ndelete n noreply\r\nget a n\r\n",
            3,
        ),
        (b"bogus\r\n", 1),
        (b"set k x 0 1\r\nv\r\n", 2),
        (b"get\r\n", 1),
        (b"mn\r\n", 1),
    ];
    let mut direct = Mc::connect(server.addr());
    let mut g = Mc::connect(gw.addr());
    for (i, (request, replies)) in session.iter().enumerate() {
        let want = direct.ask(request, *replies);
        let got = g.ask(request, *replies);
        assert_eq!(got, want, "step {i}: {}", String::from_utf8_lossy(request));
    }
    // version is forwarded: memcached's own.
    let v = g.ask(b"version\r\n", 1);
    assert_eq!(v, direct.ask(b"version\r\n", 1));
    assert!(v.starts_with("VERSION 1."), "{v}");
    // quit closes the connection.
    g.conn.reader.get_mut().write_all(b"quit\r\n").unwrap();
    let mut rest = Vec::new();
    assert_eq!(g.conn.reader.read_to_end(&mut rest).unwrap(), 0);
}

#[test]
fn pymemcache_and_redis_and_http_share_the_port() {
    let (_shards, servers) = three_servers();
    let redis = RedisServer::start();
    let gw = gateway(&servers, true, Some(redis.addr()));
    let addr = gw.addr();
    // pymemcache's default is noreply for writes: set_many answers nothing.
    let script = format!(
        r#"
from pymemcache.client.base import Client
c = Client(("127.0.0.1", {port}), connect_timeout=5, timeout=5)
items = {{"key:%d" % i: ("v%d" % i).encode() for i in range(200)}}
assert c.set_many(items) == [], "set_many failed"
got = c.get_many(list(items))
assert got == items, "get_many: %d of %d" % (len(got), len(items))
assert c.add("key:1", b"x", noreply=False) is False
assert c.set("counter", b"10", noreply=False) is True
assert c.incr("counter", 5) == 15
value, cas = c.gets("counter")
assert value == b"15"
assert c.cas("counter", b"20", cas, noreply=False) is True
assert c.cas("counter", b"30", cas, noreply=False) is False
assert c.delete("counter", noreply=False) is True
assert c.get("counter") is None
assert c.touch("key:2", 100, noreply=False) is True
print("pymemcache ok", len(got))
"#,
        port = addr.port()
    );
    let out = Command::new(require("python3"))
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        gw.log()
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "pymemcache ok 200"
    );
    // Redis and HTTP on the same port.
    let mut r = RawConn::connect(addr);
    r.send(b"*1\r\n$4\r\nPING\r\n");
    assert_eq!(r.reply().unwrap(), b"+PONG\r\n");
    let (status, body) = http_get(addr, "/").unwrap();
    assert_eq!((status, body.as_str()), (200, "gateway"));
    // Connections counted per protocol, memcached labelled by its registry name.
    let n = gw.metric(
        "switchyard_downstream_connections_total",
        &[("listener", "edge"), ("protocol", "memcached")],
    );
    assert!(n >= 1.0, "{}", gw.metrics());
}

#[test]
fn a_dead_server_answers_server_error_and_other_keys_keep_working() {
    let mut shards: Vec<MemcachedServer> = (0..2).map(|_| MemcachedServer::start()).collect();
    let servers: Vec<(SocketAddr, u32)> = shards
        .iter()
        .map(MemcachedServer::addr)
        .zip([1, 1])
        .collect();
    let gw = gateway(&servers, true, None);
    let mut g = Mc::connect(gw.addr());
    let keys = keys(20);
    for k in &keys {
        assert_eq!(
            g.ask(format!("set {k} 0 0 1\r\nv\r\n").as_bytes(), 1),
            "STORED\r\n"
        );
    }
    // Which server holds which key (asked directly).
    let mut on_first = Vec::new();
    let mut on_second = Vec::new();
    let mut first = Mc::connect(shards[0].addr());
    for k in &keys {
        if first.ask(format!("get {k}\r\n").as_bytes(), 1) == "END\r\n" {
            on_second.push(k.clone());
        } else {
            on_first.push(k.clone());
        }
    }
    assert!(!on_first.is_empty() && !on_second.is_empty());
    shards[1].kill();
    for k in &on_second {
        let r = g.ask(format!("get {k}\r\n").as_bytes(), 1);
        assert!(r.starts_with("SERVER_ERROR "), "{k}: {r}");
    }
    for k in &on_first {
        let r = g.ask(format!("get {k}\r\n").as_bytes(), 1);
        assert_eq!(r, format!("VALUE {k} 0 1\r\nv\r\nEND\r\n"));
    }
    // A multi-get touching the dead server fails as a whole, as twemproxy's does.
    let both = format!("get {} {}\r\n", on_first[0], on_second[0]);
    assert!(g.ask(both.as_bytes(), 1).starts_with("SERVER_ERROR "));
    // Back up (empty): its keys miss, nothing is stuck.
    shards[1].restart();
    let r = g.ask(format!("get {}\r\n", on_second[0]).as_bytes(), 1);
    assert_eq!(r, "END\r\n");
}

#[test]
fn memcslap_load_through_the_gateway() {
    let (shards, servers) = three_servers();
    let gw = gateway(&servers, true, None);
    let server = format!("--servers=127.0.0.1:{}", gw.addr().port());
    for test in ["set", "get"] {
        let out = Command::new(require("memcslap"))
            .args([
                &server,
                "--concurrency=4",
                "--execute-number=500",
                &format!("--test={test}"),
            ])
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "memcslap --test={test}: {text}\n{}",
            gw.log()
        );
        assert!(text.contains("Time total:"), "{text}");
        let lower = text.to_lowercase();
        assert!(
            !lower.contains("fail") && !lower.contains("error"),
            "{text}"
        );
    }
    // The load was spread over every server.
    for s in &shards {
        let mut c = Mc::connect(s.addr());
        let stats = c.ask(b"stats\r\n", 1);
        let items: u64 = stats
            .lines()
            .find_map(|l| l.strip_prefix("STAT curr_items "))
            .unwrap()
            .parse()
            .unwrap();
        assert!(items > 0, "{stats}");
    }
}
