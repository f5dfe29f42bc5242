//! A cluster: hosts, a balancer, a pool and the timeouts of connecting to them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use metrics::Counter;
use tokio::net::TcpStream;

use switchyard_codecs::{Field, Metadata};

use super::ring::RingWalk;
use super::{Balancer, Pool, Ring};
use crate::config::{self, HashOn, LbPolicy};
use crate::error::{Error, ErrorKind};

/// One upstream host.
#[derive(Debug)]
pub struct Host {
    pub address: SocketAddr,
    pub weight: u32,
    /// Last connect attempt failed; used to log only changes of reachability.
    down: AtomicBool,
    /// Active check and outlier state.
    pub health: super::health::HostHealth,
}

impl Host {
    /// Whether requests may go to this host: its health checks pass and
    /// outlier detection has not ejected it.
    pub fn available(&self) -> bool {
        self.health.available()
    }
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
}

impl RedisBackend {
    fn new(r: &config::redis::ClusterRedis, c: &config::Cluster, hosts: &[Host]) -> Self {
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
        }
    }
}

/// A compiled cluster, shared by every connection of a config snapshot.
pub struct Cluster {
    pub name: String,
    pub hosts: Vec<Host>,
    pub balancer: Balancer,
    /// With `lb: ring_hash`: the ring and the field hashed.
    ring: Option<(Ring, Field)>,
    /// Try the next host when the chosen one cannot be reached.
    failover: bool,
    pub pool: Pool,
    /// Shared multiplexed (HTTP/2) connections, per host.
    pub mux: super::MuxPool,
    /// The HTTP version the hosts speak (`None`: the request's own).
    pub protocol: Option<config::UpstreamProtocol>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// Redis: backend login and, for sharded clusters, the shard map.
    pub redis: Option<RedisBackend>,
    connect_failures: Counter,
    connects: Counter,
    /// MySQL backend credentials and limits (clusters MySQL sessions use).
    pub mysql: Option<config::MysqlBackend>,
    /// The `max_requests` circuit breaker (`None`: no limit).
    breaker: Option<crate::filters::chain::Limit>,
    /// Requests refused by the breaker.
    overflows: Counter,
    /// Health checks and outlier detection.
    pub health: super::health::ClusterHealth,
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
}

impl Cluster {
    /// Compile a validated cluster config.
    pub fn new(c: &config::Cluster) -> Self {
        let hosts: Vec<Host> = c
            .hosts
            .iter()
            .filter_map(|h| {
                let address: SocketAddr = h.value.address().parse().ok()?;
                Some(Host {
                    address,
                    weight: h.value.weight(),
                    down: AtomicBool::new(false),
                    health: super::health::HostHealth::new(&c.name.value, &address.to_string()),
                })
            })
            .collect();
        let weights: Vec<u32> = hosts.iter().map(|h| h.weight).collect();
        let name = c.name.value.clone();
        let ring = (c.lb == LbPolicy::RingHash).then(|| {
            let names: Vec<String> = hosts.iter().map(|h| h.address.to_string()).collect();
            let field = match c.hash_on {
                HashOn::ClientId => Field::ClientId,
                HashOn::User => Field::User,
                HashOn::Key => Field::Key,
                HashOn::Host => Field::Host,
                HashOn::Path => Field::Path,
            };
            (Ring::new(&names, &weights), field)
        });
        let redis = c.redis.as_ref().map(|r| RedisBackend::new(r, c, &hosts));
        Self {
            redis,
            balancer: Balancer::new(c.lb, &weights),
            ring,
            failover: c.failover,
            pool: Pool::new(hosts.len(), c.max_idle_per_host, c.idle_timeout.get()),
            mux: super::MuxPool::new(hosts.len()),
            protocol: c.protocol,
            hosts,
            connect_timeout: c.connect_timeout.get(),
            request_timeout: c.request_timeout.get(),
            connect_failures: metrics::counter!("switchyard_upstream_connect_failures_total", "cluster" => name.clone()),
            shared: std::sync::Mutex::new(std::collections::HashMap::new()),
            connects: metrics::counter!("switchyard_upstream_connections_total", "cluster" => name.clone()),
            mysql: c.mysql.clone(),
            breaker: c
                .circuit_breakers
                .as_ref()
                .map(|b| crate::filters::chain::Limit::new(b.max_requests)),
            overflows: metrics::counter!("switchyard_upstream_overflow_total", "cluster" => name.clone(), "breaker" => "max_requests"),
            health: super::health::ClusterHealth::new(c),
            max_idle_per_host: c.max_idle_per_host,
            idle_timeout: c.idle_timeout.get(),
            name,
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

    /// The host order to try for one request: the balancer's pick first, then
    /// the others in turn (so a failed connect can fall back for free).
    pub fn pick(&self) -> HostOrder<'_> {
        let n = self.hosts.len();
        let first = self.balancer.pick().unwrap_or(0);
        let take = if self.failover { n } else { n.min(1) };
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

    /// The host order for `req`: by the ring when the cluster hashes and the
    /// request has the field (its owner first, then the ring's next hosts),
    /// else as [`Cluster::pick`]. Without `failover`, only the first host.
    pub fn hosts_for(&self, req: &dyn Metadata) -> HostOrder<'_> {
        match &self.ring {
            Some((ring, field)) => match req.get(field) {
                Some(key) => HostOrder {
                    walk: Walk::Ring {
                        walk: ring.lookup(key),
                        left: if self.failover { usize::MAX } else { 1 },
                    },
                    skip_unavailable: self.skip_unavailable(),
                },
                None => self.pick(),
            },
            None => self.pick(),
        }
    }

    /// Open a new connection to host `i`, within `connect_timeout`.
    pub async fn connect(&self, i: usize) -> Result<TcpStream, Error> {
        let Some(host) = self.hosts.get(i) else {
            return Err(Error::upstream(
                ErrorKind::NoHost,
                format!("cluster {} has no hosts", self.name),
            ));
        };
        let result =
            tokio::time::timeout(self.connect_timeout, TcpStream::connect(host.address)).await;
        let err = match result {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                self.connects.increment(1);
                host.health.connected();
                if host.down.swap(false, Ordering::Relaxed) {
                    tracing::info!(cluster = %self.name, host = %host.address, "upstream host is reachable again");
                }
                return Ok(stream);
            }
            Ok(Err(e)) => Error::upstream(
                ErrorKind::ConnectFailed,
                format!("cannot connect to {} (cluster {})", host.address, self.name),
            )
            .with_source(e),
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

    /// Open a connection to one of host `i`'s Redis replicas (in turn over
    /// sessions, the next one when a replica cannot be reached).
    pub async fn connect_replica(&self, i: usize) -> Result<TcpStream, Error> {
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
        let first = next.fetch_add(1, Ordering::Relaxed);
        let mut last = None;
        for k in 0..replicas.len() {
            let Some(&address) = replicas.get((first + k) % replicas.len()) else {
                continue;
            };
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(address)).await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    self.connects.increment(1);
                    return Ok(stream);
                }
                Ok(Err(e)) => {
                    self.connect_failures.increment(1);
                    last = Some(
                        Error::upstream(
                            ErrorKind::ConnectFailed,
                            format!(
                                "cannot connect to replica {address} (cluster {})",
                                self.name
                            ),
                        )
                        .with_source(e),
                    );
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
    ) -> Result<(usize, TcpStream, bool), Error> {
        let mut last = None;
        for host in hosts {
            if let Some(stream) = self.pool.take(host) {
                return Ok((host, stream, true));
            }
            match self.connect(host).await {
                Ok(stream) => return Ok((host, stream, false)),
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
    pub async fn connect_any(&self) -> Result<(usize, TcpStream), Error> {
        let mut last = Error::upstream(
            ErrorKind::NoHost,
            format!("cluster {} has no hosts", self.name),
        );
        for i in self.pick() {
            match self.connect(i).await {
                Ok(s) => return Ok((i, s)),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// The shard map, when this is a sharded Redis cluster.
    pub fn shards(&self) -> Option<&super::Shards> {
        self.redis.as_ref().and_then(|r| r.shards.as_ref())
    }

    /// Probe every host once and log the unreachable ones (at startup, so a
    /// newcomer sees at once which upstream is missing).
    pub async fn probe(&self) {
        for i in 0..self.hosts.len() {
            let _ = self.connect(i).await;
        }
    }
}

/// The hosts to try for one request, best first (unavailable hosts left
/// out, unless no host is available).
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
        }
    }
}
