//! Redis through the gateway: pipelined commands routed one by one (by command
//! and key), sent in batches on pipelined upstream connections, and answered
//! strictly in the order the client sent them.
//!
//! Each client session owns its upstream connections (one per cluster it
//! touches, host chosen once by the cluster's balancer), so per-connection
//! state — `SELECT`, `HELLO 3`, `AUTH`, `MULTI`, blocking pops — behaves as on
//! a direct connection. `SUBSCRIBE`-family commands and `MONITOR` turn the
//! session into a tunnel bound to one fresh upstream connection, on which the
//! session's `AUTH`/`HELLO`/`SELECT`/`CLIENT SETNAME` are replayed first.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use crate::net::stream::{ReadHalf, Stream, WriteHalf};
use bytes::{Bytes, BytesMut};
use switchyard_codecs::redis::{self, Command, CommandDecoder, ReplyDecoder};
use switchyard_codecs::{Decoder, Protocol, WireHead};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant as Deadline;

use super::{Conn, drained, read_more};
use crate::error::Error;
use crate::observe::ConnMetrics;
use crate::router::Action;
use crate::stream::pipeline::{Pipeline, ReplyReceiver};
use crate::stream::session::splice;
use crate::upstream::Cluster;

/// One place in the client's reply order.
enum Slot {
    /// A reply made by the gateway.
    Ready(Bytes),
    /// The replies to `count` commands sent upstream as one batch.
    Upstream {
        rx: ReplyReceiver,
        count: usize,
        deadline: Deadline,
        started: Instant,
    },
    /// Flush and close the connection.
    Close,
}

/// The upstream connections of one client session.
struct Upstreams {
    bound: Vec<(Arc<Cluster>, Pipeline)>,
    depth: usize,
    limits: redis::Limits,
    out_of_band: mpsc::UnboundedSender<Bytes>,
    /// State commands already sent (`AUTH`, `HELLO`, `SELECT`, `CLIENT SETNAME`):
    /// replayed first on every new upstream connection of the session.
    state: Vec<Bytes>,
    /// State commands in the batch being built; join `state` when it is sent.
    pending_state: Vec<Bytes>,
    /// Slots handed to the writer and not yet written (shared with it).
    in_flight: Arc<AtomicUsize>,
}

impl Upstreams {
    async fn pipeline(&mut self, cluster: &Arc<Cluster>) -> Result<&Pipeline, Error> {
        let at = self
            .bound
            .iter()
            .position(|(c, p)| Arc::ptr_eq(c, cluster) && p.is_open());
        let at = match at {
            Some(i) => i,
            None => {
                self.bound.retain(|(c, _)| !Arc::ptr_eq(c, cluster));
                let (_, stream) = cluster.connect_any().await?;
                let decoder = ReplyDecoder::new(self.limits);
                let p = Pipeline::spawn(stream, decoder, self.depth, self.out_of_band.clone());
                if !self.state.is_empty() {
                    // Restore the session on the new connection; the replies are not the client's.
                    drop(p.send(self.state.clone()).await);
                }
                self.bound.push((cluster.clone(), p));
                self.bound.len() - 1
            }
        };
        Ok(&self.bound[at].1)
    }
}

/// Where a command goes.
enum Target {
    Reply(Bytes),
    Cluster(Arc<Cluster>, std::time::Duration),
}

/// Serve one downstream Redis connection; `buf` holds the bytes detection read.
pub async fn serve(stream: Stream, mut buf: BytesMut, mut conn: Conn) {
    let l = conn.listener.clone();
    let (mut rd, wr) = stream.into_split();
    let (slots_tx, slots_rx) = mpsc::channel::<Slot>(l.redis_max_pipeline.max(1));
    let (oob_tx, oob_rx) = mpsc::unbounded_channel();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let writer = tokio::spawn(write_replies(
        wr,
        slots_rx,
        oob_rx,
        conn.metrics.clone(),
        in_flight.clone(),
    ));
    let mut upstreams = Upstreams {
        bound: Vec::new(),
        depth: l.redis_max_pipeline,
        limits: l.redis,
        out_of_band: oob_tx,
        state: Vec::new(),
        pending_state: Vec::new(),
        in_flight: in_flight.clone(),
    };
    let mut decoder = CommandDecoder::new(l.redis);
    let mut batch: Vec<Bytes> = Vec::new();
    let mut batch_target: Option<(Arc<Cluster>, std::time::Duration)> = None;

    'session: loop {
        // Decode every command the buffer holds, batching runs that go to the same cluster.
        loop {
            let cmd = match decoder.decode(&mut buf) {
                Ok(Some(cmd)) => cmd,
                Ok(None) => break,
                Err(e) => {
                    flush_batch(&mut upstreams, &mut batch, &mut batch_target, &slots_tx).await;
                    let msg = format!("Protocol error: {e}");
                    let _ = slots_tx.send(Slot::Ready(redis::error_reply(&msg))).await;
                    let _ = slots_tx.send(Slot::Close).await;
                    conn.metrics.observe(std::time::Duration::ZERO, true);
                    break 'session;
                }
            };
            if cmd.is("QUIT") {
                flush_batch(&mut upstreams, &mut batch, &mut batch_target, &slots_tx).await;
                let _ = slots_tx
                    .send(Slot::Ready(Bytes::from_static(b"+OK\r\n")))
                    .await;
                let _ = slots_tx.send(Slot::Close).await;
                break 'session;
            }
            let target = target(&conn, &cmd);
            if enters_push_mode(&cmd) {
                flush_batch(&mut upstreams, &mut batch, &mut batch_target, &slots_tx).await;
                drop(slots_tx);
                let Ok(wr) = writer.await else { return };
                if let Target::Cluster(cluster, _) = target {
                    tunnel(
                        rd,
                        wr,
                        cluster,
                        &upstreams.state,
                        cmd.wire().clone(),
                        buf,
                        &conn,
                    )
                    .await;
                }
                return;
            }
            if is_session_state(&cmd) && matches!(target, Target::Cluster(..)) {
                upstreams.pending_state.push(cmd.wire().clone());
            }
            match target {
                Target::Reply(reply) => {
                    flush_batch(&mut upstreams, &mut batch, &mut batch_target, &slots_tx).await;
                    conn.metrics.observe(std::time::Duration::ZERO, true);
                    if slots_tx.send(Slot::Ready(reply)).await.is_err() {
                        break 'session;
                    }
                }
                Target::Cluster(cluster, timeout) => {
                    let same = batch_target
                        .as_ref()
                        .is_some_and(|(c, _)| Arc::ptr_eq(c, &cluster));
                    if !same {
                        flush_batch(&mut upstreams, &mut batch, &mut batch_target, &slots_tx).await;
                        batch_target = Some((cluster, timeout));
                    }
                    batch.push(cmd.wire().clone());
                }
            }
        }
        flush_batch(&mut upstreams, &mut batch, &mut batch_target, &slots_tx).await;
        if slots_tx.is_closed() {
            break;
        }
        // Idle means no command read *and* none waiting for its reply
        // (a blocking BLPOP may take longer than the idle timeout).
        let idle = conn.listener.idle_timeout;
        loop {
            tokio::select! {
                r = read_more(&mut rd, &mut buf, &conn.metrics) => match r {
                    Ok(0) | Err(_) => break 'session,
                    Ok(_) => break,
                },
                () = tokio::time::sleep(idle) => {
                    if in_flight.load(Ordering::Relaxed) == 0 {
                        break 'session;
                    }
                }
                () = drained(&mut conn.drain) => break 'session,
            }
        }
    }
    drop(slots_tx);
    if let Ok(mut wr) = writer.await {
        let _ = wr.shutdown().await;
    }
}

fn target(conn: &Conn, cmd: &Command) -> Target {
    let route = conn.listener.routes.route(Protocol::Redis, cmd);
    match route.map(|r| (&r.action, r.timeout)) {
        None => {
            let name = String::from_utf8_lossy(cmd.name());
            Target::Reply(redis::error_reply(&format!(
                "no route for command '{name}'"
            )))
        }
        Some((Action::Direct(d), _)) => Target::Reply(if (200..300).contains(&d.status) {
            let mut b = BytesMut::with_capacity(d.body.len() + 3);
            b.extend_from_slice(b"+");
            b.extend(
                d.body
                    .iter()
                    .map(|&c| if c == b'\r' || c == b'\n' { b' ' } else { c }),
            );
            b.extend_from_slice(b"\r\n");
            b.freeze()
        } else {
            redis::error_reply(&String::from_utf8_lossy(&d.body))
        }),
        Some((action, timeout)) => match action.cluster() {
            Some(c) => Target::Cluster(c.clone(), timeout.unwrap_or(c.request_timeout)),
            None => Target::Reply(redis::error_reply("no cluster available for this route")),
        },
    }
}

/// Commands whose effect lives on the connection; replayed on a tunnel's fresh connection.
fn is_session_state(cmd: &Command) -> bool {
    cmd.is("AUTH")
        || cmd.is("HELLO")
        || cmd.is("SELECT")
        || (cmd.is("CLIENT")
            && cmd
                .arg(1)
                .is_some_and(|a| a.eq_ignore_ascii_case(b"SETNAME")))
}

/// Commands after which the server sends frames nobody asked for.
fn enters_push_mode(cmd: &Command) -> bool {
    cmd.is("SUBSCRIBE") || cmd.is("PSUBSCRIBE") || cmd.is("SSUBSCRIBE") || cmd.is("MONITOR")
}

async fn flush_batch(
    upstreams: &mut Upstreams,
    batch: &mut Vec<Bytes>,
    target: &mut Option<(Arc<Cluster>, std::time::Duration)>,
    slots: &mpsc::Sender<Slot>,
) {
    let Some((cluster, timeout)) = target.take() else {
        return;
    };
    if batch.is_empty() {
        return;
    }
    let requests = std::mem::take(batch);
    let pending_state = std::mem::take(&mut upstreams.pending_state);
    let count = requests.len();
    let started = Instant::now();
    let slot = match upstreams.pipeline(&cluster).await {
        Ok(p) => {
            let rx = p.send(requests).await;
            Slot::Upstream {
                rx,
                count,
                deadline: Deadline::now() + timeout,
                started,
            }
        }
        Err(e) => {
            tracing::debug!(error = %e, "redis: no upstream");
            let one = redis::error_reply(&format!(
                "upstream connect error (cluster {})",
                cluster.name
            ));
            let mut all = BytesMut::with_capacity(one.len() * count);
            for _ in 0..count {
                all.extend_from_slice(&one);
            }
            Slot::Ready(all.freeze())
        }
    };
    upstreams.state.extend(pending_state);
    upstreams.in_flight.fetch_add(1, Ordering::Relaxed);
    let _ = slots.send(slot).await;
}

/// Write replies in slot order, gathering small ones into one write.
async fn write_replies(
    mut wr: WriteHalf,
    mut slots: mpsc::Receiver<Slot>,
    mut out_of_band: mpsc::UnboundedReceiver<Bytes>,
    metrics: ConnMetrics,
    in_flight: Arc<AtomicUsize>,
) -> WriteHalf {
    let mut out = BytesMut::with_capacity(16 * 1024);
    loop {
        let slot = match slots.try_recv() {
            Ok(slot) => slot,
            Err(mpsc::error::TryRecvError::Disconnected) => break,
            Err(mpsc::error::TryRecvError::Empty) => {
                if flush(&mut wr, &mut out, &metrics).await.is_err() {
                    return wr;
                }
                tokio::select! {
                    s = slots.recv() => match s { Some(s) => s, None => break },
                    Some(push) = out_of_band.recv() => { out.extend_from_slice(&push); continue }
                }
            }
        };
        match slot {
            Slot::Ready(b) => out.extend_from_slice(&b),
            Slot::Close => break,
            Slot::Upstream {
                mut rx,
                count,
                deadline,
                started,
            } => {
                let result = match rx.try_recv() {
                    Ok(r) => Ok(r),
                    Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {
                        Err("upstream connection closed".to_owned())
                    }
                    Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {
                        if flush(&mut wr, &mut out, &metrics).await.is_err() {
                            return wr;
                        }
                        match tokio::time::timeout_at(deadline, rx).await {
                            Ok(Ok(r)) => Ok(r),
                            Ok(Err(_)) => Err("upstream connection closed".to_owned()),
                            Err(_) => Err("upstream request timeout".to_owned()),
                        }
                    }
                };
                let took = started.elapsed();
                in_flight.fetch_sub(1, Ordering::Relaxed);
                match result {
                    Ok(Ok(replies)) => {
                        for r in replies {
                            out.extend_from_slice(&r);
                        }
                        metrics.requests.increment(count as u64);
                        metrics.latency.record(took.as_secs_f64());
                    }
                    Ok(Err(e)) => {
                        errors(&mut out, count, &format!("upstream error: {e}"), &metrics)
                    }
                    Err(e) => errors(&mut out, count, &e, &metrics),
                }
            }
        }
        if out.len() >= 64 * 1024 && flush(&mut wr, &mut out, &metrics).await.is_err() {
            return wr;
        }
    }
    while let Ok(push) = out_of_band.try_recv() {
        out.extend_from_slice(&push);
    }
    let _ = flush(&mut wr, &mut out, &metrics).await;
    wr
}

fn errors(out: &mut BytesMut, count: usize, message: &str, metrics: &ConnMetrics) {
    let reply = redis::error_reply(message);
    for _ in 0..count {
        out.extend_from_slice(&reply);
    }
    metrics.requests.increment(count as u64);
    metrics.errors.increment(count as u64);
}

async fn flush(
    wr: &mut WriteHalf,
    out: &mut BytesMut,
    metrics: &ConnMetrics,
) -> std::io::Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    wr.write_all(out).await?;
    metrics.bytes_out.increment(out.len() as u64);
    out.clear();
    Ok(())
}

/// Bind the client to one fresh upstream connection for the rest of the
/// session (pub/sub, MONITOR).
async fn tunnel(
    rd: ReadHalf,
    mut wr: WriteHalf,
    cluster: Arc<Cluster>,
    state: &[Bytes],
    first: Bytes,
    rest: BytesMut,
    conn: &Conn,
) {
    let mut up = match cluster.connect_any().await {
        Ok((_, up)) => up,
        Err(_) => {
            let msg = format!("upstream connect error (cluster {})", cluster.name);
            let _ = wr.write_all(&redis::error_reply(&msg)).await;
            return;
        }
    };
    if replay_state(&mut up, state, conn).await.is_err() {
        let _ = wr
            .write_all(&redis::error_reply(
                "upstream error while restoring the session",
            ))
            .await;
        return;
    }
    if up.write_all(&first).await.is_err() || up.write_all(&rest).await.is_err() {
        return;
    }
    let Some(down) = rd.reunite(wr) else { return };
    // Subscribers may wait silently for a long time: no idle cut, as redis-server.
    let _ = splice(down, up, None).await;
}

/// Send the session's state commands and read (and drop) their replies.
async fn replay_state(up: &mut TcpStream, state: &[Bytes], conn: &Conn) -> Result<(), ()> {
    if state.is_empty() {
        return Ok(());
    }
    for cmd in state {
        up.write_all(cmd).await.map_err(|_| ())?;
    }
    let mut decoder = ReplyDecoder::new(conn.listener.redis);
    let mut buf = BytesMut::with_capacity(4096);
    let mut left = state.len();
    while left > 0 {
        match decoder.decode(&mut buf) {
            Ok(Some(_)) => left -= 1,
            Ok(None) => {
                use tokio::io::AsyncReadExt;
                match tokio::time::timeout(std::time::Duration::from_secs(5), up.read_buf(&mut buf))
                    .await
                {
                    Ok(Ok(n)) if n > 0 => {}
                    _ => return Err(()),
                }
            }
            Err(_) => return Err(()),
        }
    }
    Ok(())
}
