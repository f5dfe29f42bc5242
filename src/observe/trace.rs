//! Tracing: OpenTelemetry spans exported over OTLP/HTTP (protobuf), off the
//! data path.
//!
//! A request's trace rides in its access-log [`Record`](super::access_log::Record)
//! (started at admission, [`crate::proxy::Conn::admit`], for every
//! protocol), so what the drivers already tell the record (status,
//! upstream host, outcome) is what the spans say. The request's W3C
//! `traceparent` is continued when present (its sampled flag decides,
//! parent-based), otherwise a trace starts, sampled at the configured
//! ratio. Each upstream attempt is a client span whose id goes upstream as
//! the `traceparent` parent ([`RequestTrace::attempt`]).
//!
//! Finished spans go into a bounded queue (`try_send`: a full queue drops
//! the span and counts it in `switchyard_trace_spans_dropped_total`, the
//! request never waits); one exporter thread batches them and POSTs
//! `ExportTraceServiceRequest`s, encoded here (the few messages OTLP needs
//! do not justify `prost` and the OpenTelemetry SDK: see
//! docs/operations.md). A listener without tracing pays one branch.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use metrics::Counter;
use switchyard_codecs::{Field, Metadata, Protocol};

use crate::config::tracing::Tracing as Config;

/// Longest attribute value kept (paths, keys, topics), in bytes.
const MAX_VALUE: usize = 256;

/// A W3C trace context: trace id, the parent span id, and whether the
/// trace is sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub sampled: bool,
}

impl TraceParent {
    /// Parse a `traceparent` value (`00-<32 hex>-<16 hex>-<2 hex>`; later
    /// versions are read by their first four fields, as the spec says).
    /// `None` for anything malformed or with all-zero ids.
    pub fn parse(v: &[u8]) -> Option<Self> {
        let v = v.trim_ascii();
        if v.len() < 55 || (v.len() > 55 && v.get(55) != Some(&b'-')) {
            return None;
        }
        let version = hex::<1>(v.get(0..2)?)?;
        if version[0] == 0xff || (version[0] == 0 && v.len() != 55) {
            return None;
        }
        if v.get(2) != Some(&b'-') || v.get(35) != Some(&b'-') || v.get(52) != Some(&b'-') {
            return None;
        }
        let trace_id = hex::<16>(v.get(3..35)?)?;
        let span_id = hex::<8>(v.get(36..52)?)?;
        let flags = hex::<1>(v.get(53..55)?)?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id,
            span_id,
            sampled: flags[0] & 1 == 1,
        })
    }

    /// The `traceparent` header value.
    pub fn header(&self) -> String {
        let mut s = String::with_capacity(55);
        s.push_str("00-");
        push_hex(&mut s, &self.trace_id);
        s.push('-');
        push_hex(&mut s, &self.span_id);
        s.push_str(if self.sampled { "-01" } else { "-00" });
        s
    }
}

fn hex<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        let &[hi, lo] = <&[u8; 2]>::try_from(pair).ok()?;
        *o = digit(hi)? << 4 | digit(lo)?;
    }
    Some(out)
}

fn push_hex(s: &mut String, b: &[u8]) {
    for byte in b {
        let _ = write!(s, "{byte:02x}");
    }
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// An attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(Box<str>),
    Int(i64),
}

/// A span kind, as OTLP numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Server = 2,
    Client = 3,
}

/// A finished span, as exported.
#[derive(Debug, Clone)]
pub struct Span {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent: Option<[u8; 8]>,
    pub trace_state: Option<Box<str>>,
    pub name: Box<str>,
    pub kind: Kind,
    pub start: u64,
    pub end: u64,
    pub attributes: Vec<(&'static str, Value)>,
    /// `Some(message)`: the span's status is ERROR.
    pub error: Option<Box<str>>,
}

/// The tracing of a snapshot: its sampling and the exporter spans go to
/// (shared across reloads that keep the same exporter settings).
pub struct Tracer {
    ratio: f64,
    exporter: Arc<Exporter>,
}

impl Tracer {
    /// The tracer per `config`. `Err`: why the exporter cannot start.
    pub fn new(config: &Config) -> Result<Arc<Self>, String> {
        let endpoint = Endpoint::parse(&config.endpoint.value)?;
        let key = ExporterKey {
            endpoint: config.endpoint.value.clone(),
            service: config.service_name.value.clone(),
            resource: config
                .resource
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            batch: config.batch_size.value,
            queue: config.queue.value,
            interval: config.export_interval.get(),
        };
        let exporter = Exporter::shared(key, endpoint)?;
        Ok(Arc::new(Self {
            ratio: config.sampling_ratio.value,
            exporter,
        }))
    }

    /// Start the trace of a request: continue the request's `traceparent`
    /// (and keep its `tracestate`), or start a trace.
    pub fn start(
        self: &Arc<Self>,
        protocol: Protocol,
        packet: Option<&'static str>,
        meta: &(dyn Metadata + Sync),
        client: IpAddr,
        listener: &str,
    ) -> Box<RequestTrace> {
        let incoming = meta
            .get(&Field::Header("traceparent".into()))
            .and_then(TraceParent::parse);
        let trace_id = incoming.map_or_else(new_trace_id, |p| p.trace_id);
        let sampled = match incoming {
            Some(p) => p.sampled,
            None => sample(&trace_id, self.ratio),
        };
        let trace_state = incoming
            .and_then(|_| meta.get(&Field::Header("tracestate".into())))
            .map(|v| String::from_utf8_lossy(v.get(..512).unwrap_or(v)).into());
        let mut attributes = Vec::new();
        let name = if sampled {
            describe(protocol, packet, meta, &mut attributes)
        } else {
            String::new()
        };
        if sampled {
            attributes.push((
                "network.peer.address",
                Value::Str(client.to_string().into()),
            ));
            attributes.push(("switchyard.listener", Value::Str(listener.into())));
        }
        Box::new(RequestTrace {
            tracer: self.clone(),
            protocol,
            trace_id,
            span_id: new_span_id(),
            parent: incoming.map(|p| p.span_id),
            trace_state,
            sampled,
            name: name.into(),
            start: SystemTime::now(),
            started: Instant::now(),
            attributes,
            attempts: Vec::new(),
        })
    }
}

/// Sampled when the trace id's low 8 bytes fall under `ratio` of their range
/// (the same decision for the same trace wherever it is made this way).
fn sample(trace_id: &[u8; 16], ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    if ratio <= 0.0 {
        return false;
    }
    let mut low = [0u8; 8];
    low.copy_from_slice(&trace_id[8..]);
    let x = u64::from_be_bytes(low) >> 1;
    (x as f64) < ratio * (u64::MAX >> 1) as f64
}

fn new_trace_id() -> [u8; 16] {
    loop {
        let id: [u8; 16] = rand::random();
        if id != [0; 16] {
            return id;
        }
    }
}

fn new_span_id() -> [u8; 8] {
    loop {
        let id: [u8; 8] = rand::random();
        if id != [0; 8] {
            return id;
        }
    }
}

fn text(v: &[u8]) -> Box<str> {
    String::from_utf8_lossy(v.get(..MAX_VALUE).unwrap_or(v)).into()
}

/// The span name and the attributes of a request, after OpenTelemetry's
/// semantic conventions.
fn describe(
    protocol: Protocol,
    packet: Option<&'static str>,
    meta: &(dyn Metadata + Sync),
    attrs: &mut Vec<(&'static str, Value)>,
) -> String {
    let get = |f: Field| meta.get(&f).map(text);
    let service = get(Field::Service);
    let method = get(Field::RpcMethod);
    let rpc = |system: &'static str, attrs: &mut Vec<(&'static str, Value)>| {
        attrs.push(("rpc.system", Value::Str(system.into())));
        let mut name = format!("{system} ");
        if let Some(s) = &service {
            attrs.push(("rpc.service", Value::Str(s.clone())));
            name.push_str(s);
        }
        if let Some(m) = &method {
            attrs.push(("rpc.method", Value::Str(m.clone())));
            name.push('/');
            name.push_str(m);
        }
        name
    };
    match protocol {
        Protocol::Http1 | Protocol::Http2 if service.is_some() && method.is_some() => {
            rpc("grpc", attrs)
        }
        Protocol::Dubbo => rpc("dubbo", attrs),
        Protocol::Bolt => rpc("sofarpc", attrs),
        Protocol::Http1 | Protocol::Http2 | Protocol::Rtsp => {
            let m = get(Field::Method).unwrap_or_else(|| "_OTHER".into());
            if let Some(p) = get(Field::Path) {
                attrs.push(("url.path", Value::Str(p)));
            }
            if let Some(h) = get(Field::Host) {
                attrs.push(("server.address", Value::Str(h)));
            }
            let name = if protocol == Protocol::Rtsp {
                attrs.push(("rtsp.method", Value::Str(m.clone())));
                format!("rtsp {m}")
            } else {
                attrs.push(("http.request.method", Value::Str(m.clone())));
                format!("HTTP {m}")
            };
            attrs.push(("network.protocol.name", Value::Str(protocol.name().into())));
            name
        }
        Protocol::Redis => {
            attrs.push(("db.system", Value::Str("redis".into())));
            let c = get(Field::Command)
                .map(|c| c.to_ascii_uppercase().into_boxed_str())
                .unwrap_or_else(|| "_OTHER".into());
            attrs.push(("db.operation.name", Value::Str(c.clone())));
            if let Some(k) = get(Field::Key) {
                attrs.push(("db.redis.key", Value::Str(k)));
            }
            format!("redis {c}")
        }
        Protocol::Mysql => {
            attrs.push(("db.system", Value::Str("mysql".into())));
            let c = get(Field::Command).unwrap_or_else(|| "_OTHER".into());
            attrs.push(("db.operation.name", Value::Str(c.clone())));
            if let Some(d) = get(Field::Database) {
                attrs.push(("db.namespace", Value::Str(d)));
            }
            if let Some(u) = get(Field::User) {
                attrs.push(("db.user", Value::Str(u)));
            }
            format!("mysql {c}")
        }
        Protocol::Mqtt => {
            attrs.push(("messaging.system", Value::Str("mqtt".into())));
            let p = packet.unwrap_or("PACKET");
            attrs.push(("messaging.operation.name", Value::Str(p.into())));
            if let Some(t) = get(Field::Topic) {
                attrs.push(("messaging.destination.name", Value::Str(t)));
            }
            if let Some(c) = get(Field::ClientId) {
                attrs.push(("messaging.client.id", Value::Str(c)));
            }
            format!("mqtt {p}")
        }
        other => other.name().to_owned(),
    }
}

/// One upstream attempt's client span, open until the next attempt or the
/// end of the request.
struct Attempt {
    span_id: [u8; 8],
    started: Instant,
    host: Option<SocketAddr>,
    /// Set when a later attempt replaced it.
    ended: Option<Instant>,
}

/// The trace of one request: its server span, and a client span per
/// upstream attempt.
pub struct RequestTrace {
    tracer: Arc<Tracer>,
    protocol: Protocol,
    trace_id: [u8; 16],
    span_id: [u8; 8],
    parent: Option<[u8; 8]>,
    trace_state: Option<Box<str>>,
    sampled: bool,
    name: Box<str>,
    start: SystemTime,
    started: Instant,
    attributes: Vec<(&'static str, Value)>,
    attempts: Vec<Attempt>,
}

/// What the request's record says about its end.
pub struct Ending {
    pub status: Option<u32>,
    pub grpc_status: Option<u32>,
    /// `Some(why)` when the gateway refused it or its upstream failed.
    pub failure: Option<&'static str>,
    pub upstream: Option<SocketAddr>,
}

impl RequestTrace {
    /// Start an upstream attempt (`host`, when already chosen): ends the
    /// previous attempt's span as retried, and returns the `traceparent`
    /// to send upstream (the new attempt's span as the parent).
    pub fn attempt(&mut self, host: Option<SocketAddr>) -> String {
        let now = Instant::now();
        if let Some(last) = self.attempts.last_mut()
            && last.ended.is_none()
        {
            last.ended = Some(now);
        }
        let span_id = new_span_id();
        self.attempts.push(Attempt {
            span_id,
            started: now,
            host,
            ended: None,
        });
        TraceParent {
            trace_id: self.trace_id,
            span_id,
            sampled: self.sampled,
        }
        .header()
    }

    /// The host of the current attempt, once chosen.
    pub fn attempt_host(&mut self, host: SocketAddr) {
        if let Some(last) = self.attempts.last_mut()
            && last.host.is_none()
        {
            last.host = Some(host);
        }
    }

    /// The incoming `tracestate`, forwarded as it came.
    pub fn trace_state(&self) -> Option<&str> {
        self.trace_state.as_deref()
    }

    /// This request's trace id (tests, logs).
    pub fn trace_id(&self) -> [u8; 16] {
        self.trace_id
    }

    /// Finish the spans and queue them for export (sampled requests only).
    pub fn finish(self, end: Ending) {
        if !self.sampled {
            return;
        }
        let t = self;
        // Every time is the request's start plus a monotonic offset, so the
        // attempts lie within the request.
        let ended = Instant::now();
        let at = |i: Instant| nanos(t.start + i.saturating_duration_since(t.started));
        let error = end.failure.map(Box::<str>::from).or_else(|| {
            server_error(t.protocol, end.status, end.grpc_status)
                .then(|| format!("status {}", end.status.unwrap_or_default()).into())
        });
        let mut attributes = t.attributes;
        status_attributes(t.protocol, &end, &mut attributes);
        let attempts = t.attempts.len();
        for (n, a) in t.attempts.into_iter().enumerate() {
            let last = n + 1 == attempts;
            let host = a.host.or(end.upstream.filter(|_| last));
            let mut attrs = Vec::with_capacity(5);
            if let Some(h) = host {
                attrs.push(("server.address", Value::Str(h.ip().to_string().into())));
                attrs.push(("server.port", Value::Int(h.port().into())));
            }
            attrs.push((
                "switchyard.attempt",
                Value::Int(i64::try_from(n + 1).unwrap_or(i64::MAX)),
            ));
            let (outcome, err) = if !last {
                ("retried", Some("retried".into()))
            } else if end.failure == Some("upstream error") {
                ("upstream_error", Some("upstream error".into()))
            } else {
                ("ok", error.clone())
            };
            attrs.push(("switchyard.outcome", Value::Str(outcome.into())));
            if last {
                status_attributes(t.protocol, &end, &mut attrs);
            }

            t.tracer.exporter.send(Span {
                trace_id: t.trace_id,
                span_id: a.span_id,
                parent: Some(t.span_id),
                trace_state: t.trace_state.clone(),
                name: format!("{} upstream", t.name).into(),
                kind: Kind::Client,
                start: at(a.started),
                end: at(a.ended.unwrap_or(ended)),
                attributes: attrs,
                error: err,
            });
        }
        t.tracer.exporter.send(Span {
            trace_id: t.trace_id,
            span_id: t.span_id,
            parent: t.parent,
            trace_state: t.trace_state,
            name: t.name,
            kind: Kind::Server,
            start: at(t.started),
            end: at(ended),
            attributes,
            error,
        });
    }
}

/// Whether the answer's status is a server-side failure of the protocol.
fn server_error(protocol: Protocol, status: Option<u32>, grpc: Option<u32>) -> bool {
    if grpc.is_some_and(|g| matches!(g, 2 | 4 | 12 | 13 | 14 | 15)) {
        return true;
    }
    match (protocol, status) {
        (Protocol::Http1 | Protocol::Http2 | Protocol::Rtsp, Some(s)) => s >= 500,
        _ => false,
    }
}

fn status_attributes(protocol: Protocol, end: &Ending, attrs: &mut Vec<(&'static str, Value)>) {
    if let Some(s) = end.status {
        let key = match protocol {
            Protocol::Http1 | Protocol::Http2 => "http.response.status_code",
            Protocol::Rtsp => "rtsp.response.status_code",
            _ => "switchyard.status",
        };
        attrs.push((key, Value::Int(s.into())));
    }
    if let Some(g) = end.grpc_status {
        attrs.push(("rpc.grpc.status_code", Value::Int(g.into())));
    }
}

/// Where spans are POSTed: `http://host[:port][/path]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub authority: String,
    pub path: String,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            format!("`{url}` is not an http:// URL (OTLP/HTTP over plain HTTP is supported; put a local collector in front for TLS)")
        })?;
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, "/v1/traces"),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(format!("`{url}` has no host"));
        }
        let authority = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| !p.contains(']'))
        {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        Ok(Self {
            authority,
            path: path.to_owned(),
        })
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct ExporterKey {
    endpoint: String,
    service: String,
    resource: Vec<(String, String)>,
    batch: usize,
    queue: usize,
    interval: Duration,
}

/// The queue to one exporter thread; the thread ends when the last tracer
/// holding it is gone (after exporting what is queued).
struct Exporter {
    tx: SyncSender<Span>,
    dropped: Counter,
}

/// The exporter alive, by its settings: a reload that keeps them keeps it.
static EXPORTERS: Mutex<Vec<(ExporterKey, Weak<Exporter>)>> = Mutex::new(Vec::new());

impl Exporter {
    fn shared(key: ExporterKey, endpoint: Endpoint) -> Result<Arc<Self>, String> {
        let mut all = EXPORTERS.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|(_, e)| e.strong_count() > 0);
        if let Some(e) = all
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, e)| e.upgrade())
        {
            return Ok(e);
        }
        let (tx, rx) = sync_channel(key.queue.max(1));
        let mut resource = vec![
            ("service.name".to_owned(), key.service.clone()),
            ("telemetry.sdk.name".to_owned(), "switchyard".to_owned()),
            ("telemetry.sdk.language".to_owned(), "rust".to_owned()),
        ];
        resource.extend(key.resource.iter().cloned());
        let batcher = Batcher {
            endpoint,
            resource,
            batch: key.batch.max(1),
            interval: key.interval,
            exported: metrics::counter!("switchyard_trace_spans_exported_total"),
            failed: metrics::counter!("switchyard_trace_export_failures_total"),
        };
        std::thread::Builder::new()
            .name("otlp-export".into())
            .spawn(move || batcher.run(rx))
            .map_err(|e| format!("cannot start the trace exporter: {e}"))?;
        let e = Arc::new(Exporter {
            tx,
            dropped: metrics::counter!("switchyard_trace_spans_dropped_total"),
        });
        all.push((key, Arc::downgrade(&e)));
        Ok(e)
    }

    fn send(&self, span: Span) {
        match self.tx.try_send(span) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => self.dropped.increment(1),
        }
    }
}

struct Batcher {
    endpoint: Endpoint,
    resource: Vec<(String, String)>,
    batch: usize,
    interval: Duration,
    exported: Counter,
    failed: Counter,
}

impl Batcher {
    fn run(self, rx: Receiver<Span>) {
        let mut spans = Vec::with_capacity(self.batch);
        let mut due = Instant::now() + self.interval;
        loop {
            let wait = due.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(span) => {
                    spans.push(span);
                    while spans.len() < self.batch {
                        match rx.try_recv() {
                            Ok(s) => spans.push(s),
                            Err(_) => break,
                        }
                    }
                    if spans.len() >= self.batch {
                        self.export(&mut spans);
                        due = Instant::now() + self.interval;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.export(&mut spans);
                    due = Instant::now() + self.interval;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.export(&mut spans);
                    return;
                }
            }
        }
    }

    fn export(&self, spans: &mut Vec<Span>) {
        if spans.is_empty() {
            return;
        }
        let body = encode_request(&self.resource, spans);
        match self.post(&body) {
            Ok(()) => self.exported.increment(spans.len() as u64),
            Err(e) => {
                self.failed.increment(1);
                tracing::warn!(
                    endpoint = %self.endpoint.authority,
                    "tracing: {} spans not exported: {e}",
                    spans.len()
                );
            }
        }
        spans.clear();
    }

    /// One POST on a fresh connection (batches are seconds apart).
    fn post(&self, body: &[u8]) -> Result<(), String> {
        let addr = self
            .endpoint
            .authority
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve: {e}"))?
            .next()
            .ok_or("no address")?;
        let limit = Duration::from_secs(5);
        let mut s = TcpStream::connect_timeout(&addr, limit).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(limit)).map_err(|e| e.to_string())?;
        s.set_write_timeout(Some(limit))
            .map_err(|e| e.to_string())?;
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.endpoint.path,
            self.endpoint.authority,
            body.len()
        );
        s.write_all(head.as_bytes()).map_err(|e| e.to_string())?;
        s.write_all(body).map_err(|e| e.to_string())?;
        let mut resp = [0u8; 12];
        s.read_exact(&mut resp).map_err(|e| e.to_string())?;
        match resp.get(9) {
            Some(b'2') => Ok(()),
            _ => Err(format!(
                "the collector answered `{}`",
                String::from_utf8_lossy(&resp)
            )),
        }
    }
}

// OTLP protobuf, by hand: opentelemetry/proto/collector/trace/v1 and
// trace/v1, common/v1, resource/v1 field numbers.

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn tag(out: &mut Vec<u8>, field: u32, wire: u8) {
    varint(out, u64::from(field << 3 | u32::from(wire)));
}

fn bytes_field(out: &mut Vec<u8>, field: u32, b: &[u8]) {
    tag(out, field, 2);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn message(out: &mut Vec<u8>, field: u32, f: impl FnOnce(&mut Vec<u8>)) {
    let mut inner = Vec::new();
    f(&mut inner);
    bytes_field(out, field, &inner);
}

fn key_value(out: &mut Vec<u8>, field: u32, key: &str, value: &Value) {
    message(out, field, |kv| {
        bytes_field(kv, 1, key.as_bytes());
        message(kv, 2, |any| match value {
            Value::Str(s) => bytes_field(any, 1, s.as_bytes()),
            Value::Int(i) => {
                tag(any, 3, 0);
                varint(any, *i as u64);
            }
        });
    });
}

/// An `ExportTraceServiceRequest` with one resource and one scope.
pub fn encode_request(resource: &[(String, String)], spans: &[Span]) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 * spans.len() + 128);
    message(&mut out, 1, |rs| {
        message(rs, 1, |r| {
            for (k, v) in resource {
                key_value(r, 1, k, &Value::Str(v.as_str().into()));
            }
        });
        message(rs, 2, |ss| {
            message(ss, 1, |scope| {
                bytes_field(scope, 1, b"switchyard");
                bytes_field(scope, 2, env!("CARGO_PKG_VERSION").as_bytes());
            });
            for span in spans {
                message(ss, 2, |s| encode_span(s, span));
            }
        });
    });
    out
}

fn encode_span(out: &mut Vec<u8>, s: &Span) {
    bytes_field(out, 1, &s.trace_id);
    bytes_field(out, 2, &s.span_id);
    if let Some(ts) = &s.trace_state {
        bytes_field(out, 3, ts.as_bytes());
    }
    if let Some(p) = &s.parent {
        bytes_field(out, 4, p);
    }
    bytes_field(out, 5, s.name.as_bytes());
    tag(out, 6, 0);
    varint(out, s.kind as u64);
    tag(out, 7, 1);
    out.extend_from_slice(&s.start.to_le_bytes());
    tag(out, 8, 1);
    out.extend_from_slice(&s.end.max(s.start).to_le_bytes());
    for (k, v) in &s.attributes {
        key_value(out, 9, k, v);
    }
    // Status: ERROR (2) with its message, else UNSET.
    if let Some(e) = &s.error {
        message(out, 15, |st| {
            bytes_field(st, 2, e.as_bytes());
            tag(st, 3, 0);
            varint(st, 2);
        });
    }
    // Flags: SAMPLED, and whether the parent is remote (bits 8 and 9).
    tag(out, 16, 5);
    let flags: u32 = 1
        | 0x100
        | if s.kind == Kind::Server && s.parent.is_some() {
            0x200
        } else {
            0
        };
    out.extend_from_slice(&flags.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trip_and_rejects() {
        let v = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let p = TraceParent::parse(v).unwrap();
        assert!(p.sampled);
        assert_eq!(p.span_id, [0, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]);
        assert_eq!(p.header().as_bytes(), v);
        let unsampled =
            TraceParent::parse(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
        assert_eq!(unsampled.map(|p| p.sampled), Some(false));
        for bad in [
            &b"00-00000000000000000000000000000000-00f067aa0ba902b7-01"[..],
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            b"",
        ] {
            assert_eq!(
                TraceParent::parse(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // A later version may append fields.
        assert!(
            TraceParent::parse(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz")
                .is_some()
        );
    }

    #[test]
    fn sampling_ratio_is_about_right() {
        let n = 20_000;
        let kept = (0..n).filter(|_| sample(&new_trace_id(), 0.25)).count();
        assert!((4_000..6_000).contains(&kept), "{kept} of {n}");
        assert!(sample(&new_trace_id(), 1.0));
        assert!(!sample(&new_trace_id(), 0.0));
    }

    #[test]
    fn endpoints() {
        let e = Endpoint::parse("http://127.0.0.1:4318/v1/traces").unwrap();
        assert_eq!(
            (e.authority.as_str(), e.path.as_str()),
            ("127.0.0.1:4318", "/v1/traces")
        );
        let e = Endpoint::parse("http://collector").unwrap();
        assert_eq!(
            (e.authority.as_str(), e.path.as_str()),
            ("collector:80", "/v1/traces")
        );
        assert!(Endpoint::parse("https://collector:4318").is_err());
        assert!(Endpoint::parse("http:///v1/traces").is_err());
    }

    #[test]
    fn protobuf_encoding_of_a_span() {
        let span = Span {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent: None,
            trace_state: None,
            name: "redis GET".into(),
            kind: Kind::Server,
            start: 1,
            end: 2,
            attributes: vec![("db.system", Value::Str("redis".into()))],
            error: None,
        };
        let mut out = Vec::new();
        encode_span(&mut out, &span);
        // trace_id: field 1, length 16.
        assert_eq!(out[..2], [0x0a, 16]);
        // span_id: field 2, length 8, after the 16 bytes.
        assert_eq!(out[18..20], [0x12, 8]);
        // name: field 5.
        assert_eq!(out[28..30], [0x2a, 9]);
        assert_eq!(&out[30..39], b"redis GET");
        // kind SERVER.
        assert_eq!(out[39..41], [0x30, 2]);
    }
}
