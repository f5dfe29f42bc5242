//! Upstream health: a cluster's active health checks (`clusters[].health_check`)
//! and passive outlier detection (`clusters[].outlier_detection`).

use serde::{Deserialize, Serialize};
use serde_saphyr::{Location, Spanned};

use super::Duration;

/// How a host is checked: the protocol-native probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// A TCP connect.
    Tcp,
    /// `GET path` (HTTP/1.1, or h2c when the cluster's `protocol` is `http2`);
    /// healthy when the status is one of `expected_statuses`.
    Http,
    /// `grpc.health.v1.Health/Check` for `service` over h2c; healthy when SERVING.
    Grpc,
    /// The cluster's `AUTH`/`SELECT` login, then `PING`; healthy on `+PONG`.
    Redis,
    /// Handshake with the cluster's `mysql` credentials, then `COM_PING`.
    Mysql,
    /// MQTT 3.1.1 CONNECT; healthy when the CONNACK accepts it (then DISCONNECT).
    Mqtt,
    /// A Dubbo heartbeat event; healthy when its response comes back OK.
    Dubbo,
    /// A SOFA Bolt v1 heartbeat; healthy when its response says SUCCESS.
    Bolt,
    /// `OPTIONS rtsp://host/`; healthy on a 2xx.
    Rtsp,
}

/// A cluster's active health checks.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// The probe. Default: inferred from the cluster (`redis` block: redis,
    /// `mysql` block: mysql, `protocol: http1/http2`: http), else `tcp`.
    #[serde(default)]
    pub kind: Option<Spanned<CheckKind>>,
    /// Time between two checks of a host.
    #[serde(default = "default_interval")]
    pub interval: Spanned<Duration>,
    /// Up to this much random time is added to each interval (default: a
    /// tenth of `interval`), so many gateways do not check in step.
    #[serde(default)]
    pub jitter: Option<Duration>,
    /// A check not finished within this long failed.
    #[serde(default = "default_timeout")]
    pub timeout: Spanned<Duration>,
    /// Passed checks in a row that bring an unhealthy host back.
    #[serde(default = "default_healthy_threshold")]
    pub healthy_threshold: Spanned<u32>,
    /// Failed checks in a row that take a healthy host out.
    #[serde(default = "default_unhealthy_threshold")]
    pub unhealthy_threshold: Spanned<u32>,
    /// `http`: the path requested.
    #[serde(default = "default_path")]
    pub path: Spanned<String>,
    /// `http`: the statuses that count as healthy.
    #[serde(default = "default_statuses")]
    pub expected_statuses: Spanned<Vec<u16>>,
    /// `grpc`: the service asked about (empty: the server as a whole).
    #[serde(default)]
    pub service: String,
}

/// Passive health: hosts that fail requests in a row are ejected for a while.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierDetection {
    /// Connect failures, resets and timeouts in a row that eject a host (0: off).
    #[serde(default = "default_consecutive")]
    pub consecutive_gateway_errors: u32,
    /// Server errors in a row (HTTP 5xx, gRPC UNAVAILABLE/INTERNAL, Dubbo and
    /// Bolt server-error statuses) that eject a host (0: off).
    #[serde(default = "default_consecutive")]
    pub consecutive_server_errors: u32,
    /// An ejection lasts this long times the host's number of ejections...
    #[serde(default = "default_base_ejection")]
    pub base_ejection_time: Spanned<Duration>,
    /// ...but never longer than this.
    #[serde(default = "default_max_ejection")]
    pub max_ejection_time: Spanned<Duration>,
    /// At most this share of the hosts is ejected at once (at least one host
    /// when above 0).
    #[serde(default = "default_max_percent")]
    pub max_ejection_percent: Spanned<u32>,
}

fn unknown<T>(v: T) -> Spanned<T> {
    Spanned::new(v, Location::UNKNOWN, Location::UNKNOWN)
}
fn default_interval() -> Spanned<Duration> {
    unknown(Duration::from_secs(5))
}
fn default_timeout() -> Spanned<Duration> {
    unknown(Duration::from_secs(1))
}
fn default_healthy_threshold() -> Spanned<u32> {
    unknown(2)
}
fn default_unhealthy_threshold() -> Spanned<u32> {
    unknown(3)
}
fn default_path() -> Spanned<String> {
    unknown("/".to_owned())
}
fn default_statuses() -> Spanned<Vec<u16>> {
    unknown(vec![200])
}
fn default_consecutive() -> u32 {
    5
}
fn default_base_ejection() -> Spanned<Duration> {
    unknown(Duration::from_secs(30))
}
fn default_max_ejection() -> Spanned<Duration> {
    unknown(Duration::from_secs(300))
}
fn default_max_percent() -> Spanned<u32> {
    unknown(10)
}

impl HealthCheck {
    /// The probe for cluster `c`: `kind`, else inferred from the cluster.
    pub fn kind_for(&self, c: &super::Cluster) -> CheckKind {
        if let Some(k) = &self.kind {
            return k.value;
        }
        if c.redis.is_some() {
            CheckKind::Redis
        } else if c.mysql.is_some() {
            CheckKind::Mysql
        } else if c.http_protocol().is_some() {
            CheckKind::Http
        } else {
            CheckKind::Tcp
        }
    }
}

/// Problems of one cluster's `health_check` and `outlier_detection`:
/// (where, field under the cluster, problem, fix).
pub fn problems(c: &super::Cluster) -> Vec<(Location, String, String, String)> {
    let mut out = Vec::new();
    let mut add = |at: Location, field: &str, problem: String, fix: &str| {
        out.push((at, field.to_owned(), problem, fix.to_owned()));
    };
    if let Some(h) = &c.health_check {
        if h.interval.value.get() < std::time::Duration::from_millis(10) {
            add(
                h.interval.referenced,
                "health_check.interval",
                format!("{} is too short", h.interval.value),
                "use 10ms or more, e.g. `interval: 5s`",
            );
        }
        if h.timeout.value.get().is_zero() {
            add(
                h.timeout.referenced,
                "health_check.timeout",
                "a 0s timeout fails every check".into(),
                "use e.g. `timeout: 1s`",
            );
        }
        for (t, name) in [
            (&h.healthy_threshold, "health_check.healthy_threshold"),
            (&h.unhealthy_threshold, "health_check.unhealthy_threshold"),
        ] {
            if t.value == 0 {
                add(
                    t.referenced,
                    name,
                    "0 checks in a row means nothing".into(),
                    "use 1 or more",
                );
            }
        }
        if !h.path.value.starts_with('/') {
            add(
                h.path.referenced,
                "health_check.path",
                format!("`{}` is not an absolute path", h.path.value),
                "write it from the root, e.g. `path: /healthz`",
            );
        }
        if h.expected_statuses.value.is_empty()
            || h.expected_statuses
                .value
                .iter()
                .any(|s| !(100..=599).contains(s))
        {
            add(
                h.expected_statuses.referenced,
                "health_check.expected_statuses",
                format!(
                    "{:?} is not a list of HTTP statuses",
                    h.expected_statuses.value
                ),
                "list statuses between 100 and 599, e.g. `expected_statuses: [200, 204]`",
            );
        }
        match h.kind_for(c) {
            CheckKind::Mysql if c.mysql.is_none() => add(
                h.kind.as_ref().map_or(Location::UNKNOWN, |k| k.referenced),
                "health_check.kind",
                "a mysql check logs in with the cluster's credentials, and it has none".into(),
                "add a `mysql: {user: ..., password: ...}` block to the cluster, or use `kind: tcp`",
            ),
            CheckKind::Grpc if c.http_protocol() == Some(super::UpstreamProtocol::Http1) => add(
                h.kind.as_ref().map_or(Location::UNKNOWN, |k| k.referenced),
                "health_check.kind",
                "gRPC health checks speak HTTP/2, and the cluster's protocol is http1".into(),
                "use `kind: http`, or `protocol: http2`",
            ),
            _ => {}
        }
    }
    if let Some(o) = &c.outlier_detection {
        if o.base_ejection_time.value.get().is_zero() {
            add(
                o.base_ejection_time.referenced,
                "outlier_detection.base_ejection_time",
                "a 0s ejection ejects nothing".into(),
                "use e.g. `base_ejection_time: 30s`",
            );
        }
        if o.max_ejection_time.value < o.base_ejection_time.value {
            add(
                o.max_ejection_time.referenced,
                "outlier_detection.max_ejection_time",
                format!(
                    "{} is shorter than base_ejection_time {}",
                    o.max_ejection_time.value, o.base_ejection_time.value
                ),
                "make max_ejection_time at least base_ejection_time",
            );
        }
        if o.max_ejection_percent.value > 100 {
            add(
                o.max_ejection_percent.referenced,
                "outlier_detection.max_ejection_percent",
                format!("{}% of the hosts", o.max_ejection_percent.value),
                "use a percentage between 0 and 100",
            );
        }
    }
    out
}
