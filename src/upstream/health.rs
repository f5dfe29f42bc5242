//! Upstream health, once for every protocol: active health checks (a
//! protocol-native probe of each host every `interval`) and passive outlier
//! detection (hosts whose requests fail in a row are ejected for a while).
//!
//! A host is *available* while its active checks pass and it is not ejected;
//! [`super::Cluster::pick`] and [`super::Cluster::hosts_for`] skip the others,
//! unless no host is available at all: then every host is used ("panic mode",
//! as Envoy), so a cluster-wide outage fails requests on their own errors
//! rather than on a health verdict that may be wrong.
//!
//! Everything a request touches is an atomic: the cluster's count of marks
//! (unhealthy or ejected hosts) is read once per pick and, while it is 0,
//! nothing else is. Outcomes are counted per host with one `fetch_add`; an
//! ejection ends lazily, when a pick first sees its time has passed.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::UpstreamStream;
use bytes::{Bytes, BytesMut};
use metrics::{Counter, Gauge};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::Cluster;
use crate::config::health::CheckKind;
use crate::config::{self, UpstreamProtocol};

/// What became of one request to a host, for outlier detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response that is not a server error.
    Success,
    /// The host could not be reached, reset the connection or timed out.
    GatewayError,
    /// The host answered with a server error (HTTP 5xx, gRPC UNAVAILABLE or
    /// INTERNAL, Dubbo or Bolt server-error status).
    ServerError,
}

impl Outcome {
    /// An HTTP response's outcome: 5xx is a server error.
    pub fn of_status(status: u16) -> Self {
        if status >= 500 {
            Outcome::ServerError
        } else {
            Outcome::Success
        }
    }

    /// An HTTP/2 response head's outcome: 5xx, or a trailers-only gRPC
    /// UNAVAILABLE (14) or INTERNAL (13), is a server error.
    pub fn of_head(status: u16, grpc_status: Option<&[u8]>) -> Self {
        match grpc_status {
            Some(b"13" | b"14") => Outcome::ServerError,
            _ => Self::of_status(status),
        }
    }

    /// A failed exchange's outcome: upstream connect, reset, timeout and
    /// protocol errors are gateway errors; `None` for the client's own.
    pub fn of_error(e: &crate::error::Error) -> Option<Self> {
        use crate::error::{ErrorKind, Side};
        match e.kind() {
            ErrorKind::ConnectFailed
            | ErrorKind::ConnectTimeout
            | ErrorKind::UpstreamClosed
            | ErrorKind::UpstreamTimeout
            | ErrorKind::UpstreamProtocol => Some(Outcome::GatewayError),
            ErrorKind::Io if e.side() == Side::Upstream => Some(Outcome::GatewayError),
            _ => None,
        }
    }
}

/// Milliseconds since the first call (0 is never returned: 0 means "not
/// ejected" in [`HostHealth`]).
fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX) + 1
}

/// One host's health, all atomics.
pub struct HostHealth {
    /// Active checks took it out.
    unhealthy: AtomicBool,
    /// Active checks passed / failed in a row.
    passes: AtomicU32,
    fails: AtomicU32,
    /// Requests that failed in a row, by kind.
    gateway_errors: AtomicU32,
    server_errors: AtomicU32,
    /// Ejected until this [`now_ms`] (0: not ejected).
    ejected_until: AtomicU64,
    /// Ejections so far (the multiplier of the next one's length).
    ejections: AtomicU32,
    /// When its last ejection ended.
    returned_at: AtomicU64,
    healthy_gauge: Gauge,
    ejections_total: Counter,
}

impl std::fmt::Debug for HostHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostHealth")
            .field("unhealthy", &self.unhealthy)
            .field("ejected_until", &self.ejected_until)
            .finish_non_exhaustive()
    }
}

impl HostHealth {
    pub fn new(cluster: &str, host: &str) -> Self {
        let healthy_gauge = metrics::gauge!(
            "switchyard_upstream_host_healthy",
            "cluster" => cluster.to_owned(),
            "host" => host.to_owned()
        );
        healthy_gauge.set(1.0);
        Self {
            unhealthy: AtomicBool::new(false),
            passes: AtomicU32::new(0),
            fails: AtomicU32::new(0),
            gateway_errors: AtomicU32::new(0),
            server_errors: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            returned_at: AtomicU64::new(0),
            healthy_gauge,
            ejections_total: metrics::counter!(
                "switchyard_upstream_ejections_total",
                "cluster" => cluster.to_owned(),
                "host" => host.to_owned()
            ),
        }
    }

    /// Whether requests may go to the host: its checks pass and it is not
    /// ejected (an ejection whose time has passed counts as over).
    pub fn available(&self) -> bool {
        if self.unhealthy.load(Ordering::Relaxed) {
            return false;
        }
        let until = self.ejected_until.load(Ordering::Relaxed);
        until == 0 || now_ms() >= until
    }

    fn update_gauge(&self) {
        self.healthy_gauge
            .set(if self.available() { 1.0 } else { 0.0 });
    }

    /// What the admin's `/clusters` shows of this host's health now.
    pub fn report(&self) -> HostHealthReport {
        let until = self.ejected_until.load(Ordering::Relaxed);
        let now = now_ms();
        HostHealthReport {
            available: self.available(),
            failing_active_checks: self.unhealthy.load(Ordering::Relaxed),
            ejected_ms_left: until.saturating_sub(now),
            ejections: self.ejections.load(Ordering::Relaxed),
            check_passes_in_row: self.passes.load(Ordering::Relaxed),
            check_failures_in_row: self.fails.load(Ordering::Relaxed),
            gateway_errors_in_row: self.gateway_errors.load(Ordering::Relaxed),
            server_errors_in_row: self.server_errors.load(Ordering::Relaxed),
        }
    }

    /// A connect succeeded: the gateway-error streak is over.
    pub(crate) fn connected(&self) {
        if self.gateway_errors.load(Ordering::Relaxed) != 0 {
            self.gateway_errors.store(0, Ordering::Relaxed);
        }
    }
}

/// One host's health as the admin shows it (`/clusters`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct HostHealthReport {
    /// Whether requests may go to the host now.
    pub available: bool,
    /// Active checks took it out.
    pub failing_active_checks: bool,
    /// Outlier detection ejected it for this much longer (0: not ejected).
    pub ejected_ms_left: u64,
    /// Ejections so far in its current streak.
    pub ejections: u32,
    pub check_passes_in_row: u32,
    pub check_failures_in_row: u32,
    pub gateway_errors_in_row: u32,
    pub server_errors_in_row: u32,
}

/// A cluster's active checks, compiled.
#[derive(Debug, Clone)]
pub struct CheckSpec {
    pub kind: CheckKind,
    pub interval: Duration,
    pub jitter: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    pub path: String,
    pub expected_statuses: Vec<u16>,
    pub service: String,
    /// `http` over h2c (the cluster speaks HTTP/2).
    pub h2: bool,
    /// The checks' verdicts mark hosts (off for the implicit check of a
    /// sharded Redis cluster, which only feeds its shard map).
    pub marks_hosts: bool,
}

impl CheckSpec {
    /// The `health_check` of cluster `c`; for a sharded Redis cluster without
    /// one, its `PING` check (every `redis.health_check_interval`, feeding
    /// the shard map only).
    pub fn of(c: &config::Cluster) -> Option<Self> {
        if let Some(h) = &c.health_check {
            let interval = h.interval.value.get();
            return Some(Self {
                kind: h.kind_for(c),
                interval,
                jitter: h.jitter.map_or(interval / 10, |j| j.get()),
                timeout: h.timeout.value.get(),
                healthy_threshold: h.healthy_threshold.value.max(1),
                unhealthy_threshold: h.unhealthy_threshold.value.max(1),
                path: h.path.value.clone(),
                expected_statuses: h.expected_statuses.value.clone(),
                service: h.service.clone(),
                h2: c.http_protocol() == Some(UpstreamProtocol::Http2),
                marks_hosts: true,
            });
        }
        let r = c.redis.as_ref()?;
        r.sharding.as_ref()?;
        Some(Self {
            kind: CheckKind::Redis,
            interval: r.health_check_interval.get(),
            jitter: Duration::ZERO,
            timeout: c.connect_timeout.get(),
            healthy_threshold: 1,
            unhealthy_threshold: 1,
            path: String::new(),
            expected_statuses: Vec::new(),
            service: String::new(),
            h2: false,
            marks_hosts: false,
        })
    }

    fn next_delay(&self) -> Duration {
        if self.jitter.is_zero() {
            return self.interval;
        }
        self.interval + self.jitter.mul_f64(rand::random::<f64>())
    }
}

/// A cluster's outlier detection, compiled.
#[derive(Debug, Clone)]
pub struct Outlier {
    pub consecutive_gateway_errors: u32,
    pub consecutive_server_errors: u32,
    pub base_ejection_time: Duration,
    pub max_ejection_time: Duration,
    pub max_ejection_percent: u32,
}

impl Outlier {
    pub fn of(c: &config::Cluster) -> Option<Self> {
        let o = c.outlier_detection.as_ref()?;
        Some(Self {
            consecutive_gateway_errors: o.consecutive_gateway_errors,
            consecutive_server_errors: o.consecutive_server_errors,
            base_ejection_time: o.base_ejection_time.value.get(),
            max_ejection_time: o.max_ejection_time.value.get(),
            max_ejection_percent: o.max_ejection_percent.value,
        })
    }

    /// How long the `nth` ejection (from 1) lasts: `base × nth`, capped.
    pub fn ejection_time(&self, nth: u32) -> Duration {
        self.base_ejection_time
            .saturating_mul(nth.max(1))
            .min(self.max_ejection_time)
    }

    /// How many of `hosts` may be ejected at once: `max_ejection_percent`
    /// of them, rounded down, but at least one unless the percentage is 0.
    pub fn max_ejected(&self, hosts: usize) -> usize {
        if self.max_ejection_percent == 0 {
            return 0;
        }
        let share = hosts.saturating_mul(self.max_ejection_percent as usize) / 100;
        share.max(1).min(hosts)
    }
}

/// A cluster's health state beyond its hosts'.
#[derive(Debug, Default)]
pub struct ClusterHealth {
    pub check: Option<Arc<CheckSpec>>,
    pub outlier: Option<Outlier>,
    /// Hosts marked unhealthy plus hosts ejected (one host may count twice):
    /// 0 means every host is available, the fast path of every pick.
    marks: AtomicUsize,
    /// Hosts ejected now.
    ejected: AtomicUsize,
}

impl ClusterHealth {
    pub fn new(c: &config::Cluster) -> Self {
        Self {
            check: CheckSpec::of(c).map(Arc::new),
            outlier: Outlier::of(c),
            marks: AtomicUsize::new(0),
            ejected: AtomicUsize::new(0),
        }
    }

    /// Whether some host may be unavailable (one atomic load).
    pub fn any_marked(&self) -> bool {
        self.marks.load(Ordering::Relaxed) != 0
    }
}

impl Cluster {
    /// Whether host `i` may take requests; ends its ejection (logging the
    /// return) when the ejection's time has passed.
    pub fn host_available(&self, i: usize) -> bool {
        let Some(host) = self.hosts.get(i) else {
            return false;
        };
        let h = &host.health;
        let until = h.ejected_until.load(Ordering::Relaxed);
        if until != 0 {
            let now = now_ms();
            if now < until {
                return false;
            }
            if h.ejected_until
                .compare_exchange(until, 0, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                h.returned_at.store(now, Ordering::Relaxed);
                self.health.ejected.fetch_sub(1, Ordering::Relaxed);
                self.health.marks.fetch_sub(1, Ordering::Relaxed);
                h.update_gauge();
                tracing::info!(cluster = %self.name, host = %host.address, "upstream host's ejection is over: it takes requests again");
            }
        }
        !h.unhealthy.load(Ordering::Relaxed)
    }

    /// Whether any host is available (when none is, picks use them all).
    pub(crate) fn any_available(&self) -> bool {
        (0..self.hosts.len()).any(|i| self.host_available(i))
    }

    /// Count one request's outcome on host `i` (lock-free); enough failures
    /// in a row eject the host (see `outlier_detection`). A no-op on a
    /// cluster without outlier detection.
    pub fn record(&self, i: usize, outcome: Outcome) {
        let Some(o) = &self.health.outlier else {
            return;
        };
        let Some(host) = self.hosts.get(i) else {
            return;
        };
        let h = &host.health;
        let (streak, threshold) = match outcome {
            Outcome::Success => {
                h.connected();
                if h.server_errors.load(Ordering::Relaxed) != 0 {
                    h.server_errors.store(0, Ordering::Relaxed);
                }
                return;
            }
            Outcome::GatewayError => (&h.gateway_errors, o.consecutive_gateway_errors),
            Outcome::ServerError => (&h.server_errors, o.consecutive_server_errors),
        };
        if threshold == 0 || streak.fetch_add(1, Ordering::Relaxed) + 1 < threshold {
            return;
        }
        self.eject(i, o, outcome);
    }

    fn eject(&self, i: usize, o: &Outlier, why: Outcome) {
        let Some(host) = self.hosts.get(i) else {
            return;
        };
        let h = &host.health;
        let max = o.max_ejected(self.hosts.len());
        let ejected = &self.health.ejected;
        if ejected
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .is_err()
        {
            // At the limit: the host stays, its streak goes on counting.
            return;
        }
        let now = now_ms();
        // A host back for longer than the longest ejection starts over.
        let returned = h.returned_at.load(Ordering::Relaxed);
        if returned != 0
            && now.saturating_sub(returned) > millis(o.max_ejection_time)
            && h.ejected_until.load(Ordering::Relaxed) == 0
        {
            h.ejections.store(0, Ordering::Relaxed);
        }
        let nth = h.ejections.load(Ordering::Relaxed).saturating_add(1);
        let time = o.ejection_time(nth);
        let until = now.saturating_add(millis(time)).max(1);
        if h.ejected_until
            .compare_exchange(0, until, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            // Already ejected (or its ejection ended but no pick noticed yet).
            ejected.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        h.ejections.store(nth, Ordering::Relaxed);
        h.gateway_errors.store(0, Ordering::Relaxed);
        h.server_errors.store(0, Ordering::Relaxed);
        self.health.marks.fetch_add(1, Ordering::Relaxed);
        h.ejections_total.increment(1);
        h.update_gauge();
        let reason = match why {
            Outcome::ServerError => "server errors",
            _ => "gateway errors",
        };
        tracing::warn!(
            cluster = %self.name,
            host = %host.address,
            ejection = nth,
            seconds = time.as_secs_f64(),
            "upstream host ejected after {reason} in a row"
        );
    }

    /// Record one active check of host `i`; flips its health at the thresholds.
    fn checked(&self, i: usize, passed: bool, spec: &CheckSpec) {
        if let Some(s) = self.shards()
            && s.record(i, passed)
        {
            let address = self.hosts.get(i).map(|h| h.address.to_string());
            metrics::gauge!(
                "switchyard_redis_shard_ejected",
                "cluster" => self.name.clone(),
                "host" => address.unwrap_or_default()
            )
            .set(if passed { 0.0 } else { 1.0 });
        }
        if !spec.marks_hosts {
            return;
        }
        let Some(host) = self.hosts.get(i) else {
            return;
        };
        let h = &host.health;
        if passed {
            h.fails.store(0, Ordering::Relaxed);
            let passes = h.passes.fetch_add(1, Ordering::Relaxed).saturating_add(1);
            if passes >= spec.healthy_threshold && h.unhealthy.swap(false, Ordering::Relaxed) {
                self.health.marks.fetch_sub(1, Ordering::Relaxed);
                h.update_gauge();
                tracing::info!(cluster = %self.name, host = %host.address, check = ?spec.kind, passes, "upstream host is healthy again");
            }
        } else {
            h.passes.store(0, Ordering::Relaxed);
            let fails = h.fails.fetch_add(1, Ordering::Relaxed).saturating_add(1);
            if fails >= spec.unhealthy_threshold && !h.unhealthy.swap(true, Ordering::Relaxed) {
                self.health.marks.fetch_add(1, Ordering::Relaxed);
                h.update_gauge();
                tracing::warn!(cluster = %self.name, host = %host.address, check = ?spec.kind, fails, "upstream host is unhealthy: it takes no requests until its checks pass");
            }
        }
    }

    /// Start checking the hosts in the background, for as long as this
    /// cluster is part of a live snapshot (the task holds it weakly).
    pub fn start_health_checks(self: &Arc<Self>) {
        let Some(spec) = self.health.check.clone() else {
            return;
        };
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(cluster) = weak.upgrade() else {
                    return;
                };
                // Every host at once: a dead one's timeout delays no other.
                let mut checks = tokio::task::JoinSet::new();
                for i in 0..cluster.hosts.len() {
                    let (cluster, spec) = (cluster.clone(), spec.clone());
                    checks.spawn(async move {
                        let check = probe(&cluster, i, &spec);
                        let passed =
                            matches!(tokio::time::timeout(spec.timeout, check).await, Ok(true));
                        (i, passed)
                    });
                }
                while let Some(done) = checks.join_next().await {
                    if let Ok((i, passed)) = done {
                        cluster.checked(i, passed, &spec);
                    }
                }
                drop(cluster);
                tokio::time::sleep(spec.next_delay()).await;
            }
        });
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A check that needs a driver's code (the MySQL login lives in the proxy
/// layer): the gateway registers it at startup.
pub type ExternalCheck = fn(Arc<Cluster>, usize) -> Pin<Box<dyn Future<Output = bool> + Send>>;

static MYSQL_CHECK: OnceLock<ExternalCheck> = OnceLock::new();

/// Register the MySQL check (login with the cluster's credentials, `COM_PING`).
pub fn register_mysql_check(check: ExternalCheck) {
    let _ = MYSQL_CHECK.set(check);
}

/// One check of host `i` (the caller bounds it with the check's timeout).
async fn probe(cluster: &Arc<Cluster>, i: usize, spec: &CheckSpec) -> bool {
    let Some(addr) = cluster.hosts.get(i).map(|h| h.address) else {
        return false;
    };
    if spec.kind == CheckKind::Mysql {
        return match MYSQL_CHECK.get() {
            Some(check) => check(cluster.clone(), i).await,
            None => false,
        };
    }
    // Over the cluster's TLS when it has some: a host whose certificate
    // does not verify fails its checks.
    let mut stream = match cluster.open(addr, "").await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(cluster = %cluster.name, host = %addr, error = %e, "health check cannot connect");
            return false;
        }
    };
    let authority = addr.to_string();
    let result = match spec.kind {
        CheckKind::Tcp => Some(()),
        CheckKind::Http if spec.h2 => h2_status(stream, &authority, spec, false).await,
        CheckKind::Grpc => h2_status(stream, &authority, spec, true).await,
        CheckKind::Http => http1(&mut stream, &authority, spec).await,
        CheckKind::Redis => {
            let login = cluster.redis.as_ref().map_or(&[][..], |r| &r.login[..]);
            redis(&mut stream, login).await
        }
        CheckKind::Mqtt => mqtt(&mut stream).await,
        CheckKind::Dubbo => dubbo(&mut stream).await,
        CheckKind::Bolt => bolt(&mut stream).await,
        CheckKind::Rtsp => rtsp(&mut stream, &authority).await,
        CheckKind::Mysql => None,
    };
    result.is_some()
}

/// Read into `buf` until `done(buf)` says what it found (at most 64 KiB).
async fn read_until<T>(
    stream: &mut UpstreamStream,
    buf: &mut BytesMut,
    mut done: impl FnMut(&mut BytesMut) -> Option<Option<T>>,
) -> Option<T> {
    loop {
        if let Some(found) = done(buf) {
            return found;
        }
        if buf.len() > 64 * 1024 || stream.read_buf(buf).await.ok()? == 0 {
            return None;
        }
    }
}

/// The status of a `HTTP/1.x NNN` or `RTSP/1.0 NNN` status line, once its
/// line is complete: `Some(None)` for a malformed one.
fn status_line(buf: &[u8]) -> Option<Option<u16>> {
    let end = buf.windows(2).position(|w| w == b"\r\n")?;
    let line = buf.get(..end)?;
    let mut parts = line.split(|b| *b == b' ');
    let version = parts.next()?;
    if !version.starts_with(b"HTTP/") && !version.starts_with(b"RTSP/") {
        return Some(None);
    }
    let code = parts
        .next()
        .and_then(|c| std::str::from_utf8(c).ok()?.parse().ok());
    Some(code)
}

async fn http1(stream: &mut UpstreamStream, authority: &str, spec: &CheckSpec) -> Option<()> {
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: switchyard-health-check\r\nConnection: close\r\n\r\n",
        spec.path
    );
    stream.write_all(req.as_bytes()).await.ok()?;
    let mut buf = BytesMut::with_capacity(1024);
    let status = read_until(stream, &mut buf, |b| status_line(b)).await?;
    spec.expected_statuses.contains(&status).then_some(())
}

async fn rtsp(stream: &mut UpstreamStream, authority: &str) -> Option<()> {
    let req = format!(
        "OPTIONS rtsp://{authority}/ RTSP/1.0\r\nCSeq: 1\r\nUser-Agent: switchyard-health-check\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await.ok()?;
    let mut buf = BytesMut::with_capacity(1024);
    let status = read_until(stream, &mut buf, |b| status_line(b)).await?;
    (200..300).contains(&status).then_some(())
}

/// HTTP/2 with prior knowledge: `GET path` (healthy on an expected status)
/// or, for gRPC, `grpc.health.v1.Health/Check` (healthy when SERVING).
async fn h2_status(
    stream: UpstreamStream,
    authority: &str,
    spec: &CheckSpec,
    grpc: bool,
) -> Option<()> {
    let (client, connection) = h2::client::handshake(stream).await.ok()?;
    let work = async move {
        let mut client = client.ready().await.ok()?;
        let mut req = http::Request::builder().header("user-agent", "switchyard-health-check");
        if grpc {
            req = req
                .method("POST")
                .uri(format!("http://{authority}/grpc.health.v1.Health/Check"))
                .header("content-type", "application/grpc")
                .header("te", "trailers");
        } else {
            req = req
                .method("GET")
                .uri(format!("http://{authority}{}", spec.path));
        }
        let req = req.body(()).ok()?;
        let (resp, mut send) = client.send_request(req, !grpc).ok()?;
        if grpc {
            send.send_data(grpc_check_request(&spec.service), true)
                .ok()?;
        }
        let resp = resp.await.ok()?;
        let status = resp.status().as_u16();
        if !grpc {
            return spec.expected_statuses.contains(&status).then_some(());
        }
        if status != 200 {
            return None;
        }
        // Trailers-only: grpc-status in the headers.
        if resp.headers().contains_key("grpc-status") {
            return None;
        }
        let mut body = resp.into_body();
        let mut data = BytesMut::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.ok()?;
            let _ = body.flow_control().release_capacity(chunk.len());
            data.extend_from_slice(&chunk);
            if data.len() > 64 * 1024 {
                return None;
            }
        }
        let trailers = body.trailers().await.ok()??;
        let ok = trailers.get("grpc-status").is_some_and(|s| s == "0");
        (ok && grpc_serving(&data)).then_some(())
    };
    tokio::select! {
        r = work => r,
        _ = connection => None,
    }
}

/// A length-prefixed `HealthCheckRequest { service }`.
fn grpc_check_request(service: &str) -> Bytes {
    let mut msg = Vec::with_capacity(service.len() + 2);
    if !service.is_empty() {
        msg.push(0x0a);
        let mut len = service.len();
        while len >= 0x80 {
            msg.push((len as u8 & 0x7f) | 0x80);
            len >>= 7;
        }
        msg.push(len as u8);
        msg.extend_from_slice(service.as_bytes());
    }
    let mut out = Vec::with_capacity(msg.len() + 5);
    out.push(0);
    out.extend_from_slice(&u32::try_from(msg.len()).unwrap_or(0).to_be_bytes());
    out.extend_from_slice(&msg);
    Bytes::from(out)
}

/// Whether a length-prefixed `HealthCheckResponse` says SERVING (status 1).
fn grpc_serving(data: &[u8]) -> bool {
    let Some(msg) = data.get(5..) else {
        return false;
    };
    // Field 1 (status), varint: tag 0x08. Other fields are skipped.
    let mut at = 0;
    while let Some(&tag) = msg.get(at) {
        at += 1;
        let mut value = 0u64;
        let mut shift = 0;
        match tag & 7 {
            0 => loop {
                let Some(&b) = msg.get(at) else { return false };
                at += 1;
                value |= u64::from(b & 0x7f) << shift.min(63);
                shift += 7;
                if b & 0x80 == 0 {
                    break;
                }
            },
            2 => {
                let Some(&len) = msg.get(at) else {
                    return false;
                };
                at += 1 + usize::from(len);
                continue;
            }
            _ => return false,
        }
        if tag == 0x08 {
            return value == 1;
        }
    }
    false
}

async fn redis(stream: &mut UpstreamStream, login: &[Bytes]) -> Option<()> {
    use switchyard_codecs::Decoder;
    use switchyard_codecs::redis::{ReplyDecoder, ReplyKind};
    let mut out = BytesMut::new();
    for cmd in login {
        out.extend_from_slice(cmd);
    }
    out.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
    stream.write_all(&out).await.ok()?;
    let mut decoder = ReplyDecoder::new(Default::default());
    let mut buf = BytesMut::with_capacity(256);
    for _ in 0..=login.len() {
        let reply = read_until(stream, &mut buf, |b| match decoder.decode(b) {
            Ok(Some(r)) => Some(Some(r)),
            Ok(None) => None,
            Err(_) => Some(None),
        })
        .await?;
        if reply.kind() == ReplyKind::Error {
            return None;
        }
    }
    Some(())
}

async fn mqtt(stream: &mut UpstreamStream) -> Option<()> {
    // MQTT 3.1.1 CONNECT, clean session, keep-alive 60 s.
    let id = format!("switchyard-health-{:08x}", rand::random::<u32>());
    let mut connect = vec![0x10, 0];
    connect.extend_from_slice(&[0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60]);
    connect.extend_from_slice(&u16::try_from(id.len()).ok()?.to_be_bytes());
    connect.extend_from_slice(id.as_bytes());
    let remaining = u8::try_from(connect.len() - 2).ok()?;
    *connect.get_mut(1)? = remaining;
    stream.write_all(&connect).await.ok()?;
    let mut buf = BytesMut::with_capacity(16);
    let accepted = read_until(stream, &mut buf, |b| {
        (b.len() >= 4).then(|| Some(connack_accepted(b)))
    })
    .await?;
    let _ = stream.write_all(&[0xe0, 0x00]).await;
    accepted.then_some(())
}

/// A CONNACK whose return code (byte 3) is 0, whatever its session-present flag.
fn connack_accepted(b: &[u8]) -> bool {
    matches!(b, [0x20, 0x02, _, 0x00, ..])
}

async fn dubbo(stream: &mut UpstreamStream) -> Option<()> {
    use switchyard_codecs::Decoder;
    use switchyard_codecs::dubbo;
    let id = u64::from(rand::random::<u32>());
    stream.write_all(&dubbo::heartbeat_request(id)).await.ok()?;
    let mut decoder = dubbo::Decoder::new(dubbo::Limits::default());
    let mut buf = BytesMut::with_capacity(256);
    read_until(stream, &mut buf, |b| {
        loop {
            match decoder.decode(b) {
                Ok(Some(f)) if !f.is_request() && f.request_id() == id => {
                    return Some((f.status() == Some(dubbo::status::OK)).then_some(()));
                }
                Ok(Some(_)) => {}
                Ok(None) => return None,
                Err(_) => return Some(None),
            }
        }
    })
    .await
}

async fn bolt(stream: &mut UpstreamStream) -> Option<()> {
    use switchyard_codecs::Decoder;
    use switchyard_codecs::bolt;
    let id = rand::random::<u32>() >> 1;
    stream
        .write_all(&bolt::heartbeat_request(bolt::Version::V1, id))
        .await
        .ok()?;
    let mut decoder = bolt::Decoder::new(bolt::Limits::default());
    let mut buf = BytesMut::with_capacity(256);
    read_until(stream, &mut buf, |b| {
        loop {
            match decoder.decode(b) {
                Ok(Some(f)) if !f.is_request() && f.request_id() == id => {
                    return Some((f.status() == Some(bolt::status::SUCCESS)).then_some(()));
                }
                Ok(Some(_)) => {}
                Ok(None) => return None,
                Err(_) => return Some(None),
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outlier(base: u64, max: u64, percent: u32) -> Outlier {
        Outlier {
            consecutive_gateway_errors: 5,
            consecutive_server_errors: 5,
            base_ejection_time: Duration::from_secs(base),
            max_ejection_time: Duration::from_secs(max),
            max_ejection_percent: percent,
        }
    }

    #[test]
    fn ejection_time_grows_with_each_ejection_up_to_the_cap() {
        let o = outlier(30, 100, 10);
        let times: Vec<u64> = (1..=5).map(|n| o.ejection_time(n).as_secs()).collect();
        assert_eq!(times, [30, 60, 90, 100, 100]);
        assert_eq!(o.ejection_time(0).as_secs(), 30);
        assert_eq!(o.ejection_time(u32::MAX).as_secs(), 100);
    }

    #[test]
    fn max_ejection_percent_rounds_down_but_allows_one_host() {
        assert_eq!(outlier(1, 1, 10).max_ejected(2), 1);
        assert_eq!(outlier(1, 1, 10).max_ejected(25), 2);
        assert_eq!(outlier(1, 1, 50).max_ejected(5), 2);
        assert_eq!(outlier(1, 1, 100).max_ejected(3), 3);
        assert_eq!(outlier(1, 1, 0).max_ejected(10), 0);
        assert_eq!(outlier(1, 1, 100).max_ejected(0), 0);
    }

    fn cluster(extra: &str) -> Cluster {
        let yaml =
            format!("name: c\nhosts: [\"127.0.0.1:1\", \"127.0.0.1:2\", \"127.0.0.1:3\"]\n{extra}");
        let c: config::Cluster = serde_saphyr::from_str(&yaml).unwrap();
        Cluster::new(&c)
    }

    fn firsts(c: &Cluster) -> Vec<usize> {
        (0..6).filter_map(|_| c.pick().next()).collect()
    }

    #[test]
    fn server_errors_in_a_row_eject_within_max_ejection_percent() {
        let c = cluster(
            "outlier_detection: {consecutive_server_errors: 2, consecutive_gateway_errors: 3, max_ejection_percent: 50, base_ejection_time: 60s}\n",
        );
        assert_eq!(firsts(&c), [0, 1, 2, 0, 1, 2]);
        // A success in between breaks the streak.
        c.record(0, Outcome::ServerError);
        c.record(0, Outcome::Success);
        c.record(0, Outcome::ServerError);
        assert!(c.hosts[0].available());
        c.record(0, Outcome::ServerError);
        assert!(!c.hosts[0].available());
        assert_eq!(firsts(&c), [1, 1, 2, 1, 1, 2]);
        assert_eq!(c.pick().collect::<Vec<_>>().len(), 2);
        // 50% of 3 hosts is one host: the next stays in.
        for _ in 0..3 {
            c.record(1, Outcome::GatewayError);
        }
        assert!(c.hosts[1].available());
        // The ejection ends (its time put in the past): host 0 is back.
        c.hosts[0].health.ejected_until.store(1, Ordering::Relaxed);
        assert_eq!(c.pick().count(), 3);
        assert!(c.hosts[0].available());
        // Now host 1's next error in the streak ejects it, for 1 × base.
        c.record(1, Outcome::GatewayError);
        assert!(!c.hosts[1].available());
        assert_eq!(c.health.ejected.load(Ordering::Relaxed), 1);
        // Host 0 again: its second ejection is refused while host 1 is out.
        c.record(0, Outcome::ServerError);
        c.record(0, Outcome::ServerError);
        assert!(c.hosts[0].available());
        assert_eq!(c.hosts[0].health.ejections.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn unhealthy_hosts_leave_picks_and_all_unhealthy_means_all_used() {
        let c = cluster(
            "failover: false\nhealth_check: {kind: tcp, unhealthy_threshold: 2, healthy_threshold: 2}\n",
        );
        let spec = c.health.check.clone().unwrap();
        c.checked(1, false, &spec);
        assert!(c.hosts[1].available(), "one failure of two");
        c.checked(1, false, &spec);
        assert!(!c.hosts[1].available());
        // Without failover, one host per pick, never the unhealthy one.
        assert_eq!(firsts(&c), [0, 2, 2, 0, 2, 2]);
        assert!(c.pick().all(|i| i != 1));
        c.checked(0, false, &spec);
        c.checked(0, false, &spec);
        c.checked(2, false, &spec);
        c.checked(2, false, &spec);
        // Panic mode: every host is used again.
        let mut all = firsts(&c);
        all.sort_unstable();
        assert_eq!(all, [0, 0, 1, 1, 2, 2]);
        c.checked(2, true, &spec);
        assert!(!c.hosts[2].available(), "one pass of two");
        c.checked(2, true, &spec);
        assert!(c.hosts[2].available());
        assert_eq!(firsts(&c), [2, 2, 2, 2, 2, 2]);
    }

    #[test]
    fn without_outlier_detection_record_ejects_nothing() {
        let c = cluster("");
        for _ in 0..100 {
            c.record(0, Outcome::ServerError);
            c.record(0, Outcome::GatewayError);
        }
        assert!(c.hosts[0].available());
        assert!(!c.health.any_marked());
    }

    #[test]
    fn status_lines_of_http_and_rtsp() {
        assert_eq!(
            status_line(b"HTTP/1.1 503 Service Unavailable\r\n"),
            Some(Some(503))
        );
        assert_eq!(
            status_line(b"RTSP/1.0 200 OK\r\nCSeq: 1\r\n"),
            Some(Some(200))
        );
        assert_eq!(status_line(b"HTTP/1.1 200 OK"), None);
        assert_eq!(status_line(b"SSH-2.0-OpenSSH\r\n"), Some(None));
        assert_eq!(status_line(b"HTTP/1.1 abc\r\n"), Some(None));
    }

    #[test]
    fn grpc_health_messages() {
        assert_eq!(&grpc_check_request("")[..], &[0, 0, 0, 0, 0]);
        assert_eq!(
            &grpc_check_request("a.B")[..],
            &[0, 0, 0, 0, 5, 0x0a, 3, b'a', b'.', b'B']
        );
        assert!(grpc_serving(&[0, 0, 0, 0, 2, 0x08, 1]));
        assert!(!grpc_serving(&[0, 0, 0, 0, 2, 0x08, 2]));
        assert!(!grpc_serving(&[0, 0, 0, 0, 0]));
        assert!(!grpc_serving(&[0, 0]));
        assert!(!grpc_serving(&[0, 0, 0, 0, 2, 0x08]));
    }

    #[test]
    fn connack_return_codes() {
        assert!(connack_accepted(&[0x20, 0x02, 0x01, 0x00]));
        assert!(!connack_accepted(&[0x20, 0x02, 0x00, 0x05]));
        assert!(!connack_accepted(&[0x30, 0x02, 0x00, 0x00]));
    }
}
