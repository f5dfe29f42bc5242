//! Redis sessions sharing upstream connections (`clusters[].redis.shared_connections`),
//! against a private redis-server, with raw RESP clients.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Barrier};

use common::*;

/// A gateway for `server` whose `redis` cluster has `redis: {extra}`.
fn gateway(server: &RedisServer, extra: &str) -> Gateway {
    let field = format!("redis: {{{extra}}}");
    Template {
        redis: vec![server.addr()],
        cluster_fields: vec![&field],
        ..Default::default()
    }
    .start()
}

/// The server's connected clients (the asking connection included).
fn connected_clients(server: &RedisServer) -> usize {
    let mut direct = RawConn::connect(server.addr());
    let info = direct.command(&["INFO", "clients"]);
    let info = String::from_utf8_lossy(&info);
    info.lines()
        .find_map(|l| l.strip_prefix("connected_clients:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no connected_clients in {info}"))
}

fn bulk(s: &str) -> Vec<u8> {
    format!("${}\r\n{s}\r\n", s.len()).into_bytes()
}

/// `clients` clients, each doing unpipelined SET/GET `rounds` times on its
/// own keys and checking every reply; all stay connected until `counted`
/// reads the server's connection count.
fn unpipelined_clients(
    gw: SocketAddr,
    clients: usize,
    rounds: usize,
    counted: impl FnOnce() -> usize,
) -> usize {
    let done = Arc::new(Barrier::new(clients + 1));
    let leave = Arc::new(Barrier::new(clients + 1));
    let workers: Vec<_> = (0..clients)
        .map(|c| {
            let (done, leave) = (done.clone(), leave.clone());
            std::thread::spawn(move || {
                let mut con = RawConn::connect(gw);
                for r in 0..rounds {
                    let key = format!("client{c}:key{}", r % 7);
                    let value = format!("value-{c}-{r}");
                    assert_eq!(
                        con.command(&["SET", &key, &value]),
                        b"+OK\r\n",
                        "client {c}"
                    );
                    assert_eq!(con.command(&["GET", &key]), bulk(&value), "client {c}");
                }
                done.wait();
                leave.wait();
            })
        })
        .collect();
    done.wait();
    let n = counted();
    leave.wait();
    for w in workers {
        w.join().expect("a client thread failed");
    }
    n
}

#[test]
fn fifty_unpipelined_clients_share_the_configured_connections() {
    let server = RedisServer::start();
    let gw = gateway(&server, "shared_connections: 2");
    let upstream = unpipelined_clients(gw.addr(), 50, 40, || connected_clients(&server) - 1);
    assert_eq!(
        upstream, 2,
        "the server should see only the 2 shared gateway connections"
    );
    // Every write landed where its client put it.
    let mut direct = RawConn::connect(server.addr());
    assert_eq!(
        direct.command(&["GET", "client49:key4"]),
        bulk("value-49-39")
    );
}

#[test]
fn zero_shared_connections_keeps_one_connection_per_session() {
    let server = RedisServer::start();
    let gw = gateway(&server, "shared_connections: 0");
    let upstream = unpipelined_clients(gw.addr(), 10, 5, || connected_clients(&server) - 1);
    assert_eq!(upstream, 10);
}

#[test]
fn stateful_sessions_get_their_own_connection_and_keep_their_state() {
    let server = RedisServer::start();
    let gw = gateway(&server, "shared_connections: 1");
    let mut plain = RawConn::connect(gw.addr());
    assert_eq!(plain.command(&["SET", "k", "db0"]), b"+OK\r\n");

    // SELECT 1: that session's commands run in db 1, the others' in db 0.
    let mut selected = RawConn::connect(gw.addr());
    assert_eq!(selected.command(&["SELECT", "1"]), b"+OK\r\n");
    assert_eq!(selected.command(&["GET", "k"]), b"$-1\r\n");
    assert_eq!(selected.command(&["SET", "k", "db1"]), b"+OK\r\n");
    assert_eq!(plain.command(&["GET", "k"]), bulk("db0"));
    let mut fresh = RawConn::connect(gw.addr());
    assert_eq!(fresh.command(&["GET", "k"]), bulk("db0"));
    assert_eq!(selected.command(&["GET", "k"]), bulk("db1"));

    // MULTI: the transaction queues only its own session's commands.
    let mut txn = RawConn::connect(gw.addr());
    assert_eq!(txn.command(&["MULTI"]), b"+OK\r\n");
    assert_eq!(txn.command(&["SET", "t", "1"]), b"+QUEUED\r\n");
    assert_eq!(plain.command(&["GET", "t"]), b"$-1\r\n");
    assert_eq!(plain.command(&["SET", "u", "2"]), b"+OK\r\n");
    assert_eq!(txn.command(&["EXEC"]), b"*1\r\n+OK\r\n");
    assert_eq!(plain.command(&["GET", "t"]), bulk("1"));

    // BLPOP waits on its own connection: the others go on meanwhile.
    let gw_addr = gw.addr();
    let blocked = std::thread::spawn(move || {
        let mut c = RawConn::connect(gw_addr);
        c.command(&["BLPOP", "queue", "20"])
    });
    // Until the BLPOP waits on the server, and while it waits, the other
    // sessions are served.
    let mut direct = RawConn::connect(server.addr());
    let mut waiting = false;
    for _ in 0..500 {
        let info = direct.command(&["INFO", "clients"]);
        waiting = String::from_utf8_lossy(&info).contains("blocked_clients:1");
        assert_eq!(plain.command(&["PING"]), b"+PONG\r\n");
        if waiting {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(waiting, "the BLPOP never reached the server");
    assert_eq!(plain.command(&["GET", "k"]), bulk("db0"));
    // One shared connection, plus one each for SELECT, MULTI and BLPOP
    // (besides `direct` and the one asking).
    assert_eq!(connected_clients(&server) - 2, 1 + 3);
    assert_eq!(fresh.command(&["LPUSH", "queue", "job"]), b":1\r\n");
    assert_eq!(
        blocked.join().unwrap(),
        b"*2\r\n$5\r\nqueue\r\n$3\r\njob\r\n"
    );
}

#[test]
fn a_killed_shared_connection_fails_only_what_was_in_flight_on_it() {
    let server = RedisServer::start();
    let gw = gateway(&server, "shared_connections: 1");
    let mut a = RawConn::connect(gw.addr());
    let mut b = RawConn::connect(gw.addr());
    assert_eq!(a.command(&["SET", "a", "1"]), b"+OK\r\n");
    assert_eq!(b.command(&["SET", "b", "1"]), b"+OK\r\n");
    // (The shared connection's last command is not a SET: see below.)
    assert_eq!(b.command(&["GET", "b"]), bulk("1"));

    // Hold A's next write on the server (CLIENT PAUSE WRITE), then kill the
    // shared connection it is waiting on.
    let mut direct = RawConn::connect(server.addr());
    assert_eq!(
        direct.command(&["CLIENT", "PAUSE", "10000", "WRITE"]),
        b"+OK\r\n"
    );
    a.send(&resp(&["SET", "a", "2"]));
    // The server shows a paused command as the connection's last one.
    for _ in 0..200 {
        let list = direct.command(&["CLIENT", "LIST"]);
        if String::from_utf8_lossy(&list).contains("cmd=set") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let killed = direct.command(&["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"]);
    assert_eq!(killed, b":1\r\n", "one shared gateway connection");
    assert_eq!(direct.command(&["CLIENT", "UNPAUSE"]), b"+OK\r\n");

    let failed = a.reply().unwrap();
    assert!(
        failed.starts_with(b"-ERR the upstream closed the connection"),
        "the command in flight gets an upstream error: {}",
        String::from_utf8_lossy(&failed)
    );
    // Both sessions go on, on a new shared connection.
    assert_eq!(b.command(&["GET", "b"]), bulk("1"));
    assert_eq!(a.command(&["GET", "a"]), bulk("1"));
    assert_eq!(a.command(&["SET", "a", "3"]), b"+OK\r\n");
    assert_eq!(b.command(&["GET", "a"]), bulk("3"));
    // The new shared connection (besides `direct` and the one asking).
    assert_eq!(connected_clients(&server) - 2, 1);
}

#[test]
fn commands_before_a_session_leaves_the_shared_connection_run_first() {
    let server = RedisServer::start();
    let gw = gateway(&server, "shared_connections: 1");
    for i in 0..40 {
        let key = format!("order{i}");
        let mut c = RawConn::connect(gw.addr());
        // One write: SET on the shared connection, then MULTI moves the
        // session to its own; the server must still run the SET first.
        c.send(
            &[
                resp(&["SET", &key, "1"]),
                resp(&["MULTI"]),
                resp(&["INCR", &key]),
                resp(&["EXEC"]),
            ]
            .concat(),
        );
        for want in [&b"+OK\r\n"[..], b"+OK\r\n", b"+QUEUED\r\n", b"*1\r\n:2\r\n"] {
            assert_eq!(c.reply().unwrap(), want, "round {i}");
        }
    }
}

/// The pipeline of round `i` for keys under `prefix`: shared batches and
/// replies the gateway makes itself (`CLIENT REPLY ON`), interleaved; with
/// `leave`, then a transaction, which moves the session to its own
/// connection (and its replies to a writer task) mid-pipeline.
fn mixed_pipeline(prefix: &str, i: usize, leave: bool) -> Vec<Vec<u8>> {
    let k = format!("{prefix}:k{i}");
    let n = format!("{prefix}:n{i}");
    let mut cmds = vec![
        resp(&["SET", &k, &format!("v{i}")]),
        resp(&["CLIENT", "REPLY", "ON"]),
        resp(&["GET", &k]),
        resp(&["INCR", &n]),
        resp(&["CLIENT", "REPLY", "ON"]),
        resp(&["CLIENT", "REPLY", "ON"]),
        resp(&["GET", &k]),
        resp(&["ECHO", &format!("e{i}")]),
        resp(&["CLIENT", "REPLY", "ON"]),
    ];
    if leave {
        cmds.extend([
            resp(&["INCR", &n]),
            resp(&["CLIENT", "REPLY", "ON"]),
            resp(&["MULTI"]),
            resp(&["INCR", &n]),
            resp(&["EXEC"]),
            resp(&["CLIENT", "REPLY", "ON"]),
            resp(&["GET", &n]),
        ]);
    }
    cmds
}

/// Send `cmds` (in one write, or one write per command without waiting)
/// and read one reply per command.
fn run_pipeline(addr: SocketAddr, cmds: &[Vec<u8>], one_write: bool) -> Vec<Vec<u8>> {
    let mut c = RawConn::connect(addr);
    if one_write {
        c.send(&cmds.concat());
    } else {
        for cmd in cmds {
            c.send(cmd);
        }
    }
    cmds.iter()
        .map(|_| c.reply().expect("a reply for every command"))
        .collect()
}

#[test]
fn pipelined_local_and_shared_replies_come_in_order_as_from_redis() {
    let server = RedisServer::start();
    let gw = gateway(&server, "shared_connections: 1");
    for i in 0..60 {
        let (leave, one_write) = (i % 3 == 2, i % 2 == 0);
        let want = run_pipeline(
            server.addr(),
            &mixed_pipeline("direct", i, leave),
            one_write,
        );
        let got = run_pipeline(gw.addr(), &mixed_pipeline("gw", i, leave), one_write);
        assert_eq!(
            got.iter()
                .map(|r| String::from_utf8_lossy(r))
                .collect::<Vec<_>>(),
            want.iter()
                .map(|r| String::from_utf8_lossy(r))
                .collect::<Vec<_>>(),
            "round {i} (leave {leave}, one write {one_write})"
        );
    }
}

#[test]
fn concurrent_pipelining_clients_on_one_shared_connection_get_their_own_replies() {
    let server = RedisServer::start();
    let gateway = gateway(&server, "shared_connections: 1");
    let gw = gateway.addr();
    let workers: Vec<_> = (0..16)
        .map(|c| {
            std::thread::spawn(move || {
                for i in 0..25 {
                    let cmds = mixed_pipeline(&format!("c{c}"), i, i % 5 == 4);
                    let got = run_pipeline(gw, &cmds, i % 2 == 0);
                    let k = format!("c{c}:k{i}");
                    assert_eq!(got[0], b"+OK\r\n", "client {c} round {i}");
                    assert_eq!(got[2], bulk(&format!("v{i}")), "client {c} round {i} {k}");
                    assert_eq!(got[3], b":1\r\n", "client {c} round {i}");
                    assert_eq!(got[6], bulk(&format!("v{i}")), "client {c} round {i}");
                    assert_eq!(got[7], bulk(&format!("e{i}")), "client {c} round {i}");
                    for at in [1, 4, 5, 8] {
                        assert_eq!(got[at], b"+OK\r\n", "client {c} round {i} at {at}");
                    }
                    if i % 5 == 4 {
                        assert_eq!(got[13], b"*1\r\n:3\r\n", "client {c} round {i}");
                        assert_eq!(got[15], bulk("3"), "client {c} round {i}");
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("a client failed");
    }
}
