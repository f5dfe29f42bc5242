//! Observability: the Prometheus recorder, log setup, and per-connection
//! metric handles (resolved once per connection, so the per-request cost is
//! an atomic add).

pub mod access_log;
pub mod recent;
pub mod rtsp;
pub mod trace;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Install the global Prometheus recorder; the handle renders `/metrics`.
pub fn install_metrics() -> Option<PrometheusHandle> {
    let buckets = [
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        5.0, 10.0,
    ];
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)
        .ok()?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).ok()?;
    Some(handle)
}

type FilterHandle =
    tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>;

/// The log filter's reload handle (set by [`init_logging`]).
static LOG_FILTER: OnceLock<FilterHandle> = OnceLock::new();

/// Log to stderr; `RUST_LOG` overrides the default `info`. The filter can
/// be changed at runtime with [`set_log_filter`] (admin `POST /logging`).
/// Warnings and errors are also kept in [`recent::RECENT`] (the admin's
/// `/errors`), whatever the stderr filter says.
pub fn init_logging() {
    use std::io::IsTerminal;
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let stderr = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .with_filter(filter);
    if tracing_subscriber::registry()
        .with(stderr)
        .with(recent::layer())
        .try_init()
        .is_ok()
    {
        let _ = LOG_FILTER.set(handle);
    }
}

/// The log filter in force, as `EnvFilter` directives (`None`: logging was
/// not set up by [`init_logging`]).
pub fn log_filter() -> Option<String> {
    LOG_FILTER.get()?.with_current(|f| f.to_string()).ok()
}

/// Replace the log filter with `directives` (`debug`,
/// `info,switchyard::proxy=debug`, ...). A bare word must be a level: a
/// typo such as `verbose` would otherwise silently mean "the target named
/// verbose, every level".
pub fn set_log_filter(directives: &str) -> Result<String, String> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    let directives = directives.trim();
    if directives.is_empty() {
        return Err(
            "no directive given: try `level=debug` or `level=info,switchyard::proxy=debug`".into(),
        );
    }
    for d in directives.split(',').map(str::trim) {
        let bare = !d.contains(['=', ':', '[']);
        if bare && !LEVELS.contains(&d.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "`{d}` is not a level: use one of trace, debug, info, warn, error, off, or a directive `target=level` (e.g. switchyard::proxy=debug)"
            ));
        }
    }
    let filter = tracing_subscriber::EnvFilter::builder()
        .parse(directives)
        .map_err(|e| format!("invalid log filter `{directives}`: {e}"))?;
    let handle = LOG_FILTER
        .get()
        .ok_or("logging is not set up by this process (library use)")?;
    handle
        .reload(filter)
        .map_err(|e| format!("cannot change the log filter: {e}"))?;
    log_filter().ok_or_else(|| "cannot read the log filter back".into())
}

/// Connections open now per (listener, protocol), shared by every
/// snapshot's [`ConnMetrics`] (a reload keeps the counts).
static ACTIVE: Mutex<Option<ActiveCounts>> = Mutex::new(None);

/// Open connections by (listener, protocol).
type ActiveCounts = HashMap<(String, &'static str), Arc<AtomicI64>>;

/// The live count of open connections of one listener and protocol
/// (`tcp`: passthrough); resolved once per snapshot, like the metric handles.
fn active_counter(listener: &str, protocol: &'static str) -> Arc<AtomicI64> {
    let mut map = ACTIVE.lock().unwrap_or_else(|e| e.into_inner());
    map.get_or_insert_with(HashMap::new)
        .entry((listener.to_owned(), protocol))
        .or_default()
        .clone()
}

/// Open connections of `listener` by protocol (those with at least one
/// connection ever counted), sorted by protocol.
pub fn active_connections(listener: &str) -> Vec<(&'static str, i64)> {
    let map = ACTIVE.lock().unwrap_or_else(|e| e.into_inner());
    let mut out: Vec<_> = map
        .iter()
        .flatten()
        .filter(|((l, _), _)| l == listener)
        .map(|((_, p), n)| (*p, n.load(Ordering::Relaxed)))
        .collect();
    out.sort();
    out
}

/// Metric handles of one downstream connection (listener × protocol).
#[derive(Clone)]
pub struct ConnMetrics {
    pub requests: Counter,
    pub errors: Counter,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    pub latency: Histogram,
    active: Gauge,
    open: Arc<AtomicI64>,
    connections: Counter,
}

impl ConnMetrics {
    /// Resolve the handles (a registry lookup each): once per listener and
    /// protocol per snapshot, then cloned per connection.
    pub fn new(listener: &str, protocol: &'static str) -> Self {
        let l = listener.to_owned();
        Self {
            requests: metrics::counter!("switchyard_requests_total", "listener" => l.clone(), "protocol" => protocol),
            errors: metrics::counter!("switchyard_request_errors_total", "listener" => l.clone(), "protocol" => protocol),
            bytes_in: metrics::counter!("switchyard_downstream_bytes_received_total", "listener" => l.clone(), "protocol" => protocol),
            bytes_out: metrics::counter!("switchyard_downstream_bytes_sent_total", "listener" => l.clone(), "protocol" => protocol),
            latency: metrics::histogram!("switchyard_request_duration_seconds", "listener" => l.clone(), "protocol" => protocol),
            active: metrics::gauge!("switchyard_downstream_connections_active", "listener" => l.clone(), "protocol" => protocol),
            open: active_counter(listener, protocol),
            connections: metrics::counter!("switchyard_downstream_connections_total", "listener" => l.clone(), "protocol" => protocol),
        }
    }

    /// Count a new connection; the guard counts it out of the active gauge.
    pub fn connection(&self) -> ActiveGuard {
        self.connections.increment(1);
        self.active.increment(1.0);
        self.open.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(self.active.clone(), self.open.clone())
    }

    pub fn observe(&self, took: Duration, error: bool) {
        self.requests.increment(1);
        if error {
            self.errors.increment(1);
        }
        self.latency.record(took.as_secs_f64());
    }
}

/// Marks a connection closed in the active gauge when dropped.
pub struct ActiveGuard(Gauge, Arc<AtomicI64>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.decrement(1.0);
        self.1.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counted when detection gives up.
pub fn detect_failed(listener: &str, reason: &'static str) {
    metrics::counter!("switchyard_detect_failures_total", "listener" => listener.to_owned(), "reason" => reason).increment(1);
}

/// Metric handles of one upstream cluster (resolved once per cluster and
/// snapshot): requests sent to it, by attempt, and how long each took from
/// the request going out to its answer.
pub struct ClusterMetrics {
    requests: Counter,
    latency: Histogram,
}

impl ClusterMetrics {
    pub fn new(cluster: &str) -> Self {
        let c = cluster.to_owned();
        Self {
            requests: metrics::counter!("switchyard_upstream_requests_total", "cluster" => c.clone()),
            latency: metrics::histogram!("switchyard_upstream_request_duration_seconds", "cluster" => c),
        }
    }

    /// Count `requests` answered together (a Redis pipeline batch) after `took`.
    pub fn observe(&self, requests: u64, took: Duration) {
        self.requests.increment(requests);
        self.latency.record(took.as_secs_f64());
    }

    /// Count requests that have no answer to time (an MQTT QoS 0 PUBLISH).
    pub fn count(&self, requests: u64) {
        self.requests.increment(requests);
    }

    /// Record the latency of a request counted before (an MQTT QoS 1/2
    /// PUBLISH, when the broker acknowledges it).
    pub fn latency(&self, took: Duration) {
        self.latency.record(took.as_secs_f64());
    }
}
