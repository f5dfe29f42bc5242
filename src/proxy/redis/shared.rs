//! Upstream connections shared by every stateless Redis session of a cluster
//! host (`clusters[].redis.shared_connections` per host), twemproxy's and
//! Envoy redis_proxy's model: sessions hand their batches to the connection's
//! writer task, which writes whatever has queued up (across clients) in one
//! write and notes, in the connection's FIFO, whose replies come next and how
//! many; the reader task takes replies in order and hands each batch's
//! replies to its session when they are all there.
//!
//! A connection that fails (write or read error, a reply nobody asked for,
//! or a batch whose replies are later than the request timeout, as with a
//! session's own connection and in twemproxy) answers every batch in flight
//! on it with the reason and is replaced on the next use.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::upstream::{UpstreamReadHalf, UpstreamWriteHalf};
use bytes::{Bytes, BytesMut};
use switchyard_codecs::redis::{self, ReplyDecoder};
use switchyard_codecs::{Decoder, Protocol};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, ErrorKind};
use crate::upstream::Cluster;

/// The replies to one batch, or why they will not come.
pub type Replies = Result<Vec<Bytes>, String>;

/// One shared upstream connection.
pub struct SharedConn {
    tx: mpsc::UnboundedSender<Outgoing>,
    inner: Arc<Inner>,
}

struct Inner {
    fifo: Mutex<Fifo>,
    alive: AtomicBool,
    /// Ends both tasks (and so closes the connection) once failed.
    ended: tokio_util::sync::CancellationToken,
}

#[derive(Default)]
struct Fifo {
    /// Batches written and not yet answered, in the order written.
    waiting: VecDeque<Waiter>,
    /// Why the connection ended.
    failed: Option<String>,
}

struct Waiter {
    count: usize,
    replies: Vec<Bytes>,
    done: oneshot::Sender<Replies>,
}

struct Outgoing {
    requests: Vec<Bytes>,
    waiter: Waiter,
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Fifo> {
        self.fifo.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// End the connection: every batch in flight gets `why`.
    fn fail(&self, why: &str) {
        self.alive.store(false, Ordering::Relaxed);
        let waiting = {
            let mut fifo = self.lock();
            if fifo.failed.is_none() {
                fifo.failed = Some(why.to_owned());
            }
            std::mem::take(&mut fifo.waiting)
        };
        for w in waiting {
            let _ = w.done.send(Err(why.to_owned()));
        }
        self.ended.cancel();
    }
}

impl SharedConn {
    /// Whether new batches may go on this connection.
    pub fn is_open(&self) -> bool {
        self.inner.alive.load(Ordering::Relaxed)
    }

    /// Give up on the connection (a reply came too late: the server may be
    /// stuck, as twemproxy assumes): every batch in flight on it gets `why`.
    pub fn fail(&self, why: &str) {
        self.inner.fail(why);
    }

    /// Queue `requests` (expecting `count` replies) for writing; their
    /// replies come through the receiver.
    pub fn send(&self, requests: Vec<Bytes>, count: usize) -> oneshot::Receiver<Replies> {
        let (done, rx) = oneshot::channel();
        let waiter = Waiter {
            count,
            replies: Vec::with_capacity(count),
            done,
        };
        if let Err(mpsc::error::SendError(o)) = self.tx.send(Outgoing { requests, waiter }) {
            self.inner.alive.store(false, Ordering::Relaxed);
            let _ = o
                .waiter
                .done
                .send(Err("the upstream connection is closed".to_owned()));
        }
        rx
    }
}

/// Writes what sessions queued, as few writes as possible.
async fn write_loop(
    mut wr: UpstreamWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    inner: Arc<Inner>,
) {
    let mut out = BytesMut::with_capacity(16 * 1024);
    loop {
        let first = tokio::select! {
            o = rx.recv() => match o {
                Some(o) => o,
                None => break,
            },
            () = inner.ended.cancelled() => break,
        };
        let mut next = Some(first);
        {
            let mut fifo = inner.lock();
            while let Some(o) = next.take() {
                if let Some(why) = &fifo.failed {
                    let _ = o.waiter.done.send(Err(why.clone()));
                } else {
                    for r in &o.requests {
                        out.extend_from_slice(r);
                    }
                    fifo.waiting.push_back(o.waiter);
                }
                if out.len() >= 64 * 1024 {
                    break;
                }
                next = rx.try_recv().ok();
            }
        }
        if out.is_empty() {
            continue;
        }
        if let Err(e) = wr.write_all(&out).await {
            inner.fail(&format!("writing to the upstream failed: {e}"));
        }
        out.clear();
    }
    let _ = wr.shutdown().await;
}

/// Reads replies and hands them to their batches, in order.
async fn read_loop(
    mut rd: crate::upstream::Counted<UpstreamReadHalf>,
    inner: Arc<Inner>,
    mut decoder: ReplyDecoder,
    skip: usize,
) {
    let mut skip = skip;
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut frames: Vec<Bytes> = Vec::new();
    let why = 'read: loop {
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(reply)) if skip > 0 && !redis::is_out_of_band(reply.wire()) => skip -= 1,
                Ok(Some(reply)) => frames.push(reply.wire().clone()),
                Ok(None) => break,
                Err(e) => break 'read format!("the upstream reply was refused: {e}"),
            }
        }
        if !frames.is_empty() {
            let mut done = Vec::new();
            {
                let mut fifo = inner.lock();
                for f in frames.drain(..) {
                    let Some(w) = fifo.waiting.front_mut() else {
                        drop(fifo);
                        break 'read "the upstream sent a reply nobody asked for".to_owned();
                    };
                    w.replies.push(f);
                    if w.replies.len() >= w.count
                        && let Some(w) = fifo.waiting.pop_front()
                    {
                        done.push(w);
                    }
                }
            }
            for w in done {
                let _ = w.done.send(Ok(w.replies));
            }
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(16 * 1024);
        }
        let read = tokio::select! {
            r = rd.read_buf(&mut buf) => r,
            () = inner.ended.cancelled() => return,
        };
        match read {
            Ok(0) => break "the upstream closed the connection".to_owned(),
            Ok(_) => {}
            Err(e) => break format!("reading from the upstream failed: {e}"),
        }
    };
    tracing::debug!(reason = %why, "redis: shared upstream connection ended");
    inner.fail(&why);
}

/// The shared connections of one host.
#[derive(Default)]
struct HostConns {
    conns: Vec<Option<Arc<SharedConn>>>,
    /// Spreads sessions over the host's connections.
    next: usize,
}

type HostEntry = Arc<tokio::sync::Mutex<HostConns>>;

/// A shared connection of `cluster` for a new session (or one whose
/// connection failed): the balancer's host, or the next reachable one.
pub async fn conn(cluster: &Arc<Cluster>, limits: redis::Limits) -> Result<Arc<SharedConn>, Error> {
    let per_host = cluster.redis_shared_connections();
    let mut last = Error::upstream(
        ErrorKind::NoHost,
        format!("cluster {} has no hosts", cluster.name),
    );
    for host in cluster.pick() {
        match host_conn(cluster, host, per_host, limits).await {
            Ok(c) => return Ok(c),
            Err(e) => last = e,
        }
    }
    Err(last)
}

async fn host_conn(
    cluster: &Arc<Cluster>,
    host: usize,
    per_host: usize,
    limits: redis::Limits,
) -> Result<Arc<SharedConn>, Error> {
    let entry: HostEntry = {
        let mut registry = cluster.shared.lock().unwrap_or_else(|e| e.into_inner());
        let any = registry
            .entry((Protocol::Redis, host))
            .or_insert_with(|| Box::new(HostEntry::default()));
        match any.downcast_ref::<HostEntry>() {
            Some(e) => e.clone(),
            None => {
                return Err(Error::upstream(
                    ErrorKind::NoHost,
                    "internal: the shared connection registry holds something else",
                ));
            }
        }
    };
    let mut conns = entry.lock().await;
    if conns.conns.len() < per_host.max(1) {
        conns.conns.resize_with(per_host.max(1), || None);
    }
    let k = conns.next % conns.conns.len();
    conns.next = conns.next.wrapping_add(1);
    if let Some(Some(c)) = conns.conns.get(k)
        && c.is_open()
    {
        return Ok(c.clone());
    }
    let stream = cluster.connect(host).await?;
    let (rd, mut wr) = stream.into_split();
    let login = cluster.redis.as_ref().map_or(&[][..], |r| &r.login[..]);
    for cmd in login {
        wr.write_all(cmd).await.map_err(|e| {
            Error::upstream(
                ErrorKind::ConnectFailed,
                format!("logging in to cluster {} failed", cluster.name),
            )
            .with_source(e)
        })?;
    }
    let inner = Arc::new(Inner {
        fifo: Mutex::new(Fifo::default()),
        alive: AtomicBool::new(true),
        ended: tokio_util::sync::CancellationToken::new(),
    });
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(write_loop(wr, rx, inner.clone()));
    tokio::spawn(read_loop(
        rd,
        inner.clone(),
        ReplyDecoder::new(limits),
        login.len(),
    ));
    let c = Arc::new(SharedConn { tx, inner });
    if let Some(slot) = conns.conns.get_mut(k) {
        *slot = Some(c.clone());
    }
    Ok(c)
}
