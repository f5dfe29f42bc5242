//! The seam every protocol driver shares: one protocol-neutral view of a
//! request ([`Request`]), the ordered filters it goes through
//! ([`FilterChain`]: the listener's, then its route's), and what they
//! decide: go on (holding a [`Permit`] until the answer is back), go on
//! after a delay, or be answered locally with a [`Refusal`] that each
//! driver words in its own protocol (HTTP 403/429/503, gRPC status, Redis
//! `-ERR`, Dubbo/Bolt status, MQTT reason code, MySQL ERR, RTSP status).
//!
//! A `headers` filter refuses nothing: it hands the permit its edits,
//! which each driver applies as it writes the request and the response.
//! An `ext_authz` filter's check is awaited where the chain reaches it
//! ([`admit`]); the filters after it run once it allowed the request.
//!
//! Filters are immutable config plus atomics (a keyed rate limit adds a
//! sharded table); a chain without filters costs one branch per request.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use metrics::Counter;
use switchyard_codecs::{Field, Metadata, Protocol};

use super::ext_authz::ExtAuthz;
use super::headers::HeaderRules;
use super::rate::{KeyedBuckets, SharedBucket};
use crate::config::filters::{self as cfg, Cidr, RateKey, RateOverLimit, RateUnit};
use crate::observe::access_log::Record;

/// What the filters see of one request, whatever its protocol.
pub struct Request<'a> {
    pub protocol: Protocol,
    /// Routing metadata (method, host, path, command, service, client id, ...).
    pub meta: &'a (dyn Metadata + Sync),
    /// The client's address.
    pub client: IpAddr,
    /// The body or payload size the request declares, when it has one.
    pub size: Option<u64>,
    /// The connection's addresses and TLS identity (for `ext_authz`).
    pub endpoints: Option<Endpoints<'a>>,
}

/// Where a request came from and went to.
#[derive(Clone, Copy)]
pub struct Endpoints<'a> {
    /// The client's address and port.
    pub source: SocketAddr,
    /// The address it connected to (a PROXY header's, else the local socket's).
    pub destination: Option<SocketAddr>,
    /// The client's TLS identity, on TLS listeners.
    pub tls: Option<&'a TlsPeer>,
}

/// A TLS client as the handshake named it: what an external authorization
/// check reports as the source's identity.
#[derive(Debug, Clone, Default)]
pub struct TlsPeer {
    /// The server name the client asked for (SNI).
    pub sni: Option<String>,
    /// The client certificate's subject common name.
    pub principal: Option<String>,
    /// The client certificate (DER).
    pub certificate: Option<Vec<u8>>,
}

/// A request answered by the gateway instead of its upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The refusal as an HTTP status; other protocols answer the equivalent
    /// of its class ([`Refusal::class`]).
    pub status: u16,
    /// A gRPC status chosen in config (else derived from `status`).
    pub grpc_status: Option<u32>,
    pub message: Arc<str>,
    /// Close the client's connection after the answer (session protocols;
    /// multiplexed ones refuse just the one request).
    pub close: bool,
    /// An authorization service judged this request and said no (not the
    /// client's address, a limit or a fault): protocols with a distinct
    /// "access denied" answer use it (MySQL 1045 at login, 1142 after).
    pub denied_by_policy: bool,
}

/// What kind of refusal, for protocols without HTTP statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalClass {
    /// 401/403: not allowed.
    Forbidden,
    /// 413: payload too large.
    TooLarge,
    /// 429: over a rate limit.
    TooMany,
    /// 503 and other 5xx: busy or unavailable.
    Unavailable,
    /// 504/408: timed out.
    Timeout,
    /// Anything else (4xx): a bad request.
    Rejected,
}

impl Refusal {
    pub fn new(status: u16, message: &str) -> Self {
        Self {
            status,
            grpc_status: None,
            message: message.into(),
            close: false,
            denied_by_policy: false,
        }
    }

    /// The same refusal, as an authorization service's denial.
    pub fn by_policy(mut self) -> Self {
        self.denied_by_policy = true;
        self
    }

    /// The same refusal, with the client's connection closed after it.
    pub fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    /// The gateway is overloaded (overload manager, circuit breaker).
    pub fn busy() -> Self {
        Self::new(503, "gateway overloaded, try again later")
    }

    pub fn class(&self) -> RefusalClass {
        match self.status {
            401 | 403 => RefusalClass::Forbidden,
            413 => RefusalClass::TooLarge,
            429 => RefusalClass::TooMany,
            408 | 504 => RefusalClass::Timeout,
            500..=599 => RefusalClass::Unavailable,
            _ => RefusalClass::Rejected,
        }
    }

    /// The gRPC status: the configured one, else the class's
    /// (PERMISSION_DENIED, RESOURCE_EXHAUSTED, UNAVAILABLE, DEADLINE_EXCEEDED,
    /// INTERNAL for other 5xx, INVALID_ARGUMENT for other 4xx).
    pub fn grpc_status(&self) -> u32 {
        self.grpc_status
            .unwrap_or(match (self.class(), self.status) {
                (RefusalClass::Forbidden, 401) => 16,
                (RefusalClass::Forbidden, _) => 7,
                (RefusalClass::TooLarge | RefusalClass::TooMany, _) => 8,
                (RefusalClass::Timeout, _) => 4,
                (RefusalClass::Unavailable, 503 | 502) => 14,
                (RefusalClass::Unavailable, _) => 13,
                (RefusalClass::Rejected, _) => 3,
            })
    }

    /// The HTTP reason phrase of the status (for protocols that carry one).
    pub fn reason(&self) -> &'static str {
        http_reason(self.status)
    }
}

/// The reason phrase of the HTTP/RTSP statuses the gateway answers with.
pub fn http_reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

/// Held while a request is in flight (until its answer is back, or it is
/// dropped): releases its place under every limit it entered (concurrency
/// filters, a cluster's circuit breaker). The first two places are kept
/// inline, so the common case allocates nothing. It also carries a `mirror`
/// filter's decision: the cluster a copy of the request goes to.
#[derive(Default)]
#[must_use = "the request counts as in flight only while its permit is held"]
pub struct Permit {
    inline: [Option<Arc<InFlight>>; 2],
    more: Vec<Arc<InFlight>>,
    mirror: Option<Arc<str>>,
    /// The rules of the `headers` filters the request passed, in order
    /// (empty, unallocated, without such a filter).
    headers: Vec<Arc<HeaderRules>>,
    /// The request's access log record (listeners with `access_log`),
    /// sent to the writer when the permit is dropped.
    log: Option<Box<Record>>,
}

impl Permit {
    /// The header edits the driver applies to the request going upstream
    /// and to its response ([`crate::filters::headers`]).
    pub fn headers(&self) -> &[Arc<HeaderRules>] {
        &self.headers
    }

    /// Whether it holds nothing to release when the answer is back (no
    /// limit on the way, no access log record).
    pub fn is_empty(&self) -> bool {
        self.inline[0].is_none() && self.log.is_none()
    }

    /// Attach the request's access log record.
    pub fn set_log(&mut self, record: Box<Record>) {
        self.log = Some(record);
    }

    /// The request's access log record, for the driver to fill in what it
    /// knows (status, upstream host, bytes); `None` without an access log.
    pub fn log(&mut self) -> Option<&mut Record> {
        self.log.as_deref_mut()
    }

    /// Log the answer's status (no-op without an access log).
    pub fn log_status(&mut self, status: u16) {
        if let Some(r) = &mut self.log {
            r.status = Some(status.into());
        }
    }

    /// Log the upstream host the request went to.
    pub fn log_upstream(&mut self, host: std::net::SocketAddr) {
        if let Some(r) = &mut self.log {
            r.upstream = Some(host);
            if let Some(t) = r.trace() {
                t.attempt_host(host);
            }
        }
    }

    /// Start an upstream attempt of a traced request (to `host` when
    /// chosen): the `traceparent` to send upstream (an incoming
    /// `tracestate` goes on as it came). `None` (one branch) without
    /// tracing.
    pub fn trace_attempt(&mut self, host: Option<std::net::SocketAddr>) -> Option<String> {
        Some(self.log.as_deref_mut()?.trace()?.attempt(host))
    }

    /// Log a local refusal answered with `status` (breakers, no route).
    pub fn log_refused(&mut self, status: u16) {
        if let Some(r) = &mut self.log {
            r.refused(status);
        }
    }

    /// Log an upstream failure answered with `status`.
    pub fn log_upstream_failed(&mut self, status: u16) {
        if let Some(r) = &mut self.log {
            r.upstream_failed(status);
        }
    }

    /// The cluster a `mirror` filter chose to copy this request to, taken
    /// out of the permit (the last mirror filter on the way wins).
    pub fn take_mirror(&mut self) -> Option<Arc<str>> {
        self.mirror.take()
    }

    fn hold(&mut self, place: Arc<InFlight>) {
        match self.inline.iter_mut().find(|p| p.is_none()) {
            Some(slot) => *slot = Some(place),
            None => self.more.push(place),
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        for f in self.inline.iter().flatten().chain(&self.more) {
            f.count.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(record) = self.log.take() {
            record.emit();
        }
    }
}

struct InFlight {
    count: AtomicUsize,
}

/// At most `max` requests in flight at once, counted by the permits that
/// entered it: a concurrency filter's count, or a cluster's circuit breaker.
#[derive(Clone)]
pub struct Limit {
    max: usize,
    now: Arc<InFlight>,
}

impl Limit {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            now: Arc::new(InFlight {
                count: AtomicUsize::new(0),
            }),
        }
    }

    /// Take a place for `permit`'s request (released when the permit is
    /// dropped); `false` when all `max` are taken.
    pub fn enter(&self, permit: &mut Permit) -> bool {
        let before = self.now.count.fetch_add(1, Ordering::Relaxed);
        if before >= self.max {
            self.now.count.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        permit.hold(self.now.clone());
        true
    }

    /// The most requests it lets in at once.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.now.count.load(Ordering::Relaxed)
    }
}

/// One compiled filter and its verdict counters.
struct Filter {
    kind: Kind,
    pass: Counter,
    refused: Counter,
    delayed: Counter,
}

enum Kind {
    IpAccess {
        allow: Vec<Cidr>,
        deny: Vec<Cidr>,
    },
    Rate {
        limit: RateLimiter,
        over: RateOverLimit,
        max_delay: Duration,
        unit: RateUnit,
        only: Option<Matcher>,
    },
    Concurrency(Limit),
    Fault {
        delay: Option<(f64, Duration)>,
        abort: Option<(f64, Refusal)>,
        only: Option<Matcher>,
    },
    Payload {
        max: u64,
    },
    Mirror {
        cluster: Arc<str>,
        percent: f64,
    },
    Headers(Arc<HeaderRules>),
    /// Awaited by [`admit`], not checked in [`Kind::check`].
    ExtAuthz(Arc<ExtAuthz>),
}

/// A filter's `match:`, compiled.
struct Matcher {
    protocol: Option<Protocol>,
    field: Option<(Field, Option<Vec<u8>>)>,
}

impl Matcher {
    fn new(m: &cfg::RequestMatch) -> Self {
        Self {
            protocol: m.protocol.map(|p| p.0),
            field: m
                .field
                .as_ref()
                .map(|f| (f.0.clone(), m.value.as_ref().map(|v| v.as_bytes().to_vec()))),
        }
    }

    fn matches(&self, req: &Request) -> bool {
        if self.protocol.is_some_and(|p| p != req.protocol) {
            return false;
        }
        match &self.field {
            None => true,
            Some((field, want)) => match (req.meta.get(field), want) {
                (None, _) => false,
                (Some(_), None) => true,
                (Some(v), Some(want)) => v == want.as_slice(),
            },
        }
    }
}

enum RateLimiter {
    One(SharedBucket),
    BySource(KeyedBuckets),
    ByField(Field, KeyedBuckets),
}

/// What one filter decided.
enum Step {
    Pass,
    Delay(Duration),
    Refuse(Refusal),
}

/// An ordered list of compiled filters.
#[derive(Default)]
pub struct FilterChain {
    filters: Vec<Filter>,
}

impl FilterChain {
    /// Compile `filters`; `scope` (e.g. `listener:edge`, `route:api`) labels their metrics.
    pub fn new(filters: &[serde_saphyr::Spanned<cfg::Filter>], scope: &str) -> Self {
        let filters = filters
            .iter()
            .map(|f| {
                let f = &f.value;
                let name = f.kind();
                let counter = |verdict: &'static str| {
                    metrics::counter!(
                        "switchyard_filter_verdicts_total",
                        "filter" => name,
                        "scope" => scope.to_owned(),
                        "verdict" => verdict
                    )
                };
                Filter {
                    kind: Kind::new(f, scope),
                    pass: counter("pass"),
                    refused: counter("refuse"),
                    delayed: counter("delay"),
                }
            })
            .collect();
        Self { filters }
    }

    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }

    /// Run `req` through the filters in order from the `from`th, adding to
    /// `delay` and `permit`: `Ok(None)` when all passed, `Ok(Some(i))` at
    /// filter `i`, an external check to await ([`FilterChain::ask`]) before
    /// going on from `i + 1`.
    fn run(
        &self,
        req: &Request,
        from: usize,
        delay: &mut Duration,
        permit: &mut Permit,
    ) -> Result<Option<usize>, Refusal> {
        for (i, f) in self.filters.iter().enumerate().skip(from) {
            if matches!(f.kind, Kind::ExtAuthz(_)) {
                return Ok(Some(i));
            }
            match f.kind.check(req, permit) {
                Step::Pass => f.pass.increment(1),
                Step::Delay(d) => {
                    f.delayed.increment(1);
                    *delay += d;
                }
                Step::Refuse(r) => {
                    f.refused.increment(1);
                    return Err(r);
                }
            }
        }
        Ok(None)
    }

    /// Await filter `i`'s external check of `req`.
    async fn ask(&self, i: usize, req: &Request<'_>, permit: &mut Permit) -> Result<(), Refusal> {
        let Some(f) = self.filters.get(i) else {
            return Ok(());
        };
        let Kind::ExtAuthz(authz) = &f.kind else {
            return Ok(());
        };
        match authz.check(req).await {
            Ok(edits) => {
                f.pass.increment(1);
                permit.headers.extend(edits);
                Ok(())
            }
            Err(r) => {
                f.refused.increment(1);
                Err(r)
            }
        }
    }
}

/// Run `req` through `chains` in order (the listener's, then the route's):
/// `Ok` with the permit to hold while it is in flight (after any delay the
/// filters asked for), or the refusal to answer it with. Every driver
/// awaits this one future: an `ext_authz` check and a delay wait here,
/// per request on multiplexed connections, in order on ordered ones.
pub async fn admit(
    chains: [Option<&FilterChain>; 2],
    req: &Request<'_>,
) -> Result<Permit, Refusal> {
    let mut permit = Permit::default();
    let mut delay = Duration::ZERO;
    for chain in chains.into_iter().flatten() {
        let mut from = 0;
        while let Some(i) = chain.run(req, from, &mut delay, &mut permit)? {
            chain.ask(i, req, &mut permit).await?;
            from = i + 1;
        }
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    Ok(permit)
}

fn chance(percent: f64) -> bool {
    percent >= 100.0 || (percent > 0.0 && rand::random_range(0.0..100.0) < percent)
}

impl Kind {
    fn new(f: &cfg::Filter, scope: &str) -> Self {
        match f {
            cfg::Filter::IpAccess(a) => Kind::IpAccess {
                allow: a.allow.clone(),
                deny: a.deny.clone(),
            },
            cfg::Filter::RateLimit(r) => {
                let keyed = || KeyedBuckets::new(r.rate, r.burst(), r.max_keys);
                Kind::Rate {
                    limit: match &r.key {
                        RateKey::All => RateLimiter::One(SharedBucket::new(r.rate, r.burst())),
                        RateKey::SourceIp => RateLimiter::BySource(keyed()),
                        RateKey::Field(f) => RateLimiter::ByField(f.clone(), keyed()),
                    },
                    over: r.over_limit,
                    max_delay: r.max_delay.get(),
                    unit: r.unit,
                    only: r.matcher.as_ref().map(Matcher::new),
                }
            }
            cfg::Filter::ConcurrencyLimit(c) => Kind::Concurrency(Limit::new(c.max)),
            cfg::Filter::Fault(f) => Kind::Fault {
                delay: f.delay.as_ref().map(|d| (d.percent, d.duration.get())),
                abort: f.abort.as_ref().map(|a| {
                    (
                        a.percent,
                        Refusal {
                            status: a.status,
                            grpc_status: a.grpc_status,
                            message: a.message.as_str().into(),
                            close: false,
                            denied_by_policy: false,
                        },
                    )
                }),
                only: f.matcher.as_ref().map(Matcher::new),
            },
            cfg::Filter::PayloadLimit(p) => Kind::Payload { max: p.max_bytes },
            cfg::Filter::Mirror(m) => Kind::Mirror {
                cluster: m.cluster.as_str().into(),
                percent: m.percent,
            },
            cfg::Filter::Headers(h) => Kind::Headers(HeaderRules::new(h)),
            cfg::Filter::ExtAuthz(a) => Kind::ExtAuthz(ExtAuthz::new(a, scope)),
        }
    }

    fn check(&self, req: &Request, permit: &mut Permit) -> Step {
        match self {
            Kind::IpAccess { allow, deny } => {
                let ip = req.client;
                let denied = deny.iter().any(|c| c.contains(ip))
                    || (!allow.is_empty() && !allow.iter().any(|c| c.contains(ip)));
                if denied {
                    Step::Refuse(Refusal::new(403, "access denied"))
                } else {
                    Step::Pass
                }
            }
            Kind::Rate {
                limit,
                over,
                max_delay,
                unit,
                only,
            } => {
                if only.as_ref().is_some_and(|m| !m.matches(req)) {
                    return Step::Pass;
                }
                let tokens = match unit {
                    RateUnit::Requests => 1.0,
                    RateUnit::Bytes => match req.size {
                        Some(0) | None => return Step::Pass,
                        Some(n) => n as f64,
                    },
                };
                let max = match over {
                    RateOverLimit::Refuse | RateOverLimit::Close => Duration::ZERO,
                    RateOverLimit::Delay => *max_delay,
                };
                let wait = match limit {
                    RateLimiter::One(b) => b.take_within(tokens, max),
                    RateLimiter::BySource(k) => match req.client {
                        IpAddr::V4(v4) => k.take_within(&v4.octets(), tokens, max),
                        IpAddr::V6(v6) => k.take_within(&v6.octets(), tokens, max),
                    },
                    RateLimiter::ByField(f, k) => {
                        k.take_within(req.meta.get(f).unwrap_or(b""), tokens, max)
                    }
                };
                match wait {
                    Some(d) if d.is_zero() => Step::Pass,
                    Some(d) => Step::Delay(d),
                    None if *over == RateOverLimit::Close => {
                        Step::Refuse(Refusal::new(429, "rate limited").closing())
                    }
                    None => Step::Refuse(Refusal::new(429, "rate limited")),
                }
            }
            Kind::Concurrency(limit) => {
                if limit.enter(permit) {
                    Step::Pass
                } else {
                    Step::Refuse(Refusal::new(503, "too many requests in flight"))
                }
            }
            Kind::Fault { delay, abort, only } => {
                if only.as_ref().is_some_and(|m| !m.matches(req)) {
                    return Step::Pass;
                }
                if let Some((percent, refusal)) = abort
                    && chance(*percent)
                {
                    return Step::Refuse(refusal.clone());
                }
                match delay {
                    Some((percent, d)) if chance(*percent) => Step::Delay(*d),
                    _ => Step::Pass,
                }
            }
            Kind::Payload { max } => match req.size {
                Some(size) if size > *max => Step::Refuse(Refusal::new(413, "payload too large")),
                _ => Step::Pass,
            },
            Kind::Mirror { cluster, percent } => {
                if chance(*percent) {
                    permit.mirror = Some(cluster.clone());
                }
                Step::Pass
            }
            Kind::Headers(rules) => {
                permit.headers.push(rules.clone());
                Step::Pass
            }
            Kind::ExtAuthz(_) => Step::Pass,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Meta(HashMap<Field, &'static str>);
    impl Metadata for Meta {
        fn get(&self, field: &Field) -> Option<&[u8]> {
            self.0.get(field).map(|s| s.as_bytes())
        }
    }

    fn chain(yaml: &str) -> FilterChain {
        #[derive(serde::Deserialize)]
        struct W {
            filters: Vec<serde_saphyr::Spanned<cfg::Filter>>,
        }
        let w: W = serde_saphyr::from_str(yaml).unwrap();
        FilterChain::new(&w.filters, "test")
    }

    fn req<'a>(meta: &'a Meta, client: &str, size: Option<u64>) -> Request<'a> {
        Request {
            protocol: Protocol::Http1,
            meta,
            client: client.parse().unwrap(),
            size,
            endpoints: None,
        }
    }

    async fn verdict(c: &FilterChain, r: &Request<'_>) -> Result<Permit, Refusal> {
        admit([Some(c), None], r).await
    }

    #[tokio::test]
    async fn ip_access_denies_and_allows() {
        let c = chain("filters: [{ip_access: {allow: [10.0.0.0/8], deny: [10.0.0.5]}}]");
        let m = Meta(HashMap::new());
        assert!(verdict(&c, &req(&m, "10.1.2.3", None)).await.is_ok());
        let denied = verdict(&c, &req(&m, "10.0.0.5", None)).await.err().unwrap();
        assert_eq!(denied.status, 403);
        assert_eq!(denied.class(), RefusalClass::Forbidden);
        assert!(verdict(&c, &req(&m, "192.168.0.1", None)).await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limit_per_field_keeps_clients_apart() {
        let c = chain("filters: [{rate_limit: {rate: 1, burst: 2, key: client_id}}]");
        let a = Meta([(Field::ClientId, "a")].into_iter().collect());
        let b = Meta([(Field::ClientId, "b")].into_iter().collect());
        let mut passed_a = 0;
        for _ in 0..5 {
            passed_a += usize::from(verdict(&c, &req(&a, "127.0.0.1", None)).await.is_ok());
        }
        assert_eq!(passed_a, 2, "the burst, then refused");
        let refused = verdict(&c, &req(&a, "127.0.0.1", None))
            .await
            .err()
            .unwrap();
        assert_eq!((refused.status, refused.grpc_status()), (429, 8));
        assert!(
            verdict(&c, &req(&b, "127.0.0.1", None)).await.is_ok(),
            "b has its own bucket"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limit_delays_within_max_delay_then_refuses() {
        let c = chain(
            "filters: [{rate_limit: {rate: 10, burst: 1, over_limit: delay, max_delay: 250ms}}]",
        );
        let m = Meta(HashMap::new());
        let start = tokio::time::Instant::now();
        let mut ok = 0;
        for _ in 0..4 {
            ok += usize::from(verdict(&c, &req(&m, "127.0.0.1", None)).await.is_ok());
        }
        assert_eq!(ok, 4, "one at once, three held about 100 ms each");
        assert!(
            start.elapsed() >= Duration::from_millis(290),
            "{:?}",
            start.elapsed()
        );
        // Taking a token 100 ms ahead each time, the queue grows past 250 ms:
        // reserve three more at once (no time passes between them).
        let c = chain(
            "filters: [{rate_limit: {rate: 10, burst: 1, over_limit: delay, max_delay: 250ms}}]",
        );
        let r = req(&m, "127.0.0.1", None);
        let mut delay = Duration::ZERO;
        let mut permit = Permit::default();
        let mut outcomes = Vec::new();
        for _ in 0..5 {
            outcomes.push(c.run(&r, 0, &mut delay, &mut permit).is_ok());
        }
        assert_eq!(outcomes, [true, true, true, false, false]);
    }

    #[tokio::test]
    async fn concurrency_limit_counts_held_permits() {
        let c = chain("filters: [{concurrency_limit: {max: 2}}]");
        let m = Meta(HashMap::new());
        let r = req(&m, "127.0.0.1", None);
        let p1 = verdict(&c, &r).await.unwrap();
        let p2 = verdict(&c, &r).await.unwrap();
        let refused = verdict(&c, &r).await.err().unwrap();
        assert_eq!(refused.status, 503);
        drop(p1);
        let p3 = verdict(&c, &r).await.unwrap();
        drop((p2, p3));
        assert!(verdict(&c, &r).await.is_ok());
    }

    #[tokio::test]
    async fn fault_aborts_about_its_share_and_only_when_matched() {
        let c = chain(
            "filters: [{fault: {abort: {percent: 30, status: 500, message: boom}, match: {field: 'header:x-fault', value: 'on'}}}]",
        );
        let on = Meta(
            [(Field::Header("x-fault".into()), "on")]
                .into_iter()
                .collect(),
        );
        let off = Meta(HashMap::new());
        let mut aborted = 0;
        for _ in 0..10_000 {
            if let Err(r) = verdict(&c, &req(&on, "127.0.0.1", None)).await {
                assert_eq!((r.status, &*r.message, r.grpc_status()), (500, "boom", 13));
                aborted += 1;
            }
        }
        assert!(
            (2_700..=3_300).contains(&aborted),
            "{aborted} of 10000 aborted"
        );
        for _ in 0..1_000 {
            assert!(verdict(&c, &req(&off, "127.0.0.1", None)).await.is_ok());
        }
    }

    #[tokio::test]
    async fn payload_limit_refuses_declared_sizes_over_it() {
        let c = chain("filters: [{payload_limit: {max_bytes: 10}}]");
        let m = Meta(HashMap::new());
        assert!(verdict(&c, &req(&m, "127.0.0.1", Some(10))).await.is_ok());
        assert!(verdict(&c, &req(&m, "127.0.0.1", None)).await.is_ok());
        let r = verdict(&c, &req(&m, "127.0.0.1", Some(11)))
            .await
            .err()
            .unwrap();
        assert_eq!((r.status, r.class()), (413, RefusalClass::TooLarge));
    }

    #[tokio::test]
    async fn mirror_marks_about_its_share_of_permits() {
        let c = chain("filters: [{mirror: {cluster: shadow, percent: 25}}]");
        let m = Meta(HashMap::new());
        let mut marked = 0;
        for _ in 0..10_000 {
            let mut p = verdict(&c, &req(&m, "127.0.0.1", None)).await.unwrap();
            assert!(p.is_empty(), "a mirror holds no place");
            if let Some(cluster) = p.take_mirror() {
                assert_eq!(&*cluster, "shadow");
                marked += 1;
            }
        }
        assert!((2_200..=2_800).contains(&marked), "{marked} of 10000");
        let all = chain("filters: [{mirror: {cluster: shadow}}]");
        let mut p = verdict(&all, &req(&m, "127.0.0.1", None)).await.unwrap();
        assert!(p.take_mirror().is_some(), "percent defaults to 100");
        assert!(p.take_mirror().is_none(), "taken once");
    }

    #[tokio::test]
    async fn listener_filters_run_before_route_filters() {
        let listener = chain("filters: [{ip_access: {deny: [127.0.0.1]}}]");
        let route = chain("filters: [{concurrency_limit: {max: 1}}]");
        let m = Meta(HashMap::new());
        let r = req(&m, "127.0.0.1", None);
        assert_eq!(
            admit([Some(&listener), Some(&route)], &r)
                .await
                .err()
                .unwrap()
                .status,
            403
        );
        // The refused request took no place under the route's limit.
        let r2 = req(&m, "127.0.0.2", None);
        let held = admit([Some(&listener), Some(&route)], &r2).await.unwrap();
        assert!(admit([Some(&listener), Some(&route)], &r2).await.is_err());
        drop(held);
    }
}
