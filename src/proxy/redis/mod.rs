//! Redis through the gateway: pipelined commands routed one by one (by command
//! and key), sent in batches on pipelined upstream connections, and answered
//! strictly in the order the client sent them.
//!
//! A session without connection state sends its batches over connections
//! shared with every other such session of the cluster host
//! (`clusters[].redis.shared_connections`, module `shared`). From its first
//! command that changes or holds connection state (`needs_own_connection`:
//! `SELECT`, `HELLO`, `AUTH`, `MULTI`, blocking pops ...) a session owns its
//! upstream connections (one per cluster it touches, host chosen once by the
//! cluster's balancer), so that state behaves as on a direct connection.
//! `SUBSCRIBE`-family commands and `MONITOR` turn the session into a tunnel
//! bound to one fresh upstream connection, on which the session's
//! `AUTH`/`HELLO`/`SELECT`/`CLIENT SETNAME` are replayed first.
//!
//! A sharded cluster (`clusters[].redis.sharding`) gets one connection per
//! shard per session; [`shard`] plans where each command goes and how split
//! commands' replies are merged. With `listeners[].redis.users`, the gateway
//! authenticates clients itself ([`crate::filters::redis_auth`]).

mod shard;
mod shared;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use crate::net::stream::{ReadHalf, Stream, WriteHalf};
use bytes::{Bytes, BytesMut};
use switchyard_codecs::redis::{self, Command, CommandDecoder, ReplyDecoder};
use switchyard_codecs::{Decoder, Field, Metadata, Protocol, WireHead};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio::time::Instant as Deadline;

use super::{Conn, drained, read_more};
use crate::error::{Error, ErrorKind};
use crate::filters::chain::Permit;
use crate::observe::{ClusterMetrics, ConnMetrics};
use crate::router::Action;
use crate::stream::pipeline::{self, Pipeline, ReplyReader};
use crate::stream::session::splice;
use crate::upstream::Cluster;

/// One place in the client's reply order.
enum Slot {
    /// A reply made by the gateway.
    Ready(Bytes),
    /// A new upstream connection's reply side; slots after it name it by `id`.
    Conn {
        id: u64,
        reader: Box<ReplyReader<ReplyDecoder>>,
    },
    /// The replies to `count` commands sent on connection `conn` as one batch.
    /// With `exec`, the batch is one `EXEC` whose reply the writer rebuilds.
    Upstream {
        conn: u64,
        count: usize,
        deadline: Deadline,
        started: Instant,
        exec: Option<Box<ExecPlan>>,
        stats: Arc<ClusterMetrics>,
    },
    /// The replies to `count` commands sent as one batch on a connection
    /// shared with other sessions ([`shared`]).
    Shared {
        replies: tokio::sync::oneshot::Receiver<shared::Replies>,
        /// Failed when the replies come too late.
        conn: Arc<shared::SharedConn>,
        count: usize,
        deadline: Deadline,
        started: Instant,
        stats: Arc<ClusterMetrics>,
    },
    /// The replies of a sharded run of commands: one batch per shard, put
    /// back in the client's order by the plan.
    Fanout(Box<FanoutSlot>),
    /// From here on, drop (`true`) or write (`false`) the client's replies:
    /// `CLIENT REPLY OFF|SKIP|ON`, kept by the gateway.
    Mute(bool),
    /// Flush and close the connection.
    Close,
    /// Every slot before this one is answered: tell the command side (which
    /// waits for it before its first command on its own connection, so the
    /// server runs the session's commands in order across connections).
    Barrier(tokio::sync::oneshot::Sender<()>),
    /// The commands before this slot are answered: release their places
    /// under the filters' concurrency limits.
    Release(Vec<Permit>),
}

/// A sent [`shard::Fanout`].
struct FanoutSlot {
    /// (connection, commands) per shard batch, or why it could not be sent.
    parts: Vec<Result<(u64, usize), String>>,
    plan: Vec<shard::Step>,
    count: usize,
    deadline: Deadline,
    started: Instant,
    limits: redis::Limits,
    stats: Arc<ClusterMetrics>,
}

/// The upstream connections of one client session.
struct Upstreams {
    /// Per (cluster, shard primary or replica — `None` for unsharded clusters).
    bound: Vec<(Arc<Cluster>, Option<shard::Dest>, u64, Pipeline)>,
    /// The id of the next connection opened.
    next_id: u64,
    limits: redis::Limits,
    /// State commands already sent (`AUTH`, `HELLO`, `SELECT`, `CLIENT SETNAME`):
    /// replayed first on every new upstream connection of the session.
    state: Vec<Bytes>,
    /// State commands in the batch being built; join `state` when it is sent.
    pending_state: Vec<Bytes>,
    /// Slots handed to the writer and not yet written (shared with it).
    in_flight: Arc<AtomicUsize>,
    /// Replicas that could not be reached, by (cluster, host), and when: their
    /// reads go to the primary for [`REPLICA_RETRY`] before trying again.
    replica_down: Vec<(Arc<Cluster>, usize, Instant)>,
}

/// How long a session sends reads to the primary after a replica failed.
const REPLICA_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

impl Upstreams {
    /// The session's connection to `host` of `cluster` (any host when
    /// `None`), opened (and its reply side handed to the writer through
    /// `slots`) if there is none: `(id, connection)`.
    async fn pipeline(
        &mut self,
        cluster: &Arc<Cluster>,
        host: Option<shard::Dest>,
        slots: &mpsc::Sender<Slot>,
    ) -> Result<(u64, &mut Pipeline), Error> {
        let at = self
            .bound
            .iter()
            .position(|(c, h, _, p)| Arc::ptr_eq(c, cluster) && *h == host && p.is_open());
        let at = match at {
            Some(i) => i,
            None => {
                self.bound
                    .retain(|(c, h, _, _)| !(Arc::ptr_eq(c, cluster) && *h == host));
                let stream = match host {
                    Some(shard::Dest {
                        host,
                        replica: false,
                    }) => cluster.connect(host).await?,
                    Some(shard::Dest {
                        host,
                        replica: true,
                    }) => cluster.connect_replica(host).await?,
                    None => cluster.connect_any().await?.1,
                };
                // Log in and restore the session on the new connection; the
                // replies to that are not the client's (the reader skips them).
                let restore: Vec<Bytes> =
                    login(cluster).iter().chain(&self.state).cloned().collect();
                let decoder = ReplyDecoder::new(self.limits);
                let (mut p, reader) = pipeline::split(stream, decoder, restore.len());
                let id = self.next_id;
                self.next_id += 1;
                let reader = Box::new(reader);
                if slots.send(Slot::Conn { id, reader }).await.is_err() {
                    return Err(Error::upstream(
                        crate::error::ErrorKind::UpstreamClosed,
                        "the client connection is closing",
                    ));
                }
                if !restore.is_empty() {
                    p.send(&restore).await;
                }
                self.bound.push((cluster.clone(), host, id, p));
                self.bound.len() - 1
            }
        };
        let (_, _, id, p) = &mut self.bound[at];
        Ok((*id, p))
    }
}

impl Upstreams {
    /// `dest`, or its shard's primary when `dest` is a replica that cannot be
    /// reached (now or within the last [`REPLICA_RETRY`]).
    async fn reachable(
        &mut self,
        cluster: &Arc<Cluster>,
        dest: shard::Dest,
        slots: &mpsc::Sender<Slot>,
    ) -> shard::Dest {
        if !dest.replica {
            return dest;
        }
        self.replica_down
            .retain(|(_, _, at)| at.elapsed() < REPLICA_RETRY);
        let down = self
            .replica_down
            .iter()
            .any(|(c, h, _)| Arc::ptr_eq(c, cluster) && *h == dest.host);
        if down {
            return dest.host.into();
        }
        if self.pipeline(cluster, Some(dest), slots).await.is_err() {
            self.replica_down
                .push((cluster.clone(), dest.host, Instant::now()));
            return dest.host.into();
        }
        dest
    }
}

/// The cluster's `AUTH`/`SELECT` for every new connection.
fn login(cluster: &Cluster) -> &[Bytes] {
    cluster.redis.as_ref().map_or(&[], |r| &r.login[..])
}

/// Where a command goes.
enum Target {
    Reply(Bytes),
    Cluster(Arc<Cluster>, std::time::Duration),
}

/// The run of commands being gathered for one upstream target.
enum Batch {
    None,
    /// Commands for an unsharded cluster, sent as one batch.
    Plain {
        cluster: Arc<Cluster>,
        timeout: std::time::Duration,
        requests: Vec<Bytes>,
        /// Replies expected (a command may have several, see [`redis::reply_count`]).
        replies: usize,
        /// The batch is one `EXEC` whose reply the writer rebuilds.
        exec: Option<Box<ExecPlan>>,
    },
    /// Commands for a sharded cluster: one batch per shard and a reply plan,
    /// placed with the shard map as it was when the run began.
    Sharded {
        cluster: Arc<Cluster>,
        timeout: std::time::Duration,
        fanout: shard::Fanout,
        map: Arc<crate::upstream::ShardMap>,
        replica_reads: bool,
    },
}

/// One session's command side: its upstreams, the batch being gathered and
/// the reply order.
struct Session {
    upstreams: Upstreams,
    batch: Batch,
    slots: mpsc::Sender<Slot>,
    sharding: shard::ShardSession,
    limits: redis::Limits,
    /// The client's `CLIENT REPLY` mode, as Redis keeps it.
    mode: ReplyMode,
    /// Whether the writer is dropping replies (the last [`Slot::Mute`] sent).
    muted: bool,
    /// Inside `MULTI` (commands answer `+QUEUED`).
    in_multi: bool,
    /// Filter permits of the commands gathered since the last flush: they
    /// are released once their replies are written.
    permits: Vec<Permit>,
    /// What `EXEC` will have to answer for (inside `MULTI`).
    txn: Transaction,
    /// The `MULTI` went to a sharded cluster (its `EXEC` is the shard plan's).
    txn_sharded: bool,
    /// The session changed connection state: its commands go on its own
    /// upstream connections from now on, never on shared ones.
    dedicated: bool,
    /// The shared connection this session uses, per cluster.
    shared: Vec<(Arc<Cluster>, Arc<shared::SharedConn>)>,
}

/// A transaction being queued, as far as `EXEC`'s reply depends on it.
///
/// Redis answers `EXEC` with an array of one reply per queued command, but
/// two kinds of command make that reply differ from "one frame per command":
/// a queued `CLIENT REPLY` runs inside `EXEC` (and silences, or turns back
/// on, the rest of the array and the commands after it), and a queued
/// `(P|S)(UN)SUBSCRIBE` writes one acknowledgement per channel into the
/// array, more elements than its length says. The gateway keeps the reply
/// mode itself, so it queues `CLIENT REPLY` on its own (`+QUEUED`) and, at
/// `EXEC`, rebuilds the array from the upstream's one (see [`write_exec`]).
#[derive(Debug, Default)]
struct Transaction {
    steps: Vec<TxStep>,
    /// Frames the upstream sends beyond its array's length (acknowledgements).
    extra: usize,
    /// Commands queued upstream (the upstream array's length).
    upstream: usize,
    /// `CLIENT REPLY`s queued by the gateway.
    settings: usize,
    /// Session-state commands queued (`SELECT`, `HELLO` ...): they join the
    /// session's state at `EXEC`, not when a `DISCARD` drops them.
    state: Vec<Bytes>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TxStep {
    /// Commands queued upstream with one reply each.
    Commands(usize),
    /// One (un)subscribe queued upstream: its acknowledgements, which Redis
    /// sends whatever the reply mode.
    Acks(usize),
    /// A `CLIENT REPLY` the gateway queued.
    Setting(ClientReply),
}

impl Transaction {
    /// `cmd` was queued upstream (not the commands Redis runs at once inside
    /// `MULTI`: `EXEC`, `DISCARD`, `MULTI`, `WATCH`, `QUIT`, `RESET`).
    fn queue(&mut self, cmd: &Command) {
        if ["EXEC", "DISCARD", "MULTI", "WATCH", "QUIT", "RESET"]
            .iter()
            .any(|n| cmd.is(n))
        {
            return;
        }
        self.upstream += 1;
        let subscribe = cmd.is("SUBSCRIBE") || cmd.is("PSUBSCRIBE") || cmd.is("SSUBSCRIBE");
        if subscribe || redis::is_unsubscribe(cmd) {
            // One acknowledgement per channel (an unsubscribe from all: one).
            let frames = cmd.argc().saturating_sub(1).max(1);
            self.extra += frames - 1;
            self.steps.push(TxStep::Acks(frames));
        } else if let Some(TxStep::Commands(n)) = self.steps.last_mut() {
            *n += 1;
        } else {
            self.steps.push(TxStep::Commands(1));
        }
    }

    fn queue_setting(&mut self, setting: ClientReply) {
        self.settings += 1;
        self.steps.push(TxStep::Setting(setting));
    }

    /// Whether `EXEC`'s reply needs rebuilding (else it passes as it is):
    /// with acknowledgements, which go out even when the rest is silenced.
    fn special(&self) -> bool {
        self.settings > 0 || self.steps.iter().any(|s| matches!(s, TxStep::Acks(_)))
    }

    fn clear(&mut self) {
        self.state.clear();
        self.steps.clear();
        self.extra = 0;
        self.upstream = 0;
        self.settings = 0;
    }
}

/// How the writer rebuilds one `EXEC` reply.
struct ExecPlan {
    steps: Vec<TxStep>,
    /// See [`Transaction`].
    extra: usize,
    upstream: usize,
    settings: usize,
    /// The reply mode when `EXEC` ran.
    mode: ReplyMode,
    limits: redis::Limits,
    /// Gets the reply mode after `EXEC` when a queued `CLIENT REPLY` ran
    /// (`None`: the transaction did not run).
    done: Option<tokio::sync::oneshot::Sender<Option<ReplyMode>>>,
}

/// `CLIENT REPLY ON|OFF|SKIP`, answered by the gateway itself: it keeps the
/// mode and drops the replies Redis would not send, so every upstream
/// connection still answers every command and replies stay in step.
#[derive(Debug, Default, Clone, Copy)]
struct ReplyMode {
    off: bool,
    /// The current command's reply is skipped.
    skip: bool,
    /// The next command's reply is skipped.
    skip_next: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientReply {
    On,
    Off,
    Skip,
}

/// `CLIENT REPLY ON|OFF|SKIP` (any case); other forms go to the server.
fn client_reply(cmd: &Command) -> Option<ClientReply> {
    if cmd.argc() != 3
        || !cmd.is("CLIENT")
        || !cmd.arg(1).is_some_and(|a| a.eq_ignore_ascii_case(b"REPLY"))
    {
        return None;
    }
    let a = cmd.arg(2)?;
    [
        (&b"ON"[..], ClientReply::On),
        (b"OFF", ClientReply::Off),
        (b"SKIP", ClientReply::Skip),
    ]
    .into_iter()
    .find_map(|(w, m)| a.eq_ignore_ascii_case(w).then_some(m))
}

impl ReplyMode {
    /// After an empty command (`*0`, a blank line), which Redis skips
    /// without a reply but resets the client for: a pending SKIP is used up.
    fn empty_command(&mut self) {
        self.skip = std::mem::take(&mut self.skip_next);
    }

    /// Whether the replies to `cmd` are dropped, updating the mode as
    /// redis-server does around one command (`setting`: `cmd` is a
    /// `CLIENT REPLY` the gateway answers).
    fn step(&mut self, cmd: &Command, setting: Option<ClientReply>, in_multi: bool) -> bool {
        let muted = match setting {
            Some(ClientReply::On) => {
                self.off = false;
                self.skip = false;
                false
            }
            Some(ClientReply::Off) => {
                self.off = true;
                true
            }
            Some(ClientReply::Skip) => {
                if !self.off {
                    self.skip_next = true;
                }
                true
            }
            // (`RESET` with arguments is refused: wrong number of arguments.)
            None if cmd.argc() == 1 && cmd.is("RESET") => {
                self.off = false;
                self.skip_next = false;
                self.skip
            }
            // Unsubscribe acknowledgements are pushes: Redis sends them anyway.
            None => (self.off || self.skip) && (in_multi || !redis::is_unsubscribe(cmd)),
        };
        self.skip = std::mem::take(&mut self.skip_next);
        muted
    }
}

impl Session {
    /// Have the writer drop (or write again) the replies queued from now on.
    async fn mute(&mut self, muted: bool) {
        if muted != self.muted {
            self.flush().await;
            self.muted = muted;
            let _ = self.slots.send(Slot::Mute(muted)).await;
        }
    }

    /// Send the gathered batch and queue its slot.
    async fn flush(&mut self) {
        let slot = match std::mem::replace(&mut self.batch, Batch::None) {
            Batch::None => return,
            Batch::Plain {
                cluster,
                timeout,
                requests,
                replies: count,
                exec: None,
            } if !self.dedicated && cluster.redis_shared_connections() > 0 => {
                let started = Instant::now();
                match self.shared_conn(&cluster).await {
                    Ok(c) => Slot::Shared {
                        replies: c.send(requests, count),
                        conn: c,
                        count,
                        deadline: Deadline::now() + timeout,
                        started,
                        stats: cluster.stats.clone(),
                    },
                    Err(e) => {
                        tracing::debug!(error = %e, "redis: no shared upstream");
                        connect_errors(&cluster, &e, count)
                    }
                }
            }
            Batch::Plain {
                cluster,
                timeout,
                requests,
                replies: count,
                exec,
            } => {
                let started = Instant::now();
                match self.upstreams.pipeline(&cluster, None, &self.slots).await {
                    Ok((conn, p)) => {
                        p.send(&requests).await;
                        Slot::Upstream {
                            conn,
                            count,
                            deadline: Deadline::now() + timeout,
                            started,
                            exec,
                            stats: cluster.stats.clone(),
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "redis: no upstream");
                        connect_errors(&cluster, &e, count)
                    }
                }
            }
            Batch::Sharded {
                cluster,
                timeout,
                fanout,
                ..
            } => {
                let started = Instant::now();
                let count = fanout.client_commands();
                let replies = fanout.reply_counts();
                let mut parts = Vec::with_capacity(fanout.parts.len());
                for ((dest, requests), expected) in fanout.parts.into_iter().zip(replies) {
                    let dest = self.upstreams.reachable(&cluster, dest, &self.slots).await;
                    let host = dest.host;
                    let sent = self
                        .upstreams
                        .pipeline(&cluster, Some(dest), &self.slots)
                        .await;
                    parts.push(match sent {
                        Ok((conn, p)) => {
                            p.send(&requests).await;
                            Ok((conn, expected))
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "redis: shard unreachable");
                            Err(format!(
                                "upstream connect error (cluster {}, shard {})",
                                cluster.name,
                                cluster
                                    .hosts
                                    .get(host)
                                    .map_or(String::new(), |h| h.address.to_string())
                            ))
                        }
                    });
                }
                Slot::Fanout(Box::new(FanoutSlot {
                    parts,
                    plan: fanout.plan,
                    count,
                    deadline: Deadline::now() + timeout,
                    started,
                    limits: self.limits,
                    stats: cluster.stats.clone(),
                }))
            }
        };
        let pending_state = std::mem::take(&mut self.upstreams.pending_state);
        self.upstreams.state.extend(pending_state);
        self.upstreams.in_flight.fetch_add(1, Ordering::Relaxed);
        let _ = self.slots.send(slot).await;
        if !self.permits.is_empty() {
            let permits = std::mem::take(&mut self.permits);
            let _ = self.slots.send(Slot::Release(permits)).await;
        }
    }

    /// The session's shared connection to `cluster`, (re)chosen when it has
    /// none or its connection ended.
    async fn shared_conn(
        &mut self,
        cluster: &Arc<Cluster>,
    ) -> Result<Arc<shared::SharedConn>, Error> {
        let at = self
            .shared
            .iter()
            .position(|(c, _)| Arc::ptr_eq(c, cluster));
        if let Some(i) = at
            && let Some((_, conn)) = self.shared.get(i)
            && conn.is_open()
        {
            return Ok(conn.clone());
        }
        let conn = shared::conn(cluster, self.limits).await?;
        match at.and_then(|i| self.shared.get_mut(i)) {
            Some(entry) => entry.1 = conn.clone(),
            None => self.shared.push((cluster.clone(), conn.clone())),
        }
        Ok(conn)
    }

    /// Queue a gateway-made reply (after what is gathered, to keep the order).
    async fn reply(&mut self, reply: Bytes) -> bool {
        if let Batch::Sharded { fanout, .. } = &mut self.batch {
            fanout.plan.push(shard::Step::Local(reply));
            return true;
        }
        self.flush().await;
        self.slots.send(Slot::Ready(reply)).await.is_ok()
    }

    /// Add a command for `cluster` to the batch (flushing the batch first when
    /// it was for another target).
    async fn command(
        &mut self,
        cmd: &Command,
        cluster: Arc<Cluster>,
        timeout: std::time::Duration,
    ) {
        let same = match &self.batch {
            Batch::None => false,
            Batch::Plain { cluster: c, .. } | Batch::Sharded { cluster: c, .. } => {
                Arc::ptr_eq(c, &cluster)
            }
        };
        if !same {
            self.flush().await;
            self.batch = if let Some(shards) = cluster.shards() {
                Batch::Sharded {
                    map: shards.map().clone(),
                    replica_reads: cluster.redis.as_ref().is_some_and(|r| r.reads_to_replicas),
                    cluster,
                    timeout,
                    fanout: shard::Fanout::default(),
                }
            } else {
                Batch::Plain {
                    cluster,
                    timeout,
                    requests: Vec::new(),
                    replies: 0,
                    exec: None,
                }
            };
        }
        match &mut self.batch {
            Batch::Plain {
                requests, replies, ..
            } => {
                requests.push(cmd.wire().clone());
                *replies += if self.in_multi {
                    self.txn.queue(cmd);
                    1
                } else {
                    redis::reply_count(cmd)
                };
            }
            Batch::Sharded {
                fanout,
                map,
                replica_reads,
                ..
            } => shard::plan(cmd, map, *replica_reads, &mut self.sharding, fanout),
            Batch::None => {}
        }
    }

    /// Send `EXEC` of a transaction whose reply the writer must rebuild (see
    /// [`Transaction`]) on its own; `mode` is the reply mode it runs in. When
    /// a `CLIENT REPLY` is queued, returns where the mode after `EXEC` comes.
    async fn exec(
        &mut self,
        cmd: &Command,
        cluster: Arc<Cluster>,
        timeout: std::time::Duration,
        mode: ReplyMode,
    ) -> Option<tokio::sync::oneshot::Receiver<Option<ReplyMode>>> {
        self.flush().await;
        let mut txn = std::mem::take(&mut self.txn);
        self.upstreams.pending_state.append(&mut txn.state);
        let (done, after) = if txn.settings > 0 {
            let (tx, rx) = tokio::sync::oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        self.batch = Batch::Plain {
            cluster,
            timeout,
            requests: vec![cmd.wire().clone()],
            replies: 1,
            exec: Some(Box::new(ExecPlan {
                steps: txn.steps,
                extra: txn.extra,
                upstream: txn.upstream,
                settings: txn.settings,
                mode,
                limits: self.limits,
                done,
            })),
        };
        self.flush().await;
        after
    }
}

/// Serve one downstream Redis connection; `buf` holds the bytes detection read.
pub async fn serve(stream: Stream, mut buf: BytesMut, mut conn: Conn) {
    let l = conn.listener.clone();
    let (mut rd, wr) = stream.into_split();
    let (slots_tx, slots_rx) = mpsc::channel::<Slot>(l.redis_max_pipeline.max(1));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let writer = tokio::spawn(write_replies(
        wr,
        slots_rx,
        conn.metrics.clone(),
        in_flight.clone(),
    ));
    let mut session = Session {
        upstreams: Upstreams {
            bound: Vec::new(),
            limits: l.redis,
            next_id: 0,
            state: Vec::new(),
            pending_state: Vec::new(),
            in_flight: in_flight.clone(),
            replica_down: Vec::new(),
        },
        batch: Batch::None,
        slots: slots_tx,
        sharding: shard::ShardSession::default(),
        limits: l.redis,
        mode: ReplyMode::default(),
        muted: false,
        in_multi: false,
        permits: Vec::new(),
        txn: Transaction::default(),
        txn_sharded: false,
        dedicated: false,
        shared: Vec::new(),
    };
    let mut decoder = CommandDecoder::new(l.redis);
    let mut authed = l.redis_auth.is_none();
    let mut head = crate::net::deadline::HeadDeadline::new(l.request_head_timeout);

    'session: loop {
        let before = buf.len();
        // Decode every command the buffer holds, batching runs that go to the same cluster.
        loop {
            let len = buf.len();
            let decoded = decoder.decode(&mut buf);
            // Bytes consumed that are no command's were empty commands (`*0`,
            // a blank line): Redis resets the client after them as after any.
            let wire = decoded
                .as_ref()
                .map_or(0, |c| c.as_ref().map_or(0, |c| c.wire().len()));
            if len - buf.len() > wire {
                session.mode.empty_command();
            }
            let mut cmd = match decoded {
                Ok(Some(cmd)) => cmd,
                Ok(None) => break,
                Err(e) => {
                    // Sent in the mode of the command it stands for.
                    let muted = session.mode.off || session.mode.skip;
                    session.mute(muted).await;
                    session.reply(decoder.error_reply(&e)).await;
                    session.flush().await;
                    let _ = session.slots.send(Slot::Close).await;
                    conn.metrics.observe(std::time::Duration::ZERO, true);
                    break 'session;
                }
            };
            let setting = client_reply(&cmd);
            // Inside MULTI, Redis queues CLIENT REPLY and runs it at EXEC.
            let queued = session.in_multi && setting.is_some();
            let mode = session.mode;
            let muted = session
                .mode
                .step(&cmd, setting.filter(|_| !queued), session.in_multi);
            session.mute(muted).await;
            if let Some(setting) = setting {
                // Answered here: every upstream connection keeps answering.
                let reply = if queued && session.txn_sharded {
                    redis::error_reply(
                        "CLIENT REPLY inside MULTI is not supported on a sharded cluster",
                    )
                } else if queued {
                    // Queued by the gateway, which keeps the reply mode: EXEC's
                    // reply is rebuilt as Redis would give it.
                    session.txn.queue_setting(setting);
                    Bytes::from_static(b"+QUEUED\r\n")
                } else if setting == ClientReply::On {
                    Bytes::from_static(b"+OK\r\n")
                } else {
                    continue;
                };
                if !session.reply(reply).await {
                    break 'session;
                }
                continue;
            }
            if session.in_multi && session.txn_sharded && redis::reply_count(&cmd) > 1 {
                // EXEC's reply would carry one reply per channel but count one.
                let refused = redis::error_reply(&format!(
                    "'{}' with several channels inside MULTI is not supported on a sharded cluster",
                    String::from_utf8_lossy(cmd.name()).to_lowercase()
                ));
                if !session.reply(refused).await {
                    break 'session;
                }
                continue;
            }
            if cmd.is("QUIT") {
                session.reply(Bytes::from_static(b"+OK\r\n")).await;
                session.flush().await;
                let _ = session.slots.send(Slot::Close).await;
                break 'session;
            }
            if let Some(auth) = &l.redis_auth {
                use crate::filters::redis_auth::AuthStep;
                match auth.check(&cmd, &mut authed) {
                    AuthStep::Pass => {}
                    AuthStep::Hello(hello) => cmd = hello,
                    AuthStep::Reply(reply) => {
                        conn.metrics
                            .observe(std::time::Duration::ZERO, !reply.starts_with(b"+"));
                        if !session.reply(reply).await {
                            break 'session;
                        }
                        continue;
                    }
                }
            }
            let route = conn
                .listener
                .routes
                .route_to(Protocol::Redis, &cmd, conn.destination);
            let size = Some(cmd.wire().len() as u64);
            let target = target(route, &cmd, conn.destination);
            let admitted = match conn.admit(Protocol::Redis, &cmd, route, size).await {
                Ok(mut permit) => match &target {
                    Target::Cluster(cluster, _) => cluster.enter(&mut permit).map(|()| permit),
                    Target::Reply(_) => Ok(permit),
                },
                Err(refusal) => Err(refusal),
            };
            let admitted = admitted.map(|mut permit| {
                // Only reads are copied: a shadow that took writes would
                // diverge from (or, sharing data, corrupt) the primary.
                if let Some(mirror) = conn.mirror(&mut permit)
                    && matches!(target, Target::Cluster(..))
                    && cmd.is_read_only()
                    && !session.in_multi
                {
                    mirror.redis(cmd.wire().clone(), cmd.get(&Field::Key));
                }
                permit
            });
            match admitted {
                Ok(permit) if permit.is_empty() => {}
                Ok(permit) => session.permits.push(permit),
                Err(refusal) => {
                    conn.metrics.observe(std::time::Duration::ZERO, true);
                    if !session.reply(redis::error_reply(&refusal.message)).await || refusal.close {
                        break 'session;
                    }
                    continue;
                }
            }
            if enters_push_mode(&cmd) && !session.in_multi {
                if let Target::Cluster(cluster, _) = &target
                    && cluster.shards().is_some_and(|s| s.map().hosts().len() > 1)
                    && !cmd.is("SUBSCRIBE")
                    && !cmd.is("PSUBSCRIBE")
                    && !cmd.is("SSUBSCRIBE")
                {
                    let refused = redis::error_reply(&format!(
                        "'{}' is not supported on a sharded cluster: commands go to several servers",
                        String::from_utf8_lossy(cmd.name()).to_lowercase()
                    ));
                    if !session.reply(refused).await {
                        break 'session;
                    }
                    continue;
                }
                session.flush().await;
                let Session {
                    upstreams,
                    slots,
                    mode: session_mode,
                    ..
                } = session;
                drop(slots);
                let Ok(wr) = writer.await else { return };
                if let Target::Cluster(cluster, _) = target {
                    // Pub/sub of a sharded cluster lives on its first shard.
                    let host = cluster.shards().map(|s| s.map().home());
                    // The reply mode goes along: the server keeps it from here.
                    let first = match (session_mode.off, muted) {
                        (true, _) => [
                            &b"*3\r\n$6\r\nCLIENT\r\n$5\r\nREPLY\r\n$3\r\nOFF\r\n"[..],
                            cmd.wire(),
                        ]
                        .concat(),
                        (false, true) => [
                            &b"*3\r\n$6\r\nCLIENT\r\n$5\r\nREPLY\r\n$4\r\nSKIP\r\n"[..],
                            cmd.wire(),
                        ]
                        .concat(),
                        (false, false) => cmd.wire().to_vec(),
                    };
                    tunnel(
                        rd,
                        wr,
                        cluster,
                        host,
                        &upstreams.state,
                        Bytes::from(first),
                        buf,
                        &conn,
                    )
                    .await;
                }
                return;
            }
            if !session.dedicated
                && matches!(target, Target::Cluster(..))
                && needs_own_connection(&cmd)
            {
                // Commands already gathered still go on the shared connection,
                // and run before any on the session's own.
                session.flush().await;
                session.dedicated = true;
                if !session.shared.is_empty() {
                    let (done, answered) = tokio::sync::oneshot::channel();
                    if session.slots.send(Slot::Barrier(done)).await.is_ok() {
                        let _ = answered.await;
                    }
                }
            }
            if is_session_state(&cmd) && matches!(target, Target::Cluster(..)) {
                if session.in_multi && !cmd.is("RESET") {
                    session.txn.state.push(cmd.wire().clone());
                } else {
                    session.upstreams.pending_state.push(cmd.wire().clone());
                }
            }
            let sharded = matches!(&target, Target::Cluster(c, _) if c.shards().is_some());
            match target {
                Target::Reply(reply) => {
                    conn.metrics.observe(std::time::Duration::ZERO, true);
                    if !session.reply(reply).await {
                        break 'session;
                    }
                }
                Target::Cluster(cluster, timeout)
                    if session.in_multi
                        && !sharded
                        && cmd.argc() == 1
                        && cmd.is("EXEC")
                        && session.txn.special() =>
                {
                    if let Some(after) = session.exec(&cmd, cluster, timeout, mode).await {
                        // The next commands run in the mode EXEC leaves (a
                        // transaction that did not run leaves it as it was).
                        if let Ok(Some(after)) = after.await {
                            session.mode = after;
                        }
                    }
                }
                Target::Cluster(cluster, timeout) => session.command(&cmd, cluster, timeout).await,
            }
            // As Redis: EXEC ends a transaction even when refused (wrong
            // arity: -EXECABORT), DISCARD only when it runs.
            if session.in_multi
                && (cmd.is("EXEC") || (cmd.argc() == 1 && (cmd.is("RESET") || cmd.is("DISCARD"))))
            {
                if cmd.argc() == 1 && cmd.is("EXEC") {
                    // (Replayed even if the transaction did not run: rare.)
                    let state = &mut session.txn.state;
                    session.upstreams.pending_state.append(state);
                }
                session.in_multi = false;
                session.txn.clear();
            } else if !session.in_multi && cmd.argc() == 1 && cmd.is("MULTI") {
                session.in_multi = true;
                session.txn.clear();
                session.txn_sharded = sharded;
            }
        }
        session.flush().await;
        if session.slots.is_closed() {
            break;
        }
        // Idle means no command read *and* none waiting for its reply
        // (a blocking BLPOP may take longer than the idle timeout).
        let idle = conn.listener.idle_timeout;
        // A command begun must end within request_head_timeout (slowloris).
        head.update(buf.len() < before, !buf.is_empty());
        // Whether a reply was still due at the last idle tick: the idle time
        // then starts at that tick, not before (a reply written just before
        // a tick is activity, and the client's next command may be on its way).
        let mut busy = in_flight.load(Ordering::Relaxed) != 0;
        loop {
            tokio::select! {
                r = read_more(&mut rd, &mut buf, &conn.metrics) => match r {
                    Ok(0) | Err(_) => break 'session,
                    Ok(_) => break,
                },
                () = head.expired() => {
                    let msg = format!(
                        "command not complete within request_head_timeout ({:?})",
                        l.request_head_timeout
                    );
                    session.reply(redis::error_reply(&msg)).await;
                    session.flush().await;
                    let _ = session.slots.send(Slot::Close).await;
                    conn.metrics.observe(std::time::Duration::ZERO, true);
                    break 'session;
                }
                () = tokio::time::sleep(idle) => {
                    let due = in_flight.load(Ordering::Relaxed) != 0;
                    if !due && !busy {
                        break 'session;
                    }
                    busy = due;
                }
                () = drained(&mut conn.drain) => break 'session,
            }
        }
    }
    drop(session);
    if let Ok(mut wr) = writer.await {
        let _ = wr.shutdown().await;
    }
}

fn target(
    route: Option<&crate::router::Route>,
    cmd: &Command,
    destination: Option<std::net::SocketAddr>,
) -> Target {
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
            Some(c) => Target::Cluster(
                c.for_destination(destination),
                timeout.unwrap_or(c.request_timeout),
            ),
            None => Target::Reply(redis::error_reply("no cluster available for this route")),
        },
    }
}

/// Commands whose effect lives on the connection; replayed on a tunnel's fresh connection.
fn is_session_state(cmd: &Command) -> bool {
    cmd.is("AUTH")
        || cmd.is("HELLO")
        || cmd.is("SELECT")
        || (cmd.argc() == 1 && cmd.is("RESET"))
        || cmd.is("REPLCONF")
        || (cmd.is("CLIENT")
            && cmd
                .arg(1)
                .is_some_and(|a| a.eq_ignore_ascii_case(b"SETNAME")))
}

/// Commands that change (or depend on) the state of the connection they run
/// on, or hold it: after one, the session no longer shares upstream
/// connections with others. Conservative: every `CLIENT` subcommand but
/// `SETINFO` (`REPLY` never gets here: the gateway answers it).
fn needs_own_connection(cmd: &Command) -> bool {
    const STATEFUL: &[&str] = &[
        "AUTH",
        "HELLO",
        "SELECT",
        "RESET",
        "REPLCONF",
        "MULTI",
        "WATCH",
        "UNWATCH",
        "EXEC",
        "DISCARD",
        "READONLY",
        "READWRITE",
        "ASKING",
        "BLPOP",
        "BRPOP",
        "BRPOPLPUSH",
        "BLMOVE",
        "BLMPOP",
        "BZPOPMIN",
        "BZPOPMAX",
        "BZMPOP",
        "XREAD",
        "XREADGROUP",
        "WAIT",
        "WAITAOF",
        "UNSUBSCRIBE",
        "PUNSUBSCRIBE",
        "SUNSUBSCRIBE",
        "SUBSCRIBE",
        "PSUBSCRIBE",
        "SSUBSCRIBE",
        "MONITOR",
        "SYNC",
        "PSYNC",
        "QUIT",
    ];
    if cmd.is("CLIENT") {
        return !cmd
            .arg(1)
            .is_some_and(|a| a.eq_ignore_ascii_case(b"SETINFO"));
    }
    STATEFUL.iter().any(|n| cmd.is(n))
}

/// `count` connect errors for `cluster`, as one reply slot.
/// `count` replies saying the upstream could not be had: a circuit
/// breaker's own words, else a connect error.
fn connect_errors(cluster: &Cluster, e: &Error, count: usize) -> Slot {
    let one = redis::error_reply(&if e.kind() == ErrorKind::Overflow {
        e.to_string()
    } else {
        format!("upstream connect error (cluster {})", cluster.name)
    });
    let mut all = BytesMut::with_capacity(one.len() * count);
    for _ in 0..count {
        all.extend_from_slice(&one);
    }
    Slot::Ready(all.freeze())
}

/// Commands after which the server sends frames nobody asked for (or, for
/// `SYNC`/`PSYNC`, a replication stream).
fn enters_push_mode(cmd: &Command) -> bool {
    cmd.is("SUBSCRIBE")
        || cmd.is("PSUBSCRIBE")
        || cmd.is("SSUBSCRIBE")
        || cmd.is("MONITOR")
        || cmd.is("SYNC")
        || cmd.is("PSYNC")
}

/// The reply sides of a session's upstream connections, by id.
type Readers = Vec<(u64, Box<ReplyReader<ReplyDecoder>>)>;

/// The next `count` replies of connection `conn`, before `deadline`. When
/// they are not all there yet, what is gathered for the client is written
/// first. A late reply ends the connection (later replies could no longer be
/// matched to their commands).
async fn await_replies(
    readers: &mut Readers,
    conn: u64,
    count: usize,
    deadline: Deadline,
    client: (&mut WriteHalf, &mut BytesMut, &ConnMetrics),
) -> Result<Vec<Bytes>, String> {
    let Some((_, reader)) = readers.iter_mut().find(|(id, _)| *id == conn) else {
        return Err("upstream connection closed".to_owned());
    };
    let mut left = count;
    let mut replies = Vec::with_capacity(count);
    // Already here? Then no write to the client before taking them.
    let now = {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        reader.poll_replies(&mut cx, &mut left, &mut replies)
    };
    if let std::task::Poll::Ready(r) = now {
        return r.map(|()| replies);
    }
    let (wr, out, metrics) = client;
    if flush(wr, out, metrics).await.is_err() {
        return Err("the client connection is closed".to_owned());
    }
    let wait = std::future::poll_fn(|cx| reader.poll_replies(cx, &mut left, &mut replies));
    match tokio::time::timeout_at(deadline, wait).await {
        Ok(r) => r.map(|()| replies),
        Err(_) => {
            reader.fail("upstream request timeout");
            Err("upstream request timeout".to_owned())
        }
    }
}

/// Write replies in slot order, gathering small ones into one write. Reads
/// the upstream connections itself (their reply sides arrive as
/// [`Slot::Conn`]), and passes on out-of-band frames while idle.
async fn write_replies(
    mut wr: WriteHalf,
    mut slots: mpsc::Receiver<Slot>,
    metrics: ConnMetrics,
    in_flight: Arc<AtomicUsize>,
) -> WriteHalf {
    let mut out = BytesMut::with_capacity(16 * 1024);
    let mut readers: Readers = Vec::new();
    // CLIENT REPLY OFF/SKIP: replies are read and dropped, pushes still go out.
    let mut muted = false;
    loop {
        let slot = match slots.try_recv() {
            Ok(slot) => slot,
            Err(mpsc::error::TryRecvError::Disconnected) => break,
            Err(mpsc::error::TryRecvError::Empty) => {
                if flush(&mut wr, &mut out, &metrics).await.is_err() {
                    return wr;
                }
                let idle = std::future::poll_fn(|cx| {
                    let mut any = false;
                    for (_, r) in readers.iter_mut() {
                        any |= r.poll_unsolicited(cx, &mut out).is_ready();
                    }
                    if any {
                        std::task::Poll::Ready(())
                    } else {
                        std::task::Poll::Pending
                    }
                });
                tokio::select! {
                    s = slots.recv() => match s { Some(s) => s, None => break },
                    () = idle => continue,
                }
            }
        };
        match slot {
            Slot::Ready(b) => {
                if !muted {
                    out.extend_from_slice(&b);
                }
            }
            Slot::Mute(m) => muted = m,
            Slot::Release(permits) => drop(permits),
            Slot::Close => break,
            Slot::Barrier(done) => {
                let _ = done.send(());
            }
            Slot::Conn { id, reader } => {
                readers.retain(|(_, r)| !r.is_failed());
                readers.push((id, reader));
            }
            Slot::Upstream {
                conn,
                count,
                deadline,
                started,
                exec,
                stats,
            } => {
                let client = (&mut wr, &mut out, &metrics);
                let mut result = await_replies(&mut readers, conn, count, deadline, client).await;
                if let (Some(plan), Ok(replies)) = (exec, &mut result) {
                    let client = (&mut wr, &mut out, &metrics);
                    let after =
                        write_exec(&mut readers, conn, deadline, &plan, replies, client).await;
                    if let Some(done) = plan.done {
                        let _ = done.send(after);
                    }
                }
                let took = started.elapsed();
                stats.observe(count as u64, took);
                in_flight.fetch_sub(1, Ordering::Relaxed);
                match result {
                    Ok(replies) => {
                        for r in replies {
                            if !muted || r.first() == Some(&b'>') {
                                out.extend_from_slice(&r);
                            }
                        }
                        metrics.requests.increment(count as u64);
                        metrics.latency.record(took.as_secs_f64());
                    }
                    Err(e) if muted => errors(&mut BytesMut::new(), count, &e, &metrics),
                    Err(e) => errors(&mut out, count, &e, &metrics),
                }
            }
            Slot::Shared {
                mut replies,
                conn,
                count,
                deadline,
                started,
                stats,
            } => {
                let result = match replies.try_recv() {
                    Ok(r) => r,
                    Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {
                        Err("upstream connection closed".to_owned())
                    }
                    Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {
                        if flush(&mut wr, &mut out, &metrics).await.is_err() {
                            return wr;
                        }
                        match tokio::time::timeout_at(deadline, replies).await {
                            Ok(Ok(r)) => r,
                            Ok(Err(_)) => Err("upstream connection closed".to_owned()),
                            Err(_) => {
                                conn.fail("upstream request timeout");
                                Err("upstream request timeout".to_owned())
                            }
                        }
                    }
                };
                stats.observe(count as u64, started.elapsed());
                in_flight.fetch_sub(1, Ordering::Relaxed);
                match result {
                    Ok(replies) => {
                        if !muted {
                            for r in replies {
                                out.extend_from_slice(&r);
                            }
                        }
                        metrics.requests.increment(count as u64);
                        metrics.latency.record(started.elapsed().as_secs_f64());
                    }
                    Err(e) if muted => errors(&mut BytesMut::new(), count, &e, &metrics),
                    Err(e) => errors(&mut out, count, &e, &metrics),
                }
            }
            Slot::Fanout(f) => {
                let FanoutSlot {
                    parts,
                    plan,
                    count,
                    deadline,
                    started,
                    limits,
                    stats,
                } = *f;
                let mut replies = Vec::with_capacity(parts.len());
                for part in parts {
                    let result = match part {
                        Err(e) => Err(e),
                        Ok((conn, n)) => {
                            let client = (&mut wr, &mut out, &metrics);
                            await_replies(&mut readers, conn, n, deadline, client).await
                        }
                    };
                    replies.push(result.map(std::collections::VecDeque::from));
                }
                stats.observe(count as u64, started.elapsed());
                in_flight.fetch_sub(1, Ordering::Relaxed);
                let failed = if muted {
                    write_plan(&mut BytesMut::new(), plan, &mut replies, limits)
                } else {
                    write_plan(&mut out, plan, &mut replies, limits)
                };
                metrics.requests.increment(count as u64);
                metrics.errors.increment(failed as u64);
                metrics.latency.record(started.elapsed().as_secs_f64());
            }
        }
        if out.len() >= 64 * 1024 && flush(&mut wr, &mut out, &metrics).await.is_err() {
            return wr;
        }
    }
    let _ = flush(&mut wr, &mut out, &metrics).await;
    wr
}

/// `EXEC`'s reply as Redis would send it to this client (see [`Transaction`]),
/// written to `out` in place of `replies` (which it empties); the reply mode
/// after it when it ran.
///
/// The upstream ran the transaction without the gateway's `CLIENT REPLY`s:
/// its array has one element per command it queued, followed by the
/// acknowledgements beyond the first of each (un)subscribe. The client's array
/// counts every queued command; from the header on, each reply is written
/// or dropped in the reply mode of its moment in the transaction, as Redis
/// does (acknowledgements and pushes always go out).
async fn write_exec(
    readers: &mut Readers,
    conn: u64,
    deadline: Deadline,
    plan: &ExecPlan,
    replies: &mut Vec<Bytes>,
    client: (&mut WriteHalf, &mut BytesMut, &ConnMetrics),
) -> Option<ReplyMode> {
    use std::collections::VecDeque;
    let (wr, out, metrics) = client;
    let mut frames = std::mem::take(replies);
    let reply = frames.pop()?;
    let mut mode = plan.mode;
    // Pushes that came ahead of the reply.
    for f in &frames {
        out.extend_from_slice(f);
    }
    let put = |out: &mut BytesMut, frame: &[u8], mode: ReplyMode| {
        if !(mode.off || mode.skip) {
            out.extend_from_slice(frame);
        }
    };
    if reply.first() != Some(&b'*') || reply.starts_with(b"*-") {
        // -EXECABORT, or a null array (WATCH): nothing ran.
        put(out, &reply, mode);
        return None;
    }
    let elements = redis::array_elements(&reply, plan.limits).filter(|e| e.len() == plan.upstream);
    let mut more = Vec::new();
    if plan.extra > 0 {
        let client = (&mut *wr, &mut *out, metrics);
        match await_replies(readers, conn, plan.extra, deadline, client).await {
            Ok(m) => more = m,
            Err(e) => {
                put(out, &reply, mode);
                out.extend_from_slice(&redis::error_reply(&e));
                return None;
            }
        }
    }
    let (oob, more): (Vec<Bytes>, Vec<Bytes>) =
        more.into_iter().partition(|f| redis::is_out_of_band(f));
    let Some(elements) = elements else {
        // Not the array the gateway expected: passed on as it came.
        put(out, &reply, mode);
        for f in more.iter().chain(&oob) {
            out.extend_from_slice(f);
        }
        return None;
    };
    let mut elements = VecDeque::from(elements);
    elements.extend(more);
    put(
        out,
        format!("*{}\r\n", plan.upstream + plan.settings).as_bytes(),
        mode,
    );
    let mut skip_next = false;
    for step in &plan.steps {
        match *step {
            TxStep::Commands(n) => {
                for f in elements.drain(..n.min(elements.len())) {
                    put(out, &f, mode);
                }
            }
            TxStep::Acks(n) => {
                for f in elements.drain(..n.min(elements.len())) {
                    out.extend_from_slice(&f);
                }
            }
            TxStep::Setting(ClientReply::On) => {
                mode.off = false;
                mode.skip = false;
                out.extend_from_slice(b"+OK\r\n");
            }
            TxStep::Setting(ClientReply::Off) => mode.off = true,
            TxStep::Setting(ClientReply::Skip) => skip_next |= !mode.off,
        }
    }
    for f in &oob {
        out.extend_from_slice(f);
    }
    // After EXEC, as after any command: a SKIP run inside applies to the next.
    Some(ReplyMode {
        off: mode.off,
        skip: skip_next,
        skip_next: false,
    })
}

/// The part replies of a fanout, each a queue (or why the part failed).
type PartReplies = Vec<Result<std::collections::VecDeque<Bytes>, String>>;

/// The next reply of part `p`; push frames met on the way go straight out.
fn next_reply(out: &mut BytesMut, replies: &mut PartReplies, p: u16) -> Result<Bytes, String> {
    match replies.get_mut(usize::from(p)) {
        Some(Ok(queue)) => loop {
            match queue.pop_front() {
                Some(r) if redis::is_out_of_band(&r) => out.extend_from_slice(&r),
                Some(r) => return Ok(r),
                None => return Err("upstream sent fewer replies than commands".to_owned()),
            }
        },
        Some(Err(e)) => Err(e.clone()),
        None => Err("internal: no such shard batch".to_owned()),
    }
}

/// Write a fanout's replies in the client's order; the number of commands
/// answered with an upstream failure.
fn write_plan(
    out: &mut BytesMut,
    plan: Vec<shard::Step>,
    replies: &mut PartReplies,
    limits: redis::Limits,
) -> usize {
    let mut failed = 0;
    for step in plan {
        let reply = match step {
            shard::Step::Local(b) => Ok(b),
            shard::Step::Forward(p) => next_reply(out, replies, p),
            shard::Step::Discard(p) => {
                let _ = next_reply(out, replies, p);
                continue;
            }
            shard::Step::Merge(how, parts) => parts
                .iter()
                .map(|&p| next_reply(out, replies, p))
                .collect::<Result<Vec<_>, _>>()
                .map(|rs| shard::merge(&how, &rs, limits)),
        };
        match reply {
            Ok(r) => out.extend_from_slice(&r),
            Err(e) => {
                failed += 1;
                out.extend_from_slice(&redis::error_reply(&e));
            }
        }
    }
    failed
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
/// session (pub/sub, MONITOR): to `host`, or any host of an unsharded cluster.
#[allow(clippy::too_many_arguments)]
async fn tunnel(
    rd: ReadHalf,
    mut wr: WriteHalf,
    cluster: Arc<Cluster>,
    host: Option<usize>,
    state: &[Bytes],
    first: Bytes,
    rest: BytesMut,
    conn: &Conn,
) {
    let connected = match host {
        Some(i) => cluster.connect(i).await,
        None => cluster.connect_any().await.map(|(_, s)| s),
    };
    let mut up = match connected {
        Ok(up) => up,
        Err(e) => {
            let msg = if e.kind() == ErrorKind::Overflow {
                e.to_string()
            } else {
                format!("upstream connect error (cluster {})", cluster.name)
            };
            let _ = wr.write_all(&redis::error_reply(&msg)).await;
            return;
        }
    };
    let restore: Vec<Bytes> = login(&cluster).iter().chain(state).cloned().collect();
    if replay_state(&mut up, &restore, conn).await.is_err() {
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
async fn replay_state(
    up: &mut crate::upstream::UpstreamConn,
    state: &[Bytes],
    conn: &Conn,
) -> Result<(), ()> {
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
