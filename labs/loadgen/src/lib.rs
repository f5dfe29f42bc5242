//! Shared pieces of the IoT Lab load generators (`mqtt-fleet`, `mqtt-idle`,
//! `mqtt-bench`): a minimal MQTT 3.1.1 / 5 client (packets made here, decoded
//! with switchyard's own codec), a log-linear latency histogram, the
//! `RLIMIT_NOFILE` raise, loopback source-address spreading and a tiny JSON
//! writer (one result line per run).
//!
//! Everything is meant for loopback load tests: every wait has a timeout and
//! every loop a deadline.

use std::fmt::Write as _;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use switchyard_codecs::Decoder as _;
use switchyard_codecs::mqtt::{self, Body, Packet, Version, properties::PropertyValue};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

// ------------------------------------------------------------------ packets

/// MQTT version from the command line: `3.1.1`/`311`/`4` or `5`.
pub fn parse_version(s: &str) -> Result<Version, String> {
    match s {
        "3.1.1" | "311" | "4" | "v311" | "mqttv311" => Ok(Version::V311),
        "5" | "5.0" | "v5" | "mqttv5" => Ok(Version::V5),
        _ => Err(format!("unknown MQTT version '{s}' (use 3.1.1 or 5)")),
    }
}

fn put_varint(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// Append a packet: first byte, remaining length, `body`.
fn put_packet(out: &mut Vec<u8>, first: u8, body: &[u8]) {
    out.push(first);
    put_varint(out, body.len());
    out.extend_from_slice(body);
}

/// What a CONNECT carries.
#[derive(Debug, Clone)]
pub struct ConnectOpts {
    pub version: Version,
    pub client_id: String,
    pub user: Option<String>,
    pub password: Option<String>,
    /// Seconds; 0 = no keep-alive.
    pub keep_alive: u16,
    pub clean: bool,
}

/// CONNECT (MQTT 5: no properties).
pub fn connect_packet(o: &ConnectOpts) -> Vec<u8> {
    let mut body = Vec::with_capacity(32 + o.client_id.len());
    put_str(&mut body, b"MQTT");
    body.push(o.version.level());
    let mut flags = 0u8;
    if o.clean {
        flags |= 0x02;
    }
    if o.user.is_some() {
        flags |= 0x80;
    }
    if o.password.is_some() && (o.user.is_some() || o.version == Version::V5) {
        flags |= 0x40;
    }
    body.push(flags);
    body.extend_from_slice(&o.keep_alive.to_be_bytes());
    if o.version == Version::V5 {
        body.push(0); // no properties
    }
    put_str(&mut body, o.client_id.as_bytes());
    if let Some(u) = &o.user {
        put_str(&mut body, u.as_bytes());
    }
    if let Some(p) = &o.password
        && flags & 0x40 != 0
    {
        put_str(&mut body, p.as_bytes());
    }
    let mut out = Vec::with_capacity(body.len() + 5);
    put_packet(&mut out, 0x10, &body);
    out
}

/// Append a PUBLISH (QoS 0: `packet_id` ignored).
pub fn put_publish(
    out: &mut Vec<u8>,
    version: Version,
    topic: &[u8],
    qos: u8,
    packet_id: u16,
    payload: &[u8],
) {
    let pid_len = if qos > 0 { 2 } else { 0 };
    let props = usize::from(version == Version::V5);
    let len = 2 + topic.len() + pid_len + props + payload.len();
    out.push(0x30 | (qos << 1));
    put_varint(out, len);
    put_str(out, topic);
    if qos > 0 {
        out.extend_from_slice(&packet_id.to_be_bytes());
    }
    if props == 1 {
        out.push(0);
    }
    out.extend_from_slice(payload);
}

/// SUBSCRIBE of `filters`, each at `qos`.
pub fn subscribe_packet(version: Version, packet_id: u16, filters: &[&str], qos: u8) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&packet_id.to_be_bytes());
    if version == Version::V5 {
        body.push(0);
    }
    for f in filters {
        put_str(&mut body, f.as_bytes());
        body.push(qos);
    }
    let mut out = Vec::new();
    put_packet(&mut out, 0x82, &body);
    out
}

/// PUBACK with success (no reason code: valid in both versions).
pub fn put_puback(out: &mut Vec<u8>, packet_id: u16) {
    out.push(0x40);
    out.push(2);
    out.extend_from_slice(&packet_id.to_be_bytes());
}

pub const PINGREQ: [u8; 2] = [0xc0, 0x00];
pub const DISCONNECT: [u8; 2] = [0xe0, 0x00];

// ------------------------------------------------------------------ client

/// Why a connection attempt did not end in an accepted session.
#[derive(Debug)]
pub enum ConnectError {
    /// TCP connect failed (or timed out).
    Tcp(io::Error),
    /// The server closed, sent garbage, or timed out before CONNACK.
    NoConnack(String),
    /// CONNACK with a non-zero code.
    Refused(u8),
}

impl ConnectError {
    /// A short label for counters: `tcp`, `no_connack`, `refused_0x86`, ...
    pub fn label(&self) -> String {
        match self {
            ConnectError::Tcp(e) if e.kind() == io::ErrorKind::TimedOut => "tcp_timeout".into(),
            ConnectError::Tcp(e) => match e.raw_os_error() {
                Some(libc::EADDRNOTAVAIL) => "tcp_eaddrnotavail".into(),
                Some(libc::EMFILE) | Some(libc::ENFILE) => "tcp_emfile".into(),
                Some(libc::ECONNREFUSED) => "tcp_refused".into(),
                Some(libc::ECONNRESET) => "tcp_reset".into(),
                _ => "tcp_error".into(),
            },
            ConnectError::NoConnack(_) => "no_connack".into(),
            ConnectError::Refused(c) => format!("refused_0x{c:02x}"),
        }
    }
}

/// One MQTT connection: the socket, what was read and not yet decoded, and
/// a decoder for server → client packets.
pub struct Client {
    pub stream: TcpStream,
    pub buf: BytesMut,
    decoder: mqtt::Decoder,
    pub version: Version,
    /// MQTT 5 CONNACK Receive Maximum (how many QoS>0 PUBLISHes may be
    /// unacknowledged), if the server sent one.
    pub receive_maximum: Option<u16>,
}

/// Open a TCP connection, from `source` (port chosen by the kernel) if given.
pub async fn tcp_connect(
    addr: SocketAddr,
    source: Option<IpAddr>,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let fut = async {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(ip) = source {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        let stream = socket.connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timeout")),
    }
}

impl Client {
    /// TCP connect, CONNECT, wait for CONNACK (each step within `timeout`).
    pub async fn connect(
        addr: SocketAddr,
        source: Option<IpAddr>,
        opts: &ConnectOpts,
        timeout: Duration,
    ) -> Result<Client, ConnectError> {
        let stream = tcp_connect(addr, source, timeout)
            .await
            .map_err(ConnectError::Tcp)?;
        Self::handshake(stream, opts, timeout).await
    }

    /// CONNECT / CONNACK on an open stream.
    pub async fn handshake(
        stream: TcpStream,
        opts: &ConnectOpts,
        timeout: Duration,
    ) -> Result<Client, ConnectError> {
        let mut client = Client {
            stream,
            buf: BytesMut::new(),
            decoder: mqtt::Decoder::with_version(
                mqtt::Limits {
                    max_packet: 16 << 20,
                },
                opts.version,
            ),
            version: opts.version,
            receive_maximum: None,
        };
        client
            .stream
            .write_all(&connect_packet(opts))
            .await
            .map_err(|e| ConnectError::NoConnack(format!("write CONNECT: {e}")))?;
        let packet = match tokio::time::timeout(timeout, client.next_packet()).await {
            Err(_) => return Err(ConnectError::NoConnack("timeout".into())),
            Ok(Err(e)) => return Err(ConnectError::NoConnack(e.to_string())),
            Ok(Ok(None)) => return Err(ConnectError::NoConnack("closed".into())),
            Ok(Ok(Some(p))) => p,
        };
        match packet.body() {
            Body::Connack(c) if c.code() == 0 => {
                client.receive_maximum =
                    match c.properties().get(mqtt::properties::id::RECEIVE_MAXIMUM) {
                        Some(PropertyValue::U16(n)) => Some(n),
                        _ => None,
                    };
                Ok(client)
            }
            Body::Connack(c) => Err(ConnectError::Refused(c.code())),
            _ => Err(ConnectError::NoConnack(format!(
                "{} instead of CONNACK",
                packet.kind().name()
            ))),
        }
    }

    /// Decode one packet from what was read already.
    pub fn try_decode(&mut self) -> io::Result<Option<Packet>> {
        self.decoder
            .decode(&mut self.buf)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
    }

    /// Read until one packet is complete; `None` at EOF.
    pub async fn next_packet(&mut self) -> io::Result<Option<Packet>> {
        loop {
            if let Some(p) = self.try_decode()? {
                return Ok(Some(p));
            }
            if self.buf.capacity() - self.buf.len() < 512 {
                self.buf.reserve(4096);
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Ok(None);
            }
        }
    }

    /// Read what is there (waits for at least one byte); `false` at EOF.
    /// Cancel-safe (for `select!`).
    pub async fn fill(&mut self) -> io::Result<bool> {
        if self.buf.capacity() - self.buf.len() < 512 {
            self.buf.reserve(8192);
        }
        Ok(self.stream.read_buf(&mut self.buf).await? > 0)
    }
}

// ------------------------------------------------------------------ time, payload

/// Wall-clock nanoseconds since the Unix epoch (payload timestamps: comparable
/// across processes on one machine).
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// A telemetry payload of `size` bytes (at least 32): `"<ns:20> <seq:10> "` then padding.
pub fn payload(out: &mut Vec<u8>, ts_ns: u64, seq: u64, size: usize) {
    let start = out.len();
    let _ = write!(VecWriter(out), "{ts_ns:020} {seq:010} ");
    while out.len() - start < size {
        out.push(b'x');
    }
}

/// The send timestamp of a [`payload`], if it has one.
pub fn payload_ts(p: &[u8]) -> Option<u64> {
    let digits = p.get(..20)?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

struct VecWriter<'a>(&'a mut Vec<u8>);
impl std::fmt::Write for VecWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// CPU time (user + system) this process used so far, seconds.
pub fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills a local struct.
    unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut u) != 0 {
            return 0.0;
        }
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        tv(u.ru_utime) + tv(u.ru_stime)
    }
}

// ------------------------------------------------------------------ histogram

/// Log-linear histogram of nanosecond values: exact below 128 ns, then 64
/// buckets per power of two (≤ 1.6 % relative error).
#[derive(Clone)]
pub struct Hist {
    counts: Vec<u64>,
    n: u64,
    max: u64,
    sum: u128,
}

const HIST_BUCKETS: usize = 128 + 57 * 64;

impl Default for Hist {
    fn default() -> Self {
        Self::new()
    }
}

impl Hist {
    pub fn new() -> Self {
        Self {
            counts: vec![0; HIST_BUCKETS],
            n: 0,
            max: 0,
            sum: 0,
        }
    }

    fn index(v: u64) -> usize {
        if v < 128 {
            return v as usize;
        }
        let msb = 63 - v.leading_zeros() as u64;
        let shift = msb - 6;
        (128 + (shift - 1) * 64 + ((v >> shift) - 64)) as usize
    }

    /// The middle of bucket `i`.
    fn value(i: usize) -> u64 {
        if i < 128 {
            return i as u64;
        }
        let k = (i - 128) as u64;
        let shift = k / 64 + 1;
        let m = k % 64 + 64;
        (m << shift) + ((1u64 << shift) >> 1)
    }

    pub fn record(&mut self, v: u64) {
        let i = Self::index(v).min(HIST_BUCKETS - 1);
        if let Some(c) = self.counts.get_mut(i) {
            *c += 1;
        }
        self.n += 1;
        self.max = self.max.max(v);
        self.sum += u128::from(v);
    }

    pub fn merge(&mut self, other: &Hist) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.n += other.n;
        self.max = self.max.max(other.max);
        self.sum += other.sum;
    }

    pub fn count(&self) -> u64 {
        self.n
    }

    /// The `q` quantile (0..=1), or `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.n == 0 {
            return None;
        }
        let rank = ((q * self.n as f64).ceil() as u64).clamp(1, self.n);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Self::value(i).min(self.max));
            }
        }
        Some(self.max)
    }

    /// `{"n":..,"p50":..,"p90":..,"p99":..,"p999":..,"max":..,"mean":..}` in milliseconds.
    pub fn json_ms(&self) -> String {
        let ms = |v: Option<u64>| match v {
            Some(v) => format!("{:.3}", v as f64 / 1e6),
            None => "null".into(),
        };
        let mean = (self.n > 0).then(|| (self.sum / u128::from(self.n)) as u64);
        format!(
            "{{\"n\":{},\"p50\":{},\"p90\":{},\"p99\":{},\"p999\":{},\"max\":{},\"mean\":{}}}",
            self.n,
            ms(self.quantile(0.5)),
            ms(self.quantile(0.9)),
            ms(self.quantile(0.99)),
            ms(self.quantile(0.999)),
            ms((self.n > 0).then_some(self.max)),
            ms(mean),
        )
    }
}

// ------------------------------------------------------------------ limits, addresses

/// Raise the soft `RLIMIT_NOFILE` towards `wanted` (at most the hard limit).
/// Returns (soft, hard) after the change.
pub fn raise_nofile(wanted: u64) -> (u64, u64) {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return (0, 0);
        }
        let target = wanted.min(r.rlim_max);
        if target > r.rlim_cur {
            let new = libc::rlimit {
                rlim_cur: target,
                rlim_max: r.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &new) == 0 {
                r.rlim_cur = target;
            }
        }
    }
    (r.rlim_cur, r.rlim_max)
}

/// Raise the fd limit for `conns` sockets plus slack; warn on stderr when the
/// hard limit is lower.
pub fn nofile_for(tool: &str, conns: u64) -> (u64, u64) {
    let wanted = conns + 256;
    let (soft, hard) = raise_nofile(wanted);
    if soft < wanted {
        eprintln!(
            "[{tool}] RLIMIT_NOFILE is {soft} (hard {hard}); {conns} connections need ~{wanted}: \
             at most ~{} will open in this process (raise the hard limit, or run several processes)",
            soft.saturating_sub(256)
        );
    }
    (soft, hard)
}

/// Source addresses `127.0.0.<first>` .. `127.0.0.<first+count-1>` (wrapping into the
/// next octets past .255). `count == 0`: none (the kernel picks, 127.0.0.1).
pub fn loopback_sources(first: u32, count: u32) -> Vec<IpAddr> {
    (0..count)
        .map(|i| {
            let n = 0x7f00_0000u32 + first + i;
            IpAddr::V4(Ipv4Addr::from(n))
        })
        .collect()
}

// ------------------------------------------------------------------ JSON

/// A JSON object written field by field (values are already JSON, or strings).
#[derive(Default)]
pub struct Json {
    out: String,
}

impl Json {
    pub fn new() -> Self {
        Self::default()
    }
    fn key(&mut self, k: &str) {
        self.out.push(if self.out.is_empty() { '{' } else { ',' });
        let _ = write!(self.out, "\"{k}\":");
    }
    /// A raw JSON value (number, object, array, `null`).
    pub fn raw(&mut self, k: &str, v: impl std::fmt::Display) -> &mut Self {
        self.key(k);
        let _ = write!(self.out, "{v}");
        self
    }
    pub fn str(&mut self, k: &str, v: &str) -> &mut Self {
        self.key(k);
        self.out.push_str(&json_str(v));
        self
    }
    pub fn f64(&mut self, k: &str, v: f64, decimals: usize) -> &mut Self {
        self.key(k);
        if v.is_finite() {
            let _ = write!(self.out, "{v:.decimals$}");
        } else {
            self.out.push_str("null");
        }
        self
    }
    pub fn finish(&mut self) -> String {
        if self.out.is_empty() {
            self.out.push('{');
        }
        let mut s = std::mem::take(&mut self.out);
        s.push('}');
        s
    }
}

/// A JSON string literal.
pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `{"label":count,...}` from (label, count) pairs, sorted by label.
pub fn json_counts<'a>(pairs: impl IntoIterator<Item = (&'a String, &'a u64)>) -> String {
    let mut v: Vec<_> = pairs.into_iter().collect();
    v.sort();
    let body: Vec<String> = v
        .iter()
        .map(|(k, n)| format!("{}:{}", json_str(k), n))
        .collect();
    format!("{{{}}}", body.join(","))
}

/// Substitute `%c` (client id) and `%i` (index) in a template.
pub fn fill(template: &str, client_id: &str, index: u64) -> String {
    template
        .replace("%c", client_id)
        .replace("%i", &index.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hist_quantiles_are_close() {
        let mut h = Hist::new();
        for v in 1..=100_000u64 {
            h.record(v * 1000);
        }
        let p50 = h.quantile(0.5).unwrap() as f64;
        let p99 = h.quantile(0.99).unwrap() as f64;
        assert!((p50 / 50_000_000.0 - 1.0).abs() < 0.02, "{p50}");
        assert!((p99 / 99_000_000.0 - 1.0).abs() < 0.02, "{p99}");
        for v in [0u64, 1, 127, 128, 129, 255, 256, 1 << 40, u64::MAX] {
            let i = Hist::index(v);
            assert!(i < HIST_BUCKETS, "{v}");
        }
    }

    #[test]
    fn packets_decode_with_the_codec() {
        for version in [Version::V311, Version::V5] {
            let mut buf = Vec::new();
            put_publish(&mut buf, version, b"devices/d1/telemetry", 1, 7, b"hello");
            put_puback(&mut buf, 7);
            let mut bytes = BytesMut::from(&buf[..]);
            let mut d = mqtt::Decoder::with_version(mqtt::Limits::default(), version);
            let p = d.decode(&mut bytes).unwrap().unwrap();
            let pb = p.as_publish().unwrap();
            assert_eq!(&pb.topic()[..], b"devices/d1/telemetry");
            assert_eq!(pb.packet_id(), Some(7));
            assert_eq!(&pb.payload()[..], b"hello");
            let a = d.decode(&mut bytes).unwrap().unwrap();
            assert_eq!(a.packet_id(), Some(7));
            let c = connect_packet(&ConnectOpts {
                version,
                client_id: "dev-1".into(),
                user: Some("u".into()),
                password: Some("p".into()),
                keep_alive: 30,
                clean: true,
            });
            let mut bytes = BytesMut::from(&c[..]);
            let mut d = mqtt::Decoder::new(mqtt::Limits::default());
            let p = d.decode(&mut bytes).unwrap().unwrap();
            let c = p.as_connect().unwrap();
            assert_eq!(&c.client_id()[..], b"dev-1");
            assert_eq!(c.username().map(|u| &u[..]), Some(&b"u"[..]));
            assert_eq!(c.password().map(|u| &u[..]), Some(&b"p"[..]));
            assert_eq!(c.keep_alive(), 30);
            let s = subscribe_packet(version, 1, &["devices/+/telemetry"], 1);
            let mut bytes = BytesMut::from(&s[..]);
            let p = d.decode(&mut bytes).unwrap().unwrap();
            assert_eq!(p.as_subscribe().unwrap().filters().len(), 1);
        }
    }

    #[test]
    fn payload_roundtrip() {
        let mut v = Vec::new();
        payload(&mut v, 1_234_567_890_123, 42, 64);
        assert_eq!(v.len(), 64);
        assert_eq!(payload_ts(&v), Some(1_234_567_890_123));
    }
}
