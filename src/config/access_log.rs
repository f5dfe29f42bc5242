//! `listeners[].access_log`: one line per request, written off the data path.

use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

/// Where and how a listener writes its access log.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLog {
    /// A file (appended to, created if missing; reopened on SIGUSR1), or
    /// `stdout`.
    pub path: Spanned<String>,
    /// `text` (one readable line) or `json` (one object per line).
    #[serde(default)]
    pub format: AccessLogFormat,
    /// Records waiting for the writer thread, at most; a record that finds
    /// the queue full is dropped and counted
    /// (`switchyard_access_log_dropped_total`), the request never waits.
    #[serde(default = "default_queue")]
    pub queue: Spanned<usize>,
    /// Only these fields, in this order (default: every field the request
    /// has). Names: [`FIELDS`].
    #[serde(default)]
    pub fields: Vec<Spanned<String>>,
}

fn default_queue() -> Spanned<usize> {
    Spanned::new(
        DEFAULT_QUEUE,
        serde_saphyr::Location::UNKNOWN,
        serde_saphyr::Location::UNKNOWN,
    )
}

/// Records the queue holds by default.
pub const DEFAULT_QUEUE: usize = 8192;

/// The format of an access log line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessLogFormat {
    #[default]
    Text,
    Json,
}

/// Every field an access log line can carry, in their default order.
pub const FIELDS: &[&str] = &[
    "time",
    "listener",
    "protocol",
    "client",
    "sni",
    "method",
    "host",
    "path",
    "command",
    "key",
    "packet",
    "topic",
    "client_id",
    "service",
    "rpc_method",
    "user",
    "database",
    "digest",
    "status",
    "grpc_status",
    "result",
    "upstream",
    "destination",
    "duration_ms",
    "bytes_in",
    "bytes_out",
];
