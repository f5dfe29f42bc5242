//! PROXY protocol settings: `listeners[].proxy_protocol` (accept a header
//! from a proxy in front) and `clusters[].proxy_protocol` (send one to the
//! hosts), and their checks.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use switchyard_codecs::Protocol;

use super::filters::Cidr;
use super::{Config, Duration};

/// `listeners[].proxy_protocol: {accept, versions, timeout, trusted}`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Accept {
    /// `required`: every connection must start with a header, else it is
    /// closed; `optional`: a header is used when the connection starts with
    /// one, else the connection is served as it is.
    #[serde(default)]
    pub accept: Mode,
    /// Versions accepted (1: text, 2: binary).
    #[serde(default = "all_versions")]
    pub versions: Vec<u8>,
    /// Longest wait for the whole header.
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
    /// Peers allowed to send a header (the proxies in front). A peer outside
    /// these is refused on a `required` listener, and refused when it sends
    /// a header on an `optional` one. Default: loopback only.
    #[serde(default = "loopback")]
    pub trusted: Vec<Cidr>,
}

/// Whether a listener's connections must start with a PROXY header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Required,
    Optional,
}

/// `clusters[].proxy_protocol: v1 | v2`: the header sent first on each new
/// connection to a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Send {
    V1,
    V2,
}

fn all_versions() -> Vec<u8> {
    vec![1, 2]
}

fn default_timeout() -> Duration {
    Duration::from_secs(3)
}

fn loopback() -> Vec<Cidr> {
    ["127.0.0.0/8", "::1/128"]
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// Protocols whose drivers bind one downstream connection to one upstream
/// connection: the only ones a cluster with `proxy_protocol` may serve.
/// (HTTP/1, HTTP/2, Redis, Dubbo, Bolt and MySQL pool or share upstream
/// connections among clients: one client's address on them would be wrong.)
pub const PER_CONNECTION: [Protocol; 2] = [Protocol::Mqtt, Protocol::Rtsp];

/// One problem: (field, message, hint), at the listener's or cluster's name.
pub(super) struct Issue {
    pub at: serde_saphyr::Location,
    pub field: String,
    pub message: String,
    pub hint: String,
}

/// Check both sides' settings.
pub(super) fn validate(config: &Config) -> Vec<Issue> {
    let mut out = Vec::new();
    for l in &config.listeners {
        let Some(pp) = &l.proxy_protocol else {
            continue;
        };
        let field = |f: &str| format!("listeners[{}].proxy_protocol.{f}", l.name.value);
        if pp.versions.is_empty() || pp.versions.iter().any(|v| !matches!(v, 1 | 2)) {
            out.push(Issue {
                at: l.name.referenced,
                field: field("versions"),
                message: format!("{:?} is not a list of PROXY protocol versions", pp.versions),
                hint: "use [1], [2] or [1, 2]".into(),
            });
        }
        if pp.timeout.get().is_zero() {
            out.push(Issue {
                at: l.name.referenced,
                field: field("timeout"),
                message: "a timeout of 0 refuses every connection".into(),
                hint: "give the longest wait for the header, e.g. 3s".into(),
            });
        }
        if pp.accept == Mode::Optional
            && l.enabled_protocols()
                .iter()
                .any(|p| p.server_speaks_first())
        {
            out.push(Issue {
                at: l.name.referenced,
                field: field("accept"),
                message: "`optional` cannot tell a silent client from a late header on a listener whose server speaks first".into(),
                hint: "use `accept: required` (every client comes through the proxy in front) or leave proxy_protocol out".into(),
            });
        }
        if pp.trusted.is_empty() {
            out.push(Issue {
                at: l.name.referenced,
                field: field("trusted"),
                message: "no peer is trusted to send a PROXY header".into(),
                hint: "list the addresses of the proxies in front, e.g. [10.0.0.0/8], or leave it out for loopback only".into(),
            });
        }
    }
    // Clusters reached from listeners that pool upstream connections.
    let mut pooled: HashSet<&str> = HashSet::new();
    for l in &config.listeners {
        let serves = l.enabled_protocols();
        if serves.iter().all(|p| PER_CONNECTION.contains(p)) {
            continue;
        }
        for t in config
            .route_tables
            .iter()
            .filter(|t| t.name.value == l.route_table.value)
        {
            for r in t.virtual_hosts.iter().flat_map(|v| &v.routes) {
                // A route taking only MQTT/RTSP on a mixed listener is fine.
                if r.matcher
                    .protocol
                    .as_ref()
                    .is_some_and(|p| PER_CONNECTION.contains(&p.0))
                {
                    continue;
                }
                let refs = r
                    .cluster
                    .iter()
                    .chain(r.weighted_clusters.iter().map(|w| &w.name))
                    .chain(r.read_cluster.iter());
                pooled.extend(refs.map(|n| n.value.as_str()));
            }
        }
    }
    for c in &config.clusters {
        let Some(v) = c.proxy_protocol else { continue };
        let field = format!("clusters[{}].proxy_protocol", c.name.value);
        let why = if c.redis.is_some() {
            Some("it has a `redis` extension (Redis upstream connections are shared)")
        } else if c.mysql.is_some() {
            Some("it has a `mysql` extension (MySQL backend connections are pooled)")
        } else if c.protocol.is_some() {
            Some("it sets an HTTP `protocol` (HTTP upstream connections are pooled)")
        } else if pooled.contains(c.name.value.as_str()) {
            Some(
                "a route of a listener serving a pooled protocol (http1, http2, redis, dubbo, bolt, mysql) sends to it",
            )
        } else {
            None
        };
        if let Some(why) = why {
            out.push(Issue {
                at: c.name.referenced,
                field,
                message: format!(
                    "{} cannot be sent to this cluster: {why}; one connection would carry many clients under the first one's address",
                    match v {
                        Send::V1 => "PROXY protocol v1",
                        Send::V2 => "PROXY protocol v2",
                    }
                ),
                hint: "send it only on clusters used by TCP passthrough (detect.fallback.tcp_proxy), MQTT or RTSP routes; remove `proxy_protocol` here".into(),
            });
        }
    }
    out
}
