//! TLS to upstreams (`clusters[].tls`), each against a real TLS server
//! spawned privately with certificates the test makes (openssl): nginx with
//! `ssl` (server verified with a CA file, by SNI name or by IP address; a
//! wrong CA or a wrong name refused with a log line that says why), nginx
//! with `ssl_verify_client on` (mutual TLS), nginx with `ssl http2` and a
//! grpcio server with TLS (ALPN h2: the gateway speaks HTTP/2 upstream), redis-server with `--tls-port`
//! and client certificates, mosquitto with a TLS listener, MariaDB with SSL
//! (the in-protocol SSLRequest), and active health checks over TLS. Clients
//! are curl, redis-cli, mosquitto_pub/sub and the mariadb CLI.

mod common;

use std::process::Command;
use std::time::Duration;

use common::pki::Pki;
use common::*;

/// A gateway with one `protocol` listener; `routes` (YAML flow mappings)
/// and `clusters` (YAML list items) are written as given.
fn gateway(protocol: &str, routes: &[String], clusters: &str) -> Gateway {
    let ports = Ports::new();
    let routes: Vec<String> = routes
        .iter()
        .map(|r| format!("          - {r}\n"))
        .collect();
    Gateway::start(&format!(
        "admin:\n  address: 127.0.0.1:{admin}\nlisteners:\n  - name: front\n    address: 127.0.0.1:{listen}\n    protocols: [{protocol}]\n    route_table: all\nroute_tables:\n  - name: all\n    virtual_hosts:\n      - name: any\n        domains: [\"*\"]\n        routes:\n{routes}clusters:\n{clusters}",
        admin = ports.admin,
        listen = ports.listen,
        routes = routes.concat(),
    ))
}

/// One cluster `name` of host `host` with `tls: {tls}`.
fn cluster(name: &str, host: std::net::SocketAddr, tls: &str) -> String {
    format!("  - {{name: {name}, failover: false, hosts: [\"{host}\"], tls: {{{tls}}}}}\n")
}

/// `GET url` with curl (HTTP/1.1): (status, body).
fn curl(url: &str) -> (u16, String) {
    let out = Command::new(require("curl"))
        .args(["-s", "--max-time", "10", "-w", "\n%{http_code}", url])
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (status.trim().parse().unwrap_or(0), body.to_owned())
}

/// nginx over TLS with the test's server certificate, answering every
/// request with what it saw of it: `<protocol> sni=<name> client=<subject>`.
/// `listen_opts` after `ssl` (e.g. ` http2`), `extra` into `http {}`.
fn nginx_tls(pki: &Pki, listen_opts: &str, extra: &str) -> Nginx {
    Nginx::start_with(
        &[],
        &format!(" ssl{listen_opts}"),
        &format!(
            "ssl_certificate {}; ssl_certificate_key {}; {extra}",
            pki.file("server.pem"),
            pki.file("server.key")
        ),
        "default_type text/plain; \
         return 200 \"$server_protocol sni=$ssl_server_name client=$ssl_client_s_dn\";",
    )
}

fn prefix_route(prefix: &str, cluster: &str) -> String {
    format!("{{match: {{path_prefix: /{prefix}/}}, cluster: {cluster}}}")
}

/// The server is verified with the CA file, by the SNI name or (no `sni`)
/// by its IP address; a certificate from another CA, or one that does not
/// hold the SNI name, is refused: the client gets a gateway error, the log
/// says why, and the failure counts as a failed connect.
#[test]
fn http1_to_nginx_over_tls_verifies_the_server() {
    let pki = Pki::new();
    let nginx = nginx_tls(&pki, "", "");
    let ca = pki.file("ca.pem");
    let other = pki.file("other-ca.pem");
    let host = nginx.addr();
    let clusters = [
        cluster("named", host, &format!("ca: {ca}, sni: upstream.test")),
        cluster("by_ip", host, &format!("ca: {ca}")),
        cluster(
            "wrong_ca",
            host,
            &format!("ca: {other}, sni: upstream.test"),
        ),
        cluster("wrong_name", host, &format!("ca: {ca}, sni: other.test")),
        cluster(
            "unchecked",
            host,
            "insecure_skip_verify: true, sni: upstream.test",
        ),
    ];
    let routes: Vec<String> = ["named", "by_ip", "wrong_ca", "wrong_name", "unchecked"]
        .iter()
        .map(|c| prefix_route(c, c))
        .collect();
    let gw = gateway("http1", &routes, &clusters.concat());

    for _ in 0..3 {
        assert_eq!(
            curl(&gw.url("/named/x")),
            (200, "HTTP/1.1 sni=upstream.test client=".to_owned())
        );
    }
    // No `sni`: none is sent, and the certificate's IP address is checked.
    assert_eq!(
        curl(&gw.url("/by_ip/x")),
        (200, "HTTP/1.1 sni= client=".to_owned())
    );
    assert_eq!(
        curl(&gw.url("/unchecked/x")),
        (200, "HTTP/1.1 sni=upstream.test client=".to_owned())
    );

    for bad in ["wrong_ca", "wrong_name"] {
        let (status, body) = curl(&gw.url(&format!("/{bad}/x")));
        assert!(status == 502 || status == 503, "{bad}: {status} {body}");
        assert!(
            gw.metric(
                "switchyard_upstream_connect_failures_total",
                &[("cluster", bad)]
            ) >= 1.0,
            "{bad}: a failed handshake is a failed connect\n{}",
            gw.metrics()
        );
    }
    let log = gw.log();
    let line = |cluster: &str| {
        log.lines()
            .find(|l| l.contains("TLS handshake") && l.contains(&format!("cluster {cluster}")))
            .unwrap_or_else(|| panic!("no handshake failure logged for {cluster}:\n{log}"))
            .to_owned()
    };
    assert!(line("wrong_ca").contains("UnknownIssuer"), "{log}");
    let wrong_name = line("wrong_name");
    assert!(
        wrong_name.contains("server name other.test"),
        "{wrong_name}"
    );
    assert!(
        wrong_name.contains("certificate not valid for name"),
        "{wrong_name}"
    );
}

/// nginx with `ssl_verify_client on`: the cluster with the client
/// certificate gets through (nginx saw its subject), the one without is
/// refused by nginx.
#[test]
fn mutual_tls_with_a_client_certificate() {
    let pki = Pki::new();
    let nginx = nginx_tls(
        &pki,
        "",
        &format!(
            "ssl_client_certificate {}; ssl_verify_client on;",
            pki.file("ca.pem")
        ),
    );
    let ca = pki.file("ca.pem");
    let clusters = [
        cluster(
            "with_cert",
            nginx.addr(),
            &format!(
                "ca: {ca}, sni: upstream.test, cert: {}, key: {}",
                pki.file("client.pem"),
                pki.file("client.key")
            ),
        ),
        cluster(
            "without_cert",
            nginx.addr(),
            &format!("ca: {ca}, sni: upstream.test"),
        ),
    ];
    let routes = [
        prefix_route("with_cert", "with_cert"),
        prefix_route("without_cert", "without_cert"),
    ];
    let gw = gateway("http1", &routes, &clusters.concat());
    assert_eq!(
        curl(&gw.url("/with_cert/x")),
        (
            200,
            "HTTP/1.1 sni=upstream.test client=CN=gateway".to_owned()
        )
    );
    let (status, body) = curl(&gw.url("/without_cert/x"));
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("No required SSL certificate was sent"),
        "{body}"
    );
}

/// ALPN: a cluster offering only `h2` speaks HTTP/2 to nginx (`ssl http2`)
/// whatever the client spoke; one offering both with `protocol: http2`
/// too, and one with `protocol: http2` and no `alpn` (h2 offered for it);
/// one with neither forwards the request's own HTTP/1.1.
#[test]
fn alpn_h2_speaks_http2_to_the_upstream() {
    let pki = Pki::new();
    let nginx = nginx_tls(&pki, " http2", "");
    let ca = pki.file("ca.pem");
    let clusters = [
        cluster("h2", nginx.addr(), &format!("ca: {ca}, alpn: [h2]")),
        format!(
            "  - {{name: both, protocol: http2, hosts: [\"{}\"], tls: {{ca: {ca}, alpn: [h2, http/1.1]}}}}\n",
            nginx.addr()
        ),
        cluster("none", nginx.addr(), &format!("ca: {ca}")),
        format!(
            "  - {{name: implied, protocol: http2, hosts: [\"{}\"], tls: {{ca: {ca}}}}}\n",
            nginx.addr()
        ),
    ];
    let routes = [
        prefix_route("h2", "h2"),
        prefix_route("both", "both"),
        prefix_route("none", "none"),
        prefix_route("implied", "implied"),
    ];
    let gw = gateway("http1", &routes, &clusters.concat());
    for _ in 0..3 {
        assert_eq!(
            curl(&gw.url("/h2/x")),
            (200, "HTTP/2.0 sni= client=".to_owned())
        );
    }
    assert_eq!(
        curl(&gw.url("/both/x")),
        (200, "HTTP/2.0 sni= client=".to_owned())
    );
    // `protocol: http2` with no `alpn` offers h2 (nginx needs it for HTTP/2 over TLS).
    assert_eq!(
        curl(&gw.url("/implied/x")),
        (200, "HTTP/2.0 sni= client=".to_owned())
    );
    assert_eq!(
        curl(&gw.url("/none/x")),
        (200, "HTTP/1.1 sni= client=".to_owned())
    );
}

/// gRPC over TLS: a grpcio server with TLS only, a grpcio client speaking
/// h2c to the gateway, whose cluster offers `h2` over TLS.
#[test]
fn grpc_over_tls_to_a_grpcio_server() {
    let pki = Pki::new();
    let python = require("python3");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/grpc_peer.py");
    let port = free_port();
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut server = Killed(
        Command::new(&python)
            .arg(&script)
            .args(["server", &port.to_string()])
            .env("GRPC_PEER_TLS_CERT", pki.path("server.pem"))
            .env("GRPC_PEER_TLS_KEY", pki.path("server.key"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("spawn grpc_peer.py server (python3 with grpcio: .ci/run installs it)"),
    );
    wait_for("the grpcio TLS server", WAIT, || {
        if let Ok(Some(status)) = server.0.try_wait() {
            panic!("grpc_peer.py server exited with {status}");
        }
        std::net::TcpStream::connect(local(port)).ok()
    });
    let gw = gateway(
        "http2",
        &["{cluster: grpc}".to_owned()],
        &cluster(
            "grpc",
            local(port),
            &format!("ca: {}, sni: upstream.test, alpn: [h2]", pki.file("ca.pem")),
        ),
    );
    let call = |method: &str, arg: &str| {
        let out = Command::new(&python)
            .arg(&script)
            .args(["call", &gw.addr().to_string(), method, arg, "10"])
            .output()
            .expect("run grpc_peer.py call");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let unary = call("Unary", "over-tls");
    assert!(unary.contains("\"code\": \"OK\""), "{unary}\n{}", gw.log());
    assert!(
        unary.contains("\"responses\": [\"echo:over-tls\"]"),
        "{unary}"
    );
    assert!(unary.contains("\"x-served-by\": \"python\""), "{unary}");
    let streamed = call("Stream", "3");
    assert!(
        streamed.contains("\"responses\": [\"msg-0\", \"msg-1\", \"msg-2\"]"),
        "{streamed}"
    );
}

fn redis_cli(addr: std::net::SocketAddr, args: &[&str]) -> String {
    let out = Command::new(require("redis-cli"))
        .args(["-h", "127.0.0.1", "-p", &addr.port().to_string()])
        .args(args)
        .output()
        .expect("run redis-cli");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// redis-server serving TLS only to clients with a certificate
/// (`--tls-auth-clients yes`): redis-cli through the gateway reads and
/// writes over the cluster's TLS with the client certificate.
#[test]
fn redis_over_tls_with_a_client_certificate() {
    let pki = Pki::new();
    let tls_port = free_port();
    let redis = RedisServer::start_with(&[
        "--tls-port",
        &tls_port.to_string(),
        "--tls-cert-file",
        &pki.file("server.pem"),
        "--tls-key-file",
        &pki.file("server.key"),
        "--tls-ca-cert-file",
        &pki.file("ca.pem"),
        "--tls-auth-clients",
        "yes",
    ]);
    let gw = gateway(
        "redis",
        &["{cluster: up}".to_owned()],
        &cluster(
            "up",
            local(tls_port),
            &format!(
                "ca: {}, sni: upstream.test, cert: {}, key: {}",
                pki.file("ca.pem"),
                pki.file("client.pem"),
                pki.file("client.key")
            ),
        ),
    );
    assert_eq!(redis_cli(gw.addr(), &["SET", "tls:key", "over-tls"]), "OK");
    assert_eq!(redis_cli(gw.addr(), &["GET", "tls:key"]), "over-tls");
    // The value is in the server (read on its plain port, not through TLS).
    assert_eq!(redis_cli(redis.addr(), &["GET", "tls:key"]), "over-tls");
}

/// mosquitto with a TLS listener: a subscriber and a publisher through the
/// gateway, whose cluster knows only the TLS port.
#[test]
fn mqtt_over_tls_to_mosquitto() {
    let pki = Pki::new();
    let tls_port = free_port();
    let broker = Mosquitto::start_with(&format!(
        "listener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n",
        pki.file("ca.pem"),
        pki.file("server.pem"),
        pki.file("server.key")
    ));
    let gw = gateway(
        "mqtt",
        &["{cluster: up}".to_owned()],
        &cluster(
            "up",
            local(tls_port),
            &format!("ca: {}, sni: upstream.test", pki.file("ca.pem")),
        ),
    );
    let port = gw.addr().port().to_string();
    let sub = Command::new(require("mosquitto_sub"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-t",
            "tls/t",
            "-C",
            "1",
            "-W",
            "15",
        ])
        .args(["-i", "tls-sub", "-q", "1"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn mosquitto_sub");
    // The subscription is in place once the broker logged it.
    wait_for(
        "the subscriber to subscribe",
        Duration::from_secs(10),
        || broker.log().contains("tls-sub 1 tls/t").then_some(()),
    );
    let status = Command::new(require("mosquitto_pub"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-t",
            "tls/t",
            "-m",
            "hello over tls",
        ])
        .args(["-i", "tls-pub", "-q", "1"])
        .status()
        .expect("run mosquitto_pub");
    assert!(status.success());
    let out = sub.wait_with_output().expect("mosquitto_sub output");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "hello over tls"
    );
    // Both clients reached the broker on its TLS listener.
    let log = broker.log();
    let on_tls = log
        .lines()
        .filter(|l| l.contains("New connection from") && l.contains(&format!("on port {tls_port}")))
        .count();
    assert!(on_tls >= 2, "{log}");
}

/// MariaDB with SSL, the gateway's account `REQUIRE SSL`: the gateway
/// answers the greeting with an SSLRequest, does TLS, then logs in; the
/// backend session it runs the client's statements on is encrypted.
#[test]
fn mysql_over_tls_to_mariadb() {
    use common::mariadb::{MariaDb, PROXY_PASSWORD, PROXY_USER, mariadb_cli};
    let pki = Pki::new();
    let db = MariaDb::start_with(&[
        format!("--ssl-cert={}", pki.file("server.pem")),
        format!("--ssl-key={}", pki.file("server.key")),
        format!("--ssl-ca={}", pki.file("ca.pem")),
    ]);
    db.root(&format!("ALTER USER '{PROXY_USER}'@'%' REQUIRE SSL;"));
    let ports = Ports::new();
    let gw = Gateway::start(&format!(
        "admin: {{address: \"127.0.0.1:{admin}\"}}\n\
         listeners:\n  - name: db\n    address: \"127.0.0.1:{port}\"\n    protocol: mysql\n    route_table: sql\n\
         \x20   mysql:\n      users:\n        - {{username: app, password: app-pw}}\n\
         route_tables:\n  - name: sql\n    virtual_hosts:\n      - name: any\n        domains: [\"*\"]\n        routes:\n          - cluster: primary\n\
         clusters:\n  - name: primary\n    hosts: [\"{host}\"]\n    mysql: {{user: {PROXY_USER}, password: {PROXY_PASSWORD}}}\n\
         \x20   tls: {{ca: {ca}, sni: upstream.test}}\n",
        admin = ports.admin,
        port = ports.listen,
        host = db.addr(),
        ca = pki.file("ca.pem"),
    ));
    let out = mariadb_cli(
        gw.addr(),
        "app",
        "app-pw",
        None,
        "SELECT CURRENT_USER(); SHOW SESSION STATUS LIKE 'Ssl_version';",
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        gw.log()
    );
    assert!(text.contains(&format!("{PROXY_USER}@%")), "{text}");
    assert!(text.contains("Ssl_version\tTLSv1."), "{text}");
}

/// Active health checks speak the cluster's TLS: a host whose certificate
/// verifies stays available, one checked with the wrong CA is taken out.
#[test]
fn health_checks_use_the_clusters_tls() {
    let pki = Pki::new();
    let nginx = nginx_tls(&pki, "", "");
    let check = "health_check: {kind: http, path: /, interval: 200ms, timeout: 1s, unhealthy_threshold: 2, healthy_threshold: 1}";
    let clusters = [
        format!(
            "  - {{name: good, hosts: [\"{}\"], tls: {{ca: {}}}, {check}}}\n",
            nginx.addr(),
            pki.file("ca.pem")
        ),
        format!(
            "  - {{name: bad, hosts: [\"{}\"], tls: {{ca: {}}}, {check}}}\n",
            nginx.addr(),
            pki.file("other-ca.pem")
        ),
    ];
    let routes = [prefix_route("good", "good"), prefix_route("bad", "bad")];
    let gw = gateway("http1", &routes, &clusters.concat());
    let health = |cluster: &str| {
        let (status, body) = http_get(gw.admin, "/clusters").expect("admin /clusters");
        assert_eq!(status, 200, "{body}");
        let all: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        all["clusters"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["name"] == cluster))
            .map(|c| c["hosts"][0]["health"].clone())
            .unwrap_or_else(|| panic!("cluster {cluster} in {body}"))
    };
    wait_for(
        "the bad cluster's host to fail its checks",
        Duration::from_secs(30),
        || (health("bad")["failing_active_checks"] == true).then_some(()),
    );
    let good = health("good");
    assert_eq!(good["failing_active_checks"], false, "{good}");
    assert!(good["check_passes_in_row"].as_u64() >= Some(1), "{good}");
    assert_eq!(curl(&gw.url("/good/x")).0, 200);
}

/// `switchyard check`: a TLS file that cannot be read names the cluster's
/// field and the file; `insecure_skip_verify` passes with a loud warning.
#[test]
fn check_names_tls_files_and_warns_when_verification_is_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let check = |tls: &str| {
        let path = dir.path().join("switchyard.yaml");
        std::fs::write(
            &path,
            format!(
                "listeners: [{{name: l, address: \"127.0.0.1:1\", protocols: [http1], route_table: t}}]\n\
                 route_tables: [{{name: t, virtual_hosts: [{{name: a, domains: [\"*\"], routes: [{{cluster: c}}]}}]}}]\n\
                 clusters:\n  - name: c\n    hosts: [\"127.0.0.1:2\"]\n    tls: {tls}\n"
            ),
        )
        .unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .arg("check")
            .arg(&path)
            .output()
            .expect("run switchyard check");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, err) = check("{ca: missing-ca.pem}");
    assert!(!ok, "{err}");
    assert!(err.contains("switchyard.yaml:6:"), "{err}");
    assert!(err.contains("clusters[c].tls.ca"), "{err}");
    assert!(err.contains("missing-ca.pem"), "{err}");

    let (ok, err) = check("{cert: client.pem}");
    assert!(!ok, "{err}");
    assert!(err.contains("clusters[c].tls.key"), "{err}");

    let (ok, err) = check("{min_version: \"1.1\"}");
    assert!(!ok, "{err}");
    assert!(err.contains("clusters[c].tls.min_version"), "{err}");

    let (ok, err) = check("{alpn: [h2, http/1.1]}");
    assert!(!ok, "{err}");
    assert!(err.contains("clusters[c].tls.alpn"), "{err}");

    let (ok, err) = check("{insecure_skip_verify: true}");
    assert!(ok, "{err}");
    assert!(err.contains("warning"), "{err}");
    assert!(
        err.contains("clusters[c].tls.insecure_skip_verify"),
        "{err}"
    );
    assert!(err.contains("accepts ANY server certificate"), "{err}");
}
