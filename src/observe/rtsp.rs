//! RTSP metrics: media sessions, media bytes per direction and transport,
//! and response status codes. Handles are resolved once per connection;
//! status and release-reason counters (control path only) per event.

use metrics::{Counter, Gauge};

/// The RTSP metric handles of one listener.
#[derive(Clone)]
pub struct RtspMetrics {
    listener: String,
    /// Media sessions (a `Session` id an upstream issued) open now.
    pub sessions_active: Gauge,
    /// Media sessions opened.
    pub sessions: Counter,
    pub media_to_client_tcp: Counter,
    pub media_to_upstream_tcp: Counter,
    pub media_to_client_udp: Counter,
    pub media_to_upstream_udp: Counter,
}

impl RtspMetrics {
    pub fn new(listener: &str) -> Self {
        let l = listener.to_owned();
        let media = |direction: &'static str, transport: &'static str| metrics::counter!("switchyard_rtsp_media_bytes_total", "listener" => l.clone(), "direction" => direction, "transport" => transport);
        Self {
            sessions_active: metrics::gauge!("switchyard_rtsp_sessions_active", "listener" => l.clone()),
            sessions: metrics::counter!("switchyard_rtsp_sessions_total", "listener" => l.clone()),
            media_to_client_tcp: media("to_client", "tcp"),
            media_to_upstream_tcp: media("to_upstream", "tcp"),
            media_to_client_udp: media("to_client", "udp"),
            media_to_upstream_udp: media("to_upstream", "udp"),
            listener: l,
        }
    }

    /// A response sent to a client: `source` is `upstream` or `gateway`.
    pub fn response(&self, status: u16, source: &'static str) {
        metrics::counter!("switchyard_rtsp_responses_total", "listener" => self.listener.clone(), "status" => status.to_string(), "source" => source).increment(1);
    }

    /// A media session released: `teardown`, `upstream_closed`, `client_closed`, `timeout`.
    pub fn released(&self, reason: &'static str) {
        self.sessions_active.decrement(1.0);
        metrics::counter!("switchyard_rtsp_sessions_released_total", "listener" => self.listener.clone(), "reason" => reason).increment(1);
    }
}
