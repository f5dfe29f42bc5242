//! Reading a config file and checking it: syntax and types (serde), then
//! cross-references, duplicates and values. Every problem is reported as
//! `file:line:column: field: what is wrong (hint)`.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

use serde_saphyr::{Location, Spanned};

use super::{Config, Fallback, Host, LbPolicy};

/// One thing wrong with a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line and column, when known.
    pub line: u64,
    pub column: u64,
    /// The field, as a path (`clusters[redis].hosts[0]`).
    pub field: String,
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
}

/// A config file that cannot be used, with every problem found in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(
                f,
                "{}:{}:{}: {}: {}",
                self.file, p.line, p.column, p.field, p.message
            )?;
            if let Some(hint) = &p.hint {
                write!(f, " ({hint})")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Read and check the config file at `path`.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: file.clone(),
        problems: vec![Problem {
            line: 0,
            column: 0,
            field: "(file)".into(),
            message: format!("cannot read the file: {e}"),
            hint: Some("check the path given with -c".into()),
        }],
    })?;
    load_str(&text, &file)
}

/// Parse and check config `text`; `file` names it in error messages.
pub fn load_str(text: &str, file: &str) -> Result<Config, ConfigError> {
    let config: Config = serde_saphyr::from_str(text).map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((0, 0));
        ConfigError {
            file: file.to_owned(),
            problems: vec![Problem {
                line,
                column,
                field: "(syntax)".into(),
                message: first_line(&e.to_string()),
                hint: Some("see docs/config.md for every field".into()),
            }],
        }
    })?;
    let problems = validate(&config);
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError {
            file: file.to_owned(),
            problems,
        })
    }
}

fn first_line(s: &str) -> String {
    // serde-saphyr renders a snippet after the message and repeats the
    // location before it; keep the message alone.
    let line = s.lines().next().unwrap_or(s).trim();
    let line = line.strip_prefix("error: ").unwrap_or(line);
    match line
        .strip_prefix("line ")
        .and_then(|rest| rest.split_once(": "))
    {
        Some((position, message)) if position.contains("column") => message.to_owned(),
        _ => line.to_owned(),
    }
}

struct Checker {
    problems: Vec<Problem>,
}

impl Checker {
    fn at(&mut self, loc: Location, field: String, message: String, hint: Option<&str>) {
        self.problems.push(Problem {
            line: loc.line(),
            column: loc.column(),
            field,
            message,
            hint: hint.map(str::to_owned),
        });
    }

    fn unique<'a>(&mut self, what: &str, names: impl Iterator<Item = &'a Spanned<String>>) {
        let mut seen = HashSet::new();
        for name in names {
            if !seen.insert(name.value.as_str()) {
                self.at(
                    name.referenced,
                    format!("{what}[{}].name", name.value),
                    format!("duplicate {what} name `{}`", name.value),
                    Some("names must be unique"),
                );
            }
        }
    }
}

/// Check cross-references, duplicates and values; returns every problem found.
pub fn validate(config: &Config) -> Vec<Problem> {
    let mut c = Checker {
        problems: Vec::new(),
    };
    let clusters: HashSet<&str> = config
        .clusters
        .iter()
        .map(|c| c.name.value.as_str())
        .collect();
    let tables: HashSet<&str> = config
        .route_tables
        .iter()
        .map(|t| t.name.value.as_str())
        .collect();
    let cluster_hint = format!("defined clusters: {}", sorted(&clusters));

    if config.listeners.is_empty() {
        c.problems.push(Problem {
            line: 1,
            column: 1,
            field: "listeners".into(),
            message: "no listener is defined".into(),
            hint: Some(
                "add at least one listener with a name, an address and a route_table".into(),
            ),
        });
    }
    validate_admin(&mut c, &config.admin);
    if let Some(t) = &config.tracing {
        validate_tracing(&mut c, t);
    }
    c.unique("listeners", config.listeners.iter().map(|l| &l.name));
    c.unique("route_tables", config.route_tables.iter().map(|t| &t.name));
    c.unique("clusters", config.clusters.iter().map(|c| &c.name));

    for cl in &config.clusters {
        if cl
            .circuit_breakers
            .as_ref()
            .is_some_and(|b| b.max_requests == Some(0))
        {
            c.at(
                cl.name.referenced,
                format!("clusters[{}].circuit_breakers.max_requests", cl.name.value),
                "a limit of 0 refuses every request".into(),
                Some("give the most requests in flight to the cluster, at least 1"),
            );
        }
        if let Some(b) = &cl.circuit_breakers {
            if b.max_connections == Some(0) {
                c.at(
                    cl.name.referenced,
                    format!(
                        "clusters[{}].circuit_breakers.max_connections",
                        cl.name.value
                    ),
                    "a limit of 0 connections refuses every request".into(),
                    Some("give the most connections open to the cluster's hosts at once, at least 1, or leave it out for no limit"),
                );
            }
            if b.max_pending.is_some() && b.max_connections.is_none() {
                c.at(
                    cl.name.referenced,
                    format!("clusters[{}].circuit_breakers.max_pending", cl.name.value),
                    "max_pending counts requests waiting under max_connections, which is not set"
                        .into(),
                    Some("set circuit_breakers.max_connections too, or remove max_pending"),
                );
            }
        }
    }

    let mut addresses = HashSet::new();
    for l in &config.listeners {
        let field = |f: &str| format!("listeners[{}].{f}", l.name.value);
        let serves: Vec<_> = l
            .protocol
            .iter()
            .chain(&l.protocols)
            .map(|p| p.value.0)
            .collect();
        validate_filters(&mut c, &l.filters, &field("filters"), &clusters, &serves);
        if let Some(log) = &l.access_log {
            validate_access_log(&mut c, log, &field("access_log"));
        }
        if !addresses.insert(l.address.value) {
            c.at(
                l.address.referenced,
                field("address"),
                format!("address {} is used by another listener", l.address.value),
                Some("give each listener its own port"),
            );
        }
        match (&l.protocol, l.protocols.is_empty()) {
            (Some(p), false) => c.at(
                p.referenced,
                field("protocol"),
                "both `protocol` and `protocols` are set".into(),
                Some("use `protocol` for one fixed protocol or `protocols` to sniff several"),
            ),
            (None, true) => c.at(
                l.name.referenced,
                field("protocols"),
                "no protocol is enabled".into(),
                Some("add e.g. `protocols: [http1, redis]` or `protocol: mysql`"),
            ),
            _ => {}
        }
        if l.protocols.len() > 1 || l.protocol.is_none() {
            for p in &l.protocols {
                if p.value.0.server_speaks_first() {
                    c.at(
                        p.referenced,
                        field("protocols"),
                        format!("{} cannot be sniffed: its server speaks first", p.value.0),
                        Some(&format!(
                            "give it a listener of its own with `protocol: {}`",
                            p.value.0
                        )),
                    );
                }
            }
        }
        if !tables.contains(l.route_table.value.as_str()) {
            c.at(
                l.route_table.referenced,
                field("route_table"),
                format!("no route table is named `{}`", l.route_table.value),
                Some(&format!("defined route tables: {}", sorted(&tables))),
            );
        }
        if let Fallback::TcpProxy(cluster) = &l.detect.fallback
            && !clusters.contains(cluster.value.as_str())
        {
            c.at(
                cluster.referenced,
                field("detect.fallback.tcp_proxy"),
                format!("no cluster is named `{}`", cluster.value),
                Some(&cluster_hint),
            );
        }
        if let Some(auth) = &l.rtsp.auth
            && auth.users.is_empty()
        {
            c.at(
                l.name.referenced,
                field("rtsp.auth.users"),
                "RTSP auth is on but lists no user".into(),
                Some("add `users: [{username: NAME, password: SECRET}]` or remove `rtsp.auth`"),
            );
        }
        if l.rtsp.max_head_bytes < 256 || l.rtsp.max_body_bytes > 16 * 1024 * 1024 {
            c.at(
                l.name.referenced,
                field("rtsp"),
                "rtsp.max_head_bytes under 256 or rtsp.max_body_bytes over 16777216".into(),
                Some("the defaults (16384 and 65536) fit any SDP a camera sends"),
            );
        }
        if let Some(tls) = &l.tls {
            validate_tls(&mut c, tls, l.name.referenced, &field("tls"));
        }
        if l.detect.max_bytes == 0 || l.detect.max_bytes > 1024 * 1024 {
            c.at(
                l.name.referenced,
                field("detect.max_bytes"),
                format!("{} is out of range", l.detect.max_bytes),
                Some("use 1..=1048576; 8192 is plenty for every protocol"),
            );
        }
    }

    for i in super::proxy_protocol::validate(config) {
        c.at(i.at, i.field, i.message, Some(&i.hint));
    }

    for t in &config.route_tables {
        c.unique("virtual_hosts", t.virtual_hosts.iter().map(|v| &v.name));
        for v in &t.virtual_hosts {
            let vfield = format!(
                "route_tables[{}].virtual_hosts[{}]",
                t.name.value, v.name.value
            );
            if v.domains.is_empty() {
                c.at(
                    v.name.referenced,
                    format!("{vfield}.domains"),
                    "no domain is listed".into(),
                    Some("list host names, or `*` for any host"),
                );
            }
            for (i, r) in v.routes.iter().enumerate() {
                let rfield = format!("{vfield}.routes[{i}]");
                let serves: Vec<_> = r.matcher.protocol.iter().map(|p| p.0).collect();
                validate_filters(
                    &mut c,
                    &r.filters,
                    &format!("{rfield}.filters"),
                    &clusters,
                    &serves,
                );
                if let Some(retry) = &r.retry {
                    validate_retry(&mut c, retry, &format!("{rfield}.retry"));
                }
                let actions = usize::from(r.cluster.is_some())
                    + usize::from(!r.weighted_clusters.is_empty())
                    + usize::from(r.direct_response.is_some())
                    + usize::from(r.websocket.is_some())
                    + usize::from(r.redirect.is_some())
                    + usize::from(r.cluster_header.is_some());
                if actions != 1 {
                    let loc = r
                        .cluster
                        .as_ref()
                        .map(|s| s.referenced)
                        .unwrap_or(v.name.referenced);
                    c.at(
                        loc,
                        rfield.clone(),
                        format!("a route needs exactly one action, found {actions}"),
                        Some("set one of `cluster`, `weighted_clusters`, `cluster_header`, `redirect`, `direct_response` or `websocket`"),
                    );
                }
                validate_http_actions(&mut c, r, &rfield);
                let refs = r
                    .cluster
                    .iter()
                    .chain(r.weighted_clusters.iter().map(|w| &w.name));
                for name in refs {
                    if !clusters.contains(name.value.as_str()) {
                        c.at(
                            name.referenced,
                            format!("{rfield}.cluster"),
                            format!("no cluster is named `{}`", name.value),
                            Some(&cluster_hint),
                        );
                    }
                }
                for w in &r.weighted_clusters {
                    if w.weight == 0 {
                        c.at(
                            w.name.referenced,
                            format!("{rfield}.weighted_clusters[{}].weight", w.name.value),
                            "weight 0 never receives traffic".into(),
                            Some("use a weight of 1 or more, or remove the entry"),
                        );
                    }
                }
                validate_subset(config, &mut c, r, &rfield, v.name.referenced);
                if let Some(d) = &r.direct_response
                    && !(100..=599).contains(&d.status)
                {
                    c.at(
                        v.name.referenced,
                        format!("{rfield}.direct_response.status"),
                        format!("{} is not an HTTP status", d.status),
                        Some("use 100..=599"),
                    );
                }
                let regexes = r
                    .matcher
                    .path_regex
                    .iter()
                    .map(|re| ("match.path_regex".to_owned(), re))
                    .chain(r.matcher.headers.iter().filter_map(|h| {
                        h.regex
                            .as_ref()
                            .map(|re| (format!("match.headers[{}].regex", h.name), re))
                    }));
                for (f, re) in regexes {
                    if let Err(e) = regex::bytes::Regex::new(&re.value) {
                        c.at(
                            re.referenced,
                            format!("{rfield}.{f}"),
                            format!("invalid regex: {}", first_line(&e.to_string())),
                            Some("regex syntax: https://docs.rs/regex"),
                        );
                    }
                }
            }
        }
    }

    for cl in &config.clusters {
        let field = |f: &str| format!("clusters[{}].{f}", cl.name.value);
        let original_dst = cl.kind == super::ClusterKind::OriginalDst;
        if cl.hosts.is_empty() && !original_dst {
            c.at(
                cl.name.referenced,
                field("hosts"),
                "no host is listed".into(),
                Some("add e.g. `hosts: [\"127.0.0.1:6379\"]`, or `type: original_dst` for a sidecar's original destinations"),
            );
        }
        if original_dst {
            if let Some(h) = cl.hosts.first() {
                c.at(
                    h.referenced,
                    field("hosts"),
                    "a `type: original_dst` cluster sends each connection to its own original destination; it lists no hosts".into(),
                    Some("drop `hosts`, or drop `type: original_dst`"),
                );
            }
            let unsupported = [
                ("health_check", cl.health_check.is_some()),
                (
                    "redis.sharding",
                    cl.redis.as_ref().is_some_and(|r| r.sharding.is_some()),
                ),
                ("proxy_protocol", cl.proxy_protocol.is_some()),
            ];
            for (f, set) in unsupported {
                if set {
                    c.at(
                        cl.name.referenced,
                        field(f),
                        format!(
                            "`{f}` needs listed hosts; a `type: original_dst` cluster has none"
                        ),
                        Some("drop it, or list the hosts in a static cluster"),
                    );
                }
            }
        }
        if let Some(h) = &cl.original_dst_header
            && !original_dst
        {
            c.at(
                h.referenced,
                field("original_dst_header"),
                "only a `type: original_dst` cluster takes its destination from a header".into(),
                Some("add `type: original_dst` (and drop `hosts`), or drop `original_dst_header`"),
            );
        }
        if let Some(mark) = &cl.mark
            && mark.value == 0
        {
            c.at(
                mark.referenced,
                field("mark"),
                "mark 0 is every unmarked socket's mark: interception rules cannot tell the gateway's connections by it".into(),
                Some("use the mark of the interception script's `--mark` (e.g. 1337), or drop `mark`"),
            );
        }
        for (i, h) in cl.hosts.iter().enumerate() {
            let a = h.value.address();
            if a.parse::<SocketAddr>().is_err() {
                c.at(
                    h.referenced,
                    field(&format!("hosts[{i}]")),
                    format!("`{a}` is not an IP:port address"),
                    Some("write e.g. 127.0.0.1:6379 or [::1]:6379"),
                );
            }
            for (j, replica) in h.value.replicas().iter().enumerate() {
                if replica.parse::<SocketAddr>().is_err() {
                    c.at(
                        h.referenced,
                        field(&format!("hosts[{i}].replicas[{j}]")),
                        format!("`{replica}` is not an IP:port address"),
                        Some("write e.g. 127.0.0.1:6380"),
                    );
                }
                if cl.redis.is_none() {
                    c.at(
                        h.referenced,
                        field(&format!("hosts[{i}].replicas")),
                        "replicas are read by Redis clusters only".into(),
                        Some("add a `redis: {sharding: ketama, read_from: replica}` block, or drop `replicas`"),
                    );
                }
            }
            if let Host::Weighted { weight: 0, .. } = h.value {
                c.at(
                    h.referenced,
                    field(&format!("hosts[{i}].weight")),
                    "weight 0 never receives traffic".into(),
                    Some("use a weight of 1 or more"),
                );
            }
        }
        if let Some(s) = &cl.slow_start {
            if s.window.get().is_zero() {
                c.at(
                    cl.name.referenced,
                    field("slow_start.window"),
                    "a window of 0 ramps nothing".into(),
                    Some("write e.g. `slow_start: {window: 30s}`, or drop `slow_start`"),
                );
            }
            if !(1..=100).contains(&s.min_weight_percent) {
                c.at(
                    cl.name.referenced,
                    field("slow_start.min_weight_percent"),
                    format!("{} is not a percentage of the weight", s.min_weight_percent),
                    Some("use 1..=100 (default 10)"),
                );
            }
            if matches!(cl.lb, LbPolicy::RingHash | LbPolicy::Maglev) {
                c.at(
                    cl.name.referenced,
                    field("slow_start"),
                    "hashing policies send a key to its owner whatever its weight: slow start cannot ramp it".into(),
                    Some("use `lb: round_robin`, `weighted_round_robin`, `random` or `least_request`, or drop `slow_start`"),
                );
            }
        }
        if let Some(tag) = cl.memcached.as_ref().and_then(|m| m.hash_tag.as_ref()) {
            let t = tag.value.as_bytes();
            if t.len() != 2 || t.first() == t.get(1) {
                c.at(
                    tag.referenced,
                    field("memcached.hash_tag"),
                    format!("`{}` is not two different characters", tag.value),
                    Some("write the open and close characters, e.g. `hash_tag: \"{}\"`, or leave it out"),
                );
            }
        }
        if cl.memcached.is_some() && cl.redis.is_some() {
            c.at(
                cl.name.referenced,
                field("memcached"),
                "a cluster cannot be both a Redis and a memcached pool".into(),
                Some("give each its own cluster"),
            );
        }
        if let Some(r) = &cl.redis {
            let tag = r.hash_tag.value.as_bytes();
            if tag.len() != 2 || tag.first() == tag.get(1) {
                c.at(
                    r.hash_tag.referenced,
                    field("redis.hash_tag"),
                    format!("`{}` is not two different characters", r.hash_tag.value),
                    Some("write the open and close characters, e.g. `hash_tag: \"{}\"`"),
                );
            }
            if r.eject_after.value == 0 {
                c.at(
                    r.eject_after.referenced,
                    field("redis.eject_after"),
                    "0 failed health checks would eject every host at once".into(),
                    Some("use 1 or more (default 3)"),
                );
            }
            if r.read_from.value == crate::config::redis::ReadFrom::Replica && r.sharding.is_none()
            {
                c.at(
                    r.read_from.referenced,
                    field("redis.read_from"),
                    "replica reads need a sharded cluster".into(),
                    Some("add `sharding: ketama` (one primary with replicas is one shard: list that one host with its `replicas`)"),
                );
            }
            if r.username.is_some() && r.password.is_none() {
                c.at(
                    cl.name.referenced,
                    field("redis.username"),
                    "a username without a password".into(),
                    Some("add `password:` (AUTH needs both)"),
                );
            }
            if r.shared_connections.value > 64 {
                c.at(
                    r.shared_connections.referenced,
                    field("redis.shared_connections"),
                    format!(
                        "{} shared connections per host is more than batching needs",
                        r.shared_connections.value
                    ),
                    Some("use 1 to 64 (default 1), or 0 for one connection per client session"),
                );
            }
        }
    }
    for cl in &config.clusters {
        for (at, f, problem, fix) in super::health::problems(cl) {
            let at = if at == Location::UNKNOWN {
                cl.name.referenced
            } else {
                at
            };
            c.at(
                at,
                format!("clusters[{}].{f}", cl.name.value),
                problem,
                Some(&fix),
            );
        }
    }
    for l in &config.listeners {
        for (i, u) in l.redis.users.iter().enumerate() {
            if l.redis.users.iter().take(i).any(|v| v.name == u.name) {
                c.at(
                    u.password.referenced,
                    format!("listeners[{}].redis.users[{i}].name", l.name.value),
                    format!("user `{}` is listed twice", u.name),
                    Some("give each user one entry"),
                );
            }
        }
    }
    validate_mysql(config, &mut c, &clusters, &cluster_hint);
    c.problems
}

/// A route's `subset`, `subset_from_header` and `subset_fallback`: they need a
/// single `cluster`, and some host of it must carry the labels named.
/// The admin server may leave loopback only behind a bearer token.
/// Whether `name` can be a `server_names` entry: a DNS name of letters,
/// digits, `-` and `.` labels, or `*.` and such a name of two labels or more.
pub fn check_server_name(name: &str) -> Result<(), String> {
    let rest = name.strip_prefix("*.").unwrap_or(name);
    if name.len() > 253 || rest.is_empty() {
        return Err(format!("`{name}` is not a server name"));
    }
    if rest.contains('*') {
        return Err(format!(
            "`{name}`: a wildcard is only `*.` before the rest of the name"
        ));
    }
    if name.starts_with("*.") && !rest.contains('.') {
        return Err(format!(
            "`{name}`: a wildcard needs two labels after it (`*.example.com`)"
        ));
    }
    for label in rest.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!("`{name}` is not a server name (label `{label}`)"));
        }
    }
    if rest.parse::<std::net::IpAddr>().is_ok() {
        return Err(format!(
            "`{name}` is an IP address: clients send no SNI for addresses"
        ));
    }
    Ok(())
}

/// A `tls` block: a default pair given whole, at least one certificate,
/// well-formed server names, each name once.
fn validate_tls(c: &mut Checker, tls: &super::Tls, at: Location, field: &str) {
    match (&tls.cert, &tls.key) {
        (Some(cert), None) => c.at(
            cert.referenced,
            format!("{field}.key"),
            "`cert` is set without its `key`".into(),
            Some("add `key: FILE` (the certificate's private key, PEM)"),
        ),
        (None, Some(key)) => c.at(
            key.referenced,
            format!("{field}.cert"),
            "`key` is set without its `cert`".into(),
            Some("add `cert: FILE` (the certificate chain, PEM, leaf first)"),
        ),
        (None, None) if tls.certificates.is_empty() => c.at(
            at,
            format!("{field}.cert"),
            "no certificate: neither `cert`/`key` nor `certificates` is set".into(),
            Some("add `cert: FILE` and `key: FILE`, or `certificates: [{server_names: [NAME], cert: FILE, key: FILE}]`"),
        ),
        _ => {}
    }
    let mut seen: HashMap<String, String> = HashMap::new();
    for (i, entry) in tls.certificates.iter().enumerate() {
        let efield = format!("{field}.certificates[{i}]");
        if entry.server_names.is_empty() {
            c.at(
                entry.cert.referenced,
                format!("{efield}.server_names"),
                "no server name is listed".into(),
                Some("list the names clients ask for, e.g. `server_names: [api.example.com, \"*.example.com\"]`"),
            );
        }
        for (j, name) in entry.server_names.iter().enumerate() {
            let nfield = format!("{efield}.server_names[{j}]");
            if let Err(problem) = check_server_name(&name.value) {
                c.at(
                    name.referenced,
                    nfield.clone(),
                    problem,
                    Some("a DNS name (`api.example.com`) or a wildcard of one leading label (`*.example.com`)"),
                );
                continue;
            }
            let key = name.value.to_ascii_lowercase();
            if let Some(first) = seen.get(&key) {
                c.at(
                    name.referenced,
                    nfield,
                    format!("`{}` is listed already, at {first}", name.value),
                    Some("list each server name under one certificate only"),
                );
            } else {
                seen.insert(key, nfield);
            }
        }
    }
}

fn validate_admin(c: &mut Checker, admin: &super::Admin) {
    if let (Some(t), Some(_)) = (&admin.token, &admin.token_file) {
        c.at(
            t.referenced,
            "admin.token".into(),
            "both `token` and `token_file` are set".into(),
            Some("keep one of them"),
        );
    }
    if let Some(t) = &admin.token
        && t.value.trim().len() < 16
    {
        c.at(
            t.referenced,
            "admin.token".into(),
            "the token is shorter than 16 characters".into(),
            Some("use a long random token, e.g. `openssl rand -hex 32`"),
        );
    }
    let Some(addr) = admin.address.value else {
        return;
    };
    if !addr.ip().is_loopback() && admin.token.is_none() && admin.token_file.is_none() {
        c.at(
            admin.address.referenced,
            "admin.address".into(),
            format!(
                "the admin server on {addr} is reachable off this machine, and it has no token"
            ),
            Some(
                "set `admin.token` or `admin.token_file` (requests then need `Authorization: Bearer <token>`), or bind it to 127.0.0.1",
            ),
        );
    }
}

fn validate_subset(
    config: &Config,
    c: &mut Checker,
    r: &crate::config::Route,
    rfield: &str,
    fallback_loc: Location,
) {
    let from = r.subset_from_header.as_ref();
    if r.subset.is_none() && from.is_none() {
        if r.subset_fallback != crate::config::SubsetFallback::Any {
            c.at(
                fallback_loc,
                format!("{rfield}.subset_fallback"),
                "`subset_fallback` without `subset` or `subset_from_header`".into(),
                Some("add `subset_from_header: {header: x-version, label: version}`, or drop `subset_fallback`"),
            );
        }
        return;
    }
    let loc = r
        .subset
        .as_ref()
        .map(|s| s.referenced)
        .or(from.map(|f| f.referenced))
        .unwrap_or(fallback_loc);
    let Some(name) = &r.cluster else {
        c.at(
            loc,
            format!("{rfield}.subset"),
            "subsets narrow a route's `cluster`; this route has none".into(),
            Some("send the route to one `cluster:` (not `weighted_clusters`)"),
        );
        return;
    };
    // An unknown cluster is reported with the route's other references.
    let Some(cluster) = config
        .clusters
        .iter()
        .find(|cl| cl.name.value == name.value)
    else {
        return;
    };
    let labels = || {
        let mut all: Vec<String> = cluster
            .hosts
            .iter()
            .filter_map(|h| h.value.labels())
            .flat_map(|l| l.iter().map(|(k, v)| format!("{k}: {v}")))
            .collect();
        all.sort_unstable();
        all.dedup();
        if all.is_empty() {
            format!(
                "no host of cluster `{}` has labels: write hosts as `{{address: \"127.0.0.1:8080\", labels: {{version: v2}}}}`",
                name.value
            )
        } else {
            format!("labels of cluster `{}`: {}", name.value, all.join(", "))
        }
    };
    if let Some(s) = &r.subset {
        if s.value.is_empty() {
            c.at(
                s.referenced,
                format!("{rfield}.subset"),
                "an empty subset selects every host".into(),
                Some("name labels, e.g. `subset: {version: v2}`, or drop `subset`"),
            );
        } else if !cluster.hosts.iter().any(|h| h.value.has_labels(&s.value)) {
            let want: Vec<String> = s.value.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            c.at(
                s.referenced,
                format!("{rfield}.subset"),
                format!(
                    "no host of cluster `{}` has the labels {{{}}}",
                    name.value,
                    want.join(", ")
                ),
                Some(&labels()),
            );
        }
    }
    if let Some(f) = from {
        if f.value.header.is_empty() {
            c.at(
                f.referenced,
                format!("{rfield}.subset_from_header.header"),
                "no header is named".into(),
                Some("write e.g. `subset_from_header: {header: x-version, label: version}`"),
            );
        }
        let labelled = cluster.hosts.iter().any(|h| {
            h.value
                .labels()
                .is_some_and(|l| l.contains_key(&f.value.label))
        });
        if !labelled {
            c.at(
                f.referenced,
                format!("{rfield}.subset_from_header.label"),
                format!(
                    "no host of cluster `{}` carries the label `{}`",
                    name.value, f.value.label
                ),
                Some(&labels()),
            );
        }
    }
}

/// Values of a route's retry policy that parse but cannot work.
fn validate_retry(c: &mut Checker, retry: &Spanned<super::RetryPolicy>, field: &str) {
    use super::RetryOn;
    let at = retry.referenced;
    let r = &retry.value;
    let mut bad = |what: &str, message: String, hint: &str| {
        c.at(at, format!("{field}.{what}"), message, Some(hint));
    };
    if r.retry_on.is_empty() {
        bad(
            "retry_on",
            "no failure is listed, so nothing is retried".into(),
            "list e.g. `retry_on: [connect_failure, gateway_error]`, or remove `retry`",
        );
    }
    let by_status = r.retry_on.contains(&RetryOn::RetriableStatus);
    if by_status && r.retriable_statuses.is_empty() {
        bad(
            "retriable_statuses",
            "`retriable_status` is in retry_on but no status is listed".into(),
            "list the HTTP statuses to retry, e.g. `retriable_statuses: [503]`",
        );
    }
    if !by_status && !r.retriable_statuses.is_empty() {
        bad(
            "retry_on",
            "retriable_statuses is set but `retriable_status` is not in retry_on".into(),
            "add `retriable_status` to retry_on, or remove retriable_statuses",
        );
    }
    if let Some(s) = r
        .retriable_statuses
        .iter()
        .find(|s| !(100..=599).contains(*s))
    {
        bad(
            "retriable_statuses",
            format!("{s} is not an HTTP status"),
            "give statuses in 100..=599, e.g. `[503]`",
        );
    }
    if r.num_retries == 0 || r.num_retries > 10 {
        bad(
            "num_retries",
            format!("{} retries is out of range", r.num_retries),
            "give 1..=10 (default 1); remove `retry` for none",
        );
    }
    if r.per_try_timeout.is_some_and(|t| t.get().is_zero()) {
        bad(
            "per_try_timeout",
            "a per-try timeout of 0 fails every try".into(),
            "leave it out (the route's timeout) or give e.g. `500ms`",
        );
    }
    if r.backoff.max.is_some_and(|m| m < r.backoff.base) {
        bad(
            "backoff.max",
            "the most backoff is less than its base".into(),
            "give `max` at least `base` (e.g. `{base: 25ms, max: 250ms}`)",
        );
    }
}

/// MySQL listeners, users, query rules, read clusters and backend credentials.
/// Values of stream filters that parse but cannot work; `clusters`: the
/// defined cluster names; `serves`: the protocols of the listener or route
/// (empty: any).
fn validate_access_log(c: &mut Checker, log: &super::access_log::AccessLog, field: &str) {
    if log.path.value.is_empty() {
        c.at(
            log.path.referenced,
            format!("{field}.path"),
            "the access log path is empty".into(),
            Some("give a file path, or `stdout`"),
        );
    }
    if log.queue.value == 0 {
        c.at(
            log.queue.referenced,
            format!("{field}.queue"),
            "a queue of 0 records drops every record".into(),
            Some("give the most records waiting for the writer, at least 1 (default 8192)"),
        );
    }
    for f in &log.fields {
        if !super::access_log::FIELDS.contains(&f.value.as_str()) {
            c.at(
                f.referenced,
                format!("{field}.fields"),
                format!("unknown access log field `{}`", f.value),
                Some(&format!(
                    "known fields: {}",
                    super::access_log::FIELDS.join(", ")
                )),
            );
        }
    }
}

/// `tracing:` values that parse but cannot work.
fn validate_tracing(c: &mut Checker, t: &super::tracing::Tracing) {
    if let Err(e) = crate::observe::trace::Endpoint::parse(&t.endpoint.value) {
        c.at(
            t.endpoint.referenced,
            "tracing.endpoint".into(),
            e,
            Some("give a collector's OTLP/HTTP URL, e.g. `http://127.0.0.1:4318/v1/traces`"),
        );
    }
    let ratio = t.sampling_ratio.value;
    if !(0.0..=1.0).contains(&ratio) {
        c.at(
            t.sampling_ratio.referenced,
            "tracing.sampling_ratio".into(),
            format!("{ratio} is not a share between 0 and 1"),
            Some("give 1.0 to record every new trace, 0.1 for one in ten"),
        );
    }
    if t.batch_size.value == 0 {
        c.at(
            t.batch_size.referenced,
            "tracing.batch_size".into(),
            "a batch of 0 spans exports nothing".into(),
            Some("give the most spans in one export request, at least 1 (default 512)"),
        );
    }
    if t.queue.value == 0 {
        c.at(
            t.queue.referenced,
            "tracing.queue".into(),
            "a queue of 0 spans drops every span".into(),
            Some("give the most spans waiting for the exporter, at least 1 (default 8192)"),
        );
    }
    if t.export_interval.get().is_zero() {
        c.at(
            t.endpoint.referenced,
            "tracing.export_interval".into(),
            "an export interval of 0 exports in a busy loop".into(),
            Some("give e.g. `1s`"),
        );
    }
}

fn validate_filters(
    c: &mut Checker,
    filters: &[Spanned<super::filters::Filter>],
    field: &str,
    clusters: &HashSet<&str>,
    serves: &[switchyard_codecs::Protocol],
) {
    use super::filters::Filter;
    for (i, f) in filters.iter().enumerate() {
        let at = f.referenced;
        let name = format!("{field}[{i}].{}", f.value.kind());
        let mut bad = |what: &str, message: String, hint: &str| {
            c.at(at, format!("{name}.{what}"), message, Some(hint));
        };
        match &f.value {
            Filter::IpAccess(a) if a.allow.is_empty() && a.deny.is_empty() => bad(
                "allow",
                "neither `allow` nor `deny` lists an address block".into(),
                "add e.g. `deny: [\"10.0.0.0/8\"]`, or remove the filter",
            ),
            Filter::RateLimit(r) if !(r.rate > 0.0 && r.rate.is_finite()) => bad(
                "rate",
                format!("{} is not a rate", r.rate),
                "give requests per second, more than 0 (e.g. `rate: 100`)",
            ),
            Filter::RateLimit(r) if r.burst.is_some_and(|b| !(b >= 1.0 && b.is_finite())) => bad(
                "burst",
                "the burst must be at least 1".into(),
                "leave it out to use `rate`, or give the most requests allowed at once",
            ),
            Filter::RateLimit(r) if r.max_keys == 0 => bad(
                "max_keys",
                "0 identities can be tracked".into(),
                "leave it out (100000) or give the most clients tracked at once",
            ),
            Filter::ConcurrencyLimit(l) if l.max == 0 => bad(
                "max",
                "a limit of 0 refuses every request".into(),
                "give the most requests in flight at once, at least 1",
            ),
            Filter::RateLimit(super::filters::RateLimit {
                matcher: Some(m), ..
            })
            | Filter::Fault(super::filters::Fault {
                matcher: Some(m), ..
            }) if m.value.is_some() && m.field.is_none() => bad(
                "match.value",
                "`value` is given without the `field` it is compared with".into(),
                "add `field:` (e.g. `field: header:x-canary`), or remove `value`",
            ),
            Filter::Fault(fault) => {
                let percent = |p: f64| (0.0..=100.0).contains(&p);
                if fault.delay.is_none() && fault.abort.is_none() {
                    bad(
                        "delay",
                        "neither `delay` nor `abort` is set".into(),
                        "add `abort: {percent: 10, status: 503}` or `delay: {percent: 10, duration: 100ms}`",
                    );
                }
                if let Some(d) = &fault.delay
                    && !percent(d.percent)
                {
                    bad(
                        "delay.percent",
                        format!("{} is not a percentage", d.percent),
                        "use 0 to 100",
                    );
                }
                if let Some(a) = &fault.abort {
                    if !percent(a.percent) {
                        bad(
                            "abort.percent",
                            format!("{} is not a percentage", a.percent),
                            "use 0 to 100",
                        );
                    }
                    if !(200..=599).contains(&a.status) {
                        bad(
                            "abort.status",
                            format!("{} is not an HTTP status", a.status),
                            "use a status from 200 to 599, e.g. 503",
                        );
                    }
                    if a.grpc_status.is_some_and(|s| s > 16) {
                        bad(
                            "abort.grpc_status",
                            "gRPC status codes are 0 to 16".into(),
                            "e.g. 14 (UNAVAILABLE)",
                        );
                    }
                }
            }
            Filter::Mirror(m) => {
                if !clusters.contains(m.cluster.as_str()) {
                    bad(
                        "cluster",
                        format!("no cluster is named `{}`", m.cluster),
                        &format!(
                            "name a cluster defined under `clusters:` (defined clusters: {})",
                            sorted(clusters)
                        ),
                    );
                }
                if !(0.0..=100.0).contains(&m.percent) {
                    bad(
                        "percent",
                        format!("{} is not a percentage", m.percent),
                        "use 0 to 100 (default 100: every request)",
                    );
                }
                if m.max_in_flight == 0 {
                    bad(
                        "max_in_flight",
                        "a bound of 0 drops every copy".into(),
                        "leave it out (64) or give the most copies in flight at once, at least 1",
                    );
                }
            }
            Filter::PayloadLimit(p) if p.max_bytes == 0 => bad(
                "max_bytes",
                "a limit of 0 bytes refuses every request with a body".into(),
                "give the largest payload allowed, in bytes",
            ),
            Filter::Headers(h) => validate_headers(h, serves, &mut bad),
            Filter::ExtAuthz(a) => validate_ext_authz(a, &mut bad),
            _ => {}
        }
    }
}

/// An `ext_authz` filter: an address to connect to, a timeout, a status.
fn validate_ext_authz(a: &super::filters::ExtAuthz, bad: &mut impl FnMut(&str, String, &str)) {
    if !crate::filters::ext_authz::valid_address(&a.grpc.address) {
        bad(
            "grpc.address",
            format!("`{}` is not HOST:PORT", a.grpc.address),
            "give the authorization service's address, e.g. `127.0.0.1:9191` or `authz.local:9191`",
        );
    }
    if a.grpc.timeout.get().is_zero() {
        bad(
            "grpc.timeout",
            "a timeout of 0 fails every check".into(),
            "leave it out (200ms) or give the longest a check may take, e.g. `250ms`",
        );
    }
    if !(200..=599).contains(&a.status_on_error) {
        bad(
            "status_on_error",
            format!("{} is not an HTTP status", a.status_on_error),
            "use a status from 200 to 599, e.g. 503 (the default) or 403",
        );
    }
    if a.max_pending == 0 {
        bad(
            "max_pending",
            "a bound of 0 checks sends every request to the failure mode".into(),
            "leave it out (1024) or give the most checks waiting at once, at least 1",
        );
    }
}

/// A route's HTTP actions: redirect, rewrites and `cluster_header`.
fn validate_http_actions(c: &mut Checker, r: &super::Route, rfield: &str) {
    use switchyard_codecs::Protocol;
    let http_only = [
        ("redirect", r.redirect.as_ref().map(|s| s.referenced)),
        (
            "cluster_header",
            r.cluster_header.as_ref().map(|s| s.referenced),
        ),
        (
            "prefix_rewrite",
            r.prefix_rewrite.as_ref().map(|s| s.referenced),
        ),
        (
            "regex_rewrite",
            r.regex_rewrite.as_ref().map(|s| s.referenced),
        ),
        (
            "host_rewrite",
            r.host_rewrite.as_ref().map(|s| s.referenced),
        ),
    ];
    let protocol = r.matcher.protocol.map(|p| p.0);
    for (name, loc) in http_only {
        let Some(loc) = loc else { continue };
        if let Some(p) = protocol.filter(|p| !matches!(p, Protocol::Http1 | Protocol::Http2)) {
            c.at(
                loc,
                format!("{rfield}.{name}"),
                format!("`{name}` is an HTTP action; this route takes {p} requests"),
                Some("use it on routes for http1 or http2 (gRPC) requests"),
            );
        }
    }
    let forwards =
        r.cluster.is_some() || !r.weighted_clusters.is_empty() || r.cluster_header.is_some();
    // The rewrites (the last three of `http_only`) need a request going upstream.
    for (name, loc) in http_only.into_iter().skip(2) {
        if let (Some(loc), false) = (loc, forwards) {
            c.at(
                loc,
                format!("{rfield}.{name}"),
                "a rewrite applies to requests sent upstream; this route sends none".into(),
                Some("add `cluster`, `weighted_clusters` or `cluster_header`, or use `redirect.path`/`redirect.prefix_rewrite`"),
            );
        }
    }
    if let (Some(p), Some(_)) = (&r.prefix_rewrite, &r.regex_rewrite) {
        c.at(
            p.referenced,
            format!("{rfield}.prefix_rewrite"),
            "both `prefix_rewrite` and `regex_rewrite` are set".into(),
            Some("keep one of them"),
        );
    }
    let needs_prefix = r
        .prefix_rewrite
        .as_ref()
        .map(|p| (p.referenced, "prefix_rewrite"))
        .or_else(|| {
            r.redirect
                .as_ref()
                .filter(|d| d.value.prefix_rewrite.is_some())
                .map(|d| (d.referenced, "redirect.prefix_rewrite"))
        });
    if let (Some((loc, name)), None) = (needs_prefix, &r.matcher.path_prefix) {
        c.at(
            loc,
            format!("{rfield}.{name}"),
            "it replaces the matched `path_prefix`, and the route matches none".into(),
            Some("add `match: {path_prefix: /old/}`, or use `regex_rewrite`"),
        );
    }
    if let Some(re) = &r.regex_rewrite
        && let Err(e) = regex::bytes::Regex::new(&re.value.pattern)
    {
        c.at(
            re.referenced,
            format!("{rfield}.regex_rewrite.pattern"),
            format!("invalid regex: {}", first_line(&e.to_string())),
            Some("regex syntax: https://docs.rs/regex"),
        );
    }
    if let Some(h) = &r.host_rewrite
        && (h.value.is_empty()
            || h.value
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b"/?#@".contains(&b)))
    {
        c.at(
            h.referenced,
            format!("{rfield}.host_rewrite"),
            format!("`{}` is not a host", h.value),
            Some("give a host name, optionally with a port: `backend.internal:8080`"),
        );
    }
    if let Some(h) = &r.cluster_header
        && !switchyard_codecs::fields::is_token(h.value.as_bytes())
    {
        c.at(
            h.referenced,
            format!("{rfield}.cluster_header"),
            format!("`{}` is not a header name", h.value),
            Some("e.g. `cluster_header: x-cluster`"),
        );
    }
    if let Some(d) = &r.redirect {
        let d_at = d.referenced;
        let d = &d.value;
        let mut bad = |what: &str, message: String, hint: &str| {
            c.at(
                d_at,
                format!("{rfield}.redirect.{what}"),
                message,
                Some(hint),
            );
        };
        if ![301, 302, 303, 307, 308].contains(&d.status) {
            bad(
                "status",
                format!("{} is not a redirect status", d.status),
                "use 301, 302, 303, 307 or 308",
            );
        }
        if d.scheme
            .as_deref()
            .is_some_and(|s| s != "http" && s != "https")
        {
            bad(
                "scheme",
                "the scheme must be `http` or `https`".into(),
                "e.g. `scheme: https`",
            );
        }
        if d.path.is_some() && d.prefix_rewrite.is_some() {
            bad(
                "path",
                "both `path` and `prefix_rewrite` are set".into(),
                "keep one of them",
            );
        }
        if d.path.as_deref().is_some_and(|p| !p.starts_with('/')) {
            bad(
                "path",
                "the path must start with `/`".into(),
                "e.g. `path: /new`",
            );
        }
        let text = [&d.host, &d.path, &d.prefix_rewrite];
        if text.iter().any(|t| {
            t.as_deref().is_some_and(|t| {
                t.bytes()
                    .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
            })
        }) {
            bad(
                "host",
                "a redirect part holds spaces or control characters".into(),
                "percent-encode them",
            );
        }
    }
}

/// The protocols whose requests carry headers a `headers` filter edits.
fn has_headers(p: switchyard_codecs::Protocol) -> bool {
    p.has_headers()
}

/// A `headers` filter: names that are field names and not protected,
/// values without line breaks, on a listener or route that has headers.
fn validate_headers(
    h: &super::filters::Headers,
    serves: &[switchyard_codecs::Protocol],
    bad: &mut impl FnMut(&str, String, &str),
) {
    use super::filters::is_protected_header;
    if h.request.is_empty() && h.response.is_empty() {
        bad(
            "request",
            "neither `request` nor `response` edits anything".into(),
            "add e.g. `request: {set: {x-env: prod}}`, or remove the filter",
        );
    }
    if !serves.is_empty() && !serves.iter().any(|p| has_headers(*p)) {
        let names: Vec<_> = serves.iter().map(|p| p.name()).collect();
        bad(
            "request",
            format!("{} requests have no headers to edit", names.join(", ")),
            "headers filters apply to http1, http2 (gRPC), dubbo, bolt and rtsp; remove the filter here",
        );
    }
    for (side, edits) in [("request", &h.request), ("response", &h.response)] {
        if side == "response" && (edits.forwarded_for || edits.request_id) {
            bad(
                side,
                "`forwarded_for` and `request_id` edit requests only".into(),
                "move them under `request:`",
            );
        }
        let names = edits
            .set
            .keys()
            .map(|n| ("set", n))
            .chain(edits.add.keys().map(|n| ("add", n)))
            .chain(edits.remove.iter().map(|n| ("remove", n)));
        for (what, name) in names {
            let field = format!("{side}.{what}.{name}");
            let token = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !token {
                bad(
                    &field,
                    format!("`{name}` is not a header name"),
                    "use letters, digits and `-` (e.g. `x-env`)",
                );
            } else if is_protected_header(name) {
                bad(
                    &field,
                    format!(
                        "`{name}` belongs to the gateway (framing, hop-by-hop or routing) and cannot be edited"
                    ),
                    "content-length, transfer-encoding, connection, keep-alive, te, trailer, upgrade, host, cseq and session are protected; use a route's `host_rewrite` for the host",
                );
            }
        }
        let values = edits.set.iter().chain(&edits.add);
        for (name, value) in values {
            if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
                bad(
                    &format!("{side}.set.{name}"),
                    "the value holds a line break or NUL".into(),
                    "give the value on one line",
                );
            }
        }
    }
}

fn validate_mysql(config: &Config, c: &mut Checker, clusters: &HashSet<&str>, cluster_hint: &str) {
    use switchyard_codecs::Protocol;
    use switchyard_codecs::mysql::auth::parse_native_hash;
    // Every route's read cluster exists.
    for t in &config.route_tables {
        for v in &t.virtual_hosts {
            for (i, r) in v.routes.iter().enumerate() {
                if let Some(rc) = &r.read_cluster
                    && !clusters.contains(rc.value.as_str())
                {
                    c.at(
                        rc.referenced,
                        format!(
                            "route_tables[{}].virtual_hosts[{}].routes[{i}].read_cluster",
                            t.name.value, v.name.value
                        ),
                        format!("no cluster is named `{}`", rc.value),
                        Some(cluster_hint),
                    );
                }
            }
        }
    }
    for l in &config.listeners {
        let is_mysql = l.enabled_protocols().contains(&Protocol::Mysql);
        let field = |f: &str| format!("listeners[{}].mysql.{f}", l.name.value);
        let m = &l.mysql;
        if !is_mysql {
            continue;
        }
        if m.users.is_empty() {
            c.at(
                l.name.referenced,
                field("users"),
                "a MySQL listener has no users, so nobody can log in".into(),
                Some("add `mysql: { users: [{ username: app, password: secret }] }`"),
            );
        }
        c.unique(
            &format!("listeners[{}].mysql.users", l.name.value),
            m.users.iter().map(|u| &u.username),
        );
        for u in &m.users {
            let ufield = field(&format!("users[{}]", u.username.value));
            match (&u.password, &u.password_hash) {
                (Some(_), Some(h)) | (None, Some(h)) if parse_native_hash(&h.value).is_none() => c
                    .at(
                        h.referenced,
                        format!("{ufield}.password_hash"),
                        "not a mysql_native_password hash".into(),
                        Some("write `*` and 40 hex digits, as `SELECT PASSWORD('secret')` prints"),
                    ),
                (Some(_), Some(h)) => c.at(
                    h.referenced,
                    ufield,
                    "both `password` and `password_hash` are set".into(),
                    Some("keep one of them"),
                ),
                (None, None) => c.at(
                    u.username.referenced,
                    ufield,
                    "no `password` or `password_hash`".into(),
                    Some("add `password: \"\"` for a user without a password"),
                ),
                _ => {}
            }
        }
        if m.max_message_size < 1024 {
            c.at(
                l.name.referenced,
                field("max_message_size"),
                format!("{} bytes is too small for any client", m.max_message_size),
                Some("use at least 1048576; the default is 64 MiB"),
            );
        }
        let mut targets: Vec<&Spanned<String>> = Vec::new();
        for (i, q) in m.query_rules.iter().enumerate() {
            if let Err(e) = regex::bytes::Regex::new(&q.pattern.value) {
                c.at(
                    q.pattern.referenced,
                    field(&format!("query_rules[{i}].pattern")),
                    format!("invalid regex: {}", first_line(&e.to_string())),
                    Some("regex syntax: https://docs.rs/regex"),
                );
            }
            if !clusters.contains(q.cluster.value.as_str()) {
                c.at(
                    q.cluster.referenced,
                    field(&format!("query_rules[{i}].cluster")),
                    format!("no cluster is named `{}`", q.cluster.value),
                    Some(cluster_hint),
                );
            }
            targets.push(&q.cluster);
        }
        // Clusters MySQL sessions reach need backend credentials.
        for t in config
            .route_tables
            .iter()
            .filter(|t| t.name.value == l.route_table.value)
        {
            for v in &t.virtual_hosts {
                for r in &v.routes {
                    targets.extend(r.cluster.iter());
                    targets.extend(r.read_cluster.iter());
                    targets.extend(r.weighted_clusters.iter().map(|w| &w.name));
                }
            }
        }
        for name in targets {
            let missing = config
                .clusters
                .iter()
                .find(|cl| cl.name.value == name.value)
                .is_some_and(|cl| cl.mysql.is_none());
            if missing {
                c.at(
                    name.referenced,
                    format!("clusters[{}].mysql", name.value),
                    format!(
                        "cluster `{}` takes MySQL sessions from listener `{}` but has no backend credentials",
                        name.value, l.name.value
                    ),
                    Some("add `mysql: { user: proxy, password: secret }` to the cluster"),
                );
            }
        }
    }
}

fn sorted(set: &HashSet<&str>) -> String {
    let mut v: Vec<&str> = set.iter().copied().collect();
    v.sort_unstable();
    if v.is_empty() {
        "(none)".into()
    } else {
        v.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_are_dns_names_or_one_leading_wildcard() {
        for ok in ["a.example", "*.b.example", "x-1.example.com", "localhost"] {
            assert_eq!(check_server_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "*",
            "*.com",
            "a.*.example",
            "*a.example",
            "a..example",
            "-a.example",
            "a_b.example",
            "127.0.0.1",
            "a.example.",
        ] {
            assert!(check_server_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tls_blocks_need_a_certificate_and_each_name_once() {
        let with = |tls: &str| {
            format!(
                "listeners:\n  - name: edge\n    address: 127.0.0.1:7000\n    protocols: [http1]\n    route_table: main\n    tls: {tls}\nroute_tables:\n  - name: main\n    virtual_hosts: []\n"
            )
        };
        let err = |tls: &str| load_str(&with(tls), "t.yaml").unwrap_err().to_string();
        assert!(err("{alpn: [h2]}").contains("listeners[edge].tls.cert: no certificate"));
        assert!(
            err("{cert: c.pem}")
                .contains("listeners[edge].tls.key: `cert` is set without its `key`")
        );
        let dup = err(
            "{certificates: [{server_names: [a.example], cert: a, key: a}, {server_names: [\"*.b.example\", A.EXAMPLE], cert: b, key: b}]}",
        );
        assert!(
            dup.contains("t.yaml:6:103: listeners[edge].tls.certificates[1].server_names[1]: `A.EXAMPLE` is listed already, at listeners[edge].tls.certificates[0].server_names[0]"),
            "{dup}"
        );
        assert!(
            err("{certificates: [{server_names: [\"*.*.x\"], cert: b, key: b}]}")
                .contains("listeners[edge].tls.certificates[0].server_names[0]")
        );
        assert!(load_str(&with("{cert: c, key: k, certificates: [{server_names: [a.example], cert: a, key: a}]}"), "t.yaml").is_ok());
    }

    const GOOD: &str = r#"
listeners:
  - name: edge
    address: 127.0.0.1:7000
    protocols: [http1, redis]
    route_table: main
route_tables:
  - name: main
    virtual_hosts:
      - name: any
        domains: ["*"]
        routes:
          - match: { protocol: redis }
            cluster: cache
          - direct_response: { status: 200, body: "hi" }
clusters:
  - name: cache
    hosts: ["127.0.0.1:6379", { address: "127.0.0.1:6380", weight: 3 }]
"#;

    #[test]
    fn reports_subset_and_slow_start_mistakes_with_field_and_fix() {
        let good = GOOD
            .replace(
                "{ address: \"127.0.0.1:6380\", weight: 3 }",
                "{ address: \"127.0.0.1:6380\", weight: 3, labels: {version: v2} }",
            )
            .replace(
                "            cluster: cache\n",
                "            cluster: cache\n            subset: {version: v2}\n            subset_from_header: {header: x-version, label: version}\n            subset_fallback: none\n",
            )
            .replace("    hosts: [", "    lb: least_request\n    slow_start: {window: 30s}\n    hosts: [");
        let c = load_str(&good, "good.yaml").unwrap();
        assert!(
            c.route_tables[0].virtual_hosts[0].routes[0]
                .subset
                .is_some()
        );
        let bad = good
            .replace("subset: {version: v2}", "subset: {version: v3}")
            .replace("label: version}", "label: zone}")
            .replace("window: 30s", "window: 0s")
            .replace("least_request", "maglev")
            .replace(
                "          - direct_response",
                "          - {direct_response: {status: 200}, subset_fallback: none}\n          - direct_response",
            );
        let text = load_str(&bad, "bad.yaml").unwrap_err().to_string();
        for want in [
            "routes[0].subset: no host of cluster `cache` has the labels {version: v3} (labels of cluster `cache`: version: v2)",
            "routes[0].subset_from_header.label: no host of cluster `cache` carries the label `zone`",
            "routes[1].subset_fallback: `subset_fallback` without `subset` or `subset_from_header`",
            "clusters[cache].slow_start.window: a window of 0 ramps nothing",
            "clusters[cache].slow_start: hashing policies",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
        assert!(text.starts_with("bad.yaml:"), "{text}");
    }

    #[test]
    fn reports_retry_mistakes_with_field_and_fix() {
        let good = GOOD.replace(
            "            cluster: cache\n",
            "            cluster: cache\n            retry: {retry_on: [retriable_status], retriable_statuses: [503], num_retries: 2}\n",
        ).replace("    hosts: [", "    circuit_breakers: {max_retries: 0}\n    hosts: [");
        let c = load_str(&good, "good.yaml").unwrap();
        let retry = c.route_tables[0].virtual_hosts[0].routes[0]
            .retry
            .as_ref()
            .unwrap();
        assert_eq!(retry.value.num_retries, 2);
        let breakers = c.clusters[0].circuit_breakers.as_ref().unwrap();
        assert_eq!(
            (breakers.max_requests, breakers.max_retries),
            (None, Some(0))
        );
        let bad = good
            .replace(
                "retriable_statuses: [503]",
                "retriable_statuses: [], per_try_timeout: 0s",
            )
            .replace(
                "num_retries: 2",
                "num_retries: 0, backoff: {base: 1s, max: 10ms}",
            );
        let text = load_str(&bad, "bad.yaml").unwrap_err().to_string();
        for want in [
            "routes[0].retry.retriable_statuses: `retriable_status` is in retry_on but no status is listed",
            "routes[0].retry.num_retries: 0 retries is out of range",
            "routes[0].retry.per_try_timeout: a per-try timeout of 0 fails every try",
            "routes[0].retry.backoff.max: the most backoff is less than its base",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
        let none = good.replace("retry_on: [retriable_status]", "retry_on: []");
        let text = load_str(&none, "bad.yaml").unwrap_err().to_string();
        assert!(
            text.contains("retry.retry_on: no failure is listed"),
            "{text}"
        );
        assert!(text.contains("retriable_statuses is set but"), "{text}");
    }

    #[test]
    fn reports_original_dst_and_mark_mistakes_with_field_and_fix() {
        let yaml = r#"listeners: [{name: l, address: "127.0.0.1:1", protocols: [redis], route_table: t, transparent: redirect}]
clusters:
  - {name: a, type: original_dst, hosts: ["127.0.0.1:2"], mark: 0}
  - {name: b, type: original_dst, health_check: {kind: tcp}}
  - {name: c}
  - {name: ok, type: original_dst, mark: 1337}
route_tables: [{name: t, virtual_hosts: [{name: v, domains: ["*"], routes: [{cluster: a}]}]}]
"#;
        let text = load_str(yaml, "sc.yaml").unwrap_err().to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(
            lines[0].starts_with("sc.yaml:3:43: clusters[a].hosts: a `type: original_dst` cluster"),
            "{text}"
        );
        assert!(
            lines[1].starts_with("sc.yaml:3:65: clusters[a].mark: mark 0"),
            "{text}"
        );
        assert!(
            lines[2].starts_with("sc.yaml:4:12: clusters[b].health_check:"),
            "{text}"
        );
        assert!(
            lines[3].starts_with("sc.yaml:5:12: clusters[c].hosts: no host is listed"),
            "{text}"
        );
        assert!(lines[3].contains("`type: original_dst`"), "{text}");
    }

    #[test]
    fn accepts_a_good_config_with_defaults() {
        let c = load_str(GOOD, "good.yaml").unwrap();
        assert_eq!(c.listeners[0].enabled_protocols().len(), 2);
        assert_eq!(c.clusters[0].hosts[1].value.weight(), 3);
        assert_eq!(c.listeners[0].detect.max_bytes, 8192);
        assert_eq!(c.admin.addr().unwrap().port(), 9901);
        // The admin server stays on this machine unless told otherwise.
        assert!(c.admin.addr().unwrap().ip().is_loopback());
        assert!(c.admin.token.is_none() && c.admin.token_file.is_none());
    }

    #[test]
    fn admin_off_loopback_needs_a_token() {
        let open = format!("admin:\n  address: 0.0.0.0:9901\n{GOOD}");
        let text = load_str(&open, "open.yaml").unwrap_err().to_string();
        assert!(
            text.starts_with("open.yaml:2:12: admin.address: the admin server on 0.0.0.0:9901"),
            "{text}"
        );
        assert!(
            text.contains("set `admin.token` or `admin.token_file`"),
            "{text}"
        );
        let tokened =
            format!("admin:\n  address: 0.0.0.0:9901\n  token: 0123456789abcdef0123\n{GOOD}");
        let c = load_str(&tokened, "t.yaml").unwrap();
        assert_eq!(c.admin.token.unwrap().value, "0123456789abcdef0123");
        let short = format!("admin:\n  address: 0.0.0.0:9901\n  token: abc\n{GOOD}");
        let text = load_str(&short, "s.yaml").unwrap_err().to_string();
        assert!(text.contains("admin.token: the token is shorter"), "{text}");
        let filed = format!("admin:\n  address: \"[::]:9901\"\n  token_file: tok\n{GOOD}");
        assert!(load_str(&filed, "f.yaml").is_ok());
        let off = format!("admin:\n  address: null\n{GOOD}");
        assert_eq!(load_str(&off, "o.yaml").unwrap().admin.addr(), None);
        let lo = format!("admin:\n  address: 127.0.0.1:9999\n{GOOD}");
        assert!(load_str(&lo, "l.yaml").is_ok());
    }

    #[test]
    fn ext_authz_filters_name_the_field_and_the_fix() {
        let with = |f: &str| {
            GOOD.replace(
                "route_table: main\n",
                &format!("route_table: main\n    filters: [{{ext_authz: {f}}}]\n"),
            )
        };
        let ok = with("{grpc: {address: \"authz.local:9191\", timeout: 50ms}}");
        assert!(load_str(&ok, "ok.yaml").is_ok());
        let cases = [
            (
                "{grpc: {address: \"authz.local\"}}",
                "listeners[edge].filters[0].ext_authz.grpc.address: `authz.local` is not HOST:PORT",
            ),
            (
                "{grpc: {address: \"a:1\", timeout: 0ms}}",
                "ext_authz.grpc.timeout: a timeout of 0 fails every check",
            ),
            (
                "{grpc: {address: \"a:1\"}, status_on_error: 99}",
                "ext_authz.status_on_error: 99 is not an HTTP status",
            ),
            (
                "{grpc: {address: \"a:1\"}, max_pending: 0}",
                "ext_authz.max_pending: a bound of 0 checks",
            ),
        ];
        for (filter, want) in cases {
            let text = load_str(&with(filter), "bad.yaml").unwrap_err().to_string();
            assert!(text.starts_with("bad.yaml:"), "{text}");
            assert!(text.contains(want), "{filter}: want {want:?} in {text}");
        }
    }

    #[test]
    fn reports_unknown_cluster_with_line_and_hint() {
        let bad = GOOD.replace("cluster: cache", "cluster: cach");
        let err = load_str(&bad, "bad.yaml").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("bad.yaml:14:22: "), "{text}");
        assert!(text.contains("no cluster is named `cach`"), "{text}");
        assert!(text.contains("defined clusters: cache"), "{text}");
    }

    #[test]
    fn reports_unknown_field_with_location() {
        let bad = GOOD.replace("route_table: main", "route_table: main\n    routetable: x");
        let err = load_str(&bad, "bad.yaml").unwrap_err();
        let p = &err.problems[0];
        assert_eq!(p.line, 7, "{err}");
        assert!(p.message.contains("routetable"), "{err}");
    }

    #[test]
    fn reports_bad_address_duplicate_names_and_mysql_sniffing() {
        let bad = GOOD
            .replace("127.0.0.1:6379\"", "localhost:6379\"")
            .replace("[http1, redis]", "[http1, mysql]")
            .replace(
                "  - name: cache",
                "  - name: cache\n    hosts: []\n  - name: cache",
            );
        let err = load_str(&bad, "bad.yaml").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("`localhost:6379` is not an IP:port address"),
            "{text}"
        );
        assert!(text.contains("duplicate clusters name `cache`"), "{text}");
        assert!(text.contains("mysql cannot be sniffed"), "{text}");
        assert!(text.contains("no host is listed"), "{text}");
    }

    const MYSQL: &str = r#"
listeners:
  - name: db
    address: 127.0.0.1:7306
    protocol: mysql
    route_table: sql
    mysql:
      users:
        - { username: app, password: secret }
        - { username: legacy, password_hash: "*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19" }
      query_rules:
        - { pattern: "(?i)^select .* from reports", cluster: replicas }
route_tables:
  - name: sql
    virtual_hosts:
      - name: any
        domains: ["*"]
        routes:
          - match: { users: [app], schemas: [shop] }
            cluster: primary
            read_cluster: replicas
          - cluster: primary
clusters:
  - name: primary
    hosts: ["127.0.0.1:3306"]
    mysql: { user: proxy, password: pw, max_connections: 10 }
  - name: replicas
    hosts: ["127.0.0.1:3307"]
    mysql: { user: proxy, password: pw }
"#;

    #[test]
    fn accepts_a_mysql_listener_with_read_split() {
        let c = load_str(MYSQL, "db.yaml").unwrap();
        assert_eq!(c.listeners[0].mysql.users.len(), 2);
        assert_eq!(c.clusters[1].mysql.as_ref().unwrap().max_connections, 256);
    }

    #[test]
    fn reports_mysql_mistakes_with_locations() {
        let bad = MYSQL
            .replace("password_hash: \"*2470", "password_hash: \"2470")
            .replace("read_cluster: replicas", "read_cluster: replica")
            .replace("cluster: replicas }", "cluster: nowhere }")
            .replace("    mysql: { user: proxy, password: pw }\n", "");
        let err = load_str(&bad, "db.yaml").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("db.yaml:10:46: listeners[db].mysql.users[legacy].password_hash"),
            "{text}"
        );
        assert!(text.contains("not a mysql_native_password hash"), "{text}");
        assert!(
            text.contains("read_cluster: no cluster is named `replica`"),
            "{text}"
        );
        assert!(
            text.contains("query_rules[0].cluster: no cluster is named `nowhere`"),
            "{text}"
        );
        let no_creds = MYSQL.replace("    mysql: { user: proxy, password: pw }\n", "");
        let text = load_str(&no_creds, "db.yaml").unwrap_err().to_string();
        assert!(
            text.contains("cluster `replicas` takes MySQL sessions"),
            "{text}"
        );
        let no_users = MYSQL.replace(
            "      users:\n        - { username: app, password: secret }\n        - { username: legacy, password_hash: \"*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19\" }\n",
            "      users: []\n",
        );
        let text = load_str(&no_users, "db.yaml").unwrap_err().to_string();
        assert!(text.contains("nobody can log in"), "{text}");
    }

    #[test]
    fn reports_routes_without_exactly_one_action() {
        let bad = GOOD.replace(
            "- direct_response: { status: 200, body: \"hi\" }",
            "- match: { path_prefix: / }",
        );
        let err = load_str(&bad, "bad.yaml").unwrap_err();
        assert!(
            err.to_string().contains("exactly one action, found 0"),
            "{err}"
        );
    }

    #[test]
    fn reports_redis_sharding_mistakes_with_field_and_fix() {
        let good = GOOD.replace(
            "  - name: cache\n",
            "  - name: cache\n    redis: { sharding: slots, hash_tag: \"<>\", auto_eject: true }\n",
        );
        let c = load_str(&good, "good.yaml").unwrap();
        let r = c.clusters[0].redis.as_ref().unwrap();
        assert_eq!(r.hash_tag.value, "<>");
        assert_eq!(r.eject_after.value, 3);
        assert_eq!(r.shared_connections.value, 1);
        let bad = GOOD.replace(
            "  - name: cache\n",
            "  - name: cache\n    redis: { read_from: replica, hash_tag: \"{\", eject_after: 0, shared_connections: 65 }\n",
        );
        let err = load_str(&bad, "bad.yaml").unwrap_err().to_string();
        for want in [
            "bad.yaml:",
            "clusters[cache].redis.shared_connections: 65 shared connections per host",
            "or 0 for one connection per client session",
            "clusters[cache].redis.read_from: replica reads need a sharded cluster",
            "add `sharding: ketama`",
            "clusters[cache].redis.hash_tag: `{` is not two different characters",
            "clusters[cache].redis.eject_after",
        ] {
            assert!(err.contains(want), "missing {want:?} in:\n{err}");
        }
        let bad = GOOD.replace(
            "{ address: \"127.0.0.1:6380\", weight: 3 }",
            "{ address: \"127.0.0.1:6380\", replicas: [\"nowhere\"] }",
        );
        let err = load_str(&bad, "bad.yaml").unwrap_err().to_string();
        assert!(
            err.contains("hosts[1].replicas[0]: `nowhere` is not an IP:port"),
            "{err}"
        );
        assert!(
            err.contains("replicas are read by Redis clusters only"),
            "{err}"
        );
    }

    #[test]
    fn reports_health_check_and_outlier_mistakes_with_field_and_fix() {
        let good = GOOD.replace(
            "  - name: cache\n",
            "  - name: cache\n    health_check: { kind: redis, interval: 2s, unhealthy_threshold: 2 }\n    outlier_detection: { consecutive_server_errors: 3, base_ejection_time: 10s }\n",
        );
        let c = load_str(&good, "good.yaml").unwrap();
        let h = c.clusters[0].health_check.as_ref().unwrap();
        assert_eq!(
            h.kind_for(&c.clusters[0]),
            crate::config::health::CheckKind::Redis
        );
        assert_eq!(h.healthy_threshold.value, 2);
        let o = c.clusters[0].outlier_detection.as_ref().unwrap();
        assert_eq!(o.consecutive_gateway_errors, 5);
        assert_eq!(o.max_ejection_percent.value, 10);
        let bad = GOOD.replace(
            "  - name: cache\n",
            "  - name: cache\n    health_check: { kind: mysql, path: healthz, expected_statuses: [700], healthy_threshold: 0 }\n    outlier_detection: { base_ejection_time: 1m, max_ejection_time: 10s, max_ejection_percent: 150 }\n",
        );
        let err = load_str(&bad, "bad.yaml").unwrap_err().to_string();
        for want in [
            "bad.yaml:",
            "clusters[cache].health_check.kind: a mysql check logs in with the cluster's credentials",
            "add a `mysql: {user: ..., password: ...}` block",
            "clusters[cache].health_check.path: `healthz` is not an absolute path",
            "clusters[cache].health_check.expected_statuses: [700]",
            "clusters[cache].health_check.healthy_threshold: 0 checks",
            "clusters[cache].outlier_detection.max_ejection_time: 10s is shorter than base_ejection_time 60s",
            "clusters[cache].outlier_detection.max_ejection_percent: 150%",
        ] {
            assert!(err.contains(want), "missing {want:?} in:\n{err}");
        }
        let bad = GOOD.replace(
            "  - name: cache\n",
            "  - name: cache\n    health_check: { kind: smtp }\n",
        );
        let err = load_str(&bad, "bad.yaml").unwrap_err().to_string();
        assert!(err.contains("smtp"), "{err}");
    }

    #[test]
    fn reports_invalid_regex_and_bad_duration() {
        let bad = GOOD.replace("match: { protocol: redis }", "match: { path_regex: \"(\" }");
        let err = load_str(&bad, "bad.yaml").unwrap_err();
        assert!(err.to_string().contains("invalid regex"), "{err}");
        let bad = GOOD.replace(
            "  - name: cache\n",
            "  - name: cache\n    connect_timeout: 5\n",
        );
        let err = load_str(&bad, "bad.yaml").unwrap_err();
        assert!(err.to_string().contains("no known unit"), "{err}");
    }
}
