//! An idle-connection pool for exclusive (one request at a time) upstream
//! connections, as HTTP/1.1 keep-alive uses. One lock-free bounded queue per host.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use tokio::net::TcpStream;

use super::conn::{ConnLimit, UpstreamConn};

/// Idle connections younger than this skip the liveness probe (default).
const FRESH: Duration = Duration::from_millis(1000);

pub(super) struct Idle {
    stream: UpstreamConn,
    since: Instant,
}

/// Idle connections of one cluster, per host index.
pub struct Pool {
    hosts: Arc<IdleQueues>,
    idle_timeout: Duration,
    fresh: Duration,
    /// The cluster's `max_connections`: a connection returned while requests
    /// wait for a slot is closed, so one of them gets its slot.
    limit: Option<Arc<ConnLimit>>,
}

impl Pool {
    pub fn new(hosts: usize, max_idle_per_host: usize, idle_timeout: Duration) -> Self {
        Self {
            hosts: Arc::new(
                (0..hosts)
                    .map(|_| ArrayQueue::new(max_idle_per_host.max(1)))
                    .collect(),
            ),
            idle_timeout,
            fresh: FRESH,
            limit: None,
        }
    }

    /// Close returned connections instead of keeping them while requests
    /// wait for one of `limit`'s slots.
    /// The pool registers with `limit`, so a request of any view of the
    /// cluster at the limit may close its idle connections.
    pub fn with_limit(mut self, limit: Option<Arc<ConnLimit>>) -> Self {
        if let Some(l) = &limit {
            l.register_idle(&self.hosts);
        }
        self.limit = limit;
        self
    }

    /// Probe every connection taken, however fresh (for tests).
    pub fn always_probe(mut self) -> Self {
        self.fresh = Duration::ZERO;
        self
    }

    /// An idle connection to host `i` that is still open, if there is one.
    pub fn take(&self, i: usize) -> Option<UpstreamConn> {
        let queue = self.hosts.get(i)?;
        while let Some(idle) = queue.pop() {
            let age = idle.since.elapsed();
            // A connection returned moments ago is taken without the liveness
            // probe (a syscall); the proxy retries a bodiless request once if
            // the server closed it in that window anyway.
            if age < self.idle_timeout && (age < self.fresh || is_open(idle.stream.tcp())) {
                return Some(idle.stream);
            }
        }
        None
    }

    /// Return a connection to host `i` after a complete exchange. Dropped
    /// (closed) when the host's queue is full.
    pub fn put(&self, i: usize, stream: UpstreamConn) {
        if self.limit.as_ref().is_some_and(|l| l.pending() > 0) {
            return;
        }
        if let Some(queue) = self.hosts.get(i) {
            let _ = queue.push(Idle {
                stream,
                since: Instant::now(),
            });
        }
    }

    /// Move `from`'s idle connections of its host `from_i` to host `i` of
    /// this pool (a config reload keeping the host), keeping their age.
    pub fn adopt(&self, i: usize, from: &Pool, from_i: usize) {
        let (Some(to), Some(queue)) = (self.hosts.get(i), from.hosts.get(from_i)) else {
            return;
        };
        while let Some(idle) = queue.pop() {
            if to.push(idle).is_err() {
                break;
            }
        }
    }

    /// Idle connections held for host `i`.
    pub fn idle(&self, i: usize) -> usize {
        self.hosts.get(i).map_or(0, ArrayQueue::len)
    }
}

/// Idle connections of one pool, per host index.
pub(super) type IdleQueues = Vec<ArrayQueue<Idle>>;

/// Close one idle connection of `queues`, if there is one.
pub(super) fn close_one_idle(queues: &IdleQueues) -> bool {
    queues.iter().any(|queue| queue.pop().is_some())
}

/// An idle connection is usable if reading would block: EOF means the server
/// closed it, and bytes mean it is out of step.
fn is_open(stream: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    matches!(stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    async fn pair(l: &TcpListener) -> (UpstreamConn, TcpStream) {
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        (
            UpstreamConn::new(crate::upstream::UpstreamStream::Tcp(c), None),
            s,
        )
    }

    #[tokio::test]
    async fn reuses_open_connections_and_drops_closed_ones() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = Pool::new(1, 4, Duration::from_secs(60)).always_probe();
        let (c1, s1) = pair(&l).await;
        let (c2, _s2) = pair(&l).await;
        let c2_port = c2.tcp().local_addr().unwrap().port();
        pool.put(0, c1);
        pool.put(0, c2);
        drop(s1); // the server closes the first connection
        tokio::time::sleep(Duration::from_millis(50)).await;
        let got = pool.take(0).expect("the open connection");
        assert_eq!(got.tcp().local_addr().unwrap().port(), c2_port);
        assert!(pool.take(0).is_none());
    }

    #[tokio::test]
    async fn drops_connections_with_unexpected_bytes_or_past_idle_timeout() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = Pool::new(1, 4, Duration::from_millis(30)).always_probe();
        let (c, mut s) = pair(&l).await;
        s.write_all(b"stray").await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        pool.put(0, c);
        assert!(pool.take(0).is_none(), "stray bytes make it unusable");
        let (c, _s) = pair(&l).await;
        pool.put(0, c);
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(pool.take(0).is_none(), "past idle timeout");
    }

    #[tokio::test]
    async fn bounded_per_host() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = Pool::new(2, 1, Duration::from_secs(60));
        let (a, _sa) = pair(&l).await;
        let (b, _sb) = pair(&l).await;
        pool.put(1, a);
        pool.put(1, b);
        assert_eq!(pool.idle(1), 1);
        assert_eq!(pool.idle(0), 0);
    }
}
