//! MySQL through the gateway, against real MariaDB servers (private
//! `mariadbd` instances on free ports, each with its own datadir copied from
//! one `mariadb-install-db` template) and real clients: the `mariadb` CLI,
//! PyMySQL and sysbench.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::mariadb::*;
use common::*;

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A gateway config: listener `db` with user `app`/`app-pw` (and whatever
/// `users_extra` adds), one route to `primary` (+ `read_cluster` when a
/// replica is given).
fn config(
    primary: SocketAddr,
    replica: Option<SocketAddr>,
    listener_extra: &str,
    users_extra: &str,
) -> String {
    let (read_cluster, replica_cluster) = match replica {
        Some(r) => (
            "            read_cluster: replicas\n".to_owned(),
            format!(
                "  - name: replicas\n    hosts: [\"{r}\"]\n    mysql: {{ user: {PROXY_USER}, password: {PROXY_PASSWORD} }}\n"
            ),
        ),
        None => (String::new(), String::new()),
    };
    format!(
        r#"
admin: {{ address: "127.0.0.1:{admin}" }}
listeners:
  - name: db
    address: "127.0.0.1:{port}"
    protocol: mysql
    route_table: sql
{listener_extra}    mysql:
      users:
        - {{ username: app, password: app-pw }}
{users_extra}
route_tables:
  - name: sql
    virtual_hosts:
      - name: any
        domains: ["*"]
        routes:
          - cluster: primary
{read_cluster}
clusters:
  - name: primary
    hosts: ["{primary}"]
    mysql: {{ user: {PROXY_USER}, password: {PROXY_PASSWORD}, max_connections: 32 }}
{replica_cluster}"#,
        admin = free_port(),
        port = free_port(),
    )
}

/// Offer caching_sha2_password in the greeting.
fn sha2(yaml: &str) -> String {
    yaml.replace(
        "    mysql:\n",
        "    mysql:\n      auth_plugin: caching_sha2_password\n",
    )
}

fn python(script: &str, args: &[&str]) -> Output {
    Command::new(require("python3"))
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("run python3")
}

#[test]
fn cli_session_through_the_gateway_matches_direct() {
    let db = MariaDb::start();
    db.root("CREATE DATABASE shop; CREATE TABLE shop.items (id INT PRIMARY KEY AUTO_INCREMENT, name VARCHAR(40), price DECIMAL(8,2), added DATETIME, note TEXT) CHARSET utf8mb4;");
    let gw = Gateway::start(&config(db.addr(), None, "", ""));
    let script = "INSERT INTO items (name, price, added, note) VALUES ('tea', 3.50, '2024-01-02 03:04:05', NULL), ('caf\u{e9}', 2.25, NOW(), 'h\u{e9}llo \u{1f600}'); \
                  SELECT LAST_INSERT_ID(); SELECT ROW_COUNT(); \
                  SELECT id, name, price, note FROM items ORDER BY id; \
                  UPDATE items SET price = price * 2 WHERE name = 'tea'; \
                  SELECT COUNT(*), SUM(price) FROM items; SHOW COLUMNS FROM items;";
    let through = mariadb_cli(gw.addr(), "app", "app-pw", Some("shop"), script);
    assert!(through.status.success(), "{}", stderr(&through));
    let text = stdout(&through);
    assert!(text.contains("1\ttea\t3.50\tNULL"), "{text}");
    assert!(
        text.contains("caf\u{e9}\t2.25\th\u{e9}llo \u{1f600}"),
        "{text}"
    );
    assert!(text.contains("2\t9.25"), "{text}");
    // The same reads directly give the same rows.
    let reads = "SELECT id, name, price, note FROM items ORDER BY id; SELECT COUNT(*), SUM(price) FROM items; SHOW COLUMNS FROM items;";
    let direct = mariadb_cli(db.addr(), "root", "", Some("shop"), reads);
    let again = mariadb_cli(gw.addr(), "app", "app-pw", Some("shop"), reads);
    assert_eq!(stdout(&again), stdout(&direct));
    // A SQL error is the server's own ERR, and the session goes on.
    let err = mariadb_cli(
        gw.addr(),
        "app",
        "app-pw",
        Some("shop"),
        "SELECT * FROM missing_table",
    );
    assert!(
        stderr(&err).contains("ERROR 1146 (42S02)"),
        "{}",
        stderr(&err)
    );
}

#[test]
fn login_errors_are_proper_err_packets() {
    let db = MariaDb::start();
    db.root("CREATE DATABASE known;");
    let users = "        - { username: limited, password: lim-pw, schemas: [known] }\n        - { username: legacy, password_hash: \"*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19\" }\n";
    let gw = Gateway::start(&config(db.addr(), None, "", users));
    let wrong = mariadb_cli(gw.addr(), "app", "nope", None, "SELECT 1");
    assert!(
        stderr(&wrong).contains(
            "ERROR 1045 (28000): Access denied for user 'app'@'127.0.0.1' (using password: YES)"
        ),
        "{}",
        stderr(&wrong)
    );
    let unknown_user = mariadb_cli(gw.addr(), "mallory", "x", None, "SELECT 1");
    assert!(
        stderr(&unknown_user).contains("ERROR 1045 (28000)"),
        "{}",
        stderr(&unknown_user)
    );
    let no_db = mariadb_cli(gw.addr(), "app", "app-pw", Some("nosuchdb"), "SELECT 1");
    assert!(
        stderr(&no_db).contains("ERROR 1049 (42000): Unknown database 'nosuchdb'"),
        "{}",
        stderr(&no_db)
    );
    let denied = mariadb_cli(gw.addr(), "limited", "lim-pw", Some("mysql"), "SELECT 1");
    assert!(
        stderr(&denied).contains("ERROR 1044 (42000)"),
        "{}",
        stderr(&denied)
    );
    let ok = mariadb_cli(
        gw.addr(),
        "limited",
        "lim-pw",
        Some("known"),
        "SELECT DATABASE()",
    );
    assert_eq!(stdout(&ok).trim(), "known", "{}", stderr(&ok));
    let use_denied = mariadb_cli(gw.addr(), "limited", "lim-pw", Some("known"), "USE mysql");
    assert!(
        stderr(&use_denied).contains("ERROR 1044"),
        "{}",
        stderr(&use_denied)
    );
    // A user configured by its native hash only (PASSWORD('password')).
    let legacy = mariadb_cli(gw.addr(), "legacy", "password", None, "SELECT 7");
    assert_eq!(stdout(&legacy).trim(), "7", "{}", stderr(&legacy));
    assert!(
        gw.metric(
            "switchyard_mysql_login_failures_total",
            &[("listener", "db")]
        ) >= 4.0
    );
}

#[test]
fn pymysql_with_caching_sha2_fast_path_and_switch_to_native() {
    let db = MariaDb::start();
    db.root("CREATE DATABASE py; CREATE TABLE py.t (id INT PRIMARY KEY, v VARCHAR(10));");
    let users = "        - { username: legacy, password_hash: \"*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19\" }\n";
    let gw = Gateway::start(&sha2(&config(db.addr(), None, "", users)));
    let script = r#"
import sys, pymysql
host, port, user, pw = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
try:
    c = pymysql.connect(host=host, port=port, user=user, password=pw, database="py", autocommit=True)
except pymysql.err.OperationalError as e:
    print("refused", e.args[0]); sys.exit(0)
cur = c.cursor()
cur.execute("INSERT INTO t VALUES (%s, %s)", (len(user), user[:10]))
cur.execute("SELECT v FROM t WHERE id = %s", (len(user),))
print("ok", cur.fetchone()[0], c.get_server_info())
"#;
    let port = gw.addr().port().to_string();
    let run = |user: &str, pw: &str| stdout(&python(script, &["127.0.0.1", &port, user, pw]));
    // PyMySQL answers the caching_sha2 greeting with a SHA-256 scramble: fast path.
    // (The greeting announces the backend's own version.)
    let version = db.root("SELECT VERSION()");
    assert_eq!(
        run("app", "app-pw").trim(),
        format!("ok app 5.5.5-{}", version.trim())
    );
    assert_eq!(run("app", "wrong").trim(), "refused 1045");
    // A native-hash-only user cannot be checked by SHA-256: switched to native.
    assert_eq!(
        run("legacy", "password").trim(),
        format!("ok legacy 5.5.5-{}", version.trim())
    );
    assert_eq!(run("legacy", "passwort").trim(), "refused 1045");
}

#[test]
fn read_write_split_sends_plain_reads_to_the_replica_and_pins_sessions() {
    let primary = MariaDb::start();
    let replica = MariaDb::start();
    for db in [&primary, &replica] {
        db.root(
            "CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY AUTO_INCREMENT, v INT);",
        );
    }
    let gw = Gateway::start(&config(primary.addr(), Some(replica.addr()), "", ""));
    let (p, r) = (primary.port.to_string(), replica.port.to_string());
    let port_of = |sql: &str| -> Vec<String> {
        let out = mariadb_cli(gw.addr(), "app", "app-pw", Some("app"), sql);
        assert!(out.status.success(), "{sql}: {}", stderr(&out));
        stdout(&out).lines().map(str::to_owned).collect()
    };
    // A plain SELECT reads from the replica; a write goes to the primary.
    assert_eq!(port_of("SELECT @@port"), [r.as_str()]);
    assert_eq!(
        port_of("INSERT INTO t (v) VALUES (1); SELECT COUNT(*) FROM t"),
        ["0"],
        "the read went to the (unreplicated) replica"
    );
    assert_eq!(primary.root("SELECT COUNT(*) FROM app.t").trim(), "1");
    // Locking reads and reads of session results go to the primary.
    assert_eq!(port_of("SELECT @@port FROM DUAL FOR UPDATE"), [p.as_str()]);
    assert_eq!(
        port_of("INSERT INTO t (v) VALUES (2); SELECT LAST_INSERT_ID()"),
        ["2"]
    );
    // Inside a transaction everything goes to the primary; after it, reads split again.
    assert_eq!(
        port_of("BEGIN; SELECT @@port; COMMIT; SELECT @@port"),
        [p.clone(), r.clone()]
    );
    assert_eq!(
        port_of("START TRANSACTION; SELECT COUNT(*) FROM t; ROLLBACK"),
        ["2"]
    );
    // User variables, temporary tables, SQL prepared statements pin the session.
    assert_eq!(
        port_of("SET @x = 5; SELECT @@port, @x"),
        [format!("{p}\t5")]
    );
    assert_eq!(
        port_of(
            "CREATE TEMPORARY TABLE tmp (a INT); INSERT INTO tmp VALUES (9); SELECT a, @@port FROM tmp"
        ),
        [format!("9\t{p}")]
    );
    assert_eq!(
        port_of("PREPARE s FROM 'SELECT @@port'; EXECUTE s; SELECT @@port"),
        [p.clone(), p.clone()]
    );
    assert_eq!(
        port_of("LOCK TABLES t READ; SELECT @@port; UNLOCK TABLES"),
        [p.as_str()]
    );
    // The split is counted.
    assert!(
        gw.metric(
            "switchyard_mysql_queries_total",
            &[("listener", "db"), ("target", "replica")]
        ) >= 3.0
    );
    // Each command forwarded is one request of the cluster it went to,
    // counted and timed in the per-cluster series.
    for (cluster, target) in [("primary", "primary"), ("replicas", "replica")] {
        let forwarded = gw.metric(
            "switchyard_mysql_queries_total",
            &[("listener", "db"), ("target", target)],
        );
        let series = [("cluster", cluster)];
        assert_eq!(
            gw.metric("switchyard_upstream_requests_total", &series),
            forwarded,
            "{cluster}"
        );
        assert_eq!(
            gw.metric(
                "switchyard_upstream_request_duration_seconds_count",
                &series
            ),
            forwarded,
            "{cluster}"
        );
    }
}

#[test]
fn query_rules_and_digests() {
    let primary = MariaDb::start();
    let reports = MariaDb::start();
    let listener_extra = "";
    let yaml = config(primary.addr(), None, listener_extra, "")
        .replace(
            "      users:\n",
            "      query_rules:\n        - { pattern: \"(?i)reports_\", cluster: reports }\n      users:\n",
        )
        + &format!(
            "  - name: reports\n    hosts: [\"{}\"]\n    mysql: {{ user: {PROXY_USER}, password: {PROXY_PASSWORD} }}\n",
            reports.addr()
        );
    let gw = Gateway::start(&yaml);
    let out = mariadb_cli(
        gw.addr(),
        "app",
        "app-pw",
        None,
        "SELECT @@port AS reports_port; SELECT @@port; SELECT @@port AS other",
    );
    assert_eq!(
        stdout(&out).lines().collect::<Vec<_>>(),
        [
            reports.port.to_string(),
            primary.port.to_string(),
            primary.port.to_string()
        ],
        "{}",
        stderr(&out)
    );
    // Sessions merge their digest counts into the listener's table when they end.
    let digests = wait_for(
        "the digests of the session",
        Duration::from_secs(10),
        || {
            let (status, body) = gw.admin_get("/mysql/digests");
            (status == 200 && body.contains("SELECT @@? AS other")).then_some(body)
        },
    );
    assert!(
        digests.contains("db\t1\tSELECT @@? AS reports_port\n"),
        "{digests}"
    );
}

#[test]
fn pooled_connections_are_reused_across_sessions_and_reset() {
    let db = MariaDb::start();
    let gw = Gateway::start(&config(db.addr(), None, "", ""));
    // Plain reads borrow a pooled connection: consecutive sessions get the
    // same one. (CONNECTION_ID() says the gateway's id; the backend's own is
    // in its process list, on the row of the statement asking.)
    let backend_id = "(SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE '%PROCESSLIST WHERE INFO LIKE%')";
    let ids: Vec<String> = (0..4)
        .map(|_| {
            stdout(&mariadb_cli(
                gw.addr(),
                "app",
                "app-pw",
                None,
                &format!("SELECT {backend_id}"),
            ))
        })
        .collect();
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
    // A pinned session's connection is reset before the next session gets it:
    // same backend connection, no user variable left over.
    let first = mariadb_cli(
        gw.addr(),
        "app",
        "app-pw",
        None,
        &format!("SET @secret = 42; SELECT {backend_id}, @secret"),
    );
    let second = mariadb_cli(
        gw.addr(),
        "app",
        "app-pw",
        None,
        &format!("SET @other = 1; SELECT {backend_id}, @secret"),
    );
    let (a, b) = (stdout(&first), stdout(&second));
    assert!(a.ends_with("\t42\n"), "{a}");
    assert_eq!(a.split('\t').next(), b.split('\t').next(), "{a} / {b}");
    assert!(b.ends_with("\tNULL\n"), "{b}");
    // The backend saw few connections for all those sessions.
    let count: u32 = db
        .root(&format!(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = '{PROXY_USER}'"
        ))
        .trim()
        .parse()
        .unwrap();
    assert!(count <= 2, "{count} backend connections");
}

#[test]
fn backend_gone_is_a_clear_error_not_a_silent_close() {
    let mut db = MariaDb::start();
    let gw = Gateway::start(&config(db.addr(), None, "", ""));
    let script = r#"
import sys, time, pymysql
c = pymysql.connect(host="127.0.0.1", port=int(sys.argv[1]), user="app", password="app-pw")
cur = c.cursor()
cur.execute("SET @pin = 1")
cur.execute("SELECT 1")
print("ready", flush=True)
sys.stdin.readline()
try:
    cur.execute("SELECT 2")
    print("no error")
except pymysql.err.MySQLError as e:
    print("error", e.args[0], e.args[1])
"#;
    let mut child = Command::new(require("python3"))
        .arg("-c")
        .arg(script)
        .arg(gw.addr().port().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    db.kill();
    use std::io::Write;
    writeln!(child.stdin.as_mut().unwrap()).unwrap();
    line.clear();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    let _ = child.wait();
    assert!(
        line.starts_with("error 2013 Lost connection to MySQL backend 127.0.0.1:"),
        "{line}"
    );
    assert!(line.contains("(cluster primary)"), "{line}");
    // New logins while the backend is down get an ERR naming it.
    let refused = mariadb_cli(gw.addr(), "app", "app-pw", None, "SELECT 1");
    let text = stderr(&refused);
    assert!(
        text.contains("ERROR 1105 (HY000)")
            && text.contains("cannot reach MySQL backend 127.0.0.1:"),
        "{text}"
    );
    // And it comes back.
    db.spawn();
    let ok = mariadb_cli(gw.addr(), "app", "app-pw", None, "SELECT 3");
    assert_eq!(stdout(&ok).trim(), "3", "{}", stderr(&ok));
}

#[test]
fn messages_over_16_mb_pass_both_ways() {
    let db = MariaDb::start();
    let gw = Gateway::start(&config(db.addr(), None, "", ""));
    let script = r#"
import sys, hashlib, pymysql
c = pymysql.connect(host="127.0.0.1", port=int(sys.argv[1]), user="app", password="app-pw", max_allowed_packet=128*1024*1024)
cur = c.cursor()
big = "x" * (17 * 1024 * 1024) + "end"
cur.execute("SELECT LENGTH(%s), MD5(%s)", (big, big))
n, md5 = cur.fetchone()
assert n == len(big), n
assert md5 == hashlib.md5(big.encode()).hexdigest()
cur.execute("SELECT REPEAT('ab', 9 * 1024 * 1024)")
row = cur.fetchone()[0]
assert len(row) == 18 * 1024 * 1024 and row[:4] == "abab", len(row)
cur.execute("SELECT 'after'")
print(cur.fetchone()[0])
"#;
    let out = python(script, &[&gw.addr().port().to_string()]);
    assert_eq!(stdout(&out).trim(), "after", "{}", stderr(&out));
}

#[test]
fn sysbench_oltp_read_write_through_the_gateway_has_no_errors() {
    let db = MariaDb::start();
    db.root("CREATE DATABASE sbtest;");
    let gw = Gateway::start(&config(db.addr(), None, "", ""));
    let sysbench = |cmd: &str, extra: &[&str]| -> Output {
        Command::new(require("sysbench"))
            .arg("oltp_read_write")
            .args([
                "--mysql-host=127.0.0.1",
                &format!("--mysql-port={}", gw.addr().port()),
                "--mysql-user=app",
                "--mysql-password=app-pw",
                "--mysql-db=sbtest",
                "--tables=2",
                "--table-size=500",
                "--mysql-ignore-errors=none",
            ])
            .args(extra)
            .arg(cmd)
            .output()
            .expect("run sysbench")
    };
    let prepare = sysbench("prepare", &[]);
    assert!(
        prepare.status.success(),
        "{}{}",
        stdout(&prepare),
        stderr(&prepare)
    );
    // One thread: with more, InnoDB deadlocks on these small tables are the
    // server's own (and sysbench counts them even directly).
    let run = sysbench("run", &["--threads=1", "--events=300", "--time=0"]);
    let text = stdout(&run);
    assert!(run.status.success(), "{text}{}", stderr(&run));
    assert!(
        text.contains("transactions:                        300"),
        "{text}"
    );
    assert!(
        text.contains("ignored errors:                      0"),
        "{text}"
    );
}

#[test]
fn tls_upgrade_and_caching_sha2_full_auth() {
    let db = MariaDb::start();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(require("openssl"))
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .arg("-keyout")
        .arg(dir.path().join("key.pem"))
        .arg("-out")
        .arg(dir.path().join("cert.pem"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let tls = format!(
        "    tls: {{ cert: \"{}\", key: \"{}\" }}\n",
        dir.path().join("cert.pem").display(),
        dir.path().join("key.pem").display()
    );
    let users = "        - { username: legacy, password_hash: \"*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19\" }\n";
    let yaml = sha2(&config(db.addr(), None, &tls, users));
    let gw = Gateway::start(&yaml);
    let script = r#"
import sys, ssl, pymysql
ctx = ssl.create_default_context(cafile=sys.argv[2])
def go(user, pw):
    try:
        c = pymysql.connect(host="127.0.0.1", port=int(sys.argv[1]), user=user, password=pw, ssl=ctx)
    except pymysql.err.OperationalError as e:
        return "refused %d" % e.args[0]
    cur = c.cursor()
    cur.execute("SELECT 40 + 2")
    return "%s %s" % (cur.fetchone()[0], c._sock.version())
print(go("app", "app-pw"))
print(go("legacy", "password"))
print(go("legacy", "nope"))
"#;
    let out = python(
        script,
        &[
            &gw.addr().port().to_string(),
            &dir.path().join("cert.pem").display().to_string(),
        ],
    );
    let lines: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 3, "{}", stderr(&out));
    assert!(lines[0].starts_with("42 TLSv1."), "{lines:?}");
    // A native-hash user logs in with caching_sha2's full path (clear-text password inside TLS).
    assert!(lines[1].starts_with("42 TLSv1."), "{lines:?}");
    assert_eq!(lines[2], "refused 1045");
    // The mariadb CLI upgrades to TLS too.
    let cli = Command::new(require("mariadb"))
        .args([
            "--no-defaults",
            "-N",
            "-B",
            "-h127.0.0.1",
            "-uapp",
            "-papp-pw",
            "--ssl",
        ])
        .arg(format!(
            "--ssl-ca={}",
            dir.path().join("cert.pem").display()
        ))
        .arg(format!("-P{}", gw.addr().port()))
        .args(["-e", "SELECT 1"])
        .output()
        .unwrap();
    assert_eq!(stdout(&cli).trim(), "1", "{}", stderr(&cli));
}

#[test]
fn load_data_local_infile_is_relayed() {
    let db = MariaDb::start();
    db.root("CREATE DATABASE li; CREATE TABLE li.t (a INT, b VARCHAR(10));");
    let gw = Gateway::start(&config(db.addr(), None, "", ""));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rows.csv");
    let rows: String = (1..=1000).map(|i| format!("{i},row{i}\n")).collect();
    std::fs::write(&file, rows).unwrap();
    let out = Command::new(require("mariadb"))
        .args(["--no-defaults", "-N", "-B", "--skip-ssl", "--local-infile=1", "-h127.0.0.1", "-uapp", "-papp-pw", "li"])
        .arg(format!("-P{}", gw.addr().port()))
        .arg("-e")
        .arg(format!(
            "LOAD DATA LOCAL INFILE '{}' INTO TABLE t FIELDS TERMINATED BY ','; SELECT COUNT(*), SUM(a), MAX(b) FROM t",
            file.display()
        ))
        .output()
        .unwrap();
    assert_eq!(
        stdout(&out).trim(),
        "1000\t500500\trow999",
        "{}",
        stderr(&out)
    );
}

/// A raw protocol client (no library implements COM_CHANGE_USER for us):
/// log in as `app`, set a user variable (pinning the session), change user
/// to `other`, and read the variable back.
const CHANGE_USER_CLIENT: &str = r#"
import hashlib, socket, struct, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
def recvn(n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c: raise SystemExit("closed")
        b += c
    return b
def rd():
    h = recvn(4); return h[3], recvn(h[0] | h[1] << 8 | h[2] << 16)
def wr(seq, p): s.sendall(struct.pack("<I", len(p))[:3] + bytes([seq]) + p)
def sha1(b): return hashlib.sha1(b).digest()
def scramble(pw, nonce):
    s1 = sha1(pw); return bytes(a ^ b for a, b in zip(s1, sha1(nonce + sha1(s1))))
seq, g = rd()
v_end = g.index(b"\0", 1)
nonce = g[v_end + 5:v_end + 13] + g[v_end + 32:v_end + 44]
caps = 0x1 | 0x200 | 0x2000 | 0x8000 | 0x80000
wr(1, struct.pack("<IIB", caps, 1 << 24, 45) + b"\0" * 23 + b"app\0" + bytes([20]) + scramble(b"app-pw", nonce) + b"mysql_native_password\0")
print("login", rd()[1][0])
wr(0, b"\x03SET @v = 7"); print("set", rd()[1][0])
wr(0, b"\x11other\0" + bytes([20]) + scramble(b"other-pw", nonce) + b"\0" + struct.pack("<H", 45) + b"mysql_native_password\0")
seq, p = rd()
if p[0] == 0xFE:
    fresh = p[23:43]
    wr(seq + 1, scramble(b"other-pw", fresh)); seq, p = rd()
print("change_user", p[0], p[3:].decode(errors="replace") if p[0] == 0xFF else "")
wr(0, b"\x03SELECT @v")
packets = []
while True:
    seq, p = rd(); packets.append(p)
    if p[0] in (0xFE, 0xFF) and len(p) < 9 and len(packets) > 3: break
print("value", packets[3].hex())
"#;

#[test]
fn change_user_rechecks_and_resets_the_session() {
    let db = MariaDb::start();
    let users = "        - { username: other, password: other-pw }\n";
    let gw = Gateway::start(&config(db.addr(), None, "", users));
    let out = python(CHANGE_USER_CLIENT, &[&gw.addr().port().to_string()]);
    let text = stdout(&out);
    // OK to login, SET and COM_CHANGE_USER; then @v is NULL (0xFB): the
    // pinned connection was reset, not handed over with the old user's state.
    assert_eq!(
        text,
        "login 0\nset 0\nchange_user 0 \nvalue fb\n",
        "{}",
        stderr(&out)
    );
}

#[test]
fn max_connections_per_backend_is_enforced_with_err_1040() {
    let db = MariaDb::start();
    let yaml = config(db.addr(), None, "", "").replace(
        "max_connections: 32 }",
        "max_connections: 1 }\n    connect_timeout: 500ms",
    );
    let gw = Gateway::start(&yaml);
    let script = r#"
import sys, pymysql
port = int(sys.argv[1])
def connect():
    return pymysql.connect(host="127.0.0.1", port=port, user="app", password="app-pw")
a = connect()
a.cursor().execute("SET @hold = 1")  # pins the only backend connection
try:
    connect().cursor().execute("SELECT 1")
    print("second: ok")
except pymysql.err.OperationalError as e:
    print("second:", e.args[0], "busy" if "max_connections" in e.args[1] else e.args[1])
a.close()
import time; time.sleep(0.3)
c = connect(); cur = c.cursor(); cur.execute("SELECT 5"); print("after:", cur.fetchone()[0])
"#;
    let out = python(script, &[&gw.addr().port().to_string()]);
    assert_eq!(
        stdout(&out),
        "second: 1040 busy\nafter: 5\n",
        "{}",
        stderr(&out)
    );
}

#[test]
fn shipped_mysql_example_config_checks_clean() {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("check")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/config/mysql.yaml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    // And the mistakes a newcomer makes are named with file:line:column.
    let dir = tempfile::tempdir().unwrap();
    let bad = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/mysql.yaml"))
        .unwrap()
        .replace("read_cluster: replicas", "read_cluster: replica");
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, bad).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("check")
        .arg(&path)
        .output()
        .unwrap();
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(!out.status.success());
    assert!(text.contains("bad.yaml:30:27: route_tables[sql].virtual_hosts[any].routes[0].read_cluster: no cluster is named `replica`"), "{text}");
}

/// mysql_async (a Rust client, binary protocol) through the gateway: reads
/// on the replica, a transaction and prepared statements on the primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_async_prepared_statements_and_transactions() {
    use mysql_async::prelude::*;
    let primary = MariaDb::start();
    let replica = MariaDb::start();
    for db in [&primary, &replica] {
        db.root(
            "CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY AUTO_INCREMENT, v INT);",
        );
    }
    let gw = Gateway::start(&config(primary.addr(), Some(replica.addr()), "", ""));
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(gw.addr().port())
        .user(Some("app"))
        .pass(Some("app-pw"))
        .db_name(Some("app"));
    let mut conn = mysql_async::Conn::new(opts)
        .await
        .expect("connect through the gateway");
    let port: Option<u16> = conn.query_first("SELECT @@port").await.unwrap();
    assert_eq!(port, Some(replica.port), "a plain read goes to the replica");

    let mut tx = conn
        .start_transaction(mysql_async::TxOpts::default())
        .await
        .unwrap();
    tx.exec_drop("INSERT INTO t (v) VALUES (?)", (41,))
        .await
        .unwrap();
    let port: Option<u16> = tx.query_first("SELECT @@port").await.unwrap();
    assert_eq!(
        port,
        Some(primary.port),
        "inside a transaction everything goes to the primary"
    );
    let id: Option<u64> = tx.query_first("SELECT LAST_INSERT_ID()").await.unwrap();
    assert_eq!(id, Some(1));
    tx.commit().await.unwrap();

    // Prepared statements pinned the session to the primary, where the row is.
    let rows: Vec<(i64, String)> = conn
        .exec("SELECT id, CONCAT('v', v) FROM t WHERE v > ?", (0,))
        .await
        .unwrap();
    assert_eq!(rows, [(1, "v41".to_owned())]);
    let stmt = conn.prep("SELECT @@port, ? + 1").await.unwrap();
    for i in 0..3i64 {
        let row: Option<(u16, i64)> = conn.exec_first(&stmt, (i,)).await.unwrap();
        assert_eq!(row, Some((primary.port, i + 1)));
    }
    conn.close(stmt).await.unwrap();
    conn.ping().await.unwrap();
    conn.reset().await.unwrap();
    // After COM_RESET_CONNECTION the session is unpinned: reads split again.
    let port: Option<u16> = conn.query_first("SELECT @@port").await.unwrap();
    assert_eq!(port, Some(replica.port));
    conn.disconnect().await.unwrap();
    assert_eq!(primary.root("SELECT v FROM app.t").trim(), "41");
}

/// PyMySQL decides from the status flags of the last OK it got whether
/// `autocommit(True)` has anything to do: an OK the gateway writes itself
/// (COM_PING here) must carry the session's real autocommit state, and the
/// login OK the server's own.
#[test]
fn gateway_made_oks_carry_the_sessions_autocommit_state() {
    let db = MariaDb::start();
    db.root("CREATE DATABASE ac; CREATE TABLE ac.t (id INT PRIMARY KEY) ENGINE=InnoDB;");
    let script = r#"
import sys, pymysql
port, direct = int(sys.argv[1]), int(sys.argv[2])
c = pymysql.connect(host="127.0.0.1", port=port, user=sys.argv[3], password=sys.argv[4], database="ac", autocommit=False)
c.ping(reconnect=False)
print("after ping autocommit", c.get_autocommit())
c.autocommit(True)
c.cursor().execute("INSERT INTO t VALUES (%s)", (port,))
w = pymysql.connect(host="127.0.0.1", port=direct, user="root", database="ac")
cur = w.cursor(); cur.execute("SELECT COUNT(*) FROM t WHERE id = %s", (port,))
print("committed", cur.fetchone()[0])
"#;
    let direct_port = db.port.to_string();
    let direct = python(script, &[&direct_port, &direct_port, "root", ""]);
    assert_eq!(
        stdout(&direct),
        "after ping autocommit False\ncommitted 1\n",
        "{}",
        stderr(&direct)
    );
    let gw = Gateway::start(&config(db.addr(), None, "", ""));
    let through = python(
        script,
        &[&gw.addr().port().to_string(), &direct_port, "app", "app-pw"],
    );
    assert_eq!(stdout(&through), stdout(&direct), "{}", stderr(&through));

    // A server whose sessions start with autocommit off says so at login.
    db.root("SET GLOBAL autocommit = 0;");
    let login = r#"
import sys, pymysql
c = pymysql.connect(host="127.0.0.1", port=int(sys.argv[1]), user=sys.argv[2], password=sys.argv[3], autocommit=None)
print("login autocommit", c.get_autocommit())
"#;
    let direct = python(login, &[&direct_port, "root", ""]);
    assert_eq!(
        stdout(&direct),
        "login autocommit False\n",
        "{}",
        stderr(&direct)
    );
    let gw = Gateway::start(&config(db.addr(), None, "", ""));
    let through = python(login, &[&gw.addr().port().to_string(), "app", "app-pw"]);
    assert_eq!(stdout(&through), stdout(&direct), "{}", stderr(&through));
}

/// A backend refusing the gateway's own login: the client gets the
/// backend's code and SQLSTATE, not 1105, and never the backend account.
#[test]
fn backend_login_errors_keep_code_and_sqlstate_and_hide_the_backend_account() {
    let db = MariaDb::start();
    let yaml = config(db.addr(), None, "", "").replace(
        &format!("password: {PROXY_PASSWORD}, max_connections"),
        "password: not-the-password, max_connections",
    );
    let gw = Gateway::start(&yaml);
    let out = mariadb_cli(gw.addr(), "app", "app-pw", None, "SELECT 1");
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(err.contains("ERROR 1045 (28000)"), "{err}");
    assert!(!err.contains(PROXY_USER), "{err}");
}

/// `SET NAMES` / `SET character_set_*` / `SET autocommit` are session state
/// the gateway replays, not a reason to pin: PyMySQL (which always sends
/// `SET NAMES`) still gets its reads on the replica, with its charset there.
#[test]
fn charset_and_autocommit_are_replayed_not_pinned() {
    let primary = MariaDb::start();
    let replica = MariaDb::start();
    for db in [&primary, &replica] {
        db.root("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY) ENGINE=InnoDB;");
    }
    let gw = Gateway::start(&config(primary.addr(), Some(replica.addr()), "", ""));
    let script = r#"
import sys, pymysql
c = pymysql.connect(host="127.0.0.1", port=int(sys.argv[1]), user="app", password="app-pw", database="app", charset="utf8mb4", autocommit=True)
cur = c.cursor()
def q(sql):
    cur.execute(sql); return "\t".join(str(v) for v in cur.fetchone())
print("first read", q("SELECT @@port"))
cur.execute("SET NAMES latin1")
print("latin1 read", q("SELECT @@port, @@character_set_client, @@character_set_results"))
cur.execute("SET character_set_results = utf8mb4, collation_connection = latin1_bin")
print("mixed read", q("SELECT @@port, @@character_set_client, @@character_set_results, @@collation_connection"))
try:
    cur.execute("SET character_set_client = ucs2")
except pymysql.err.MySQLError as e:
    print("refused", e.args[0])
c.autocommit(False)
print("autocommit off", q("SELECT @@port, @@autocommit"))
cur.execute("INSERT INTO t VALUES (1)")
c.rollback()
c.autocommit(True)
print("autocommit on", q("SELECT @@port, @@autocommit, @@character_set_client"))
c.close()
"#;
    let out = python(script, &[&gw.addr().port().to_string()]);
    let (p, r) = (primary.port, replica.port);
    assert_eq!(
        stdout(&out),
        format!(
            "first read {r}\nlatin1 read {r}\tlatin1\tlatin1\nmixed read {r}\tlatin1\tutf8mb4\tlatin1_bin\nrefused 1231\nautocommit off {p}\t0\nautocommit on {r}\t1\tlatin1\n"
        ),
        "{}",
        stderr(&out)
    );
    assert_eq!(primary.root("SELECT COUNT(*) FROM app.t").trim(), "0");
    // Another session never inherits that state from a pooled connection.
    let fresh = mariadb_cli(
        gw.addr(),
        "app",
        "app-pw",
        Some("app"),
        "SELECT @@port, @@character_set_client, @@autocommit",
    );
    assert_eq!(
        stdout(&fresh),
        format!("{r}\tutf8mb4\t1\n"),
        "{}",
        stderr(&fresh)
    );
}

/// With no `server_version` configured the greeting carries the backends'
/// own version, so clients pick SQL and collations the server has
/// (mysql-connector-python would otherwise use MySQL 8's utf8mb4_0900_ai_ci).
#[test]
fn greeting_announces_the_backends_version() {
    let db = MariaDb::start();
    db.root("CREATE DATABASE v;");
    let gw = Gateway::start(&config(db.addr(), None, "", ""));
    let script = r#"
import sys, pymysql, mysql.connector
port, user, pw = int(sys.argv[1]), sys.argv[2], sys.argv[3]
c = pymysql.connect(host="127.0.0.1", port=port, user=user, password=pw)
print("pymysql", c.get_server_info())
m = mysql.connector.connect(host="127.0.0.1", port=port, user=user, password=pw, database="v", use_pure=True)
cur = m.cursor()
cur.execute("SELECT @@collation_connection")
print("connector", cur.fetchone()[0])
"#;
    let direct = python(script, &[&db.port.to_string(), "root", ""]);
    assert!(direct.status.success(), "{}", stderr(&direct));
    assert!(stdout(&direct).contains("MariaDB"), "{}", stdout(&direct));
    let through = python(script, &[&gw.addr().port().to_string(), "app", "app-pw"]);
    assert_eq!(stdout(&through), stdout(&direct), "{}", stderr(&through));
}

/// MariaDB Connector/Python (on Connector/C) sends `executemany` as one
/// COM_STMT_BULK_EXECUTE when the greeting offers
/// MARIADB_CLIENT_STMT_BULK_OPERATIONS; a bulk INSERT ... RETURNING needs it.
#[test]
fn mariadb_connector_bulk_insert_returning() {
    let db = MariaDb::start();
    db.root("CREATE DATABASE bulk; CREATE TABLE bulk.t (id INT PRIMARY KEY, v VARCHAR(10));");
    let gw = Gateway::start(&config(db.addr(), None, "", ""));
    let script = r#"
import sys, mariadb
port, user, pw, base = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
c = mariadb.connect(host="127.0.0.1", port=port, user=user, password=pw, database="bulk", autocommit=True)
cur = c.cursor()
try:
    cur.executemany("INSERT INTO t VALUES (?, ?) RETURNING id, v", [(base + i, "v%d" % i) for i in range(3)])
    print("returned", [tuple(r) for r in cur.fetchall()])
except mariadb.Error as e:
    print("error", e)
cur.executemany("UPDATE t SET v = ? WHERE id = ?", [("u%d" % i, base + i) for i in range(3)])
cur.execute("SELECT id, v FROM t WHERE id >= ? ORDER BY id", (base,))
print("rows", [tuple(r) for r in cur.fetchall()])
"#;
    let direct = python(script, &[&db.port.to_string(), "root", "", "10"]);
    assert_eq!(
        stdout(&direct),
        "returned [(10, 'v0'), (11, 'v1'), (12, 'v2')]\nrows [(10, 'u0'), (11, 'u1'), (12, 'u2')]\n",
        "{}",
        stderr(&direct)
    );
    let through = python(
        script,
        &[&gw.addr().port().to_string(), "app", "app-pw", "20"],
    );
    assert_eq!(
        stdout(&through),
        stdout(&direct).replace("(1", "(2"),
        "{}",
        stderr(&through)
    );
}

/// `KILL QUERY <id>` / COM_PROCESS_KILL with the id the gateway announced act
/// on that client's backend connection; `CONNECTION_ID()` agrees with the
/// greeting; another user's session is refused (1095), an unknown id is 1094.
#[test]
fn kill_and_connection_id_use_the_ids_the_gateway_announced() {
    let db = MariaDb::start();
    let users = "        - { username: other, password: other-pw }\n";
    let gw = Gateway::start(&config(db.addr(), None, "", users));
    let script = r#"
import sys, threading, time, pymysql
port, direct = int(sys.argv[1]), int(sys.argv[2])
def connect(user="app", pw="app-pw"):
    return pymysql.connect(host="127.0.0.1", port=port, user=user, password=pw, autocommit=True)
a, b = connect(), connect()
cur = a.cursor(); cur.execute("SELECT CONNECTION_ID()")
print("connection_id matches", cur.fetchone()[0] == a.thread_id())
result = {}
def sleep():
    c = a.cursor()
    try:
        c.execute("SELECT SLEEP(60)"); result["sleep"] = c.fetchone()[0]
    except pymysql.err.MySQLError as e:
        result["sleep"] = e.args[0]
t = threading.Thread(target=sleep, daemon=True); t.start()
root = pymysql.connect(host="127.0.0.1", port=direct, user="root")
rc = root.cursor()
for _ in range(600):
    rc.execute("SELECT COUNT(*) FROM information_schema.processlist WHERE info LIKE 'SELECT SLEEP(60)%'")
    if rc.fetchone()[0]: break
    time.sleep(0.05)
o = connect("other", "other-pw")
try:
    o.cursor().execute("KILL QUERY %d" % a.thread_id()); print("other: allowed")
except pymysql.err.MySQLError as e:
    print("other:", e.args[0])
b.cursor().execute("KILL QUERY %d" % a.thread_id())
t.join(30)
print("sleep interrupted", result.get("sleep") in (1, 1317))
try:
    b.cursor().execute("KILL QUERY 999999"); print("unknown: ok")
except pymysql.err.MySQLError as e:
    print("unknown:", e.args[0])
try:
    b.cursor().execute("KILL USER sy_proxy"); print("kill user: ok")
except pymysql.err.MySQLError as e:
    print("kill user:", e.args[0])
b.kill(a.thread_id())
try:
    a.cursor().execute("SELECT 1"); print("killed session: alive")
except pymysql.err.MySQLError as e:
    print("killed session: error")
"#;
    let out = python(
        script,
        &[&gw.addr().port().to_string(), &db.port.to_string()],
    );
    assert_eq!(
        stdout(&out),
        "connection_id matches True\nother: 1095\nsleep interrupted True\nunknown: 1094\nkill user: 1227\nkilled session: error\n",
        "{}",
        stderr(&out)
    );
}

/// `health_check: {kind: mysql}` logs in with the cluster's credentials and
/// sends COM_PING: a dead backend leaves the cluster (with `failover: false`
/// every session then lands on the live one) and comes back once it answers.
/// Which backend a session reached is its `@@port` (`lb: random`: a MySQL
/// session picks more than once, so round robin over two hosts may always
/// land on the same one).
#[test]
fn mysql_health_checks_take_a_dead_backend_out_and_bring_it_back() {
    let mut a = MariaDb::start();
    let b = MariaDb::start();
    let yaml = config(a.addr(), None, "", "").replace(
        &format!("    hosts: [\"{}\"]\n", a.addr()),
        &format!(
            "    hosts: [\"{}\", \"{}\"]\n    failover: false\n    lb: random\n    health_check: {{ interval: 200ms, timeout: 2s, unhealthy_threshold: 2, healthy_threshold: 2 }}\n",
            a.addr(),
            b.addr()
        ),
    );
    assert!(yaml.contains("health_check"), "{yaml}");
    let gw = Gateway::start(&yaml);
    let port_of_session = || {
        let o = mariadb_cli(gw.addr(), "app", "app-pw", None, "SELECT @@port");
        o.status.success().then(|| stdout(&o).trim().to_owned())
    };
    let ports = |n: usize| -> Option<Vec<String>> { (0..n).map(|_| port_of_session()).collect() };
    let (pa, pb) = (a.port.to_string(), b.port.to_string());
    wait_for("sessions on both backends", Duration::from_secs(30), || {
        ports(6).filter(|p| p.contains(&pa) && p.contains(&pb))
    });

    a.kill();
    wait_for(
        "the dead backend to leave the cluster",
        Duration::from_secs(30),
        || ports(10).filter(|p| p.iter().all(|x| *x == pb)),
    );
    let more = ports(20).expect("every session logs in");
    assert!(more.iter().all(|x| *x == pb), "{more:?}");

    a.spawn();
    wait_for("the backend to come back", Duration::from_secs(30), || {
        ports(6).filter(|p| p.contains(&pa))
    });
    assert!(
        gw.log().contains("upstream host is unhealthy"),
        "{}",
        gw.log()
    );
}

/// The shared filters speak MariaDB's errors: a refused client cannot log
/// in (1130), a user over its rate gets 1226 for the statement that went
/// over, with the statements before it served.
#[test]
fn filters_refuse_logins_and_statements_with_mariadb_errors() {
    let db = MariaDb::start();
    let denied = config(
        db.addr(),
        None,
        "    filters: [{ip_access: {deny: [127.0.0.0/8]}}]\n",
        "",
    );
    let gw = Gateway::start(&denied);
    let out = mariadb_cli(gw.addr(), "app", "app-pw", None, "SELECT 1");
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(err.contains("ERROR 1130 (HY000)"), "{err}");
    assert!(err.contains("access denied"), "{err}");
    drop(gw);

    // One token per 1000 s per user: the login and three statements.
    let limited = config(db.addr(), None, "", "").replace(
        "          - cluster: primary\n",
        "          - cluster: primary\n            filters: [{rate_limit: {rate: 0.001, burst: 4, key: user}}]\n",
    );
    assert!(limited.contains("rate_limit"));
    let gw = Gateway::start(&limited);
    let out = mariadb_cli(
        gw.addr(),
        "app",
        "app-pw",
        None,
        "SELECT 1; SELECT 2; SELECT 3; SELECT 4; SELECT 5",
    );
    assert_eq!(stdout(&out), "1\n2\n3\n");
    let err = stderr(&out);
    assert!(err.contains("ERROR 1226 (42000)"), "{err}");
    assert!(err.contains("rate limited"), "{err}");
}
