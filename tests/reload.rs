//! Zero-loss reloads and binary upgrades, with real clients and servers:
//! HTTP/1.1 (keep-alive and a new connection per request, to nginx),
//! HTTP/2 (the `h2` crate's client, to nginx h2c), Redis (redis-rs, to
//! redis-server), MQTT (rumqttc, to mosquitto) and Bolt (sofa-rpc-node's
//! client and server) run while the gateway reloads 20 times — a route
//! changed, a listener added and removed, a host added and removed — and
//! every request must be answered correctly, and every connection opened
//! before the first reload must still serve after the last.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::*;

const FILE: &[u8] = b"the same bytes from every web host\n";

/// Counts of one load: requests answered correctly, and failures (with the
/// first few reasons).
#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    failed: AtomicUsize,
    reasons: std::sync::Mutex<Vec<String>>,
}

impl Tally {
    fn ok(&self) {
        self.ok.fetch_add(1, Ordering::Relaxed);
    }
    fn fail(&self, why: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut r = self.reasons.lock().unwrap();
        if r.len() < 10 {
            r.push(why);
        }
    }
    #[track_caller]
    fn assert_clean(&self, what: &str) {
        let (ok, failed) = (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        );
        assert_eq!(
            failed,
            0,
            "{what}: {failed} failed of {}; first reasons: {:#?}",
            ok + failed,
            self.reasons.lock().unwrap()
        );
        assert!(ok > 0, "{what}: no request was made");
        eprintln!("{what}: {ok} requests, none failed");
    }
}

/// Stops the loads when the test ends, however it ends.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// One HTTP/1.1 exchange on `conn` (keep-alive): (status, body).
fn http1_exchange(
    conn: &mut BufReader<TcpStream>,
    path: &str,
    close: bool,
) -> std::io::Result<(u16, Vec<u8>)> {
    let extra = if close { "Connection: close\r\n" } else { "" };
    conn.get_mut()
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: test.local\r\n{extra}\r\n").as_bytes())?;
    let mut status_line = String::new();
    if conn.read_line(&mut status_line)? == 0 {
        return Err(std::io::Error::other("closed before the response"));
    }
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {status_line:?}")))?;
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if conn.read_line(&mut line)? == 0 {
            return Err(std::io::Error::other("closed inside the head"));
        }
        if line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    conn.read_exact(&mut body)?;
    Ok((status, body))
}

fn connect(addr: SocketAddr) -> std::io::Result<BufReader<TcpStream>> {
    let s = TcpStream::connect_timeout(&addr, WAIT)?;
    s.set_read_timeout(Some(WAIT))?;
    Ok(BufReader::new(s))
}

/// The body of `GET path` on a new connection.
fn get_new(addr: SocketAddr, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
    http1_exchange(&mut connect(addr)?, path, true)
}

/// What the test's config varies from reload to reload.
struct Shape {
    version: usize,
    extra_listener: bool,
    second_web_host: bool,
}

struct Peers {
    web: Nginx,
    web2: Nginx,
    h2web: Nginx,
    redis: RedisServer,
    broker: Mosquitto,
    bolt: RpcServer,
}

struct Addrs {
    admin: u16,
    edge: u16,
    extra: u16,
}

fn config(p: &Peers, a: &Addrs, s: &Shape) -> String {
    let mut y = format!(
        "admin:\n  address: 127.0.0.1:{}\ndrain_timeout: 5s\nlisteners:\n  - name: edge\n    address: 127.0.0.1:{}\n    protocols: [http1, http2, redis, mqtt, bolt]\n    route_table: main\n",
        a.admin, a.edge
    );
    if s.extra_listener {
        y += &format!(
            "  - name: extra\n    address: 127.0.0.1:{}\n    protocols: [http1]\n    route_table: main\n",
            a.extra
        );
    }
    y += "route_tables:\n  - name: main\n    virtual_hosts:\n      - name: any\n        domains: [\"*\"]\n        routes:\n";
    y += &format!(
        "          - {{match: {{path_prefix: /version}}, direct_response: {{status: 200, body: \"v{}\"}}}}\n",
        s.version
    );
    y += "          - {match: {protocol: http2}, cluster: h2web}\n";
    y += "          - {match: {protocol: http1}, cluster: web}\n";
    y += "          - {match: {protocol: redis}, cluster: redis}\n";
    y += "          - {match: {protocol: mqtt}, cluster: broker}\n";
    y += "          - {match: {protocol: bolt}, cluster: rpc}\n";
    let web = if s.second_web_host {
        format!("\"{}\", \"{}\"", p.web.addr(), p.web2.addr())
    } else {
        format!("\"{}\"", p.web.addr())
    };
    y += &format!(
        "clusters:\n  - {{name: web, hosts: [{web}]}}\n  - {{name: h2web, protocol: http2, hosts: [\"{}\"]}}\n  - {{name: redis, hosts: [\"{}\"]}}\n  - {{name: broker, hosts: [\"{}\"]}}\n  - {{name: rpc, hosts: [\"{}\"]}}\n",
        p.h2web.addr(),
        p.redis.addr(),
        p.broker.addr(),
        p.bolt.addr()
    );
    y
}

fn refused(addr: SocketAddr) -> bool {
    matches!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_reloads_under_load_lose_no_request_and_no_connection() {
    let peers = Peers {
        web: Nginx::start(&[("f.txt", FILE)]),
        web2: Nginx::start(&[("f.txt", FILE)]),
        h2web: Nginx::start_h2c(&[("f.txt", FILE)], 1_000_000),
        redis: RedisServer::start(),
        broker: Mosquitto::start(),
        bolt: RpcServer::start(RpcKind::Bolt),
    };
    let addrs = Addrs {
        admin: free_port(),
        edge: free_port(),
        extra: free_port(),
    };
    let mut shape = Shape {
        version: 0,
        extra_listener: false,
        second_web_host: false,
    };
    let gw = Gateway::start(&config(&peers, &addrs, &shape));
    let edge = local(addrs.edge);
    let extra = local(addrs.extra);
    assert!(refused(extra), "no extra listener yet");
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_on_failure = StopOnDrop(stop.clone());
    let mut loads = Vec::new();

    // HTTP/1.1: two keep-alive connections opened now and used throughout,
    // and a loop of new connections.
    let h1_long = Arc::new(Tally::default());
    for _ in 0..2 {
        let (t, stop) = (h1_long.clone(), stop.clone());
        let mut conn = connect(edge).unwrap();
        loads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match http1_exchange(&mut conn, "/f.txt", false) {
                    Ok((200, body)) if body == FILE => t.ok(),
                    Ok((status, body)) => t.fail(format!(
                        "keep-alive: {status} {:?}",
                        String::from_utf8_lossy(&body)
                    )),
                    Err(e) => {
                        t.fail(format!("keep-alive connection: {e}"));
                        return;
                    }
                }
            }
        }));
    }
    let h1_new = Arc::new(Tally::default());
    {
        let (t, stop) = (h1_new.clone(), stop.clone());
        loads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match get_new(edge, "/f.txt") {
                    Ok((200, body)) if body == FILE => t.ok(),
                    Ok((status, _)) => t.fail(format!("new connection: status {status}")),
                    Err(e) => t.fail(format!("new connection: {e}")),
                }
            }
        }));
    }

    // HTTP/2: one client connection, concurrent streams, all reloads long.
    let h2 = Arc::new(Tally::default());
    let h2_task = {
        let (t, stop) = (h2.clone(), stop.clone());
        let tcp = tokio::net::TcpStream::connect(edge).await.unwrap();
        let (send, conn) = h2::client::handshake(tcp).await.unwrap();
        let conn_task = tokio::spawn(conn);
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let mut streams = Vec::new();
                for _ in 0..4 {
                    let mut send = send.clone();
                    streams.push(tokio::spawn(async move {
                        send = send.ready().await?;
                        let req = http::Request::get("http://test.local/f.txt")
                            .body(())
                            .unwrap();
                        let (resp, _) = send.send_request(req, true)?;
                        let resp = resp.await?;
                        let status = resp.status().as_u16();
                        let mut body = resp.into_body();
                        let mut got = Vec::new();
                        while let Some(chunk) = body.data().await {
                            let chunk = chunk?;
                            let _ = body.flow_control().release_capacity(chunk.len());
                            got.extend_from_slice(&chunk);
                        }
                        Ok::<_, h2::Error>((status, got))
                    }));
                }
                for s in streams {
                    match s.await.unwrap() {
                        Ok((200, body)) if body == FILE => t.ok(),
                        Ok((status, _)) => t.fail(format!("h2 status {status}")),
                        Err(e) => t.fail(format!("h2: {e}")),
                    }
                }
            }
            drop(send);
            conn_task.abort();
        })
    };

    // Redis: a multiplexed connection (pipelined commands from 4 tasks).
    let redis = Arc::new(Tally::default());
    let redis_conn = redis::Client::open(format!("redis://{edge}/"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut redis_tasks = Vec::new();
    for task in 0..4 {
        let (t, stop, mut conn) = (redis.clone(), stop.clone(), redis_conn.clone());
        redis_tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("reload:{task}:{}", i % 50);
                let value = format!("{task}-{i}");
                let r: redis::RedisResult<String> = async {
                    let () = redis::cmd("SET")
                        .arg(&key)
                        .arg(&value)
                        .query_async(&mut conn)
                        .await?;
                    redis::cmd("GET").arg(&key).query_async(&mut conn).await
                }
                .await;
                match r {
                    Ok(v) if v == value => t.ok(),
                    Ok(v) => t.fail(format!("redis GET {key}: {v:?}, want {value:?}")),
                    Err(e) => t.fail(format!("redis: {e}")),
                }
                i += 1;
            }
        }));
    }

    // MQTT: one client subscribed to its own topic, publishing QoS 1 with a
    // sequence number; every message must come back, in order.
    let mqtt = Arc::new(Tally::default());
    let mqtt_task = {
        let (t, stop) = (mqtt.clone(), stop.clone());
        let mut opts = rumqttc::MqttOptions::new("reload-client", "127.0.0.1", addrs.edge);
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_clean_session(true);
        let (client, mut events) = rumqttc::AsyncClient::new(opts, 64);
        client
            .subscribe("reload/seq", rumqttc::QoS::AtLeastOnce)
            .await
            .unwrap();
        tokio::spawn(async move {
            let mut next_sent = 0u64;
            let mut next_seen = 0u64;
            let mut subscribed = false;
            loop {
                if subscribed && next_sent < next_seen + 8 && !stop.load(Ordering::Relaxed) {
                    client
                        .publish(
                            "reload/seq",
                            rumqttc::QoS::AtLeastOnce,
                            false,
                            next_sent.to_string(),
                        )
                        .await
                        .unwrap();
                    next_sent += 1;
                }
                if stop.load(Ordering::Relaxed) && next_seen == next_sent {
                    return;
                }
                let event = tokio::time::timeout(WAIT, events.poll()).await;
                match event {
                    Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_)))) => {
                        subscribed = true
                    }
                    Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)))) => {
                        let n: u64 = String::from_utf8_lossy(&p.payload)
                            .parse()
                            .unwrap_or(u64::MAX);
                        if n == next_seen {
                            t.ok();
                        } else {
                            t.fail(format!("mqtt: got {n}, want {next_seen}"));
                        }
                        next_seen = n + 1;
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        t.fail(format!("mqtt connection: {e}"));
                        return;
                    }
                    Err(_) => {
                        t.fail("mqtt: nothing for 10 s".into());
                        return;
                    }
                }
            }
        })
    };

    // Bolt: one sofa-rpc-node client connection making batches of calls
    // (with a slow call between them) through every reload.
    let mut bolt_script: Vec<String> = Vec::new();
    for _ in 0..60 {
        bolt_script.extend(["20", "plus", "$i", "1000"].map(String::from));
        bolt_script.push("--then".into());
        bolt_script.extend(["1", "slow", "250"].map(String::from));
        bolt_script.push("--then".into());
    }
    bolt_script.pop();
    let bolt_args: Vec<&str> = bolt_script.iter().map(String::as_str).collect();
    let bolt = spawn_rpc_client(edge, RpcKind::Bolt, Duration::from_secs(20), &bolt_args);

    // Let every load get going on the first config.
    wait_for("every load to make requests", WAIT, || {
        (h1_long.ok.load(Ordering::Relaxed) > 10
            && h1_new.ok.load(Ordering::Relaxed) > 10
            && h2.ok.load(Ordering::Relaxed) > 10
            && redis.ok.load(Ordering::Relaxed) > 10
            && mqtt.ok.load(Ordering::Relaxed) > 10)
            .then_some(())
    });

    for round in 1..=20 {
        shape.version = round;
        shape.extra_listener = round % 2 == 1;
        shape.second_web_host = round % 4 < 2;
        std::fs::write(&gw.config_path, config(&peers, &addrs, &shape)).unwrap();
        gw.signal("HUP");
        let want = format!("v{round}");
        wait_for(&format!("reload {round} to apply"), WAIT, || {
            let (_, body) = get_new(edge, "/version").ok()?;
            (body == want.as_bytes()).then_some(())
        });
        if shape.extra_listener {
            let (status, body) = get_new(extra, "/f.txt").expect("the added listener serves");
            assert_eq!((status, &body[..]), (200, FILE), "round {round}");
        } else {
            wait_for("the removed listener to refuse connections", WAIT, || {
                refused(extra).then_some(())
            });
        }
        // Some load on this config before the next reload.
        let before = h1_new.ok.load(Ordering::Relaxed);
        wait_for("requests on the new config", WAIT, || {
            (h1_new.ok.load(Ordering::Relaxed) > before + 5).then_some(())
        });
    }

    stop.store(true, Ordering::Relaxed);
    for l in loads {
        l.join().unwrap();
    }
    h2_task.await.unwrap();
    for r in redis_tasks {
        r.await.unwrap();
    }
    tokio::time::timeout(WAIT, mqtt_task)
        .await
        .expect("the MQTT load to finish")
        .unwrap();
    let bolt = bolt.wait();

    h1_long.assert_clean("HTTP/1.1 keep-alive connections opened before the first reload");
    h1_new.assert_clean("HTTP/1.1 new connections");
    h2.assert_clean("HTTP/2 streams on a connection opened before the first reload");
    redis.assert_clean("Redis commands on a connection opened before the first reload");
    mqtt.assert_clean("MQTT QoS 1 publishes on a connection opened before the first reload");
    let mut bolt_calls = 0;
    for (i, step) in bolt.steps.iter().enumerate() {
        assert_eq!(step.errors, 0, "bolt step {i}: {}", step.error_text());
        if i % 2 == 0 {
            let want: Vec<Option<String>> = (0..20).map(|j| Some((j + 1000).to_string())).collect();
            assert_eq!(step.values, want, "bolt step {i}");
        }
        bolt_calls += step.ok;
    }
    assert_eq!(
        (bolt.connections, bolt.closed),
        (1, 0),
        "the Bolt client's one connection lived through every reload"
    );
    eprintln!("Bolt: {bolt_calls} calls on one connection, none failed");
    assert_eq!(
        gw.metric("switchyard_config_reloads_total", &[("result", "ok")]),
        20.0
    );
    assert!(refused(extra), "the extra listener ends removed");
    let log = gw.log();
    assert!(log.contains("listeners added: extra"), "{log}");
    assert!(log.contains("listeners removed: extra"), "{log}");
}

/// A gateway process started with `--takeover SOCKET` (killed on drop).
struct Upgradable {
    child: Child,
    log: std::path::PathBuf,
}

impl Upgradable {
    fn start(config: &Path, socket: &Path, log: std::path::PathBuf, admin: SocketAddr) -> Self {
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["run", "-c"])
            .arg(config)
            .arg("--takeover")
            .arg(socket)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn the switchyard binary");
        let pid = child.id().to_string();
        // Ready once this process answers the admin API (the old one may too,
        // until it hands over: tell them apart by the log line).
        wait_for("the new gateway to serve", WAIT, || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "gateway {pid} exited with {status}:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            (text.contains("listening for a binary upgrade") && http_get(admin, "/ready").is_ok())
                .then_some(())
        });
        Upgradable { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait for the process to exit by itself (bounded).
    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let child = &mut self.child;
        wait_for(
            "the old gateway to drain and exit",
            Duration::from_secs(30),
            || child.try_wait().ok().flatten(),
        )
    }
}

impl Drop for Upgradable {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- {} ----\n{}", self.log.display(), self.log());
        }
    }
}

/// One Redis exchange on a new connection: `SET key value` and `GET key`
/// written at once, both replies read.
fn redis_set_get(addr: SocketAddr, key: &str, value: &str) -> std::io::Result<String> {
    let mut conn = connect(addr)?;
    let mut req = resp_bytes(&[b"SET", key.as_bytes(), value.as_bytes()]);
    req.extend(resp_bytes(&[b"GET", key.as_bytes()]));
    conn.get_mut().write_all(&req)?;
    let mut line = String::new();
    conn.read_line(&mut line)?;
    if line != "+OK\r\n" {
        return Err(std::io::Error::other(format!("SET answered {line:?}")));
    }
    line.clear();
    conn.read_line(&mut line)?;
    let len: usize = line
        .strip_prefix('$')
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("GET answered {line:?}")))?;
    let mut body = vec![0; len + 2];
    conn.read_exact(&mut body)?;
    body.truncate(len);
    Ok(String::from_utf8_lossy(&body).into_owned())
}

#[test]
fn binary_upgrade_under_load_loses_no_request() {
    let web = Nginx::start(&[("f.txt", FILE)]);
    let slow = HttpUpstream::start();
    let redis = RedisServer::start();
    let (admin, listen) = (local(free_port()), local(free_port()));
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("switchyard.yaml");
    std::fs::write(
        &config_path,
        format!(
            "admin:\n  address: {admin}\ndrain_timeout: 5s\nlisteners:\n  - name: edge\n    address: {listen}\n    protocols: [http1, redis]\n    route_table: main\nroute_tables:\n  - name: main\n    virtual_hosts:\n      - name: any\n        domains: [\"*\"]\n        routes:\n          - {{match: {{path_prefix: /slow}}, cluster: slow}}\n          - {{match: {{protocol: http1}}, cluster: web}}\n          - {{match: {{protocol: redis}}, cluster: redis}}\nclusters:\n  - {{name: web, hosts: [\"{}\"]}}\n  - {{name: slow, hosts: [\"{}\"]}}\n  - {{name: redis, hosts: [\"{}\"]}}\n",
            web.addr(),
            slow.addr(),
            redis.addr()
        ),
    )
    .unwrap();
    let socket = dir.path().join("takeover.sock");
    let mut old = Upgradable::start(&config_path, &socket, dir.path().join("gw1.log"), admin);

    // New connections in a tight loop (each one a fresh accept: the ones in
    // the kernel's queue at the hand-over must not be lost), and a request
    // in flight on the old process while it drains.
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_on_failure = StopOnDrop(stop.clone());
    let http = Arc::new(Tally::default());
    let resp = Arc::new(Tally::default());
    let mut loads = Vec::new();
    for n in 0..2 {
        let (t, halt) = (http.clone(), stop.clone());
        loads.push(std::thread::spawn(move || {
            while !halt.load(Ordering::Relaxed) {
                match get_new(listen, "/f.txt") {
                    Ok((200, body)) if body == FILE => t.ok(),
                    Ok((status, _)) => t.fail(format!("http {n}: status {status}")),
                    Err(e) => t.fail(format!("http {n}: {e}")),
                }
            }
        }));
        let (t, halt) = (resp.clone(), stop.clone());
        loads.push(std::thread::spawn(move || {
            let mut i = 0;
            while !halt.load(Ordering::Relaxed) {
                let value = format!("{n}-{i}");
                match redis_set_get(listen, &format!("up:{n}"), &value) {
                    Ok(v) if v == value => t.ok(),
                    Ok(v) => t.fail(format!("redis {n}: {v:?}, want {value:?}")),
                    Err(e) => t.fail(format!("redis {n}: {e}")),
                }
                i += 1;
            }
        }));
    }
    let count = |t: &Tally| t.ok.load(Ordering::Relaxed);
    wait_for("load on the first process", WAIT, || {
        (count(&http) > 20 && count(&resp) > 20).then_some(())
    });

    // Two upgrades in a row: each new process takes the sockets, the old
    // one finishes the request in flight on it, drains and exits by itself.
    let mut logs = Vec::new();
    for generation in 2..=3 {
        let mut in_flight = connect(listen).unwrap();
        in_flight
            .get_mut()
            .write_all(b"GET /slow/1000 HTTP/1.1\r\nHost: test.local\r\n\r\n")
            .unwrap();
        wait_for("the slow request to reach the upstream", WAIT, || {
            let (_, body) = http_get(slow.addr(), "/inflight").ok()?;
            (body.trim() == "1").then_some(())
        });
        let new = Upgradable::start(
            &config_path,
            &socket,
            dir.path().join(format!("gw{generation}.log")),
            admin,
        );
        let mut head = String::new();
        in_flight.read_line(&mut head).unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head:?}");
        let mut rest = Vec::new();
        in_flight.read_to_end(&mut rest).unwrap();
        assert!(
            String::from_utf8_lossy(&rest)
                .trim_end()
                .ends_with("slept 1000"),
            "the request in flight on the old process is answered before it exits"
        );
        let status = old.wait_exit();
        assert!(status.success(), "the old process exits cleanly: {status}");
        let text = old.log();
        assert!(
            text.contains("binary upgrade: listening sockets handed over"),
            "{text}"
        );
        assert!(text.contains("stopped"), "{text}");
        logs.push(text);
        assert!(
            new.log()
                .contains("took the old process's listening sockets"),
            "{}",
            new.log()
        );
        let (h, r) = (count(&http), count(&resp));
        wait_for("load on the new process", WAIT, || {
            (count(&http) > h + 20 && count(&resp) > r + 20).then_some(())
        });
        old = new;
    }
    stop.store(true, Ordering::Relaxed);
    for l in loads {
        l.join().unwrap();
    }
    http.assert_clean("HTTP/1.1 requests, a new connection each, across two upgrades");
    resp.assert_clean("Redis SET+GET, a new connection each, across two upgrades");
    let (status, _) = http_get(admin, "/ready").unwrap();
    assert_eq!(status, 200, "the last process serves the admin API");
}

/// A two-listener config for the drain and watch tests: `edge` (protocols
/// `edge_protocols`) and, when `extra` is given, listener `extra` there;
/// `/version` answers `version`, everything else goes to `web`.
fn small_config(
    admin: SocketAddr,
    edge: SocketAddr,
    edge_protocols: &str,
    extra: Option<SocketAddr>,
    version: &str,
    web: SocketAddr,
    top: &str,
) -> String {
    let mut y = format!(
        "admin:\n  address: {admin}\ndrain_timeout: 10s\n{top}listeners:\n  - name: edge\n    address: {edge}\n    protocols: [{edge_protocols}]\n    route_table: main\n"
    );
    if let Some(extra) = extra {
        y += &format!(
            "  - name: extra\n    address: {extra}\n    protocols: [http1]\n    route_table: main\n"
        );
    }
    y += &format!(
        "route_tables:\n  - name: main\n    virtual_hosts:\n      - name: any\n        domains: [\"*\"]\n        routes:\n          - {{match: {{path_prefix: /version}}, direct_response: {{status: 200, body: \"{version}\"}}}}\n          - {{match: {{protocol: http1}}, cluster: web}}\n          - {{match: {{protocol: redis}}, direct_response: {{status: 200, body: pong}}}}\nclusters:\n  - {{name: web, hosts: [\"{web}\"], request_timeout: 20s}}\n"
    );
    y
}

#[test]
fn removed_listener_drains_and_changed_listener_applies_to_new_connections() {
    let up = HttpUpstream::start();
    let (admin, edge, extra) = (local(free_port()), local(free_port()), local(free_port()));
    let gw = Gateway::start(&small_config(
        admin,
        edge,
        "http1",
        Some(extra),
        "v1",
        up.addr(),
        "",
    ));
    // A request in flight on `extra`, and a keep-alive connection on `edge`.
    let mut on_extra = connect(extra).unwrap();
    on_extra
        .get_mut()
        .write_all(b"GET /slow/1500 HTTP/1.1\r\nHost: test.local\r\n\r\n")
        .unwrap();
    wait_for("the slow request to reach the upstream", WAIT, || {
        let (_, body) = http_get(up.addr(), "/inflight").ok()?;
        (body.trim() == "1").then_some(())
    });
    let mut on_edge = connect(edge).unwrap();
    assert_eq!(
        http1_exchange(&mut on_edge, "/version", false).unwrap(),
        (200, b"v1".to_vec())
    );

    // Reload: `extra` removed; `edge` changed (Redis too) and a new route.
    std::fs::write(
        &gw.config_path,
        small_config(admin, edge, "http1, redis", None, "v2", up.addr(), ""),
    )
    .unwrap();
    gw.signal("HUP");
    wait_for("the removed listener to refuse connections", WAIT, || {
        refused(extra).then_some(())
    });
    // The request in flight on the removed listener is answered, then the
    // connection is closed (drained, not cut).
    let mut status = String::new();
    on_extra.read_line(&mut status).unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status:?}");
    let mut rest = Vec::new();
    on_extra.read_to_end(&mut rest).unwrap();
    assert!(
        String::from_utf8_lossy(&rest)
            .trim_end()
            .ends_with("slept 1500"),
        "{:?}",
        String::from_utf8_lossy(&rest)
    );
    // The connection on `edge` keeps its settings; new ones get the new.
    assert_eq!(
        http1_exchange(&mut on_edge, "/version", false).unwrap(),
        (200, b"v1".to_vec())
    );
    assert_eq!(get_new(edge, "/version").unwrap(), (200, b"v2".to_vec()));
    let mut redis = RawConn::connect(edge);
    assert_eq!(redis.command(&["PING"]), b"+pong\r\n");
    let log = gw.log();
    assert!(
        log.contains("listeners removed: extra; listeners changed: edge"),
        "{log}"
    );

    // A listener whose address is taken: the reload is rejected whole.
    std::fs::write(
        &gw.config_path,
        small_config(admin, edge, "http1", Some(up.addr()), "v3", up.addr(), ""),
    )
    .unwrap();
    gw.signal("HUP");
    wait_for("the reload to be rejected", WAIT, || {
        (gw.metric("switchyard_config_reloads_total", &[("result", "error")]) == 1.0).then_some(())
    });
    assert!(gw.log().contains("cannot bind"), "{}", gw.log());
    assert_eq!(get_new(edge, "/version").unwrap(), (200, b"v2".to_vec()));
    assert_eq!(
        gw.metric("switchyard_config_reloads_total", &[("result", "ok")]),
        1.0
    );
}

#[test]
fn watched_config_file_reloads_on_change_and_keeps_the_old_on_a_bad_one() {
    let up = HttpUpstream::start();
    let (admin, edge) = (local(free_port()), local(free_port()));
    let watch = "reload: {watch: true, interval: 100ms}\n";
    let gw = Gateway::start(&small_config(
        admin,
        edge,
        "http1",
        None,
        "v1",
        up.addr(),
        watch,
    ));
    let version = || {
        get_new(edge, "/version")
            .map(|(_, b)| b)
            .unwrap_or_default()
    };
    assert_eq!(version(), b"v1");

    std::fs::write(
        &gw.config_path,
        small_config(admin, edge, "http1", None, "v2", up.addr(), watch),
    )
    .unwrap();
    wait_for(
        "the edited file to be loaded without a signal",
        WAIT,
        || (version() == b"v2").then_some(()),
    );
    std::fs::write(&gw.config_path, "listeners: [oops").unwrap();
    wait_for("the broken file to be rejected", WAIT, || {
        gw.log().contains("reload rejected").then_some(())
    });
    assert_eq!(version(), b"v2", "a bad file keeps the running config");
    std::fs::write(
        &gw.config_path,
        small_config(admin, edge, "http1", None, "v3", up.addr(), watch),
    )
    .unwrap();
    wait_for("the fixed file to be loaded", WAIT, || {
        (version() == b"v3").then_some(())
    });
    assert_eq!(
        gw.metric("switchyard_config_reloads_total", &[("result", "ok")]),
        2.0
    );
    assert_eq!(
        gw.metric("switchyard_config_reloads_total", &[("result", "error")]),
        1.0
    );
}

#[test]
fn reloads_keep_the_shared_upstream_connections_of_hosts_that_stay() {
    let redis = RedisServer::start();
    let web = Nginx::start(&[("f.txt", FILE)]);
    let (admin, edge) = (local(free_port()), local(free_port()));
    let config = |version: &str| {
        format!(
            "admin:\n  address: {admin}\nlisteners:\n  - name: edge\n    address: {edge}\n    protocols: [http1, redis]\n    route_table: main\nroute_tables:\n  - name: main\n    virtual_hosts:\n      - name: any\n        domains: [\"*\"]\n        routes:\n          - {{match: {{path_prefix: /version}}, direct_response: {{status: 200, body: \"{version}\"}}}}\n          - {{match: {{protocol: http1}}, cluster: web}}\n          - {{match: {{protocol: redis}}, cluster: redis}}\nclusters:\n  - {{name: redis, hosts: [\"{}\"]}}\n  - {{name: web, hosts: [\"{}\"]}}\n",
            redis.addr(),
            web.addr()
        )
    };
    let gw = Gateway::start(&config("v0"));
    // One direct connection to read the server's count of connections it
    // ever accepted (INFO on this connection adds none).
    let mut direct = RawConn::connect(redis.addr());
    let mut accepted = || {
        let info = String::from_utf8(direct.command(&["INFO", "stats"])).unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("total_connections_received:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .expect("total_connections_received in INFO stats")
    };
    let exchange = |i: usize| {
        let v = format!("value-{i}");
        assert_eq!(redis_set_get(edge, "kept", &v).unwrap(), v);
        assert_eq!(get_new(edge, "/f.txt").unwrap(), (200, FILE.to_vec()));
    };
    exchange(0);
    let before = accepted();
    for round in 1..=5 {
        std::fs::write(&gw.config_path, config(&format!("v{round}"))).unwrap();
        gw.signal("HUP");
        let want = format!("v{round}");
        wait_for("the reload to apply", WAIT, || {
            (get_new(edge, "/version").ok()?.1 == want.as_bytes()).then_some(())
        });
        exchange(round);
    }
    assert_eq!(
        accepted(),
        before,
        "Redis sessions after 5 reloads still use the shared upstream connection opened before them"
    );
}

#[test]
fn removed_listener_connections_still_busy_after_drain_timeout_are_closed() {
    let up = HttpUpstream::start();
    let (admin, edge, extra) = (local(free_port()), local(free_port()), local(free_port()));
    let config = |extra: Option<SocketAddr>| {
        small_config(admin, edge, "http1", extra, "v1", up.addr(), "")
            .replace("drain_timeout: 10s", "drain_timeout: 1s")
    };
    let gw = Gateway::start(&config(Some(extra)));
    let mut busy = connect(extra).unwrap();
    busy.get_mut()
        .write_all(b"GET /slow/8000 HTTP/1.1\r\nHost: test.local\r\n\r\n")
        .unwrap();
    wait_for("the slow request to reach the upstream", WAIT, || {
        let (_, body) = http_get(up.addr(), "/inflight").ok()?;
        (body.trim() == "1").then_some(())
    });
    std::fs::write(&gw.config_path, config(None)).unwrap();
    gw.signal("HUP");
    // Closed without an answer once the drain timeout ran out (well before
    // the upstream's 8 s), while the gateway keeps serving.
    let mut got = Vec::new();
    let _ = busy.read_to_end(&mut got);
    assert!(
        got.is_empty(),
        "cut, not answered: {:?}",
        String::from_utf8_lossy(&got)
    );
    assert_eq!(get_new(edge, "/version").unwrap(), (200, b"v1".to_vec()));
    assert!(refused(extra));
}
