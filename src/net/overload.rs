//! The overload manager: past a resident-memory (RSS) threshold or a
//! connection threshold (all listeners together) the gateway either stops
//! accepting (`stop_accepting`: new connections wait in the kernel's accept
//! queue) or sheds (`shed`: a new connection is detected as usual, its first
//! request gets the protocol's own "busy" answer, and it is closed). It
//! recovers by itself when the pressure drops: RSS is read every
//! `check_interval`, connections are counted as they come and go.
//!
//! A second, higher threshold (`shed_requests_rss_bytes`) sheds requests on
//! connections already open: every driver asks [`Overload::shedding_requests`]
//! before forwarding a request (`proxy::Conn::admit`) and answers "busy".
//!
//! The per-request path pays one atomic load; the accept path one atomic add
//! and two atomic loads per connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use switchyard_codecs::{Decoder, Protocol, bolt, dubbo, mqtt, rtsp};
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;

use super::stream::Stream;
use crate::config::{self, OverloadAction};

/// The gateway-wide overload state. Thresholds are atomics so a reload can
/// change them under running listeners.
pub struct Overload {
    max_rss: AtomicU64,
    shed_requests_rss: AtomicU64,
    /// Past `shed_requests_rss`: new requests are answered "busy".
    shedding_requests: AtomicBool,
    max_connections: AtomicUsize,
    stop_accepting: AtomicBool,
    interval_ms: AtomicU64,
    connections: AtomicUsize,
    /// Most connections open at once since memory was last given back.
    peak_connections: AtomicUsize,
    rss_over: AtomicBool,
    /// Woken when pressure may have dropped (a connection ended, RSS fell).
    relieved: Notify,
    active: metrics::Gauge,
    rss: metrics::Gauge,
    open: metrics::Gauge,
    paused: metrics::Gauge,
}

impl Overload {
    pub fn new(cfg: &config::Overload) -> Arc<Self> {
        let o = Arc::new(Self {
            max_rss: AtomicU64::new(0),
            shed_requests_rss: AtomicU64::new(0),
            shedding_requests: AtomicBool::new(false),
            max_connections: AtomicUsize::new(0),
            stop_accepting: AtomicBool::new(false),
            interval_ms: AtomicU64::new(1000),
            connections: AtomicUsize::new(0),
            peak_connections: AtomicUsize::new(0),
            rss_over: AtomicBool::new(false),
            relieved: Notify::new(),
            active: metrics::gauge!("switchyard_overload_active"),
            rss: metrics::gauge!("switchyard_process_resident_memory_bytes"),
            open: metrics::gauge!("switchyard_overload_connections"),
            paused: metrics::gauge!("switchyard_overload_accept_paused"),
        });
        o.configure(cfg);
        o
    }

    /// Take new thresholds (at start and on reload).
    pub fn configure(&self, cfg: &config::Overload) {
        self.max_rss.store(cfg.max_rss_bytes, Ordering::Relaxed);
        self.shed_requests_rss
            .store(cfg.shed_requests_rss_bytes, Ordering::Relaxed);
        self.max_connections
            .store(cfg.max_connections, Ordering::Relaxed);
        self.stop_accepting.store(
            cfg.action == OverloadAction::StopAccepting,
            Ordering::Relaxed,
        );
        let ms = u64::try_from(cfg.check_interval.get().as_millis()).unwrap_or(u64::MAX);
        self.interval_ms.store(ms.max(10), Ordering::Relaxed);
        // Judge the new thresholds at once rather than at the next tick.
        self.check_rss();
        self.relieved.notify_waiters();
    }

    fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms.load(Ordering::Relaxed))
    }

    /// Whether `open` connections (the one being judged included) are past the thresholds.
    fn over(&self, open: usize) -> bool {
        let max = self.max_connections.load(Ordering::Relaxed);
        self.rss_over.load(Ordering::Relaxed) || (max > 0 && open > max)
    }

    /// Count a new connection (the returned guard uncounts it) and decide
    /// whether it is shed: with `shed`, when it takes the gateway past a threshold.
    pub fn admit(self: &Arc<Self>) -> Admission {
        let open = self.connections.fetch_add(1, Ordering::Relaxed) + 1;
        self.open.set(open as f64);
        if open > self.peak_connections.load(Ordering::Relaxed) {
            self.peak_connections.fetch_max(open, Ordering::Relaxed);
        }
        let shed = !self.stop_accepting.load(Ordering::Relaxed) && self.over(open);
        if shed {
            self.active.set(1.0);
        }
        Admission {
            overload: self.clone(),
            shed,
        }
    }

    /// With `stop_accepting`: wait until one more connection would not be past
    /// the thresholds. Returns at once otherwise.
    pub async fn accept_allowed(&self) {
        let mut paused = false;
        loop {
            let notified = self.relieved.notified();
            if !self.stop_accepting.load(Ordering::Relaxed)
                || !self.over(self.connections.load(Ordering::Relaxed) + 1)
            {
                break;
            }
            if !paused {
                paused = true;
                self.paused.set(1.0);
                self.active.set(1.0);
                tracing::warn!("overloaded: not accepting new connections");
            }
            tokio::select! {
                () = notified => {}
                () = tokio::time::sleep(self.interval()) => {}
            }
        }
        if paused {
            self.paused.set(0.0);
            self.refresh_active();
            tracing::info!("pressure dropped: accepting again");
        }
    }

    fn refresh_active(&self) {
        let over = self.over(self.connections.load(Ordering::Relaxed));
        self.active.set(if over { 1.0 } else { 0.0 });
    }

    /// Read RSS once and judge it.
    fn check_rss(&self) {
        let max = self.max_rss.load(Ordering::Relaxed);
        let rss = resident_bytes();
        if let Some(rss) = rss {
            self.rss.set(rss as f64);
        }
        let over = max > 0 && rss.is_some_and(|r| r > max);
        let shed_max = self.shed_requests_rss.load(Ordering::Relaxed);
        let shed = shed_max > 0 && rss.is_some_and(|r| r > shed_max);
        if self.shedding_requests.swap(shed, Ordering::Relaxed) != shed {
            if shed {
                tracing::warn!(
                    rss,
                    max = shed_max,
                    "overloaded: answering new requests busy (overload.shed_requests_rss_bytes)"
                );
            } else {
                tracing::info!(rss, max = shed_max, "serving requests again");
            }
        }
        let was = self.rss_over.swap(over, Ordering::Relaxed);
        if was != over {
            if over {
                tracing::warn!(
                    rss,
                    max,
                    "overloaded: resident memory past overload.max_rss_bytes"
                );
            } else {
                tracing::info!(
                    rss,
                    max,
                    "resident memory back under overload.max_rss_bytes"
                );
                self.relieved.notify_waiters();
            }
        }
        self.refresh_active();
    }

    /// Whether new requests on open connections are to be answered "busy".
    pub fn shedding_requests(&self) -> bool {
        self.shedding_requests.load(Ordering::Relaxed)
    }

    /// Count one request answered "busy" by the second stage.
    pub fn count_shed_request(&self, protocol: Protocol) {
        metrics::counter!("switchyard_overload_shed_requests_total", "protocol" => protocol.name())
            .increment(1);
    }

    /// After a storm of connections has mostly gone (at least
    /// [`TRIM_AFTER`] open at once, now under half of that), hand the
    /// allocator's freed memory back to the system: a libc allocator keeps
    /// the small per-connection buffers of ten thousand connections
    /// resident otherwise (HAProxy calls `malloc_trim` for the same reason).
    fn give_memory_back_after_a_storm(&self) {
        let peak = self.peak_connections.load(Ordering::Relaxed);
        let now = self.connections.load(Ordering::Relaxed);
        if peak >= TRIM_AFTER && now <= peak / 2 {
            self.peak_connections.store(now, Ordering::Relaxed);
            let released = crate::net::memory::release_free_memory();
            tracing::debug!(
                peak,
                now,
                released,
                "connections gone: freed memory handed back"
            );
        }
    }

    /// Read RSS every `check_interval`, forever.
    pub async fn monitor(self: Arc<Self>) {
        loop {
            tokio::time::sleep(self.interval()).await;
            self.give_memory_back_after_a_storm();
            self.check_rss();
        }
    }
}

/// One counted connection.
pub struct Admission {
    overload: Arc<Overload>,
    /// Answer this connection "busy" instead of serving it.
    pub shed: bool,
}

impl Admission {
    /// The overload state this connection was counted in.
    pub fn overload(&self) -> &Arc<Overload> {
        &self.overload
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let o = &self.overload;
        let open = o.connections.fetch_sub(1, Ordering::Relaxed) - 1;
        o.open.set(open as f64);
        o.relieved.notify_waiters();
    }
}

/// This process's resident set size, from `/proc/self/statm`.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Connections open at once that count as a storm worth giving memory back after.
const TRIM_AFTER: usize = 1000;

/// The message every busy answer carries.
const BUSY: &str = "gateway overloaded, try again later";

/// Answer a shed connection's first request with its protocol's "busy"
/// answer and close. `buf` holds what detection read; the rest of the first
/// request (when the answer needs its id) is read within `head_timeout`.
pub async fn shed(
    mut stream: Stream,
    mut buf: BytesMut,
    protocol: Option<Protocol>,
    head_timeout: Duration,
) {
    metrics::counter!("switchyard_overload_shed_total", "protocol" => protocol.map_or("tcp", Protocol::name)).increment(1);
    let answer = tokio::time::timeout(head_timeout, busy_answer(&mut stream, &mut buf, protocol))
        .await
        .ok()
        .flatten();
    if let Some(answer) = answer {
        let _ = stream.write_all(&answer).await;
    }
    let _ = stream.shutdown().await;
    // Read (and drop) what the client still sends for a moment, so closing
    // with unread bytes does not reset the connection before it read the answer.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        buf.clear();
        while let Ok(n) = stream.read_some(&mut buf).await {
            if n == 0 || buf.len() > 64 * 1024 {
                break;
            }
            buf.clear();
        }
    })
    .await;
}

/// Decode the first message of a connection with `decoder`, reading as needed.
async fn first<D: Decoder>(
    stream: &mut Stream,
    buf: &mut BytesMut,
    mut decoder: D,
) -> Option<D::Item> {
    loop {
        if let Some(item) = decoder.decode(buf).ok()? {
            return Some(item);
        }
        if stream.read_some(buf).await.ok()? == 0 {
            return None;
        }
    }
}

async fn busy_answer(
    stream: &mut Stream,
    buf: &mut BytesMut,
    protocol: Option<Protocol>,
) -> Option<Bytes> {
    match protocol? {
        Protocol::Http1 => {
            let body = format!("{BUSY}\n");
            Some(Bytes::from(format!(
                "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )))
        }
        Protocol::Http2 => {
            // Our SETTINGS, then GOAWAY with last stream 0 (no stream was
            // processed: safe to retry elsewhere) and ENHANCE_YOUR_CALM.
            let mut out = BytesMut::with_capacity(9 + 17 + BUSY.len());
            out.put_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
            let len = 8 + BUSY.len();
            out.put_slice(&[
                (len >> 16) as u8,
                (len >> 8) as u8,
                len as u8,
                7,
                0,
                0,
                0,
                0,
                0,
            ]);
            out.put_u32(0);
            out.put_u32(0xb);
            out.put_slice(BUSY.as_bytes());
            Some(out.freeze())
        }
        Protocol::Redis => Some(Bytes::from_static(
            b"-ERR max number of clients reached\r\n",
        )),
        Protocol::Mqtt => {
            let packet = first(stream, buf, mqtt::Decoder::new(mqtt::Limits::default())).await?;
            let version = packet.as_connect()?.version();
            // v5: 0x89 Server busy; 3.1/3.1.1: 3 Server unavailable.
            let code = if version == mqtt::Version::V5 {
                0x89
            } else {
                3
            };
            Some(mqtt::connack(version, false, code))
        }
        Protocol::Dubbo => {
            let frame = first(stream, buf, dubbo::Decoder::new(dubbo::Limits::default())).await?;
            Some(dubbo::response(
                frame.request_id(),
                dubbo::status::SERVER_THREADPOOL_EXHAUSTED_ERROR,
                dubbo::SERIALIZATION_HESSIAN2,
                &format!("switchyard: {BUSY}"),
            ))
        }
        Protocol::Bolt => {
            let frame = first(stream, buf, bolt::Decoder::new(bolt::Limits::default())).await?;
            Some(bolt::response(
                frame.version(),
                frame.request_id(),
                frame.codec(),
                bolt::status::SERVER_THREADPOOL_BUSY,
                "",
            ))
        }
        Protocol::Rtsp => {
            let msg = first(stream, buf, rtsp::MessageDecoder::default()).await?;
            let rtsp::Message::Request(req) = msg else {
                return None;
            };
            let mut out = BytesMut::from(&b"RTSP/1.0 503 Service Unavailable\r\n"[..]);
            if let Some(cseq) = req.cseq() {
                out.put_slice(b"CSeq: ");
                out.put_slice(cseq);
                out.put_slice(b"\r\n");
            }
            out.put_slice(b"Retry-After: 1\r\nContent-Length: 0\r\n\r\n");
            Some(out.freeze())
        }
        Protocol::Mysql => {
            // ERR 1040 as the first packet (sequence 0), before any
            // handshake: no SQL state marker, as servers send it.
            let msg = b"Too many connections";
            let len = 3 + msg.len();
            let mut out = BytesMut::with_capacity(4 + len);
            out.put_slice(&[len as u8, 0, 0, 0, 0xff, 0x10, 0x04]);
            out.put_slice(msg);
            Some(out.freeze())
        }
        _ => None,
    }
}
