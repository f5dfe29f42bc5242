//! The last WARN and ERROR log events, kept in a bounded ring for the
//! admin's `/errors` (and the dashboard). Fed by a `tracing` layer; only
//! warnings and errors reach it, so its lock is off the request path.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;

/// How many events the ring keeps.
pub const CAPACITY: usize = 100;

/// One logged warning or error.
#[derive(Clone, Debug, Serialize)]
pub struct LogEvent {
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// `WARN` or `ERROR`.
    pub level: &'static str,
    /// The module that logged it.
    pub target: String,
    /// The message, then the event's other fields as `name=value`.
    pub message: String,
}

/// The ring of recent events, and how many were seen in all.
pub struct Recent {
    ring: Mutex<(VecDeque<LogEvent>, u64)>,
    capacity: usize,
}

/// What `/errors` serves: the newest event last.
#[derive(Serialize)]
pub struct Report {
    /// Events seen since start (the ring keeps the last [`CAPACITY`]).
    pub total: u64,
    pub events: Vec<LogEvent>,
}

impl Recent {
    pub const fn new(capacity: usize) -> Self {
        Self {
            ring: Mutex::new((VecDeque::new(), 0)),
            capacity,
        }
    }

    pub fn push(&self, event: LogEvent) {
        let mut guard = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let (ring, total) = &mut *guard;
        if ring.len() >= self.capacity {
            ring.pop_front();
        }
        ring.push_back(event);
        *total += 1;
    }

    pub fn report(&self) -> Report {
        let guard = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        Report {
            total: guard.1,
            events: guard.0.iter().cloned().collect(),
        }
    }
}

/// The process's ring, fed by [`Layer`].
pub static RECENT: Recent = Recent::new(CAPACITY);

/// A `tracing` layer that keeps WARN and ERROR events in [`RECENT`].
pub struct Layer;

/// [`Layer`] with its own WARN filter: add it beside the stderr layer (whose
/// filter `RUST_LOG` sets) and it keeps warnings whatever that filter says.
pub fn layer<S>() -> impl tracing_subscriber::Layer<S>
where
    S: Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use tracing_subscriber::Layer as _;
    Layer.with_filter(tracing_subscriber::filter::LevelFilter::WARN)
}

impl<S: Subscriber> tracing_subscriber::Layer<S> for Layer {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let meta = event.metadata();
        let level = match *meta.level() {
            Level::ERROR => "ERROR",
            Level::WARN => "WARN",
            _ => return,
        };
        let mut text = Text::default();
        event.record(&mut text);
        let time_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        RECENT.push(LogEvent {
            time_ms,
            level,
            target: meta.target().to_owned(),
            message: text.message + &text.fields,
        });
    }
}

/// An event's message and fields as text.
#[derive(Default)]
struct Text {
    message: String,
    fields: String,
}

impl Visit for Text {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(i: u64) -> LogEvent {
        LogEvent {
            time_ms: i,
            level: "WARN",
            target: "t".into(),
            message: format!("event {i}"),
        }
    }

    #[test]
    fn keeps_the_last_events_in_order() {
        let r = Recent::new(3);
        for i in 0..5 {
            r.push(event(i));
        }
        let report = r.report();
        assert_eq!(report.total, 5);
        let kept: Vec<u64> = report.events.iter().map(|e| e.time_ms).collect();
        assert_eq!(kept, [2, 3, 4]);
    }

    #[test]
    fn the_layer_keeps_warnings_and_errors_with_their_fields() {
        use tracing_subscriber::prelude::*;
        let subscriber = tracing_subscriber::registry().with(layer());
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("not kept");
            tracing::warn!(cluster = "web", "host down: {}", "127.0.0.1:1");
            tracing::error!("reload rejected");
        });
        let events = RECENT.report().events;
        let warn = events
            .iter()
            .find(|e| e.message.starts_with("host down"))
            .expect("the warning is kept");
        assert_eq!(warn.level, "WARN");
        assert_eq!(warn.message, "host down: 127.0.0.1:1 cluster=web");
        assert!(
            events
                .iter()
                .any(|e| e.level == "ERROR" && e.message == "reload rejected")
        );
        assert!(!events.iter().any(|e| e.message == "not kept"));
    }
}
