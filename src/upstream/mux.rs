//! Shared multiplexed upstream connections: HTTP/2 with prior knowledge
//! (h2c). One long-lived connection per host carries the streams of every
//! client; a request clones the connection's `SendRequest` handle, so taking
//! a live connection costs one atomic load. A connection that died or was
//! refused new streams (GOAWAY) is retired, and the next request that needs
//! one opens a fresh connection — one connect at a time per host, whose
//! failure is shared by the requests that waited for it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use h2::client::SendRequest;

use super::Cluster;
use crate::error::{Error, ErrorKind};

/// Per-stream receive window asked of HTTP/2 upstreams (bytes a response may
/// have in flight before the gateway forwards them).
const STREAM_WINDOW: u32 = 1 << 20;
/// Connection receive window asked of HTTP/2 upstreams.
const CONN_WINDOW: u32 = 8 << 20;

/// The shared HTTP/2 connections of one cluster, per host index.
pub struct MuxPool {
    hosts: Vec<Host>,
}

struct Host {
    current: ArcSwapOption<H2Conn>,
    /// Held while connecting; keeps the last failed attempt so the requests
    /// that queued behind it fail with it instead of each trying again.
    connecting: tokio::sync::Mutex<Option<Failed>>,
}

struct Failed {
    at: Instant,
    kind: ErrorKind,
    text: String,
}

/// One shared HTTP/2 connection to a host.
pub struct H2Conn {
    send: SendRequest<Bytes>,
    /// Cleared when the connection's driver task ends.
    alive: Arc<AtomicBool>,
}

impl H2Conn {
    /// A handle for one request (wait for `ready()` before sending).
    pub fn sender(&self) -> SendRequest<Bytes> {
        self.send.clone()
    }

    fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Relaxed)
    }
}

impl MuxPool {
    pub fn new(hosts: usize) -> Self {
        Self {
            hosts: (0..hosts)
                .map(|_| Host {
                    current: ArcSwapOption::empty(),
                    connecting: tokio::sync::Mutex::new(None),
                })
                .collect(),
        }
    }

    fn live(&self, i: usize) -> Option<Arc<H2Conn>> {
        let conn = self.hosts.get(i)?.current.load_full()?;
        conn.is_alive().then_some(conn)
    }

    /// Share `from`'s live connection to its host `from_i` as this pool's
    /// connection to host `i` (a config reload keeping the host): new
    /// streams keep going on it.
    pub fn adopt(&self, i: usize, from: &MuxPool, from_i: usize) {
        if let (Some(to), Some(conn)) = (self.hosts.get(i), from.live(from_i)) {
            to.current.store(Some(conn));
        }
    }
}

impl Cluster {
    /// The shared HTTP/2 connection to host `i`, opened (within
    /// `connect_timeout`) if there is none or the last one died.
    pub async fn h2(&self, i: usize) -> Result<Arc<H2Conn>, Error> {
        if let Some(c) = self.mux.live(i) {
            return Ok(c);
        }
        let Some(host) = self.mux.hosts.get(i) else {
            return Err(Error::upstream(
                ErrorKind::NoHost,
                format!("cluster {} has no hosts", self.name),
            ));
        };
        let queued = Instant::now();
        let mut last = host.connecting.lock().await;
        if let Some(c) = self.mux.live(i) {
            return Ok(c);
        }
        if let Some(f) = last.as_ref().filter(|f| f.at >= queued) {
            return Err(Error::upstream(f.kind, f.text.clone()));
        }
        match self.h2_connect(i).await {
            Ok(conn) => {
                *last = None;
                host.current.store(Some(conn.clone()));
                Ok(conn)
            }
            Err(e) => {
                *last = Some(Failed {
                    at: Instant::now(),
                    kind: e.kind(),
                    text: e.to_string(),
                });
                Err(e)
            }
        }
    }

    async fn h2_connect(&self, i: usize) -> Result<Arc<H2Conn>, Error> {
        let tcp = self.connect(i).await?;
        let mut builder = h2::client::Builder::new();
        builder
            .enable_push(false)
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONN_WINDOW)
            .max_concurrent_reset_streams(1024)
            .reset_stream_duration(Duration::from_secs(5));
        let handshake = tokio::time::timeout(self.connect_timeout, builder.handshake(tcp));
        let (send, connection) = match handshake.await {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => {
                return Err(Error::upstream(
                    ErrorKind::ConnectFailed,
                    format!("HTTP/2 handshake with cluster {} failed", self.name),
                )
                .with_source(e));
            }
            Err(_) => {
                return Err(Error::upstream(
                    ErrorKind::ConnectTimeout,
                    format!("HTTP/2 handshake with cluster {} timed out", self.name),
                ));
            }
        };
        let alive = Arc::new(AtomicBool::new(true));
        let flag = alive.clone();
        let cluster = self.name.clone();
        // The driver holds no `SendRequest`: when the cluster (and every
        // request's clone) is gone, the connection closes itself.
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%cluster, error = %e, "upstream HTTP/2 connection ended");
            }
            flag.store(false, Ordering::Relaxed);
        });
        Ok(Arc::new(H2Conn { send, alive }))
    }

    /// Stop handing out `conn` for host `i` (it refused a new stream after a
    /// GOAWAY or a connection error): the next request opens a new one.
    pub fn h2_retire(&self, i: usize, conn: &Arc<H2Conn>) {
        conn.alive.store(false, Ordering::Relaxed);
        if let Some(host) = self.mux.hosts.get(i) {
            let current = host.current.load();
            if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
                host.current.compare_and_swap(&*current, None);
            }
        }
    }
}
