//! The YAML configuration: schema ([`Config`]), loading and validation
//! ([`load`]), and the small value types it is made of.
//!
//! A loaded [`Config`] is immutable; the gateway compiles it into a snapshot
//! and swaps snapshots atomically on reload.

pub mod access_log;
mod duration;
pub mod filters;
pub mod health;
pub mod lint;
mod load;
pub mod memcached;
pub mod proxy_protocol;
pub mod redis;
pub mod tracing;

pub use duration::Duration;
pub use load::{ConfigError, Problem, check_server_name, load_file, load_str};

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;
use switchyard_codecs::Protocol;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The admin HTTP server (`/ready`, `/metrics`, `/config`).
    #[serde(default)]
    pub admin: Admin,
    /// How long in-flight requests may take to finish after SIGTERM/SIGINT.
    #[serde(default = "defaults::drain_timeout")]
    pub drain_timeout: Duration,
    /// Ports the gateway accepts connections on.
    pub listeners: Vec<Listener>,
    /// Named route tables; a listener names the one it uses.
    #[serde(default)]
    pub route_tables: Vec<RouteTable>,
    /// Upstream clusters routes send traffic to.
    #[serde(default)]
    pub clusters: Vec<Cluster>,
    /// The overload manager: memory and connection thresholds, and what to do past them.
    #[serde(default)]
    pub overload: Overload,
    /// Reloading: whether the gateway watches its config file for changes.
    #[serde(default)]
    pub reload: Reload,
    /// OpenTelemetry tracing over OTLP/HTTP (off without it).
    #[serde(default)]
    pub tracing: Option<tracing::Tracing>,
}

/// How the config is reloaded besides SIGHUP (`reload:`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Reload {
    /// Poll the config file (its modification time and a hash of its
    /// contents) and reload when it changed. A file that does not load is
    /// logged and the running config kept.
    #[serde(default)]
    pub watch: bool,
    /// How often the file is polled when `watch` is on.
    #[serde(default = "defaults::watch_interval")]
    pub interval: Duration,
}

impl Default for Reload {
    fn default() -> Self {
        Self {
            watch: false,
            interval: defaults::watch_interval(),
        }
    }
}

/// The overload manager (`overload:`): past either threshold new connections
/// are shed with their protocol's "busy" answer or not accepted at all, until
/// the pressure drops. Thresholds change on reload; 0 turns one off.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Overload {
    /// Resident memory of the gateway process, in bytes, past which it is
    /// overloaded (read from /proc every `check_interval`); 0: no limit.
    #[serde(default)]
    pub max_rss_bytes: u64,
    /// Downstream connections open at once, all listeners together, past
    /// which it is overloaded; 0: no limit.
    #[serde(default)]
    pub max_connections: usize,
    /// How often resident memory is read (at least 10ms).
    #[serde(default = "defaults::overload_check_interval")]
    pub check_interval: Duration,
    /// What happens while overloaded.
    #[serde(default)]
    pub action: OverloadAction,
    /// The second stage: resident memory past which every new request on
    /// an open connection is answered with its protocol's "busy" answer
    /// too (HTTP 503, gRPC UNAVAILABLE, Redis `-ERR`, Dubbo 100, Bolt
    /// SERVER_THREADPOOL_BUSY, MQTT reason 0x89, MySQL ERR 1040, RTSP 503),
    /// until it drops back under; set it at or above `max_rss_bytes`. 0: off.
    #[serde(default)]
    pub shed_requests_rss_bytes: u64,
}

impl Default for Overload {
    fn default() -> Self {
        Self {
            max_rss_bytes: 0,
            max_connections: 0,
            check_interval: defaults::overload_check_interval(),
            action: OverloadAction::default(),
            shed_requests_rss_bytes: 0,
        }
    }
}

/// What the overload manager does past a threshold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OverloadAction {
    /// Accept, answer the first request with the protocol's busy answer
    /// (HTTP 503, Redis `-ERR max number of clients reached`, MQTT CONNACK
    /// 3 / 0x89, Dubbo 100, Bolt SERVER_THREADPOOL_BUSY, MySQL ERR 1040,
    /// RTSP 503, HTTP/2 GOAWAY), close.
    #[default]
    Shed,
    /// Stop accepting: new connections wait in the kernel's accept queue.
    StopAccepting,
}

/// A protocol name in a config file (`http1`, `redis`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtocolName(pub Protocol);

impl<'de> Deserialize<'de> for ProtocolName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map(ProtocolName)
            .map_err(serde::de::Error::custom)
    }
}

impl Serialize for ProtocolName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.name())
    }
}

/// The admin server.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// Address to serve on; keep it on loopback. `null` disables the admin server.
    #[serde(default = "defaults::admin_address")]
    pub address: Spanned<Option<SocketAddr>>,
    /// The bearer token every admin request must carry
    /// (`Authorization: Bearer <token>`); required off loopback.
    #[serde(default)]
    pub token: Option<Spanned<String>>,
    /// A file holding the token (trailing whitespace ignored), instead of `token`.
    #[serde(default)]
    pub token_file: Option<Spanned<String>>,
}

impl Default for Admin {
    fn default() -> Self {
        Self {
            address: defaults::admin_address(),
            token: None,
            token_file: None,
        }
    }
}

impl Admin {
    /// The address the admin server binds (`None`: off).
    pub fn addr(&self) -> Option<SocketAddr> {
        self.address.value
    }

    /// The token requests must carry, read from `token` or from `token_file`
    /// (relative to `base`, the config file's folder). `None`: no token.
    pub fn resolve_token(&self, base: &std::path::Path) -> Result<Option<String>, Problem> {
        if let Some(t) = &self.token {
            return Ok(Some(t.value.clone()));
        }
        let Some(f) = &self.token_file else {
            return Ok(None);
        };
        let path = base.join(&f.value);
        let problem = |message: String, hint: &str| Problem {
            line: f.referenced.line(),
            column: f.referenced.column(),
            field: "admin.token_file".into(),
            message,
            hint: Some(hint.into()),
        };
        let text = std::fs::read_to_string(&path).map_err(|e| {
            problem(
                format!("cannot read {}: {e}", path.display()),
                "give a readable file holding the token (relative paths are from the config file's folder)",
            )
        })?;
        let token = text.trim_end_matches(['\r', '\n', ' ', '\t']).to_owned();
        if token.is_empty() {
            return Err(problem(
                format!("{} is empty", path.display()),
                "write the token (at least 16 characters) into the file",
            ));
        }
        Ok(Some(token))
    }
}

/// One listening socket.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// Unique name, used in logs and metrics.
    pub name: Spanned<String>,
    /// `IP:port` to bind.
    pub address: Spanned<SocketAddr>,
    /// Protocols sniffed on this port. Mutually exclusive with `protocol`.
    #[serde(default)]
    pub protocols: Vec<Spanned<ProtocolName>>,
    /// One fixed protocol, no sniffing (required for server-first protocols like MySQL).
    #[serde(default)]
    pub protocol: Option<Spanned<ProtocolName>>,
    /// The route table requests on this listener are routed with.
    pub route_table: Spanned<String>,
    /// Detection limits and what to do when nothing matches.
    #[serde(default)]
    pub detect: Detect,
    /// Length of the kernel's accept queue (`listen(2)` backlog); default:
    /// the system's maximum, `net.core.somaxconn`.
    #[serde(default)]
    pub backlog: Option<u32>,
    /// Most concurrent downstream connections; further ones wait in the accept queue.
    #[serde(default = "defaults::max_connections")]
    pub max_connections: usize,
    /// Close a downstream connection idle (no request in progress) for this long.
    #[serde(default = "defaults::idle_timeout")]
    pub idle_timeout: Duration,
    /// Longest time from the first byte of a request head (HTTP head, Redis
    /// command, MQTT packet, RPC frame header, MySQL packet, RTSP message head)
    /// to its last byte; a client that trickles slower is answered with its
    /// protocol's timeout error and closed (slowloris). As nginx's
    /// `client_header_timeout` and HAProxy's `timeout http-request`.
    #[serde(default = "defaults::request_head_timeout")]
    pub request_head_timeout: Duration,
    /// HTTP/1 limits on this listener.
    #[serde(default)]
    pub http1: Http1Limits,
    /// Redis limits on this listener.
    #[serde(default)]
    pub redis: RedisLimits,
    /// memcached limits on this listener.
    #[serde(default)]
    pub memcached: memcached::MemcachedLimits,
    /// MQTT edge policy on this listener: auth, topic ACL, rate limits, mount point.
    #[serde(default)]
    pub mqtt: Mqtt,
    /// Terminate TLS on this listener (clients that start with a TLS ClientHello);
    /// the protocol is then detected inside TLS (or taken from ALPN).
    #[serde(default)]
    pub tls: Option<Tls>,
    /// RTSP on this listener: limits, UDP relay, optional gateway Basic auth.
    #[serde(default)]
    pub rtsp: Rtsp,
    /// MySQL front end on this listener: users, auth plugin, schema policy, query rules.
    #[serde(default)]
    pub mysql: Mysql,
    /// Stream filters every request on this listener goes through, in order,
    /// before it is routed (`ip_access`, `rate_limit`, `concurrency_limit`,
    /// `fault`, `payload_limit`).
    #[serde(default)]
    pub filters: Vec<Spanned<filters::Filter>>,
    /// One line per request, written by a thread off the data path
    /// (`path`, `format`, `queue`, `fields`).
    #[serde(default)]
    pub access_log: Option<access_log::AccessLog>,
    /// Accept a PROXY protocol header (v1/v2) from the proxies in front:
    /// its source address is then the client's address everywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<proxy_protocol::Accept>,
    /// Sidecar interception: `redirect` for connections the firewall
    /// redirected to this listener (iptables/nft NAT `REDIRECT`), whose
    /// original destination is read back with `SO_ORIGINAL_DST`. It is what
    /// routes' `destination_ips`/`destination_ports` match and where
    /// `type: original_dst` clusters connect. See docs/sidecar.md.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transparent: Option<Spanned<Transparent>>,
}

/// How a transparent listener's connections were intercepted (`TPROXY` is
/// not supported yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Transparent {
    /// NAT `REDIRECT` (iptables or nft): the original destination is read
    /// with `getsockopt(SO_ORIGINAL_DST)` / `IP6T_SO_ORIGINAL_DST`.
    Redirect,
}

/// TLS termination settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// PEM certificate chain (leaf first), relative to the config file: the
    /// default certificate, served when the client names no server or a name
    /// no entry of `certificates` covers. Give it with `key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<Spanned<String>>,
    /// PEM private key of `cert`, relative to the config file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Spanned<String>>,
    /// More certificates, each served to clients whose SNI server name is one
    /// of its `server_names` (exact names before `*.` wildcards).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<SniCertificate>,
    /// PEM CA certificates that sign client certificates; when set, clients
    /// may (or, with `require_client_cert`, must) present one.
    #[serde(default)]
    pub client_ca: Option<Spanned<String>>,
    #[serde(default)]
    pub require_client_cert: bool,
    /// ALPN protocols offered, in order of preference (e.g. `h2`, `http/1.1`, `mqtt`).
    #[serde(default)]
    pub alpn: Vec<String>,
    /// How often the certificate and key files are looked at (modification
    /// time, size, a hash of the contents); a changed pair is loaded and
    /// served to new connections. `0s`: only reloads read them.
    #[serde(default = "defaults::cert_check_interval")]
    pub check_interval: Duration,
}

/// One certificate of `listeners[].tls.certificates`, chosen by SNI.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SniCertificate {
    /// Server names this certificate is served for: `a.example`, or
    /// `*.b.example` for any one label before `.b.example`.
    pub server_names: Vec<Spanned<String>>,
    /// PEM certificate chain (leaf first), relative to the config file.
    pub cert: Spanned<String>,
    /// PEM private key, relative to the config file.
    pub key: Spanned<String>,
}

impl Listener {
    /// The listener's stream filters, then the shared `rate_limit` filters
    /// its MQTT publish limits (`mqtt.rate_limit`) stand for.
    pub fn filters_with_mqtt_limits(&self) -> Vec<Spanned<filters::Filter>> {
        let unknown = serde_saphyr::Location::UNKNOWN;
        let mqtt_limits = match &self.mqtt.rate_limit {
            Some(r) if self.enabled_protocols().contains(&Protocol::Mqtt) => r.as_filters(),
            _ => Vec::new(),
        };
        self.filters
            .iter()
            .cloned()
            .chain(
                mqtt_limits
                    .into_iter()
                    .map(|f| Spanned::new(f, unknown, unknown)),
            )
            .collect()
    }

    /// The protocols this listener accepts, fixed or sniffed.
    pub fn enabled_protocols(&self) -> Vec<Protocol> {
        match &self.protocol {
            Some(p) => vec![p.value.0],
            None => self.protocols.iter().map(|p| p.value.0).collect(),
        }
    }
}

/// Detection settings of a sniffing listener.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Detect {
    /// Give up sniffing after this long without a verdict.
    #[serde(default = "defaults::detect_timeout")]
    pub timeout: Duration,
    /// Give up sniffing after this many bytes without a verdict.
    #[serde(default = "defaults::detect_max_bytes")]
    pub max_bytes: usize,
    /// What to do with a connection no enabled protocol matched.
    #[serde(default)]
    pub fallback: Fallback,
}

impl Default for Detect {
    fn default() -> Self {
        Self {
            timeout: defaults::detect_timeout(),
            max_bytes: defaults::detect_max_bytes(),
            fallback: Fallback::default(),
        }
    }
}

/// The fallback of detection.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Fallback {
    /// Close the connection.
    #[default]
    Reject,
    /// Pass the bytes through, unparsed, to a host of this cluster.
    TcpProxy(Spanned<String>),
}

/// HTTP/1 limits.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Http1Limits {
    /// Largest request or response head, in bytes (over it: 431 / 502).
    #[serde(default = "defaults::max_head_bytes")]
    pub max_head_bytes: usize,
    /// Most header fields in one head.
    #[serde(default = "defaults::max_headers")]
    pub max_headers: usize,
    /// Match routes on the normalised path: unreserved percent-escapes
    /// decoded, dot segments removed (as Envoy's `normalize_path`).
    #[serde(default = "defaults::yes")]
    pub normalize_path: bool,
    /// With `normalize_path`: merge runs of slashes (as Envoy's `merge_slashes`).
    #[serde(default = "defaults::yes")]
    pub merge_slashes: bool,
    /// Which path goes upstream: `normalized` (the one routes matched) or
    /// `original` (the client's bytes).
    #[serde(default)]
    pub forward_path: ForwardPath,
    /// After an error answer, read and drop what the client still sends for
    /// at most this long before closing, so the answer is not lost to a
    /// reset (nginx's `lingering_time`); `0s` closes at once.
    #[serde(default = "defaults::lingering_close")]
    pub lingering_close: Duration,
}

/// The request path the gateway sends upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ForwardPath {
    /// The normalised path, the one the routes matched (no route bypass).
    #[default]
    Normalized,
    /// The path exactly as the client sent it.
    Original,
}

impl Default for Http1Limits {
    fn default() -> Self {
        Self {
            max_head_bytes: defaults::max_head_bytes(),
            max_headers: defaults::max_headers(),
            normalize_path: true,
            merge_slashes: true,
            forward_path: ForwardPath::Normalized,
            lingering_close: defaults::lingering_close(),
        }
    }
}

/// Redis limits and client authentication.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RedisLimits {
    /// Largest bulk string in a command or reply, in bytes.
    #[serde(default = "defaults::max_bulk")]
    pub max_bulk: usize,
    /// Most arguments in a command / elements in a reply aggregate.
    #[serde(default = "defaults::max_elements")]
    pub max_elements: usize,
    /// Deepest nesting of a reply (arrays, maps, sets, pushes, attributes), in levels.
    #[serde(default = "defaults::max_depth")]
    pub max_depth: usize,
    /// Most commands in flight (sent upstream, not yet answered) per client connection.
    #[serde(default = "defaults::max_pipeline")]
    pub max_pipeline: usize,
    /// Users the gateway authenticates itself (`AUTH`, `HELLO … AUTH`); when
    /// set, commands before a successful `AUTH` answer `-NOAUTH`, and clients'
    /// `AUTH` never reaches the servers (clusters log in with their own `redis` credentials).
    #[serde(default)]
    pub users: Vec<redis::RedisUser>,
}

impl Default for RedisLimits {
    fn default() -> Self {
        Self {
            max_bulk: defaults::max_bulk(),
            max_elements: defaults::max_elements(),
            max_depth: defaults::max_depth(),
            max_pipeline: defaults::max_pipeline(),
            users: Vec::new(),
        }
    }
}

/// A named set of virtual hosts.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteTable {
    pub name: Spanned<String>,
    pub virtual_hosts: Vec<VirtualHost>,
}

/// Routes that apply to requests for some hosts. Requests without a host
/// (Redis, ...) use the virtual hosts whose `domains` include `*`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VirtualHost {
    pub name: Spanned<String>,
    /// Host names (port ignored), `*.suffix`, `prefix.*`, or `*` for any.
    pub domains: Vec<Spanned<String>>,
    /// Tried in order; the first match wins.
    pub routes: Vec<Route>,
}

/// One route: a match and an action.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Optional name, for logs and metrics.
    #[serde(default)]
    pub name: Option<String>,
    /// What requests this route takes; an empty match takes everything.
    #[serde(rename = "match", default)]
    pub matcher: RouteMatch,
    /// Send to this cluster.
    #[serde(default)]
    pub cluster: Option<Spanned<String>>,
    /// Send to one of these clusters, chosen by weight.
    #[serde(default)]
    pub weighted_clusters: Vec<WeightedCluster>,
    /// Answer directly from the gateway.
    #[serde(default)]
    pub direct_response: Option<DirectResponse>,
    /// Accept a WebSocket upgrade here and serve this protocol inside it
    /// (e.g. `mqtt` for MQTT over WebSocket); its requests are routed again.
    #[serde(default)]
    pub websocket: Option<ProtocolName>,
    /// Request timeout (overrides the cluster's `request_timeout`).
    #[serde(default)]
    pub timeout: Option<Duration>,
    /// Re-send a failed request, to another host where the cluster has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Spanned<RetryPolicy>>,
    /// MySQL read/write split: plain reads outside transactions and pinned
    /// sessions go to this cluster (the replicas); `cluster` is the primary.
    #[serde(default)]
    pub read_cluster: Option<Spanned<String>>,
    /// Send only to the cluster's hosts whose labels include all of these
    /// (`subset: {version: v2}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<Spanned<BTreeMap<String, String>>>,
    /// Choose the subset from a request header (or RPC attachment): hosts
    /// whose `label` equals the header's value (canary by header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset_from_header: Option<Spanned<SubsetFromHeader>>,
    /// When no host matches the request's subset: `any` host of the route's
    /// (static) subset, or `none` (answered as an empty cluster is).
    #[serde(default)]
    pub subset_fallback: SubsetFallback,
    /// Stream filters the requests this route took go through, in order,
    /// after the listener's.
    #[serde(default)]
    pub filters: Vec<Spanned<filters::Filter>>,
    /// HTTP: answer with a redirect made by the gateway (`Location`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<Spanned<Redirect>>,
    /// HTTP: send to the cluster a request header names (`503 cluster not
    /// found` when it is missing or names no cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_header: Option<Spanned<String>>,
    /// HTTP: the upstream sees the path with the matched `path_prefix`
    /// replaced by this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_rewrite: Option<Spanned<String>>,
    /// HTTP: the upstream sees the path with every match of `pattern`
    /// replaced by `substitution` (`$1`, `${name}` for groups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex_rewrite: Option<Spanned<RegexRewrite>>,
    /// HTTP: the upstream sees this `Host` (`:authority` for HTTP/2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_rewrite: Option<Spanned<String>>,
}

/// `redirect: {host: new.example, status: 308}`: each part not given is the
/// request's own.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Redirect {
    /// `http` or `https` (default: the scheme the request came with).
    #[serde(default)]
    pub scheme: Option<String>,
    /// Host name (default: the request's, without its port).
    #[serde(default)]
    pub host: Option<String>,
    /// Port (default: the request's, when it had one).
    #[serde(default)]
    pub port: Option<u16>,
    /// The whole path.
    #[serde(default)]
    pub path: Option<String>,
    /// Replace the route's matched `path_prefix` with this.
    #[serde(default)]
    pub prefix_rewrite: Option<String>,
    /// 301, 302, 303, 307 or 308.
    #[serde(default = "default_redirect_status")]
    pub status: u16,
    /// Drop the query string.
    #[serde(default)]
    pub strip_query: bool,
}

fn default_redirect_status() -> u16 {
    301
}

/// `regex_rewrite: {pattern: "^/v(\\d+)/(.*)", substitution: "/api/$2?v=$1"}`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegexRewrite {
    pub pattern: String,
    pub substitution: String,
}

/// A route's `retry:` policy (Envoy's, in short).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Which failures are retried.
    pub retry_on: Vec<RetryOn>,
    /// The HTTP statuses `retriable_status` retries.
    #[serde(default)]
    pub retriable_statuses: Vec<u16>,
    /// Most retries of one request (default 1).
    #[serde(default = "defaults::num_retries")]
    pub num_retries: u32,
    /// How long each try waits for the response head (default: the
    /// route's `timeout`, else the cluster's `request_timeout`).
    #[serde(default)]
    pub per_try_timeout: Option<Duration>,
    /// The wait before each retry: exponential from `base`, capped at `max`,
    /// with full jitter (default `{base: 25ms, max: 250ms}`).
    #[serde(default)]
    pub backoff: RetryBackoff,
    /// Every request of this route may be re-sent once it may have reached
    /// a host (else only HTTP GET, HEAD and OPTIONS).
    #[serde(default)]
    pub idempotent: bool,
}

/// `backoff: {base: 25ms, max: 250ms}`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetryBackoff {
    #[serde(default = "defaults::retry_backoff_base")]
    pub base: Duration,
    /// Default: ten times `base`.
    #[serde(default)]
    pub max: Option<Duration>,
}

impl Default for RetryBackoff {
    fn default() -> Self {
        Self {
            base: defaults::retry_backoff_base(),
            max: None,
        }
    }
}

/// A failure a retry policy may retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryOn {
    /// The host could not be connected to (nothing was sent).
    ConnectFailure,
    /// The connection broke before a response head came.
    Reset,
    /// No response head within the per-try timeout.
    Timeout,
    /// HTTP 502, 503 or 504, and `connect_failure` and `reset`.
    GatewayError,
    /// An HTTP status listed in `retriable_statuses`.
    RetriableStatus,
    /// gRPC status UNAVAILABLE (14).
    Unavailable,
    /// Any HTTP 5xx; Dubbo and Bolt server-error statuses.
    ServerError,
}

/// `subset_from_header: {header: x-version, label: version}`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SubsetFromHeader {
    /// The header (HTTP, case-insensitive) or RPC attachment/header whose value is looked up.
    pub header: String,
    /// The host label the value must equal.
    pub label: String,
}

/// What a subset route does when no host matches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SubsetFallback {
    /// Any host of the route's static subset (the whole cluster without one).
    #[default]
    Any,
    /// No host: the request is answered as for an empty cluster.
    None,
}

/// A request matcher. All the given conditions must hold.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    /// Only requests of this protocol.
    #[serde(default)]
    pub protocol: Option<ProtocolName>,
    /// HTTP/RTSP method, one of these (case-insensitive).
    #[serde(default)]
    pub methods: Vec<String>,
    /// Path starts with this.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// Path equals this.
    #[serde(default)]
    pub path_exact: Option<String>,
    /// Path matches this regex (whole path).
    #[serde(default)]
    pub path_regex: Option<Spanned<String>>,
    /// Header conditions.
    #[serde(default)]
    pub headers: Vec<HeaderMatch>,
    /// Redis command, one of these (case-insensitive).
    #[serde(default)]
    pub commands: Vec<String>,
    /// The first key starts with this.
    #[serde(default)]
    pub key_prefix: Option<String>,
    /// MQTT client id starts with this.
    #[serde(default)]
    pub client_id_prefix: Option<String>,
    /// User name (MQTT CONNECT username) is one of these.
    #[serde(default)]
    pub users: Vec<String>,
    /// RPC service (Dubbo interface, Bolt service header) is one of these (exact).
    #[serde(default)]
    pub services: Vec<String>,
    /// RPC method name (Dubbo, Bolt) is one of these (exact).
    #[serde(default)]
    pub rpc_methods: Vec<String>,
    /// MySQL schema (the session's database at login) is one of these (exact).
    #[serde(default)]
    pub schemas: Vec<String>,
    /// The connection's destination address (a transparent listener's
    /// original destination, or a PROXY header's) is in one of these blocks
    /// (`10.0.0.0/8`, `::1`). Never holds without a known destination.
    #[serde(default)]
    pub destination_ips: Vec<filters::Cidr>,
    /// The connection's destination port is one of these.
    #[serde(default)]
    pub destination_ports: Vec<u16>,
}

/// MQTT edge policy of a listener.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Mqtt {
    /// Largest MQTT packet accepted from clients or brokers, in bytes.
    #[serde(default = "defaults::mqtt_max_packet")]
    pub max_packet_size: usize,
    /// A client must send CONNECT within this time after connecting.
    #[serde(default = "defaults::mqtt_connect_timeout")]
    pub connect_timeout: Duration,
    /// Who may connect.
    #[serde(default)]
    pub auth: MqttAuth,
    /// Who may publish and subscribe to what.
    #[serde(default)]
    pub acl: MqttAcl,
    /// Per-client publish limits.
    #[serde(default)]
    pub rate_limit: Option<MqttRateLimit>,
    /// New connections per second accepted on this listener (token bucket).
    #[serde(default)]
    pub connection_rate: Option<RateSpec>,
    /// A topic prefix added to every topic upstream and removed downstream,
    /// with `%u` (user) and `%c` (client id), e.g. `tenants/%u/`.
    #[serde(default)]
    pub mount_point: Option<String>,
}

impl Default for Mqtt {
    fn default() -> Self {
        Self {
            max_packet_size: defaults::mqtt_max_packet(),
            connect_timeout: defaults::mqtt_connect_timeout(),
            auth: MqttAuth::default(),
            acl: MqttAcl::default(),
            rate_limit: None,
            connection_rate: None,
            mount_point: None,
        }
    }
}

/// MQTT authentication at the gateway.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MqttAuth {
    /// Check CONNECT credentials at the gateway (else the broker decides).
    #[serde(default)]
    pub enabled: bool,
    /// Accept CONNECTs without a user name.
    #[serde(default)]
    pub allow_anonymous: bool,
    /// A mosquitto password file (`user:$7$...` lines, as `mosquitto_passwd` writes),
    /// relative to the config file's folder.
    #[serde(default)]
    pub password_file: Option<Spanned<String>>,
    /// Users listed inline, with `mosquitto_passwd` hashes.
    #[serde(default)]
    pub users: Vec<MqttUser>,
    /// Over TLS with a verified client certificate, take its subject common
    /// name as the user (for the ACL's `%u` and `users`), without a password.
    #[serde(default)]
    pub client_cert_identity: bool,
}

/// One user with a password hash (`$7$...` PBKDF2-SHA512 or `$6$...` SHA-512).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MqttUser {
    pub username: String,
    pub password_hash: Spanned<String>,
}

/// Topic ACL.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MqttAcl {
    /// When no rule matches: `allow` or `deny`.
    #[serde(default = "defaults::acl_default")]
    pub default: AclVerdict,
    /// Tried in order; the first that matches decides.
    #[serde(default)]
    pub rules: Vec<AclRule>,
    /// A denied PUBLISH: `ack` (v5: PUBACK/PUBREC with 0x87; QoS 0 dropped) or
    /// `disconnect`.
    #[serde(default)]
    pub on_denied_publish: DeniedPublish,
}

impl Default for MqttAcl {
    fn default() -> Self {
        Self {
            default: defaults::acl_default(),
            rules: Vec::new(),
            on_denied_publish: DeniedPublish::default(),
        }
    }
}

/// `allow` or `deny`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AclVerdict {
    Allow,
    Deny,
}

/// What to do with a PUBLISH the ACL denies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeniedPublish {
    #[default]
    Ack,
    Disconnect,
}

/// One ACL rule.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AclRule {
    /// `allow` or `deny`.
    pub verdict: AclVerdict,
    /// `publish`, `subscribe` (default: both).
    #[serde(default = "defaults::acl_actions")]
    pub actions: Vec<AclAction>,
    /// User names (default: anyone).
    #[serde(default)]
    pub users: Vec<String>,
    /// Client id prefixes (default: any client).
    #[serde(default)]
    pub client_prefixes: Vec<String>,
    /// Topic patterns with `+`, `#`, `%u`, `%c`.
    pub topics: Vec<String>,
}

/// `publish` or `subscribe`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AclAction {
    Publish,
    Subscribe,
}

/// Per-client publish limits.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MqttRateLimit {
    /// PUBLISH packets per second (and burst).
    #[serde(default)]
    pub messages: Option<RateSpec>,
    /// PUBLISH payload bytes per second (and burst).
    #[serde(default)]
    pub bytes: Option<RateSpec>,
    /// Over the limit: `delay` (stop reading until within it), `drop` (QoS 0
    /// dropped, QoS>0 acked with v5 reason 0x97 quota exceeded), or `disconnect`
    /// (v5 DISCONNECT 0x96).
    #[serde(default)]
    pub over_limit: OverLimit,
}

impl MqttRateLimit {
    /// The shared `rate_limit` filters these limits are: one per client id
    /// for PUBLISH packets (`messages`) and one for their payload bytes
    /// (`bytes`); `drop` refuses (QoS 0 dropped, QoS 1/2 acked with 0x97),
    /// `disconnect` refuses and closes (v5 DISCONNECT 0x96), `delay` holds
    /// the client's packets until the tokens are due.
    pub fn as_filters(&self) -> Vec<filters::Filter> {
        let over_limit = match self.over_limit {
            OverLimit::Delay => filters::RateOverLimit::Delay,
            OverLimit::Drop => filters::RateOverLimit::Refuse,
            OverLimit::Disconnect => filters::RateOverLimit::Close,
        };
        let limit = |spec: &RateSpec, unit| {
            filters::Filter::RateLimit(filters::RateLimit {
                rate: spec.rate,
                burst: Some(spec.burst()),
                key: filters::RateKey::Field(switchyard_codecs::Field::ClientId),
                over_limit,
                // "Stop reading until within it": no bound but the client's patience.
                max_delay: Duration::from_secs(3600),
                max_keys: filters::RateLimit::DEFAULT_MAX_KEYS,
                unit,
                matcher: Some(filters::RequestMatch {
                    protocol: Some(ProtocolName(Protocol::Mqtt)),
                    field: Some(filters::FieldName(switchyard_codecs::Field::Method)),
                    value: Some("PUBLISH".into()),
                }),
            })
        };
        let messages = self
            .messages
            .iter()
            .map(|s| limit(s, filters::RateUnit::Requests));
        let bytes = self
            .bytes
            .iter()
            .map(|s| limit(s, filters::RateUnit::Bytes));
        messages.chain(bytes).collect()
    }
}

/// A token bucket: `rate` per second, up to `burst` at once.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateSpec {
    pub rate: f64,
    #[serde(default)]
    pub burst: Option<f64>,
}

impl RateSpec {
    pub fn burst(&self) -> f64 {
        self.burst.unwrap_or(self.rate).max(1.0)
    }
}

/// What happens to a client over its rate limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OverLimit {
    #[default]
    Delay,
    Drop,
    Disconnect,
}

/// A condition on one header.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatch {
    pub name: String,
    /// Value equals this.
    #[serde(default)]
    pub exact: Option<String>,
    /// Value starts with this.
    #[serde(default)]
    pub prefix: Option<String>,
    /// Value matches this regex.
    #[serde(default)]
    pub regex: Option<Spanned<String>>,
    /// `true`: the header must be present; `false`: it must be absent.
    #[serde(default)]
    pub present: Option<bool>,
}

/// A cluster and its share of traffic.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedCluster {
    pub name: Spanned<String>,
    pub weight: u32,
}

/// A response made by the gateway itself.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DirectResponse {
    /// HTTP status code (HTTP routes).
    #[serde(default = "defaults::status")]
    pub status: u16,
    /// Response body (HTTP) or error text (Redis, answered as `-ERR <body>`).
    #[serde(default)]
    pub body: String,
    /// `Content-Type` of the body (HTTP).
    #[serde(default = "defaults::content_type")]
    pub content_type: String,
}

/// A group of interchangeable upstream hosts.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    pub name: Spanned<String>,
    /// How a host is chosen for each request or session.
    #[serde(default)]
    pub lb: LbPolicy,
    /// With `lb: ring_hash`: which request field is hashed.
    #[serde(default)]
    pub hash_on: HashOn,
    /// When the chosen host cannot be reached: try the next one (for `ring_hash`,
    /// the next host clockwise on the ring), or fail the request/session.
    #[serde(default = "defaults::yes")]
    pub failover: bool,
    /// `static` (the default): the `hosts` listed. `original_dst`: no hosts
    /// listed; each connection goes to its own original destination (a
    /// transparent listener's, or a PROXY header's), with pools per destination.
    #[serde(default, rename = "type")]
    pub kind: ClusterKind,
    /// `type: original_dst`, HTTP only: take the destination from this
    /// request header (`IP:port`, e.g. `x-envoy-original-dst-host`) when a
    /// request carries a valid one, else the connection's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_dst_header: Option<Spanned<String>>,
    #[serde(default)]
    pub hosts: Vec<Spanned<Host>>,
    /// Set this `SO_MARK` on every connection to the hosts, so the
    /// interception rules let the gateway's own connections pass (the
    /// `-m mark --mark` rule of `labs/sidecar/intercept.sh`). Needs
    /// `CAP_NET_ADMIN`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mark: Option<Spanned<u32>>,
    /// Ramp a host's share up linearly over `window` after it becomes
    /// reachable again or is newly added (round robin, weighted, random,
    /// least request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_start: Option<SlowStart>,
    /// Give up connecting to a host after this long (answered 502 / `-ERR`).
    #[serde(default = "defaults::connect_timeout")]
    pub connect_timeout: Duration,
    /// Wait this long for a response before answering 504 / `-ERR` (routes may override).
    #[serde(default = "defaults::request_timeout")]
    pub request_timeout: Duration,
    /// Close pooled upstream connections idle for this long.
    #[serde(default = "defaults::pool_idle_timeout")]
    pub idle_timeout: Duration,
    /// Most idle connections kept per host.
    #[serde(default = "defaults::max_idle_per_host")]
    pub max_idle_per_host: usize,
    /// The HTTP version spoken to the hosts (`http1` or `http2`, h2c with
    /// prior knowledge); default: the version the request came in with.
    #[serde(default)]
    pub protocol: Option<UpstreamProtocol>,
    /// Redis: sharding, health checks and backend credentials.
    #[serde(default)]
    pub redis: Option<redis::ClusterRedis>,
    /// memcached: keys sharded over the hosts by ketama.
    #[serde(default)]
    pub memcached: Option<memcached::ClusterMemcached>,
    /// MySQL backend credentials and limits (clusters MySQL routes send to).
    #[serde(default)]
    pub mysql: Option<MysqlBackend>,
    /// Active health checks of the hosts (see docs/config.md).
    #[serde(default)]
    pub health_check: Option<health::HealthCheck>,
    /// Passive health: eject hosts whose requests fail in a row.
    #[serde(default)]
    pub outlier_detection: Option<health::OutlierDetection>,
    /// Limits that protect the hosts: past them, requests are answered
    /// locally with the protocol's "unavailable" answer.
    #[serde(default)]
    pub circuit_breakers: Option<CircuitBreakers>,
    /// Send a PROXY protocol header (`v1` or `v2`) with the downstream
    /// client's address first on each new connection to a host (clusters of
    /// TCP passthrough, MQTT and RTSP only: see docs/config.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<proxy_protocol::Send>,
    /// Speak TLS to the hosts: verify them (CA file or the system roots),
    /// SNI, a client certificate, ALPN (see docs/config.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<UpstreamTls>,
}

impl Cluster {
    /// The HTTP version spoken to the hosts: `protocol`, else the one the
    /// cluster's TLS `alpn` names alone (`[h2]`: HTTP/2, `[http/1.1]`:
    /// HTTP/1.1); `None`: the version each request came in with.
    pub fn http_protocol(&self) -> Option<UpstreamProtocol> {
        if self.protocol.is_some() {
            return self.protocol;
        }
        let alpn = &self.tls.as_ref()?.alpn;
        let h2 = alpn.iter().any(|p| p.value == "h2");
        let h1 = alpn.iter().any(|p| p.value == "http/1.1");
        match (h2, h1) {
            (true, false) => Some(UpstreamProtocol::Http2),
            (false, true) => Some(UpstreamProtocol::Http1),
            _ => None,
        }
    }
}

/// TLS to a cluster's hosts (`clusters[].tls`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// PEM CA certificates the hosts' certificates must chain to, relative
    /// to the config file; default: the system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<Spanned<String>>,
    /// The server name sent (SNI) and verified; default: none, the host's
    /// IP address is verified (hosts are IP literals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<Spanned<String>>,
    /// PEM client certificate chain (mutual TLS), relative to the config file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<Spanned<String>>,
    /// PEM private key of `cert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Spanned<String>>,
    /// ALPN protocols offered, in order of preference (`h2`, `http/1.1`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alpn: Vec<Spanned<String>>,
    /// Accept any server certificate (no chain or name check): testing only;
    /// `switchyard check` warns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_verify: Option<Spanned<bool>>,
    /// The oldest TLS version accepted (`"1.2"`, the default, or `"1.3"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_version: Option<Spanned<String>>,
}

impl UpstreamTls {
    /// Whether server certificates go unchecked.
    pub fn skips_verify(&self) -> bool {
        self.insecure_skip_verify.as_ref().is_some_and(|v| v.value)
    }
}

/// A cluster's circuit breakers (`circuit_breakers:`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakers {
    /// Most requests in flight to the cluster's hosts at once (HTTP
    /// requests, gRPC calls, Redis commands, Dubbo/Bolt calls, RTSP
    /// requests); one more is answered "unavailable" at once. Default: no limit.
    #[serde(default)]
    pub max_requests: Option<usize>,
    /// Most retries in flight to the cluster at once (route `retry:`); past
    /// it a failed try is answered as it failed. Default: no limit.
    #[serde(default)]
    pub max_retries: Option<usize>,
    /// Most upstream connections open to the cluster's hosts at once (all
    /// hosts together, idle pooled and shared ones included; `None`: no
    /// limit). A request that needs one more waits for one to close.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    /// Most requests waiting for a connection under `max_connections` (at
    /// most `connect_timeout` each); one more is answered "unavailable" at
    /// once (`None`: no limit; 0: never wait).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending: Option<usize>,
}

/// Where a cluster's hosts come from (`type:`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterKind {
    /// The `hosts` listed.
    #[default]
    Static,
    /// Each connection's original destination (sidecar interception).
    OriginalDst,
}

/// `slow_start: {window: 30s}`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SlowStart {
    /// How long a recovered or new host takes to reach its full weight.
    pub window: Duration,
    /// The share a host starts at, in percent of its weight (default 10, as Envoy).
    #[serde(default = "defaults::slow_start_min_percent")]
    pub min_weight_percent: u32,
}

/// The HTTP version a cluster's hosts speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2 over cleartext TCP with prior knowledge (h2c).
    Http2,
}

/// Load-balancing policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LbPolicy {
    /// Each host in turn.
    #[default]
    RoundRobin,
    /// Each host in turn, in proportion to its weight (smooth, as nginx).
    WeightedRoundRobin,
    /// A host chosen at random (weighted).
    Random,
    /// Consistent hashing (ketama) on the request's `hash_on` metadata field:
    /// the same client id (or key, user, ...) always reaches the same host.
    RingHash,
    /// Power of two choices: two hosts drawn at random (weighted), the one
    /// with fewer requests in flight wins (`weight / (active + 1)`), as Envoy.
    LeastRequest,
    /// Consistent hashing with a Maglev lookup table (65537 entries) on
    /// `hash_on`: faster lookups and better balance than `ring_hash`.
    Maglev,
}

/// The metadata field a `ring_hash` or `maglev` cluster hashes on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HashOn {
    /// MQTT client id.
    #[default]
    ClientId,
    /// User name (MQTT, MySQL).
    User,
    /// The first key of a command (Redis).
    Key,
    /// HTTP Host / authority.
    Host,
    /// Request path.
    Path,
    /// The client's IP address (after an accepted PROXY protocol header):
    /// every connection of one client to the same host, whatever it speaks.
    SourceIp,
}

/// One upstream host: `"IP:port"` or `{address, weight}`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Host {
    Address(String),
    Weighted {
        address: String,
        #[serde(default = "defaults::weight")]
        weight: u32,
        /// Redis: replicas of this host, for `redis.read_from: replica`.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        replicas: Vec<String>,
        /// Labels routes select subsets by (`{version: v2, zone: a}`).
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        labels: BTreeMap<String, String>,
    },
}

impl Host {
    pub fn address(&self) -> &str {
        match self {
            Host::Address(a) | Host::Weighted { address: a, .. } => a,
        }
    }
    /// Redis replicas of this host.
    pub fn replicas(&self) -> &[String] {
        match self {
            Host::Address(_) => &[],
            Host::Weighted { replicas, .. } => replicas,
        }
    }
    /// Labels of this host (none for the plain `"IP:port"` form).
    pub fn labels(&self) -> Option<&BTreeMap<String, String>> {
        match self {
            Host::Address(_) => None,
            Host::Weighted { labels, .. } => Some(labels),
        }
    }
    /// Whether this host carries every label of `selector`.
    pub fn has_labels(&self, selector: &BTreeMap<String, String>) -> bool {
        selector
            .iter()
            .all(|(k, v)| self.labels().and_then(|l| l.get(k)) == Some(v))
    }
    pub fn weight(&self) -> u32 {
        match self {
            Host::Address(_) => 1,
            Host::Weighted { weight, .. } => *weight,
        }
    }
}

/// RTSP settings of a listener.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Rtsp {
    /// Largest RTSP request/response head (start line and headers), in bytes.
    #[serde(default = "defaults::rtsp_max_head_bytes")]
    pub max_head_bytes: usize,
    /// Largest RTSP body (SDP, parameters), in bytes.
    #[serde(default = "defaults::rtsp_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Relay RTP/RTCP over UDP through gateway ports (else UDP SETUPs get 461).
    #[serde(default = "defaults::yes")]
    pub udp_relay: bool,
    /// Release a UDP session the client has not refreshed (request with its
    /// `Session`, or RTCP) for this long, when the server's `Session` header
    /// names no timeout (else twice that timeout).
    #[serde(default = "defaults::rtsp_session_timeout")]
    pub session_timeout: Duration,
    /// Gateway-side Basic authentication (else the servers' own challenges pass through).
    #[serde(default)]
    pub auth: Option<RtspAuth>,
}

impl Default for Rtsp {
    fn default() -> Self {
        Self {
            max_head_bytes: defaults::rtsp_max_head_bytes(),
            max_body_bytes: defaults::rtsp_max_body_bytes(),
            udp_relay: true,
            session_timeout: defaults::rtsp_session_timeout(),
            auth: None,
        }
    }
}

/// The MySQL front end of a listener (`protocol: mysql`). The gateway
/// authenticates clients itself against `users` and opens backend
/// connections with the cluster's own credentials (ProxySQL's model).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Mysql {
    /// The version the greeting announces; unset: the backends' own (the
    /// lowest of them), as their greetings say.
    #[serde(default)]
    pub server_version: Option<String>,
    /// The auth plugin the greeting offers; clients using the other one are
    /// switched (AuthSwitchRequest).
    #[serde(default)]
    pub auth_plugin: MysqlAuthPlugin,
    /// Who may log in.
    #[serde(default)]
    pub users: Vec<MysqlUser>,
    /// Largest client or server message (a packet and its continuations), in bytes.
    #[serde(default = "defaults::mysql_max_message")]
    pub max_message_size: usize,
    /// A client must finish logging in within this time.
    #[serde(default = "defaults::mysql_login_timeout")]
    pub login_timeout: Duration,
    /// Regex rules on COM_QUERY text, tried in order before read/write split:
    /// the first match sends the statement to its cluster.
    #[serde(default)]
    pub query_rules: Vec<MysqlQueryRule>,
    /// Count queries per digest (literals replaced by `?`), served at the
    /// admin `/mysql/digests`; at most this many distinct digests (0: off).
    #[serde(default = "defaults::mysql_max_digests")]
    pub max_digests: usize,
}

impl Default for Mysql {
    fn default() -> Self {
        Self {
            server_version: None,
            auth_plugin: MysqlAuthPlugin::default(),
            users: Vec::new(),
            max_message_size: defaults::mysql_max_message(),
            login_timeout: defaults::mysql_login_timeout(),
            query_rules: Vec::new(),
            max_digests: defaults::mysql_max_digests(),
        }
    }
}

/// RTSP Basic authentication at the gateway.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RtspAuth {
    /// The realm in `WWW-Authenticate: Basic realm="..."`.
    #[serde(default = "defaults::rtsp_realm")]
    pub realm: String,
    /// Who may use the listener.
    pub users: Vec<RtspUser>,
}

/// One RTSP user.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RtspUser {
    pub username: String,
    /// The password in clear (Basic sends it so on every request anyway).
    pub password: String,
}

/// A MySQL auth plugin the gateway speaks to clients.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MysqlAuthPlugin {
    #[default]
    MysqlNativePassword,
    CachingSha2Password,
}

/// One MySQL user of the gateway.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlUser {
    pub username: Spanned<String>,
    /// The password in plain text (both auth plugins).
    #[serde(default)]
    pub password: Option<String>,
    /// Or its `mysql_native_password` hash, `*` + 40 hex digits as
    /// `SELECT PASSWORD('...')` prints it (caching_sha2 clients are switched
    /// to native, or checked in full over TLS).
    #[serde(default)]
    pub password_hash: Option<Spanned<String>>,
    /// The schema of a session that names none at login.
    #[serde(default)]
    pub default_schema: Option<String>,
    /// Schemas this user may use (login and COM_INIT_DB/USE); empty: any.
    #[serde(default)]
    pub schemas: Vec<String>,
}

/// A query rule: statements matching `pattern` go to `cluster`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlQueryRule {
    /// A regex searched in the statement text (add `(?i)` for case-insensitive).
    pub pattern: Spanned<String>,
    pub cluster: Spanned<String>,
}

/// How the gateway logs in to a cluster's MySQL hosts, and how many
/// connections it may hold to each.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlBackend {
    pub user: Spanned<String>,
    #[serde(default)]
    pub password: String,
    /// Most connections (busy + idle) to one host; more sessions wait up to
    /// `connect_timeout`, then get ERR 1040.
    #[serde(default = "defaults::mysql_max_connections")]
    pub max_connections: usize,
}

mod defaults {
    use super::Duration;
    use std::net::SocketAddr;

    pub fn admin_address() -> serde_saphyr::Spanned<Option<SocketAddr>> {
        serde_saphyr::Spanned::new(
            Some(SocketAddr::from(([127, 0, 0, 1], 9901))),
            serde_saphyr::Location::UNKNOWN,
            serde_saphyr::Location::UNKNOWN,
        )
    }
    pub fn drain_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn watch_interval() -> Duration {
        Duration::from_secs(2)
    }
    pub fn cert_check_interval() -> Duration {
        Duration::from_secs(5)
    }
    pub fn max_connections() -> usize {
        100_000
    }
    pub fn overload_check_interval() -> Duration {
        Duration::from_secs(1)
    }
    pub fn lingering_close() -> Duration {
        Duration::from_secs(2)
    }
    pub fn request_head_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn idle_timeout() -> Duration {
        Duration::from_secs(300)
    }
    pub fn detect_timeout() -> Duration {
        Duration::from_secs(5)
    }
    pub fn detect_max_bytes() -> usize {
        8192
    }
    pub fn max_head_bytes() -> usize {
        64 * 1024
    }
    pub fn max_headers() -> usize {
        128
    }
    pub fn max_bulk() -> usize {
        512 * 1024 * 1024
    }
    pub fn max_elements() -> usize {
        1024 * 1024
    }
    /// Redis relays script replies nested up to its Lua stack limit (about 8000).
    pub fn max_depth() -> usize {
        8192
    }
    pub fn max_pipeline() -> usize {
        4096
    }
    pub fn status() -> u16 {
        200
    }
    pub fn content_type() -> String {
        "text/plain; charset=utf-8".to_owned()
    }
    pub fn connect_timeout() -> Duration {
        Duration::from_secs(2)
    }
    pub fn request_timeout() -> Duration {
        Duration::from_secs(15)
    }
    pub fn pool_idle_timeout() -> Duration {
        Duration::from_secs(60)
    }
    pub fn max_idle_per_host() -> usize {
        128
    }
    pub fn weight() -> u32 {
        1
    }
    pub fn slow_start_min_percent() -> u32 {
        10
    }
    pub fn num_retries() -> u32 {
        1
    }
    pub fn retry_backoff_base() -> Duration {
        Duration::from_millis(25)
    }
    pub fn yes() -> bool {
        true
    }
    pub fn mqtt_max_packet() -> usize {
        1024 * 1024
    }
    pub fn mqtt_connect_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn acl_default() -> super::AclVerdict {
        super::AclVerdict::Allow
    }
    pub fn mysql_max_message() -> usize {
        64 * 1024 * 1024
    }
    pub fn mysql_login_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn mysql_max_digests() -> usize {
        1024
    }
    pub fn mysql_max_connections() -> usize {
        256
    }
    pub fn acl_actions() -> Vec<super::AclAction> {
        vec![super::AclAction::Publish, super::AclAction::Subscribe]
    }
    pub fn rtsp_max_head_bytes() -> usize {
        16 * 1024
    }
    pub fn rtsp_max_body_bytes() -> usize {
        64 * 1024
    }
    pub fn rtsp_session_timeout() -> Duration {
        Duration::from_secs(60)
    }
    pub fn rtsp_realm() -> String {
        "switchyard".to_owned()
    }
}
