//! The admin API, driven with curl against the running gateway binary:
//! every endpoint's JSON parsed and checked against what real clients
//! (redis-cli, curl) did through the gateway; reload, drain and the log
//! filter changed at runtime; the bearer token off loopback.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};

use common::*;
use serde_json::Value;

/// One admin answer: status, the head's text, the body.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): status {}\n{}", self.status, self.body))
    }

    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }
}

/// `curl -i -X METHOD http://ADDR/PATH` plus `extra` arguments.
fn curl_admin(addr: SocketAddr, method: &str, path: &str, extra: &[&str]) -> Answer {
    let out = run_ok(
        curl()
            .args(["-i", "-X", method])
            .args(extra)
            .arg(format!("http://{addr}{path}")),
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in curl's output:\n{text}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head}"));
    Answer {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

fn get(gw: &Gateway, path: &str) -> Answer {
    curl_admin(gw.admin, "GET", path, &[])
}

fn post(gw: &Gateway, path: &str) -> Answer {
    curl_admin(gw.admin, "POST", path, &[])
}

/// `GET path`, answered 200 with JSON.
fn get_json(gw: &Gateway, path: &str) -> Value {
    let a = get(gw, path);
    assert_eq!(a.status, 200, "GET {path}: {}", a.body);
    assert_eq!(
        a.header("content-type").as_deref(),
        Some("application/json"),
        "GET {path}"
    );
    a.json()
}

/// The open connections of `protocol` on listener `edge`, per `/listeners`.
fn active(gw: &Gateway, protocol: &str) -> i64 {
    let v = get_json(gw, "/listeners");
    let edge = v["listeners"]
        .as_array()
        .and_then(|ls| ls.iter().find(|l| l["name"] == "edge"))
        .unwrap_or_else(|| panic!("no listener edge in {v}"));
    edge["active_connections"][protocol]
        .as_i64()
        .unwrap_or_else(|| panic!("no {protocol} count in {edge}"))
}

#[test]
fn index_lists_endpoints_and_methods_are_checked() {
    let gw = Template::default().start();
    let index = get_json(&gw, "/");
    let paths: Vec<&str> = index["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .filter_map(|e| e["path"].as_str())
        .collect();
    for want in [
        "/live",
        "/ready",
        "/metrics",
        "/stats?filter=REGEX",
        "/listeners",
        "/clusters",
        "/routes",
        "/logging?level=DIRECTIVES",
        "/reload",
        "/drain",
    ] {
        assert!(paths.contains(&want), "{want} missing from {paths:?}");
    }

    let missing = get(&gw, "/nope");
    assert_eq!(missing.status, 404);
    assert!(missing.json()["error"].as_str().unwrap().contains("/nope"));

    // Reads are GET, actions POST; the rest is 405 with Allow.
    let a = post(&gw, "/listeners");
    assert_eq!(a.status, 405, "{}", a.body);
    assert_eq!(a.header("allow").as_deref(), Some("GET"));
    assert!(a.json()["error"].as_str().unwrap().contains("use GET"));
    let a = get(&gw, "/reload");
    assert_eq!(a.status, 405, "{}", a.body);
    assert_eq!(a.header("allow").as_deref(), Some("POST"));
    let a = get(&gw, "/drain");
    assert_eq!(a.status, 405);
    let a = curl_admin(gw.admin, "DELETE", "/logging", &[]);
    assert_eq!(a.status, 405);
    assert_eq!(a.header("allow").as_deref(), Some("GET, POST"));
    // A GET /drain did not drain.
    assert_eq!(get(&gw, "/ready").status, 200);

    let live = get_json(&gw, "/live");
    assert_eq!(live["live"], true);
    assert_eq!(live["draining"], false);
    assert_eq!(live["pid"], gw.pid());
}

#[test]
fn stats_count_requests_made_with_redis_cli() {
    let redis = RedisServer::start();
    let gw = Template {
        redis: vec![redis.addr()],
        ..Default::default()
    }
    .start();
    for i in 0..5 {
        let out = redis_cli(gw.addr(), &["set", &format!("k{i}"), "v"]);
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "OK");
    }
    let key = "switchyard_requests_total{listener=\"edge\",protocol=\"redis\"}";
    let stats = get_json(&gw, "/stats?filter=requests");
    assert!(
        stats[key].as_f64().unwrap_or(0.0) >= 5.0,
        "{key} below 5 in {stats:#}"
    );
    // Only names matching the filter.
    let names: Vec<&String> = stats.as_object().unwrap().keys().collect();
    assert!(names.iter().all(|n| n.contains("requests")), "{names:?}");
    // The same count as /metrics.
    let m = gw.metric("switchyard_requests_total", &[("protocol", "redis")]);
    assert_eq!(stats[key].as_f64(), Some(m));

    // A histogram: count, sum and quantiles from its buckets.
    let stats = get_json(
        &gw,
        "/stats?filter=%5Eswitchyard_request_duration_seconds%24",
    );
    let h = &stats["switchyard_request_duration_seconds{listener=\"edge\",protocol=\"redis\"}"];
    assert!(h["count"].as_f64().unwrap_or(0.0) >= 5.0, "{stats:#}");
    let (p50, p99) = (h["p50"].as_f64().unwrap(), h["p99"].as_f64().unwrap());
    assert!(p50 > 0.0 && p50 <= p99 && p99 <= 10.0, "{h}");
    assert!(h["sum"].as_f64().unwrap() > 0.0, "{h}");

    // Everything without a filter; a bad regex is a 400 naming the problem.
    let all = get_json(&gw, "/stats");
    assert!(all.as_object().unwrap().len() > names.len());
    let bad = get(&gw, "/stats?filter=%28unclosed");
    assert_eq!(bad.status, 400);
    assert!(
        bad.json()["error"]
            .as_str()
            .unwrap()
            .contains("not a valid regex"),
        "{}",
        bad.body
    );
}

#[test]
fn listeners_show_a_connection_held_open_by_redis_cli() {
    let redis = RedisServer::start();
    let gw = Template {
        redis: vec![redis.addr()],
        ..Default::default()
    }
    .start();
    let v = get_json(&gw, "/listeners");
    let edge = &v["listeners"][0];
    assert_eq!(edge["name"], "edge");
    assert_eq!(edge["address"], gw.addr().to_string());
    assert_eq!(edge["protocols"], serde_json::json!(["http1", "redis"]));
    assert_eq!(edge["tls"], false);
    assert_eq!(edge["route_table"], "main");
    assert_eq!(active(&gw, "redis"), 0);

    // redis-cli pings every 100 ms on one connection until it is killed.
    let mut cli = Command::new(require("redis-cli"))
        .args(["-h", "127.0.0.1", "-p", &gw.addr().port().to_string()])
        .args(["-r", "100000", "-i", "0.1", "ping"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn redis-cli");
    wait_for("/listeners to show redis-cli's connection", WAIT, || {
        (active(&gw, "redis") == 1).then_some(())
    });
    let v = get_json(&gw, "/listeners");
    assert_eq!(v["listeners"][0]["active_connections_total"], 1);
    assert_eq!(active(&gw, "http1"), 0);
    // The gauge agrees.
    let gauge = gw.metric(
        "switchyard_downstream_connections_active",
        &[("listener", "edge"), ("protocol", "redis")],
    );
    assert_eq!(gauge, 1.0);
    let _ = cli.kill();
    let _ = cli.wait();
    wait_for("/listeners to count the connection out", WAIT, || {
        (active(&gw, "redis") == 0).then_some(())
    });
}

#[test]
fn clusters_show_hosts_health_and_breakers() {
    let redis = RedisServer::start();
    let gw = Template {
        redis: vec![redis.addr()],
        cluster_fields: vec!["circuit_breakers: {max_requests: 50}"],
        ..Default::default()
    }
    .start();
    let out = redis_cli(gw.addr(), &["ping"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "PONG");
    let v = get_json(&gw, "/clusters");
    let c = &v["clusters"][0];
    assert_eq!(c["name"], "redis");
    assert_eq!(c["hosts_available"], 1);
    let host = &c["hosts"][0];
    assert_eq!(host["address"], redis.addr().to_string());
    assert_eq!(host["weight"], 1);
    assert_eq!(host["healthy"], true);
    assert_eq!(host["ejected"], false);
    assert_eq!(host["requests_in_flight"], 0);
    assert_eq!(host["health"]["ejections"], 0);
    let b = &c["circuit_breakers"]["requests"];
    assert_eq!(b["max"], 50);
    assert_eq!(b["current"], 0);
    assert_eq!(b["open"], false);
    assert_eq!(c["circuit_breakers"]["connections"]["max"], Value::Null);
}

/// The config file with one more route, answered by the gateway itself.
fn with_fresh_route(yaml: &str) -> String {
    let anchor = "        routes:\n";
    assert!(yaml.contains(anchor), "{yaml}");
    yaml.replacen(
        anchor,
        &format!(
            "{anchor}          - {{match: {{path_prefix: /fresh}}, direct_response: {{status: 201, body: fresh}}}}\n"
        ),
        1,
    )
}

fn paths_of_routes(gw: &Gateway) -> Vec<String> {
    let v = get_json(gw, "/routes");
    let table = &v["route_tables"][0];
    assert_eq!(table["name"], "main", "{v:#}");
    assert_eq!(table["listeners"], serde_json::json!(["edge"]));
    table["virtual_hosts"][0]["routes"]
        .as_array()
        .expect("routes")
        .iter()
        .map(|r| r["match"]["path_prefix"].as_str().unwrap_or("").to_owned())
        .collect()
}

#[test]
fn reload_changes_routes_and_a_broken_config_keeps_them() {
    let gw = Template::default().start();
    let routes = get_json(&gw, "/routes");
    let first = &routes["route_tables"][0]["virtual_hosts"][0]["routes"][0];
    assert_eq!(first["direct_response"]["status"], 200, "{routes:#}");
    assert_eq!(first["match"]["protocol"], "http1", "{routes:#}");
    assert_eq!(first["action"], "direct_response", "{routes:#}");
    // Fields left unset are left out.
    assert_eq!(first.get("cluster"), None, "{routes:#}");
    assert!(!paths_of_routes(&gw).contains(&"/fresh".to_owned()));

    let yaml = std::fs::read_to_string(&gw.config_path).unwrap();
    std::fs::write(&gw.config_path, with_fresh_route(&yaml)).unwrap();
    let a = post(&gw, "/reload");
    assert_eq!(a.status, 200, "{}", a.body);
    let v = a.json();
    assert_eq!(v["reloaded"], true);
    assert_eq!(
        v["changed"]["route_tables"],
        serde_json::json!({"added": [], "removed": [], "changed": ["main"]}),
        "{v:#}"
    );
    assert_eq!(v["changed"]["clusters"], Value::Null, "{v:#}");
    assert!(paths_of_routes(&gw).contains(&"/fresh".to_owned()));
    // And the gateway routes by it.
    let out = run_ok(curl().args(["-w", " %{http_code}", &gw.url("/fresh")]));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "fresh 201");

    // A route to a cluster that does not exist: 400 with the config error,
    // and the routes stay as they were.
    let broken = with_fresh_route(&yaml).replace(
        "direct_response: {status: 201, body: fresh}",
        "cluster: nosuch",
    );
    std::fs::write(&gw.config_path, broken).unwrap();
    let a = post(&gw, "/reload");
    assert_eq!(a.status, 400, "{}", a.body);
    let v = a.json();
    assert_eq!(v["reloaded"], false);
    let problems = v["problems"].to_string();
    assert!(
        problems.contains("switchyard.yaml:") && problems.contains("nosuch"),
        "{v:#}"
    );
    assert!(paths_of_routes(&gw).contains(&"/fresh".to_owned()));
    let out = run_ok(curl().args(["-w", " %{http_code}", &gw.url("/fresh")]));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "fresh 201");

    // Both counted, as SIGHUP reloads are.
    let ok = gw.metric("switchyard_config_reloads_total", &[("result", "ok")]);
    let err = gw.metric("switchyard_config_reloads_total", &[("result", "error")]);
    assert_eq!((ok, err), (1.0, 1.0));
    gw.signal("HUP");
    wait_for("SIGHUP's reload to be counted", WAIT, || {
        (gw.metric("switchyard_config_reloads_total", &[("result", "error")]) == 2.0).then_some(())
    });
}

#[test]
fn drain_makes_ready_503_while_live_stays_200() {
    let upstream = HttpUpstream::start();
    let gw = Template {
        http: vec![upstream.addr()],
        top: vec!["drain_timeout: 60s"],
        ..Default::default()
    }
    .start();
    // A request in flight keeps the gateway draining (not stopped) while we look.
    let slow = curl()
        .args(["-w", " %{http_code}", &gw.url("/slow/6000")])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn curl");
    wait_for("the slow request to be in flight", WAIT, || {
        (active(&gw, "http1") == 1).then_some(())
    });
    let a = post(&gw, "/drain");
    assert_eq!(a.status, 202, "{}", a.body);
    assert_eq!(a.json()["draining"], true);
    assert_eq!(get(&gw, "/ready").status, 503);
    let live = get_json(&gw, "/live");
    assert_eq!(live["live"], true);
    assert_eq!(live["draining"], true);
    assert!(live["connections"].as_u64().unwrap() >= 1, "{live}");
    // A second drain says so.
    assert_eq!(post(&gw, "/drain").json()["already_draining"], true);
    // The listener stopped accepting.
    wait_for("the listener to stop accepting", WAIT, || {
        TcpStream::connect(gw.addr()).is_err().then_some(())
    });

    // The request finishes, then the gateway stops on its own.
    let out = slow.wait_with_output().expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "slept 6000\n 200");
    let mut gw = gw;
    assert!(gw.wait_exit(WAIT).success());
    assert!(gw.log().contains("drain requested from the admin API"));
}

#[test]
fn logging_level_changes_at_runtime() {
    let gw = Template::default().start();
    let v = get_json(&gw, "/logging");
    assert_eq!(v["filter"], "info");

    // Bytes no enabled protocol takes: logged at debug only.
    let junk = || {
        let mut s = TcpStream::connect(gw.addr()).unwrap();
        s.write_all(b"\x00\x01\x02\x03 no protocol at all\r\n")
            .unwrap();
        let _ = std::io::Read::read(&mut s, &mut [0u8; 16]);
    };
    junk();
    wait_for("the junk to be counted", WAIT, || {
        (gw.metric("switchyard_detect_failures_total", &[]) >= 1.0).then_some(())
    });
    assert!(!gw.log().contains("no protocol detected"), "{}", gw.log());

    let a = post(&gw, "/logging?level=debug");
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["filter"], "debug");
    assert_eq!(a.json()["previous"], "info");
    assert_eq!(get_json(&gw, "/logging")["filter"], "debug");
    junk();
    wait_for("a debug line in the gateway's stderr", WAIT, || {
        gw.log().contains("no protocol detected").then_some(())
    });

    // A target directive (URL-encoded by curl); back to quiet for the rest.
    let a = curl_admin(
        gw.admin,
        "POST",
        "/logging",
        &["--data-urlencode", "level=warn,switchyard::net=debug"],
    );
    assert_eq!(a.status, 200, "{}", a.body);
    let filter = a.json()["filter"].as_str().unwrap().to_owned();
    assert!(
        filter.contains("switchyard::net=debug") && filter.contains("warn"),
        "{filter}"
    );

    // Bad directives: 400 with a message saying what is wrong.
    for bad in ["verbose", "switchyard::proxy=loud", ""] {
        let a = curl_admin(gw.admin, "POST", &format!("/logging?level={bad}"), &[]);
        assert_eq!(a.status, 400, "{bad}: {}", a.body);
        let e = a.json()["error"].as_str().unwrap().to_owned();
        assert!(e.contains("level") || e.contains("invalid"), "{bad}: {e}");
    }
    let a = post(&gw, "/logging");
    assert_eq!(a.status, 400);
    assert_eq!(get_json(&gw, "/logging")["filter"], filter);
}

/// The gateway binary on a config that needs no `/ready` probe without a token.
struct Bare {
    child: Child,
    log: std::path::PathBuf,
}

impl Drop for Bare {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- gateway log ----\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

#[test]
fn admin_off_loopback_requires_a_bearer_token() {
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::new();
    let open = Template::default().render(&ports).replacen(
        &format!("address: 127.0.0.1:{}\n", ports.admin),
        &format!("address: 0.0.0.0:{}\n", ports.admin),
        1,
    );
    assert!(open.contains("0.0.0.0"), "{open}");
    let file = dir.path().join("open.yaml");
    std::fs::write(&file, &open).unwrap();

    // `check` and startup refuse it, naming the field and the fix.
    for cmd in ["check", "run"] {
        let mut c = Command::new(env!("CARGO_BIN_EXE_switchyard"));
        c.arg(cmd);
        if cmd == "run" {
            c.arg("-c");
        }
        let out = c.arg(&file).output().expect("run switchyard");
        assert!(!out.status.success(), "{cmd} accepted an open admin");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("open.yaml:2:12: admin.address")
                && err.contains("set `admin.token` or `admin.token_file`"),
            "{cmd}: {err}"
        );
    }

    // With a token file it runs, and every request needs the token.
    let token = "s3cret-token-0123456789abcdef";
    std::fs::write(dir.path().join("admin.token"), format!("{token}\n")).unwrap();
    let tokened = open.replacen(
        &format!("address: 0.0.0.0:{}\n", ports.admin),
        &format!(
            "address: 0.0.0.0:{}\n  token_file: admin.token\n",
            ports.admin
        ),
        1,
    );
    std::fs::write(&file, &tokened).unwrap();
    let log = dir.path().join("gateway.log");
    let f = std::fs::File::create(&log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["run", "-c"])
        .arg(&file)
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .spawn()
        .expect("spawn switchyard");
    let _gw = Bare { child, log };
    let admin = local(ports.admin);
    let auth = format!("Authorization: Bearer {token}");
    wait_for("/live with the token", WAIT, || {
        let out = curl()
            .args(["-o", "/dev/null", "-w", "%{http_code}", "-H", &auth])
            .arg(format!("http://{admin}/live"))
            .output()
            .ok()?;
        (out.stdout == b"200").then_some(())
    });
    for path in ["/live", "/ready", "/metrics", "/clusters", "/config"] {
        let a = curl_admin(admin, "GET", path, &[]);
        assert_eq!(a.status, 401, "{path} without a token: {}", a.body);
        assert!(a.header("www-authenticate").unwrap().starts_with("Bearer"));
        assert!(a.json()["error"].as_str().unwrap().contains("Bearer"));
        let a = curl_admin(
            admin,
            "GET",
            path,
            &["-H", "Authorization: Bearer s3cret-token-0123456789abcdeX"],
        );
        assert_eq!(a.status, 401, "{path} with a wrong token");
        let a = curl_admin(admin, "GET", path, &["-H", &auth]);
        assert_eq!(a.status, 200, "{path} with the token: {}", a.body);
    }
    // Actions too; and the token never shows in /config.
    let a = curl_admin(admin, "POST", "/drain", &[]);
    assert_eq!(a.status, 401);
    let a = curl_admin(admin, "GET", "/config", &["-H", &auth]);
    assert!(!a.body.contains(token), "{}", a.body);
    let a = curl_admin(admin, "GET", "/ready", &["-H", &auth]);
    assert_eq!(a.status, 200, "the unauthorized POST /drain drained");

    // A reload to a loopback address without a token is accepted (the
    // address changes only with a restart), but the server, still bound to
    // 0.0.0.0, does not open up.
    std::fs::write(&file, Template::default().render(&ports)).unwrap();
    let a = curl_admin(admin, "POST", "/reload", &["-H", &auth]);
    assert_eq!(a.status, 200, "{}", a.body);
    let a = curl_admin(admin, "GET", "/config", &[]);
    assert_eq!(a.status, 403, "{}", a.body);
    assert!(a.json()["error"].as_str().unwrap().contains("admin.token"));
}
