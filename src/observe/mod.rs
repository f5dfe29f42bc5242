//! Observability: the Prometheus recorder, log setup, and per-connection
//! metric handles (resolved once per connection, so the per-request cost is
//! an atomic add).

pub mod access_log;
pub mod rtsp;

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

/// Log to stderr; `RUST_LOG` overrides the default `info`.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
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
            connections: metrics::counter!("switchyard_downstream_connections_total", "listener" => l.clone(), "protocol" => protocol),
        }
    }

    /// Count a new connection; the guard counts it out of the active gauge.
    pub fn connection(&self) -> ActiveGuard {
        self.connections.increment(1);
        self.active.increment(1.0);
        ActiveGuard(self.active.clone())
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
pub struct ActiveGuard(Gauge);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// Counted when detection gives up.
pub fn detect_failed(listener: &str, reason: &'static str) {
    metrics::counter!("switchyard_detect_failures_total", "listener" => listener.to_owned(), "reason" => reason).increment(1);
}
