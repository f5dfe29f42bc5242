//! Stream filters in config files: `filters:` on a listener (run on every
//! request, before routing) and on a route (run on the requests it took),
//! each an ordered list of one-key maps:
//!
//! ```yaml
//! filters:
//!   - ip_access: {deny: ["10.0.0.0/8"]}
//!   - rate_limit: {rate: 100, burst: 200, key: source_ip}
//!   - concurrency_limit: {max: 64}
//!   - fault: {abort: {percent: 5, status: 503}}
//!   - payload_limit: {max_bytes: 1048576}
//!   - mirror: {cluster: shadow, percent: 10}
//!   - headers: {request: {set: {x-env: prod}}, response: {remove: [server]}}
//!   - ext_authz: {grpc: {address: "127.0.0.1:9191", timeout: 200ms}}
//! ```

use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use switchyard_codecs::Field;

use super::Duration;

/// One stream filter.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Filter {
    /// Allow or deny requests by the client's address.
    IpAccess(IpAccess),
    /// A token bucket per route (or listener), optionally one per client identity.
    RateLimit(RateLimit),
    /// At most `max` requests in flight through this filter.
    ConcurrencyLimit(ConcurrencyLimit),
    /// Inject delays and aborts into a share of the requests.
    Fault(Fault),
    /// Refuse requests whose body or payload is larger than `max_bytes`.
    PayloadLimit(PayloadLimit),
    /// Send a copy of a share of the requests to another cluster and drop
    /// its answers.
    Mirror(Mirror),
    /// Set, add and remove request and response headers (HTTP/1, HTTP/2 and
    /// gRPC metadata, Dubbo attachments, Bolt header maps, RTSP).
    Headers(Headers),
    /// Ask an authorization service (Envoy's `envoy.service.auth.v3`
    /// `Authorization/Check` over gRPC) before the request goes upstream.
    ExtAuthz(ExtAuthz),
}

impl Filter {
    /// The filter's name in config files and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Filter::IpAccess(_) => "ip_access",
            Filter::RateLimit(_) => "rate_limit",
            Filter::ConcurrencyLimit(_) => "concurrency_limit",
            Filter::Fault(_) => "fault",
            Filter::PayloadLimit(_) => "payload_limit",
            Filter::Mirror(_) => "mirror",
            Filter::Headers(_) => "headers",
            Filter::ExtAuthz(_) => "ext_authz",
        }
    }
}

/// `ip_access`: a client is refused when its address is in `deny`, or when
/// `allow` is not empty and its address is not in it (deny wins).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IpAccess {
    #[serde(default)]
    pub allow: Vec<Cidr>,
    #[serde(default)]
    pub deny: Vec<Cidr>,
}

/// An address block, `10.0.0.0/8`, `::1/128`, or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub network: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// Whether `ip` is inside the block (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let hint = "write an address block as `10.0.0.0/8`, `192.168.1.7` or `::1/128`";
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let network: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not an address block ({hint})"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{s}`: the prefix length must be 0..={max} ({hint})"))?,
        };
        Ok(Cidr { network, prefix })
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}/{}", self.network, self.prefix))
    }
}

/// `rate_limit`: `rate` requests per second, `burst` at once.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub rate: f64,
    /// Default: `rate` (at least 1).
    #[serde(default)]
    pub burst: Option<f64>,
    /// Whose requests share a bucket: `all` (one bucket for the filter),
    /// `source_ip`, or a request field (`client_id`, `user`, `service`,
    /// `command`, `host`, `path`, `header:NAME`, ...).
    #[serde(default)]
    pub key: RateKey,
    /// Over the limit: `refuse` (the protocol's "too many requests" answer)
    /// or `delay` (hold the request until a token is due, at most `max_delay`,
    /// refused beyond).
    #[serde(default)]
    pub over_limit: RateOverLimit,
    /// Longest a request is held with `over_limit: delay`.
    #[serde(default = "default_max_delay")]
    pub max_delay: Duration,
    /// With a per-identity key: the most identities tracked at once (idle
    /// ones are forgotten first when the table is full).
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
    /// What a token is: one `requests`, or one of the `bytes` a request
    /// declares (HTTP/RTSP body, MQTT PUBLISH payload, RPC body, Redis
    /// command, MySQL query packet; requests without a size take none).
    #[serde(default)]
    pub unit: RateUnit,
    /// Only the requests this matches are counted (and limited).
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub matcher: Option<RequestMatch>,
}

/// What a rate limit's tokens count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RateUnit {
    #[default]
    Requests,
    Bytes,
}

impl RateLimit {
    /// `max_keys` when not given.
    pub const DEFAULT_MAX_KEYS: usize = 100_000;

    pub fn burst(&self) -> f64 {
        self.burst.unwrap_or(self.rate).max(1.0)
    }
}

fn default_max_delay() -> Duration {
    Duration::from_secs(1)
}

fn default_max_keys() -> usize {
    RateLimit::DEFAULT_MAX_KEYS
}

/// What a rate limit counts by.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum RateKey {
    /// One bucket for every request through the filter.
    #[default]
    All,
    /// One bucket per client address.
    SourceIp,
    /// One bucket per value of a request field (requests without it share one).
    Field(Field),
}

impl FromStr for RateKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "all" => Ok(RateKey::All),
            "source_ip" => Ok(RateKey::SourceIp),
            other => parse_field(other).map(RateKey::Field),
        }
    }
}

impl<'de> Deserialize<'de> for RateKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl Serialize for RateKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            RateKey::All => s.serialize_str("all"),
            RateKey::SourceIp => s.serialize_str("source_ip"),
            RateKey::Field(f) => s.serialize_str(&field_name(f)),
        }
    }
}

/// A request field by its config name.
pub fn parse_field(s: &str) -> Result<Field, String> {
    Ok(match s {
        "method" => Field::Method,
        "host" => Field::Host,
        "path" => Field::Path,
        "command" => Field::Command,
        "key" => Field::Key,
        "service" => Field::Service,
        "rpc_method" => Field::RpcMethod,
        "topic" => Field::Topic,
        "client_id" => Field::ClientId,
        "user" => Field::User,
        "database" => Field::Database,
        other => match other.strip_prefix("header:") {
            Some(name) if !name.is_empty() => Field::Header(name.to_ascii_lowercase()),
            _ => {
                return Err(format!(
                    "`{s}` is not a request field (use source_ip, all, method, host, path, \
                     command, key, service, rpc_method, topic, client_id, user, database or header:NAME)"
                ));
            }
        },
    })
}

/// The config name of a request field.
pub fn field_name(f: &Field) -> String {
    match f {
        Field::Method => "method".into(),
        Field::Host => "host".into(),
        Field::Path => "path".into(),
        Field::Header(h) => format!("header:{h}"),
        Field::Command => "command".into(),
        Field::Key => "key".into(),
        Field::Service => "service".into(),
        Field::RpcMethod => "rpc_method".into(),
        Field::Topic => "topic".into(),
        Field::ClientId => "client_id".into(),
        Field::User => "user".into(),
        Field::Database => "database".into(),
    }
}

/// A request field named in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldName(pub Field);

impl<'de> Deserialize<'de> for FieldName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_field(&String::deserialize(d)?)
            .map(FieldName)
            .map_err(serde::de::Error::custom)
    }
}

impl Serialize for FieldName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&field_name(&self.0))
    }
}

/// What a rate limit does with a request over it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RateOverLimit {
    #[default]
    Refuse,
    Delay,
    /// Refuse, then close the client's connection (session protocols:
    /// HTTP/1, MQTT with a v5 DISCONNECT 0x96, Redis, RTSP, MySQL; the
    /// multiplexed ones refuse the one request, as with `refuse`).
    Close,
}

/// `concurrency_limit`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConcurrencyLimit {
    /// Most requests in flight at once; one more is refused with the
    /// protocol's "busy" answer.
    pub max: usize,
}

/// `fault`: Envoy's fault filter, MOSN's fault_inject.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// Hold a share of the requests for a while before they go on.
    #[serde(default)]
    pub delay: Option<FaultDelay>,
    /// Answer a share of the requests with an error instead of forwarding them.
    #[serde(default)]
    pub abort: Option<FaultAbort>,
    /// Only the requests this matches are subject to the fault.
    #[serde(default, rename = "match")]
    pub matcher: Option<RequestMatch>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FaultDelay {
    /// Share of requests delayed, 0–100.
    pub percent: f64,
    pub duration: Duration,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FaultAbort {
    /// Share of requests aborted, 0–100.
    pub percent: f64,
    /// The error, as an HTTP status; every protocol answers its own
    /// equivalent (docs/protocols.md, "Local answers").
    #[serde(default = "default_abort_status")]
    pub status: u16,
    /// gRPC status for gRPC requests (default: derived from `status`).
    #[serde(default)]
    pub grpc_status: Option<u32>,
    /// Text of the error (HTTP body, Redis error, RPC error message, ...).
    #[serde(default = "default_abort_message")]
    pub message: String,
}

fn default_abort_status() -> u16 {
    503
}

fn default_abort_message() -> String {
    "fault injected".into()
}

/// Which requests a filter applies to (`match:` of `fault` and
/// `rate_limit`): all the given conditions hold.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RequestMatch {
    /// Only requests of this protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<super::ProtocolName>,
    /// Only requests where this field has `value` (or, without `value`, is present).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<FieldName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// `payload_limit`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PayloadLimit {
    /// Largest request body (HTTP, RTSP), payload (MQTT PUBLISH, Dubbo/Bolt
    /// body), command (Redis) or query packet (MySQL), in bytes.
    pub max_bytes: u64,
}

/// `mirror`: Envoy's `request_mirror_policies`. A copy of `percent` of the
/// requests goes to `cluster` besides the original; its answers are read
/// and dropped, its failures only counted.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    /// The cluster the copies go to.
    pub cluster: String,
    /// Share of requests copied, 0–100.
    #[serde(default = "default_mirror_percent")]
    pub percent: f64,
    /// Most copies in flight to `cluster` at once; more are dropped. Shared
    /// by every `mirror` filter naming the cluster (the smallest one given
    /// holds).
    #[serde(default = "default_mirror_max_in_flight")]
    pub max_in_flight: usize,
}

fn default_mirror_percent() -> f64 {
    100.0
}

fn default_mirror_max_in_flight() -> usize {
    64
}

/// `headers`: edits of the request (as it goes upstream) and of the
/// response (as it goes to the client).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Headers {
    #[serde(default)]
    pub request: HeaderEdits,
    #[serde(default)]
    pub response: HeaderEdits,
}

/// One side's edits, applied in this order: `remove`, `set`, `add`, then
/// `forwarded_for` and `request_id` (requests only).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderEdits {
    /// Replace every field of this name with this value, or add it.
    #[serde(default)]
    pub set: std::collections::BTreeMap<String, String>,
    /// Append a field (another line, another value) whatever is there.
    #[serde(default)]
    pub add: std::collections::BTreeMap<String, String>,
    /// Remove every field of this name (case-insensitive for HTTP and RTSP).
    #[serde(default)]
    pub remove: Vec<String>,
    /// Append the client's address to `x-forwarded-for`.
    #[serde(default)]
    pub forwarded_for: bool,
    /// Add `x-request-id` (a random UUID v4) when the request has none.
    #[serde(default)]
    pub request_id: bool,
}

impl HeaderEdits {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
            && self.add.is_empty()
            && self.remove.is_empty()
            && !self.forwarded_for
            && !self.request_id
    }
}

/// `ext_authz`: every request is checked by an authorization service
/// before it goes upstream (docs/ext_authz.md).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExtAuthz {
    /// The service, spoken to with Envoy's gRPC `Authorization/Check`.
    pub grpc: ExtAuthzGrpc,
    /// On an error or timeout of the check (or more than `max_pending`
    /// checks waiting): `true` lets the request through, `false` (the
    /// default) refuses it with `status_on_error`.
    #[serde(default)]
    pub failure_mode_allow: bool,
    /// The refusal when the check fails and `failure_mode_allow` is false,
    /// as an HTTP status (default 503: gRPC UNAVAILABLE, MQTT server busy
    /// or quota exceeded, Redis `-ERR`, Dubbo/Bolt busy).
    #[serde(default = "default_status_on_error")]
    pub status_on_error: u16,
    /// Send the client's TLS certificate (PEM) in `source.certificate`
    /// (its subject common name always goes in `source.principal`).
    #[serde(default)]
    pub include_peer_certificate: bool,
    /// Most checks waiting for their answer at once; one more gets the
    /// failure mode at once.
    #[serde(default = "default_ext_authz_max_pending")]
    pub max_pending: usize,
    /// Added to every check's `context_extensions` (e.g. the listener's
    /// or route's name, for the policy to tell them apart).
    #[serde(default)]
    pub context_extensions: std::collections::BTreeMap<String, String>,
}

/// `ext_authz.grpc`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExtAuthzGrpc {
    /// `HOST:PORT` of the authorization service (plaintext HTTP/2; one
    /// shared, multiplexed connection per filter).
    pub address: String,
    /// Longest a check may take; past it the failure mode decides.
    #[serde(default = "default_ext_authz_timeout")]
    pub timeout: Duration,
}

fn default_status_on_error() -> u16 {
    503
}

fn default_ext_authz_max_pending() -> usize {
    1024
}

fn default_ext_authz_timeout() -> Duration {
    Duration::from_millis(200)
}

/// Fields a `headers` filter may not touch: hop-by-hop fields, the
/// framing of the message, and what routes and the HTTP/2 layer own
/// (`host`: use a route's `host_rewrite`).
pub fn is_protected_header(name: &str) -> bool {
    const PROTECTED: [&str; 11] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "host",
        "cseq",
        "session",
    ];
    name.starts_with(':') || PROTECTED.iter().any(|p| name.eq_ignore_ascii_case(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_contain_their_addresses() {
        let c: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(c.contains("10.1.200.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(
            c.contains("::ffff:10.1.0.9".parse().unwrap()),
            "IPv4-mapped"
        );
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        let one: Cidr = "127.0.0.1".parse().unwrap();
        assert_eq!(one.prefix, 32);
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("fe80::1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nope".parse::<Cidr>().is_err());
    }

    #[test]
    fn rate_keys_parse() {
        assert_eq!("source_ip".parse::<RateKey>(), Ok(RateKey::SourceIp));
        assert_eq!(
            "header:X-User".parse::<RateKey>(),
            Ok(RateKey::Field(Field::Header("x-user".into())))
        );
        assert_eq!(
            "client_id".parse::<RateKey>(),
            Ok(RateKey::Field(Field::ClientId))
        );
        assert!("clientid".parse::<RateKey>().is_err());
    }
}
