//! A cluster: hosts, a balancer, a pool and the timeouts of connecting to them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use metrics::Counter;
use tokio::net::TcpStream;

use super::{Balancer, Pool};
use crate::config;
use crate::error::{Error, ErrorKind};

/// One upstream host.
#[derive(Debug)]
pub struct Host {
    pub address: SocketAddr,
    pub weight: u32,
    /// Last connect attempt failed; used to log only changes of reachability.
    down: AtomicBool,
}

/// A compiled cluster, shared by every connection of a config snapshot.
pub struct Cluster {
    pub name: String,
    pub hosts: Vec<Host>,
    pub balancer: Balancer,
    pub pool: Pool,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    connect_failures: Counter,
    connects: Counter,
}

impl Cluster {
    /// Compile a validated cluster config.
    pub fn new(c: &config::Cluster) -> Self {
        let hosts: Vec<Host> = c
            .hosts
            .iter()
            .filter_map(|h| {
                Some(Host {
                    address: h.value.address().parse().ok()?,
                    weight: h.value.weight(),
                    down: AtomicBool::new(false),
                })
            })
            .collect();
        let weights: Vec<u32> = hosts.iter().map(|h| h.weight).collect();
        let name = c.name.value.clone();
        Self {
            balancer: Balancer::new(c.lb, &weights),
            pool: Pool::new(hosts.len(), c.max_idle_per_host, c.idle_timeout.get()),
            hosts,
            connect_timeout: c.connect_timeout.get(),
            request_timeout: c.request_timeout.get(),
            connect_failures: metrics::counter!("switchyard_upstream_connect_failures_total", "cluster" => name.clone()),
            connects: metrics::counter!("switchyard_upstream_connections_total", "cluster" => name.clone()),
            name,
        }
    }

    /// The host order to try for one request: the balancer's pick first, then
    /// the others in turn (so a failed connect can fall back for free).
    pub fn pick(&self) -> impl Iterator<Item = usize> + '_ {
        let n = self.hosts.len();
        let first = self.balancer.pick().unwrap_or(0);
        (0..n).map(move |k| (first + k) % n)
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
        if !host.down.swap(true, Ordering::Relaxed) {
            tracing::warn!(cluster = %self.name, host = %host.address, error = %err, "upstream host is not reachable");
        }
        Err(err)
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

    /// Probe every host once and log the unreachable ones (at startup, so a
    /// newcomer sees at once which upstream is missing).
    pub async fn probe(&self) {
        for i in 0..self.hosts.len() {
            let _ = self.connect(i).await;
        }
    }
}
