//! `tracing:`: OpenTelemetry spans exported over OTLP/HTTP (off without it).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_saphyr::{Location, Spanned};

use super::Duration;

/// Where and how spans are exported.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Tracing {
    /// The OTLP/HTTP traces URL of a collector, e.g.
    /// `http://127.0.0.1:4318/v1/traces` (protobuf; plain HTTP).
    pub endpoint: Spanned<String>,
    /// The `service.name` resource attribute.
    #[serde(default = "default_service")]
    pub service_name: Spanned<String>,
    /// The share of new traces recorded, 0.0 to 1.0. A request that comes
    /// with a `traceparent` follows its sampled flag (parent-based).
    #[serde(default = "default_ratio")]
    pub sampling_ratio: Spanned<f64>,
    /// Most spans in one export request.
    #[serde(default = "default_batch")]
    pub batch_size: Spanned<usize>,
    /// Most spans waiting for the exporter; past it spans are dropped and
    /// counted (`switchyard_trace_spans_dropped_total`).
    #[serde(default = "default_queue")]
    pub queue: Spanned<usize>,
    /// How often a partial batch is exported.
    #[serde(default = "default_interval")]
    pub export_interval: Duration,
    /// More resource attributes (`deployment.environment: prod`, ...).
    #[serde(default)]
    pub resource: BTreeMap<String, String>,
}

fn spanned<T>(v: T) -> Spanned<T> {
    Spanned::new(v, Location::UNKNOWN, Location::UNKNOWN)
}

fn default_service() -> Spanned<String> {
    spanned("switchyard".into())
}
fn default_ratio() -> Spanned<f64> {
    spanned(1.0)
}
fn default_batch() -> Spanned<usize> {
    spanned(512)
}
fn default_queue() -> Spanned<usize> {
    spanned(8192)
}
fn default_interval() -> Duration {
    Duration::from_secs(1)
}
