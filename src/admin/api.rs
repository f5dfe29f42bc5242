//! The admin endpoints but `/stats` (see `stats.rs`): each builds a [`Reply`].

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Instant;

use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{Value, json};
use switchyard_codecs::Protocol;

use super::{Reply, Request};
use crate::config::Fallback;
use crate::gateway::Gateway;

/// Every endpoint: (methods, path, what it shows or does), for `/` and 404s.
pub const ENDPOINTS: &[(&str, &str, &str)] = &[
    ("GET", "/", "this list"),
    (
        "GET",
        "/live",
        "the process is alive (200 even while draining)",
    ),
    ("GET", "/ready", "ready for traffic (503 while draining)"),
    ("GET", "/metrics", "Prometheus metrics (text)"),
    (
        "GET",
        "/stats?filter=REGEX",
        "the metrics as JSON, filtered by name",
    ),
    (
        "GET",
        "/config",
        "the running config, secrets redacted (YAML)",
    ),
    (
        "GET",
        "/listeners",
        "listeners and their open connections per protocol",
    ),
    ("GET", "/clusters", "clusters, hosts, health, breakers"),
    ("GET", "/routes", "route tables as configured"),
    ("GET", "/mysql/digests", "MySQL queries per digest (text)"),
    (
        "GET, POST",
        "/logging?level=DIRECTIVES",
        "show or change the log filter",
    ),
    ("GET", "/dashboard", "the live dashboard (HTML page)"),
    ("GET", "/errors", "the last 100 WARN/ERROR log events"),
    ("POST", "/reload", "reload the config file (as SIGHUP)"),
    ("POST", "/drain", "drain and stop (as SIGTERM)"),
];

static STARTED: OnceLock<Instant> = OnceLock::new();

/// Note the admin server's start (for `/live`'s uptime).
pub fn started() {
    let _ = STARTED.set(Instant::now());
}

fn endpoints() -> Value {
    ENDPOINTS
        .iter()
        .map(|(m, p, what)| json!({ "methods": m, "path": p, "description": what }))
        .collect()
}

pub fn index() -> Reply {
    Reply::json(200, &json!({ "endpoints": endpoints() }))
}

/// `/` for a browser: the endpoints as links (`GET` ones) and a line each.
pub fn index_page() -> Reply {
    let rows: String = ENDPOINTS
        .iter()
        .map(|(methods, path, what)| {
            let bare = path.split('?').next().unwrap_or(path);
            if methods.starts_with("GET") {
                format!("<li><a href=\"{bare}\">{bare}</a> ({methods}): {what}</li>")
            } else {
                format!("<li>{methods} {bare}: {what}</li>")
            }
        })
        .collect();
    Reply::text(
        200,
        "text/html; charset=utf-8",
        format!(
            "<!doctype html><title>switchyard admin</title><link rel=\"icon\" href=\"data:,\"><h1>switchyard admin</h1><ul>{rows}</ul>\n"
        ),
    )
}

pub fn not_found(path: &str) -> Reply {
    Reply::json(
        404,
        &json!({ "error": format!("no admin endpoint at {path}"), "endpoints": endpoints() }),
    )
}

fn draining(gw: &Gateway) -> bool {
    *gw.drain.borrow()
}

pub fn live(gw: &Gateway) -> Reply {
    let uptime = STARTED.get().map_or(0.0, |s| s.elapsed().as_secs_f64());
    Reply::json(
        200,
        &json!({
            "live": true,
            "draining": draining(gw),
            "pid": std::process::id(),
            "uptime_seconds": (uptime * 1000.0).round() / 1000.0,
            "connections": gw.connections.len(),
        }),
    )
}

/// Unchanged from before the JSON endpoints: load balancers read the status.
pub fn ready(gw: &Gateway) -> Reply {
    if draining(gw) {
        Reply::text(503, "text/plain; charset=utf-8", "draining\n")
    } else {
        Reply::text(200, "text/plain; charset=utf-8", "ready\n")
    }
}

pub fn metrics(metrics: &Option<PrometheusHandle>) -> Reply {
    match metrics {
        Some(h) => Reply::text(200, "text/plain; version=0.0.4", h.render()),
        None => Reply::error(503, "metrics recorder not installed"),
    }
}

pub fn config(gw: &Gateway) -> Reply {
    let snapshot = gw.snapshot.load();
    match serde_saphyr::to_string(&snapshot.config) {
        Ok(yaml) => Reply::text(200, "application/yaml", redact(&yaml)),
        Err(e) => Reply::error(500, format!("cannot render config: {e}")),
    }
}

pub fn mysql_digests(gw: &Gateway) -> Reply {
    // Queries per digest on every MySQL listener: `listener<TAB>count<TAB>digest`.
    let snapshot = gw.snapshot.load();
    let mut names: Vec<&String> = snapshot.listeners.keys().collect();
    names.sort();
    let mut body = String::new();
    for name in names {
        if let Some(front) = snapshot.listeners.get(name).and_then(|l| l.mysql.as_ref()) {
            for line in front.digest_report().lines() {
                body.push_str(&format!("{name}\t{line}\n"));
            }
        }
    }
    Reply::text(200, "text/plain; charset=utf-8", body)
}

pub fn listeners(gw: &Gateway) -> Reply {
    let snapshot = gw.snapshot.load();
    let listeners: Vec<Value> = snapshot
        .config
        .listeners
        .iter()
        .map(|l| {
            let name = &l.name.value;
            let protocols = l.enabled_protocols();
            // Every protocol of the listener (0 when none is open), plus
            // `tcp` (passthrough) and protocols of before a reload.
            let mut active: BTreeMap<&str, i64> = protocols.iter().map(|p| (p.name(), 0)).collect();
            active.extend(crate::observe::active_connections(name));
            let total: i64 = active.values().sum();
            let certificates: Vec<Value> = snapshot
                .listeners
                .get(name)
                .and_then(|l| l.tls.as_ref())
                .map(|t| {
                    t.certificates
                        .table()
                        .entries
                        .iter()
                        .map(|e| {
                            json!({
                                "server_names": e.server_names,
                                "default": e.server_names.is_empty(),
                                "cert": e.cert_path.display().to_string(),
                                "subject": e.info.subject,
                                "dns_names": e.info.dns_names,
                                "serial": e.info.serial,
                                "not_after": e.info.not_after.map(crate::net::tls::rfc3339),
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            json!({
                "name": name,
                "address": l.address.value.to_string(),
                "protocols": protocols.iter().copied().map(Protocol::name).collect::<Vec<_>>(),
                "fixed_protocol": l.protocol.is_some(),
                "tls": l.tls.is_some(),
                "certificates": certificates,
                "route_table": l.route_table.value,
                "fallback": match &l.detect.fallback {
                    Fallback::Reject => json!("reject"),
                    Fallback::TcpProxy(c) => json!({ "tcp_proxy": c.value }),
                },
                "max_connections": l.max_connections,
                "active_connections": active,
                "active_connections_total": total,
            })
        })
        .collect();
    Reply::json(200, &json!({ "listeners": listeners }))
}

/// Every cluster's hosts with health, weight, requests in flight,
/// ejections, and each circuit breaker's limit, count and state.
pub fn clusters(gw: &Gateway) -> Reply {
    let snapshot = gw.snapshot.load();
    let mut reports: Vec<_> = snapshot.clusters.values().map(|c| c.report()).collect();
    reports.sort_by(|a, b| a.name.cmp(&b.name));
    let clusters: Vec<Value> = reports
        .iter()
        .map(|r| {
            let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
            let breaker = |max: Option<usize>, now: Option<usize>| match max {
                Some(max) => {
                    let now = now.unwrap_or(0);
                    json!({ "max": max, "current": now, "open": now >= max })
                }
                None => json!({ "max": null, "current": now, "open": false }),
            };
            let breakers = json!({
                "requests": breaker(r.max_requests, r.requests_in_flight),
                "retries": breaker(r.max_retries, Some(r.retries_in_flight)),
                "connections": breaker(r.max_connections, r.connections_open),
                "pending": breaker(r.max_pending, r.requests_pending),
            });
            let available = r.hosts.iter().filter(|h| h.health.available).count();
            if let Value::Object(m) = &mut v {
                m.insert("circuit_breakers".into(), breakers);
                m.insert("hosts_available".into(), json!(available));
                if let Some(Value::Array(hosts)) = m.get_mut("hosts") {
                    for (h, report) in hosts.iter_mut().zip(&r.hosts) {
                        if let Value::Object(h) = h {
                            h.insert("healthy".into(), json!(report.health.available));
                            h.insert("ejected".into(), json!(report.health.ejected_ms_left > 0));
                        }
                    }
                }
            }
            v
        })
        .collect();
    Reply::json(200, &json!({ "clusters": clusters }))
}

/// What a route does: the first of these fields it sets.
const ACTIONS: [&str; 6] = [
    "direct_response",
    "redirect",
    "weighted_clusters",
    "cluster_header",
    "cluster",
    "read_cluster",
];

/// The route tables as configured (secrets redacted, fields left unset
/// omitted), each with the listeners that use it; each route also says
/// which `action` it takes.
pub fn routes(gw: &Gateway) -> Reply {
    let snapshot = gw.snapshot.load();
    let tables: Vec<Value> = snapshot
        .config
        .route_tables
        .iter()
        .map(|t| {
            let mut v = prune(redact_json(serde_json::to_value(t).unwrap_or(Value::Null)));
            for vh in v["virtual_hosts"].as_array_mut().into_iter().flatten() {
                for r in vh["routes"].as_array_mut().into_iter().flatten() {
                    let action = ACTIONS.iter().find(|a| r.get(**a).is_some());
                    if let (Some(a), Value::Object(m)) = (action, r) {
                        m.insert("action".into(), json!(a));
                    }
                }
            }
            let users: Vec<&str> = snapshot
                .config
                .listeners
                .iter()
                .filter(|l| l.route_table.value == t.name.value)
                .map(|l| l.name.value.as_str())
                .collect();
            if let Value::Object(m) = &mut v {
                m.insert("listeners".into(), json!(users));
            }
            v
        })
        .collect();
    Reply::json(200, &json!({ "route_tables": tables }))
}

pub fn logging() -> Reply {
    match crate::observe::log_filter() {
        Some(f) => Reply::json(200, &json!({ "filter": f })),
        None => Reply::error(503, "logging is not set up by this process"),
    }
}

pub fn set_logging(req: &Request) -> Reply {
    let Some(level) = req.param("level") else {
        return Reply::error(
            400,
            "give the new filter: POST /logging?level=debug (or an EnvFilter directive such as level=info,switchyard::proxy=debug)",
        );
    };
    let before = crate::observe::log_filter();
    match crate::observe::set_log_filter(&level) {
        Ok(now) => {
            tracing::info!(filter = %now, "log filter changed from the admin API");
            Reply::json(200, &json!({ "filter": now, "previous": before }))
        }
        Err(e) => Reply::error(400, e),
    }
}

/// Reload the config file as SIGHUP does; say what changed.
pub fn reload(gw: &Gateway) -> Reply {
    let before = gw.snapshot.load_full();
    match gw.reload_counted() {
        Ok(()) => {
            let after = gw.snapshot.load_full();
            let old = serde_json::to_value(&before.config).unwrap_or(Value::Null);
            let new = serde_json::to_value(&after.config).unwrap_or(Value::Null);
            Reply::json(
                200,
                &json!({
                    "reloaded": true,
                    "file": gw.config_path.display().to_string(),
                    "changed": diff(&old, &new),
                }),
            )
        }
        Err(e) => Reply::json(
            400,
            &json!({
                "reloaded": false,
                "error": "config reload rejected, keeping the running config",
                "file": e.file,
                "problems": e.to_string().lines().collect::<Vec<_>>(),
            }),
        ),
    }
}

/// What differs between two configs: for each list of named items
/// (listeners, route tables, clusters) the names added, removed and
/// changed; for other settings, the top-level keys that changed.
fn diff(old: &Value, new: &Value) -> Value {
    let empty = serde_json::Map::new();
    let (o, n) = (
        old.as_object().unwrap_or(&empty),
        new.as_object().unwrap_or(&empty),
    );
    let mut keys: Vec<&String> = o.keys().chain(n.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut out = serde_json::Map::new();
    let mut settings = Vec::new();
    for k in keys {
        let (a, b) = (o.get(k), n.get(k));
        if a == b {
            continue;
        }
        let named = |v: Option<&Value>| -> Option<BTreeMap<String, Value>> {
            v.unwrap_or(&Value::Array(Vec::new()))
                .as_array()?
                .iter()
                .map(|i| Some((i.get("name")?.as_str()?.to_owned(), i.clone())))
                .collect()
        };
        match (named(a), named(b)) {
            (Some(a), Some(b)) => {
                let added: Vec<&String> = b.keys().filter(|k| !a.contains_key(*k)).collect();
                let removed: Vec<&String> = a.keys().filter(|k| !b.contains_key(*k)).collect();
                let changed: Vec<&String> = a
                    .iter()
                    .filter(|(k, v)| b.get(*k).is_some_and(|w| w != *v))
                    .map(|(k, _)| k)
                    .collect();
                out.insert(
                    k.clone(),
                    json!({ "added": added, "removed": removed, "changed": changed }),
                );
            }
            _ => settings.push(k.clone()),
        }
    }
    out.insert("settings".into(), json!(settings));
    Value::Object(out)
}

/// Start a graceful drain as SIGTERM does: `/ready` answers 503, the
/// listeners stop accepting, open connections get `drain_timeout` to finish,
/// then the process exits.
pub fn drain(gw: &Gateway) -> Reply {
    let already = gw.drain.send_replace(true);
    if !already {
        tracing::info!("drain requested from the admin API");
    }
    let timeout = gw.snapshot.load().config.drain_timeout.get();
    Reply::json(
        202,
        &json!({
            "draining": true,
            "already_draining": already,
            "connections": gw.connections.len(),
            "drain_timeout_seconds": timeout.as_secs_f64(),
        }),
    )
}

/// Drop `null`s and empty lists and maps (fields left unset).
fn prune(v: Value) -> Value {
    let empty = |v: &Value| match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
        _ => false,
    };
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| (k, prune(v)))
                .filter(|(_, v)| !empty(v))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(prune).collect()),
        v => v,
    }
}

fn secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "password_hash", "secret", "token"]
        .iter()
        .any(|s| key.ends_with(s))
}

/// Blank the string values of fields that look like secrets.
fn redact_json(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| {
                    let v = if secret_key(&k) && !v.is_null() {
                        json!("<redacted>")
                    } else {
                        redact_json(v)
                    };
                    (k, v)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(redact_json).collect()),
        v => v,
    }
}

/// Blank the value of any field that looks like a secret.
fn redact(yaml: &str) -> String {
    yaml.lines()
        .map(|line| {
            let key = line
                .trim_start()
                .trim_start_matches("- ")
                .split(':')
                .next()
                .unwrap_or("")
                .to_ascii_lowercase();
            if ["password", "password_hash", "secret", "token", "key"]
                .iter()
                .any(|s| key.ends_with(s))
                && line
                    .split_once(':')
                    .is_some_and(|(_, v)| !matches!(v.trim(), "" | "null" | "~"))
            {
                let (k, _) = line.split_once(':').unwrap_or((line, ""));
                format!("{k}: \"<redacted>\"")
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn redacts_secret_fields() {
        let out = super::redact("a: 1\npassword: hunter2\n  api_token: x\nkey_prefix: user\n");
        assert!(!out.contains("hunter2") && !out.contains(": x"), "{out}");
        assert!(out.contains("key_prefix: user"), "{out}");
        // Unset secrets show as unset.
        let out = super::redact("token: null\ntoken_file: /etc/t\nusers:\n");
        assert_eq!(out, "token: null\ntoken_file: /etc/t\nusers:\n");
        let v = super::redact_json(
            json!({"users": [{"name": "a", "password": "pw"}], "key": "client_ip"}),
        );
        assert_eq!(
            v,
            json!({"users": [{"name": "a", "password": "<redacted>"}], "key": "client_ip"})
        );
    }

    #[test]
    fn prunes_unset_fields() {
        let v = json!({"a": null, "b": [], "c": {"d": null}, "e": [1, {"f": []}], "g": 0});
        assert_eq!(super::prune(v), json!({"e": [1, {}], "g": 0}));
    }

    #[test]
    fn diffs_named_lists_and_settings() {
        let old = json!({
            "drain_timeout": "10s",
            "clusters": [{"name": "a", "hosts": [1]}, {"name": "b", "hosts": [2]}],
            "listeners": [{"name": "edge"}],
        });
        let new = json!({
            "drain_timeout": "5s",
            "clusters": [{"name": "a", "hosts": [1, 3]}, {"name": "c", "hosts": [4]}],
            "listeners": [{"name": "edge"}],
        });
        assert_eq!(
            super::diff(&old, &new),
            json!({
                "clusters": {"added": ["c"], "removed": ["b"], "changed": ["a"]},
                "settings": ["drain_timeout"],
            })
        );
    }
}
