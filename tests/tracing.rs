//! Tracing (`tracing:`): real clients (curl over HTTP/1.1 and HTTP/2,
//! redis-cli, the Node Dubbo client) through the gateway to real servers,
//! the spans an OTLP/HTTP receiver decodes with the OpenTelemetry project's
//! own protobuf classes (`tests/peers/otlp_receiver.py`), and the
//! `traceparent` the upstreams receive.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use serde_json::Value;

const SPANS_WAIT: Duration = Duration::from_secs(20);

/// A listener `edge` (HTTP/1, HTTP/2, Redis, Dubbo, MQTT) with `/app/...`
/// to `web`, Redis to `redis`, Dubbo to `rpc`, MQTT to `mqtt`; `tracing` is
/// put in as given (empty: off).
fn config(
    tracing: &str,
    web: SocketAddr,
    redis: SocketAddr,
    rpc: SocketAddr,
    mqtt: SocketAddr,
) -> String {
    let ports = Ports::new();
    format!(
        "admin: {{address: \"127.0.0.1:{admin}\"}}
{tracing}
listeners:
  - name: edge
    address: 127.0.0.1:{listen}
    protocols: [http1, http2, redis, dubbo, mqtt]
    route_table: main
route_tables:
  - name: main
    virtual_hosts:
      - name: any
        domains: [\"*\"]
        routes:
          - {{match: {{protocol: redis}}, cluster: redis}}
          - {{match: {{protocol: dubbo}}, cluster: rpc}}
          - {{match: {{protocol: mqtt}}, cluster: mqtt}}
          - {{match: {{path_prefix: /app/}}, cluster: web, prefix_rewrite: /}}
clusters:
  - {{name: web, hosts: [\"{web}\"], protocol: http1}}
  - {{name: redis, hosts: [\"{redis}\"]}}
  - {{name: rpc, hosts: [\"{rpc}\"]}}
  - {{name: mqtt, hosts: [\"{mqtt}\"]}}
",
        admin = ports.admin,
        listen = ports.listen,
    )
}

fn tracing_block(receiver: &OtlpReceiver) -> String {
    format!(
        "tracing:
  endpoint: \"{}\"
  service_name: edge-gateway
  export_interval: 100ms
  resource: {{deployment.environment: test}}",
        receiver.endpoint()
    )
}

/// The `traceparent` lines of the upstream's `/headers` answer (the request
/// head it received).
fn traceparents(headers: &str) -> Vec<String> {
    headers
        .lines()
        .filter_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("traceparent")
                .then(|| value.trim().to_owned())
        })
        .collect()
}

/// `00-<trace>-<parent>-<flags>` split.
fn split(tp: &str) -> (String, String, String) {
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "not a traceparent: {tp}");
    assert_eq!(parts[0], "00", "{tp}");
    assert_eq!((parts[1].len(), parts[2].len()), (32, 16), "{tp}");
    (parts[1].into(), parts[2].into(), parts[3].into())
}

fn curl_body(args: &[&str]) -> String {
    let out = run_ok(curl().args(["-sS", "--fail-with-body"]).args(args));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Wait until the receiver has spans of `trace_id` that `enough` accepts.
fn trace(receiver: &OtlpReceiver, trace_id: &str, enough: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    wait_for(
        &format!("the spans of trace {trace_id}"),
        SPANS_WAIT,
        || {
            let spans: Vec<Value> = receiver
                .spans()
                .into_iter()
                .filter(|s| s["trace_id"] == trace_id)
                .collect();
            enough(&spans).then_some(spans)
        },
    )
}

fn kind_of(spans: &[Value], kind: i64) -> Vec<&Value> {
    spans.iter().filter(|s| s["kind"] == kind).collect()
}

const SERVER: i64 = 2;
const CLIENT: i64 = 3;

/// A server span and its one client span; checks the links.
fn server_and_client(spans: &[Value]) -> (&Value, &Value) {
    let servers = kind_of(spans, SERVER);
    let clients = kind_of(spans, CLIENT);
    assert_eq!((servers.len(), clients.len()), (1, 1), "{spans:#?}");
    let (server, client) = (servers[0], clients[0]);
    assert_eq!(client["parent_span_id"], server["span_id"], "{spans:#?}");
    (server, client)
}

#[test]
fn http1_request_continues_the_callers_trace_and_the_upstream_gets_the_attempt_as_parent() {
    let receiver = OtlpReceiver::start();
    let web = HttpUpstream::start();
    let redis = RedisServer::start();
    let gw = Gateway::start(&config(
        &tracing_block(&receiver),
        web.addr(),
        redis.addr(),
        local(free_port()),
        local(free_port()),
    ));
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let incoming = format!("00-{trace_id}-{caller_span}-01");
    let headers = curl_body(&[
        "-H",
        &format!("traceparent: {incoming}"),
        "-H",
        "tracestate: vendor=abc",
        &gw.url("/app/headers"),
    ]);
    // The upstream sees one traceparent: same trace, a new parent, sampled.
    let got = traceparents(&headers);
    assert_eq!(got.len(), 1, "{headers}");
    let (up_trace, up_parent, flags) = split(&got[0]);
    assert_eq!((up_trace.as_str(), flags.as_str()), (trace_id, "01"));
    assert_ne!(up_parent, caller_span, "the gateway's span is the parent");
    assert!(
        headers.contains("vendor=abc"),
        "tracestate goes on: {headers}"
    );

    let spans = trace(&receiver, trace_id, |s| s.len() >= 2);
    let (server, client) = server_and_client(&spans);
    assert_eq!(server["parent_span_id"], caller_span);
    assert_eq!(server["name"], "HTTP GET");
    assert_eq!(server["trace_state"], "vendor=abc");
    let a = &server["attributes"];
    assert_eq!(a["http.request.method"], "GET");
    assert_eq!(a["url.path"], "/app/headers");
    assert_eq!(a["http.response.status_code"], 200);
    assert_eq!(a["network.peer.address"], "127.0.0.1");
    assert_eq!(a["switchyard.listener"], "edge");
    assert_eq!(server["status_code"], 0, "not an error");
    assert_eq!(server["resource"]["service.name"], "edge-gateway");
    assert_eq!(server["resource"]["deployment.environment"], "test");
    assert_eq!(server["scope"], "switchyard");
    // The upstream's parent is the client span of the attempt.
    assert_eq!(client["span_id"], up_parent.as_str());
    let c = &client["attributes"];
    assert_eq!(c["server.address"], "127.0.0.1");
    assert_eq!(c["server.port"], i64::from(web.port));
    assert_eq!(c["switchyard.attempt"], 1);
    assert_eq!(c["switchyard.outcome"], "ok");
    for s in [server, client] {
        let (start, end) = (s["start"].as_u64().unwrap(), s["end"].as_u64().unwrap());
        assert!(start > 0 && start <= end, "{s}");
    }
    assert!(
        server["start"].as_u64() <= client["start"].as_u64()
            && client["end"].as_u64() <= server["end"].as_u64(),
        "the attempt lies within the request: {spans:#?}"
    );

    // Without a traceparent: a new trace, its id on the upstream's header.
    let headers = curl_body(&[&gw.url("/app/headers")]);
    let got = traceparents(&headers);
    assert_eq!(got.len(), 1, "{headers}");
    let (new_trace, new_parent, flags) = split(&got[0]);
    assert_ne!(new_trace, trace_id);
    assert_eq!(flags, "01", "sampling_ratio defaults to 1.0");
    let spans = trace(&receiver, &new_trace, |s| s.len() >= 2);
    let (server, client) = server_and_client(&spans);
    assert_eq!(server["parent_span_id"], "", "a root span");
    assert_eq!(client["span_id"], new_parent.as_str());

    // An upstream 503: the server span's status is ERROR.
    let out = run_ok(
        curl()
            .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}"])
            .arg(gw.url("/app/status/503")),
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "503");
    let failed = wait_for("the span of the 503", SPANS_WAIT, || {
        receiver
            .spans()
            .into_iter()
            .find(|s| s["kind"] == SERVER && s["attributes"]["url.path"] == "/app/status/503")
    });
    assert_eq!(failed["attributes"]["http.response.status_code"], 503);
    assert_eq!(failed["status_code"], 2, "ERROR: {failed}");

    // An incoming unsampled trace: continued on the upstream, not recorded.
    let unsampled = "0af7651916cd43dd8448eb211c80319c";
    let headers = curl_body(&[
        "-H",
        &format!("traceparent: 00-{unsampled}-b7ad6b7169203331-00"),
        &gw.url("/app/headers"),
    ]);
    let got = traceparents(&headers);
    assert_eq!(got.len(), 1, "{headers}");
    let (t, _, flags) = split(&got[0]);
    assert_eq!((t.as_str(), flags.as_str()), (unsampled, "00"));
    // A later sampled request's spans arrive; the unsampled one's never
    // did (the exporter sends spans in the order they end).
    let marker = "11111111111111111111111111111111";
    curl_body(&[
        "-H",
        &format!("traceparent: 00-{marker}-b7ad6b7169203331-01"),
        &gw.url("/app/hello"),
    ]);
    trace(&receiver, marker, |s| s.len() >= 2);
    assert!(
        receiver.spans().iter().all(|s| s["trace_id"] != unsampled),
        "an unsampled trace is not exported"
    );
    assert_eq!(gw.metric("switchyard_trace_spans_dropped_total", &[]), 0.0);
}

#[test]
fn http2_redis_and_dubbo_requests_get_their_spans_and_carriers() {
    let receiver = OtlpReceiver::start();
    let web = HttpUpstream::start();
    let redis = RedisServer::start();
    let rpc = RpcServer::start(RpcKind::Dubbo);
    let gw = Gateway::start(&config(
        &tracing_block(&receiver),
        web.addr(),
        redis.addr(),
        rpc.addr(),
        local(free_port()),
    ));

    // HTTP/2 downstream (h2c with prior knowledge), HTTP/1.1 upstream.
    let trace_id = "5bf92f3577b34da6a3ce929d0e0e4737";
    let headers = curl_body(&[
        "--http2-prior-knowledge",
        "-H",
        &format!("traceparent: 00-{trace_id}-00f067aa0ba902b7-01"),
        &gw.url("/app/headers"),
    ]);
    let got = traceparents(&headers);
    assert_eq!(got.len(), 1, "{headers}");
    let (t, parent, _) = split(&got[0]);
    assert_eq!(t, trace_id);
    let spans = trace(&receiver, trace_id, |s| s.len() >= 2);
    let (server, client) = server_and_client(&spans);
    assert_eq!(server["name"], "HTTP GET");
    assert_eq!(server["attributes"]["network.protocol.name"], "http2");
    assert_eq!(server["attributes"]["http.response.status_code"], 200);
    assert_eq!(client["span_id"], parent.as_str());

    // Redis: one server span per command, the attempt to redis-server.
    let out = redis_cli(gw.addr(), &["SET", "traced:key", "v"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "OK");
    let get = wait_for("the span of redis SET", SPANS_WAIT, || {
        receiver
            .spans()
            .into_iter()
            .find(|s| s["name"] == "redis SET" && s["kind"] == SERVER)
    });
    assert_eq!(get["attributes"]["db.system"], "redis");
    assert_eq!(get["attributes"]["db.operation.name"], "SET");
    assert_eq!(get["attributes"]["db.redis.key"], "traced:key");

    // Dubbo: the server reads the traceparent attachment the gateway set.
    let run = rpc_client(
        gw.addr(),
        RpcKind::Dubbo,
        Duration::from_secs(10),
        &["1", "attachment", "traceparent"],
    );
    assert_eq!(run.steps[0].errors, 0, "{}", run.steps[0].error_text());
    let seen = run.steps[0].values[0].clone().unwrap_or_default();
    let (t, parent, flags) = split(&seen);
    assert_eq!(flags, "01");
    let spans = trace(&receiver, &t, |s| s.len() >= 2);
    let (server, client) = server_and_client(&spans);
    assert!(
        server["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("dubbo ") && n.ends_with("/attachment")),
        "{server}"
    );
    assert_eq!(server["attributes"]["rpc.system"], "dubbo");
    assert_eq!(server["attributes"]["rpc.method"], "attachment");
    assert_eq!(client["span_id"], parent.as_str());
    assert_eq!(
        client["attributes"]["server.port"],
        i64::from(rpc.addr().port())
    );
}

#[test]
fn off_by_default_no_traceparent_is_injected() {
    let web = HttpUpstream::start();
    let redis = RedisServer::start();
    let rpc = RpcServer::start(RpcKind::Dubbo);
    let mqtt = Mosquitto::start();
    let gw = Gateway::start(&config(
        "",
        web.addr(),
        redis.addr(),
        rpc.addr(),
        mqtt.addr(),
    ));
    let headers = curl_body(&[&gw.url("/app/headers")]);
    assert!(headers.to_ascii_lowercase().contains("host:"), "{headers}");
    assert_eq!(traceparents(&headers), Vec::<String>::new());
    // A caller's traceparent goes on untouched.
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let headers = curl_body(&[
        "-H",
        &format!("traceparent: {incoming}"),
        &gw.url("/app/headers"),
    ]);
    assert_eq!(traceparents(&headers), [incoming]);
    let run = rpc_client(
        gw.addr(),
        RpcKind::Dubbo,
        Duration::from_secs(10),
        &["1", "attachment", "traceparent"],
    );
    assert_eq!(run.steps[0].errors, 0, "{}", run.steps[0].error_text());
    assert_eq!(run.steps[0].values[0].as_deref(), Some("-"));
    // MQTT 5: the PUBLISH reaches the broker as it was sent.
    publish(gw.addr(), "plain/t", &[]);
    assert_eq!(retained(mqtt.addr(), "plain/t"), "|hello");
}

/// The retained message on `topic` as `mosquitto_sub -V 5` reads it on
/// `broker`: `<user properties>|<payload>` (the broker keeps a retained
/// PUBLISH's properties, so the message is read after it was sent, no
/// subscription race).
fn retained(broker: SocketAddr, topic: &str) -> String {
    let out = run_ok(
        std::process::Command::new(require("mosquitto_sub"))
            .args([
                "-V",
                "5",
                "-h",
                "127.0.0.1",
                "-p",
                &broker.port().to_string(),
            ])
            .args(["-t", topic, "-C", "1", "-W", "20", "-F", "%P|%p"]),
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `mosquitto_pub -V 5` of `hello` (retained) on `topic` through `gateway`,
/// with user properties `props` (name, value).
fn publish(gateway: SocketAddr, topic: &str, props: &[(&str, &str)]) {
    let mut cmd = std::process::Command::new(require("mosquitto_pub"));
    cmd.args([
        "-V",
        "5",
        "-h",
        "127.0.0.1",
        "-p",
        &gateway.port().to_string(),
    ])
    .args(["-t", topic, "-m", "hello", "-q", "1", "-r"]);
    for (k, v) in props {
        cmd.args(["-D", "publish", "user-property", k, v]);
    }
    run_ok(&mut cmd);
}

#[test]
fn mqtt5_publish_carries_traceparent_as_a_user_property() {
    let receiver = OtlpReceiver::start();
    let mqtt = Mosquitto::start();
    let gw = Gateway::start(&config(
        &tracing_block(&receiver),
        local(free_port()),
        local(free_port()),
        local(free_port()),
        mqtt.addr(),
    ));
    // A new trace: the subscriber sees the attempt's traceparent.
    publish(gw.addr(), "sensors/1", &[("site", "north")]);
    let line = retained(mqtt.addr(), "sensors/1");
    let (props, payload) = line.split_once('|').unwrap();
    assert_eq!(payload, "hello");
    assert!(
        props.contains("site:north"),
        "other user properties kept: {line}"
    );
    let tp = props
        .split_whitespace()
        .find_map(|p| p.strip_prefix("traceparent:"))
        .unwrap_or_else(|| panic!("no traceparent user property: {line}"));
    let (t, parent, _) = split(tp);
    let spans = trace(&receiver, &t, |s| s.len() >= 2);
    let (server, client) = server_and_client(&spans);
    assert_eq!(server["name"], "mqtt PUBLISH");
    assert_eq!(server["attributes"]["messaging.system"], "mqtt");
    assert_eq!(
        server["attributes"]["messaging.destination.name"],
        "sensors/1"
    );
    assert_eq!(client["span_id"], parent.as_str());
    assert_eq!(
        client["attributes"]["server.port"],
        i64::from(mqtt.addr().port())
    );

    // A publisher's traceparent is continued, not duplicated.
    let trace_id = "6bf92f3577b34da6a3ce929d0e0e4738";
    publish(
        gw.addr(),
        "sensors/2",
        &[("traceparent", &format!("00-{trace_id}-00f067aa0ba902b7-01"))],
    );
    let line = retained(mqtt.addr(), "sensors/2");
    let tps: Vec<&str> = line
        .split('|')
        .next()
        .unwrap()
        .split_whitespace()
        .filter_map(|p| p.strip_prefix("traceparent:"))
        .collect();
    assert_eq!(tps.len(), 1, "{line}");
    let (t, parent, _) = split(tps[0]);
    assert_eq!(t, trace_id);
    let spans = trace(&receiver, trace_id, |s| s.len() >= 2);
    let (server, client) = server_and_client(&spans);
    assert_eq!(server["parent_span_id"], "00f067aa0ba902b7");
    assert_eq!(client["span_id"], parent.as_str());
}

#[test]
fn bad_tracing_config_names_the_field_and_the_fix() {
    let yaml = |tracing: &str| {
        format!(
            "{tracing}
listeners: [{{name: a, address: \"127.0.0.1:1\", protocols: [http1], route_table: t}}]
route_tables: [{{name: t, virtual_hosts: [{{name: v, domains: [\"*\"], routes: []}}]}}]
"
        )
    };
    let err = switchyard::config::load_str(
        &yaml("tracing: {endpoint: \"https://collector:4318/v1/traces\", sampling_ratio: 1.5, queue: 0}"),
        "gw.yaml",
    )
    .expect_err("refused")
    .to_string();
    for want in [
        "gw.yaml:1:",
        "tracing.endpoint",
        "not an http:// URL",
        "tracing.sampling_ratio",
        "1.5 is not a share between 0 and 1",
        "tracing.queue",
    ] {
        assert!(err.contains(want), "`{want}` missing from:\n{err}");
    }
    let err = switchyard::config::load_str(&yaml("tracing: {service_name: x}"), "gw.yaml")
        .expect_err("refused")
        .to_string();
    assert!(err.contains("endpoint"), "{err}");
    if let Err(e) = switchyard::config::load_str(
        &yaml("tracing: {endpoint: \"http://127.0.0.1:4318/v1/traces\"}"),
        "gw.yaml",
    ) {
        panic!("a good tracing block is refused:\n{e}");
    }
}

#[test]
fn a_retried_bolt_call_has_a_client_span_per_attempt() {
    let receiver = OtlpReceiver::start();
    let bad = RpcServer::start_failing(RpcKind::Bolt);
    let good = RpcServer::start(RpcKind::Bolt);
    let ports = Ports::new();
    // Round robin, no failover: the first call tries `bad` first.
    let gw = Gateway::start(&format!(
        "admin: {{address: \"127.0.0.1:{admin}\"}}
{tracing}
listeners:
  - {{name: front, address: \"127.0.0.1:{listen}\", protocols: [bolt], route_table: all}}
route_tables:
  - name: all
    virtual_hosts:
      - name: any
        domains: [\"*\"]
        routes:
          - {{cluster: up, retry: {{retry_on: [server_error], backoff: {{base: 1ms}}, idempotent: true}}}}
clusters:
  - {{name: up, failover: false, hosts: [\"{bad}\", \"{good}\"]}}
",
        admin = ports.admin,
        listen = ports.listen,
        tracing = tracing_block(&receiver),
        bad = bad.addr(),
        good = good.addr(),
    ));
    let run = rpc_client(
        gw.addr(),
        RpcKind::Bolt,
        Duration::from_secs(20),
        &["1", "com.example.Other.whoami"],
    );
    assert_eq!(run.steps[0].errors, 0, "{}", run.steps[0].error_text());
    assert_eq!(run.steps[0].values, [Some(good.port.to_string())]);
    let server = wait_for("the span of the Bolt call", SPANS_WAIT, || {
        receiver
            .spans()
            .into_iter()
            .find(|s| s["kind"] == SERVER && s["attributes"]["rpc.system"] == "sofarpc")
    });
    // sofa-rpc-node names the service in the Bolt header map (the method
    // only in the body).
    assert_eq!(
        server["attributes"]["rpc.service"], "com.example.Other:1.0",
        "{server}"
    );
    assert_eq!(server["status_code"], 0, "answered in the end: {server}");
    let trace_id = server["trace_id"].as_str().unwrap().to_owned();
    let spans = trace(&receiver, &trace_id, |s| s.len() >= 3);
    let mut attempts = kind_of(&spans, CLIENT);
    attempts.sort_by_key(|s| s["attributes"]["switchyard.attempt"].as_i64());
    assert_eq!(attempts.len(), 2, "{spans:#?}");
    let port = |s: &Value| s["attributes"]["server.port"].as_i64();
    let outcome = |s: &Value| s["attributes"]["switchyard.outcome"].clone();
    assert_eq!(port(attempts[0]), Some(i64::from(bad.addr().port())));
    assert_eq!(outcome(attempts[0]), "retried");
    assert_eq!(attempts[0]["status_code"], 2);
    assert_eq!(port(attempts[1]), Some(i64::from(good.addr().port())));
    assert_eq!(outcome(attempts[1]), "ok");
    assert_eq!(attempts[1]["status_code"], 0);
    for a in &attempts {
        assert_eq!(a["parent_span_id"], server["span_id"]);
    }
    assert_ne!(attempts[0]["span_id"], attempts[1]["span_id"]);
    assert!(attempts[0]["end"].as_u64() <= attempts[1]["start"].as_u64());
}
