//! External authorization (`ext_authz` filter) against an authorization
//! server that is not our code: `envoy-types`' generated
//! `envoy.service.auth.v3.Authorization` service on a `tonic` server, run
//! in the test. Real clients through the gateway to real servers: curl →
//! nginx, grpcio (`tests/peers/grpc_peer.py`) → a grpcio server, redis-cli
//! → redis-server, mosquitto_pub/sub → mosquitto.
//!
//! The server's policy looks at what the check carries (the HTTP path, the
//! Redis command and key, the MQTT client id and topic): it denies a
//! request whose subject holds `deny` (HTTP status from the request's
//! `x-deny-status` header, else 403; body `denied by policy: SUBJECT`),
//! stalls one holding `slow` for 2 s (past the gateway's 300 ms timeout),
//! and allows the rest, asking for header `x-authz: ok` to be added and
//! `x-secret` removed.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::grpc_peer::{GrpcServer, grpc_call};
use common::*;
use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, HttpStatus,
};
use envoy_types::ext_authz::v3::{
    CheckResponseExt, DeniedHttpResponseBuilder, OkHttpResponseBuilder,
};
use envoy_types::pb::envoy::config::core::v3::address;

// ---------------------------------------------------------------------------
// The authorization server

#[derive(Clone, Default)]
struct Policy {
    seen: Arc<Mutex<Vec<CheckRequest>>>,
}

/// What the policy judges: the HTTP path and the protocols' metadata.
fn subject(req: &CheckRequest) -> String {
    let Some(a) = &req.attributes else {
        return String::new();
    };
    let mut parts = Vec::new();
    if let Some(http) = a.request.as_ref().and_then(|r| r.http.as_ref()) {
        parts.push(http.path.clone());
    }
    for key in [
        "redis.key",
        "mqtt.client_id",
        "mqtt.topic",
        "mysql.user",
        "mysql.schema",
    ] {
        if let Some(v) = a.context_extensions.get(key) {
            parts.push(v.clone());
        }
    }
    parts.join(" ")
}

#[tonic::async_trait]
impl Authorization for Policy {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let req = request.into_inner();
        self.seen.lock().unwrap().push(req.clone());
        let subject = subject(&req);
        let lower = subject.to_ascii_lowercase();
        if lower.contains("slow") {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        let mut answer;
        if lower.contains("deny") {
            let status = req
                .attributes
                .as_ref()
                .and_then(|a| a.request.as_ref()?.http.as_ref())
                .and_then(|h| h.headers.get("x-deny-status")?.parse().ok())
                .unwrap_or(403);
            answer = CheckResponse::with_status(tonic::Status::permission_denied("denied"));
            let mut denied = DeniedHttpResponseBuilder::new();
            denied.set_body(format!("denied by policy: {subject}"));
            let mut denied = denied.build();
            denied.status = Some(HttpStatus { code: status });
            answer.set_http_response(denied);
        } else {
            answer = CheckResponse::with_status(tonic::Status::ok("allowed"));
            let mut ok = OkHttpResponseBuilder::new();
            ok.add_header("x-authz", "ok", None, false);
            ok.remove_header("x-secret");
            answer.set_http_response(ok);
        }
        Ok(tonic::Response::new(answer))
    }
}

/// The tonic server on its own thread and runtime; stops with the test.
struct AuthzServer {
    addr: SocketAddr,
    policy: Policy,
}

impl AuthzServer {
    fn start() -> Self {
        let policy = Policy::default();
        let (tx, rx) = std::sync::mpsc::channel();
        let served = policy.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let incoming =
                    tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().unwrap())
                        .unwrap();
                tx.send(incoming.local_addr().unwrap()).unwrap();
                tonic::transport::Server::builder()
                    .serve_with_incoming(AuthorizationServer::new(served), incoming)
                    .await
                    .unwrap();
            });
        });
        let addr = rx
            .recv_timeout(WAIT)
            .expect("the authorization server binds");
        AuthzServer { addr, policy }
    }

    /// The checks it was asked so far.
    fn seen(&self) -> Vec<CheckRequest> {
        self.policy.seen.lock().unwrap().clone()
    }
}

// ---------------------------------------------------------------------------
// Peers and the gateway

const WAIT: Duration = Duration::from_secs(20);

/// The upstreams: nginx echoing what the gateway sent, a grpcio server,
/// redis-server, mosquitto.
struct Peers {
    web: Nginx,
    grpc: GrpcServer,
    redis: RedisServer,
    mqtt: Mosquitto,
}

impl Peers {
    fn start() -> Self {
        Peers {
            web: Nginx::start_with(
                &[],
                "",
                "map $http_x_secret $secret { \"\" -; default $http_x_secret; } \
                 map $http_x_authz $authz { \"\" -; default $http_x_authz; }",
                "default_type text/plain; return 200 \"upstream $uri x-authz=$authz x-secret=$secret\n\";",
            ),
            grpc: GrpcServer::start(),
            redis: RedisServer::start(),
            mqtt: Mosquitto::start(),
        }
    }
}

/// Three listeners on HTTP/1, HTTP/2, Redis and MQTT, each with one
/// `ext_authz` filter: `strict` (failure mode deny), `lenient` (failure mode
/// allow), and `broken` (an authorization service nobody listens on, deny).
fn gateway(authz: SocketAddr, p: &Peers) -> Gateway {
    let ports = Ports::new();
    let (lenient, broken) = (free_port(), free_port());
    let dead = free_port();
    let listener = |name: &str, port: u16, service: SocketAddr, allow: bool| {
        format!(
            "  - name: {name}
    address: 127.0.0.1:{port}
    protocols: [http1, http2, redis, mqtt]
    route_table: main
    filters:
      - ext_authz: {{grpc: {{address: \"{service}\", timeout: 300ms}}, failure_mode_allow: {allow}, context_extensions: {{listener: {name}}}}}
"
        )
    };
    let y = format!(
        "admin:
  address: 127.0.0.1:{admin}
listeners:
{strict}{lenient}{broken}route_tables:
  - name: main
    virtual_hosts:
      - name: any
        domains: [\"*\"]
        routes:
          - {{match: {{protocol: redis}}, cluster: redis}}
          - {{match: {{protocol: mqtt}}, cluster: mqtt}}
          - {{match: {{path_prefix: /test.Echo/}}, cluster: grpc}}
          - {{match: {{protocol: http1}}, cluster: web}}
clusters:
  - {{name: web, hosts: [\"{web}\"], protocol: http1}}
  - {{name: grpc, hosts: [\"{grpc}\"], protocol: http2}}
  - {{name: redis, hosts: [\"{redis}\"]}}
  - {{name: mqtt, hosts: [\"{mqtt}\"]}}
",
        admin = ports.admin,
        strict = listener("strict", ports.listen, authz, false),
        lenient = listener("lenient", lenient, authz, true),
        broken = listener("broken", broken, local(dead), false),
        web = p.web.addr(),
        grpc = p.grpc.addr(),
        redis = p.redis.addr(),
        mqtt = p.mqtt.addr(),
    );
    Gateway::start(&y)
}

fn run(c: &mut Command) -> Output {
    c.stdin(Stdio::null()).output().expect("run a client")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `curl -sS` on `url`: (status, body).
fn curl(url: &str, headers: &[&str]) -> (u16, String) {
    let mut c = Command::new(require("curl"));
    c.args(["-sS", "-w", "\n%{http_code}"]);
    for h in headers {
        c.args(["-H", h]);
    }
    let out = run(c.arg(url));
    let all = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = all
        .rsplit_once('\n')
        .unwrap_or_else(|| panic!("curl {url}: {}", text(&out)));
    (status.parse().unwrap_or(0), body.trim_end().to_owned())
}

fn redis_cli(addr: SocketAddr, args: &[&str]) -> String {
    let out = run(Command::new(require("redis-cli"))
        .args(["-h", "127.0.0.1", "-p", &addr.port().to_string()])
        .args(args));
    text(&out).trim().to_owned()
}

/// `mosquitto_pub` of one QoS 1 message: (success, output).
fn mqtt_pub(addr: SocketAddr, version: &str, id: &str, topic: &str, msg: &str) -> (bool, String) {
    let out = run(Command::new(require("mosquitto_pub"))
        .args(["-h", "127.0.0.1", "-p", &addr.port().to_string()])
        .args(["-V", version, "-i", id, "-q", "1", "-t", topic, "-m", msg]));
    (out.status.success(), text(&out))
}

/// A `mosquitto_sub` (client id `id`) on the broker itself, waiting for one
/// message on `#`; returns once the broker saw its SUBSCRIBE.
fn mqtt_sub_one(broker: &Mosquitto, id: &str) -> std::process::Child {
    let child = Command::new(require("mosquitto_sub"))
        .args(["-h", "127.0.0.1", "-p", &broker.addr().port().to_string()])
        .args(["-i", id, "-t", "#", "-C", "1", "-v", "-W", "20"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mosquitto_sub");
    let subscribed = format!("Received SUBSCRIBE from {id}");
    wait_for(&format!("{id} subscribed"), WAIT, || {
        broker.log().contains(&subscribed).then_some(())
    });
    child
}

// ---------------------------------------------------------------------------
// Tests

#[test]
fn http1_curl_to_nginx_allowed_denied_and_timed_out() {
    let authz = AuthzServer::start();
    let peers = Peers::start();
    let gw = gateway(authz.addr, &peers);
    let strict = gw.listener("strict");
    let lenient = gw.listener("lenient");

    // Allowed: the header the server asked for reaches nginx, the one it
    // asked to remove does not.
    let (status, body) = curl(&format!("http://{strict}/app/hello"), &["x-secret: s3"]);
    assert_eq!(
        (status, body.as_str()),
        (200, "upstream /app/hello x-authz=ok x-secret=-")
    );

    // Denied: the server's status and body.
    let (status, body) = curl(&format!("http://{strict}/app/deny-me"), &[]);
    assert_eq!(
        (status, body.as_str()),
        (403, "denied by policy: /app/deny-me")
    );
    let (status, body) = curl(
        &format!("http://{strict}/app/deny-me"),
        &["x-deny-status: 451"],
    );
    assert_eq!(
        (status, body.as_str()),
        (451, "denied by policy: /app/deny-me")
    );

    // Timeout: refused with 503 by `strict`, let through by `lenient`
    // (without the header an answer would have added).
    let (status, body) = curl(&format!("http://{strict}/app/slow"), &[]);
    assert_eq!(
        (status, body.as_str()),
        (503, "authorization check timed out")
    );
    let (status, body) = curl(&format!("http://{lenient}/app/slow"), &[]);
    assert_eq!(
        (status, body.as_str()),
        (200, "upstream /app/slow x-authz=- x-secret=-")
    );

    // No authorization service: `broken` refuses (failure mode deny).
    let (status, body) = curl(&format!("http://{}/app/hello", gw.listener("broken")), &[]);
    assert_eq!(
        (status, body.as_str()),
        (503, "authorization service unavailable")
    );

    // What the server was asked for the first request.
    let seen = authz.seen();
    let first = seen
        .iter()
        .find(|c| subject(c) == "/app/hello")
        .expect("the check of /app/hello");
    let a = first.attributes.as_ref().unwrap();
    let http = a.request.as_ref().unwrap().http.as_ref().unwrap();
    assert_eq!(
        (
            http.method.as_str(),
            http.host.as_str(),
            http.protocol.as_str()
        ),
        ("GET", strict.to_string().as_str(), "HTTP/1.1")
    );
    assert_eq!(http.headers.get("x-secret").map(String::as_str), Some("s3"));
    assert!(
        http.headers
            .get("user-agent")
            .is_some_and(|u| u.starts_with("curl/")),
        "{:?}",
        http.headers
    );
    assert_eq!(a.context_extensions["protocol"], "http1");
    assert_eq!(
        a.context_extensions["listener"], "strict",
        "configured extensions"
    );
    let socket =
        |peer: &Option<envoy_types::pb::envoy::service::auth::v3::attribute_context::Peer>| {
            match peer.as_ref()?.address.as_ref()?.address.as_ref()? {
                address::Address::SocketAddress(s) => Some(s.clone()),
                _ => None,
            }
        };
    let source = socket(&a.source).expect("a source address");
    assert_eq!(source.address, "127.0.0.1");
    let destination = socket(&a.destination).expect("a destination address");
    assert_eq!(
        destination.port_specifier,
        Some(
            envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier::PortValue(
                u32::from(strict.port())
            )
        )
    );

    // Per-verdict counters.
    let count = |listener: &str, verdict: &str| {
        gw.metric(
            "switchyard_ext_authz_checks_total",
            &[
                ("scope", &format!("listener:{listener}")),
                ("verdict", verdict),
            ],
        )
    };
    assert_eq!(count("strict", "allowed"), 1.0);
    assert_eq!(count("strict", "denied"), 2.0);
    assert_eq!(count("strict", "timeout"), 1.0);
    assert_eq!(count("lenient", "timeout"), 1.0);
    assert_eq!(count("broken", "error"), 1.0);
}

#[test]
fn grpc_calls_allowed_denied_and_timed_out() {
    let authz = AuthzServer::start();
    let peers = Peers::start();
    let gw = gateway(authz.addr, &peers);
    let strict = gw.listener("strict");

    // Allowed, and the upstream sees the metadata the server added.
    let r = grpc_call(strict, "Metadata", "x-authz");
    assert_eq!(r["code"], "OK", "{r}");
    assert_eq!(r["responses"][0], "ok", "{r}");

    // Denied: PERMISSION_DENIED with the server's body.
    let r = grpc_call(strict, "/test.Echo/DenyMe", "x");
    assert_eq!(r["code"], "PERMISSION_DENIED", "{r}");
    assert_eq!(r["details"], "denied by policy: /test.Echo/DenyMe", "{r}");

    // Timeout: UNAVAILABLE from `strict`, the call goes on through `lenient`.
    let r = grpc_call(strict, "Slow", "10");
    assert_eq!(r["code"], "UNAVAILABLE", "{r}");
    let r = grpc_call(gw.listener("lenient"), "Slow", "10");
    assert_eq!(
        (&r["code"], &r["responses"][0]),
        (&"OK".into(), &"slow".into()),
        "{r}"
    );

    let check = authz
        .seen()
        .into_iter()
        .find(|c| subject(c) == "/test.Echo/Metadata")
        .expect("the check of the Metadata call");
    let a = check.attributes.unwrap();
    let http = a.request.unwrap().http.unwrap();
    assert_eq!(
        (http.method.as_str(), http.protocol.as_str()),
        ("POST", "HTTP/2")
    );
    assert_eq!(
        http.headers.get("content-type").map(String::as_str),
        Some("application/grpc")
    );
    assert_eq!(a.context_extensions["protocol"], "http2");
    assert_eq!(a.context_extensions["rpc.service"], "test.Echo");
    assert_eq!(a.context_extensions["rpc.method"], "Metadata");
}

#[test]
fn redis_cli_to_redis_allowed_denied_and_timed_out() {
    let authz = AuthzServer::start();
    let peers = Peers::start();
    let gw = gateway(authz.addr, &peers);
    let strict = gw.listener("strict");
    assert_eq!(redis_cli(strict, &["SET", "k1", "v1"]), "OK");
    assert_eq!(redis_cli(strict, &["GET", "k1"]), "v1");
    assert_eq!(
        redis_cli(strict, &["SET", "deny:k", "x"]),
        "NOPERM denied by policy: deny:k"
    );
    assert_eq!(
        redis_cli(peers.redis.addr(), &["EXISTS", "deny:k"]),
        "0",
        "the denied SET never reached redis-server"
    );
    assert_eq!(
        redis_cli(strict, &["SET", "slow:k", "x"]),
        "ERR authorization check timed out"
    );
    assert_eq!(
        redis_cli(gw.listener("lenient"), &["SET", "slow:k", "y"]),
        "OK"
    );
    assert_eq!(redis_cli(peers.redis.addr(), &["GET", "slow:k"]), "y");

    let check = authz
        .seen()
        .into_iter()
        .find(|c| subject(c) == "deny:k")
        .expect("the check of SET deny:k");
    let ext = check.attributes.unwrap().context_extensions;
    assert_eq!(
        (
            ext["protocol"].as_str(),
            ext["redis.command"].as_str(),
            ext["redis.key"].as_str()
        ),
        ("redis", "SET", "deny:k")
    );
}

#[test]
fn mqtt_clients_to_mosquitto_allowed_denied_and_timed_out() {
    let authz = AuthzServer::start();
    let peers = Peers::start();
    let gw = gateway(authz.addr, &peers);
    let strict = gw.listener("strict");

    // CONNECT with a denied client id: not authorized (3.1.1: 5, 5: 0x87).
    for version in ["mqttv311", "mqttv5"] {
        let (ok, out) = mqtt_pub(strict, version, "deny-client", "a/b", "x");
        assert!(
            !ok && out.to_ascii_lowercase().contains("not authori"),
            "{version}: {out}"
        );
    }
    // A denied PUBLISH never reaches the broker; the allowed one after it does.
    let sub = mqtt_sub_one(&peers.mqtt, "watcher-1");
    let (_, out) = mqtt_pub(strict, "mqttv5", "client-1", "deny/t", "no");
    assert!(out.to_ascii_lowercase().contains("not authori"), "{out}");
    let (ok, out) = mqtt_pub(strict, "mqttv311", "client-1", "ok/t", "yes");
    assert!(ok, "{out}");
    let got = sub.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&got.stdout).trim(), "ok/t yes");

    // Timeout: `strict` refuses the CONNECT (server unavailable), `lenient`
    // lets it and its PUBLISH through.
    let (ok, out) = mqtt_pub(strict, "mqttv311", "slow-client", "a/b", "x");
    assert!(
        !ok && out.to_ascii_lowercase().contains("unavailable"),
        "{out}"
    );
    let sub = mqtt_sub_one(&peers.mqtt, "watcher-2");
    let (ok, out) = mqtt_pub(
        gw.listener("lenient"),
        "mqttv311",
        "slow-client",
        "a/b",
        "late",
    );
    assert!(ok, "{out}");
    let got = sub.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&got.stdout).trim(), "a/b late");

    let seen = authz.seen();
    let publish = seen
        .iter()
        .filter_map(|c| c.attributes.as_ref())
        .find(|a| a.context_extensions.get("mqtt.topic").map(String::as_str) == Some("deny/t"))
        .expect("the check of the PUBLISH to deny/t");
    assert_eq!(publish.context_extensions["protocol"], "mqtt");
    assert_eq!(publish.context_extensions["mqtt.client_id"], "client-1");
    let count = |verdict: &str| {
        gw.metric(
            "switchyard_ext_authz_checks_total",
            &[("scope", "listener:strict"), ("verdict", verdict)],
        )
    };
    assert!(count("denied") >= 3.0, "two CONNECTs and a PUBLISH");
    assert!(count("timeout") >= 1.0);
}

/// MySQL through the gateway's front end: the login and each statement are
/// checked; a denied login is ERR 1045 (access denied), a denied statement
/// ERR 1142 (command denied), as MariaDB words its own; a timed-out check
/// is refused (failure mode deny) on `strict` and let through on `lenient`.
#[test]
fn mariadb_cli_to_mariadb_login_and_statements_allowed_denied_and_timed_out() {
    use common::mariadb::{MariaDb, PROXY_PASSWORD, PROXY_USER, mariadb_cli};
    let authz = AuthzServer::start();
    let db = MariaDb::start();
    db.root("CREATE DATABASE deny_db; CREATE DATABASE slow_db; CREATE DATABASE app_db;");
    let listener = |name: &str, port: u16, allow: bool| {
        format!(
            "  - name: {name}
    address: 127.0.0.1:{port}
    protocol: mysql
    route_table: sql
    filters:
      - ext_authz: {{grpc: {{address: \"{service}\", timeout: 300ms}}, failure_mode_allow: {allow}}}
    mysql:
      users:
        - {{username: app, password: app-pw}}
        - {{username: deny_me, password: app-pw}}
",
            service = authz.addr
        )
    };
    let (strict, lenient) = (free_port(), free_port());
    let gw = Gateway::start(&format!(
        "admin:
  address: 127.0.0.1:{admin}
listeners:
{s}{l}route_tables:
  - name: sql
    virtual_hosts:
      - name: any
        domains: [\"*\"]
        routes:
          - cluster: primary
clusters:
  - name: primary
    hosts: [\"{primary}\"]
    mysql: {{user: {PROXY_USER}, password: {PROXY_PASSWORD}}}
",
        admin = free_port(),
        s = listener("strict", strict, false),
        l = listener("lenient", lenient, true),
        primary = db.addr(),
    ));
    let strict = gw.listener("strict");
    let cli = |addr, user: &str, schema: Option<&str>, sql: &str| {
        let out = mariadb_cli(addr, user, "app-pw", schema, sql);
        (
            out.status.success(),
            format!("{}{}", text(&out), String::from_utf8_lossy(&out.stderr)),
        )
    };

    let (ok, out) = cli(strict, "app", Some("app_db"), "SELECT 40 + 2");
    assert!(ok && out.trim() == "42", "allowed: {out}");
    let (ok, out) = cli(strict, "deny_me", None, "SELECT 1");
    assert!(
        !ok && out.contains("ERROR 1045 (28000)") && out.contains("denied by policy: deny_me"),
        "a denied login: {out}"
    );
    let (ok, out) = cli(strict, "app", None, "USE deny_db; SELECT 1");
    assert!(
        !ok && out.contains("ERROR 1142 (42000)") && out.contains("denied by policy"),
        "a denied statement: {out}"
    );
    let (ok, out) = cli(strict, "app", None, "USE slow_db; SELECT 1");
    assert!(
        !ok && out.contains("ERROR"),
        "a timed-out check, failure mode deny: {out}"
    );
    let (ok, out) = cli(gw.listener("lenient"), "app", None, "USE slow_db; SELECT 7");
    assert!(
        ok && out.trim() == "7",
        "a timed-out check, failure mode allow: {out}"
    );

    let check = authz
        .seen()
        .into_iter()
        .find(|c| subject(c).contains("deny_db"))
        .expect("the check of a statement in deny_db");
    let ext = check.attributes.unwrap().context_extensions;
    assert_eq!(
        (
            ext["protocol"].as_str(),
            ext["mysql.user"].as_str(),
            ext["mysql.schema"].as_str()
        ),
        ("mysql", "app", "deny_db")
    );
}
