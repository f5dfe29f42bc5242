//! Access logs: one line per request, for every protocol, written off the
//! data path.
//!
//! The record of a request is started by the pipeline's one shared step
//! ([`crate::proxy::Conn::admit`]) from the request's [`Metadata`], rides in
//! the request's [`crate::filters::chain::Permit`] (drivers fill in what
//! only they know: status, upstream host, bytes) and is sent when the
//! permit is dropped, that is when the request is done. A refused request
//! is logged at once with its refusal's status.
//!
//! Sending is a `try_send` into a bounded queue: a writer thread formats
//! and writes the records through a buffered writer; when the queue is full
//! the record is dropped and counted
//! (`switchyard_access_log_dropped_total{listener}`), the request never
//! waits. Listeners writing the same file with the same settings share one
//! writer (across reloads too); SIGUSR1 makes every writer reopen its file
//! ([`reopen`]), for logrotate. A listener without `access_log` pays one
//! branch per request and allocates nothing.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use metrics::Counter;
use switchyard_codecs::{Field, Metadata, Protocol};

use crate::config::access_log::{AccessLog as Config, AccessLogFormat, FIELDS};

/// Longest value kept from a request field (paths, keys, topics), in bytes.
const MAX_VALUE: usize = 512;

/// Bumped by SIGUSR1: writers reopen their file when they see it change.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// How often an idle writer looks at [`GENERATION`].
const TICK: Duration = Duration::from_millis(200);

/// Make every access log writer reopen its file (logrotate's `postrotate`).
pub fn reopen() {
    GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// How a request was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Outcome {
    /// Answered by its upstream (whatever the status), or locally by a route
    /// (direct response, redirect).
    #[default]
    Ok,
    /// Refused by the gateway: filters, overload, breakers, no route.
    Refused,
    /// The upstream could not answer: connect failure, timeout, reset.
    UpstreamError,
}

impl Outcome {
    fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Refused => "refused",
            Outcome::UpstreamError => "upstream_error",
        }
    }
}

/// One request's record. Drivers set the public fields they know.
pub struct Record {
    /// `None`: the record only carries a trace (no access log).
    log: Option<Arc<AccessLog>>,
    /// The request's spans, on listeners under `tracing`.
    trace: Option<Box<crate::observe::trace::RequestTrace>>,
    time: SystemTime,
    started: Instant,
    protocol: Protocol,
    client: IpAddr,
    /// Where the connection was going (a transparent listener's original
    /// destination, a PROXY header's destination), when known.
    destination: Option<SocketAddr>,
    /// The request's metadata fields, as sent (values truncated).
    fields: Vec<(&'static str, Box<str>)>,
    /// The status of the answer: HTTP/RTSP status, Dubbo/Bolt status code,
    /// MQTT reason code, MySQL error code.
    pub status: Option<u32>,
    pub grpc_status: Option<u32>,
    pub outcome: Outcome,
    /// The upstream host that answered.
    pub upstream: Option<SocketAddr>,
    /// Request bytes (the declared body or payload size unless the driver
    /// counts more).
    pub bytes_in: Option<u64>,
    /// Answer bytes written to the client.
    pub bytes_out: Option<u64>,
    /// MQTT packet type.
    pub packet: Option<&'static str>,
    /// MySQL statement digest (literals replaced by `?`).
    pub digest: Option<Box<str>>,
    /// The TLS server name (SNI) the client asked for.
    pub sni: Option<std::sync::Arc<str>>,
    duration: Duration,
}

impl Record {
    /// The request was refused locally with `status`.
    pub fn refused(&mut self, status: u16) {
        self.outcome = Outcome::Refused;
        self.status = Some(status.into());
    }

    /// The upstream failed; the client was answered `status`.
    pub fn upstream_failed(&mut self, status: u16) {
        self.outcome = Outcome::UpstreamError;
        self.status = Some(status.into());
    }

    /// Attach the request's trace.
    pub fn set_trace(&mut self, trace: Box<crate::observe::trace::RequestTrace>) {
        self.trace = Some(trace);
    }

    /// The request's trace, on a listener under `tracing`.
    pub fn trace(&mut self) -> Option<&mut crate::observe::trace::RequestTrace> {
        self.trace.as_deref_mut()
    }

    /// Send the record to the writer (dropped and counted when its queue is
    /// full), and its trace's spans to the exporter.
    pub fn emit(mut self: Box<Self>) {
        self.duration = self.started.elapsed();
        if let Some(trace) = self.trace.take() {
            (*trace).finish(crate::observe::trace::Ending {
                status: self.status,
                grpc_status: self.grpc_status,
                failure: match self.outcome {
                    Outcome::Ok => None,
                    Outcome::Refused => Some("refused"),
                    Outcome::UpstreamError => Some("upstream error"),
                },
                upstream: self.upstream,
            });
        }
        let Some(log) = self.log.clone() else { return };
        match log.sink.tx.try_send(self) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => log.dropped.increment(1),
        }
    }
}

/// A listener's access log, as of one snapshot.
pub struct AccessLog {
    listener: Arc<str>,
    sink: Arc<Sink>,
    dropped: Counter,
}

const META: &[(&str, Field)] = &[
    ("method", Field::Method),
    ("host", Field::Host),
    ("path", Field::Path),
    ("command", Field::Command),
    ("key", Field::Key),
    ("topic", Field::Topic),
    ("client_id", Field::ClientId),
    ("service", Field::Service),
    ("rpc_method", Field::RpcMethod),
    ("user", Field::User),
    ("database", Field::Database),
];

impl AccessLog {
    /// The access log of listener `listener` per `config` (`base`: the
    /// config file's folder, for a relative path). `Err`: why the file
    /// cannot be opened.
    pub fn new(listener: &str, config: &Config, base: &Path) -> Result<Arc<Self>, String> {
        let target = if config.path.value == "stdout" {
            Target::Stdout
        } else {
            Target::File(base.join(&config.path.value))
        };
        let fields: Vec<&'static str> = if config.fields.is_empty() {
            FIELDS.to_vec()
        } else {
            config
                .fields
                .iter()
                .filter_map(|f| FIELDS.iter().find(|k| **k == f.value).copied())
                .collect()
        };
        let key = SinkKey {
            target: target.clone(),
            format: config.format,
            queue: config.queue.value,
            fields: fields.clone(),
        };
        let sink = Sink::shared(key, || {
            let out = target.open()?;
            let (tx, rx) = sync_channel(config.queue.value.max(1));
            let writer = Writer {
                target: target.clone(),
                out: BufWriter::with_capacity(64 * 1024, out),
                format: config.format,
                fields: fields.clone(),
                generation: GENERATION.load(Ordering::Relaxed),
                line: String::with_capacity(512),
            };
            std::thread::Builder::new()
                .name("access-log".into())
                .spawn(move || writer.run(rx))
                .map_err(|e| format!("cannot start the access log writer: {e}"))?;
            Ok(Sink { tx })
        })?;
        Ok(Arc::new(Self {
            listener: listener.into(),
            sink,
            dropped: metrics::counter!("switchyard_access_log_dropped_total", "listener" => listener.to_owned()),
        }))
    }

    /// Start the record of a request (at admission).
    pub fn start(
        self: &Arc<Self>,
        protocol: Protocol,
        meta: &(dyn Metadata + Sync),
        client: IpAddr,
        destination: Option<SocketAddr>,
        size: Option<u64>,
    ) -> Box<Record> {
        Record::start(
            Some(self.clone()),
            protocol,
            meta,
            client,
            destination,
            size,
        )
    }
}

impl Record {
    /// A request's record: for `log`, or (`None`) only to carry its trace.
    pub fn start(
        log: Option<Arc<AccessLog>>,
        protocol: Protocol,
        meta: &(dyn Metadata + Sync),
        client: IpAddr,
        destination: Option<SocketAddr>,
        size: Option<u64>,
    ) -> Box<Record> {
        let mut fields = Vec::with_capacity(4);
        if log.is_some() {
            for (name, field) in META {
                if let Some(v) = meta.get(field) {
                    let v = v.get(..MAX_VALUE).unwrap_or(v);
                    fields.push((*name, String::from_utf8_lossy(v).into()));
                }
            }
        }
        Box::new(Record {
            log,
            trace: None,
            time: SystemTime::now(),
            started: Instant::now(),
            protocol,
            client,
            destination,
            fields,
            status: None,
            grpc_status: None,
            outcome: Outcome::Ok,
            upstream: None,
            bytes_in: size,
            bytes_out: None,
            packet: None,
            digest: None,
            sni: None,
            duration: Duration::ZERO,
        })
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
enum Target {
    Stdout,
    File(PathBuf),
}

impl Target {
    fn open(&self) -> Result<Box<dyn Write + Send>, String> {
        match self {
            Target::Stdout => Ok(Box::new(std::io::stdout())),
            Target::File(path) => OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map(|f: File| Box::new(f) as Box<dyn Write + Send>)
                .map_err(|e| format!("cannot open `{}`: {e}", path.display())),
        }
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct SinkKey {
    target: Target,
    format: AccessLogFormat,
    queue: usize,
    fields: Vec<&'static str>,
}

/// The queue to one writer thread; the thread ends when the last sink
/// holding it is gone.
struct Sink {
    tx: SyncSender<Box<Record>>,
}

/// Writers alive, by what they write: a reload that keeps a listener's
/// access log keeps its writer.
static SINKS: Mutex<Option<HashMap<SinkKey, Weak<Sink>>>> = Mutex::new(None);

impl Sink {
    fn shared(
        key: SinkKey,
        make: impl FnOnce() -> Result<Sink, String>,
    ) -> Result<Arc<Sink>, String> {
        let mut sinks = SINKS.lock().unwrap_or_else(|e| e.into_inner());
        let sinks = sinks.get_or_insert_with(HashMap::new);
        sinks.retain(|_, s| s.strong_count() > 0);
        if let Some(sink) = sinks.get(&key).and_then(Weak::upgrade) {
            return Ok(sink);
        }
        let sink = Arc::new(make()?);
        sinks.insert(key, Arc::downgrade(&sink));
        Ok(sink)
    }
}

struct Writer {
    target: Target,
    out: BufWriter<Box<dyn Write + Send>>,
    format: AccessLogFormat,
    fields: Vec<&'static str>,
    generation: u64,
    line: String,
}

impl Writer {
    fn run(mut self, rx: Receiver<Box<Record>>) {
        loop {
            match rx.recv_timeout(TICK) {
                Ok(rec) => {
                    self.check_reopen();
                    self.write(&rec);
                    // Write what is queued, then flush once the queue is empty.
                    while let Ok(rec) = rx.try_recv() {
                        self.write(&rec);
                    }
                    let _ = self.out.flush();
                }
                Err(RecvTimeoutError::Timeout) => self.check_reopen(),
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        let _ = self.out.flush();
    }

    fn check_reopen(&mut self) {
        let now = GENERATION.load(Ordering::Relaxed);
        if now == self.generation {
            return;
        }
        self.generation = now;
        let _ = self.out.flush();
        match self.target.open() {
            Ok(out) => self.out = BufWriter::with_capacity(64 * 1024, out),
            Err(e) => tracing::error!("access log: {e}; writing on to the old file"),
        }
    }

    fn write(&mut self, rec: &Record) {
        self.line.clear();
        match self.format {
            AccessLogFormat::Json => json_line(&mut self.line, rec, &self.fields),
            AccessLogFormat::Text => text_line(&mut self.line, rec, &self.fields),
        }
        self.line.push('\n');
        if let Err(e) = self.out.write_all(self.line.as_bytes()) {
            tracing::warn!("access log: cannot write: {e}");
        }
    }
}

/// A field's value, for formatting.
enum Value<'a> {
    Str(&'a str),
    /// Written as it displays (addresses: nothing to escape).
    Addr(&'a dyn std::fmt::Display),
    Time(SystemTime),
    Num(u64),
    Ms(Duration),
}

fn value<'a>(rec: &'a Record, name: &str) -> Option<Value<'a>> {
    Some(match name {
        "time" => Value::Time(rec.time),
        "listener" => Value::Str(&rec.log.as_ref()?.listener),
        "protocol" => Value::Str(rec.protocol.name()),
        "client" => Value::Addr(&rec.client),
        "upstream" => Value::Addr(rec.upstream.as_ref()?),
        "destination" => Value::Addr(rec.destination.as_ref()?),
        "packet" => Value::Str(rec.packet?),
        "digest" => Value::Str(rec.digest.as_deref()?),
        "sni" => Value::Str(rec.sni.as_deref()?),
        "status" => Value::Num(rec.status?.into()),
        "grpc_status" => Value::Num(rec.grpc_status?.into()),
        "result" => Value::Str(rec.outcome.name()),
        "duration_ms" => Value::Ms(rec.duration),
        "bytes_in" => Value::Num(rec.bytes_in?),
        "bytes_out" => Value::Num(rec.bytes_out?),
        other => Value::Str(
            rec.fields
                .iter()
                .find(|(k, _)| *k == other)
                .map(|(_, v)| &**v)?,
        ),
    })
}

/// Write a value: `quote` strings (JSON), or only those a reader could
/// not split on spaces (text).
fn push_value(out: &mut String, v: Value<'_>, json: bool) {
    match v {
        Value::Str(s)
            if json
                || s.is_empty()
                || s.bytes()
                    .any(|b| b <= b' ' || b == b'"' || b == b'=' || b >= 0x7f) =>
        {
            push_json_str(out, s)
        }
        Value::Str(s) => out.push_str(s),
        Value::Addr(a) if json => {
            let _ = write!(out, "\"{a}\"");
        }
        Value::Addr(a) => {
            let _ = write!(out, "{a}");
        }
        Value::Time(t) if json => {
            out.push('"');
            push_rfc3339(out, t);
            out.push('"');
        }
        Value::Time(t) => push_rfc3339(out, t),
        Value::Num(n) => {
            let _ = write!(out, "{n}");
        }
        Value::Ms(d) => {
            let _ = write!(out, "{:.3}", d.as_secs_f64() * 1000.0);
        }
    }
}

fn json_line(out: &mut String, rec: &Record, fields: &[&'static str]) {
    out.push('{');
    let mut first = true;
    for name in fields {
        let Some(v) = value(rec, name) else { continue };
        if !first {
            out.push(',');
        }
        first = false;
        let _ = write!(out, "\"{name}\":");
        push_value(out, v, true);
    }
    out.push('}');
}

fn text_line(out: &mut String, rec: &Record, fields: &[&'static str]) {
    let mut first = true;
    for name in fields {
        let Some(v) = value(rec, name) else { continue };
        if !first {
            out.push(' ');
        }
        first = false;
        if *name != "time" {
            let _ = write!(out, "{name}=");
        }
        push_value(out, v, false);
    }
}

fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `2026-12-04T17:30:00.123Z`.
fn push_rfc3339(out: &mut String, t: SystemTime) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, day) = civil_from_days(days);
    let _ = write!(
        out,
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_millis()
    );
}

/// Howard Hinnant's days-to-civil (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_791), (2026, 12, 4));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        let t = UNIX_EPOCH + Duration::from_millis(1_796_405_400_123);
        let mut s = String::new();
        push_rfc3339(&mut s, t);
        assert_eq!(s, "2026-12-04T17:30:00.123Z");
        let mut s = String::new();
        push_json_str(&mut s, "a\"b\\c\n\u{1}é");
        assert_eq!(
            serde_json::from_str::<String>(&s).ok().as_deref(),
            Some("a\"b\\c\n\u{1}é")
        );
    }
}
