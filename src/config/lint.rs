//! Warnings about a config that loads but does not do what its author
//! meant: routes that can never match, clusters and route tables nothing
//! uses, listeners whose addresses overlap. `switchyard check` prints them;
//! the gateway logs them at start and on reload. They never refuse a config.

use std::collections::HashSet;

use serde_saphyr::Location;
use switchyard_codecs::Protocol;

use super::filters::Filter;
use super::{Config, Fallback, Problem, Route, RouteMatch};

/// Every warning about `config`, in file order per kind.
pub fn warnings(config: &Config) -> Vec<Problem> {
    let mut out = Vec::new();
    unreachable_routes(config, &mut out);
    unused_clusters(config, &mut out);
    unused_route_tables(config, &mut out);
    overlapping_listeners(config, &mut out);
    insecure_upstream_tls(config, &mut out);
    well_known_ports(config, &mut out);
    out
}

/// A cluster that speaks TLS without checking who answers.
fn insecure_upstream_tls(config: &Config, out: &mut Vec<Problem>) {
    for c in &config.clusters {
        let Some(skip) = c.tls.as_ref().and_then(|t| t.insecure_skip_verify.as_ref()) else {
            continue;
        };
        if skip.value {
            warn(
                out,
                skip.referenced,
                format!("clusters[{}].tls.insecure_skip_verify", c.name.value),
                format!(
                    "cluster `{}` accepts ANY server certificate: anyone on the path can impersonate its hosts",
                    c.name.value
                ),
                "testing only: give the CA that signs the hosts' certificates (`ca: FILE`) and remove insecure_skip_verify",
            );
        }
    }
}

fn warn(out: &mut Vec<Problem>, loc: Location, field: String, message: String, hint: &str) {
    out.push(Problem {
        line: loc.line(),
        column: loc.column(),
        field,
        message,
        hint: Some(hint.to_owned()),
    });
}

/// Where a route is written: its first spanned field, else its virtual host.
fn route_location(r: &Route, vhost: Location) -> Location {
    r.cluster
        .as_ref()
        .map(|c| c.referenced)
        .or_else(|| r.weighted_clusters.first().map(|w| w.name.referenced))
        .or_else(|| r.matcher.path_regex.as_ref().map(|p| p.referenced))
        .or_else(|| r.redirect.as_ref().map(|p| p.referenced))
        .or_else(|| r.cluster_header.as_ref().map(|p| p.referenced))
        .unwrap_or(vhost)
}

fn route_label(i: usize, r: &Route) -> String {
    match &r.name {
        Some(name) => format!("routes[{i}] ({name})"),
        None => format!("routes[{i}]"),
    }
}

/// A route after one that matches everything it would, or of a protocol no
/// listener using its table serves.
fn unreachable_routes(config: &Config, out: &mut Vec<Problem>) {
    for t in &config.route_tables {
        let served = served_protocols(config, &t.name.value);
        for v in &t.virtual_hosts {
            for (j, r) in v.routes.iter().enumerate() {
                let field = format!(
                    "route_tables[{}].virtual_hosts[{}].{}",
                    t.name.value,
                    v.name.value,
                    route_label(j, r)
                );
                let loc = route_location(r, v.name.referenced);
                if let Some((i, earlier)) = v.routes[..j]
                    .iter()
                    .enumerate()
                    .find(|(_, e)| covers(&e.matcher, &r.matcher))
                {
                    warn(
                        out,
                        loc,
                        field,
                        format!(
                            "can never match: {} before it matches every request this one does",
                            route_label(i, earlier)
                        ),
                        "routes are tried in order, first match wins: move the more specific route up, or remove it",
                    );
                    continue;
                }
                if let (Some(p), Some(served)) = (r.matcher.protocol, &served)
                    && !served.contains(&p.0)
                {
                    let mut names: Vec<_> = served.iter().map(|p| p.name()).collect();
                    names.sort_unstable();
                    warn(
                        out,
                        loc,
                        field,
                        format!(
                            "can never match: no listener using route table `{}` serves {} (they serve: {})",
                            t.name.value,
                            p.0.name(),
                            names.join(", ")
                        ),
                        "add the protocol to a listener's `protocols`, or remove the route",
                    );
                    continue;
                }
                let on_destination = !r.matcher.destination_ips.is_empty()
                    || !r.matcher.destination_ports.is_empty();
                if on_destination && served.is_some() && !knows_destination(config, &t.name.value) {
                    warn(
                        out,
                        loc,
                        field,
                        format!(
                            "can never match: no listener using route table `{}` knows where its connections were going",
                            t.name.value
                        ),
                        "`destination_ips`/`destination_ports` need a listener with `transparent: redirect` or `proxy_protocol` (docs/sidecar.md)",
                    );
                }
            }
        }
    }
}

/// Whether some listener using `table` knows its connections' destinations
/// (a transparent listener's original destination, a PROXY header's).
fn knows_destination(config: &Config, table: &str) -> bool {
    config.listeners.iter().any(|l| {
        l.route_table.value == table && (l.transparent.is_some() || l.proxy_protocol.is_some())
    })
}

/// The protocols whose requests reach `table`: those of the listeners
/// using it, and the protocols they carry inside WebSocket upgrades.
/// `None` when no listener uses it (reported on its own).
fn served_protocols(config: &Config, table: &str) -> Option<HashSet<Protocol>> {
    let mut served = HashSet::new();
    let mut used = false;
    for l in config
        .listeners
        .iter()
        .filter(|l| l.route_table.value == table)
    {
        used = true;
        served.extend(l.enabled_protocols());
    }
    let tunnelled = config
        .route_tables
        .iter()
        .filter(|t| t.name.value == table)
        .flat_map(|t| &t.virtual_hosts)
        .flat_map(|v| &v.routes)
        .filter_map(|r| r.websocket.map(|p| p.0));
    served.extend(tunnelled);
    used.then_some(served)
}

/// Whether every request `later` matches is also matched by `earlier`
/// (conservative: `false` when unsure, so a warning is never wrong).
fn covers(earlier: &RouteMatch, later: &RouteMatch) -> bool {
    // A list condition ("one of these") covers a non-empty subset of itself.
    fn list(e: &[String], l: &[String], fold_case: bool) -> bool {
        let eq = |a: &String, b: &String| {
            if fold_case {
                a.eq_ignore_ascii_case(b)
            } else {
                a == b
            }
        };
        e.is_empty() || (!l.is_empty() && l.iter().all(|x| e.iter().any(|y| eq(x, y))))
    }
    fn prefix(e: &Option<String>, l: &Option<String>) -> bool {
        match (e, l) {
            (None, _) => true,
            (Some(e), Some(l)) => l.starts_with(e.as_str()),
            (Some(_), None) => false,
        }
    }
    let protocol = earlier.protocol.is_none() || earlier.protocol == later.protocol;
    let path = match (
        &earlier.path_prefix,
        &earlier.path_exact,
        &earlier.path_regex,
    ) {
        (None, None, None) => true,
        (Some(p), None, None) => {
            later
                .path_prefix
                .as_ref()
                .is_some_and(|l| l.starts_with(p.as_str()))
                || later
                    .path_exact
                    .as_ref()
                    .is_some_and(|l| l.starts_with(p.as_str()))
        }
        (None, Some(x), None) => later.path_exact.as_ref() == Some(x),
        // A regex covers only an identical regex with nothing else on the path.
        (None, None, Some(re)) => {
            later.path_regex.as_ref().map(|r| &r.value) == Some(&re.value)
                && later.path_prefix.is_none()
                && later.path_exact.is_none()
        }
        _ => false,
    };
    let headers = earlier.headers.iter().all(|h| {
        later.headers.iter().any(|l| {
            l.name.eq_ignore_ascii_case(&h.name)
                && l.exact == h.exact
                && l.prefix == h.prefix
                && l.regex.as_ref().map(|r| &r.value) == h.regex.as_ref().map(|r| &r.value)
                && l.present == h.present
        })
    });
    protocol
        && path
        && headers
        && list(&earlier.methods, &later.methods, true)
        && list(&earlier.commands, &later.commands, true)
        && prefix(&earlier.key_prefix, &later.key_prefix)
        && prefix(&earlier.client_id_prefix, &later.client_id_prefix)
        && list(&earlier.users, &later.users, false)
        && list(&earlier.services, &later.services, false)
        && list(&earlier.rpc_methods, &later.rpc_methods, false)
        && list(&earlier.schemas, &later.schemas, false)
        // Destination conditions: covered only by none, or by the same list.
        && (earlier.destination_ports.is_empty()
            || earlier.destination_ports == later.destination_ports)
        && (earlier.destination_ips.is_empty() || earlier.destination_ips == later.destination_ips)
}

/// Clusters no route, mirror, fallback or MySQL query rule names. Skipped
/// when a route picks its cluster from a header (`cluster_header`): then
/// any cluster may be used.
fn unused_clusters(config: &Config, out: &mut Vec<Problem>) {
    let routes = || {
        config
            .route_tables
            .iter()
            .flat_map(|t| &t.virtual_hosts)
            .flat_map(|v| &v.routes)
    };
    if routes().any(|r| r.cluster_header.is_some()) {
        return;
    }
    let mut used: HashSet<&str> = HashSet::new();
    let mirrors = |filters: &'_ [serde_saphyr::Spanned<Filter>]| -> Vec<String> {
        filters
            .iter()
            .filter_map(|f| match &f.value {
                Filter::Mirror(m) => Some(m.cluster.clone()),
                _ => None,
            })
            .collect()
    };
    let mut mirrored = Vec::new();
    for r in routes() {
        used.extend(r.cluster.iter().map(|c| c.value.as_str()));
        used.extend(r.weighted_clusters.iter().map(|w| w.name.value.as_str()));
        used.extend(r.read_cluster.iter().map(|c| c.value.as_str()));
        mirrored.extend(mirrors(&r.filters));
    }
    for l in &config.listeners {
        if let Fallback::TcpProxy(c) = &l.detect.fallback {
            used.insert(c.value.as_str());
        }
        used.extend(l.mysql.query_rules.iter().map(|q| q.cluster.value.as_str()));
        mirrored.extend(mirrors(&l.filters));
    }
    used.extend(mirrored.iter().map(String::as_str));
    for c in &config.clusters {
        if !used.contains(c.name.value.as_str()) {
            warn(
                out,
                c.name.referenced,
                format!("clusters[{}]", c.name.value),
                format!("cluster `{}` is not used by any route", c.name.value),
                "route to it (`cluster:`), or remove it; its health checks still run",
            );
        }
    }
}

fn unused_route_tables(config: &Config, out: &mut Vec<Problem>) {
    for t in &config.route_tables {
        if !config
            .listeners
            .iter()
            .any(|l| l.route_table.value == t.name.value)
        {
            warn(
                out,
                t.name.referenced,
                format!("route_tables[{}]", t.name.value),
                format!("route table `{}` is not used by any listener", t.name.value),
                "name it in a listener's `route_table`, or remove it",
            );
        }
    }
}

/// A wildcard listener (`0.0.0.0:P`, `[::]:P`) and another on port P: the
/// second bind fails at start (identical addresses are already an error).
fn overlapping_listeners(config: &Config, out: &mut Vec<Problem>) {
    for (i, a) in config.listeners.iter().enumerate() {
        for b in &config.listeners[..i] {
            let (x, y) = (a.address.value, b.address.value);
            if x != y
                && x.port() == y.port()
                && x.port() != 0
                && x.is_ipv4() == y.is_ipv4()
                && (x.ip().is_unspecified() || y.ip().is_unspecified())
            {
                warn(
                    out,
                    a.address.referenced,
                    format!("listeners[{}].address", a.name.value),
                    format!(
                        "{x} overlaps listener `{}` on {y}: one of the two cannot bind",
                        b.name.value
                    ),
                    "use one listener on the wildcard address, or different ports",
                );
            }
        }
    }
}

/// A listener on a protocol's well-known port (from the protocol registry,
/// e.g. 11211 for memcached) that does not serve that protocol, nor any
/// other protocol claiming the port: most likely a protocol left out.
fn well_known_ports(config: &Config, out: &mut Vec<Problem>) {
    for l in &config.listeners {
        let port = l.address.value.port();
        let enabled = l.enabled_protocols();
        let claims = |p: &Protocol| p.codec().ports.contains(&port);
        if enabled.iter().any(claims) {
            continue;
        }
        if let Some(p) = Protocol::ALL.iter().find(|p| claims(p)) {
            warn(
                out,
                l.address.referenced,
                format!("listeners[{}].address", l.name.value),
                format!(
                    "port {port} is {p}'s well-known port, but this listener does not serve {p}"
                ),
                &format!("add `{p}` to `protocols` (or use another port if this is intended)"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warns_of_a_well_known_port_without_its_protocol() {
        let yaml = |port: u16, protocols: &str| {
            format!(
                "listeners:
  - {{name: l, address: \"127.0.0.1:{port}\", protocols: [{protocols}], route_table: t}}
route_tables:
  - name: t
    virtual_hosts:
      - {{name: v, domains: ['*'], routes: [{{match: {{protocol: http1}}, direct_response: {{status: 200}}}}]}}
"
            )
        };
        let w = warnings_of(&yaml(11211, "http1"));
        assert_eq!(
            w,
            [
                "listeners[l].address: port 11211 is memcached's well-known port, but this listener does not serve memcached"
            ]
        );
        assert!(warnings_of(&yaml(11211, "http1, memcached")).is_empty());
        assert!(warnings_of(&yaml(10000, "http1")).is_empty());
    }

    fn warnings_of(yaml: &str) -> Vec<String> {
        let config = super::super::load_str(yaml, "t.yaml").expect("config loads");
        warnings(&config)
            .into_iter()
            .map(|p| format!("{}: {}", p.field, p.message))
            .collect()
    }

    const HEAD: &str = r#"
listeners:
  - {name: l, address: "127.0.0.1:1", protocols: [http1, redis], route_table: t}
clusters:
  - {name: a, hosts: ["127.0.0.1:2"]}
  - {name: b, hosts: ["127.0.0.1:3"]}
"#;

    #[test]
    fn a_good_config_has_no_warnings() {
        let w = warnings_of(&format!(
            "{HEAD}route_tables:
  - name: t
    virtual_hosts:
      - name: v
        domains: ['*']
        routes:
          - {{match: {{path_prefix: /api/v2}}, cluster: b}}
          - {{match: {{path_prefix: /api}}, cluster: a}}
          - {{match: {{protocol: redis, commands: [get]}}, cluster: b}}
          - {{match: {{protocol: redis}}, cluster: a}}
"
        ));
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn finds_destination_routes_on_listeners_that_know_no_destination() {
        let table = "route_tables:
  - name: t
    virtual_hosts:
      - name: v
        domains: ['*']
        routes:
          - {name: d, match: {destination_ports: [6379]}, cluster: a}
          - {cluster: b}
";
        let w = warnings_of(&format!("{HEAD}{table}"));
        assert_eq!(
            w,
            [
                "route_tables[t].virtual_hosts[v].routes[0] (d): can never match: no listener using route table `t` knows where its connections were going"
            ]
        );
        let transparent = HEAD.replace("route_table: t}", "route_table: t, transparent: redirect}");
        assert!(warnings_of(&format!("{transparent}{table}")).is_empty());
    }

    #[test]
    fn finds_shadowed_and_unservable_routes() {
        let w = warnings_of(&format!(
            "{HEAD}route_tables:
  - name: t
    virtual_hosts:
      - name: v
        domains: ['*']
        routes:
          - {{match: {{path_prefix: /api}}, cluster: a}}
          - {{name: v2, match: {{path_prefix: /api/v2, methods: [GET]}}, cluster: b}}
          - {{match: {{protocol: redis, commands: [get, set]}}, cluster: a}}
          - {{match: {{protocol: redis, commands: [GET]}}, cluster: b}}
          - {{match: {{protocol: mqtt}}, cluster: b}}
          - {{match: {{}}, cluster: a}}
          - {{match: {{protocol: http1}}, cluster: b}}
"
        ));
        assert_eq!(
            w,
            [
                "route_tables[t].virtual_hosts[v].routes[1] (v2): can never match: routes[0] before it matches every request this one does",
                "route_tables[t].virtual_hosts[v].routes[3]: can never match: routes[2] before it matches every request this one does",
                "route_tables[t].virtual_hosts[v].routes[4]: can never match: no listener using route table `t` serves mqtt (they serve: http1, redis)",
                "route_tables[t].virtual_hosts[v].routes[6]: can never match: routes[5] before it matches every request this one does",
            ]
        );
    }

    #[test]
    fn finds_unused_clusters_tables_and_overlapping_listeners() {
        let w = warnings_of(
            r#"
listeners:
  - {name: any, address: "0.0.0.0:7000", protocols: [http1], route_table: t}
  - {name: lo, address: "127.0.0.1:7000", protocols: [http1], route_table: t}
clusters:
  - {name: used, hosts: ["127.0.0.1:2"]}
  - {name: spare, hosts: ["127.0.0.1:3"]}
  - {name: shadow, hosts: ["127.0.0.1:4"]}
route_tables:
  - name: t
    virtual_hosts:
      - name: v
        domains: ['*']
        routes:
          - match: {}
            cluster: used
            filters: [{mirror: {cluster: shadow}}]
  - name: orphan
    virtual_hosts: [{name: v, domains: ['*'], routes: [{match: {}, cluster: used}]}]
"#,
        );
        assert_eq!(
            w,
            [
                "clusters[spare]: cluster `spare` is not used by any route",
                "route_tables[orphan]: route table `orphan` is not used by any listener",
                "listeners[lo].address: 127.0.0.1:7000 overlaps listener `any` on 0.0.0.0:7000: one of the two cannot bind",
            ]
        );
    }
}
