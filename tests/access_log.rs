//! Access logs (`listeners[].access_log`): real clients (curl over HTTP/1
//! and HTTP/2, redis-cli, redis-benchmark, mosquitto_pub, the mariadb CLI,
//! ffprobe over RTSP) through the gateway to real servers, and the lines
//! the gateway writes for them.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::mariadb::{MariaDb, PROXY_PASSWORD, PROXY_USER, mariadb_cli};
use common::rtsp_server::RtspServer;
use common::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

/// One listener `edge` (HTTP/1, HTTP/2, Redis, MQTT) writing its access log
/// to `log`: `/app/...` goes to `web`, `/h2up/...` to `web2` (h2c), Redis to `redis`, MQTT to `mqtt`;
/// `/denied/...` is refused to loopback clients (`ip_access`, 403); other
/// HTTP paths have no route (404).
fn gateway(log: &Path, access: &str, p: &Peers) -> Gateway {
    let (web, redis, mqtt) = (p.web.addr(), p.redis.addr(), p.mqtt.addr());
    let web2 = p.web2.addr();
    let ports = Ports::new();
    let y = format!(
        "admin:
  address: 127.0.0.1:{admin}
listeners:
  - name: edge
    address: 127.0.0.1:{listen}
    protocols: [http1, http2, redis, mqtt]
    route_table: main
    access_log: {{path: \"{log}\", {access}}}
route_tables:
  - name: main
    virtual_hosts:
      - name: any
        domains: [\"*\"]
        routes:
          - {{match: {{protocol: redis}}, cluster: redis}}
          - {{match: {{protocol: mqtt}}, cluster: mqtt}}
          - {{match: {{path_prefix: /app/}}, cluster: web}}
          - {{match: {{path_prefix: /h2up/}}, cluster: web2}}
          - {{match: {{path_prefix: /denied/}}, direct_response: {{status: 200, body: no}}, filters: [{{ip_access: {{deny: [127.0.0.0/8]}}}}]}}
clusters:
  - {{name: web, hosts: [\"{web}\"], protocol: http1}}
  - {{name: web2, hosts: [\"{web2}\"], protocol: http2}}
  - {{name: redis, hosts: [\"{redis}\"]}}
  - {{name: mqtt, hosts: [\"{mqtt}\"]}}
",
        admin = ports.admin,
        listen = ports.listen,
        log = log.display(),
    );
    Gateway::start(&y)
}

/// The JSON records in the file at `path` (none if it does not exist yet).
fn records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Wait for a record in `path` that `pred` accepts.
fn record(path: &Path, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    wait_for(what, WAIT, || records(path).into_iter().find(|r| pred(r))).clone()
}

fn curl(args: &[&str]) -> String {
    let out = Command::new(require("curl"))
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}"])
        .args(args)
        .output()
        .expect("run curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn run(bin: &str, args: &[&str]) -> String {
    let out = Command::new(require(bin))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {bin}: {e}"));
    assert!(
        out.status.success(),
        "{bin} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct Peers {
    web: Nginx,
    /// nginx over h2c.
    web2: Nginx,
    redis: RedisServer,
    mqtt: Mosquitto,
}

fn peers() -> Peers {
    Peers {
        web: Nginx::start(&[("app/hello.txt", b"hello access log\n")]),
        web2: Nginx::start_h2c(&[("h2up/hello.txt", b"hello over h2c\n")], 1000),
        redis: RedisServer::start(),
        mqtt: Mosquitto::start(),
    }
}

fn log_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("access.log")
}

#[test]
fn json_records_per_protocol() {
    let p = peers();
    let dir = tempfile::tempdir().unwrap();
    let log = log_path(&dir);
    let gw = gateway(&log, "format: json", &p);
    let port = gw.addr().port().to_string();

    // HTTP/1: proxied, then no route.
    assert_eq!(curl(&[&gw.url("/app/hello.txt")]), "200");
    assert_eq!(curl(&[&gw.url("/nowhere")]), "404");
    let ok = record(&log, "the HTTP/1 200 record", |r| {
        r["protocol"] == "http1" && r["path"] == "/app/hello.txt"
    });
    assert_eq!(ok["method"], "GET", "{ok}");
    assert_eq!(ok["status"], 200, "{ok}");
    assert_eq!(ok["result"], "ok", "{ok}");
    assert_eq!(ok["listener"], "edge", "{ok}");
    assert_eq!(ok["client"], "127.0.0.1", "{ok}");
    assert_eq!(ok["upstream"], p.web.addr().to_string(), "{ok}");
    assert!(ok["bytes_out"].as_u64().unwrap() > 17, "{ok}");
    assert!(ok["duration_ms"].as_f64().is_some(), "{ok}");
    assert!(ok["time"].as_str().unwrap().ends_with('Z'), "{ok}");
    let missing = record(&log, "the HTTP/1 404 record", |r| r["path"] == "/nowhere");
    assert_eq!(missing["status"], 404, "{missing}");
    assert_eq!(missing["result"], "refused", "{missing}");
    assert!(missing.get("upstream").is_none(), "{missing}");
    // HTTP/1 to an HTTP/2 upstream.
    assert_eq!(curl(&[&gw.url("/h2up/hello.txt")]), "200");
    let up2 = record(&log, "the HTTP/1-to-h2 record", |r| {
        r["path"] == "/h2up/hello.txt"
    });
    assert_eq!(up2["status"], 200, "{up2}");
    assert_eq!(up2["upstream"], p.web2.addr().to_string(), "{up2}");
    assert!(up2["bytes_out"].as_u64().unwrap() > 15, "{up2}");
    assert_eq!(curl(&[&gw.url("/denied/x")]), "403");
    let denied = record(&log, "the ip_access refusal", |r| r["path"] == "/denied/x");
    assert_eq!(denied["status"], 403, "{denied}");
    assert_eq!(denied["result"], "refused", "{denied}");

    // HTTP/2 with prior knowledge.
    assert_eq!(
        curl(&["--http2-prior-knowledge", &gw.url("/app/hello.txt?x=1")]),
        "200"
    );
    let h2 = record(&log, "the HTTP/2 record", |r| r["protocol"] == "http2");
    assert_eq!(h2["method"], "GET", "{h2}");
    assert_eq!(h2["path"], "/app/hello.txt", "{h2}");
    assert_eq!(h2["status"], 200, "{h2}");
    assert_eq!(h2["upstream"], p.web.addr().to_string(), "{h2}");

    // Redis: the command and its first key, never the value.
    let reply = run(
        "redis-cli",
        &["-p", &port, "set", "user:42", "secret-value-xyz"],
    );
    assert_eq!(reply.trim(), "OK");
    let set = record(&log, "the Redis SET record", |r| r["protocol"] == "redis");
    assert_eq!(
        set["command"]
            .as_str()
            .map(str::to_ascii_uppercase)
            .as_deref(),
        Some("SET"),
        "{set}"
    );
    assert_eq!(set["key"], "user:42", "{set}");
    assert_eq!(set["result"], "ok", "{set}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains("secret-value-xyz"),
        "a Redis value was logged:\n{text}"
    );

    // MQTT: CONNECT with its client id, PUBLISH with its topic.
    run(
        "mosquitto_pub",
        &[
            "-p",
            &port,
            "-i",
            "dev-7",
            "-t",
            "plant/line1/temp",
            "-m",
            "21.5",
            "-q",
            "1",
        ],
    );
    let connect = record(&log, "the MQTT CONNECT record", |r| {
        r["protocol"] == "mqtt" && r["packet"] == "CONNECT"
    });
    assert_eq!(connect["client_id"], "dev-7", "{connect}");
    let publish = record(&log, "the MQTT PUBLISH record", |r| {
        r["protocol"] == "mqtt" && r["packet"] == "PUBLISH"
    });
    assert_eq!(publish["topic"], "plant/line1/temp", "{publish}");
}

#[test]
fn text_format_is_readable_and_sigusr1_reopens() {
    let p = peers();
    let dir = tempfile::tempdir().unwrap();
    let log = log_path(&dir);
    let gw = gateway(&log, "format: text", &p);
    assert_eq!(curl(&[&gw.url("/app/hello.txt")]), "200");
    let line = wait_for("a text line", WAIT, || {
        let text = std::fs::read_to_string(&log).ok()?;
        text.lines()
            .find(|l| l.contains("/app/hello.txt"))
            .map(str::to_owned)
    });
    for want in [
        "listener=edge",
        "protocol=http1",
        "method=GET",
        "path=/app/hello.txt",
        "status=200",
        "result=ok",
        &format!("upstream={}", p.web.addr()),
    ] {
        assert!(line.contains(want), "`{want}` missing from: {line}");
    }
    assert!(
        line.starts_with("20"),
        "the line starts with the time: {line}"
    );

    // logrotate: rename, then SIGUSR1; new records go to a new file at the path.
    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    gw.signal("USR1");
    wait_for("the access log reopened at its path", WAIT, || {
        log.exists().then_some(())
    });
    assert_eq!(curl(&[&gw.url("/app/hello.txt?after")]), "200");
    wait_for("the new request in the new file", WAIT, || {
        let text = std::fs::read_to_string(&log).ok()?;
        text.contains("status=200").then_some(())
    });
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert_eq!(
        old.lines().count(),
        1,
        "the rotated file got new lines:\n{old}"
    );
}

#[test]
fn full_queue_drops_records_and_never_blocks() {
    let p = peers();
    let dir = tempfile::tempdir().unwrap();
    let log = log_path(&dir);
    let gw = gateway(&log, "format: json, queue: 1", &p);
    // 20 000 pipelined commands (16 in flight per client): far more records
    // at once than a queue of one holds.
    let port = gw.addr().port().to_string();
    let out = run(
        "redis-benchmark",
        &[
            "-p", &port, "-t", "set", "-n", "20000", "-P", "16", "-c", "4", "-q", "--csv",
        ],
    );
    let rps: f64 = out
        .lines()
        .find(|l| l.contains("SET"))
        .and_then(|l| l.split(',').nth(1))
        .and_then(|v| v.trim_matches('"').parse().ok())
        .unwrap_or_else(|| panic!("no SET result from redis-benchmark: {out}"));
    assert!(rps > 0.0);
    // Every request was answered: the server holds the benchmark's key and
    // counted every SET.
    let stats = run(
        "redis-cli",
        &[
            "-p",
            &p.redis.addr().port().to_string(),
            "info",
            "commandstats",
        ],
    );
    let sets: u64 = stats
        .lines()
        .find(|l| l.starts_with("cmdstat_set:"))
        .and_then(|l| l.split("calls=").nth(1))
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no SET stats: {stats}"));
    assert_eq!(sets, 20000, "every SET reached the server");
    let dropped = gw.metric(
        "switchyard_access_log_dropped_total",
        &[("listener", "edge")],
    );
    assert!(dropped > 0.0, "a queue of 1 dropped nothing");
    let written = wait_for("the writer to catch up", WAIT, || {
        let n = records(&log).len();
        (n as f64 + dropped >= 20000.0).then_some(n)
    });
    assert!((1..20000).contains(&written), "{written} records written");
}

#[test]
fn a_queue_of_zero_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("access.log");
    let yaml = format!(
        "listeners:\n  - name: edge\n    address: 127.0.0.1:1\n    protocols: [http1]\n    route_table: main\n    access_log: {{path: \"{}\", queue: 0}}\nroute_tables:\n  - name: main\n    virtual_hosts: []\n",
        bad.display()
    );
    let file = dir.path().join("bad.yaml");
    std::fs::write(&file, yaml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("check")
        .arg(&file)
        .output()
        .unwrap();
    let err =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("listeners[edge].access_log.queue"), "{err}");
}

#[test]
fn mysql_statements_carry_their_digest() {
    let db = MariaDb::start();
    db.root(
        "CREATE DATABASE shop; CREATE TABLE shop.items (id INT PRIMARY KEY, name VARCHAR(40));",
    );
    let dir = tempfile::tempdir().unwrap();
    let log = log_path(&dir);
    let ports = Ports::new();
    let yaml = format!(
        r#"
admin: {{ address: "127.0.0.1:{admin}" }}
listeners:
  - name: db
    address: "127.0.0.1:{listen}"
    protocol: mysql
    route_table: sql
    access_log: {{ path: "{log}", format: json }}
    mysql:
      users:
        - {{ username: app, password: app-pw }}
route_tables:
  - name: sql
    virtual_hosts:
      - name: any
        domains: ["*"]
        routes:
          - cluster: primary
clusters:
  - name: primary
    hosts: ["127.0.0.1:{db}"]
    mysql: {{ user: {PROXY_USER}, password: {PROXY_PASSWORD} }}
"#,
        admin = ports.admin,
        listen = ports.listen,
        log = log.display(),
        db = db.port,
    );
    let gw = Gateway::start(&yaml);
    let out = mariadb_cli(
        gw.addr(),
        "app",
        "app-pw",
        None,
        "INSERT INTO shop.items VALUES (7, 'secret-name'); SELECT name FROM shop.items WHERE id = 7",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "secret-name");
    let select = record(&log, "the SELECT record", |r| {
        r["digest"].as_str().is_some_and(|d| d.contains("SELECT"))
    });
    let digest = select["digest"].as_str().unwrap();
    assert!(
        digest.contains("shop.items") && digest.contains('?'),
        "{select}"
    );
    assert_eq!(select["protocol"], "mysql", "{select}");
    assert_eq!(select["user"], "app", "{select}");
    assert_eq!(select["packet"], "COM_QUERY", "{select}");
    let insert = record(&log, "the INSERT record", |r| {
        r["digest"].as_str().is_some_and(|d| d.contains("INSERT"))
    });
    assert!(
        !insert.to_string().contains("secret-name"),
        "a literal was logged: {insert}"
    );
}

#[test]
fn reload_moves_new_connections_to_the_new_file() {
    let p = peers();
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first.log");
    let second = dir.path().join("second.log");
    let gw = gateway(&first, "format: json", &p);
    assert_eq!(curl(&[&gw.url("/app/hello.txt?one")]), "200");
    record(&first, "the first record", |r| r["status"] == 200);
    let yaml = std::fs::read_to_string(&gw.config_path)
        .unwrap()
        .replace(&first.display().to_string(), &second.display().to_string());
    std::fs::write(&gw.config_path, yaml).unwrap();
    gw.signal("HUP");
    wait_for("the reload", WAIT, || {
        gw.log().contains("config reloaded").then_some(())
    });
    assert_eq!(curl(&[&gw.url("/app/hello.txt?two")]), "200");
    let r = record(&second, "a record in the new file", |r| r["status"] == 200);
    assert_eq!(r["path"], "/app/hello.txt", "{r}");
    assert_eq!(records(&first).len(), 1, "the old file got the new request");
}

#[test]
fn rtsp_requests_carry_method_path_and_status() {
    let server = RtspServer::start(&["/cam"]);
    let dir = tempfile::tempdir().unwrap();
    let log = log_path(&dir);
    let ports = Ports::new();
    let yaml = format!(
        "admin:\n  address: 127.0.0.1:{admin}\nlisteners:\n  - name: media\n    address: 127.0.0.1:{listen}\n    protocols: [rtsp]\n    route_table: main\n    access_log: {{path: \"{log}\", format: json}}\nroute_tables:\n  - name: main\n    virtual_hosts:\n      - name: any\n        domains: [\"*\"]\n        routes:\n          - {{match: {{protocol: rtsp}}, cluster: cams}}\nclusters:\n  - {{name: cams, hosts: [\"127.0.0.1:{cam}\"]}}\n",
        admin = ports.admin,
        listen = ports.listen,
        log = log.display(),
        cam = server.port,
    );
    let gw = Gateway::start(&yaml);
    let url = format!("rtsp://{}/cam", gw.addr());
    let out = run(
        "ffprobe",
        &[
            "-v",
            "error",
            "-rtsp_transport",
            "tcp",
            "-show_entries",
            "stream=codec_type",
            "-of",
            "csv=p=0",
            &url,
        ],
    );
    assert!(out.contains("video"), "ffprobe through the gateway: {out}");
    for method in ["OPTIONS", "DESCRIBE", "SETUP", "PLAY"] {
        let r = record(&log, &format!("the RTSP {method} record"), |r| {
            r["protocol"] == "rtsp" && r["method"] == method
        });
        assert_eq!(r["status"], 200, "{r}");
        assert_eq!(r["result"], "ok", "{r}");
        assert_eq!(r["upstream"], format!("127.0.0.1:{}", server.port), "{r}");
        assert!(
            r["path"].as_str().is_some_and(|p| p.starts_with("/cam")),
            "{r}"
        );
    }
}
