//! MQTT over TLS (client certificates as identity) and over WebSocket, with
//! real clients: mosquitto_pub/mosquitto_sub for TLS, MQTT.js (npm `mqtt`) for
//! WebSocket, through the gateway to a real mosquitto broker.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;

/// A CA, a server certificate for 127.0.0.1 and a client certificate whose
/// common name is `cn`, made with the openssl CLI.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new(client_cn: &str) -> Self {
        let openssl = require("openssl");
        let dir = tempfile::tempdir().expect("tempdir");
        let run = |args: &[&str]| {
            let out = Command::new(&openssl)
                .args(args)
                .current_dir(dir.path())
                .output()
                .expect("run openssl");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        run(&[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=Test CA",
            ],
        ]
        .concat());
        std::fs::write(
            dir.path().join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("client.ext"),
            "extendedKeyUsage=clientAuth\n",
        )
        .unwrap();
        for (name, subj, ext) in [
            ("server", "/CN=localhost", "server.ext"),
            ("client", &format!("/CN={client_cn}")[..], "client.ext"),
        ] {
            run(&[
                &["req"][..],
                &ec,
                &[
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.csr"),
                    "-subj",
                    subj,
                ],
            ]
            .concat());
            run(&[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{name}.pem"),
                "-days",
                "2",
                "-extfile",
                ext,
            ]);
        }
        Pki { dir }
    }

    fn path(&self, file: &str) -> String {
        self.dir.path().join(file).display().to_string()
    }
}

fn mosquitto_cli(bin: &str, args: &[&str]) -> Output {
    let mut child = Command::new(require(bin))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn a mosquitto client");
    wait_for(
        "the mosquitto client to finish",
        Duration::from_secs(15),
        || child.try_wait().ok().flatten(),
    );
    child.wait_with_output().expect("mosquitto client output")
}

/// Wait until `child` prints a line containing `needle` on stdout; returns
/// the lines read up to it. Later calls go on reading where this one stopped.
fn wait_line(lines: &std::sync::mpsc::Receiver<String>, needle: &str) -> String {
    let mut seen = String::new();
    loop {
        let line = lines
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("no line with {needle:?} within 10 s; got: {seen}"));
        seen.push_str(&line);
        seen.push('\n');
        if line.contains(needle) {
            return seen;
        }
    }
}

/// The child's stdout, line by line.
fn stdout_lines(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Subscribe in the background; returns the child printing `topic payload` lines.
fn mosquitto_sub(args: &[&str]) -> std::process::Child {
    Command::new(require("mosquitto_sub"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mosquitto_sub")
}

fn finish(child: std::process::Child) -> String {
    let mut child = child;
    wait_for(
        "the subscriber to get its message and exit",
        Duration::from_secs(15),
        || child.try_wait().ok().flatten(),
    );
    let out = child.wait_with_output().expect("subscriber output");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn tls_gateway(broker: &Mosquitto, pki: &Pki, password_file: &Path) -> Gateway {
    let admin = free_port();
    let port = free_port();
    Gateway::start(&format!(
        r#"
admin: {{address: "127.0.0.1:{admin}"}}
listeners:
  - name: iot
    address: "127.0.0.1:{port}"
    protocols: [mqtt]
    route_table: t
    tls: {{cert: "{cert}", key: "{key}", client_ca: "{ca}", alpn: [mqtt]}}
    mqtt:
      auth: {{enabled: true, password_file: "{pw}", client_cert_identity: true}}
      acl:
        default: deny
        rules: [{{verdict: allow, topics: ["devices/%u/#"]}}]
route_tables:
  - name: t
    virtual_hosts: [{{name: any, domains: ["*"], routes: [{{cluster: brokers}}]}}]
clusters:
  - {{name: brokers, hosts: ["{broker}"]}}
"#,
        cert = pki.path("server.pem"),
        key = pki.path("server.key"),
        ca = pki.path("ca.pem"),
        pw = password_file.display(),
        broker = broker.addr(),
    ))
}

fn password_file(dir: &Path, user: &str, pass: &str) -> PathBuf {
    let file = dir.join("passwd");
    let out = Command::new(require("mosquitto_passwd"))
        .args(["-c", "-b"])
        .arg(&file)
        .args([user, pass])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mosquitto_passwd: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    file
}

#[test]
fn tls_client_certificate_is_the_user_and_plain_clients_still_connect() {
    let broker = Mosquitto::start();
    let pki = Pki::new("sensor7");
    let pw = password_file(pki.dir.path(), "alice", "wonderland");
    let gw = tls_gateway(&broker, &pki, &pw);
    let port = gw.addr().port().to_string();
    let (ca, cert, key) = (
        pki.path("ca.pem"),
        pki.path("client.pem"),
        pki.path("client.key"),
    );
    let tls = |with_cert: bool| {
        let mut a = vec!["-h", "127.0.0.1", "-p", &port, "--cafile", &ca];
        if with_cert {
            a.extend(["--cert", &cert, "--key", &key]);
        }
        a
    };

    // The certificate's CN (sensor7) is the user: devices/sensor7/# is allowed.
    let sub = mosquitto_sub(
        &[
            &tls(true)[..],
            &[
                "-i",
                "sub7",
                "-t",
                "devices/sensor7/#",
                "-C",
                "1",
                "-v",
                "-W",
                "10",
            ],
        ]
        .concat(),
    );
    wait_for(
        "the TLS subscriber to be connected",
        Duration::from_secs(10),
        || broker.log().contains("sub7").then_some(()),
    );
    let out = mosquitto_cli(
        "mosquitto_pub",
        &[
            &tls(true)[..],
            &[
                "-i",
                "pub7",
                "-t",
                "devices/sensor7/temp",
                "-m",
                "21.5",
                "-q",
                "1",
            ],
        ]
        .concat(),
    );
    assert!(
        out.status.success(),
        "publish over TLS with a client certificate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = finish(sub);
    assert!(
        got.contains("devices/sensor7/temp 21.5"),
        "subscriber output: {got}"
    );

    // Another device's topic is denied for the certificate identity (v5: PUBACK 0x87).
    let out = mosquitto_cli(
        "mosquitto_pub",
        &[
            &tls(true)[..],
            &[
                "-V",
                "mqttv5",
                "-i",
                "pub7b",
                "-t",
                "devices/other/temp",
                "-m",
                "x",
                "-q",
                "1",
                "-d",
            ],
        ]
        .concat(),
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("135") || text.contains("Not authorized") || text.contains("not authorised"),
        "denied publish over TLS: {text}"
    );

    // Without a certificate, a password user over TLS is checked as usual.
    let out = mosquitto_cli(
        "mosquitto_pub",
        &[
            &tls(false)[..],
            &[
                "-i",
                "alice1",
                "-u",
                "alice",
                "-P",
                "wonderland",
                "-t",
                "devices/alice/x",
                "-m",
                "hi",
            ],
        ]
        .concat(),
    );
    assert!(
        out.status.success(),
        "password user over TLS: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = mosquitto_cli(
        "mosquitto_pub",
        &[
            &tls(false)[..],
            &[
                "-i",
                "alice2",
                "-u",
                "alice",
                "-P",
                "wrong",
                "-t",
                "devices/alice/x",
                "-m",
                "hi",
            ],
        ]
        .concat(),
    );
    assert!(
        !out.status.success(),
        "a wrong password over TLS must be refused"
    );

    // A plain-TCP client on the same port still works (TLS is detected, not required).
    let out = mosquitto_cli(
        "mosquitto_pub",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-i",
            "plain1",
            "-u",
            "alice",
            "-P",
            "wonderland",
            "-t",
            "devices/alice/y",
            "-m",
            "plain",
        ],
    );
    assert!(
        out.status.success(),
        "plain client on the TLS port: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn tls_refuses_a_certificate_from_an_unknown_ca() {
    let broker = Mosquitto::start();
    let pki = Pki::new("sensor7");
    let rogue = Pki::new("sensor7");
    let pw = password_file(pki.dir.path(), "alice", "wonderland");
    let gw = tls_gateway(&broker, &pki, &pw);
    let port = gw.addr().port().to_string();
    let out = mosquitto_cli(
        "mosquitto_pub",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "--cafile",
            &pki.path("ca.pem"),
            "--cert",
            &rogue.path("client.pem"),
            "--key",
            &rogue.path("client.key"),
            "-i",
            "rogue",
            "-t",
            "devices/sensor7/x",
            "-m",
            "x",
        ],
    );
    assert!(
        !out.status.success(),
        "a client certificate from another CA must fail the handshake"
    );
    assert!(
        !broker.log().contains("rogue"),
        "the rogue client must never reach the broker"
    );
}

fn node_ws(args: &[&str]) -> std::process::Child {
    let node = require("node");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/mqtt/ws.js");
    let modules = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/mqtt/node_modules");
    assert!(
        modules.is_dir(),
        "tests/peers/mqtt/node_modules is missing: run `npm ci --prefix tests/peers/mqtt` (.ci/run does)"
    );
    Command::new(node)
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn node")
}

#[test]
fn mqtt_over_websocket_works_both_ways_for_v311_and_v5() {
    let broker = Mosquitto::start();
    let admin = free_port();
    let port = free_port();
    let gw = Gateway::start(&format!(
        r#"
admin: {{address: "127.0.0.1:{admin}"}}
listeners:
  - name: edge
    address: "127.0.0.1:{port}"
    protocols: [http1, mqtt]
    route_table: t
route_tables:
  - name: t
    virtual_hosts:
      - name: any
        domains: ["*"]
        routes:
          - {{match: {{protocol: http1, path_prefix: /mqtt}}, websocket: mqtt}}
          - {{match: {{protocol: mqtt}}, cluster: brokers}}
          - {{direct_response: {{body: "not mqtt\n"}}}}
clusters:
  - {{name: brokers, hosts: ["{broker}"]}}
"#,
        broker = broker.addr(),
    ));
    let url = format!("ws://127.0.0.1:{}/mqtt", gw.addr().port());
    let tcp_port = gw.addr().port().to_string();
    for version in ["4", "5"] {
        // WebSocket publisher → TCP subscriber (mosquitto_sub through the gateway).
        let topic = format!("ws/v{version}/in");
        let sub = mosquitto_sub(&[
            "-h",
            "127.0.0.1",
            "-p",
            &tcp_port,
            "-i",
            &format!("tcp-sub-{version}"),
            "-t",
            &topic,
            "-C",
            "1",
            "-v",
            "-W",
            "10",
        ]);
        wait_for(
            "the TCP subscriber to be connected",
            Duration::from_secs(10),
            || {
                broker
                    .log()
                    .contains(&format!("tcp-sub-{version}"))
                    .then_some(())
            },
        );
        let mut publisher = node_ws(&["pub", &url, &topic, version, "from-websocket"]);
        let status = wait_for("the WebSocket publisher", Duration::from_secs(15), || {
            publisher.try_wait().ok().flatten()
        });
        let err = {
            let mut s = String::new();
            if let Some(mut e) = publisher.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut s);
            }
            s
        };
        assert!(
            status.success(),
            "MQTT v{version} publish over WebSocket: {err}"
        );
        let got = finish(sub);
        assert!(
            got.contains(&format!("{topic} from-websocket")),
            "TCP subscriber got: {got}"
        );

        // TCP publisher → WebSocket subscriber.
        let topic = format!("ws/v{version}/out");
        let mut subscriber = node_ws(&["sub", &url, &topic, version]);
        let lines = stdout_lines(&mut subscriber);
        // It prints `subscribed` once the SUBACK came back through the gateway.
        let first = wait_line(&lines, "subscribed");
        assert!(
            first.contains(r#""subscribed":[1]"#),
            "WebSocket SUBACK: {first}"
        );
        let out = mosquitto_cli(
            "mosquitto_pub",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &tcp_port,
                "-i",
                &format!("tcp-pub-{version}"),
                "-t",
                &topic,
                "-m",
                "to-websocket",
                "-q",
                "1",
            ],
        );
        assert!(out.status.success());
        let got = wait_line(&lines, "to-websocket");
        assert!(
            got.contains(&format!(r#""topic":"{topic}""#)),
            "WebSocket subscriber got: {got}"
        );
        let _ = finish(subscriber);
    }
    // A plain HTTP request to the WebSocket route is told to upgrade.
    let (status, _) = http_get(gw.addr(), "/mqtt").expect("GET /mqtt");
    assert_eq!(status, 426);
}
