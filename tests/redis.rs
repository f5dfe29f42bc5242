//! Redis through the gateway binary, against real redis-servers, with the
//! `redis` crate, redis-cli, redis-benchmark and raw sockets.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use common::*;
use futures_util::StreamExt;
use redis::Value;
use redis::aio::MultiplexedConnection;

/// A gateway whose Redis traffic all goes to `server`.
fn gateway_for(server: &RedisServer) -> Gateway {
    Template {
        redis: vec![server.addr()],
        ..Default::default()
    }
    .start()
}

/// Run a fixed sequence of commands on keys under `p`; each result rendered as text.
async fn run_sequence(con: &mut MultiplexedConnection, p: &str) -> Vec<String> {
    let k = |s: &str| format!("{p}:{s}");
    let cmds: Vec<redis::Cmd> = vec![
        redis::cmd("SET").arg(k("s")).arg("v1").clone(),
        redis::cmd("GET").arg(k("s")).clone(),
        redis::cmd("SET").arg(k("n")).arg(10).clone(),
        redis::cmd("INCR").arg(k("n")).clone(),
        redis::cmd("INCRBY").arg(k("n")).arg(5).clone(),
        redis::cmd("INCR").arg(k("s")).clone(), // an error reply
        redis::cmd("HSET")
            .arg(k("h"))
            .arg("f1")
            .arg("a")
            .arg("f2")
            .arg("b")
            .clone(),
        redis::cmd("HGETALL").arg(k("h")).clone(),
        redis::cmd("LPUSH")
            .arg(k("l"))
            .arg("x")
            .arg("y")
            .arg("z")
            .clone(),
        redis::cmd("LRANGE").arg(k("l")).arg(0).arg(-1).clone(),
        redis::cmd("TTL").arg(k("s")).clone(),
        redis::cmd("EXPIRE").arg(k("s")).arg(1000).clone(),
        redis::cmd("TTL").arg(k("s")).clone(),
        redis::cmd("TYPE").arg(k("l")).clone(),
        redis::cmd("DEL")
            .arg(k("s"))
            .arg(k("n"))
            .arg(k("missing"))
            .clone(),
        redis::cmd("GET").arg(k("s")).clone(),
        redis::cmd("EXISTS").arg(k("h")).arg(k("l")).clone(),
    ];
    run_commands(con, cmds).await
}

#[tokio::test]
async fn commands_through_gateway_equal_direct() {
    let server = RedisServer::start();
    let gw = gateway_for(&server);
    let mut direct = server.direct().await;
    let mut via = redis_conn(gw.addr()).await;
    let want = run_sequence(&mut direct, "direct").await;
    let got = run_sequence(&mut via, "gw").await;
    assert_eq!(got, want);
    assert!(
        want[5].starts_with("error"),
        "the sequence should contain an error reply: {want:?}"
    );
    // The gateway's writes are on the server.
    let v: Option<String> = redis::cmd("HGET")
        .arg("gw:h")
        .arg("f2")
        .query_async(&mut direct)
        .await
        .unwrap();
    assert_eq!(v.as_deref(), Some("b"));

    // The same with redis-cli.
    let cli = |addr: SocketAddr, p: &str| -> Vec<String> {
        let k = |s: &str| format!("{p}:{s}");
        let cmds: Vec<Vec<String>> = vec![
            vec!["SET".into(), k("k"), "hello world".into()],
            vec!["GET".into(), k("k")],
            vec!["INCR".into(), k("c")],
            vec!["HSET".into(), k("h"), "a".into(), "1".into()],
            vec!["HGETALL".into(), k("h")],
            vec!["LPUSH".into(), k("l"), "1".into(), "2".into()],
            vec!["LRANGE".into(), k("l"), "0".into(), "-1".into()],
            vec!["EXPIRE".into(), k("k"), "50".into()],
            vec!["TTL".into(), k("k")],
            vec!["DEL".into(), k("k")],
            vec!["GET".into(), k("k")],
        ];
        cmds.iter()
            .map(|c| {
                let args: Vec<&str> = std::iter::once("--no-raw")
                    .chain(c.iter().map(String::as_str))
                    .collect();
                let out = redis_cli(addr, &args);
                assert!(
                    out.status.success(),
                    "redis-cli {c:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                String::from_utf8_lossy(&out.stdout).into_owned()
            })
            .collect()
    };
    let want = cli(server.addr(), "cli-direct");
    assert_eq!(want[1], "\"hello world\"\n");
    assert_eq!(cli(gw.addr(), "cli-gw"), want);
}

#[tokio::test]
async fn a_pipeline_of_1000_commands_is_answered_in_order() {
    let server = RedisServer::start();
    let gw = gateway_for(&server);
    let mut con = redis_conn(gw.addr()).await;
    let mut pipe = redis::pipe();
    for i in 0..1000 {
        if i % 2 == 0 {
            pipe.cmd("INCR").arg("pipe:counter");
        } else {
            pipe.cmd("ECHO").arg(format!("echo-{i}"));
        }
    }
    let replies: Vec<Value> = pipe.query_async(&mut con).await.unwrap();
    assert_eq!(replies.len(), 1000);
    for (i, r) in replies.iter().enumerate() {
        let want = if i % 2 == 0 {
            Value::Int(i as i64 / 2 + 1)
        } else {
            Value::BulkString(format!("echo-{i}").into_bytes())
        };
        assert_eq!(r, &want, "reply {i}");
    }
}

#[test]
fn redis_cli_pipe_mode_through_gateway() {
    let server = RedisServer::start();
    let gw = gateway_for(&server);
    let mut input = Vec::new();
    for i in 0..1000 {
        input.extend(resp(&["SET", &format!("mass:{i}"), &format!("value-{i}")]));
    }
    let mut child = Command::new(require("redis-cli"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &gw.addr().port().to_string(),
            "--pipe",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn redis-cli --pipe");
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("errors: 0, replies: 1000"), "{text}");
    let mut direct = RawConn::connect(server.addr());
    assert_eq!(direct.command(&["GET", "mass:999"]), b"$9\r\nvalue-999\r\n");
    assert_eq!(direct.command(&["DBSIZE"]), b":1000\r\n");
}

#[test]
fn redis_benchmark_through_gateway_has_no_errors() {
    let server = RedisServer::start();
    let gw = gateway_for(&server);
    let port = gw.addr().port().to_string();
    let out = Command::new(require("redis-benchmark"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-P",
            "16",
            "-n",
            "20000",
            "-t",
            "get,set",
            "-q",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run redis-benchmark");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "redis-benchmark failed:\n{text}");
    assert!(!text.to_ascii_lowercase().contains("error"), "{text}");
    for t in ["SET:", "GET:"] {
        assert!(
            text.contains(t) && text.contains("requests per second"),
            "no {t} result:\n{text}"
        );
    }
}

#[test]
fn resp3_hello_then_maps() {
    let server = RedisServer::start();
    let gw = gateway_for(&server);
    let mut c = RawConn::connect(gw.addr());
    let hello = c.command(&["HELLO", "3"]);
    assert!(
        hello.starts_with(b"%"),
        "HELLO 3 must answer a map: {:?}",
        String::from_utf8_lossy(&hello)
    );
    assert_eq!(c.command(&["HSET", "r3", "f", "v"]), b":1\r\n");
    assert_eq!(
        c.command(&["HGETALL", "r3"]),
        b"%1\r\n$1\r\nf\r\n$1\r\nv\r\n"
    );
    // A new connection speaks RESP2 again: the protocol is per connection.
    let mut c2 = RawConn::connect(gw.addr());
    assert_eq!(
        c2.command(&["HGETALL", "r3"]),
        b"*2\r\n$1\r\nf\r\n$1\r\nv\r\n"
    );

    let out = redis_cli(gw.addr(), &["-3", "--no-raw", "HGETALL", "r3"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1# \"f\" => \"v\"\n");
}

#[tokio::test]
async fn multi_exec_is_a_transaction() {
    let server = RedisServer::start();
    let gw = gateway_for(&server);
    let mut c = RawConn::connect(gw.addr());
    assert_eq!(c.command(&["MULTI"]), b"+OK\r\n");
    assert_eq!(c.command(&["SET", "tx", "1"]), b"+QUEUED\r\n");
    assert_eq!(c.command(&["INCR", "tx"]), b"+QUEUED\r\n");
    // Not applied before EXEC.
    let mut direct = RawConn::connect(server.addr());
    assert_eq!(direct.command(&["GET", "tx"]), b"$-1\r\n");
    assert_eq!(c.command(&["EXEC"]), b"*2\r\n+OK\r\n:2\r\n");
    assert_eq!(direct.command(&["GET", "tx"]), b"$1\r\n2\r\n");
    // DISCARD too.
    assert_eq!(c.command(&["MULTI"]), b"+OK\r\n");
    assert_eq!(c.command(&["INCR", "tx"]), b"+QUEUED\r\n");
    assert_eq!(c.command(&["DISCARD"]), b"+OK\r\n");
    assert_eq!(c.command(&["GET", "tx"]), b"$1\r\n2\r\n");

    // The redis crate's atomic pipeline.
    let mut con = redis_conn(gw.addr()).await;
    let (a, b): (i64, i64) = redis::pipe()
        .atomic()
        .incr("tx2", 5)
        .incr("tx2", 1)
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!((a, b), (5, 6));
}

#[test]
fn select_switches_the_database_of_this_connection() {
    let server = RedisServer::start();
    let gw = gateway_for(&server);
    let mut direct = RawConn::connect(server.addr());
    assert_eq!(direct.command(&["SELECT", "1"]), b"+OK\r\n");
    assert_eq!(direct.command(&["SET", "dbkey", "in-db-1"]), b"+OK\r\n");

    let mut c = RawConn::connect(gw.addr());
    assert_eq!(
        c.command(&["GET", "dbkey"]),
        b"$-1\r\n",
        "db 0 has no dbkey"
    );
    assert_eq!(c.command(&["SELECT", "1"]), b"+OK\r\n");
    assert_eq!(c.command(&["GET", "dbkey"]), b"$7\r\nin-db-1\r\n");
    // Another client is not affected by this connection's SELECT.
    let mut other = RawConn::connect(gw.addr());
    assert_eq!(other.command(&["GET", "dbkey"]), b"$-1\r\n");
    assert_eq!(c.command(&["GET", "dbkey"]), b"$7\r\nin-db-1\r\n");
}

#[tokio::test]
async fn pubsub_subscriber_through_gateway_gets_messages() {
    let server = RedisServer::start();
    let gw = gateway_for(&server);
    let client = redis::Client::open(gw.redis_url()).unwrap();
    let mut sub = client
        .get_async_pubsub()
        .await
        .expect("pubsub connection through the gateway");
    sub.subscribe("news")
        .await
        .expect("SUBSCRIBE through the gateway");
    let mut direct = server.direct().await;
    let receivers: i64 = redis::cmd("PUBLISH")
        .arg("news")
        .arg("hello subscriber")
        .query_async(&mut direct)
        .await
        .unwrap();
    assert_eq!(receivers, 1, "the server sees no subscriber");
    let _: i64 = redis::cmd("PUBLISH")
        .arg("news")
        .arg("second")
        .query_async(&mut direct)
        .await
        .unwrap();
    let mut messages = sub.on_message();
    for want in ["hello subscriber", "second"] {
        let msg = tokio::time::timeout(WAIT, messages.next())
            .await
            .expect("no message within 10 s")
            .expect("stream ended");
        assert_eq!(msg.get_channel_name(), "news");
        assert_eq!(msg.get_payload::<String>().unwrap(), want);
    }
}

#[test]
fn pubsub_with_redis_cli_after_select() {
    let server = RedisServer::start();
    let gw = gateway_for(&server);
    // A raw subscriber that first selects a database: the session state is kept.
    let mut c = RawConn::connect(gw.addr());
    assert_eq!(c.command(&["SELECT", "2"]), b"+OK\r\n");
    assert_eq!(
        c.command(&["SUBSCRIBE", "ch"]),
        b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n"
    );
    let out = redis_cli(server.addr(), &["PUBLISH", "ch", "via-cli"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1\n");
    assert_eq!(
        c.reply().unwrap(),
        b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$7\r\nvia-cli\r\n"
    );
    assert_eq!(
        c.command(&["PING"]),
        b"*2\r\n$4\r\npong\r\n$0\r\n\r\n",
        "PING in subscribed mode"
    );
}

#[test]
fn routes_by_key_prefix_and_by_command() {
    let r1 = RedisServer::start();
    let r2 = RedisServer::start();
    let gw = Template {
        redis: vec![r1.addr()],
        routes: vec![
            "{match: {protocol: redis, key_prefix: \"user:\"}, cluster: r2}".into(),
            "{match: {protocol: redis, commands: [rpush, LLEN]}, cluster: r2}".into(),
        ],
        clusters: vec![format!("{{name: r2, hosts: [\"{}\"]}}", r2.addr())],
        ..Default::default()
    }
    .start();
    let mut c = RawConn::connect(gw.addr());
    assert_eq!(c.command(&["SET", "user:1", "alice"]), b"+OK\r\n");
    assert_eq!(c.command(&["SET", "other", "x"]), b"+OK\r\n");
    assert_eq!(c.command(&["RPUSH", "jobs", "a", "b"]), b":2\r\n");
    assert_eq!(c.command(&["GET", "user:1"]), b"$5\r\nalice\r\n");
    assert_eq!(c.command(&["LLEN", "jobs"]), b":2\r\n");

    let mut d1 = RawConn::connect(r1.addr());
    let mut d2 = RawConn::connect(r2.addr());
    assert_eq!(
        d2.command(&["GET", "user:1"]),
        b"$5\r\nalice\r\n",
        "user:* belongs on r2"
    );
    assert_eq!(d1.command(&["GET", "user:1"]), b"$-1\r\n");
    assert_eq!(
        d1.command(&["GET", "other"]),
        b"$1\r\nx\r\n",
        "other keys belong on r1"
    );
    assert_eq!(d2.command(&["GET", "other"]), b"$-1\r\n");
    assert_eq!(
        d2.command(&["LLEN", "jobs"]),
        b":2\r\n",
        "RPUSH belongs on r2"
    );
    assert_eq!(d1.command(&["LLEN", "jobs"]), b":0\r\n");
}

#[test]
fn upstream_down_gives_an_error_and_the_connection_survives() {
    let live = RedisServer::start();
    let dead = local(free_port());
    let gw = Template {
        redis: vec![live.addr()],
        routes: vec!["{match: {protocol: redis, key_prefix: \"dead:\"}, cluster: dead}".into()],
        clusters: vec![format!(
            "{{name: dead, hosts: [\"{dead}\"], connect_timeout: 1s}}"
        )],
        ..Default::default()
    }
    .start();
    let mut c = RawConn::connect(gw.addr());
    let err = c.command(&["GET", "dead:1"]);
    let text = String::from_utf8_lossy(&err);
    assert!(
        text.starts_with("-ERR") && text.contains("upstream"),
        "{text:?}"
    );
    assert_eq!(c.command(&["SET", "live:1", "v"]), b"+OK\r\n");
    // Pipelined: the error keeps its place in the reply order.
    let mut burst = resp(&["GET", "dead:2"]);
    burst.extend(resp(&["GET", "live:1"]));
    burst.extend(resp(&["SET", "dead:3", "x"]));
    burst.extend(resp(&["PING"]));
    c.send(&burst);
    assert!(c.reply().unwrap().starts_with(b"-"));
    assert_eq!(c.reply().unwrap(), b"$1\r\nv\r\n");
    assert!(c.reply().unwrap().starts_with(b"-"));
    assert_eq!(c.reply().unwrap(), b"+PONG\r\n");
    // The crate reports it as an error too.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut con = redis_conn(gw.addr()).await;
        let r: redis::RedisResult<Option<String>> =
            redis::cmd("GET").arg("dead:9").query_async(&mut con).await;
        let e = r.expect_err("a dead cluster must answer an error");
        assert!(e.to_string().contains("upstream"), "{e}");
        let v: String = redis::cmd("GET")
            .arg("live:1")
            .query_async(&mut con)
            .await
            .unwrap();
        assert_eq!(v, "v");
    });
}

#[test]
fn oversize_bulk_is_refused_and_closes_only_that_connection() {
    let server = RedisServer::start();
    let gw = Template {
        redis: vec![server.addr()],
        listener: vec!["redis: {max_bulk: 1024}"],
        ..Default::default()
    }
    .start();
    let mut other = RawConn::connect(gw.addr());
    assert_eq!(other.command(&["PING"]), b"+PONG\r\n");

    let mut c = RawConn::connect(gw.addr());
    assert_eq!(
        c.command(&["SET", "small", &"s".repeat(1000)]),
        b"+OK\r\n",
        "1000 bytes are within max_bulk"
    );
    c.send_lossy(&resp(&["SET", "big", &"b".repeat(4096)]));
    let (bytes, _) = c.read_until_closed();
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        text.starts_with("-ERR Protocol error"),
        "want a protocol error then close, got {text:?}"
    );

    assert_eq!(other.command(&["SET", "k", "v"]), b"+OK\r\n");
    assert_eq!(other.command(&["GET", "k"]), b"$1\r\nv\r\n");
    assert_eq!(other.command(&["EXISTS", "big"]), b":0\r\n");
}

#[test]
fn inline_commands() {
    let server = RedisServer::start();
    let gw = gateway_for(&server);
    let mut c = RawConn::connect(gw.addr());
    c.send(b"PING\r\n");
    assert_eq!(c.reply().unwrap(), b"+PONG\r\n");
    c.send(b"SET inline-key some-value\r\nGET inline-key\r\n");
    assert_eq!(c.reply().unwrap(), b"+OK\r\n");
    assert_eq!(c.reply().unwrap(), b"$10\r\nsome-value\r\n");
}

#[test]
fn quit_answers_ok_and_closes() {
    let server = RedisServer::start();
    let gw = gateway_for(&server);
    let mut c = RawConn::connect(gw.addr());
    let mut burst = resp(&["PING"]);
    burst.extend(resp(&["QUIT"]));
    burst.extend(resp(&["PING"]));
    c.send(&burst);
    let (bytes, closed) = c.read_until_closed();
    assert_eq!(String::from_utf8_lossy(&bytes), "+PONG\r\n+OK\r\n");
    assert_eq!(closed, Closed::Eof);
}

#[test]
fn inline_look_alikes_of_http_are_redis() {
    let server = RedisServer::start();
    let gw = gateway_for(&server);
    // Inline commands as the very first bytes of a connection: `GET key` looks like HTTP.
    for (cmd, want) in [
        (&b"SET look-alike v\r\n"[..], &b"+OK\r\n"[..]),
        (b"GET look-alike\r\n", b"$1\r\nv\r\n"),
        (b"get look-alike\r\n", b"$1\r\nv\r\n"),
        (b"EXISTS look-alike\r\n", b":1\r\n"),
    ] {
        let mut c = RawConn::connect(gw.addr());
        c.send(cmd);
        assert_eq!(
            c.reply().unwrap(),
            want,
            "{:?}",
            String::from_utf8_lossy(cmd)
        );
    }
}

#[test]
fn unrouted_and_direct_commands_get_errors_and_the_connection_survives() {
    let server = RedisServer::start();
    let gw = Template {
        routes: vec![
            "{match: {protocol: redis, commands: [flushall, flushdb]}, direct_response: {status: 403, body: flushing is disabled}}"
                .into(),
            "{match: {protocol: redis, commands: [get, set]}, cluster: cache}".into(),
        ],
        clusters: vec![format!("{{name: cache, hosts: [\"{}\"]}}", server.addr())],
        ..Default::default()
    }
    .start();
    let mut c = RawConn::connect(gw.addr());
    assert_eq!(c.command(&["SET", "keep", "me"]), b"+OK\r\n");
    assert_eq!(c.command(&["FLUSHALL"]), b"-ERR flushing is disabled\r\n");
    let text = String::from_utf8_lossy(&c.command(&["DEL", "keep"])).into_owned();
    assert!(
        text.starts_with("-ERR") && text.contains("no route"),
        "{text:?}"
    );
    assert_eq!(
        c.command(&["GET", "keep"]),
        b"$2\r\nme\r\n",
        "neither FLUSHALL nor DEL reached the server"
    );
}

#[test]
fn large_values_pass_whole() {
    let server = RedisServer::start();
    let gw = gateway_for(&server);
    let value = pattern(5 * 1024 * 1024);
    let mut c = RawConn::connect(gw.addr());
    c.send(&resp_bytes(&[b"SET", b"big", &value]));
    assert_eq!(c.reply().unwrap(), b"+OK\r\n");
    c.send(&resp(&["GET", "big"]));
    let reply = c.reply().unwrap();
    let header = format!("${}\r\n", value.len());
    assert!(reply.starts_with(header.as_bytes()));
    assert_same_bytes(&reply[header.len()..reply.len() - 2], &value, "5 MB value");
}

#[test]
fn blocking_command_outlasting_idle_timeout_keeps_the_connection() {
    let server = RedisServer::start();
    let gw = Template {
        redis: vec![server.addr()],
        listener: vec!["idle_timeout: 500ms"],
        ..Default::default()
    }
    .start();
    let mut c = RawConn::connect(gw.addr());
    // A request in progress is not idleness: the reply comes after 2 s, and the
    // connection is then as usable as a direct one.
    assert_eq!(c.command(&["BLPOP", "empty-list", "2"]), b"*-1\r\n");
    c.send(&resp(&["PING"]));
    let reply = c.reply();
    assert!(
        matches!(&reply, Ok(r) if r == b"+PONG\r\n"),
        "the gateway closed the connection right after a blocking command that outlasted idle_timeout: {reply:?}"
    );
}

#[test]
fn pubsub_subscriber_is_not_cut_by_idle_timeout() {
    let server = RedisServer::start();
    let gw = Template {
        redis: vec![server.addr()],
        listener: vec!["idle_timeout: 500ms"],
        ..Default::default()
    }
    .start();
    let mut c = RawConn::connect(gw.addr());
    assert_eq!(
        c.command(&["SUBSCRIBE", "quiet"]),
        b"*3\r\n$9\r\nsubscribe\r\n$5\r\nquiet\r\n:1\r\n"
    );
    // A subscriber waits for messages, however rare (redis-server never times
    // out pub/sub clients). Let three idle timeouts pass without a message.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let mut direct = RawConn::connect(server.addr());
    let receivers = direct.command(&["PUBLISH", "quiet", "at last"]);
    assert_eq!(
        receivers, b":1\r\n",
        "the subscriber was dropped after idle_timeout"
    );
    assert_eq!(
        c.reply().unwrap(),
        b"*3\r\n$7\r\nmessage\r\n$5\r\nquiet\r\n$7\r\nat last\r\n"
    );
}

#[test]
fn session_state_survives_an_upstream_reconnect() {
    let mut server = RedisServer::start();
    let gw = gateway_for(&server);
    // After its upstream connection is lost, the gateway must either close the
    // client connection (so the client reconnects and sets its state again) or
    // restore the session's state (SELECT, HELLO) on the new upstream
    // connection. Silently going on in db 0 with RESP2 is wrong. (Several
    // rounds, as when the gateway notices the loss is a race.)
    for round in 0..4 {
        let mut c = RawConn::connect(gw.addr());
        assert_eq!(c.command(&["SELECT", "1"]), b"+OK\r\n");
        assert!(c.command(&["HELLO", "3"]).starts_with(b"%"));
        server.restart();
        let mut answered = 0;
        for i in 0..3 {
            c.send(&resp(&["SET", &format!("after-restart-{i}"), "x"]));
            match c.reply() {
                Ok(r) if r == b"+OK\r\n" => answered += 1,
                Ok(r) => assert!(r.starts_with(b"-"), "{:?}", String::from_utf8_lossy(&r)),
                // Closed: the client will reconnect and restore its state.
                Err(_) => break,
            }
        }
        if answered == 0 {
            continue;
        }
        let mut direct = RawConn::connect(server.addr());
        assert_eq!(
            direct.command(&["DBSIZE"]),
            b":0\r\n",
            "round {round}: writes after the reconnect went to db 0, not the SELECTed db 1"
        );
        c.send(&resp(&["HGETALL", "no-such-hash"]));
        assert_eq!(
            c.reply().unwrap(),
            b"%0\r\n",
            "round {round}: RESP3 (HELLO 3) was lost"
        );
    }
}

#[test]
fn every_command_is_answered_when_the_upstream_dies() {
    let mut server = RedisServer::start();
    let gw = gateway_for(&server);
    let mut bare_closes = 0;
    for round in 0..12 {
        let mut c = RawConn::connect(gw.addr());
        assert_eq!(c.command(&["SET", "round", &round.to_string()]), b"+OK\r\n");
        server.restart();
        // The command in flight when the gateway learns that its upstream
        // connection died must be answered (an error is fine), not dropped.
        c.send(&resp(&["SET", "after", "x"]));
        match c.reply() {
            Ok(r) => {
                assert!(
                    r == b"+OK\r\n" || r.starts_with(b"-"),
                    "{:?}",
                    String::from_utf8_lossy(&r)
                );
                // The client connection survives, on a new upstream connection.
                assert_eq!(
                    c.command(&["GET", "round"]),
                    b"$-1\r\n",
                    "a fresh server is empty"
                );
                assert_eq!(c.command(&["SET", "after", "y"]), b"+OK\r\n");
            }
            Err(_) => bare_closes += 1,
        }
    }
    let log = gw.log();
    let panics: Vec<&str> = log.lines().filter(|l| l.contains("panicked at")).collect();
    assert!(
        panics.is_empty(),
        "the gateway panicked {} times: {panics:?}",
        panics.len()
    );
    assert_eq!(
        bare_closes, 0,
        "commands were dropped without a reply when the upstream died"
    );
}

#[test]
fn resp3_client_tracking_pushes_reach_the_client() {
    let server = RedisServer::start();
    let gw = gateway_for(&server);
    let mut c = RawConn::connect(gw.addr());
    assert!(c.command(&["HELLO", "3"]).starts_with(b"%"));
    assert_eq!(c.command(&["CLIENT", "TRACKING", "ON"]), b"+OK\r\n");
    assert_eq!(c.command(&["SET", "tracked", "1"]), b"+OK\r\n");
    assert_eq!(c.command(&["GET", "tracked"]), b"$1\r\n1\r\n");
    // Another client changes the key: the server pushes an invalidation.
    let mut direct = RawConn::connect(server.addr());
    assert_eq!(direct.command(&["SET", "tracked", "2"]), b"+OK\r\n");
    assert_eq!(
        c.reply().unwrap(),
        b">2\r\n$10\r\ninvalidate\r\n*1\r\n$7\r\ntracked\r\n"
    );
    assert_eq!(c.command(&["GET", "tracked"]), b"$1\r\n2\r\n");
}

// ---------------------------------------------------------------------------
// Reply fidelity: commands whose reply count is not one, protocol errors,
// replies as real servers send them. Each check runs the same bytes on a
// direct connection and through the gateway and compares what comes back.

/// `bytes` on a fresh connection to `addr`, then everything read until the
/// peer closes (the bytes must end in something that closes, e.g. `QUIT`).
fn exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut c = RawConn::connect(addr);
    c.send_lossy(bytes);
    c.read_until_closed().0
}

/// Client ids differ between connections: `HELLO` replies carry them.
fn mask_client_ids(mut bytes: Vec<u8>) -> Vec<u8> {
    let tag = b"$2\r\nid\r\n:";
    let mut at = 0;
    while let Some(i) = bytes[at..]
        .windows(tag.len())
        .position(|w| w == tag)
        .map(|i| at + i + tag.len())
    {
        let end = i + bytes[i..].iter().position(|&b| b == b'\r').unwrap_or(0);
        bytes.splice(i..end, *b"N");
        at = i;
    }
    bytes
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The same bytes directly and through the gateway give the same stream.
fn assert_same_stream(server: &RedisServer, gw: &Gateway, bytes: &[u8]) {
    let want = mask_client_ids(exchange(server.addr(), bytes));
    let got = mask_client_ids(exchange(gw.addr(), bytes));
    assert_eq!(text(&got), text(&want), "input {:?}", text(bytes));
}

#[test]
fn unsubscribe_with_several_channels_keeps_replies_in_step() {
    let server = RedisServer::start();
    let gw = gateway_for(&server);
    let mut c = RawConn::connect(gw.addr());
    c.send(b"UNSUBSCRIBE foo bar quux\r\nPING\r\n");
    let mut got = Vec::new();
    for _ in 0..4 {
        got.extend(c.reply().expect("one reply per channel, then PONG"));
    }
    let unsub = |ch: &str| {
        format!(
            "*3\r\n$11\r\nunsubscribe\r\n${}\r\n{ch}\r\n:0\r\n",
            ch.len()
        )
    };
    assert_eq!(
        text(&got),
        unsub("foo") + &unsub("bar") + &unsub("quux") + "+PONG\r\n"
    );
    assert_eq!(c.command(&["ECHO", "next"]), b"$4\r\nnext\r\n");
    for cmds in [
        &b"PUNSUBSCRIBE a* b*\r\nUNSUBSCRIBE\r\nPUNSUBSCRIBE\r\nSUNSUBSCRIBE x y\r\nECHO x\r\nQUIT\r\n"[..],
        // RESP3: the acknowledgements are push frames, and still the replies.
        b"HELLO 3\r\nUNSUBSCRIBE a b\r\nECHO x\r\nPUNSUBSCRIBE\r\nSUNSUBSCRIBE s\r\nPING\r\nQUIT\r\n",
        // Inside MULTI the command is queued: one reply, and EXEC's.
        b"MULTI\r\nUNSUBSCRIBE a\r\nUNSUBSCRIBE\r\nEXEC\r\nPING\r\nQUIT\r\n",
    ] {
        assert_same_stream(&server, &gw, cmds);
    }
}

/// Inside MULTI, Redis queues `CLIENT REPLY` and multi-channel (un)subscribes
/// like any command (`+QUEUED`) and runs them at `EXEC`: the reply mode then
/// changes in the middle of `EXEC`'s array, and each channel's
/// acknowledgement lands in the array, more elements than its length says.
/// The gateway's replies are the same bytes.
#[test]
fn client_reply_and_several_channels_inside_multi_behave_as_redis() {
    let server = RedisServer::start();
    let gw = gateway_for(&server);
    for cmds in [
        &b"MULTI\r\nUNSUBSCRIBE a b\r\nECHO q\r\nEXEC\r\nPING\r\nQUIT\r\n"[..],
        b"MULTI\r\nPUNSUBSCRIBE a* b* c*\r\nSUNSUBSCRIBE\r\nSUNSUBSCRIBE x y\r\nEXEC\r\nECHO after\r\nQUIT\r\n",
        b"HELLO 3\r\nMULTI\r\nUNSUBSCRIBE a b\r\nECHO q\r\nEXEC\r\nPING\r\nQUIT\r\n",
        // SUBSCRIBE queued: one acknowledgement per channel inside the array.
        b"MULTI\r\nSUBSCRIBE a b\r\nEXEC\r\nPING\r\nQUIT\r\n",
        b"HELLO 3\r\nMULTI\r\nSUBSCRIBE a b\r\nECHO q\r\nEXEC\r\nPING\r\nQUIT\r\n",
        // CLIENT REPLY runs at EXEC: the rest of the array is dropped ...
        b"MULTI\r\nCLIENT REPLY OFF\r\nECHO q\r\nEXEC\r\nPING\r\nCLIENT REPLY ON\r\nPING\r\nQUIT\r\n",
        // ... but not the acknowledgements; SKIP skips the command after EXEC.
        b"MULTI\r\nCLIENT REPLY OFF\r\nUNSUBSCRIBE a b\r\nECHO q\r\nEXEC\r\nPING\r\nRESET\r\nQUIT\r\n",
        b"MULTI\r\nCLIENT REPLY SKIP\r\nECHO q\r\nEXEC\r\nPING\r\nPING\r\nQUIT\r\n",
        b"MULTI\r\nCLIENT REPLY OFF\r\nPING\r\nCLIENT REPLY SKIP\r\nCLIENT REPLY ON\r\nECHO x\r\nEXEC\r\nPING\r\nQUIT\r\n",
        // Replies already off: EXEC's header is dropped, ON inside brings the rest back.
        b"CLIENT REPLY OFF\r\nMULTI\r\nPUNSUBSCRIBE\r\nECHO x\r\nEXEC\r\nCLIENT REPLY ON\r\nPING\r\nQUIT\r\n",
        b"CLIENT REPLY OFF\r\nMULTI\r\nCLIENT REPLY ON\r\nECHO q\r\nEXEC\r\nPING\r\nQUIT\r\n",
        b"MULTI\r\nCLIENT REPLY OFF\r\nEXEC\r\nCLIENT REPLY ON\r\nMULTI\r\nCLIENT REPLY SKIP\r\nEXEC\r\nPING\r\nPING\r\nQUIT\r\n",
        // A transaction that does not run changes nothing.
        b"MULTI\r\nCLIENT REPLY OFF\r\nNOSUCHCMD\r\nUNSUBSCRIBE a b\r\nEXEC\r\nPING\r\nQUIT\r\n",
        b"MULTI\r\nCLIENT REPLY SKIP\r\nDISCARD\r\nPING\r\nQUIT\r\n",
        b"MULTI\r\nCLIENT REPLY OFF\r\nUNSUBSCRIBE a b\r\nEXEC x\r\nUNSUBSCRIBE c d\r\nPING\r\nQUIT\r\n",
        // Session state queued in a discarded transaction is not replayed
        // on the tunnel's connection; in one that ran, it is.
        b"MULTI\r\nHELLO 3\r\nDISCARD\r\nSUBSCRIBE a b\r\nPING\r\nRESET\r\nQUIT\r\n",
        b"MULTI\r\nHELLO 3\r\nEXEC\r\nSUBSCRIBE a b\r\nPING\r\nRESET\r\nQUIT\r\n",
        // WATCH: a key changed before EXEC, which answers a null array.
        b"WATCH w\r\nSET w 1\r\nMULTI\r\nCLIENT REPLY OFF\r\nUNSUBSCRIBE a b\r\nEXEC\r\nPING\r\nQUIT\r\n",
    ] {
        assert_same_stream(&server, &gw, cmds);
    }
}

#[test]
fn client_reply_off_skip_on_behave_as_redis() {
    let server = RedisServer::start();
    let gw = gateway_for(&server);
    let mut c = RawConn::connect(gw.addr());
    // Fire-and-forget writes, then replies again.
    c.send(b"CLIENT REPLY OFF\r\nSET a 1\r\nINCR a\r\nCLIENT REPLY ON\r\nGET a\r\n");
    assert_eq!(c.reply().unwrap(), b"+OK\r\n");
    assert_eq!(c.reply().unwrap(), b"$1\r\n2\r\n");
    for cmds in [
        &b"CLIENT REPLY SKIP\r\nPING\r\nECHO a\r\nCLIENT REPLY OFF\r\nPING\r\nCLIENT REPLY ON\r\nPING\r\nQUIT\r\n"[..],
        b"CLIENT REPLY OFF\r\nCLIENT REPLY SKIP\r\nPING\r\nCLIENT REPLY ON\r\nPING\r\nCLIENT REPLY SKIP\r\nCLIENT REPLY ON\r\nPING\r\nCLIENT REPLY SKIP\r\nCLIENT REPLY SKIP\r\nECHO 1\r\nECHO 2\r\nQUIT\r\n",
        // Errors are silenced too; unsubscribe acknowledgements are not.
        b"client reply off\r\nNOSUCHCMD\r\nGET\r\nUNSUBSCRIBE a b\r\nCLIENT REPLY\r\nclient reply on\r\nQUIT\r\n",
        b"HELLO 3\r\nCLIENT REPLY OFF\r\nUNSUBSCRIBE a\r\nPING\r\nRESET\r\nQUIT\r\n",
        // RESET turns replies back on, but not for itself after SKIP.
        b"CLIENT REPLY OFF\r\nPING\r\nRESET\r\nPING\r\nCLIENT REPLY SKIP\r\nRESET\r\nPING\r\nQUIT\r\n",
        // Into a subscriber session with replies off or skipped.
        b"CLIENT REPLY OFF\r\nSUBSCRIBE a\r\nPING\r\nRESET\r\nQUIT\r\n",
        b"CLIENT REPLY SKIP\r\nSUBSCRIBE a\r\nPING\r\nQUIT\r\n",
        // RESET with arguments is refused and resets nothing.
        b"CLIENT REPLY OFF\r\nRESET x\r\nPING\r\nCLIENT REPLY ON\r\nMULTI\r\nRESET x\r\nUNSUBSCRIBE a b\r\nEXEC\r\nPING\r\nQUIT\r\n",
        // An empty command (`*0`, `*-1`, a blank line) uses up a SKIP.
        b"CLIENT REPLY SKIP\r\n*0\r\nPING\r\nCLIENT REPLY SKIP\r\n\r\nPING\r\nQUIT\r\n",
        b"CLIENT REPLY SKIP\r\n*-1\r\n*0\r\nPING\r\nCLIENT REPLY SKIP\r\n   \r\nECHO x\r\nQUIT\r\n",
        // A protocol error is answered in the mode of the command it stands
        // for: after a skipped command, it is not skipped ...
        b"CLIENT REPLY SKIP\r\nPING\r\n*1\r\nfoo\r\n",
        b"CLIENT REPLY SKIP\r\n*0\r\n*1\r\nfoo\r\n",
    ] {
        assert_same_stream(&server, &gw, cmds);
    }
    // ... right after SKIP or with replies off, it is silenced. (redis-server
    // then keeps the connection open, ignoring what comes; the gateway closes.)
    for cmds in [
        &b"CLIENT REPLY SKIP\r\n*1\r\nfoo\r\n"[..],
        b"CLIENT REPLY OFF\r\nPING\r\n*1\r\nfoo\r\n",
    ] {
        assert_eq!(
            text(&exchange(gw.addr(), cmds)),
            "",
            "input {:?}",
            text(cmds)
        );
    }
}

#[test]
fn sync_and_psync_tunnel_a_replication_stream() {
    let server = RedisServer::start();
    let gw = gateway_for(&server);
    RawConn::connect(server.addr()).command(&["SET", "replicated", "yes"]);
    // redis-cli --rdb: REPLCONF rdb-only, then SYNC, then the RDB payload.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dump.rdb");
    let out = redis_cli(gw.addr(), &["--rdb", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "redis-cli --rdb through the gateway: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let rdb = std::fs::read(&file).unwrap();
    assert!(
        rdb.starts_with(b"REDIS"),
        "not an RDB file: {:?}",
        &rdb[..rdb.len().min(16)]
    );
    assert!(rdb.windows(10).any(|w| w == b"replicated"));
    // PSYNC answers FULLRESYNC at once.
    let mut c = RawConn::connect(gw.addr());
    c.send(b"PSYNC ? -1\r\n");
    let mut line = String::new();
    // A server busy saving sends bare newlines first, as to any replica.
    while line.trim().is_empty() {
        line.clear();
        std::io::BufRead::read_line(&mut c.reader, &mut line).unwrap();
    }
    assert!(line.starts_with("+FULLRESYNC "), "{line:?}");
}

#[test]
fn replies_as_redis_sends_them_pass_big_numbers_and_deep_nesting() {
    let server = RedisServer::start();
    let gw = gateway_for(&server);
    let eval = |script: &str| -> Vec<u8> {
        let mut b = b"HELLO 3\r\n".to_vec();
        b.extend(resp(&["EVAL", script, "0"]));
        b.extend(resp(&["PING"]));
        b.extend(resp(&["QUIT"]));
        b
    };
    // Lua's big_number is sent as the script gave it.
    let big = eval("return {big_number='123  123'}");
    let direct = exchange(server.addr(), &big);
    assert!(
        text(&direct).contains("(123  123\r\n+PONG"),
        "{}",
        text(&direct)
    );
    assert_same_stream(&server, &gw, &big);
    // Redis nests script replies thousands deep (its Lua stack allows ~8000).
    for depth in [200, 1000, 7000] {
        let nest = eval(&format!(
            "local t={{}} local c=t for i=1,{depth} do local x={{}} c[1]=x c=x end c[1]=1 return t"
        ));
        let direct = exchange(server.addr(), &nest);
        assert!(text(&direct).matches("*1\r\n").count() > depth);
        assert_same_stream(&server, &gw, &nest);
    }
}

#[test]
fn reply_depth_limit_is_configurable_and_worded_in_levels() {
    let server = RedisServer::start();
    let gw = Template {
        redis: vec![server.addr()],
        listener: vec!["redis: {max_depth: 10}"],
        ..Default::default()
    }
    .start();
    let mut c = RawConn::connect(gw.addr());
    let script = "local t={} local c=t for i=1,20 do local x={} c[1]=x c=x end c[1]=1 return t";
    let reply = text(&c.command(&["EVAL", script, "0"]));
    assert!(
        reply.starts_with("-ERR") && reply.contains("levels") && !reply.contains("bytes"),
        "{reply:?}"
    );
    assert_eq!(
        c.command(&["PING"]),
        b"+PONG\r\n",
        "the client connection survives"
    );
}

#[test]
fn protocol_errors_match_redis() {
    let server = RedisServer::start();
    let gw = gateway_for(&server);
    for bytes in [
        // Negative and zero counts are empty commands: skipped.
        &b"*-10\r\nPING\r\nQUIT\r\n"[..],
        b"*0\r\n*-1\r\nECHO x\r\nQUIT\r\n",
        // Errors: Redis's words, then close.
        b"*1\r\nfoo\r\n",
        b"PING\r\n*2\r\n$4\r\nECHO\r\n:12\r\n",
        b"*1\r\n$abc\r\n",
        b"*1\r\n$-1\r\n",
        b"*abc\r\n",
        b"*99999999999\r\n",
        b"ECHO \"unbalanced\r\n",
    ] {
        assert_same_stream(&server, &gw, bytes);
    }
    let mut big = b"*1\r\n$".to_vec();
    big.extend(std::iter::repeat_n(b'9', 70_000));
    assert_same_stream(&server, &gw, &big);
    // (After a first command: a first line that long is the sniffer's to refuse.)
    let mut inline = b"PING\r\nPING ".to_vec();
    inline.extend(std::iter::repeat_n(b'x', 70_000));
    assert_same_stream(&server, &gw, &inline);
}

// ---------------------------------------------------------------------------
// Property: random command sequences, including those with several or no
// replies per command, give the same reply stream through the gateway as on
// a direct connection to the same server.

mod sequences {
    use super::*;
    use proptest::prelude::*;

    /// Commands that are fine anywhere, including inside MULTI.
    fn simple() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("PING".to_owned()),
            (0u8..3).prop_map(|i| format!("PING p{i}")),
            (0u8..3).prop_map(|i| format!("ECHO e{i}")),
            (0u8..3, 0u8..3).prop_map(|(k, v)| format!("SET k{k} v{v}")),
            (0u8..3).prop_map(|k| format!("GET k{k}")),
            (0u8..3).prop_map(|k| format!("INCR k{k}")),
            Just("GET".to_owned()),
            Just("NOSUCHCMD x".to_owned()),
        ]
    }

    /// Commands inside MULTI: simple ones, and the ones that change EXEC's
    /// reply (a reply mode, several acknowledgements).
    fn queued() -> BoxedStrategy<String> {
        prop_oneof![
            4 => simple(),
            1 => prop_oneof![
                Just("CLIENT REPLY OFF".to_owned()),
                Just("CLIENT REPLY SKIP".to_owned()),
                Just("CLIENT REPLY ON".to_owned())
            ],
            1 => prop_oneof![names("UNSUBSCRIBE"), names("PUNSUBSCRIBE")],
        ]
        .boxed()
    }

    fn names(prefix: &'static str) -> impl Strategy<Value = String> {
        proptest::collection::vec(0u8..3, 0..4).prop_map(move |v| {
            v.iter()
                .fold(prefix.to_owned(), |s, i| s + &format!(" c{i}"))
        })
    }

    /// One step of a session: a command, or a whole MULTI block.
    fn step() -> impl Strategy<Value = Vec<String>> {
        prop_oneof![
            4 => simple().prop_map(|c| vec![c]),
            1 => prop_oneof![Just("HELLO 2"), Just("HELLO 3")].prop_map(|c| vec![c.to_owned()]),
            1 => prop_oneof![
                Just("CLIENT REPLY OFF"),
                Just("CLIENT REPLY SKIP"),
                Just("CLIENT REPLY ON")
            ]
            .prop_map(|c| vec![c.to_owned()]),
            2 => prop_oneof![
                names("UNSUBSCRIBE"),
                names("PUNSUBSCRIBE"),
                names("SUNSUBSCRIBE")
            ]
            .prop_map(|c| vec![c]),
            1 => prop_oneof![names("SUBSCRIBE"), names("PSUBSCRIBE")].prop_map(|c| vec![c]),
            1 => (proptest::collection::vec(queued(), 0..4), any::<bool>()).prop_map(|(body, exec)| {
                let mut v = vec!["MULTI".to_owned()];
                v.extend(body);
                v.push(if exec { "EXEC" } else { "DISCARD" }.to_owned());
                v
            }),
        ]
    }

    fn session() -> impl Strategy<Value = (Vec<String>, bool)> {
        (
            proptest::collection::vec(step(), 1..10).prop_map(|s| s.concat()),
            any::<bool>(),
        )
    }

    /// Inline commands or RESP arrays, ended by RESET (replies on, out of
    /// subscriber mode) and QUIT.
    fn wire(cmds: &[String], arrays: bool) -> Vec<u8> {
        let mut out = Vec::new();
        for c in cmds.iter().map(String::as_str).chain(["RESET", "QUIT"]) {
            if arrays {
                out.extend(resp(&c.split(' ').collect::<Vec<_>>()));
            } else {
                out.extend(c.as_bytes());
                out.extend(b"\r\n");
            }
        }
        out
    }

    #[test]
    fn random_sequences_through_gateway_equal_direct() {
        let server = RedisServer::start();
        let gw = gateway_for(&server);
        let flush = || {
            assert_eq!(
                RawConn::connect(server.addr()).command(&["FLUSHALL"]),
                b"+OK\r\n"
            )
        };
        let config = ProptestConfig {
            cases: 256,
            max_shrink_iters: 8,
            failure_persistence: None,
            ..ProptestConfig::default()
        };
        proptest!(config, |((cmds, arrays) in session())| {
            let bytes = wire(&cmds, arrays);
            flush();
            let want = mask_client_ids(exchange(server.addr(), &bytes));
            flush();
            let got = mask_client_ids(exchange(gw.addr(), &bytes));
            prop_assert_eq!(text(&got), text(&want), "commands {:?}", cmds);
        });
    }
}
