//! Dubbo and SOFA Bolt through the gateway binary, against real Node servers
//! and clients (sofa-rpc-node, dubbo-remoting: `tests/peers/rpc/peer.js`),
//! and raw frames made with the crate's own codecs.
//!
//! Most scenarios run for both protocols (`bolt_rpc::...`,
//! `dubbo_rpc::...`). The clients get a generous per-call timeout of their
//! own, so an error that is the client giving up (`RpcResponseTimeoutError`)
//! is told apart from an error response the gateway sent.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Output};
use std::time::Duration;

use bytes::BytesMut;
use common::*;
use switchyard_codecs::{Decoder, bolt, dubbo};

const CALC: &str = "com.example.Calc";
const OTHER: &str = "com.example.Other";

/// The clients' own per-call timeout: far above anything the gateway should take.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(20);

/// How the Node client reports giving up on a call itself.
const CLIENT_GAVE_UP: &str = "RpcResponseTimeoutError";

/// A gateway config: listener `mesh` speaking `protocols`, the given routes
/// (flow mappings) in the `*` virtual host and the given clusters.
fn config(protocols: &str, routes: &[String], clusters: &[String]) -> String {
    let ports = Ports::new();
    let mut y = format!(
        "admin:\n  address: 127.0.0.1:{}\nlisteners:\n  - name: mesh\n    address: 127.0.0.1:{}\n    protocols: [{protocols}]\n    route_table: rpc\n",
        ports.admin, ports.listen
    );
    y += "route_tables:\n  - name: rpc\n    virtual_hosts:\n      - name: any\n        domains: [\"*\"]\n        routes:\n";
    for r in routes {
        y += &format!("          - {r}\n");
    }
    y += "clusters:\n";
    for c in clusters {
        y += &format!("  - {c}\n");
    }
    y
}

/// A cluster's flow mapping: `name` over `hosts`, plus `extra` fields.
fn cluster(name: &str, hosts: &[SocketAddr], extra: &str) -> String {
    let hosts: Vec<String> = hosts.iter().map(|a| format!("\"{a}\"")).collect();
    let sep = if extra.is_empty() { "" } else { ", " };
    format!(
        "{{name: {name}, hosts: [{}]{sep}{extra}}}",
        hosts.join(", ")
    )
}

/// A gateway sending every request of `kind` to `server`.
fn gateway_for(server: &RpcServer) -> Gateway {
    let kind = server.kind.name();
    Gateway::start(&config(
        "dubbo, bolt",
        &[format!("{{match: {{protocol: {kind}}}, cluster: servers}}")],
        &[cluster("servers", &[server.addr()], "")],
    ))
}

/// Run a client through `addr` with [`CLIENT_TIMEOUT`].
fn calls(addr: SocketAddr, kind: RpcKind, args: &[&str]) -> RpcRun {
    rpc_client(addr, kind, CLIENT_TIMEOUT, args)
}

/// The values of a step that must have had no errors.
#[track_caller]
fn values(step: &RpcStep) -> Vec<String> {
    assert_eq!(step.errors, 0, "errors:\n{}", step.error_text());
    step.values
        .iter()
        .map(|v| v.clone().expect("a value for every successful call"))
        .collect()
}

/// Every call of `step` failed with an error response from the gateway (not
/// the client giving up, not a dropped connection), one the user can
/// recognise: the client shows the gateway's reason, which must contain
/// `says`. Dubbo carries it as the error text; Bolt as an
/// `RpcServerException` in Hessian (as SOFA servers send), which
/// sofa-rpc-node shows by its class name and detail message.
#[track_caller]
fn assert_gateway_errors(kind: RpcKind, step: &RpcStep, says: &str) {
    assert_eq!(step.ok, 0, "values: {:?}", step.values);
    assert!(step.errors > 0);
    for message in step.messages.keys() {
        assert!(
            !message.contains(CLIENT_GAVE_UP),
            "a call got no response (the client gave up):\n{}",
            step.error_text()
        );
        assert!(
            message.contains("switchyard") && message.contains(says),
            "want the gateway's error containing {says:?}, got:\n{}",
            step.error_text()
        );
        if kind == RpcKind::Bolt {
            assert!(
                message.contains("com.alipay.remoting.rpc.exception.RpcServerException"),
                "want an RpcServerException, got:\n{}",
                step.error_text()
            );
        }
    }
}

/// One client connection from start to end.
#[track_caller]
fn assert_one_connection(run: &RpcRun) {
    assert_eq!(
        (run.connections, run.closed),
        (1, 0),
        "want one client connection, never closed"
    );
}

// ---------------------------------------------------------------------------
// Scenarios, each run for Bolt and for Dubbo

fn unary_calls_return_what_the_server_returns_directly(kind: RpcKind) {
    let server = RpcServer::start(kind);
    let gw = gateway_for(&server);
    let script = [
        "1",
        "plus",
        "20",
        "22",
        "--then",
        "1",
        "echo",
        "héllo wörld",
        "--then",
        "1",
        "com.example.Other.whoami",
        "--then",
        "1",
        "nosuch",
    ];
    let direct = calls(server.addr(), kind, &script);
    let via = calls(gw.addr(), kind, &script);
    assert_eq!(values(&direct.steps[0]), ["42"]);
    assert_eq!(values(&direct.steps[1]), ["héllo wörld"]);
    assert_eq!(values(&direct.steps[2]), [server.port.to_string()]);
    for i in 0..3 {
        assert_eq!(values(&via.steps[i]), values(&direct.steps[i]), "step {i}");
    }
    // The server's own error for an unknown method comes through unchanged.
    let (want, got) = (&direct.steps[3], &via.steps[3]);
    assert_eq!(want.errors, 1, "{want:?}");
    assert_eq!(got.messages, want.messages);
    assert_one_connection(&via);
}

fn a_thousand_concurrent_calls_on_one_connection_get_their_own_answers(kind: RpcKind) {
    let server = RpcServer::start(kind);
    let gw = gateway_for(&server);
    // Two clients at once: their request ids overlap, and their calls share
    // the gateway's upstream connections.
    let a = spawn_rpc_client(
        gw.addr(),
        kind,
        CLIENT_TIMEOUT,
        &["1000", "plus", "$i", "1000000"],
    );
    let b = spawn_rpc_client(gw.addr(), kind, CLIENT_TIMEOUT, &["1000", "echo", "b-$i"]);
    let (a, b) = (a.wait(), b.wait());
    let want_a: Vec<String> = (0..1000).map(|i| (i + 1_000_000).to_string()).collect();
    let want_b: Vec<String> = (0..1000).map(|i| format!("b-{i}")).collect();
    assert_eq!(values(&a.steps[0]), want_a);
    assert_eq!(values(&b.steps[0]), want_b);
    assert_one_connection(&a);
    assert_one_connection(&b);
}

fn round_robin_spreads_calls_over_both_servers(kind: RpcKind) {
    let s1 = RpcServer::start(kind);
    let s2 = RpcServer::start(kind);
    let gw = Gateway::start(&config(
        "dubbo, bolt",
        &["{cluster: pair}".into()],
        &[cluster("pair", &[s1.addr(), s2.addr()], "lb: round_robin")],
    ));
    let run = calls(gw.addr(), kind, &["20", "com.example.Other.whoami"]);
    let seen: BTreeSet<String> = values(&run.steps[0]).into_iter().collect();
    let want: BTreeSet<String> = [s1.port, s2.port].iter().map(u16::to_string).collect();
    assert_eq!(
        seen, want,
        "one client connection's calls reach both servers"
    );
    assert_one_connection(&run);
}

fn routes_by_service_to_different_clusters(kind: RpcKind) {
    let a = RpcServer::start(kind);
    let b = RpcServer::start(kind);
    let gw = Gateway::start(&config(
        "dubbo, bolt",
        &[
            format!(
                "{{match: {{services: [\"{}\"]}}, cluster: a}}",
                kind.service(CALC)
            ),
            format!(
                "{{match: {{services: [\"{}\"]}}, cluster: b}}",
                kind.service(OTHER)
            ),
        ],
        &[cluster("a", &[a.addr()], ""), cluster("b", &[b.addr()], "")],
    ));
    let run = calls(
        gw.addr(),
        kind,
        &["5", "com.example.Other.whoami", "--then", "5", "slow", "1"],
    );
    assert_eq!(values(&run.steps[0]), vec![b.port.to_string(); 5]);
    assert_eq!(values(&run.steps[1]), vec!["1"; 5]);
    assert_eq!(
        (a.slow_calls_started(), b.slow_calls_started()),
        (5, 0),
        "the com.example.Calc calls go to cluster a only"
    );
    assert_one_connection(&run);
}

fn an_unrouted_service_gets_an_error_and_the_connection_keeps_working(kind: RpcKind) {
    let server = RpcServer::start(kind);
    let gw = Gateway::start(&config(
        "dubbo, bolt",
        &[format!(
            "{{match: {{services: [\"{}\"]}}, cluster: calc}}",
            kind.service(CALC)
        )],
        &[cluster("calc", &[server.addr()], "")],
    ));
    let run = calls(
        gw.addr(),
        kind,
        &[
            "3",
            "com.example.Other.whoami",
            "--then",
            "1",
            "plus",
            "1",
            "2",
        ],
    );
    // The reason names the service the client asked for.
    let reason = format!("no route for service {}", kind.service(OTHER));
    assert_gateway_errors(kind, &run.steps[0], &reason);
    assert_eq!(values(&run.steps[1]), ["3"]);
    assert_one_connection(&run);
}

fn an_upstream_killed_mid_load_fails_every_call_in_flight(kind: RpcKind) {
    let mut server = RpcServer::start(kind);
    let gw = gateway_for(&server);
    // Calls that would each take 10 s (not 3 s: a kill that comes late on a
    // loaded machine still finds all 50 in flight).
    let client = spawn_rpc_client(gw.addr(), kind, CLIENT_TIMEOUT, &["50", "slow", "10000"]);
    wait_for("the server to start 50 slow calls", WAIT, || {
        (server.slow_calls_started() == 50).then_some(())
    });
    server.kill();
    let run = client.wait();
    assert_eq!(run.steps[0].errors, 50);
    assert_gateway_errors(kind, &run.steps[0], "upstream connection");
    assert_one_connection(&run);
}

fn an_upstream_down_at_call_time_gets_an_error_until_it_is_back(kind: RpcKind) {
    let mut server = RpcServer::start(kind);
    let gw = gateway_for(&server);
    let plus = ["2", "plus", "$i", "10"];
    assert_eq!(
        values(&calls(gw.addr(), kind, &plus).steps[0]),
        ["10", "11"]
    );
    server.kill();
    let down = calls(gw.addr(), kind, &plus);
    assert_gateway_errors(kind, &down.steps[0], "upstream unavailable");
    assert_one_connection(&down);
    server.restart();
    assert_eq!(
        values(&calls(gw.addr(), kind, &plus).steps[0]),
        ["10", "11"]
    );
}

fn a_route_timeout_answers_a_slow_call_with_an_error(kind: RpcKind) {
    let server = RpcServer::start(kind);
    let gw = Gateway::start(&config(
        "dubbo, bolt",
        &[format!(
            "{{match: {{services: [\"{}\"]}}, cluster: calc, timeout: 500ms}}",
            kind.service(CALC)
        )],
        &[cluster("calc", &[server.addr()], "")],
    ));
    let run = calls(
        gw.addr(),
        kind,
        &["3", "slow", "3000", "--then", "1", "plus", "2", "2"],
    );
    assert_gateway_errors(kind, &run.steps[0], "timeout");
    // The late answers are dropped; the connection goes on.
    assert_eq!(values(&run.steps[1]), ["4"]);
    assert_one_connection(&run);
}

fn a_heartbeat_from_the_client_library_is_answered_by_the_gateway(kind: RpcKind) {
    // The only host refuses connections: an answer can only be the gateway's.
    let gw = Gateway::start(&config(
        "dubbo, bolt",
        &["{cluster: nowhere}".into()],
        &[cluster("nowhere", &[local(free_port())], "")],
    ));
    assert_eq!(rpc_heartbeat(gw.addr(), kind, 4242), 4242);
}

fn a_server_that_closes_after_every_response_costs_no_call(kind: RpcKind) {
    // The server ends each connection once it has answered what it read on
    // it, so the gateway's shared connections keep turning out closed just as
    // calls are handed to them: those not yet written must go on a fresh
    // connection, and the client sees every call answered.
    let server = RpcServer::start_closing_after_response(kind);
    let gw = gateway_for(&server);
    let args: Vec<String> = (0..CLOSING_CALLS).map(|i| i.to_string()).collect();
    let mut script: Vec<&str> = Vec::new();
    for (i, arg) in args.iter().enumerate() {
        if i > 0 {
            script.push("--then");
        }
        script.extend(["1", "plus", arg, "1000"]);
    }
    let run = calls(gw.addr(), kind, &script);
    let failed: Vec<String> = run
        .steps
        .iter()
        .filter(|s| s.errors > 0)
        .map(RpcStep::error_text)
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {CLOSING_CALLS} calls failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
    for (i, step) in run.steps.iter().enumerate() {
        assert_eq!(values(step), [(i + 1000).to_string()]);
    }
    assert!(
        server.connections_closed() >= CLOSING_CALLS / 2,
        "the server closed only {} connections",
        server.connections_closed()
    );
    assert_one_connection(&run);
    // Bursts of concurrent calls: a request can reach the server after it
    // closed (it reads it and cannot answer), which no proxy can undo; every
    // other call is answered.
    let late_before = server.late_requests();
    let mut script: Vec<&str> = Vec::new();
    for step in 0..20 {
        if step > 0 {
            script.push("--then");
        }
        script.extend(["20", "plus", "$i", "1000"]);
    }
    let run = calls(gw.addr(), kind, &script);
    let errors: usize = run.steps.iter().map(|s| s.errors).sum();
    // The server logs a late request when it reads it, which may be after
    // the gateway (which saw the close) answered it: let the log catch up.
    let deadline = std::time::Instant::now() + WAIT;
    while server.late_requests() - late_before < errors && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let late = server.late_requests() - late_before;
    assert_eq!(
        errors,
        late,
        "{errors} of 400 calls failed, {late} of them sent after the server closed:\n{}",
        run.steps
            .iter()
            .map(RpcStep::error_text)
            .collect::<Vec<_>>()
            .join("\n")
    );
    for step in &run.steps {
        for (value, i) in step.values.iter().zip(1000..) {
            if let Some(value) = value {
                assert_eq!(*value, i.to_string());
            }
        }
    }
}

/// Calls, one after the other, to the server that closes after every
/// response (the gateway on main lost 2-3 % of them).
const CLOSING_CALLS: usize = 300;

fn a_down_upstream_is_not_connected_to_for_every_call(kind: RpcKind) {
    // The only host refuses connections. Thousands of calls come in; the
    // gateway answers each at once and tries the host again only after a
    // rest (50 ms doubling to 2 s), not once per call.
    let gw = Gateway::start(&config(
        "dubbo, bolt",
        &["{cluster: nowhere}".into()],
        &[cluster("nowhere", &[local(free_port())], "")],
    ));
    let run = calls(
        gw.addr(),
        kind,
        &[
            "2000", "plus", "$i", "1", "--then", "2000", "plus", "$i", "2",
        ],
    );
    for step in &run.steps {
        assert_eq!(step.errors, 2000);
        assert_gateway_errors(kind, step, "upstream unavailable");
    }
    let attempts = gw.metric(
        "switchyard_upstream_connect_failures_total",
        &[("cluster", "nowhere")],
    );
    assert!(attempts >= 1.0, "the gateway never tried the host");
    // One connect per call on main (4,001). With the backoff: about seven
    // to reach the 2 s rest, then one per rest while the run lasts.
    assert!(
        attempts <= 100.0,
        "{attempts} connect attempts for 4000 calls"
    );
    assert_one_connection(&run);
}

// ---------------------------------------------------------------------------
// Stream filters (the shared request step) on multiplexed RPC

/// A gateway with `filters` on its one route to `server`.
fn filtered_gateway(server: &RpcServer, filters: &str) -> Gateway {
    let kind = server.kind.name();
    Gateway::start(&config(
        "dubbo, bolt",
        &[format!(
            "{{match: {{protocol: {kind}}}, cluster: servers, filters: {filters}}}"
        )],
        &[cluster("servers", &[server.addr()], "")],
    ))
}

fn ip_access_refuses_calls_with_an_error_response(kind: RpcKind) {
    let server = RpcServer::start(kind);
    let gw = filtered_gateway(&server, "[{ip_access: {deny: [127.0.0.0/8]}}]");
    let run = calls(gw.addr(), kind, &["20", "plus", "$i", "1"]);
    assert_eq!(run.steps[0].errors, 20);
    assert_gateway_errors(kind, &run.steps[0], "access denied");
    assert_one_connection(&run);
    assert_eq!(
        gw.metric(
            "switchyard_filter_verdicts_total",
            &[("filter", "ip_access"), ("verdict", "refuse")]
        ),
        20.0
    );
}

fn a_rate_limit_passes_its_burst_and_refuses_the_rest(kind: RpcKind) {
    let server = RpcServer::start(kind);
    // One token per 1000 s: the burst is all a run of calls can get.
    let gw = filtered_gateway(&server, "[{rate_limit: {rate: 0.001, burst: 7}}]");
    let run = calls(
        gw.addr(),
        kind,
        &["1", "plus", "1", "1", "--then", "30", "plus", "$i", "1"],
    );
    let total_ok: usize = run.steps.iter().map(|s| s.ok).sum();
    let total_err: usize = run.steps.iter().map(|s| s.errors).sum();
    assert_eq!(
        (total_ok, total_err),
        (7, 24),
        "{}",
        run.steps[1].error_text()
    );
    for message in run.steps[1].messages.keys() {
        assert!(
            message.contains("rate limited"),
            "{}",
            run.steps[1].error_text()
        );
    }
    assert_one_connection(&run);
}

fn a_concurrency_limit_refuses_calls_past_the_ones_in_flight(kind: RpcKind) {
    let server = RpcServer::start(kind);
    let gw = filtered_gateway(&server, "[{concurrency_limit: {max: 1}}]");
    // One slow call holds the only place (8 s: starting the next client
    // process on a loaded machine takes seconds) ...
    let slow = spawn_rpc_client(gw.addr(), kind, CLIENT_TIMEOUT, &["1", "slow", "8000"]);
    wait_for("the slow call to pass the limit", WAIT, || {
        let passed = gw.metric(
            "switchyard_filter_verdicts_total",
            &[("filter", "concurrency_limit"), ("verdict", "pass")],
        );
        (passed >= 1.0).then_some(())
    });
    // ... so calls meanwhile are refused at once, and none reaches the server.
    let refused = calls(gw.addr(), kind, &["5", "plus", "$i", "1"]);
    assert_eq!(refused.steps[0].errors, 5);
    assert_gateway_errors(kind, &refused.steps[0], "too many requests in flight");
    let slow = slow.wait();
    assert_eq!(values(&slow.steps[0]).len(), 1);
    // Its answer released the place (the client's calls of a step go out
    // at once, so one per step).
    let after = calls(
        gw.addr(),
        kind,
        &["1", "plus", "41", "1", "--then", "1", "plus", "1", "1"],
    );
    assert_eq!(values(&after.steps[0]), ["42"]);
    assert_eq!(values(&after.steps[1]), ["2"]);
}

fn a_cluster_circuit_breaker_answers_overflow_busy(kind: RpcKind) {
    let server = RpcServer::start(kind);
    let name = kind.name();
    let gw = Gateway::start(&config(
        "dubbo, bolt",
        &[format!("{{match: {{protocol: {name}}}, cluster: servers}}")],
        &[cluster(
            "servers",
            &[server.addr()],
            "circuit_breakers: {max_requests: 1}",
        )],
    ));
    let slow = spawn_rpc_client(gw.addr(), kind, CLIENT_TIMEOUT, &["1", "slow", "8000"]);
    wait_for("the slow call at the server", WAIT, || {
        server.log().contains("slow 8000").then_some(())
    });
    let refused = calls(gw.addr(), kind, &["4", "plus", "$i", "1"]);
    assert_eq!(refused.steps[0].errors, 4);
    assert_gateway_errors(kind, &refused.steps[0], "max_requests circuit breaker");
    assert_eq!(values(&slow.wait().steps[0]).len(), 1);
    let after = calls(gw.addr(), kind, &["1", "plus", "1", "1"]);
    assert_eq!(values(&after.steps[0]), ["2"]);
}

fn a_fault_aborts_about_its_share_of_calls(kind: RpcKind) {
    let server = RpcServer::start(kind);
    let gw = filtered_gateway(
        &server,
        "[{fault: {abort: {percent: 30, status: 503, message: chaos drill}}}]",
    );
    let run = calls(gw.addr(), kind, &["400", "plus", "$i", "1"]);
    let step = &run.steps[0];
    assert_eq!(step.ok + step.errors, 400);
    // Binomial(400, 0.3): mean 120, sd 9.2; ±45 is beyond 4.8 sd.
    assert!(
        (75..=165).contains(&step.errors),
        "{} of 400 aborted",
        step.errors
    );
    for message in step.messages.keys() {
        assert!(message.contains("chaos drill"), "{}", step.error_text());
    }
    // The calls that went through got their own answers.
    let answered: Vec<usize> = step
        .values
        .iter()
        .enumerate()
        .filter_map(|(i, v)| v.as_ref().map(|v| (i, v)))
        .map(|(i, v)| {
            assert_eq!(v, &(i + 1).to_string());
            i
        })
        .collect();
    assert_eq!(answered.len(), step.ok);
}

fn a_mirror_copies_every_call_to_the_shadow_and_answers_from_the_primary(kind: RpcKind) {
    let primary = RpcServer::start(kind);
    let shadow = RpcServer::start(kind);
    let name = kind.name();
    let gw = Gateway::start(&config(
        "dubbo, bolt",
        &[format!(
            "{{match: {{protocol: {name}}}, cluster: servers, filters: [{{mirror: {{cluster: shadow}}}}]}}"
        )],
        &[
            cluster("servers", &[primary.addr()], ""),
            cluster("shadow", &[shadow.addr()], ""),
        ],
    ));
    let run = calls(gw.addr(), kind, &["20", "seen", "call$i"]);
    let mut got = values(&run.steps[0]);
    got.sort();
    let mut want: Vec<String> = (0..20)
        .map(|i| format!("call{i}@{}", primary.port))
        .collect();
    want.sort();
    assert_eq!(got, want, "every answer from the primary");
    let seen = |s: &RpcServer| -> BTreeSet<String> {
        s.log()
            .lines()
            .filter_map(|l| l.strip_prefix("seen "))
            .map(str::to_owned)
            .collect()
    };
    let every: BTreeSet<String> = (0..20).map(|i| format!("call{i}")).collect();
    assert_eq!(seen(&primary), every);
    wait_for("20 copies at the shadow", WAIT, || {
        (seen(&shadow) == every).then_some(())
    });
    wait_for("20 copies answered", WAIT, || {
        let sent = gw.metric(
            "switchyard_mirror_requests_total",
            &[("cluster", "shadow"), ("result", "sent")],
        );
        (sent == 20.0).then_some(())
    });
}

macro_rules! for_both_protocols {
    ($($name:ident),* $(,)?) => {
        mod bolt_rpc {
            use super::*;
            $(#[test] fn $name() { super::$name(RpcKind::Bolt) })*
        }
        mod dubbo_rpc {
            use super::*;
            $(#[test] fn $name() { super::$name(RpcKind::Dubbo) })*
        }
    };
}

for_both_protocols!(
    unary_calls_return_what_the_server_returns_directly,
    a_thousand_concurrent_calls_on_one_connection_get_their_own_answers,
    round_robin_spreads_calls_over_both_servers,
    routes_by_service_to_different_clusters,
    an_unrouted_service_gets_an_error_and_the_connection_keeps_working,
    an_upstream_killed_mid_load_fails_every_call_in_flight,
    an_upstream_down_at_call_time_gets_an_error_until_it_is_back,
    a_route_timeout_answers_a_slow_call_with_an_error,
    a_heartbeat_from_the_client_library_is_answered_by_the_gateway,
    a_server_that_closes_after_every_response_costs_no_call,
    a_down_upstream_is_not_connected_to_for_every_call,
    ip_access_refuses_calls_with_an_error_response,
    a_rate_limit_passes_its_burst_and_refuses_the_rest,
    a_concurrency_limit_refuses_calls_past_the_ones_in_flight,
    a_fault_aborts_about_its_share_of_calls,
    a_cluster_circuit_breaker_answers_overflow_busy,
    a_mirror_copies_every_call_to_the_shadow_and_answers_from_the_primary,
);

// ---------------------------------------------------------------------------
// Dubbo only: methods are in every Dubbo request (sofa-rpc-node's Bolt
// requests carry the method in the body only, where routes do not look)

#[test]
fn dubbo_routes_by_method_within_a_service() {
    let kind = RpcKind::Dubbo;
    let a = RpcServer::start(kind);
    let b = RpcServer::start(kind);
    let gw = Gateway::start(&config(
        "dubbo",
        &[
            format!("{{match: {{services: [{CALC}], rpc_methods: [slow]}}, cluster: b}}"),
            format!("{{match: {{services: [{CALC}]}}, cluster: a}}"),
        ],
        &[cluster("a", &[a.addr()], ""), cluster("b", &[b.addr()], "")],
    ));
    let run = calls(
        gw.addr(),
        kind,
        &["4", "slow", "1", "--then", "4", "plus", "$i", "1"],
    );
    assert_eq!(values(&run.steps[0]), vec!["1"; 4]);
    assert_eq!(values(&run.steps[1]), ["1", "2", "3", "4"]);
    assert_eq!(
        (a.slow_calls_started(), b.slow_calls_started()),
        (0, 4),
        "slow() goes to cluster b"
    );
}

// ---------------------------------------------------------------------------
// One port for everything

#[test]
fn every_protocol_shares_one_sniffing_port_at_once() {
    // Bolt, Dubbo, HTTP/1.1, HTTP/2 (h2c, translated to the HTTP/1.1 upstream),
    // Redis and MQTT clients all at once on one listener.
    let broker = Mosquitto::start();
    let bolt_server = RpcServer::start(RpcKind::Bolt);
    let dubbo_server = RpcServer::start(RpcKind::Dubbo);
    let redis = RedisServer::start();
    let web = HttpUpstream::start();
    let gw = Gateway::start(&config(
        "http1, http2, redis, mqtt, dubbo, bolt",
        &[
            "{match: {protocol: bolt}, cluster: bolt-servers}".into(),
            "{match: {protocol: dubbo}, cluster: dubbo-servers}".into(),
            "{match: {protocol: redis}, cluster: redis}".into(),
            "{match: {protocol: mqtt}, cluster: brokers}".into(),
            "{match: {protocol: http1}, cluster: web}".into(),
            "{match: {protocol: http2}, cluster: web-h1}".into(),
        ],
        &[
            cluster("bolt-servers", &[bolt_server.addr()], ""),
            cluster("dubbo-servers", &[dubbo_server.addr()], ""),
            cluster("redis", &[redis.addr()], ""),
            cluster("brokers", &[broker.addr()], ""),
            cluster("web", &[web.addr()], ""),
            cluster("web-h1", &[web.addr()], "protocol: http1"),
        ],
    ));
    let addr = gw.addr();
    let script = [
        "500",
        "plus",
        "$i",
        "7",
        "--then",
        "1",
        "com.example.Other.whoami",
    ];
    let bolt_client = spawn_rpc_client(addr, RpcKind::Bolt, CLIENT_TIMEOUT, &script);
    let dubbo_client = spawn_rpc_client(addr, RpcKind::Dubbo, CLIENT_TIMEOUT, &script);
    let http = std::thread::spawn(move || {
        let mut c = RawConn::connect(addr);
        for i in 0..200 {
            c.send(&get_request("/hello"));
            let r = c.response();
            assert_eq!(
                (r.status, r.text().as_str()),
                (200, "hello from upstream\n"),
                "GET {i}"
            );
        }
    });
    let resp = std::thread::spawn(move || {
        let mut c = RawConn::connect(addr);
        for i in 1..=200 {
            assert_eq!(
                c.command(&["INCR", "shared-port:counter"]),
                format!(":{i}\r\n").into_bytes()
            );
        }
    });
    let h2 = std::thread::spawn(move || {
        // nghttp: one HTTP/2 connection, the same request 50 times, multiplexed.
        // (Not curl: 7.88.1 does not send a second URL on a reused h2c
        // prior-knowledge connection — against nginx's own h2c either.)
        let out = std::process::Command::new(require("nghttp"))
            .args(["-m", "50", &format!("http://{addr}/hello")])
            .output()
            .expect("run nghttp");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "nghttp: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(text.matches("hello from upstream").count(), 50, "{text}");
    });
    let mqtt = std::thread::spawn(move || {
        let port = addr.port().to_string();
        for i in 0..20 {
            let out = std::process::Command::new(require("mosquitto_pub"))
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port,
                    "-i",
                    &format!("mesh-{i}"),
                    "-q",
                    "1",
                ])
                .args(["-t", "mesh/telemetry", "-m", &i.to_string()])
                .output()
                .expect("run mosquitto_pub");
            assert!(
                out.status.success(),
                "MQTT publish {i}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    });
    http.join().expect("the HTTP client failed");
    resp.join().expect("the Redis client failed");
    h2.join().expect("the HTTP/2 client failed");
    mqtt.join().expect("the MQTT client failed");
    wait_for(
        "the broker to have seen the 20 MQTT clients",
        Duration::from_secs(10),
        || (broker.log().matches("mesh-").count() >= 20).then_some(()),
    );
    let want: Vec<String> = (0..500).map(|i| (i + 7).to_string()).collect();
    for (run, server) in [
        (bolt_client.wait(), &bolt_server),
        (dubbo_client.wait(), &dubbo_server),
    ] {
        assert_eq!(values(&run.steps[0]), want, "{:?}", server.kind);
        assert_eq!(
            values(&run.steps[1]),
            [server.port.to_string()],
            "{:?}",
            server.kind
        );
        assert_one_connection(&run);
    }
}

/// A Dubbo request frame for `com.example.Calc.echo(arg)`, as dubbo-remoting
/// encodes one (Hessian 2, two-way).
fn dubbo_echo_request(id: u64, arg: &str) -> bytes::Bytes {
    use switchyard_codecs::hessian2::write_string;
    let mut body = Vec::new();
    for s in ["2.0.2", CALC, "1.0", "echo", "Ljava/lang/String;", arg] {
        write_string(&mut body, s);
    }
    body.push(b'H');
    for (k, v) in [("path", CALC), ("version", "1.0")] {
        write_string(&mut body, k);
        write_string(&mut body, v);
    }
    body.push(b'Z');
    let flag = dubbo::FLAG_REQUEST | dubbo::FLAG_TWO_WAY | dubbo::SERIALIZATION_HESSIAN2;
    dubbo::encode(flag, 0, id, &body)
}

#[test]
fn dubbo_a_client_that_does_not_read_its_responses_does_not_stall_other_clients() {
    let server = RpcServer::start(RpcKind::Dubbo);
    let gw = gateway_for(&server);
    let addr = gw.addr();
    // 20,000 calls of echo(1 KiB), their answers never read: more than the
    // socket buffers and the gateway's per-client queue hold.
    let arg = "x".repeat(1024);
    let mut requests = Vec::new();
    for id in 1..=20_000 {
        requests.extend_from_slice(&dubbo_echo_request(id, &arg));
    }
    let greedy = TcpStream::connect(addr).expect("connect to the gateway");
    greedy.set_write_timeout(Some(WAIT)).unwrap();
    let mut w = greedy.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        // The gateway may stop reading this client: that is its right.
        let _ = w.write_all(&requests);
    });
    writer.join().unwrap();
    // Another client on the same port, same service, same upstream.
    let run = calls(addr, RpcKind::Dubbo, &["3", "plus", "1", "2"]);
    assert_eq!(
        values(&run.steps[0]),
        ["3", "3", "3"],
        "a client that does not read must not stall the others"
    );
    drop(greedy);
}

// ---------------------------------------------------------------------------
// Heartbeats as raw frames, made with the crate's codecs

/// Send `frames` to the gateway on one connection and decode `count` frames back.
fn exchange<D: Decoder>(
    addr: SocketAddr,
    frames: &[&[u8]],
    mut decoder: D,
    count: usize,
) -> Vec<D::Item> {
    let mut s = TcpStream::connect(addr).expect("connect to the gateway");
    s.set_read_timeout(Some(WAIT)).unwrap();
    for f in frames {
        s.write_all(f).expect("write a frame");
    }
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    while got.len() < count {
        match decoder.decode(&mut buf) {
            Ok(Some(frame)) => {
                got.push(frame);
                continue;
            }
            Ok(None) => {}
            Err(e) => panic!("the gateway's answer does not decode: {e}"),
        }
        let n = s
            .read(&mut chunk)
            .unwrap_or_else(|e| panic!("waiting for {count} frames, got {}: {e}", got.len()));
        assert!(
            n > 0,
            "the gateway closed after {} of {count} frames",
            got.len()
        );
        buf.extend_from_slice(&chunk[..n]);
    }
    got
}

/// A gateway whose only upstream refuses connections, so whatever answers is
/// the gateway itself.
fn gateway_without_upstream() -> Gateway {
    Gateway::start(&config(
        "http1, redis, dubbo, bolt",
        &["{cluster: nowhere}".into()],
        &[cluster("nowhere", &[local(free_port())], "")],
    ))
}

#[test]
fn bolt_heartbeats_are_answered_with_their_own_ids_and_version() {
    let gw = gateway_without_upstream();
    for version in [bolt::Version::V1, bolt::Version::V2] {
        let hb1 = bolt::heartbeat_request(version, 7);
        let hb2 = bolt::heartbeat_request(version, 0xfeed_beef);
        let got = exchange(
            gw.addr(),
            &[&hb1, &hb2],
            bolt::Decoder::new(bolt::Limits::default()),
            2,
        );
        for (frame, id) in got.iter().zip([7, 0xfeed_beef]) {
            assert!(
                frame.is_heartbeat() && frame.kind() == bolt::Kind::Response,
                "{frame:?}"
            );
            assert_eq!(frame.request_id(), id);
            assert_eq!(frame.version(), version);
            assert_eq!(frame.status(), Some(bolt::status::SUCCESS));
        }
    }
}

#[test]
fn dubbo_heartbeats_are_answered_with_their_own_ids() {
    let gw = gateway_without_upstream();
    let id2 = u64::MAX - 5;
    let hb1 = dubbo::heartbeat_request(7);
    let hb2 = dubbo::heartbeat_request(id2);
    let got = exchange(
        gw.addr(),
        &[&hb1, &hb2],
        dubbo::Decoder::new(dubbo::Limits::default()),
        2,
    );
    for (frame, id) in got.iter().zip([7, id2]) {
        assert!(frame.is_heartbeat() && !frame.is_request(), "{frame:?}");
        assert_eq!(frame.request_id(), id);
        assert_eq!(frame.status(), Some(dubbo::status::OK));
    }
}

/// The node clients above only show a refusal's text; on the wire each class
/// of refusal is the protocol's own status: Dubbo 70 SERVICE_ERROR for "not
/// allowed", 100 SERVER_THREADPOOL_EXHAUSTED for "too many"; Bolt
/// SERVER_EXCEPTION and SERVER_THREADPOOL_BUSY.
#[test]
fn refusals_carry_each_rpc_protocol_s_status_on_the_wire() {
    let gateway_with = |filters: &str| {
        Gateway::start(&config(
            "dubbo, bolt",
            &[format!("{{cluster: nowhere, filters: {filters}}}")],
            &[cluster("nowhere", &[local(free_port())], "")],
        ))
    };
    let denied = gateway_with("[{ip_access: {deny: [127.0.0.0/8]}}]");
    let busy = gateway_with("[{rate_limit: {rate: 0.001, burst: 1}}]");
    let bolt_call = |id: u32| {
        bolt::request(
            bolt::Version::V1,
            false,
            id,
            bolt::codec::HESSIAN2,
            3000,
            b"com.alipay.sofa.rpc.core.request.SofaRequest",
            &bolt::encode_header_map([(&b"service"[..], Some(&b"com.example.Calc:1.0"[..]))]),
            b"",
        )
    };
    let dubbo_statuses = |gw: &Gateway| -> Vec<u8> {
        let (a, b) = (dubbo_echo_request(1, "a"), dubbo_echo_request(2, "b"));
        let got = exchange(
            gw.addr(),
            &[&a, &b],
            dubbo::Decoder::new(dubbo::Limits::default()),
            2,
        );
        got.iter().filter_map(|f| f.status()).collect()
    };
    let bolt_statuses = |gw: &Gateway| -> Vec<u16> {
        let (a, b) = (bolt_call(1), bolt_call(2));
        let got = exchange(
            gw.addr(),
            &[&a, &b],
            bolt::Decoder::new(bolt::Limits::default()),
            2,
        );
        got.iter().filter_map(|f| f.status()).collect()
    };
    use dubbo::status as ds;
    assert_eq!(
        dubbo_statuses(&denied),
        [ds::SERVICE_ERROR, ds::SERVICE_ERROR]
    );
    assert_eq!(
        bolt_statuses(&denied),
        [
            bolt::status::SERVER_EXCEPTION,
            bolt::status::SERVER_EXCEPTION
        ]
    );
    // The one token goes to the first Dubbo call (its upstream is down: an
    // error of another kind); every later call is over the limit.
    let dubbo = dubbo_statuses(&busy);
    assert_eq!(dubbo.len(), 2);
    assert_eq!(dubbo[1], ds::SERVER_THREADPOOL_EXHAUSTED_ERROR, "{dubbo:?}");
    assert_ne!(dubbo[0], ds::SERVER_THREADPOOL_EXHAUSTED_ERROR, "{dubbo:?}");
    assert_eq!(
        bolt_statuses(&busy),
        [
            bolt::status::SERVER_THREADPOOL_BUSY,
            bolt::status::SERVER_THREADPOOL_BUSY
        ]
    );
}

// ---------------------------------------------------------------------------
// `switchyard check`

fn check(yaml: &str) -> (Output, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchyard.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("check")
        .arg(&path)
        .output()
        .expect("run switchyard check");
    (out, path.display().to_string())
}

const MESH: &str = r#"admin:
  address: 127.0.0.1:19901
listeners:
  - name: mesh
    address: 127.0.0.1:12200
    protocols: [dubbo, bolt]
    route_table: rpc
route_tables:
  - name: rpc
    virtual_hosts:
      - name: any
        domains: ["*"]
        routes:
          - match: {protocol: dubbo, services: [com.example.Calc], rpc_methods: [plus, slow]}
            cluster: calc
          - match: {services: ["com.example.Other:1.0", com.example.Other]}
            cluster: other
clusters:
  - {name: calc, hosts: ["127.0.0.1:20880"]}
  - {name: other, hosts: ["127.0.0.1:20881"]}
"#;

#[test]
fn switchyard_check_accepts_services_and_rpc_methods() {
    let (out, path) = check(MESH);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim(), format!("{path}: ok"));
    // A misspelt field is an error at its line.
    let bad = MESH.replace("rpc_methods:", "rpc_method:");
    let (out, path) = check(&bad);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let line = bad
        .lines()
        .position(|l| l.contains("rpc_method:"))
        .expect("the misspelt line")
        + 1;
    assert!(
        stderr.starts_with(&format!("{path}:{line}:")) && stderr.contains("rpc_method"),
        "{stderr}"
    );
}

// ---------------------------------------------------------------------------
// An independent Dubbo client: Python's dubbo-ssl-python
// (`tests/peers/dubbo_py_client.py`, its own hessian2 codec)

/// Run `dubbo_py_client.py ADDR` (which calls `com.example.Calc.plus(1, 2)`
/// and `echo("héllo")`) and return the JSON line it printed; fails with an
/// install hint when the `dubbo_ssl` module is missing.
fn dubbo_py_client(addr: SocketAddr) -> String {
    let python = require("python3");
    let probe = Command::new(&python)
        .args(["-c", "import dubbo_ssl"])
        .output()
        .expect("run python3");
    assert!(
        probe.status.success(),
        "python3 cannot import dubbo_ssl: install it with `python3 -m pip install dubbo-ssl-python` (.ci/run does):\n{}",
        String::from_utf8_lossy(&probe.stderr)
    );
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/dubbo_py_client.py");
    let mut cmd = Command::new(python);
    cmd.arg(script).arg(addr.to_string());
    // The script's own per-call timeout (15 s) bounds its run.
    let out = run_ok(&mut cmd);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_else(|| {
            panic!(
                "dubbo_py_client.py printed nothing; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
        .to_owned()
}

#[test]
fn dubbo_python_client_through_gateway_gets_what_it_gets_directly() {
    let server = RpcServer::start(RpcKind::Dubbo);
    let gw = gateway_for(&server);
    let direct = dubbo_py_client(server.addr());
    assert_eq!(
        direct, r#"{"plus": {"ok": 3}, "echo": {"ok": "héllo"}}"#,
        "the Python client straight to the Node server"
    );
    let via = dubbo_py_client(gw.addr());
    assert_eq!(via, direct, "through the gateway");
}

#[test]
fn dubbo_python_client_without_a_route_gets_the_gateways_error() {
    let server = RpcServer::start(RpcKind::Dubbo);
    // Only com.example.Other is routed: Calc has no route.
    let gw = Gateway::start(&config(
        "dubbo, bolt",
        &[format!(
            "{{match: {{services: [\"{OTHER}\"]}}, cluster: other}}"
        )],
        &[cluster("other", &[server.addr()], "")],
    ));
    let line = dubbo_py_client(gw.addr());
    let results: std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>> =
        serde_saphyr::from_str(&line)
            .unwrap_or_else(|e| panic!("want two errors, got {line:?}: {e}"));
    for method in ["plus", "echo"] {
        let error = results
            .get(method)
            .and_then(|r| r.get("error"))
            .unwrap_or_else(|| panic!("want an error for {method}, got {line}"));
        assert!(
            error.contains("switchyard") && !error.contains("timed out"),
            "{method}: want the gateway's error (containing \"switchyard\"), got {error:?}"
        );
    }
}
