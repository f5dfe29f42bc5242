//! A cluster: hosts, a balancer, a pool and the timeouts of connecting to them.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use metrics::Counter;
use tokio::net::TcpStream;

use switchyard_codecs::{Field, Metadata};

use super::conn::{ConnLimit, UpstreamConn, UpstreamStream};
use super::maglev::{Maglev, MaglevWalk};
use super::ring::RingWalk;
use super::{Balancer, Pool, Ring};
use crate::config::{self, HashOn, LbPolicy};
use crate::error::{Error, ErrorKind};

/// One upstream host. Shared (`Arc`) by its cluster and the cluster's subset
/// views, so requests in flight and slow start count once per host.
#[derive(Debug)]
pub struct Host {
    pub address: SocketAddr,
    pub weight: u32,
    /// Last connect attempt failed; used to log only changes of reachability.
    down: AtomicBool,
    /// Active check and outlier state.
    pub health: super::health::HostHealth,
    /// Requests in flight to this host (see [`Cluster::begin`]).
    active: AtomicU32,
    /// When the host last became reachable again or was added, in ms since
    /// [`epoch`] (+1, so 0 means "not warming up").
    recovered_at: AtomicU64,
}

/// The process's clock origin for slow start.
fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl Host {
    fn new(address: SocketAddr, weight: u32, cluster: &str) -> Self {
        Self {
            health: super::health::HostHealth::new(cluster, &address.to_string()),
            address,
            weight,
            down: AtomicBool::new(false),
            active: AtomicU32::new(0),
            recovered_at: AtomicU64::new(0),
        }
    }

    /// Whether requests may go to this host: its health checks pass and
    /// outlier detection has not ejected it.
    pub fn available(&self) -> bool {
        self.health.available()
    }

    /// Requests in flight to this host.
    pub fn active(&self) -> u32 {
        self.active.load(Ordering::Relaxed)
    }

    /// The host has become reachable again (or is new): a cluster with
    /// `slow_start` ramps its share up from now. Health checks call this too.
    pub fn mark_recovered(&self) {
        self.recovered_at.store(now_ms() + 1, Ordering::Relaxed);
    }

    /// The share of its weight the host gets now under slow start, in
    /// `min..=1.0` (1.0 when not warming up).
    pub fn warmth(&self, slow_start: &SlowStart) -> f64 {
        let since = self.recovered_at.load(Ordering::Relaxed);
        if since == 0 {
            return 1.0;
        }
        let elapsed = now_ms().saturating_sub(since - 1);
        if elapsed >= slow_start.window_ms {
            self.recovered_at.store(0, Ordering::Relaxed);
            return 1.0;
        }
        (elapsed as f64 / slow_start.window_ms as f64).max(slow_start.min)
    }
}

/// A cluster's compiled `slow_start`.
#[derive(Debug, Clone, Copy)]
pub struct SlowStart {
    window_ms: u64,
    /// The least share a warming host gets (0.0..=1.0).
    min: f64,
}

impl SlowStart {
    pub fn new(window: Duration, min_weight_percent: u32) -> Self {
        Self {
            window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1),
            min: f64::from(min_weight_percent.min(100)) / 100.0,
        }
    }
}

/// A cluster as the admin shows it (`/clusters`).
#[derive(Debug, serde::Serialize)]
pub struct ClusterReport {
    pub name: String,
    pub lb: config::LbPolicy,
    pub active_health_checks: bool,
    pub outlier_detection: bool,
    /// The `max_requests` circuit breaker and the requests it counts now.
    pub max_requests: Option<usize>,
    pub requests_in_flight: Option<usize>,
    /// The `max_retries` circuit breaker and the retries in flight now.
    pub max_retries: Option<usize>,
    pub retries_in_flight: usize,
    /// The `max_connections` circuit breaker and the connections open now
    /// (in use, idle and shared).
    pub max_connections: Option<usize>,
    pub connections_open: Option<usize>,
    /// The `max_pending` circuit breaker and the requests waiting for a
    /// connection now.
    pub max_pending: Option<usize>,
    pub requests_pending: Option<usize>,
    pub hosts: Vec<HostReport>,
}

/// One host of a [`ClusterReport`].
#[derive(Debug, serde::Serialize)]
pub struct HostReport {
    pub address: String,
    pub weight: u32,
    pub labels: std::collections::BTreeMap<String, String>,
    /// Requests in flight to the host (what `least_request` compares).
    pub requests_in_flight: u32,
    pub health: super::health::HostHealthReport,
}

/// A request in flight to a host: counted while this lives (see
/// [`Cluster::begin`]); `least_request` sends new requests elsewhere.
#[must_use = "the request counts as in flight only while the guard lives"]
pub struct InFlight {
    host: Option<Arc<Host>>,
    /// The cluster's request count and latency, recorded when it drops.
    stats: Arc<crate::observe::ClusterMetrics>,
    started: Instant,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(h) = &self.host {
            h.active.fetch_sub(1, Ordering::Relaxed);
        }
        self.stats.observe(1, self.started.elapsed());
    }
}

/// A request with no fields (a whole TCP connection).
struct NoFields;

impl Metadata for NoFields {
    fn get(&self, _: &Field) -> Option<&[u8]> {
        None
    }
}

/// How a hashing cluster maps a key to its hosts.
enum Hashing {
    Ring(Ring),
    Maglev(Maglev),
}

/// What a hashing cluster hashes: a request field, or the client's address.
enum HashKey {
    Field(Field),
    SourceIp,
}

/// A cluster's Redis settings, compiled.
pub struct RedisBackend {
    /// `AUTH` / `SELECT` sent first on every new connection (their replies dropped).
    pub login: Vec<bytes::Bytes>,
    /// Keys sharded over the hosts (`None`: every host holds every key).
    pub shards: Option<super::Shards>,
    /// Replicas of each host (by host index), when reads go to replicas.
    pub replicas: Vec<Vec<SocketAddr>>,
    /// Whether read-only commands go to replicas (some host lists one).
    pub reads_to_replicas: bool,
    /// Spreads sessions over a host's replicas.
    next_replica: std::sync::atomic::AtomicUsize,
    /// Upstream connections per host shared by stateless sessions (unsharded
    /// clusters; `0`: none).
    pub shared_connections: usize,
}

impl RedisBackend {
    fn new(r: &config::redis::ClusterRedis, c: &config::Cluster, hosts: &[Arc<Host>]) -> Self {
        use switchyard_codecs::WireHead;
        use switchyard_codecs::redis::Command;
        let mut login = Vec::new();
        if let Some(password) = &r.password {
            let cmd = match &r.username {
                Some(user) => Command::from_args(["AUTH", user, password]),
                None => Command::from_args(["AUTH", password]),
            };
            login.push(cmd.wire().clone());
        }
        if r.database != 0 {
            login.push(
                Command::from_args(["SELECT", &r.database.to_string()])
                    .wire()
                    .clone(),
            );
        }
        let shards = super::Shards::new(
            r,
            hosts.iter().map(|h| h.address.to_string()).collect(),
            hosts.iter().map(|h| h.weight).collect(),
        );
        let replicas = if r.read_from.value == config::redis::ReadFrom::Replica {
            c.hosts
                .iter()
                .map(|h| {
                    h.value
                        .replicas()
                        .iter()
                        .filter_map(|a| a.parse().ok())
                        .collect()
                })
                .collect()
        } else {
            Vec::new()
        };
        Self {
            login,
            shards,
            reads_to_replicas: replicas.iter().any(|r: &Vec<SocketAddr>| !r.is_empty()),
            replicas,
            next_replica: std::sync::atomic::AtomicUsize::new(0),
            shared_connections: r.shared_connections.value as usize,
        }
    }
}

/// A compiled cluster, shared by every connection of a config snapshot.
pub struct Cluster {
    pub name: String,
    pub hosts: Vec<Arc<Host>>,
    pub balancer: Balancer,
    /// With `lb: ring_hash` or `maglev`: the table and the field hashed.
    hashing: Option<(Hashing, HashKey)>,
    /// Ramp recovered and new hosts up over a window.
    slow_start: Option<SlowStart>,
    /// The config this cluster was compiled from (subset views are compiled
    /// from it with fewer hosts).
    source: config::Cluster,
    /// Try the next host when the chosen one cannot be reached.
    failover: bool,
    pub pool: Pool,
    /// Shared multiplexed (HTTP/2) connections, per host.
    pub mux: super::MuxPool,
    /// The HTTP version the hosts speak (`None`: the request's own).
    pub protocol: Option<config::UpstreamProtocol>,
    /// TLS to the hosts (`None`: plain TCP), built once per snapshot.
    tls: Option<Arc<super::tls::ClientTls>>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// Redis: backend login and, for sharded clusters, the shard map.
    pub redis: Option<RedisBackend>,
    /// memcached: the pool's ketama shard map (`None`: hosts are copies).
    pub memcached: Option<super::Shards>,
    connect_failures: Counter,
    connects: Counter,
    /// Requests sent to the cluster and their latency (shared with subset views).
    pub stats: Arc<crate::observe::ClusterMetrics>,
    /// MySQL backend credentials and limits (clusters MySQL sessions use).
    pub mysql: Option<config::MysqlBackend>,
    /// Health checks and outlier detection (shared with subset views).
    pub health: Arc<super::health::ClusterHealth>,
    /// The `max_requests` circuit breaker (`None`: no limit; shared with
    /// subset views).
    breaker: Option<crate::filters::chain::Limit>,
    /// Requests refused by the breaker.
    overflows: Counter,
    /// The `max_retries` circuit breaker (shared with subset views).
    pub retry_budget: super::retry::RetryBudget,
    /// The `max_connections` and `max_pending` circuit breakers (`None`: no
    /// limit; shared with subset views).
    conn_limit: Option<Arc<ConnLimit>>,
    /// Most idle connections kept per host, and how long they may idle.
    pub max_idle_per_host: usize,
    pub idle_timeout: Duration,
    /// Connections shared by every client, per (protocol, host): the
    /// multiplexed protocols' upstream connections (type-erased, so this
    /// layer stays protocol-neutral). Locked only to look up or store handles.
    pub shared: std::sync::Mutex<
        std::collections::HashMap<
            (switchyard_codecs::Protocol, usize),
            Box<dyn std::any::Any + Send + Sync>,
        >,
    >,
    /// `SO_MARK` of every connection to the hosts (`clusters[].mark`).
    mark: Option<u32>,
    /// `type: original_dst`: the views of this cluster, one per original
    /// destination seen (`None`: a static cluster, or such a view).
    pub(super) original_dst: Option<super::original_dst::Destinations>,
    /// The request header an HTTP request may name its destination in.
    original_dst_header: Option<Field>,
}

impl Cluster {
    /// Compile a validated cluster config.
    pub fn new(c: &config::Cluster) -> Self {
        let hosts: Vec<Arc<Host>> = c
            .hosts
            .iter()
            .filter_map(|h| {
                Some(Arc::new(Host::new(
                    h.value.address().parse().ok()?,
                    h.value.weight(),
                    &c.name.value,
                )))
            })
            .collect();
        let conn_limit = c
            .circuit_breakers
            .as_ref()
            .and_then(|b| Some((b.max_connections?, b.max_pending)))
            .map(|(max, pending)| Arc::new(ConnLimit::new(&c.name.value, max, pending)));
        let mut cluster = Self::with_hosts(c, hosts, conn_limit);
        if c.kind == config::ClusterKind::OriginalDst {
            cluster.original_dst = Some(super::original_dst::Destinations::default());
        }
        cluster
    }

    /// The cluster a connection to `destination` uses: for a `type:
    /// original_dst` cluster, its view whose one host is `destination` (made
    /// on first use, kept while used, so pools are per destination; `None`
    /// destination: the cluster itself, which has no hosts, so the request
    /// fails as for an empty cluster); any other cluster is itself.
    pub fn for_destination(self: &Arc<Self>, destination: Option<SocketAddr>) -> Arc<Cluster> {
        match (&self.original_dst, destination) {
            (Some(views), Some(d)) => views.get_or_make(d, self.idle_timeout, || {
                let mut c = self.source.clone();
                c.hosts = Vec::new();
                let host = Arc::new(Host::new(d, 1, &self.name));
                let mut view = Self::with_hosts(&c, vec![host], self.conn_limit.clone());
                // One health state, breaker and series for the cluster and its views.
                view.health = self.health.clone();
                view.breaker = self.breaker.clone();
                view.retry_budget = self.retry_budget.clone();
                view.stats = self.stats.clone();
                view
            }),
            _ => self.clone(),
        }
    }

    /// As [`Cluster::for_destination`], for an HTTP request `req`: with
    /// `original_dst_header`, the `IP:port` that header names when it
    /// carries a valid one, else the connection's `destination`.
    pub fn for_request(
        self: &Arc<Self>,
        destination: Option<SocketAddr>,
        req: &dyn Metadata,
    ) -> Arc<Cluster> {
        let named = self
            .original_dst_header
            .as_ref()
            .and_then(|h| req.get(h))
            .and_then(|v| {
                std::str::from_utf8(v)
                    .ok()?
                    .trim()
                    .parse::<SocketAddr>()
                    .ok()
            });
        self.for_destination(named.or(destination))
    }

    /// How many original destinations a `type: original_dst` cluster keeps
    /// a view (and its pooled connections) for now.
    pub fn destinations(&self) -> usize {
        self.original_dst.as_ref().map_or(0, |d| d.len())
    }

    /// A view of this cluster over the hosts `indices` (a subset of a
    /// route): its own balancer and pools, the same [`Host`]s (so requests
    /// in flight, reachability and slow start are shared).
    pub fn subset(&self, indices: &[usize]) -> Self {
        let mut c = self.source.clone();
        c.hosts = indices
            .iter()
            .filter_map(|i| self.source.hosts.get(*i).cloned())
            .collect();
        let hosts = indices
            .iter()
            .filter_map(|i| self.hosts.get(*i).cloned())
            .collect();
        let mut view = Self::with_hosts(&c, hosts, self.conn_limit.clone());
        // One health state and one breaker for the cluster and its views.
        view.health = self.health.clone();
        view.breaker = self.breaker.clone();
        view.retry_budget = self.retry_budget.clone();
        view.stats = self.stats.clone();
        view.tls = self.tls.clone();
        view
    }

    /// This cluster speaking TLS to its hosts with `tls` (its `tls` block, compiled).
    pub fn with_tls(mut self, tls: Option<super::tls::ClientTls>) -> Self {
        self.tls = tls.map(Arc::new);
        self
    }

    /// Whether connections to the hosts are TLS.
    pub fn speaks_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Indices of the hosts whose config carries every label of `selector`.
    pub fn hosts_labelled(
        &self,
        selector: &std::collections::BTreeMap<String, String>,
    ) -> Vec<usize> {
        (0..self.hosts.len())
            .filter(|i| {
                self.source
                    .hosts
                    .get(*i)
                    .is_some_and(|h| h.value.has_labels(selector))
            })
            .collect()
    }

    /// The distinct values of host label `label` (sorted).
    pub fn label_values(&self, label: &str) -> Vec<String> {
        let mut values: Vec<String> = self
            .source
            .hosts
            .iter()
            .filter_map(|h| h.value.labels()?.get(label).cloned())
            .collect();
        values.sort_unstable();
        values.dedup();
        values
    }

    fn with_hosts(
        c: &config::Cluster,
        hosts: Vec<Arc<Host>>,
        conn_limit: Option<Arc<ConnLimit>>,
    ) -> Self {
        let weights: Vec<u32> = hosts.iter().map(|h| h.weight).collect();
        let name = c.name.value.clone();
        let field = match c.hash_on {
            HashOn::ClientId => HashKey::Field(Field::ClientId),
            HashOn::User => HashKey::Field(Field::User),
            HashOn::Key => HashKey::Field(Field::Key),
            HashOn::Host => HashKey::Field(Field::Host),
            HashOn::Path => HashKey::Field(Field::Path),
            HashOn::SourceIp => HashKey::SourceIp,
        };
        let names = || -> Vec<String> { hosts.iter().map(|h| h.address.to_string()).collect() };
        let hashing = match c.lb {
            LbPolicy::RingHash => Some((Hashing::Ring(Ring::new(&names(), &weights)), field)),
            LbPolicy::Maglev => Some((Hashing::Maglev(Maglev::new(&names(), &weights)), field)),
            _ => None,
        };
        let redis = c.redis.as_ref().map(|r| RedisBackend::new(r, c, &hosts));
        let memcached = c
            .memcached
            .as_ref()
            .map(|m| super::Shards::memcached(m, names(), weights.clone()));
        Self {
            redis,
            memcached,
            balancer: Balancer::new(c.lb, &weights),
            hashing,
            slow_start: c
                .slow_start
                .map(|s| SlowStart::new(s.window.get(), s.min_weight_percent)),
            source: c.clone(),
            failover: c.failover,
            pool: Pool::new(hosts.len(), c.max_idle_per_host, c.idle_timeout.get())
                .with_limit(conn_limit.clone()),
            conn_limit,
            mux: super::MuxPool::new(hosts.len()),
            protocol: c.http_protocol(),
            tls: None,
            hosts,
            connect_timeout: c.connect_timeout.get(),
            request_timeout: c.request_timeout.get(),
            connect_failures: metrics::counter!("switchyard_upstream_connect_failures_total", "cluster" => name.clone()),
            shared: std::sync::Mutex::new(std::collections::HashMap::new()),
            connects: metrics::counter!("switchyard_upstream_connections_total", "cluster" => name.clone()),
            stats: Arc::new(crate::observe::ClusterMetrics::new(&name)),
            mysql: c.mysql.clone(),
            health: Arc::new(super::health::ClusterHealth::new(c)),
            breaker: c
                .circuit_breakers
                .as_ref()
                .and_then(|b| b.max_requests)
                .map(crate::filters::chain::Limit::new),
            retry_budget: super::retry::RetryBudget::new(
                &name,
                c.circuit_breakers.as_ref().and_then(|b| b.max_retries),
            ),
            overflows: metrics::counter!("switchyard_upstream_overflow_total", "cluster" => name.clone(), "breaker" => "max_requests"),
            max_idle_per_host: c.max_idle_per_host,
            idle_timeout: c.idle_timeout.get(),
            mark: c.mark.as_ref().map(|m| m.value),
            original_dst: None,
            original_dst_header: c
                .original_dst_header
                .as_ref()
                .map(|h| Field::Header(h.value.to_ascii_lowercase())),
            name,
        }
    }

    /// What the admin's `/clusters` shows of this cluster now.
    pub fn report(&self) -> ClusterReport {
        let hosts = self
            .hosts
            .iter()
            .enumerate()
            .map(|(i, h)| HostReport {
                address: h.address.to_string(),
                weight: h.weight,
                labels: self
                    .source
                    .hosts
                    .get(i)
                    .and_then(|c| c.value.labels().cloned())
                    .unwrap_or_default(),
                requests_in_flight: h.active(),
                health: h.health.report(),
            })
            .collect();
        ClusterReport {
            name: self.name.clone(),
            lb: self.source.lb,
            active_health_checks: self.health.check.is_some(),
            outlier_detection: self.health.outlier.is_some(),
            max_requests: self.breaker.as_ref().map(|b| b.max()),
            requests_in_flight: self.breaker.as_ref().map(|b| b.in_flight()),
            max_retries: self.retry_budget.max(),
            retries_in_flight: self.retry_budget.in_flight(),
            max_connections: self.conn_limit.as_ref().map(|l| l.max()),
            connections_open: self.conn_limit.as_ref().map(|l| l.open()),
            max_pending: self.conn_limit.as_ref().and_then(|l| l.max_pending()),
            requests_pending: self.conn_limit.as_ref().map(|l| l.pending()),
            hosts,
        }
    }

    /// Count one request in flight to this cluster under `permit` (released
    /// with it): the refusal to answer instead when the `max_requests`
    /// circuit breaker is full.
    pub fn enter(
        &self,
        permit: &mut crate::filters::chain::Permit,
    ) -> Result<(), crate::filters::chain::Refusal> {
        match &self.breaker {
            Some(b) if !b.enter(permit) => {
                self.overflows.increment(1);
                Err(crate::filters::chain::Refusal::new(
                    503,
                    &format!(
                        "cluster {} is at its max_requests circuit breaker",
                        self.name
                    ),
                ))
            }
            _ => Ok(()),
        }
    }

    /// The host a retry after host `tried` goes to: the next available one
    /// in turn (without a new balancer pick), else `tried` itself.
    pub fn next_after(&self, tried: usize) -> usize {
        let n = self.hosts.len();
        (1..n)
            .map(|k| (tried + k) % n)
            .find(|h| self.host_available(*h))
            .unwrap_or(tried)
    }

    /// Whether a failed connect falls back to the next host (`failover`).
    pub fn fails_over(&self) -> bool {
        self.failover
    }

    /// The host order to try for one request: the balancer's pick first, then
    /// the others in turn (so a failed connect can fall back for free). Every
    /// host appears at most once.
    pub fn pick(&self) -> HostOrder<'_> {
        self.pick_from(self.failover)
    }

    fn pick_from(&self, all: bool) -> HostOrder<'_> {
        let n = self.hosts.len();
        let first = self.first().unwrap_or(0);
        let take = if all { n } else { n.min(1) };
        HostOrder {
            walk: Walk::Turns {
                first,
                n,
                k: 0,
                take,
            },
            skip_unavailable: self.skip_unavailable(),
        }
    }

    /// Picks skip unavailable hosts: `Some(self)` while some host is
    /// marked and another is available (none available: use them all).
    fn skip_unavailable(&self) -> Option<&Self> {
        (self.health.any_marked() && self.any_available()).then_some(self)
    }

    /// The balancer's pick, with slow start: a warming host's pick stands
    /// with probability `warmth` (else the balancer picks again, a few times).
    fn first(&self) -> Option<usize> {
        let active = |i: usize| self.hosts.get(i).map_or(0, |h| h.active());
        let mut pick = self.balancer.pick_with(active)?;
        if let Some(slow) = &self.slow_start {
            for _ in 0..8 {
                let warmth = self.hosts.get(pick).map_or(1.0, |h| h.warmth(slow));
                if warmth >= 1.0 || rand::random::<f64>() < warmth {
                    break;
                }
                pick = self.balancer.pick_with(active)?;
            }
        }
        Some(pick)
    }

    /// The host order for `req` from `client`: by the ring or Maglev table
    /// when the cluster hashes and the request has the field (or on the
    /// client's address, `hash_on: source_ip`): its owner first, then the
    /// next distinct hosts; else as [`Cluster::pick`]. Without `failover`,
    /// only the first host.
    pub fn hosts_for(&self, req: &dyn Metadata, client: IpAddr) -> HostOrder<'_> {
        self.order_for(req, client, self.failover)
    }

    /// As [`Cluster::hosts_for`], but every host whether or not the cluster
    /// fails over: the hosts a request's retries walk through.
    pub fn retry_order(&self, req: &dyn Metadata, client: IpAddr) -> HostOrder<'_> {
        self.order_for(req, client, true)
    }

    fn order_for(&self, req: &dyn Metadata, client: IpAddr, all: bool) -> HostOrder<'_> {
        let left = if all { usize::MAX } else { 1 };
        let Some((hashing, on)) = &self.hashing else {
            return self.pick_from(all);
        };
        let octets = match client {
            IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            IpAddr::V6(a) => a.octets(),
        };
        let key = match on {
            HashKey::Field(field) => req.get(field),
            HashKey::SourceIp => Some(&octets[..]),
        };
        let Some(key) = key else {
            return self.pick_from(all);
        };
        let walk = match hashing {
            Hashing::Ring(ring) => Walk::Ring {
                walk: ring.lookup(key),
                left,
            },
            Hashing::Maglev(m) => Walk::Maglev {
                walk: m.lookup(key),
                left,
            },
        };
        HostOrder {
            walk,
            skip_unavailable: self.skip_unavailable(),
        }
    }

    /// Count a request in flight to host `i` until the guard drops (what
    /// `least_request` balances on). Drivers call it where a request is sent;
    /// when it drops, the request counts in the cluster's `stats`.
    pub fn begin(&self, i: usize) -> InFlight {
        let host = self.hosts.get(i).cloned();
        if let Some(h) = &host {
            h.active.fetch_add(1, Ordering::Relaxed);
        }
        InFlight {
            host,
            stats: self.stats.clone(),
            started: Instant::now(),
        }
    }

    /// Carry host state over a config reload: hosts kept keep their slow
    /// start, reachability and upstream connections (idle HTTP/1.1 ones, the
    /// shared HTTP/2 one, when the cluster's `tls` is unchanged, and those in
    /// the shared registry: Redis shared connections, Dubbo/Bolt multiplexed
    /// ones, MySQL idle backends, when the cluster's backend login and `tls`
    /// are unchanged); with `slow_start`, hosts
    /// new to the cluster start warming up.
    pub fn inherit(&self, previous: Option<&Cluster>) {
        let Some(previous) = previous else { return };
        let json = |c: &config::Cluster| {
            (
                serde_json::to_value(&c.redis).ok(),
                serde_json::to_value(&c.mysql).ok(),
                c.protocol,
                serde_json::to_value(&c.tls).ok(),
            )
        };
        let same_login = json(&self.source) == json(&previous.source);
        // A connection opened under other TLS settings is not one of ours.
        let same_tls = serde_json::to_value(&self.source.tls).ok()
            == serde_json::to_value(&previous.source.tls).ok();
        let mut moved = Vec::new();
        for (j, h) in self.hosts.iter().enumerate() {
            let found = previous
                .hosts
                .iter()
                .position(|p| p.address == h.address)
                .and_then(|i| Some((i, previous.hosts.get(i)?)));
            match found {
                Some((i, p)) => {
                    if same_tls {
                        self.pool.adopt(j, &previous.pool, i);
                        self.mux.adopt(j, &previous.mux, i);
                    }
                    if same_login {
                        moved.push((i, j));
                    }
                    let at = p.recovered_at.load(Ordering::Relaxed);
                    h.recovered_at.store(at, Ordering::Relaxed);
                    h.down
                        .store(p.down.load(Ordering::Relaxed), Ordering::Relaxed);
                }
                None if self.slow_start.is_some() => h.mark_recovered(),
                None => {}
            }
        }
        // The shared connections move (type-erased, they cannot be copied):
        // sessions still on the old snapshot keep the ones they hold.
        let mut old = previous.shared.lock().unwrap_or_else(|e| e.into_inner());
        let mut new = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        let keys: Vec<_> = old.keys().copied().collect();
        for (protocol, i) in keys {
            if let Some((_, j)) = moved.iter().find(|(from, _)| *from == i)
                && let Some(entry) = old.remove(&(protocol, i))
            {
                new.insert((protocol, *j), entry);
            }
        }
    }

    /// The PROXY protocol header version sent first on each new connection
    /// (`clusters[].proxy_protocol`; `None`: none).
    pub fn proxy_protocol(&self) -> Option<config::proxy_protocol::Send> {
        self.source.proxy_protocol
    }

    /// Open a new connection to host `i`, within `connect_timeout`, under
    /// the `max_connections` circuit breaker: at the limit, an idle pooled
    /// connection is closed to make room, else the request waits (at most
    /// `connect_timeout`, unless `max_pending` requests wait already) for a
    /// connection to close. Refused with [`ErrorKind::Overflow`].
    pub async fn connect(&self, i: usize) -> Result<UpstreamConn, Error> {
        let slot = self.connection_slot().await?;
        Ok(UpstreamConn::new(self.connect_host(i).await?, slot))
    }

    /// As [`Cluster::connect`], but never waits for a slot: for one more
    /// connection beside the ones a multiplexed protocol shares already
    /// (refused with [`ErrorKind::Overflow`], uncounted, when none is free).
    pub async fn connect_if_room(&self, i: usize) -> Result<UpstreamConn, Error> {
        let slot = match &self.conn_limit {
            None => None,
            Some(limit) => match self.free_slot(limit) {
                Some(slot) => Some(slot),
                None => {
                    return Err(Error::upstream(
                        ErrorKind::Overflow,
                        format!(
                            "cluster {} is at its max_connections circuit breaker",
                            self.name
                        ),
                    ));
                }
            },
        };
        Ok(UpstreamConn::new(self.connect_host(i).await?, slot))
    }

    /// A free slot, closing idle pooled connections (of any host) for one.
    fn free_slot(&self, limit: &ConnLimit) -> Option<tokio::sync::OwnedSemaphorePermit> {
        loop {
            if let Some(slot) = limit.try_slot() {
                return Some(slot);
            }
            // An idle connection (of any host, in this view's pool or
            // another's) must not starve a request.
            if !limit.close_one_idle() {
                return None;
            }
        }
    }

    /// A slot under `max_connections` for one more connection (`None`: no limit).
    async fn connection_slot(&self) -> Result<Option<tokio::sync::OwnedSemaphorePermit>, Error> {
        let Some(limit) = &self.conn_limit else {
            return Ok(None);
        };
        if let Some(slot) = self.free_slot(limit) {
            return Ok(Some(slot));
        }
        limit
            .wait_slot(&self.name, self.connect_timeout)
            .await
            .map(Some)
    }

    /// Connect to host `i` (not counted by `max_connections`: the caller
    /// holds the slot, or the connection is only a probe).
    async fn connect_host(&self, i: usize) -> Result<UpstreamStream, Error> {
        let Some(host) = self.hosts.get(i) else {
            return Err(Error::upstream(
                ErrorKind::NoHost,
                format!("cluster {} has no hosts", self.name),
            ));
        };
        let result = tokio::time::timeout(self.connect_timeout, self.open(host.address, "")).await;
        let err = match result {
            Ok(Ok(stream)) => {
                self.connects.increment(1);
                host.health.connected();
                if host.down.swap(false, Ordering::Relaxed) {
                    tracing::info!(cluster = %self.name, host = %host.address, "upstream host is reachable again");
                    host.mark_recovered();
                }
                return Ok(stream);
            }
            Ok(Err(e)) => e,
            Err(_) => Error::upstream(
                ErrorKind::ConnectTimeout,
                format!(
                    "connecting to {} (cluster {}) took over {:?}",
                    host.address, self.name, self.connect_timeout
                ),
            ),
        };
        self.connect_failures.increment(1);
        self.record(i, super::Outcome::GatewayError);
        if !host.down.swap(true, Ordering::Relaxed) {
            tracing::warn!(cluster = %self.name, host = %host.address, error = %err, "upstream host is not reachable");
        }
        Err(err)
    }

    /// A plain TCP connection to `address`, with the cluster's `SO_MARK` when it
    /// has one (so interception rules let the gateway's own connections
    /// pass: see docs/sidecar.md).
    pub async fn open_tcp(&self, address: SocketAddr) -> std::io::Result<TcpStream> {
        let Some(mark) = self.mark else {
            return TcpStream::connect(address).await;
        };
        let socket = match address {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket2::SockRef::from(&socket).set_mark(mark)?;
        socket.connect(address).await
    }

    /// A TCP connection to `address`, then the TLS handshake when the
    /// cluster speaks TLS (the caller bounds both with `connect_timeout`).
    /// A failed handshake is a failed connect, its error says why (an
    /// unknown issuer, a name the certificate does not hold, ...).
    /// `what` names the peer in errors (`""` or `"replica "`).
    pub(crate) async fn open(
        &self,
        address: SocketAddr,
        what: &str,
    ) -> Result<UpstreamStream, Error> {
        let stream = self.open_tcp(address).await.map_err(|e| {
            Error::upstream(
                ErrorKind::ConnectFailed,
                format!("cannot connect to {what}{address} (cluster {})", self.name),
            )
            .with_source(e)
        })?;
        let _ = stream.set_nodelay(true);
        // MySQL asks for TLS inside its own handshake: its driver calls
        // `start_tls` after the server's greeting and the SSLRequest.
        if self.tls.is_none() || self.mysql.is_some() {
            return Ok(UpstreamStream::Tcp(stream));
        }
        self.handshake(stream, address, what).await
    }

    /// Start TLS on `conn` (to `address`) now: for a protocol that asks for
    /// it in-band (MySQL's SSLRequest). A no-op without `tls`.
    pub async fn start_tls(
        &self,
        conn: UpstreamConn,
        address: SocketAddr,
    ) -> Result<UpstreamConn, Error> {
        let (stream, slot) = conn.into_parts();
        let stream = match stream {
            UpstreamStream::Tcp(tcp) if self.tls.is_some() => {
                self.handshake(tcp, address, "").await?
            }
            other => other,
        };
        Ok(UpstreamConn::new(stream, slot))
    }

    async fn handshake(
        &self,
        stream: TcpStream,
        address: SocketAddr,
        what: &str,
    ) -> Result<UpstreamStream, Error> {
        let Some(tls) = &self.tls else {
            return Ok(UpstreamStream::Tcp(stream));
        };
        let name = tls.server_name(address);
        let stream = tls
            .connector
            .connect(name.clone(), stream)
            .await
            .map_err(|e| {
                Error::upstream(
                    ErrorKind::ConnectFailed,
                    format!(
                        "TLS handshake with {what}{address} (cluster {}, server name {}) failed: {e}",
                        self.name,
                        name.to_str()
                    ),
                )
            })?;
        // Offered both HTTP versions: the server's choice must be the one
        // this cluster speaks.
        let chosen = stream.get_ref().1.alpn_protocol();
        let speaks: &[u8] = match self.protocol {
            Some(config::UpstreamProtocol::Http2) => b"h2",
            Some(config::UpstreamProtocol::Http1) => b"http/1.1",
            None => b"",
        };
        if let Some(chosen) = chosen
            && !speaks.is_empty()
            && (chosen == b"h2" || chosen == b"http/1.1")
            && chosen != speaks
        {
            return Err(Error::upstream(
                ErrorKind::ConnectFailed,
                format!(
                    "{what}{address} (cluster {}) chose {} over ALPN, but the cluster speaks {}",
                    self.name,
                    String::from_utf8_lossy(chosen),
                    String::from_utf8_lossy(speaks)
                ),
            ));
        }
        Ok(UpstreamStream::Tls(Box::new(stream)))
    }

    /// Open a connection to one of host `i`'s Redis replicas (in turn over
    /// sessions, the next one when a replica cannot be reached).
    pub async fn connect_replica(&self, i: usize) -> Result<UpstreamConn, Error> {
        let replicas = self
            .redis
            .as_ref()
            .and_then(|r| Some((r.replicas.get(i)?, &r.next_replica)));
        let Some((replicas, next)) = replicas.filter(|(r, _)| !r.is_empty()) else {
            return Err(Error::upstream(
                ErrorKind::NoHost,
                format!("host {i} of cluster {} has no replicas", self.name),
            ));
        };
        let slot = self.connection_slot().await?;
        let first = next.fetch_add(1, Ordering::Relaxed);
        let mut last = None;
        for k in 0..replicas.len() {
            let Some(&address) = replicas.get((first + k) % replicas.len()) else {
                continue;
            };
            match tokio::time::timeout(self.connect_timeout, self.open(address, "replica ")).await {
                Ok(Ok(stream)) => {
                    self.connects.increment(1);
                    return Ok(UpstreamConn::new(stream, slot));
                }
                Ok(Err(e)) => {
                    self.connect_failures.increment(1);
                    tracing::debug!(cluster = %self.name, error = %e, "upstream replica is not reachable");
                    last = Some(e);
                }
                Err(_) => {
                    self.connect_failures.increment(1);
                    last = Some(Error::upstream(
                        ErrorKind::ConnectTimeout,
                        format!(
                            "connecting to replica {address} (cluster {}) timed out",
                            self.name
                        ),
                    ));
                }
            }
        }
        Err(last.unwrap_or_else(|| Error::upstream(ErrorKind::NoHost, "no replica")))
    }

    /// For exclusive (one exchange at a time) connections: an idle pooled
    /// connection to the first host of `hosts` that has one, else a new
    /// connection, trying the hosts in order. `(host, stream, reused)`.
    pub async fn checkout(
        &self,
        hosts: impl Iterator<Item = usize>,
    ) -> Result<(usize, UpstreamConn, bool), Error> {
        let mut last = None;
        for host in hosts {
            if let Some(stream) = self.pool.take(host) {
                return Ok((host, stream, true));
            }
            match self.connect(host).await {
                Ok(stream) => return Ok((host, stream, false)),
                // The limit is the cluster's: no other host would do.
                Err(e) if e.kind() == ErrorKind::Overflow => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            Error::upstream(
                ErrorKind::NoHost,
                format!("cluster {} has no hosts", self.name),
            )
        }))
    }

    /// Connect to the first reachable host in `pick()` order.
    pub async fn connect_any(&self) -> Result<(usize, UpstreamConn), Error> {
        self.connect_first(self.pick()).await
    }

    /// Connect a whole connection of `client` (TCP passthrough): the first
    /// reachable host in its order (hashed on its address with `hash_on:
    /// source_ip`, else as `pick()`).
    pub async fn connect_for(&self, client: IpAddr) -> Result<(usize, UpstreamConn), Error> {
        self.connect_first(self.hosts_for(&NoFields, client)).await
    }

    async fn connect_first(&self, order: HostOrder<'_>) -> Result<(usize, UpstreamConn), Error> {
        let mut last = Error::upstream(
            ErrorKind::NoHost,
            format!("cluster {} has no hosts", self.name),
        );
        for i in order {
            match self.connect(i).await {
                Ok(s) => return Ok((i, s)),
                Err(e) if e.kind() == ErrorKind::Overflow => return Err(e),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Redis: how many upstream connections per host stateless sessions
    /// share (`0` for sharded clusters, which keep theirs per session).
    pub fn redis_shared_connections(&self) -> usize {
        match &self.redis {
            Some(r) if r.shards.is_some() => 0,
            Some(r) => r.shared_connections,
            None => config::redis::DEFAULT_SHARED_CONNECTIONS as usize,
        }
    }

    /// The shard map, when this is a sharded Redis cluster.
    pub fn shards(&self) -> Option<&super::Shards> {
        self.redis.as_ref().and_then(|r| r.shards.as_ref())
    }

    /// Probe every host once and log the unreachable ones (at startup, so a
    /// newcomer sees at once which upstream is missing).
    pub async fn probe(&self) {
        for i in 0..self.hosts.len() {
            let _ = self.connect_host(i).await;
        }
    }
}

/// The hosts to try for one request, best first, each at most once
/// (unavailable hosts left out, unless no host is available).
pub struct HostOrder<'a> {
    walk: Walk<'a>,
    /// The cluster whose unavailable hosts are skipped (`None`: skip none).
    skip_unavailable: Option<&'a Cluster>,
}

enum Walk<'a> {
    /// The balancer's pick, then the others in turn; `take` hosts at most.
    Turns {
        first: usize,
        n: usize,
        k: usize,
        take: usize,
    },
    /// A key's owner on the ring, then the next hosts clockwise.
    Ring { walk: RingWalk<'a>, left: usize },
    /// A key's owner in the Maglev table, then the next hosts in the table.
    Maglev { walk: MaglevWalk<'a>, left: usize },
}

impl Iterator for HostOrder<'_> {
    type Item = usize;
    fn next(&mut self) -> Option<usize> {
        let usable = |i: usize| self.skip_unavailable.is_none_or(|c| c.host_available(i));
        match &mut self.walk {
            Walk::Turns { first, n, k, take } => {
                // `k` counts positions visited; `take` counts hosts yielded.
                while *take > 0 && *k < *n {
                    let i = (*first + *k) % *n;
                    *k += 1;
                    if usable(i) {
                        *take -= 1;
                        return Some(i);
                    }
                }
                None
            }
            Walk::Ring { walk, left } => {
                while *left > 0 {
                    let i = walk.next()?;
                    if usable(i) {
                        *left -= 1;
                        return Some(i);
                    }
                }
                None
            }
            Walk::Maglev { walk, left } => {
                while *left > 0 {
                    let i = walk.next()?;
                    if usable(i) {
                        *left -= 1;
                        return Some(i);
                    }
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cluster(extra: &str, hosts: usize) -> Cluster {
        let list: Vec<String> = (0..hosts)
            .map(|i| {
                format!(
                    "{{address: \"127.0.0.1:{}\", weight: {}, labels: {{version: v{}}}}}",
                    7000 + i,
                    i + 1,
                    i % 2
                )
            })
            .collect();
        let yaml = format!(
            "listeners: [{{name: l, address: \"127.0.0.1:1\", protocols: [http1], route_table: t}}]\n\
             route_tables: [{{name: t, virtual_hosts: [{{name: a, domains: [\"*\"], routes: [{{cluster: c}}]}}]}}]\n\
             clusters:\n  - name: c\n    hosts: [{}]\n{extra}",
            list.join(", ")
        );
        let config = crate::config::load_str(&yaml, "t.yaml").unwrap();
        Cluster::new(&config.clusters[0])
    }

    struct Key(&'static str);
    impl Metadata for Key {
        fn get(&self, field: &Field) -> Option<&[u8]> {
            (*field == Field::Key).then_some(self.0.as_bytes())
        }
    }

    /// Every policy's order is the pick first, then each other host once.
    #[test]
    fn every_policy_yields_each_host_once() {
        for lb in [
            "round_robin",
            "weighted_round_robin",
            "random",
            "least_request",
            "ring_hash",
            "maglev",
        ] {
            let c = cluster(&format!("    lb: {lb}\n    hash_on: key\n"), 5);
            for k in 0..50 {
                let mut order: Vec<usize> = if k % 2 == 0 {
                    c.pick().collect()
                } else {
                    c.hosts_for(&Key(["a", "b", "c", "d", "e"][k % 5]), LOCAL)
                        .collect()
                };
                order.sort_unstable();
                assert_eq!(order, [0, 1, 2, 3, 4], "{lb}");
            }
        }
        let c = cluster("    lb: maglev\n    hash_on: key\n    failover: false\n", 5);
        assert_eq!(c.hosts_for(&Key("a"), LOCAL).count(), 1);
    }

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    /// `hash_on: source_ip`: one client address, one host, whatever the
    /// request; the addresses spread over the hosts; v4 and its v6-mapped
    /// form are one client.
    #[test]
    fn source_ip_hashing_keeps_a_client_on_one_host() {
        for lb in ["ring_hash", "maglev"] {
            let c = cluster(&format!("    lb: {lb}\n    hash_on: source_ip\n"), 4);
            let mut owners = std::collections::HashSet::new();
            for last in 1..=64u8 {
                let ip = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, last));
                let first = c.hosts_for(&Key("a"), ip).next();
                for key in ["b", "c", "d"] {
                    assert_eq!(c.hosts_for(&Key(key), ip).next(), first, "{lb} {ip}");
                }
                let mapped = IpAddr::V6(std::net::Ipv4Addr::new(10, 0, 0, last).to_ipv6_mapped());
                assert_eq!(
                    c.hosts_for(&Key("a"), mapped).next(),
                    first,
                    "{lb} {mapped}"
                );
                let mut order: Vec<usize> = c.hosts_for(&Key("a"), ip).collect();
                order.sort_unstable();
                assert_eq!(order, [0, 1, 2, 3], "{lb}: every host once");
                owners.insert(first);
            }
            assert_eq!(owners.len(), 4, "{lb}: 64 clients on {owners:?}");
        }
    }

    #[test]
    fn in_flight_guards_count_and_least_request_avoids_the_busy_host() {
        let c = cluster("    lb: least_request\n", 2);
        let held: Vec<InFlight> = (0..3).map(|_| c.begin(1)).collect();
        assert_eq!(c.hosts[1].active(), 3);
        // Host 1 (weight 2) with 3 in flight: 2/4 < 1/1, so host 0 always wins.
        for _ in 0..500 {
            assert_eq!(c.pick().next(), Some(0));
        }
        drop(held);
        assert_eq!(c.hosts[1].active(), 0);
        let mut counts = [0usize; 2];
        for _ in 0..3000 {
            counts[c.pick().next().unwrap()] += 1;
        }
        assert!(counts[1] > 1800, "{counts:?}");
    }

    #[test]
    fn slow_start_ramps_a_recovered_host_up() {
        let c = cluster("    slow_start: {window: 1h, min_weight_percent: 10}\n", 2);
        let share = |c: &Cluster| {
            let mut n = 0;
            for _ in 0..10_000 {
                n += usize::from(c.pick().next() == Some(1));
            }
            n
        };
        // Round robin, both warm: half each.
        assert_eq!(share(&c), 5_000);
        c.hosts[1].mark_recovered();
        // Just recovered: 10 % of its weight; skipped picks go to host 0.
        let warming = share(&c);
        assert!((300..1_300).contains(&warming), "{warming}");
        // The subset views share the host, so its warmth.
        let view = c.subset(&[0, 1]);
        assert!(share(&view) < 1_300);
        // Without slow start a recovery changes nothing.
        let plain = cluster("", 2);
        plain.hosts[1].mark_recovered();
        assert_eq!(share(&plain), 5_000);
    }

    #[test]
    fn reload_keeps_warmth_and_warms_new_hosts() {
        let old = cluster("    slow_start: {window: 1h}\n", 2);
        let new = cluster("    slow_start: {window: 1h}\n", 3);
        new.inherit(Some(&old));
        let slow = SlowStart::new(Duration::from_secs(3600), 10);
        assert_eq!(new.hosts[0].warmth(&slow), 1.0);
        assert!(new.hosts[2].warmth(&slow) < 0.2);
    }

    /// A cluster's HTTP version: `protocol`, else the one its TLS ALPN
    /// names alone; views share the TLS settings.
    #[test]
    fn alpn_alone_sets_the_http_version() {
        use crate::config::UpstreamProtocol::{Http1, Http2};
        assert_eq!(cluster("    tls: {alpn: [h2]}\n", 1).protocol, Some(Http2));
        assert_eq!(
            cluster("    tls: {alpn: [http/1.1]}\n", 1).protocol,
            Some(Http1)
        );
        assert_eq!(cluster("    tls: {alpn: [mqtt]}\n", 1).protocol, None);
        assert_eq!(
            cluster("    protocol: http2\n    tls: {alpn: [h2, http/1.1]}\n", 1).protocol,
            Some(Http2)
        );
        assert_eq!(cluster("", 1).protocol, None);
    }

    /// A reload keeps a host's idle connections only when the cluster's
    /// `tls` is unchanged: they were opened with the old settings.
    #[tokio::test]
    async fn a_changed_tls_block_keeps_no_idle_connection() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let tls = "    tls: {sni: a.internal, insecure_skip_verify: true}\n";
        let idle = |c: &Cluster| std::iter::from_fn(|| c.pool.take(0)).count();
        for (next, kept) in [(tls, 1), ("    tls: {sni: b.internal}\n", 0), ("", 0)] {
            let old = cluster(tls, 1);
            let tcp = TcpStream::connect(addr).await.unwrap();
            old.pool
                .put(0, UpstreamConn::new(UpstreamStream::Tcp(tcp), None));
            let new = cluster(next, 1);
            new.inherit(Some(&old));
            assert_eq!(idle(&new), kept, "{next}");
        }
    }

    #[test]
    fn subsets_select_hosts_by_label() {
        let c = cluster("", 4);
        let want: std::collections::BTreeMap<String, String> =
            HashMap::from([("version".to_owned(), "v1".to_owned())])
                .into_iter()
                .collect();
        assert_eq!(c.hosts_labelled(&want), [1, 3]);
        assert_eq!(c.label_values("version"), ["v0", "v1"]);
        let v1 = c.subset(&[1, 3]);
        let picked: Vec<_> = (0..4)
            .map(|_| v1.hosts[v1.pick().next().unwrap()].address.port())
            .collect();
        assert_eq!(picked, [7001, 7003, 7001, 7003]);
        let _g = v1.begin(0);
        assert_eq!(c.hosts[1].active(), 1, "views share the cluster's hosts");
        assert_eq!(c.subset(&[]).pick().next(), None);
    }
}
