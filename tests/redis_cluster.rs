//! Redis sharded across three private redis-servers through the gateway:
//! per-command results equal one direct server, keys land where the shard
//! map says (checked against a real cluster-mode redis-server's CLUSTER
//! KEYSLOT), multi-key commands split and merge, cross-shard commands get
//! clear errors, pub/sub, gateway and backend AUTH, dead shards.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use common::*;
use redis::Value;
use redis::aio::MultiplexedConnection;

/// Three shards and a gateway sharding over them with `sharding` plus `extra`
/// fields of the cluster's `redis` block.
fn sharded(sharding: &str, extra: &str) -> (Vec<RedisServer>, Gateway) {
    let shards: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let gw = gateway_over(&shards, sharding, extra, &[]);
    (shards, gw)
}

fn gateway_over(shards: &[RedisServer], sharding: &str, extra: &str, listener: &[&str]) -> Gateway {
    let field = format!("redis: {{sharding: {sharding}{extra}}}");
    Template {
        redis: shards.iter().map(RedisServer::addr).collect(),
        cluster_fields: vec![&field, "connect_timeout: 500ms"],
        listener: listener.to_vec(),
        ..Default::default()
    }
    .start()
}

fn dbsize(addr: SocketAddr) -> i64 {
    let reply = RawConn::connect(addr).command(&["DBSIZE"]);
    let text = String::from_utf8_lossy(&reply);
    text.trim()
        .trim_start_matches(':')
        .parse()
        .unwrap_or_else(|_| panic!("DBSIZE answered {text:?}"))
}

/// A broad command set on keys under `p` (strings, hashes, lists, sets, sorted
/// sets, expiry, multi-key commands), each result rendered as text.
async fn run_sequence(con: &mut MultiplexedConnection, p: &str) -> Vec<String> {
    let k = |s: &str| format!("{p}:{s}");
    let keys: Vec<String> = (0..20).map(|i| k(&format!("m{i}"))).collect();
    let mut mset = redis::cmd("MSET");
    for (i, key) in keys.iter().enumerate() {
        mset.arg(key).arg(format!("v{i}"));
    }
    let mut mget = redis::cmd("MGET");
    mget.arg(&keys).arg(k("missing")).arg(k("h"));
    let cmds: Vec<redis::Cmd> = vec![
        redis::cmd("SET").arg(k("s")).arg("v1").clone(),
        redis::cmd("GET").arg(k("s")).clone(),
        redis::cmd("APPEND").arg(k("s")).arg("-more").clone(),
        redis::cmd("GETRANGE").arg(k("s")).arg(0).arg(3).clone(),
        redis::cmd("SET").arg(k("n")).arg(10).clone(),
        redis::cmd("INCR").arg(k("n")).clone(),
        redis::cmd("INCRBYFLOAT").arg(k("n")).arg("1.5").clone(),
        redis::cmd("INCR").arg(k("s")).clone(), // an error reply
        redis::cmd("HSET")
            .arg(k("h"))
            .arg("f1")
            .arg("a")
            .arg("f2")
            .arg("b")
            .clone(),
        redis::cmd("HGETALL").arg(k("h")).clone(),
        redis::cmd("HINCRBY").arg(k("h")).arg("c").arg(3).clone(),
        redis::cmd("RPUSH")
            .arg(k("l"))
            .arg("x")
            .arg("y")
            .arg("z")
            .clone(),
        redis::cmd("LRANGE").arg(k("l")).arg(0).arg(-1).clone(),
        redis::cmd("LPOP").arg(k("l")).clone(),
        redis::cmd("SADD")
            .arg(k("set"))
            .arg("a")
            .arg("b")
            .arg("a")
            .clone(),
        redis::cmd("SCARD").arg(k("set")).clone(),
        redis::cmd("SISMEMBER").arg(k("set")).arg("b").clone(),
        redis::cmd("ZADD")
            .arg(k("z"))
            .arg(1)
            .arg("one")
            .arg(2)
            .arg("two")
            .clone(),
        redis::cmd("ZRANGE")
            .arg(k("z"))
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .clone(),
        redis::cmd("ZINCRBY").arg(k("z")).arg(5).arg("one").clone(),
        redis::cmd("EXPIRE").arg(k("s")).arg(1000).clone(),
        redis::cmd("TTL").arg(k("s")).clone(),
        redis::cmd("PERSIST").arg(k("s")).clone(),
        redis::cmd("TTL").arg(k("s")).clone(),
        redis::cmd("TYPE").arg(k("z")).clone(),
        mset,
        mget,
        redis::cmd("EXISTS")
            .arg(&keys[..5])
            .arg(k("missing"))
            .arg(&keys[0])
            .clone(),
        redis::cmd("TOUCH").arg(&keys[5..9]).clone(),
        redis::cmd("DEL").arg(&keys[..10]).arg(k("missing")).clone(),
        redis::cmd("UNLINK").arg(&keys[10..]).clone(),
        redis::cmd("MGET").arg(&keys[..3]).clone(),
        redis::cmd("GET").arg(k("s")).clone(),
    ];
    run_commands(con, cmds).await
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn sharded_commands_equal_one_direct_server_in_both_modes() {
    let single = RedisServer::start();
    for mode in ["ketama", "slots"] {
        let (shards, gw) = sharded(mode, "");
        runtime().block_on(async {
            let mut direct = single.direct().await;
            let mut via = redis_conn(gw.addr()).await;
            let want = run_sequence(&mut direct, mode).await;
            let got = run_sequence(&mut via, mode).await;
            assert_eq!(got, want, "{mode}");
        });
        // 100 more keys both ways, then: the keys are spread (every shard
        // holds some) and none is held twice.
        let (mut d, mut g) = (RawConn::connect(single.addr()), RawConn::connect(gw.addr()));
        for i in 0..100 {
            let k = format!("{i}:{mode}:spread");
            assert_eq!(d.command(&["SET", &k, "v"]), g.command(&["SET", &k, "v"]));
        }
        let sizes: Vec<i64> = shards.iter().map(|s| dbsize(s.addr())).collect();
        assert!(sizes.iter().all(|&n| n > 0), "{mode}: {sizes:?}");
        let direct_keys = {
            let mut c = RawConn::connect(single.addr());
            let mut count = |pattern: &str| {
                let r = c.command(&["KEYS", pattern]);
                r.iter().filter(|&&b| b == b'$').count() as i64
            };
            count(&format!("{mode}:*")) + count(&format!("*:{mode}:spread"))
        };
        assert_eq!(sizes.iter().sum::<i64>(), direct_keys, "{mode}: {sizes:?}");
    }
}

#[test]
fn slots_mode_places_keys_as_redis_cluster_keyslot_says() {
    // A cluster-enabled redis-server answers CLUSTER KEYSLOT: the oracle.
    // Its cluster bus port is given explicitly: port + 10000 may be taken or out of range.
    let bus = free_port().to_string();
    let oracle = RedisServer::start_with(&[
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
        "--cluster-port",
        &bus,
    ]);
    let (shards, gw) = sharded("slots", "");
    let mut ask = RawConn::connect(oracle.addr());
    let mut c = RawConn::connect(gw.addr());
    let keys: Vec<String> = (0..60)
        .map(|i| match i % 3 {
            0 => format!("user:{i}"),
            1 => format!("{{tag{i}}}.x"),
            _ => format!("a{{}}b{i}"),
        })
        .collect();
    for key in &keys {
        assert_eq!(c.command(&["SET", key, "1"]), b"+OK\r\n");
        let slot: u64 = String::from_utf8_lossy(&ask.command(&["CLUSTER", "KEYSLOT", key]))
            .trim()
            .trim_start_matches(':')
            .parse()
            .unwrap();
        // Three equal shards own slots 0..5461, 5461..10922, 10922..16384.
        let owner = (slot * 3 / 16384) as usize;
        for (i, s) in shards.iter().enumerate() {
            let exists = RawConn::connect(s.addr()).command(&["EXISTS", key]);
            let want: &[u8] = if i == owner { b":1\r\n" } else { b":0\r\n" };
            assert_eq!(exists, want, "key {key} (slot {slot}) on shard {i}");
        }
    }
}

#[test]
fn a_pipeline_across_shards_is_answered_in_order() {
    let (_shards, gw) = sharded("ketama", "");
    runtime().block_on(async {
        let mut con = redis_conn(gw.addr()).await;
        let mut pipe = redis::pipe();
        for i in 0..1000 {
            match i % 4 {
                0 => pipe.cmd("SET").arg(format!("p:{i}")).arg(i),
                1 => pipe.cmd("GET").arg(format!("p:{}", i - 1)),
                2 => pipe.cmd("INCR").arg(format!("p:{}", i - 2)),
                _ => pipe
                    .cmd("MGET")
                    .arg(format!("p:{}", i - 3))
                    .arg(format!("q:{i}"))
                    .arg(format!("p:{}", i - 3)),
            };
        }
        let got: Vec<Value> = pipe.query_async(&mut con).await.unwrap();
        assert_eq!(got.len(), 1000);
        for (i, v) in got.iter().enumerate() {
            let base = i - i % 4;
            let want = match i % 4 {
                0 => Value::Okay,
                1 => Value::BulkString(base.to_string().into_bytes()),
                2 => Value::Int(base as i64 + 1),
                _ => {
                    let n = Value::BulkString((base + 1).to_string().into_bytes());
                    Value::Array(vec![n.clone(), Value::Nil, n])
                }
            };
            assert_eq!(v, &want, "reply {i}");
        }
    });
}

#[test]
fn cross_shard_commands_get_clear_errors_and_hash_tags_make_them_work() {
    let (shards, gw) = sharded("slots", "");
    let mut c = RawConn::connect(gw.addr());
    // "hello" (slot 866) and "foo" (12182) are on different shards.
    c.command(&["SET", "hello", "1"]);
    let rename = String::from_utf8_lossy(&c.command(&["RENAME", "hello", "foo"])).into_owned();
    assert!(
        rename.starts_with("-CROSSSLOT") && rename.contains("rename"),
        "{rename}"
    );
    for (args, name) in [
        (&["RANDOMKEY"][..], "randomkey"),
        (&["SWAPDB", "0", "1"][..], "swapdb"),
    ] {
        let e = String::from_utf8_lossy(&c.command(args)).into_owned();
        assert!(
            e.starts_with(&format!(
                "-ERR '{name}' is not supported on a sharded cluster"
            )),
            "{e}"
        );
    }
    let blpop = String::from_utf8_lossy(&c.command(&["BLPOP", "hello", "foo", "1"])).into_owned();
    assert!(blpop.starts_with("-CROSSSLOT"), "{blpop}");
    // The same commands on one {hash tag} work.
    c.command(&["SET", "{u1}a", "x"]);
    assert_eq!(c.command(&["RENAME", "{u1}a", "{u1}b"]), b"+OK\r\n");
    assert_eq!(c.command(&["GET", "{u1}b"]), b"$1\r\nx\r\n");
    c.command(&["SADD", "{t}s1", "a", "b"]);
    c.command(&["SADD", "{t}s2", "b", "c"]);
    assert_eq!(
        c.command(&["SUNIONSTORE", "{t}d", "{t}s1", "{t}s2"]),
        b":3\r\n"
    );
    let eval = c.command(&[
        "EVAL",
        "return redis.call('GET', KEYS[1])",
        "2",
        "{u1}b",
        "{u1}c",
    ]);
    assert_eq!(eval, b"$1\r\nx\r\n");
    // A transaction on one shard is a real transaction.
    assert_eq!(c.command(&["MULTI"]), b"+OK\r\n");
    assert_eq!(c.command(&["INCR", "{acct}n"]), b"+QUEUED\r\n");
    assert_eq!(c.command(&["INCR", "{acct}n"]), b"+QUEUED\r\n");
    assert_eq!(c.command(&["EXEC"]), b"*2\r\n:1\r\n:2\r\n");
    // One spanning shards is refused at queue time and aborted at EXEC, as Redis Cluster.
    assert_eq!(c.command(&["MULTI"]), b"+OK\r\n");
    assert_eq!(c.command(&["SET", "hello", "2"]), b"+QUEUED\r\n");
    assert!(c.command(&["SET", "foo", "2"]).starts_with(b"-CROSSSLOT"));
    assert!(c.command(&["EXEC"]).starts_with(b"-EXECABORT"));
    assert_eq!(
        c.command(&["GET", "hello"]),
        b"$1\r\n1\r\n",
        "nothing of the aborted transaction ran"
    );
    // WATCH then a write by another client: EXEC returns nil.
    assert_eq!(c.command(&["WATCH", "{w}k"]), b"+OK\r\n");
    RawConn::connect(gw.addr()).command(&["SET", "{w}k", "other"]);
    c.command(&["MULTI"]);
    c.command(&["SET", "{w}k", "mine"]);
    assert_eq!(c.command(&["EXEC"]), b"*-1\r\n");
    // A blocking pop on one shard waits for a push from another client.
    let addr = gw.addr();
    let pusher = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        RawConn::connect(addr).command(&["RPUSH", "{q}jobs", "j1"])
    });
    assert_eq!(
        c.command(&["BLPOP", "{q}jobs", "{q}other", "5"]),
        b"*2\r\n$7\r\n{q}jobs\r\n$2\r\nj1\r\n"
    );
    assert_eq!(pusher.join().unwrap(), b":1\r\n");
    // Keys of one tag live on one shard.
    let holders = shards
        .iter()
        .filter(|s| RawConn::connect(s.addr()).command(&["EXISTS", "{t}d"]) == b":1\r\n")
        .count();
    assert_eq!(holders, 1);
}

#[test]
fn session_commands_reach_every_shard() {
    let (shards, gw) = sharded("ketama", "");
    let mut c = RawConn::connect(gw.addr());
    assert_eq!(c.command(&["SELECT", "3"]), b"+OK\r\n");
    for i in 0..30 {
        assert_eq!(c.command(&["SET", &format!("db3:{i}"), "v"]), b"+OK\r\n");
    }
    // Every key went to database 3 of its shard, none to database 0.
    let mut total = 0;
    for s in &shards {
        assert_eq!(dbsize(s.addr()), 0);
        let mut d = RawConn::connect(s.addr());
        d.command(&["SELECT", "3"]);
        let n: i64 = String::from_utf8_lossy(&d.command(&["DBSIZE"]))
            .trim()
            .trim_start_matches(':')
            .parse()
            .unwrap();
        total += n;
    }
    assert_eq!(total, 30);
    // RESP3 from every shard after HELLO 3.
    let hello = c.command(&["HELLO", "3"]);
    assert!(
        hello.starts_with(b"%"),
        "{:?}",
        String::from_utf8_lossy(&hello)
    );
    c.command(&["HSET", "db3:h", "f", "v"]);
    assert_eq!(
        c.command(&["HGETALL", "db3:h"]),
        b"%1\r\n$1\r\nf\r\n$1\r\nv\r\n"
    );
    assert_eq!(c.command(&["PING"]), b"+PONG\r\n");
    assert_eq!(c.command(&["ECHO", "hi"]), b"$2\r\nhi\r\n");
}

#[test]
fn pubsub_works_through_a_sharded_cluster() {
    let (_shards, gw) = sharded("ketama", "");
    let sub = Command::new(require("redis-cli"))
        .args(["-h", "127.0.0.1", "-p", &gw.addr().port().to_string()])
        .args(["SUBSCRIBE", "news"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut publisher = RawConn::connect(gw.addr());
    wait_for("a subscriber on news", Duration::from_secs(10), || {
        (publisher.command(&["PUBLISH", "news", "hello"]) == b":1\r\n").then_some(())
    });
    let mut sub = sub;
    std::thread::sleep(Duration::from_millis(200));
    sub.kill().unwrap();
    let out = sub.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("subscribe\nnews\n1\nmessage\nnews\nhello"),
        "{text}"
    );
}

#[test]
fn gateway_auth_and_backend_auth() {
    let shards: Vec<RedisServer> = (0..3)
        .map(|_| RedisServer::start_with(&["--requirepass", "backend-pw"]))
        .collect();
    let gw = gateway_over(
        &shards,
        "slots",
        ", password: backend-pw",
        &["redis: {users: [{password: client-pw}, {name: app, password: app-pw}]}"],
    );
    let mut c = RawConn::connect(gw.addr());
    assert!(c.command(&["GET", "k"]).starts_with(b"-NOAUTH"));
    assert!(
        c.command(&["AUTH", "backend-pw"])
            .starts_with(b"-WRONGPASS"),
        "the backends' password is not a client's"
    );
    assert_eq!(c.command(&["AUTH", "client-pw"]), b"+OK\r\n");
    for i in 0..20 {
        assert_eq!(c.command(&["SET", &format!("a{i}"), "v"]), b"+OK\r\n");
    }
    assert_eq!(
        c.command(&["MGET", "a0", "a1", "a2"]),
        b"*3\r\n$1\r\nv\r\n$1\r\nv\r\n$1\r\nv\r\n"
    );
    // HELLO 3 AUTH user pass, as RESP3 clients log in.
    let mut h = RawConn::connect(gw.addr());
    let hello = h.command(&["HELLO", "3", "AUTH", "app", "app-pw"]);
    assert!(
        hello.starts_with(b"%"),
        "{:?}",
        String::from_utf8_lossy(&hello)
    );
    assert_eq!(h.command(&["GET", "a1"]), b"$1\r\nv\r\n");
    // redis-cli with -a.
    let out = Command::new(require("redis-cli"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &gw.addr().port().to_string(),
            "--no-auth-warning",
            "-a",
            "client-pw",
            "GET",
            "a5",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "v");
}

#[test]
fn a_dead_shard_fails_only_its_keys_without_auto_eject() {
    let (mut shards, gw) = sharded("slots", "");
    let mut c = RawConn::connect(gw.addr());
    // "hello" → shard 0, "foo" → shard 2.
    c.command(&["SET", "hello", "1"]);
    c.command(&["SET", "foo", "2"]);
    shards[2].kill();
    let e = String::from_utf8_lossy(&c.command(&["GET", "foo"])).into_owned();
    assert!(e.starts_with("-ERR") && e.contains("upstream"), "{e}");
    assert_eq!(c.command(&["GET", "hello"]), b"$1\r\n1\r\n");
    // A split command touching the dead shard answers an error, in its place.
    let mut burst = resp(&["MGET", "hello", "foo"]);
    burst.extend(resp(&["GET", "hello"]));
    c.send(&burst);
    assert!(c.reply().unwrap().starts_with(b"-ERR"));
    assert_eq!(c.reply().unwrap(), b"$1\r\n1\r\n");
    // Back up (empty): its keys are served again.
    shards[2].restart();
    wait_for(
        "the restarted shard to serve foo",
        Duration::from_secs(10),
        || (c.command(&["SET", "foo", "3"]) == b"+OK\r\n").then_some(()),
    );
    assert_eq!(c.command(&["GET", "foo"]), b"$1\r\n3\r\n");
}

#[test]
fn a_dead_shard_is_ejected_and_its_keys_rehashed_with_auto_eject() {
    let (mut shards, gw) = sharded(
        "ketama",
        ", auto_eject: true, eject_after: 2, health_check_interval: 200ms",
    );
    // Load running while a shard dies: other clients keep being served.
    let addr = gw.addr();
    let load = std::thread::spawn(move || {
        let mut c = RawConn::connect(addr);
        let mut ok = 0;
        for i in 0..3000 {
            if c.command(&["SET", &format!("load:{}", i % 300), "v"]) == b"+OK\r\n" {
                ok += 1;
            }
        }
        ok
    });
    std::thread::sleep(Duration::from_millis(100));
    shards[1].kill();
    let ok = load.join().unwrap();
    assert!(ok > 0, "the load connection stopped being served");
    // After eject_after failed checks every key is writable again, on the live shards.
    let mut c = RawConn::connect(gw.addr());
    wait_for(
        "every key to be served after the ejection",
        Duration::from_secs(10),
        || {
            (0..100)
                .all(|i| c.command(&["SET", &format!("after:{i}"), "v"]) == b"+OK\r\n")
                .then_some(())
        },
    );
    let live: i64 = [0, 2].iter().map(|&i| dbsize(shards[i].addr())).sum();
    assert!(live >= 100, "{live}");
    let dead = shards[1].addr().to_string();
    let ejected = |gw: &Gateway| {
        gw.metric(
            "switchyard_redis_shard_ejected",
            &[("cluster", "redis"), ("host", &dead)],
        )
    };
    wait_for(
        "the ejection to show in /metrics",
        Duration::from_secs(5),
        || (ejected(&gw) == 1.0).then_some(()),
    );
    assert!(gw.log().contains("redis shard ejected"), "{}", gw.log());
    // Restored when it answers again.
    shards[1].restart();
    wait_for("the shard to be restored", Duration::from_secs(10), || {
        (ejected(&gw) == 0.0).then_some(())
    });
    assert!(gw.log().contains("redis shard restored"), "{}", gw.log());
    // Keys that differ in their first characters: twemproxy's fnv1a_64 puts
    // keys differing only in a last digit or two next to each other on the ring.
    for i in 0..100 {
        assert_eq!(c.command(&["SET", &format!("{i}:back"), "v"]), b"+OK\r\n");
    }
    let sizes: Vec<i64> = shards.iter().map(|s| dbsize(s.addr())).collect();
    assert!(
        sizes[1] > 0,
        "the restored shard takes its keys back: {sizes:?}"
    );
}

#[test]
fn redis_benchmark_through_a_sharded_cluster_has_no_errors() {
    let (shards, gw) = sharded("ketama", "");
    let out = Command::new(require("redis-benchmark"))
        .args(["-h", "127.0.0.1", "-p", &gw.addr().port().to_string()])
        .args([
            "-t",
            "set,get,mset,incr,lpush",
            "-n",
            "20000",
            "-P",
            "16",
            "-c",
            "20",
            "-r",
            "10000",
            "-q",
        ])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(!text.to_lowercase().contains("error"), "{text}");
    for t in ["SET:", "GET:", "MSET (10 keys):", "INCR:", "LPUSH:"] {
        assert!(text.contains(t), "{t} missing in {text}");
    }
    let sizes: Vec<i64> = shards.iter().map(|s| dbsize(s.addr())).collect();
    assert!(sizes.iter().all(|&n| n > 100), "{sizes:?}");
}

#[test]
fn malformed_input_closes_only_that_client() {
    let (_shards, gw) = sharded("slots", "");
    let mut good = RawConn::connect(gw.addr());
    assert_eq!(good.command(&["SET", "k", "v"]), b"+OK\r\n");
    let mut bad = RawConn::connect(gw.addr());
    bad.send(b"*2\r\n$3\r\nGET\r\n$x\r\n");
    let (bytes, _) = bad.read_until_closed();
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        text.starts_with("-ERR Protocol error"),
        "want a protocol error then close, got {text:?}"
    );
    assert_eq!(good.command(&["GET", "k"]), b"$1\r\nv\r\n");
}

fn get_calls(addr: SocketAddr) -> u64 {
    let info = RawConn::connect(addr).command(&["INFO", "commandstats"]);
    let text = String::from_utf8_lossy(&info).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("cmdstat_get:calls="))
        .and_then(|rest| rest.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn reads_go_to_replicas_and_fall_back_to_the_primary() {
    let primaries: Vec<RedisServer> = (0..2).map(|_| RedisServer::start()).collect();
    let mut replicas: Vec<RedisServer> = primaries
        .iter()
        .map(|p| RedisServer::start_with(&["--replicaof", "127.0.0.1", &p.port.to_string()]))
        .collect();
    let hosts: Vec<String> = primaries
        .iter()
        .zip(&replicas)
        .map(|(p, r)| {
            format!(
                "{{address: \"{}\", replicas: [\"{}\"]}}",
                p.addr(),
                r.addr()
            )
        })
        .collect();
    let gw = Template {
        routes: vec!["{match: {protocol: redis}, cluster: rep}".into()],
        clusters: vec![format!(
            "{{name: rep, hosts: [{}], connect_timeout: 500ms, redis: {{sharding: slots, read_from: replica}}}}",
            hosts.join(", ")
        )],
        ..Default::default()
    }
    .start();
    let mut c = RawConn::connect(gw.addr());
    for i in 0..50 {
        assert_eq!(
            c.command(&["SET", &format!("r{i}"), &i.to_string()]),
            b"+OK\r\n"
        );
    }
    wait_for(
        "the replicas to have every key",
        Duration::from_secs(10),
        || (replicas.iter().map(|r| dbsize(r.addr())).sum::<i64>() == 50).then_some(()),
    );
    for i in 0..50 {
        let want = format!("${}\r\n{i}\r\n", i.to_string().len());
        assert_eq!(c.command(&["GET", &format!("r{i}")]), want.as_bytes());
    }
    // Every GET was answered by a replica, none by a primary; writes went to the primaries.
    assert_eq!(
        replicas.iter().map(|r| get_calls(r.addr())).sum::<u64>(),
        50
    );
    assert_eq!(
        primaries.iter().map(|p| get_calls(p.addr())).sum::<u64>(),
        0
    );
    assert!(primaries.iter().all(|p| dbsize(p.addr()) > 0));
    assert_eq!(
        c.command(&["MGET", "r1", "r2", "r3"]),
        b"*3\r\n$1\r\n1\r\n$1\r\n2\r\n$1\r\n3\r\n"
    );
    // A replica gone: its shard's reads are answered by the primary.
    replicas[0].kill();
    replicas[1].kill();
    let mut fresh = RawConn::connect(gw.addr());
    for i in 0..50 {
        let want = format!("${}\r\n{i}\r\n", i.to_string().len());
        assert_eq!(fresh.command(&["GET", &format!("r{i}")]), want.as_bytes());
        assert_eq!(c.command(&["GET", &format!("r{i}")]), want.as_bytes());
    }
    assert!(primaries.iter().map(|p| get_calls(p.addr())).sum::<u64>() >= 100);
}

#[test]
fn ketama_places_keys_where_twemproxy_does() {
    let shards: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let weights = [1, 2, 1];
    let servers: Vec<(SocketAddr, u32)> =
        shards.iter().map(RedisServer::addr).zip(weights).collect();
    let twem = Twemproxy::redis(&servers);
    let hosts: Vec<String> = servers
        .iter()
        .map(|(a, w)| format!("{{address: \"{a}\", weight: {w}}}"))
        .collect();
    let gw = Template {
        routes: vec!["{match: {protocol: redis}, cluster: shards}".into()],
        clusters: vec![format!(
            "{{name: shards, hosts: [{}], redis: {{sharding: ketama}}}}",
            hosts.join(", ")
        )],
        ..Default::default()
    }
    .start();
    // Keys written through twemproxy (plain, tagged, and non-ASCII ones,
    // whose bytes twemproxy hashes as signed chars)...
    // (Varying in their first characters: twemproxy's fnv1a_64 puts keys
    // that differ only in a last digit next to each other on the ring.)
    let keys: Vec<String> = (0..300)
        .map(|i| match i % 3 {
            0 => format!("{i}:user"),
            1 => format!("{{{}:cart}}:item:{i}", i % 7),
            _ => format!("{i}-ключ-é"),
        })
        .collect();
    let mut t = RawConn::connect(local(twem.port));
    for k in &keys {
        assert_eq!(t.command(&["SET", k, k]), b"+OK\r\n");
    }
    // ...are all found through Switchyard over the same servers: same placement.
    let mut c = RawConn::connect(gw.addr());
    for k in &keys {
        let want = format!("${}\r\n{k}\r\n", k.len());
        assert_eq!(c.command(&["GET", k]), want.as_bytes(), "{k}");
    }
    // Every server holds some (the weights' shares are checked in the unit tests).
    let sizes: Vec<i64> = shards.iter().map(|s| dbsize(s.addr())).collect();
    assert!(sizes.iter().all(|&n| n > 0), "{sizes:?}");
}

/// The bulk strings of a raw reply made of arrays and bulk strings, in order.
fn bulk_strings(reply: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(reply)
        .split("\r\n")
        .filter(|l| !l.is_empty() && !l.starts_with('*') && !l.starts_with('$'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn keyspace_commands_fan_out_over_every_shard() {
    let (shards, gw) = sharded("slots", "");
    let mut c = RawConn::connect(gw.addr());
    let mut want: Vec<String> = (0..60).map(|i| format!("fan:{i}")).collect();
    for k in &want {
        assert_eq!(c.command(&["SET", k, "v"]), b"+OK\r\n");
    }
    want.sort();
    assert!(
        shards.iter().all(|s| dbsize(s.addr()) > 0),
        "the keys should be spread over every shard"
    );
    assert_eq!(c.command(&["DBSIZE"]), b":60\r\n");
    let mut keys = bulk_strings(&c.command(&["KEYS", "fan:*"]));
    keys.sort();
    assert_eq!(keys, want);
    // SCAN walks every shard, the shard folded into the cursor.
    let mut cursor = "0".to_owned();
    let mut seen = Vec::new();
    for _ in 0..200 {
        let page = bulk_strings(&c.command(&["SCAN", &cursor, "MATCH", "fan:*", "COUNT", "7"]));
        cursor = page[0].clone();
        seen.extend(page[1..].iter().cloned());
        if cursor == "0" {
            break;
        }
    }
    assert_eq!(cursor, "0", "SCAN never finished");
    seen.sort();
    seen.dedup();
    assert_eq!(seen, want);
    assert_eq!(
        c.command(&["SCAN", "x"]),
        RawConn::connect(shards[0].addr()).command(&["SCAN", "x"]),
        "a bad cursor gets the server's own error"
    );
    assert_eq!(c.command(&["FLUSHDB"]), b"+OK\r\n");
    assert!(shards.iter().all(|s| dbsize(s.addr()) == 0));
    c.command(&["SET", "again", "1"]);
    assert_eq!(c.command(&["FLUSHALL"]), b"+OK\r\n");
    assert_eq!(c.command(&["DBSIZE"]), b":0\r\n");
}

#[test]
fn a_one_host_sharded_cluster_forwards_keyspace_commands() {
    let shard = RedisServer::start();
    let gw = gateway_over(std::slice::from_ref(&shard), "ketama", "", &[]);
    let mut c = RawConn::connect(gw.addr());
    c.command(&["SET", "only", "1"]);
    assert_eq!(c.command(&["DBSIZE"]), b":1\r\n");
    assert_eq!(c.command(&["KEYS", "*"]), b"*1\r\n$4\r\nonly\r\n");
    assert_eq!(c.command(&["RANDOMKEY"]), b"$4\r\nonly\r\n");
    assert_eq!(c.command(&["FLUSHALL"]), b"+OK\r\n");
    assert_eq!(dbsize(shard.addr()), 0);
}

#[test]
fn sharded_transaction_errors_and_unsubscribe_match_redis() {
    let (shards, gw) = sharded("slots", "");
    let mut direct = RawConn::connect(shards[0].addr());
    let mut c = RawConn::connect(gw.addr());
    for args in [
        &["EXEC"][..],
        &["DISCARD"],
        &["MULTI"],
        &["MULTI"],
        &["WATCH", "k"],
        &["DISCARD"],
    ] {
        assert_eq!(
            String::from_utf8_lossy(&c.command(args)),
            String::from_utf8_lossy(&direct.command(args)),
            "{args:?}"
        );
    }
    // One reply per channel, and the next command gets its own.
    c.send(b"UNSUBSCRIBE a b\r\nECHO next\r\n");
    direct.send(b"UNSUBSCRIBE a b\r\nECHO next\r\n");
    for _ in 0..3 {
        assert_eq!(
            String::from_utf8_lossy(&c.reply().unwrap()),
            String::from_utf8_lossy(&direct.reply().unwrap())
        );
    }
}
