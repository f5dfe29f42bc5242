//! The router: route tables of virtual hosts and ordered routes, matched on a
//! request's [`Metadata`] (never on protocol structs).
//!
//! A virtual host is chosen by the request's host (exact name, then `*.suffix`,
//! then `prefix.*`, then `*`); requests without a host use the `*` virtual
//! host. Within it, the first route whose conditions all hold wins.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use regex::bytes::Regex;
use switchyard_codecs::{Field, Metadata, Protocol};

use crate::config;
use crate::upstream::Cluster;

/// A compiled route table.
pub struct RouteTable {
    pub name: String,
    exact: HashMap<String, usize>,
    suffixes: Vec<(String, usize)>,
    prefixes: Vec<(String, usize)>,
    any: Option<usize>,
    hosts: Vec<VirtualHost>,
    /// Whether any route has stream filters (else drivers that route only
    /// once per session need not route again per request for them).
    has_filters: bool,
}

struct VirtualHost {
    routes: Vec<Route>,
}

/// A compiled route.
pub struct Route {
    pub name: String,
    protocol: Option<Protocol>,
    conditions: Vec<Condition>,
    pub action: Action,
    /// Overrides the cluster's request timeout.
    pub timeout: Option<Duration>,
    /// Re-send failed requests (`None`: no retry; a route without one costs
    /// the drivers a branch).
    pub retry: Option<Arc<crate::upstream::RetryPolicy>>,
    /// MySQL read/write split: where plain reads go (`None`: the action's cluster).
    pub read_cluster: Option<Arc<Cluster>>,
    /// Stream filters of this route (after the listener's).
    pub filters: crate::filters::chain::FilterChain,
    /// HTTP: what the upstream sees instead of the path and host the
    /// client sent (`None`: nothing to rewrite, one branch per request).
    pub rewrite: Option<Box<Rewrite>>,
    /// `destination_ips` / `destination_ports`: conditions on the
    /// connection's destination (`None`: none, one branch per request).
    destination: Option<Box<DestinationMatch>>,
}

/// A route's conditions on where the connection was going (a transparent
/// listener's original destination, or a PROXY header's destination).
struct DestinationMatch {
    ips: Vec<config::filters::Cidr>,
    ports: Vec<u16>,
}

impl DestinationMatch {
    fn holds(&self, destination: Option<std::net::SocketAddr>) -> bool {
        let Some(d) = destination else {
            return false;
        };
        (self.ips.is_empty() || self.ips.iter().any(|c| c.contains(d.ip())))
            && (self.ports.is_empty() || self.ports.contains(&d.port()))
    }
}

/// A route's rewrites of what goes upstream (`prefix_rewrite`,
/// `regex_rewrite`, `host_rewrite`).
pub struct Rewrite {
    pub path: Option<PathRewrite>,
    /// The literal `Host` / `:authority`.
    pub host: Option<Bytes>,
}

/// How a route rewrites the path it matched.
pub enum PathRewrite {
    /// Replace the matched `path_prefix` with this.
    Prefix { matched: Bytes, with: Bytes },
    /// Replace every match of the regex with the substitution.
    Regex(Regex, Bytes),
    /// Replace the whole path (a redirect's `path`).
    Whole(Bytes),
}

impl PathRewrite {
    /// The path the upstream sees for `path` (the path the route matched on).
    pub fn apply(&self, path: &[u8]) -> Vec<u8> {
        match self {
            PathRewrite::Prefix { matched, with } => {
                let rest = path.strip_prefix(matched.as_ref()).unwrap_or(path);
                let mut out = Vec::with_capacity(with.len() + rest.len());
                out.extend_from_slice(with);
                out.extend_from_slice(rest);
                out
            }
            PathRewrite::Regex(re, with) => re.replace_all(path, with.as_ref()).into_owned(),
            PathRewrite::Whole(p) => p.to_vec(),
        }
    }
}

/// A redirect the gateway answers itself.
pub struct Redirect {
    pub status: u16,
    scheme: Option<Box<str>>,
    host: Option<Box<str>>,
    port: Option<u16>,
    path: Option<PathRewrite>,
    strip_query: bool,
}

impl Redirect {
    /// The `Location` for a request that came by `scheme` to `host` (with
    /// its port, if any) for `path` (the path the route matched) and
    /// `query` (with its `?`, or empty).
    pub fn location(
        &self,
        scheme: &str,
        host: Option<&[u8]>,
        path: &[u8],
        query: &[u8],
    ) -> Vec<u8> {
        let host = host.unwrap_or_default();
        let (req_host, req_port) = split_port(host);
        let mut out = Vec::with_capacity(64 + path.len() + query.len());
        out.extend_from_slice(self.scheme.as_deref().unwrap_or(scheme).as_bytes());
        out.extend_from_slice(b"://");
        match &self.host {
            Some(h) => out.extend_from_slice(h.as_bytes()),
            None => out.extend_from_slice(req_host),
        }
        match (self.port, req_port) {
            (Some(p), _) => out.extend_from_slice(format!(":{p}").as_bytes()),
            // A new host is reached on its scheme's default port unless given one.
            (None, Some(p)) if self.host.is_none() => {
                out.push(b':');
                out.extend_from_slice(p);
            }
            _ => {}
        }
        match &self.path {
            Some(rewrite) => out.extend_from_slice(&rewrite.apply(path)),
            None => out.extend_from_slice(path),
        }
        if !self.strip_query {
            out.extend_from_slice(query);
        }
        out
    }
}

/// `host[:port]` → host and port (IPv6 literals keep their brackets).
fn split_port(host: &[u8]) -> (&[u8], Option<&[u8]>) {
    if let Some(i) = host.iter().rposition(|b| *b == b':') {
        let (h, p) = (&host[..i], &host[i + 1..]);
        let bracketed = !h.starts_with(b"[") || h.ends_with(b"]");
        if !p.is_empty() && p.iter().all(u8::is_ascii_digit) && bracketed {
            return (h, Some(p));
        }
    }
    (host, None)
}

/// What to do with a matched request.
pub enum Action {
    /// Send to this cluster.
    Cluster(Arc<Cluster>),
    /// Send to one of these clusters, chosen by weight.
    Weighted {
        clusters: Vec<Arc<Cluster>>,
        cumulative: Vec<u64>,
    },
    /// Answer from the gateway.
    Direct(DirectResponse),
    /// Answer with a redirect (HTTP).
    Redirect(Redirect),
    /// Send to the cluster a request header names (HTTP).
    ClusterHeader {
        header: Field,
        clusters: HashMap<Bytes, Arc<Cluster>>,
    },
    /// Accept a WebSocket upgrade and serve this protocol inside it.
    WebSocket(Protocol),
    /// Send to the subset of a cluster's hosts whose label equals a request
    /// header's value (canary by header); each subset is precompiled.
    Subset {
        /// The header (or RPC attachment) read.
        header: Field,
        /// Label value → that subset's view of the cluster.
        choices: Vec<(Bytes, Arc<Cluster>)>,
        /// Without the header or a subset for its value: the route's static
        /// subset or whole cluster (`subset_fallback: any`), or an empty view
        /// (`none`, answered as an empty cluster is).
        fallback: Arc<Cluster>,
    },
}

/// A response the gateway makes itself.
pub struct DirectResponse {
    pub status: u16,
    pub content_type: String,
    pub body: Bytes,
}

impl Action {
    /// The cluster to use for one request (weighted choice where configured).
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        match self {
            Action::Cluster(c) => Some(c),
            Action::Weighted {
                clusters,
                cumulative,
            } => {
                let total = *cumulative.last()?;
                let r = rand::random_range(0..total);
                clusters.get(cumulative.partition_point(|c| *c <= r))
            }
            Action::Subset { fallback, .. } => Some(fallback),
            Action::Direct(_)
            | Action::WebSocket(_)
            | Action::Redirect(_)
            | Action::ClusterHeader { .. } => None,
        }
    }

    /// The cluster (or subset view) for `req`: as [`Action::cluster`], and
    /// for subset-by-header routes the subset the request's header selects.
    /// No allocation: a scan of the route's few label values.
    pub fn cluster_for(&self, req: &dyn Metadata) -> Option<&Arc<Cluster>> {
        match self {
            Action::Subset {
                header,
                choices,
                fallback,
            } => {
                let value = req.get(header);
                let chosen = value.and_then(|v| {
                    choices
                        .iter()
                        .find(|(label, _)| label.as_ref() == v)
                        .map(|(_, c)| c)
                });
                Some(chosen.unwrap_or(fallback))
            }
            Action::ClusterHeader { header, clusters } => {
                req.get(header).and_then(|name| clusters.get(name))
            }
            other => other.cluster(),
        }
    }
}

struct Condition {
    field: Field,
    test: Test,
}

enum Test {
    Exact(Vec<u8>),
    Prefix(Vec<u8>),
    Regex(Regex),
    /// One of these values, ASCII case-insensitively.
    AnyOf(Vec<Vec<u8>>),
    /// One of these values exactly.
    In(Vec<Vec<u8>>),
    Present(bool),
}

impl Condition {
    fn holds(&self, req: &dyn Metadata) -> bool {
        let value = req.get(&self.field);
        let ci = self.field.case_insensitive();
        match (&self.test, value) {
            (Test::Present(want), v) => v.is_some() == *want,
            (_, None) => false,
            (Test::Exact(x), Some(v)) => {
                if ci {
                    v.eq_ignore_ascii_case(x)
                } else {
                    v == x.as_slice()
                }
            }
            (Test::Prefix(x), Some(v)) => v.starts_with(x),
            (Test::Regex(re), Some(v)) => re.is_match(v),
            (Test::AnyOf(xs), Some(v)) => xs.iter().any(|x| v.eq_ignore_ascii_case(x)),
            (Test::In(xs), Some(v)) => xs.iter().any(|x| v == x.as_slice()),
        }
    }
}

impl Route {
    fn matches(
        &self,
        protocol: Protocol,
        req: &dyn Metadata,
        destination: Option<std::net::SocketAddr>,
    ) -> bool {
        self.protocol.is_none_or(|p| p == protocol)
            && self.conditions.iter().all(|c| c.holds(req))
            && self
                .destination
                .as_ref()
                .is_none_or(|d| d.holds(destination))
    }
}

impl RouteTable {
    /// Compile a validated table; `clusters` holds every compiled cluster by name.
    pub fn new(t: &config::RouteTable, clusters: &HashMap<String, Arc<Cluster>>) -> Self {
        let mut table = RouteTable {
            name: t.name.value.clone(),
            exact: HashMap::new(),
            suffixes: Vec::new(),
            prefixes: Vec::new(),
            any: None,
            hosts: Vec::new(),
            has_filters: false,
        };
        for (i, v) in t.virtual_hosts.iter().enumerate() {
            for d in &v.domains {
                let d = d.value.to_ascii_lowercase();
                if d == "*" {
                    table.any.get_or_insert(i);
                } else if let Some(suffix) = d.strip_prefix('*') {
                    table.suffixes.push((suffix.to_owned(), i));
                } else if let Some(prefix) = d.strip_suffix('*') {
                    table.prefixes.push((prefix.to_owned(), i));
                } else {
                    table.exact.entry(d).or_insert(i);
                }
            }
            // Longest suffix/prefix first, as Envoy.
            table
                .suffixes
                .sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
            table
                .prefixes
                .sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
            let routes = v
                .routes
                .iter()
                .enumerate()
                .map(|(k, r)| compile_route(r, k, clusters))
                .collect::<Vec<_>>();
            table.hosts.push(VirtualHost { routes });
        }
        table.has_filters = table
            .hosts
            .iter()
            .any(|v| v.routes.iter().any(|r| !r.filters.is_empty()));
        table
    }

    /// Whether some route of the table has stream filters.
    pub fn has_filters(&self) -> bool {
        self.has_filters
    }

    /// The route for a request of `protocol` on a connection whose
    /// destination is unknown, or `None` (answer "no route"): routes with
    /// `destination_*` conditions never match.
    pub fn route(&self, protocol: Protocol, req: &dyn Metadata) -> Option<&Route> {
        self.route_to(protocol, req, None)
    }

    /// The route for a request of `protocol` on a connection to
    /// `destination` (its original destination on a transparent listener,
    /// a PROXY header's destination), or `None` (answer "no route").
    pub fn route_to(
        &self,
        protocol: Protocol,
        req: &dyn Metadata,
        destination: Option<std::net::SocketAddr>,
    ) -> Option<&Route> {
        let vhost = self.virtual_host(req.get(&Field::Host))?;
        vhost
            .routes
            .iter()
            .find(|r| r.matches(protocol, req, destination))
    }

    fn virtual_host(&self, host: Option<&[u8]>) -> Option<&VirtualHost> {
        let index = match host.and_then(|h| std::str::from_utf8(h).ok()) {
            None => self.any,
            Some(h) => {
                let h = strip_port(h).to_ascii_lowercase();
                self.exact
                    .get(&h)
                    .copied()
                    .or_else(|| {
                        self.suffixes
                            .iter()
                            .find(|(s, _)| h.ends_with(s.as_str()))
                            .map(|(_, i)| *i)
                    })
                    .or_else(|| {
                        self.prefixes
                            .iter()
                            .find(|(p, _)| h.starts_with(p.as_str()))
                            .map(|(_, i)| *i)
                    })
                    .or(self.any)
            }
        };
        self.hosts.get(index?)
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // [v6]:port
        return host
            .split_once(']')
            .map_or(host, |(h, _)| h.trim_start_matches('['));
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

fn compile_route(
    r: &config::Route,
    index: usize,
    clusters: &HashMap<String, Arc<Cluster>>,
) -> Route {
    let m = &r.matcher;
    let mut conditions = Vec::new();
    let bytes = |s: &str| s.as_bytes().to_vec();
    if !m.methods.is_empty() {
        conditions.push(Condition {
            field: Field::Method,
            test: Test::AnyOf(m.methods.iter().map(|s| bytes(s)).collect()),
        });
    }
    if let Some(p) = &m.path_exact {
        conditions.push(Condition {
            field: Field::Path,
            test: Test::Exact(bytes(p)),
        });
    }
    if let Some(p) = &m.path_prefix {
        conditions.push(Condition {
            field: Field::Path,
            test: Test::Prefix(bytes(p)),
        });
    }
    if let Some(re) = m.path_regex.as_ref().and_then(|re| anchored(&re.value)) {
        conditions.push(Condition {
            field: Field::Path,
            test: Test::Regex(re),
        });
    }
    for h in &m.headers {
        let field = Field::Header(h.name.clone());
        if let Some(x) = &h.exact {
            conditions.push(Condition {
                field: field.clone(),
                test: Test::Exact(bytes(x)),
            });
        }
        if let Some(x) = &h.prefix {
            conditions.push(Condition {
                field: field.clone(),
                test: Test::Prefix(bytes(x)),
            });
        }
        if let Some(re) = h.regex.as_ref().and_then(|re| anchored(&re.value)) {
            conditions.push(Condition {
                field: field.clone(),
                test: Test::Regex(re),
            });
        }
        let present = h
            .present
            .unwrap_or(h.exact.is_none() && h.prefix.is_none() && h.regex.is_none());
        if present || h.present == Some(false) {
            conditions.push(Condition {
                field,
                test: Test::Present(present),
            });
        }
    }
    if !m.commands.is_empty() {
        conditions.push(Condition {
            field: Field::Command,
            test: Test::AnyOf(m.commands.iter().map(|s| bytes(s)).collect()),
        });
    }
    if let Some(p) = &m.key_prefix {
        conditions.push(Condition {
            field: Field::Key,
            test: Test::Prefix(bytes(p)),
        });
    }
    if let Some(p) = &m.client_id_prefix {
        conditions.push(Condition {
            field: Field::ClientId,
            test: Test::Prefix(bytes(p)),
        });
    }
    if !m.users.is_empty() {
        conditions.push(Condition {
            field: Field::User,
            test: Test::In(m.users.iter().map(|u| bytes(u)).collect()),
        });
    }
    if !m.services.is_empty() {
        conditions.push(Condition {
            field: Field::Service,
            test: Test::In(m.services.iter().map(|s| bytes(s)).collect()),
        });
    }
    if !m.rpc_methods.is_empty() {
        conditions.push(Condition {
            field: Field::RpcMethod,
            test: Test::In(m.rpc_methods.iter().map(|s| bytes(s)).collect()),
        });
    }
    if !m.schemas.is_empty() {
        conditions.push(Condition {
            field: Field::Database,
            test: Test::In(m.schemas.iter().map(|s| bytes(s)).collect()),
        });
    }
    let lookup = |name: &str| clusters.get(name).cloned();
    let action = if let Some(p) = r.websocket {
        Action::WebSocket(p.0)
    } else if let Some(d) = &r.redirect {
        let d = &d.value;
        let path = match (&d.path, &d.prefix_rewrite, &m.path_prefix) {
            (Some(p), _, _) => Some(PathRewrite::Whole(Bytes::from(p.clone()))),
            (None, Some(with), Some(matched)) => Some(PathRewrite::Prefix {
                matched: Bytes::from(matched.clone()),
                with: Bytes::from(with.clone()),
            }),
            _ => None,
        };
        Action::Redirect(Redirect {
            status: d.status,
            scheme: d.scheme.as_deref().map(Into::into),
            host: d.host.as_deref().map(Into::into),
            port: d.port,
            path,
            strip_query: d.strip_query,
        })
    } else if let Some(h) = &r.cluster_header {
        Action::ClusterHeader {
            header: Field::Header(h.value.to_ascii_lowercase()),
            clusters: clusters
                .iter()
                .map(|(name, c)| (Bytes::from(name.clone()), c.clone()))
                .collect(),
        }
    } else if let Some(d) = &r.direct_response {
        Action::Direct(DirectResponse {
            status: d.status,
            content_type: d.content_type.clone(),
            body: Bytes::from(d.body.clone()),
        })
    } else if let Some(c) = r.cluster.as_ref().and_then(|c| lookup(&c.value)) {
        subset_action(r, c)
    } else {
        let mut total = 0u64;
        let mut cumulative = Vec::new();
        let mut list = Vec::new();
        for w in &r.weighted_clusters {
            if let Some(c) = lookup(&w.name.value) {
                total += u64::from(w.weight);
                cumulative.push(total);
                list.push(c);
            }
        }
        Action::Weighted {
            clusters: list,
            cumulative,
        }
    };
    let name = r.name.clone().unwrap_or_else(|| format!("route{index}"));
    let path_rewrite = match (&r.prefix_rewrite, &r.regex_rewrite, &m.path_prefix) {
        (Some(with), _, Some(matched)) => Some(PathRewrite::Prefix {
            matched: Bytes::from(matched.clone()),
            with: Bytes::from(with.value.clone()),
        }),
        (_, Some(re), _) => Regex::new(&re.value.pattern)
            .ok()
            .map(|pattern| PathRewrite::Regex(pattern, Bytes::from(re.value.substitution.clone()))),
        _ => None,
    };
    let host_rewrite = r
        .host_rewrite
        .as_ref()
        .map(|h| Bytes::from(h.value.clone()));
    let rewrite = (path_rewrite.is_some() || host_rewrite.is_some()).then(|| {
        Box::new(Rewrite {
            path: path_rewrite,
            host: host_rewrite,
        })
    });
    let destination =
        (!m.destination_ips.is_empty() || !m.destination_ports.is_empty()).then(|| {
            Box::new(DestinationMatch {
                ips: m.destination_ips.clone(),
                ports: m.destination_ports.clone(),
            })
        });
    Route {
        rewrite,
        destination,
        filters: crate::filters::chain::FilterChain::new(&r.filters, &format!("route:{name}")),
        name,
        protocol: m.protocol.map(|p| p.0),
        conditions,
        action,
        timeout: r.timeout.map(|t| t.get()),
        retry: r
            .retry
            .as_ref()
            .map(|p| Arc::new(crate::upstream::RetryPolicy::new(&p.value))),
        read_cluster: r.read_cluster.as_ref().and_then(|c| lookup(&c.value)),
    }
}

/// A route to cluster `c`, narrowed to its `subset` and `subset_from_header`
/// (views precompiled here, so choosing one costs a compare per label value).
fn subset_action(r: &config::Route, c: Arc<Cluster>) -> Action {
    let base = match &r.subset {
        Some(selector) => Arc::new(c.subset(&c.hosts_labelled(&selector.value))),
        None => c.clone(),
    };
    let Some(from) = &r.subset_from_header else {
        return Action::Cluster(base);
    };
    let fixed = r
        .subset
        .as_ref()
        .map(|s| s.value.clone())
        .unwrap_or_default();
    let choices = c
        .label_values(&from.value.label)
        .into_iter()
        .filter_map(|value| {
            let mut selector = fixed.clone();
            if selector
                .insert(from.value.label.clone(), value.clone())
                .is_some_and(|v| v != value)
            {
                return None;
            }
            let hosts = c.hosts_labelled(&selector);
            (!hosts.is_empty()).then(|| (Bytes::from(value), Arc::new(c.subset(&hosts))))
        })
        .collect();
    let fallback = match r.subset_fallback {
        config::SubsetFallback::Any => base,
        config::SubsetFallback::None => Arc::new(c.subset(&[])),
    };
    Action::Subset {
        header: Field::Header(from.value.header.clone()),
        choices,
        fallback,
    }
}

/// Regexes match the whole value, as Envoy's `safe_regex`.
fn anchored(re: &str) -> Option<Regex> {
    Regex::new(&format!("^(?:{re})$")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap as Map;

    struct Req(Map<Field, &'static str>);
    impl Metadata for Req {
        fn get(&self, field: &Field) -> Option<&[u8]> {
            self.0.get(field).map(|s| s.as_bytes())
        }
    }
    fn req(fields: &[(Field, &'static str)]) -> Req {
        Req(fields.iter().cloned().collect())
    }

    fn table() -> RouteTable {
        let yaml = r#"
listeners: [{name: l, address: "127.0.0.1:1", protocols: [http1, redis], route_table: t}]
clusters:
  - {name: api, hosts: ["127.0.0.1:2"]}
  - {name: users, hosts: ["127.0.0.1:3"]}
  - {name: cache, hosts: ["127.0.0.1:4"]}
  - {name: wild, hosts: ["127.0.0.1:5"]}
route_tables:
  - name: t
    virtual_hosts:
      - name: example
        domains: ["example.com"]
        routes:
          - {name: api, match: {path_prefix: /api, methods: [get, POST]}, cluster: api}
          - {name: exact, match: {path_exact: /users}, cluster: users}
          - {name: re, match: {path_regex: "/u/[0-9]+"}, cluster: users}
          - {name: hdr, match: {headers: [{name: x-canary, exact: "1"}]}, cluster: users}
          - {name: fallback, direct_response: {status: 404, body: nope}}
      - name: wildcard
        domains: ["*.example.org"]
        routes: [{name: wild, cluster: wild}]
      - name: default
        domains: ["*"]
        routes:
          - {name: users-keys, match: {protocol: redis, key_prefix: "user:"}, cluster: users}
          - {name: reads, match: {protocol: redis, commands: [get, mget]}, cluster: cache}
          - {name: redis-rest, match: {protocol: redis}, cluster: cache}
"#;
        compile(yaml)
    }

    /// The first route table of a config, compiled with its clusters.
    fn compile(yaml: &str) -> RouteTable {
        let cfg = crate::config::load_str(yaml, "t.yaml").unwrap();
        let clusters: HashMap<String, Arc<Cluster>> = cfg
            .clusters
            .iter()
            .map(|c| (c.name.value.clone(), Arc::new(Cluster::new(c))))
            .collect();
        RouteTable::new(&cfg.route_tables[0], &clusters)
    }

    fn name(t: &RouteTable, p: Protocol, r: &Req) -> Option<String> {
        t.route(p, r).map(|r| r.name.clone())
    }

    #[test]
    fn destination_conditions_match_the_connections_destination() {
        let t = compile(
            r#"
listeners: [{name: l, address: "127.0.0.1:1", protocols: [redis], route_table: t, transparent: redirect}]
clusters:
  - {name: out, type: original_dst}
route_tables:
  - name: t
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - {name: redis-lan, match: {destination_ips: ["10.1.0.0/16"], destination_ports: [6379]}, cluster: out}
          - {name: port-6380, match: {destination_ports: [6380, 6381]}, cluster: out}
          - {name: rest, cluster: out}
"#,
        );
        let req = req(&[(Field::Command, "GET")]);
        let to = |d: &str| {
            t.route_to(Protocol::Redis, &req, Some(d.parse().unwrap()))
                .map(|r| r.name.clone())
        };
        assert_eq!(to("10.1.2.3:6379").as_deref(), Some("redis-lan"));
        assert_eq!(
            to("10.2.2.3:6379").as_deref(),
            Some("rest"),
            "outside the block"
        );
        assert_eq!(to("10.1.2.3:6381").as_deref(), Some("port-6380"));
        assert_eq!(
            to("[::ffff:10.1.0.9]:6379").as_deref(),
            Some("redis-lan"),
            "v4-mapped"
        );
        assert_eq!(
            name(&t, Protocol::Redis, &req).as_deref(),
            Some("rest"),
            "no destination known: destination conditions do not hold"
        );
    }

    #[test]
    fn redirect_locations_and_path_rewrites() {
        let r = Redirect {
            status: 301,
            scheme: None,
            host: None,
            port: None,
            path: Some(PathRewrite::Prefix {
                matched: Bytes::from_static(b"/old/"),
                with: Bytes::from_static(b"/new/"),
            }),
            strip_query: false,
        };
        let loc = |host: &str| {
            String::from_utf8(r.location("http", Some(host.as_bytes()), b"/old/x", b"?q=1"))
                .unwrap()
        };
        assert_eq!(loc("a.example:8080"), "http://a.example:8080/new/x?q=1");
        assert_eq!(loc("[::1]:81"), "http://[::1]:81/new/x?q=1");
        assert_eq!(loc("[::1]"), "http://[::1]/new/x?q=1");
        let moved = Redirect {
            status: 308,
            scheme: Some("https".into()),
            host: Some("b.example".into()),
            port: None,
            path: Some(PathRewrite::Whole(Bytes::from_static(b"/there"))),
            strip_query: true,
        };
        assert_eq!(
            moved.location("http", Some(b"a.example:8080"), b"/x", b"?q"),
            b"https://b.example/there"
        );
        let re = PathRewrite::Regex(
            Regex::new("^/v([0-9]+)/(.*)$").unwrap(),
            Bytes::from_static(b"/api/$2/v$1"),
        );
        assert_eq!(re.apply(b"/v2/users"), b"/api/users/v2");
        assert_eq!(re.apply(b"/other"), b"/other", "no match: unchanged");
    }

    #[test]
    fn http_routes_by_host_method_path_and_header() {
        let t = table();
        let h = Protocol::Http1;
        let host = (Field::Host, "Example.com:8080");
        let get = |p| req(&[host.clone(), (Field::Method, "GET"), (Field::Path, p)]);
        assert_eq!(name(&t, h, &get("/api/v1")).as_deref(), Some("api"));
        assert_eq!(name(&t, h, &get("/users")).as_deref(), Some("exact"));
        assert_eq!(name(&t, h, &get("/users/1")).as_deref(), Some("fallback"));
        assert_eq!(name(&t, h, &get("/u/42")).as_deref(), Some("re"));
        assert_eq!(
            name(&t, h, &get("/u/42x")).as_deref(),
            Some("fallback"),
            "regex is anchored"
        );
        let delete = req(&[
            host.clone(),
            (Field::Method, "DELETE"),
            (Field::Path, "/api"),
        ]);
        assert_eq!(name(&t, h, &delete).as_deref(), Some("fallback"));
        let canary = req(&[
            host,
            (Field::Path, "/x"),
            (Field::Header("x-canary".into()), "1"),
        ]);
        assert_eq!(name(&t, h, &canary).as_deref(), Some("hdr"));
        let wild = req(&[(Field::Host, "a.b.example.org"), (Field::Path, "/")]);
        assert_eq!(name(&t, h, &wild).as_deref(), Some("wild"));
        let other = req(&[(Field::Host, "other.net"), (Field::Path, "/")]);
        assert_eq!(
            name(&t, h, &other),
            None,
            "the * host has only redis routes"
        );
    }

    #[test]
    fn redis_routes_by_command_and_key_on_the_default_host() {
        let t = table();
        let r = Protocol::Redis;
        let cmd = |c, k| req(&[(Field::Command, c), (Field::Key, k)]);
        assert_eq!(
            name(&t, r, &cmd("GET", "user:1")).as_deref(),
            Some("users-keys")
        );
        assert_eq!(name(&t, r, &cmd("get", "x")).as_deref(), Some("reads"));
        assert_eq!(
            name(&t, r, &req(&[(Field::Command, "PING")])).as_deref(),
            Some("redis-rest")
        );
    }

    #[test]
    fn subsets_by_label_and_by_header_with_fallbacks() {
        let yaml = r#"
listeners: [{name: l, address: "127.0.0.1:1", protocols: [http1], route_table: t}]
clusters:
  - name: web
    hosts:
      - {address: "127.0.0.1:2", labels: {version: v1, zone: a}}
      - {address: "127.0.0.1:3", labels: {version: v2, zone: a}}
      - {address: "127.0.0.1:4", labels: {version: v2, zone: b}}
      - "127.0.0.1:5"
route_tables:
  - name: t
    virtual_hosts:
      - name: any
        domains: ["*"]
        routes:
          - {name: zone-b, match: {path_prefix: /b}, cluster: web, subset: {zone: b}}
          - name: strict
            match: {path_prefix: /strict}
            cluster: web
            subset_from_header: {header: x-version, label: version}
            subset_fallback: none
          - name: canary
            cluster: web
            subset: {zone: a}
            subset_from_header: {header: x-version, label: version}
"#;
        let t = compile(yaml);
        let ports = |path: &'static str, version: Option<&'static str>| {
            let mut fields = vec![(Field::Path, path)];
            fields.extend(version.map(|v| (Field::Header("x-version".into()), v)));
            let r = req(&fields);
            let route = t.route(Protocol::Http1, &r).unwrap();
            let c = route.action.cluster_for(&r).unwrap();
            let mut p: Vec<u16> = c.hosts.iter().map(|h| h.address.port()).collect();
            p.sort_unstable();
            p
        };
        assert_eq!(ports("/b", None), [4]);
        assert_eq!(
            ports("/b", Some("v1")),
            [4],
            "a static subset ignores headers"
        );
        assert_eq!(ports("/strict", Some("v2")), [3, 4]);
        assert_eq!(ports("/strict", Some("v1")), [2]);
        assert_eq!(ports("/strict", Some("v9")), [0u16; 0], "none: no host");
        assert_eq!(ports("/strict", None), [0u16; 0]);
        // Header within the static subset (zone a), else the zone-a hosts.
        assert_eq!(ports("/", Some("v2")), [3]);
        assert_eq!(ports("/", Some("v1")), [2]);
        assert_eq!(ports("/", Some("v9")), [2, 3]);
        assert_eq!(ports("/", None), [2, 3]);
    }

    #[test]
    fn rpc_routes_by_service_and_method_exactly() {
        let yaml = r#"
listeners: [{name: l, address: "127.0.0.1:1", protocols: [dubbo, bolt], route_table: t}]
clusters:
  - {name: a, hosts: ["127.0.0.1:2"]}
  - {name: b, hosts: ["127.0.0.1:3"]}
route_tables:
  - name: t
    virtual_hosts:
      - name: any
        domains: ["*"]
        routes:
          - {name: calc-plus, match: {services: [com.example.Calc], rpc_methods: [plus, minus]}, cluster: a}
          - {name: calc, match: {protocol: dubbo, services: [com.example.Calc, "com.example.Calc:1.0"]}, cluster: a}
          - {name: echo, match: {rpc_methods: [echo]}, cluster: b}
"#;
        let t = compile(yaml);
        let d = Protocol::Dubbo;
        let call = |s, m| req(&[(Field::Service, s), (Field::RpcMethod, m)]);
        let calc = "com.example.Calc";
        assert_eq!(
            name(&t, d, &call(calc, "plus")).as_deref(),
            Some("calc-plus")
        );
        assert_eq!(
            name(&t, d, &call(calc, "minus")).as_deref(),
            Some("calc-plus")
        );
        assert_eq!(name(&t, d, &call(calc, "times")).as_deref(), Some("calc"));
        assert_eq!(
            name(&t, Protocol::Bolt, &call(calc, "times")),
            None,
            "the `calc` route is Dubbo only"
        );
        assert_eq!(
            name(&t, d, &call("com.example.calc", "times")),
            None,
            "services match case-sensitively"
        );
        assert_eq!(
            name(&t, d, &call("com.example.Calc.Sub", "times")),
            None,
            "services match exactly, not by prefix"
        );
        assert_eq!(
            name(&t, d, &call(calc, "Plus")).as_deref(),
            Some("calc"),
            "methods match case-sensitively"
        );
        assert_eq!(
            name(&t, d, &call("com.example.Other", "echo")).as_deref(),
            Some("echo")
        );
        let no_method = req(&[(Field::Service, "com.example.Calc:1.0")]);
        assert_eq!(
            name(&t, d, &no_method).as_deref(),
            Some("calc"),
            "a request without a method fails only method conditions"
        );
        assert_eq!(name(&t, Protocol::Bolt, &no_method), None);
    }

    #[test]
    fn strips_ports() {
        assert_eq!(strip_port("a.com:80"), "a.com");
        assert_eq!(strip_port("[::1]:80"), "::1");
        assert_eq!(strip_port("a.com"), "a.com");
    }
}
