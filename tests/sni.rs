//! SNI: several certificates on one TLS listener, chosen by the server name
//! the client sends, and certificate files reloaded when they change. Real
//! clients: `openssl s_client -servername` (what certificate each name
//! gets), curl with `--resolve` and `--cacert` (a client that verifies the
//! name), and a rustls client that keeps its connection open across a
//! rotation.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use common::pki::Pki;
use common::*;

/// `openssl x509` facts of a PEM file of `pki`: (serial, subject, notAfter).
fn facts(pki: &Pki, file: &str) -> Seen {
    let pem = std::fs::read(pki.path(file)).unwrap();
    x509_facts(&pem).expect("a certificate")
}

/// What a client saw of a server certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    serial: String,
    subject: String,
    not_after: String,
}

/// Serial, subject and notAfter of the first PEM certificate in `text`.
fn x509_facts(text: &[u8]) -> Option<Seen> {
    let mut child = Command::new(require("openssl"))
        .args(["x509", "-noout", "-serial", "-subject", "-enddate"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run openssl x509");
    // A write error (openssl gave up early) shows in its exit status.
    let _ = child.stdin.take().unwrap().write_all(text);
    let out = child.wait_with_output().expect("openssl x509");
    if !out.status.success() {
        return None;
    }
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |k: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.trim().to_owned())
    };
    Some(Seen {
        serial: field("serial=")?,
        subject: field("subject=")?.replace(' ', ""),
        not_after: field("notAfter=")?,
    })
}

/// Handshake with `openssl s_client` (with `-servername NAME`, or with no
/// SNI at all): the certificate served, or the client's whole output when
/// the handshake failed.
fn s_client(addr: SocketAddr, server_name: Option<&str>) -> Result<Seen, String> {
    let mut cmd = Command::new(require("openssl"));
    cmd.args(["s_client", "-connect", &addr.to_string()]);
    match server_name {
        Some(n) => cmd.args(["-servername", n]),
        None => cmd.arg("-noservername"),
    };
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .expect("run openssl s_client");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    x509_facts(&out.stdout).ok_or(text)
}

/// `curl https://NAME:PORT/` resolved to the gateway, verifying the
/// certificate against the test CA: (exit code, body, stderr).
fn curl(pki: &Pki, addr: SocketAddr, name: &str) -> (i32, String, String) {
    let out = Command::new(require("curl"))
        .args([
            "-sS",
            "--max-time",
            "10",
            "--cacert",
            &pki.file("ca.pem"),
            "--resolve",
            &format!("{name}:{}:127.0.0.1", addr.port()),
            &format!("https://{name}:{}/", addr.port()),
        ])
        .output()
        .expect("run curl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A gateway with one TLS listener (HTTP/1, answered by the gateway itself
/// with the Host it was asked for) and these `tls` fields.
fn gateway(tls: &str, extra_listener: &str) -> Gateway {
    let ports = Ports::new();
    Gateway::start(&format!(
        "admin:\n  address: 127.0.0.1:{admin}\nlisteners:\n  - name: edge\n    address: 127.0.0.1:{listen}\n    protocols: [http1]\n    route_table: main\n    tls: {{{tls}}}\n{extra_listener}route_tables:\n  - name: main\n    virtual_hosts:\n      - name: any\n        domains: [\"*\"]\n        routes:\n          - direct_response: {{status: 200, body: served}}\n",
        admin = ports.admin,
        listen = ports.listen,
    ))
}

fn three_names(pki: &Pki) -> String {
    format!(
        "cert: \"{}\", key: \"{}\", certificates: [{{server_names: [a.example], cert: \"{}\", key: \"{}\"}}, {{server_names: [\"*.b.example\"], cert: \"{}\", key: \"{}\"}}]",
        pki.file("default.pem"),
        pki.file("default.key"),
        pki.file("a.pem"),
        pki.file("a.key"),
        pki.file("b.pem"),
        pki.file("b.key"),
    )
}

fn issue_three(pki: &Pki) {
    pki.issue("default", "default.example", &["default.example"], 2);
    pki.issue("a", "a.example", &["a.example"], 2);
    pki.issue("b", "wild.b.example", &["*.b.example"], 2);
}

#[test]
fn each_server_name_gets_its_certificate() {
    let pki = Pki::new();
    issue_three(&pki);
    let gw = gateway(&three_names(&pki), "");
    let addr = gw.addr();
    let (default, a, b) = (
        facts(&pki, "default.pem"),
        facts(&pki, "a.pem"),
        facts(&pki, "b.pem"),
    );

    assert_eq!(s_client(addr, Some("a.example")).unwrap(), a);
    // A wildcard covers one label, in any case.
    assert_eq!(s_client(addr, Some("x.b.example")).unwrap(), b);
    assert_eq!(s_client(addr, Some("Other.B.Example")).unwrap(), b);
    // Two labels, the bare domain, an unknown name and no SNI: the default.
    assert_eq!(s_client(addr, Some("y.x.b.example")).unwrap(), default);
    assert_eq!(s_client(addr, Some("b.example")).unwrap(), default);
    assert_eq!(s_client(addr, Some("unknown.example")).unwrap(), default);
    assert_eq!(s_client(addr, None).unwrap(), default);

    // Clients that verify the name against the CA are served end to end.
    for name in ["a.example", "x.b.example", "default.example"] {
        let (code, body, err) = curl(&pki, addr, name);
        assert_eq!((code, body.as_str()), (0, "served"), "{name}: {err}");
    }
    // And the one the default certificate does not cover is refused by curl.
    let (code, _, err) = curl(&pki, addr, "unknown.example");
    assert_eq!(
        code, 60,
        "curl should not trust the default cert for this name: {err}"
    );

    // The admin API lists each certificate with its names and validity.
    let (status, body) = gw.admin_get("/listeners");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let certs = v["listeners"][0]["certificates"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(certs.len(), 3, "{body}");
    assert_eq!(certs[0]["default"], true);
    assert_eq!(certs[1]["server_names"], serde_json::json!(["a.example"]));
    assert_eq!(certs[1]["serial"], a.serial.as_str());
    assert_eq!(certs[2]["dns_names"], serde_json::json!(["*.b.example"]));
    assert!(
        certs[2]["not_after"].as_str().unwrap().ends_with('Z'),
        "{body}"
    );
}

#[test]
fn without_a_default_an_unknown_name_gets_unrecognized_name() {
    let pki = Pki::new();
    issue_three(&pki);
    let tls = format!(
        "certificates: [{{server_names: [a.example], cert: \"{}\", key: \"{}\"}}]",
        pki.file("a.pem"),
        pki.file("a.key")
    );
    let gw = gateway(&tls, "");
    let addr = gw.addr();
    assert_eq!(
        s_client(addr, Some("a.example")).unwrap(),
        facts(&pki, "a.pem")
    );
    let (code, body, err) = curl(&pki, addr, "a.example");
    assert_eq!((code, body.as_str()), (0, "served"), "{err}");

    for name in [Some("nope.example"), None] {
        let out = s_client(addr, name).expect_err("no certificate should be served");
        assert!(
            out.contains("unrecognized name"),
            "{name:?}: expected an unrecognized_name alert:\n{out}"
        );
    }
    let (code, _, err) = curl(&pki, addr, "nope.example");
    assert_ne!(code, 0);
    assert!(err.contains("unrecognized name"), "{err}");
}

#[test]
fn the_access_log_names_the_server_name() {
    let pki = Pki::new();
    issue_three(&pki);
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("access.log");
    let gw = gateway(
        &three_names(&pki),
        &format!(
            "    access_log: {{path: \"{}\", fields: [sni, host, status]}}\n",
            log.display()
        ),
    );
    let (code, _, err) = curl(&pki, gw.addr(), "x.b.example");
    assert_eq!(code, 0, "{err}");
    let line = wait_for("the access log line", WAIT, || {
        let text = std::fs::read_to_string(&log).ok()?;
        text.lines().next().map(str::to_owned)
    });
    assert_eq!(
        line,
        format!(
            "sni=x.b.example host=x.b.example:{} status=200",
            gw.addr().port()
        )
    );
}

/// A TLS client that keeps its connection: rustls, trusting the test CA.
struct KeptConnection {
    tls: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
}

impl KeptConnection {
    fn open(pki: &Pki, addr: SocketAddr, name: &str) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(pki.path("ca.pem")).unwrap();
        for c in rustls_pemfile_certs(&pem) {
            roots.add(c).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let conn = rustls::ClientConnection::new(
            Arc::new(config),
            rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap(),
        )
        .unwrap();
        let tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(WAIT)).unwrap();
        KeptConnection {
            tls: rustls::StreamOwned::new(conn, tcp),
        }
    }

    /// One keep-alive request; the response's body.
    fn get(&mut self, host: &str) -> String {
        write!(self.tls, "GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").unwrap();
        self.tls.flush().unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            let n = self.tls.read(&mut buf).expect("read a response");
            assert!(n > 0, "the connection closed");
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap();
                if body.len() >= len {
                    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
                    return body.to_owned();
                }
            }
        }
    }

    /// The serial of the certificate this connection was served, as openssl prints it.
    fn serial(&self) -> String {
        let der = self.tls.conn.peer_certificates().unwrap()[0]
            .as_ref()
            .to_vec();
        let pem = format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            base64(&der)
        );
        x509_facts(pem.as_bytes()).unwrap().serial
    }
}

fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .unwrap()
}

fn base64(bytes: &[u8]) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Replace `to` by `from` with a rename, as certbot and cert-manager do.
fn rename_over(from: &Path, to: &Path) {
    std::fs::rename(from, to).unwrap();
}

#[test]
fn a_rotated_certificate_is_served_to_new_connections_and_a_broken_one_is_not() {
    let pki = Pki::new();
    issue_three(&pki);
    let tls = format!("{}, check_interval: 100ms", three_names(&pki));
    let gw = gateway(&tls, "");
    let addr = gw.addr();
    let first = facts(&pki, "a.pem");
    let mut kept = KeptConnection::open(&pki, addr, "a.example");
    assert_eq!(kept.get("a.example"), "served");
    assert_eq!(kept.serial(), first.serial);

    // A renewal: a new key and certificate, longer valid, moved into place.
    pki.issue("a-new", "a.example", &["a.example"], 30);
    let renewed = facts(&pki, "a-new.pem");
    assert_ne!(renewed.serial, first.serial);
    assert_ne!(renewed.not_after, first.not_after);
    rename_over(&pki.path("a-new.key"), &pki.path("a.key"));
    rename_over(&pki.path("a-new.pem"), &pki.path("a.pem"));
    wait_for("the renewed certificate to be served", WAIT, || {
        (s_client(addr, Some("a.example")).ok()? == renewed).then_some(())
    });
    assert_eq!(
        gw.metric(
            "switchyard_tls_cert_reloads_total",
            &[("listener", "edge"), ("result", "ok")]
        ),
        1.0
    );
    // The connection opened before keeps working on its certificate.
    assert_eq!(kept.get("a.example"), "served");
    assert_eq!(kept.serial(), first.serial);
    // New clients verify the new one.
    let (code, body, err) = curl(&pki, addr, "a.example");
    assert_eq!((code, body.as_str()), (0, "served"), "{err}");
    // Other names were not touched.
    assert_eq!(
        s_client(addr, Some("x.b.example")).unwrap(),
        facts(&pki, "b.pem")
    );

    // A broken replacement: a key that is not the certificate's.
    std::fs::copy(pki.path("b.key"), pki.path("wrong.key")).unwrap();
    rename_over(&pki.path("wrong.key"), &pki.path("a.key"));
    wait_for("the failed reload to be counted", WAIT, || {
        let n = gw.metric(
            "switchyard_tls_cert_reloads_total",
            &[("listener", "edge"), ("result", "error")],
        );
        (n >= 1.0).then_some(())
    });
    let log = gw.log();
    assert!(
        log.contains("TLS certificate reload failed") && log.contains(&pki.file("a.key")),
        "the error names the key file:\n{log}"
    );
    assert_eq!(s_client(addr, Some("a.example")).unwrap(), renewed);
    let (code, body, err) = curl(&pki, addr, "a.example");
    assert_eq!((code, body.as_str()), (0, "served"), "{err}");
    // An unparsable certificate likewise keeps the one served.
    std::fs::write(pki.path("garbage.pem"), "not a certificate\n").unwrap();
    rename_over(&pki.path("garbage.pem"), &pki.path("b.pem"));
    wait_for("the second failed reload to be counted", WAIT, || {
        let n = gw.metric(
            "switchyard_tls_cert_reloads_total",
            &[("listener", "edge"), ("result", "error")],
        );
        (n >= 2.0).then_some(())
    });
    assert_eq!(
        s_client(addr, Some("x.b.example")).unwrap().subject,
        "CN=wild.b.example"
    );
    assert_eq!(kept.get("a.example"), "served");
}

#[test]
fn sighup_reloads_the_certificates_too() {
    let pki = Pki::new();
    issue_three(&pki);
    // No polling: only a reload reads the files.
    let tls = format!("{}, check_interval: 0s", three_names(&pki));
    let gw = gateway(&tls, "");
    let addr = gw.addr();
    pki.issue("a-new", "a.example", &["a.example"], 30);
    let renewed = facts(&pki, "a-new.pem");
    rename_over(&pki.path("a-new.key"), &pki.path("a.key"));
    rename_over(&pki.path("a-new.pem"), &pki.path("a.pem"));
    gw.signal("HUP");
    wait_for("the renewed certificate after SIGHUP", WAIT, || {
        (s_client(addr, Some("a.example")).ok()? == renewed).then_some(())
    });
}

fn check(yaml: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchyard.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("check")
        .arg(&path)
        .output()
        .expect("run switchyard check");
    (
        out.status.code().unwrap(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn check_config(tls: &str) -> String {
    format!(
        "admin:\n  address: 127.0.0.1:1\nlisteners:\n  - name: edge\n    address: 127.0.0.1:2\n    protocols: [http1]\n    route_table: main\n    tls:\n{tls}route_tables:\n  - name: main\n    virtual_hosts: []\n"
    )
}

#[test]
fn check_warns_of_a_certificate_not_valid_for_its_names_and_refuses_duplicates() {
    let pki = Pki::new();
    issue_three(&pki);
    let tls = format!(
        "      certificates:\n        - server_names: [a.example, c.example]\n          cert: \"{}\"\n          key: \"{}\"\n        - server_names: [\"*.b.example\"]\n          cert: \"{}\"\n          key: \"{}\"\n",
        pki.file("a.pem"),
        pki.file("a.key"),
        pki.file("b.pem"),
        pki.file("b.key")
    );
    let config = check_config(&tls);
    let (line, column) = config
        .lines()
        .enumerate()
        .find_map(|(i, l)| l.find("c.example").map(|c| (i + 1, c + 1)))
        .unwrap();
    let (code, out) = check(&config);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!(
            ":{line}:{column}: listeners[edge].tls.certificates[0].server_names[1]: warning:"
        )) && out.contains("not valid for `c.example`"),
        "{out}"
    );
    assert!(!out.contains("a.example`"), "a.example is covered: {out}");

    let dup = format!(
        "      certificates:\n        - server_names: [a.example]\n          cert: \"{}\"\n          key: \"{}\"\n        - server_names: [\"*.b.example\", A.example]\n          cert: \"{}\"\n          key: \"{}\"\n",
        pki.file("a.pem"),
        pki.file("a.key"),
        pki.file("b.pem"),
        pki.file("b.key")
    );
    let (code, out) = check(&check_config(&dup));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("listeners[edge].tls.certificates[1].server_names[1]")
            && out
                .contains("listed already, at listeners[edge].tls.certificates[0].server_names[0]"),
        "{out}"
    );

    // A key that does not fit names the key file and field.
    let mismatch = format!(
        "      cert: \"{}\"\n      key: \"{}\"\n",
        pki.file("a.pem"),
        pki.file("b.key")
    );
    let (code, out) = check(&check_config(&mismatch));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("listeners[edge].tls.key") && out.contains(&pki.file("b.key")),
        "{out}"
    );
}
