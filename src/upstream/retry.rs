//! Retries, written once for every driver: which failure a route's policy
//! retries, whether the request may be re-sent, the backoff before a retry,
//! and the cluster's `max_retries` circuit breaker. Drivers only report what
//! failed ([`Failure`]) and ask [`Retries::again`].
//!
//! The rules (Envoy's): a connect failure is always retriable (nothing was
//! sent); once bytes may have reached a host, only a request the policy
//! deems idempotent is re-sent; never after any byte of the response reached
//! the client (the drivers hold the response head until they decided).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use metrics::Counter;

use super::Cluster;
use crate::config::{self, RetryOn};
use crate::error::{Error, ErrorKind};

/// Request bodies up to this size are kept so the request can be re-sent;
/// a longer body was streamed and is gone, so its request is not retried
/// once sent.
pub const MAX_KEPT_BODY: usize = 64 * 1024;

/// A route's compiled `retry:` policy.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Bit `1 << (RetryOn as u8)` per failure retried.
    on: u8,
    statuses: Vec<u16>,
    pub num_retries: u32,
    /// Each try's wait for a response head (`None`: the request timeout).
    pub per_try_timeout: Option<Duration>,
    base: Duration,
    max: Duration,
    /// Every request of the route may be re-sent.
    pub idempotent: bool,
}

/// What went wrong with one try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Connecting failed or timed out: nothing was sent.
    ConnectFailure,
    /// The connection broke before a response head came.
    Reset,
    /// No response head within the try's timeout.
    Timeout,
    /// The response head's HTTP status.
    Status(u16),
    /// A gRPC status in the response head (trailers-only answer).
    Grpc(u32),
    /// A Dubbo or Bolt response with a server-error status.
    RpcServerError,
}

impl Failure {
    /// The label of `switchyard_upstream_retries_total`'s `reason`.
    pub fn name(self) -> &'static str {
        match self {
            Failure::ConnectFailure => "connect_failure",
            Failure::Reset => "reset",
            Failure::Timeout => "timeout",
            Failure::Status(_) => "status",
            Failure::Grpc(_) => "grpc_status",
            Failure::RpcServerError => "server_error",
        }
    }

    /// A failed exchange's error as a failure (`None`: the client's own).
    pub fn of_error(e: &Error) -> Option<Self> {
        match e.kind() {
            ErrorKind::ConnectFailed | ErrorKind::ConnectTimeout => Some(Failure::ConnectFailure),
            ErrorKind::UpstreamTimeout => Some(Failure::Timeout),
            ErrorKind::UpstreamClosed | ErrorKind::UpstreamProtocol => Some(Failure::Reset),
            ErrorKind::Io if e.side() == crate::error::Side::Upstream => Some(Failure::Reset),
            _ => None,
        }
    }

    /// Whether no byte of the request can have reached the host.
    fn nothing_sent(self) -> bool {
        self == Failure::ConnectFailure
    }
}

const fn bit(on: RetryOn) -> u8 {
    1 << on as u8
}

impl RetryPolicy {
    pub fn new(c: &config::RetryPolicy) -> Self {
        let base = c.backoff.base.get();
        Self {
            on: c.retry_on.iter().fold(0, |m, on| m | bit(*on)),
            statuses: c.retriable_statuses.clone(),
            num_retries: c.num_retries,
            per_try_timeout: c.per_try_timeout.map(|t| t.get()),
            base,
            max: c.backoff.max.map_or(base.saturating_mul(10), |m| m.get()),
            idempotent: c.idempotent,
        }
    }

    fn has(&self, on: RetryOn) -> bool {
        self.on & bit(on) != 0
    }

    /// Whether the policy retries `failure` (idempotency aside).
    pub fn retries_on(&self, failure: Failure) -> bool {
        let gateway = self.has(RetryOn::GatewayError);
        match failure {
            Failure::ConnectFailure => self.has(RetryOn::ConnectFailure) || gateway,
            Failure::Reset => self.has(RetryOn::Reset) || gateway,
            Failure::Timeout => self.has(RetryOn::Timeout),
            Failure::Status(s) => {
                (gateway && matches!(s, 502..=504))
                    || (self.has(RetryOn::ServerError) && (500..600).contains(&s))
                    || (self.has(RetryOn::RetriableStatus) && self.statuses.contains(&s))
            }
            Failure::Grpc(code) => self.has(RetryOn::Unavailable) && code == 14,
            Failure::RpcServerError => self.has(RetryOn::ServerError),
        }
    }

    /// Whether an HTTP request with `method` may be re-sent once it may
    /// have reached a host: GET, HEAD and OPTIONS, or any with `idempotent`.
    pub fn http_idempotent(&self, method: &[u8]) -> bool {
        self.idempotent
            || [&b"GET"[..], b"HEAD", b"OPTIONS"]
                .iter()
                .any(|m| method.eq_ignore_ascii_case(m))
    }

    /// Whether a response head with `status` could be retried at all (the
    /// drivers hold such a head back until [`Retries::again`] decides).
    pub fn may_retry_status(&self, status: u16) -> bool {
        self.retries_on(Failure::Status(status))
    }

    /// The wait before retry `n` (1-based): uniformly random in
    /// `0..min(max, base * 2^(n-1))` (exponential backoff, full jitter).
    pub fn backoff(&self, n: u32) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << n.saturating_sub(1).min(20))
            .min(self.max);
        ceiling.mul_f64(rand::random::<f64>())
    }
}

/// A cluster's `max_retries` breaker: retries in flight at once (shared
/// with the cluster's subset views).
#[derive(Clone)]
pub struct RetryBudget {
    max: Option<usize>,
    now: Arc<AtomicUsize>,
    overflows: Counter,
}

/// A retry in flight, counted until dropped.
pub struct RetryGuard {
    now: Arc<AtomicUsize>,
}

impl Drop for RetryGuard {
    fn drop(&mut self) {
        self.now.fetch_sub(1, Ordering::Relaxed);
    }
}

impl RetryBudget {
    pub fn new(cluster: &str, max: Option<usize>) -> Self {
        Self {
            max,
            now: Arc::new(AtomicUsize::new(0)),
            overflows: metrics::counter!("switchyard_upstream_overflow_total", "cluster" => cluster.to_owned(), "breaker" => "max_retries"),
        }
    }

    /// A place for one more retry; `None` (counted as an overflow) when all
    /// `max_retries` are taken.
    pub fn enter(&self) -> Option<RetryGuard> {
        let before = self.now.fetch_add(1, Ordering::Relaxed);
        if self.max.is_some_and(|max| before >= max) {
            self.now.fetch_sub(1, Ordering::Relaxed);
            self.overflows.increment(1);
            return None;
        }
        Some(RetryGuard {
            now: self.now.clone(),
        })
    }

    /// The limit (`None`: none).
    pub fn max(&self) -> Option<usize> {
        self.max
    }

    /// Retries in flight now.
    pub fn in_flight(&self) -> usize {
        self.now.load(Ordering::Relaxed)
    }
}

/// One request's retry state: how many retries were made, and the
/// breaker place of the retry in flight.
pub struct Retries<'a> {
    policy: &'a RetryPolicy,
    cluster: &'a Cluster,
    made: u32,
    /// Whether the request, once it may have reached a host, can be sent
    /// again (idempotent, and its body kept).
    resendable: bool,
    guard: Option<RetryGuard>,
}

impl<'a> Retries<'a> {
    pub fn new(policy: &'a RetryPolicy, cluster: &'a Cluster, resendable: bool) -> Self {
        Self {
            policy,
            cluster,
            made: 0,
            resendable,
            guard: None,
        }
    }

    pub fn policy(&self) -> &RetryPolicy {
        self.policy
    }

    /// Whether the policy lets this request be re-sent once it may have
    /// reached a host (drivers keep its body only then).
    pub fn resendable(&self) -> bool {
        self.resendable
    }

    /// Retries made so far.
    pub fn made(&self) -> u32 {
        self.made
    }

    /// The request can no longer be re-sent (its body was not kept).
    pub fn not_resendable(&mut self) {
        self.resendable = false;
    }

    /// Whether a retry of `failure` would be allowed now, breaker aside.
    pub fn would_retry(&self, failure: Failure) -> bool {
        self.made < self.policy.num_retries
            && (failure.nothing_sent() || self.resendable)
            && self.policy.retries_on(failure)
    }

    /// Decide to retry after `failure`: the policy retries it, retries are
    /// left, the request may be re-sent, and the cluster's `max_retries`
    /// breaker has room (the place is held until the next decision or the
    /// end of the request). Counted in `switchyard_upstream_retries_total`.
    pub fn again(&mut self, failure: Failure) -> bool {
        if !self.would_retry(failure) {
            return false;
        }
        // The previous retry is over: free its place first.
        self.guard = None;
        let Some(guard) = self.cluster.retry_budget.enter() else {
            return false;
        };
        self.guard = Some(guard);
        self.made += 1;
        metrics::counter!("switchyard_upstream_retries_total", "cluster" => self.cluster.name.clone(), "reason" => failure.name()).increment(1);
        tracing::debug!(cluster = %self.cluster.name, reason = failure.name(), retry = self.made, "retrying");
        true
    }

    /// Wait the backoff before the retry just decided.
    pub async fn backoff(&self) {
        let wait = self.policy.backoff(self.made);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(yaml: &str) -> RetryPolicy {
        let c: config::RetryPolicy = serde_saphyr::from_str(yaml).unwrap();
        RetryPolicy::new(&c)
    }

    #[test]
    fn which_failures_each_retry_on_covers() {
        let p = policy("retry_on: [retriable_status]\nretriable_statuses: [503, 429]");
        assert!(p.retries_on(Failure::Status(503)));
        assert!(p.retries_on(Failure::Status(429)));
        assert!(!p.retries_on(Failure::Status(502)));
        assert!(!p.retries_on(Failure::ConnectFailure));
        let g = policy("retry_on: [gateway_error]");
        for f in [
            Failure::Status(502),
            Failure::Status(503),
            Failure::Status(504),
            Failure::ConnectFailure,
            Failure::Reset,
        ] {
            assert!(g.retries_on(f), "{f:?}");
        }
        assert!(!g.retries_on(Failure::Status(500)));
        assert!(!g.retries_on(Failure::Timeout));
        assert!(!g.retries_on(Failure::Grpc(14)));
        let s = policy("retry_on: [server_error, unavailable, timeout]");
        assert!(s.retries_on(Failure::Status(500)));
        assert!(!s.retries_on(Failure::Status(404)));
        assert!(s.retries_on(Failure::RpcServerError));
        assert!(s.retries_on(Failure::Grpc(14)));
        assert!(!s.retries_on(Failure::Grpc(13)));
        assert!(s.retries_on(Failure::Timeout));
        assert!(!s.retries_on(Failure::Reset));
    }

    #[test]
    fn http_idempotency_by_method_or_route() {
        let p = policy("retry_on: [reset]");
        assert!(p.http_idempotent(b"GET"));
        assert!(p.http_idempotent(b"head"));
        assert!(p.http_idempotent(b"OPTIONS"));
        assert!(!p.http_idempotent(b"POST"));
        assert!(!p.http_idempotent(b"PUT"));
        let all = policy("retry_on: [reset]\nidempotent: true");
        assert!(all.http_idempotent(b"POST"));
    }

    #[test]
    fn backoff_is_exponential_with_full_jitter_and_capped() {
        let p = policy("retry_on: [reset]\nbackoff: {base: 10ms, max: 35ms}");
        for _ in 0..200 {
            assert!(p.backoff(1) < Duration::from_millis(10));
            assert!(p.backoff(2) < Duration::from_millis(20));
            assert!(p.backoff(3) <= Duration::from_millis(35));
            assert!(p.backoff(30) <= Duration::from_millis(35));
        }
        // Jitter: not always the same wait.
        let waits: std::collections::HashSet<_> = (0..50).map(|_| p.backoff(3)).collect();
        assert!(waits.len() > 1);
        let d = policy("retry_on: [reset]");
        assert_eq!(d.max, Duration::from_millis(250));
        assert_eq!(d.num_retries, 1);
    }

    #[test]
    fn budget_counts_retries_in_flight() {
        let b = RetryBudget::new("c", Some(1));
        let g = b.enter();
        assert!(g.is_some());
        assert!(b.enter().is_none());
        assert_eq!(b.in_flight(), 1);
        drop(g);
        assert_eq!(b.in_flight(), 0);
        assert!(b.enter().is_some());
        let none = RetryBudget::new("c", Some(0));
        assert!(none.enter().is_none());
        let unlimited = RetryBudget::new("c", None);
        let held: Vec<_> = (0..100).filter_map(|_| unlimited.enter()).collect();
        assert_eq!(held.len(), 100);
    }

    fn cluster(breakers: &str) -> Cluster {
        let yaml = format!(
            "listeners: [{{name: l, address: \"127.0.0.1:1\", protocols: [http1], route_table: t}}]\n\
             route_tables: [{{name: t, virtual_hosts: [{{name: a, domains: [\"*\"], routes: [{{cluster: c}}]}}]}}]\n\
             clusters:\n  - name: c\n    hosts: [\"127.0.0.1:7000\", \"127.0.0.1:7001\"]\n{breakers}"
        );
        let config = crate::config::load_str(&yaml, "t.yaml").unwrap();
        Cluster::new(&config.clusters[0])
    }

    #[test]
    fn retries_obey_count_idempotency_and_breaker() {
        let c = cluster("    circuit_breakers: {max_retries: 1}\n");
        let p = policy("retry_on: [gateway_error]\nnum_retries: 2");
        // Not resendable: only a connect failure is retried.
        let mut r = Retries::new(&p, &c, false);
        assert!(!r.again(Failure::Reset));
        assert!(!r.again(Failure::Status(503)));
        assert!(r.again(Failure::ConnectFailure));
        assert!(
            r.again(Failure::ConnectFailure),
            "its own place is freed first"
        );
        assert!(!r.again(Failure::ConnectFailure), "num_retries spent");
        assert_eq!(r.made(), 2);
        // Another request's retry finds the breaker full while r holds it.
        let mut other = Retries::new(&p, &c, true);
        assert!(!other.again(Failure::Reset));
        drop(r);
        assert!(other.again(Failure::Reset));
        // A view shares the breaker.
        let view = c.subset(&[0]);
        let mut third = Retries::new(&p, &view, true);
        assert!(!third.again(Failure::Reset));
    }
}
