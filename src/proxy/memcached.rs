//! memcached through the gateway (text protocol, classic and meta
//! commands): requests routed one by one (by command and key), sent in
//! batches on pipelined upstream connections ([`crate::stream::pipeline`]),
//! and answered strictly in the order the client sent them.
//!
//! A cluster with a `memcached` block is a pool sharded by ketama exactly as
//! a twemproxy memcached pool ([`crate::upstream::Shards::memcached`]): each
//! key goes to its owner; a `get`/`gets`/`gat`/`gats` whose keys span
//! servers is split into one request per server and the `VALUE` blocks
//! merged back in the client's key order under one `END`. Without the block
//! the hosts are copies and the session uses one of them.
//!
//! * `noreply` requests are forwarded and no reply is waited for (as
//!   memcached and twemproxy do); a meta command's quiet flag `q` is taken
//!   off on the way up and the reply the server would have suppressed (`EN`
//!   for `mg`, `HD` for `ms`/`md`/`ma`) is dropped, so the pipeline keeps
//!   count; `mn` is answered `MN` by the gateway once every earlier request
//!   is answered.
//! * `version` and `stats` go to the pool's first server; `flush_all` and
//!   `verbosity` to every server (`OK` when all said so); `quit` closes.
//! * A line memcached would refuse is answered as memcached would (`ERROR`,
//!   `CLIENT_ERROR ...`) without going upstream; a server that cannot be
//!   reached or answers too late makes its requests answer
//!   `SERVER_ERROR ...`, and requests for other servers carry on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use switchyard_codecs::memcached::{self, Reply, ReplyDecoder, Request, RequestDecoder, Verb};
use switchyard_codecs::{Decoder, Protocol};
use tokio::io::AsyncWriteExt;

use super::{Conn, drained, read_more};
use crate::filters::chain::Permit;
use crate::net::stream::Stream;
use crate::router::Action;
use crate::stream::pipeline::{self, Pipeline, ReplyFrame, ReplyReader};
use crate::upstream::Cluster;

impl ReplyFrame for Reply {
    fn into_wire(self) -> Bytes {
        self.wire().clone()
    }
    fn is_out_of_band(&self) -> bool {
        false
    }
}

/// Most requests decoded into one batch before it is sent.
const MAX_BATCH: usize = 256;

/// One upstream connection of the session.
struct Upstream {
    cluster: Arc<Cluster>,
    /// The shard's host (sharded pools), `None`: the session's one host.
    host: Option<usize>,
    pipeline: Pipeline,
    replies: ReplyReader<ReplyDecoder>,
}

/// What one batch sends to one upstream connection.
struct Part {
    cluster: Arc<Cluster>,
    host: Option<usize>,
    timeout: Duration,
    requests: Vec<Bytes>,
    /// Replies expected (requests without `noreply`).
    expect: usize,
    /// The replies, or why there are none.
    replies: Result<std::vec::IntoIter<Bytes>, String>,
}

/// What one client request becomes in the reply order.
enum Step {
    /// A reply made by the gateway.
    Local(Bytes),
    /// The next reply of a part, as it is (`drop_if`: a quiet meta command's
    /// suppressed reply).
    Forward { part: usize, quiet: Option<Request> },
    /// The next reply of each of these parts, all `OK` or the first other.
    AllOk(Vec<usize>),
    /// A split retrieval: per key, the part that holds it.
    Gather { keys: Vec<(Bytes, usize)> },
    /// Nothing to write (`noreply`).
    Silent,
    /// Write what came before, then close.
    Quit,
}

/// Answer as memcached does to an error of the gateway's or an upstream's.
fn server_error(why: &str) -> Bytes {
    let clean: String = why
        .chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect();
    Bytes::from(format!("SERVER_ERROR {clean}\r\n"))
}

fn client_error(why: &str) -> Bytes {
    if why == memcached::UNKNOWN_COMMAND {
        return Bytes::from_static(b"ERROR\r\n");
    }
    Bytes::from(format!("CLIENT_ERROR {why}\r\n"))
}

/// Where a request's route sends it.
enum Target {
    Cluster(Arc<Cluster>, Duration),
    Reply(Bytes),
}

fn target(route: Option<&crate::router::Route>, req: &Request) -> Target {
    match route.map(|r| (&r.action, r.timeout)) {
        None => Target::Reply(server_error(&format!(
            "no route for command '{}'",
            String::from_utf8_lossy(req.verb().name())
        ))),
        Some((Action::Direct(d), _)) if (200..300).contains(&d.status) => {
            Target::Reply(server_error("a direct response cannot answer memcached"))
        }
        Some((Action::Direct(d), _)) => {
            Target::Reply(server_error(&String::from_utf8_lossy(&d.body)))
        }
        Some((action, timeout)) => match action.cluster() {
            Some(c) => Target::Cluster(c.clone(), timeout.unwrap_or(c.request_timeout)),
            None => Target::Reply(server_error("no cluster available for this route")),
        },
    }
}

/// One batch of client requests: the parts it sends and the reply plan.
#[derive(Default)]
struct Batch {
    parts: Vec<Part>,
    plan: Vec<Step>,
    permits: Vec<Permit>,
}

impl Batch {
    /// The part for (cluster, host), created if new.
    fn part(&mut self, cluster: &Arc<Cluster>, host: Option<usize>, timeout: Duration) -> usize {
        if let Some(i) = self
            .parts
            .iter()
            .position(|p| Arc::ptr_eq(&p.cluster, cluster) && p.host == host)
        {
            return i;
        }
        self.parts.push(Part {
            cluster: cluster.clone(),
            host,
            timeout,
            requests: Vec::new(),
            expect: 0,
            replies: Ok(Vec::new().into_iter()),
        });
        self.parts.len() - 1
    }

    /// Queue `wire` on a part; `replies`: whether it answers.
    fn send(
        &mut self,
        cluster: &Arc<Cluster>,
        host: Option<usize>,
        timeout: Duration,
        wire: Bytes,
        replies: bool,
    ) -> usize {
        let at = self.part(cluster, host, timeout);
        if let Some(p) = self.parts.get_mut(at) {
            p.requests.push(wire);
            p.expect += usize::from(replies);
        }
        at
    }

    /// Plan one request for `cluster`.
    fn plan(&mut self, req: Request, cluster: &Arc<Cluster>, timeout: Duration) {
        let shards = cluster.memcached.as_ref().map(|s| s.map());
        let owner = |key: &[u8]| shards.as_ref().map(|m| m.host_for(key));
        let step = match req.verb() {
            Verb::FlushAll | Verb::Verbosity => {
                let hosts: Vec<Option<usize>> = match &shards {
                    Some(m) => m.hosts().iter().copied().map(Some).collect(),
                    None => vec![None],
                };
                let noreply = req.noreply();
                let parts: Vec<usize> = hosts
                    .into_iter()
                    .map(|h| self.send(cluster, h, timeout, req.wire().clone(), !noreply))
                    .collect();
                if noreply {
                    Step::Silent
                } else {
                    Step::AllOk(parts)
                }
            }
            Verb::Version | Verb::Stats => {
                let home = shards.as_ref().map(|m| m.home());
                let part = self.send(cluster, home, timeout, req.wire().clone(), true);
                Step::Forward { part, quiet: None }
            }
            v if v.is_retrieval() => {
                let keys: Vec<(&[u8], Option<usize>)> = req.keys().map(|k| (k, owner(k))).collect();
                let first = keys.first().and_then(|k| k.1);
                if keys.iter().all(|k| k.1 == first) {
                    let part = self.send(cluster, first, timeout, req.wire().clone(), true);
                    Step::Forward { part, quiet: None }
                } else {
                    // One request per server, keys in the client's order.
                    let mut lines: Vec<(Option<usize>, BytesMut)> = Vec::new();
                    for (key, host) in &keys {
                        let line = match lines.iter_mut().find(|(h, _)| h == host) {
                            Some((_, line)) => line,
                            None => {
                                let mut line = BytesMut::with_capacity(64);
                                line.extend_from_slice(req.retrieval_prefix());
                                lines.push((*host, line));
                                let Some((_, line)) = lines.last_mut() else {
                                    continue;
                                };
                                line
                            }
                        };
                        line.extend_from_slice(b" ");
                        line.extend_from_slice(key);
                    }
                    let mut part_of = Vec::with_capacity(lines.len());
                    for (host, mut line) in lines {
                        line.extend_from_slice(b"\r\n");
                        part_of
                            .push((host, self.send(cluster, host, timeout, line.freeze(), true)));
                    }
                    let keys = keys
                        .iter()
                        .map(|(k, h)| {
                            let part = part_of
                                .iter()
                                .find(|(host, _)| host == h)
                                .map_or(0, |(_, p)| *p);
                            (req.wire().slice_ref(k), part)
                        })
                        .collect();
                    Step::Gather { keys }
                }
            }
            _ => {
                let host = req.key().and_then(owner);
                if req.is_quiet_meta() {
                    let part = self.send(cluster, host, timeout, req.without_quiet(), true);
                    Step::Forward {
                        part,
                        quiet: Some(req),
                    }
                } else if req.noreply() {
                    self.send(cluster, host, timeout, req.wire().clone(), false);
                    Step::Silent
                } else {
                    let part = self.send(cluster, host, timeout, req.wire().clone(), true);
                    Step::Forward { part, quiet: None }
                }
            }
        };
        self.plan.push(step);
    }
}

/// The session's upstream connections.
#[derive(Default)]
struct Upstreams {
    conns: Vec<Upstream>,
}

impl Upstreams {
    /// The index of the connection for (cluster, host), opened if there is none.
    async fn get(
        &mut self,
        cluster: &Arc<Cluster>,
        host: Option<usize>,
        limits: memcached::Limits,
    ) -> Result<usize, String> {
        if let Some(i) = self
            .conns
            .iter()
            .position(|u| Arc::ptr_eq(&u.cluster, cluster) && u.host == host)
        {
            return Ok(i);
        }
        let stream = match host {
            Some(h) => cluster.connect(h).await,
            None => cluster.connect_any().await.map(|(_, s)| s),
        };
        let stream = stream.map_err(|e| {
            let addr = host
                .and_then(|h| cluster.hosts.get(h))
                .map_or_else(|| cluster.name.clone(), |h| h.address.to_string());
            format!("cannot reach {addr}: {e}")
        })?;
        let (pipeline, replies) = pipeline::split(stream, ReplyDecoder::new(limits), 0);
        self.conns.push(Upstream {
            cluster: cluster.clone(),
            host,
            pipeline,
            replies,
        });
        Ok(self.conns.len() - 1)
    }

    /// Send every part, then collect each part's replies.
    async fn exchange(&mut self, parts: &mut [Part], limits: memcached::Limits) {
        // Connections that failed in an earlier batch are replaced now.
        self.conns
            .retain(|u| !u.replies.is_failed() && u.pipeline.is_open());
        let started = Instant::now();
        let mut sent = vec![None; parts.len()];
        for (part, sent) in parts.iter_mut().zip(sent.iter_mut()) {
            match self.get(&part.cluster, part.host, limits).await {
                Ok(i) => {
                    let Some(up) = self.conns.get_mut(i) else {
                        continue;
                    };
                    up.pipeline.send(&part.requests).await;
                    if up.pipeline.is_open() {
                        *sent = Some(i);
                    } else {
                        up.replies.fail("writing to the upstream failed");
                        part.replies = Err("writing to the upstream failed".into());
                    }
                }
                Err(why) => part.replies = Err(why),
            }
        }
        for (part, sent) in parts.iter_mut().zip(sent) {
            let Some(up) = sent.and_then(|i| self.conns.get_mut(i)) else {
                continue;
            };
            if part.expect == 0 {
                continue;
            }
            let mut left = part.expect;
            let mut out = Vec::with_capacity(left);
            let replies = &mut up.replies;
            let wait = std::future::poll_fn(|cx| replies.poll_replies(cx, &mut left, &mut out));
            part.replies = match tokio::time::timeout(part.timeout, wait).await {
                Ok(Ok(())) => Ok(out.into_iter()),
                Ok(Err(why)) => Err(why),
                Err(_) => {
                    up.replies.fail("timed out");
                    Err(format!(
                        "the upstream did not answer within {:?}",
                        part.timeout
                    ))
                }
            };
            part.cluster
                .stats
                .observe(part.requests.len() as u64, started.elapsed());
        }
    }
}

/// The next reply of part `p` (an error reply when the part failed).
fn next_reply(parts: &mut [Part], p: usize) -> Result<Bytes, String> {
    match parts.get_mut(p).map(|part| &mut part.replies) {
        Some(Ok(replies)) => replies
            .next()
            .ok_or_else(|| "the upstream answered fewer replies than requests".into()),
        Some(Err(why)) => Err(why.clone()),
        None => Err("no such part".into()),
    }
}

/// Write the batch's replies into `out` in the client's order; whether to close after.
fn write_plan(batch: &mut Batch, out: &mut BytesMut, conn: &Conn, started: Instant) -> bool {
    let took = started.elapsed();
    let mut quit = false;
    for step in std::mem::take(&mut batch.plan) {
        let failed = match step {
            Step::Local(reply) => {
                out.extend_from_slice(&reply);
                !reply.starts_with(b"MN")
            }
            Step::Silent => false,
            Step::Quit => {
                quit = true;
                break;
            }
            Step::Forward { part, quiet } => match next_reply(&mut batch.parts, part) {
                Ok(reply) => {
                    let drop = quiet.as_ref().is_some_and(|q| q.quiet_drops(&reply));
                    if !drop {
                        out.extend_from_slice(&reply);
                    }
                    is_error(&reply)
                }
                Err(why) => {
                    out.extend_from_slice(&server_error(&why));
                    true
                }
            },
            Step::AllOk(parts) => {
                let mut answer: Option<Bytes> = None;
                for p in parts {
                    let reply =
                        next_reply(&mut batch.parts, p).unwrap_or_else(|w| server_error(&w));
                    if answer.is_none() && reply.as_ref() != b"OK\r\n" {
                        answer = Some(reply);
                    }
                }
                let answer = answer.unwrap_or_else(|| Bytes::from_static(b"OK\r\n"));
                out.extend_from_slice(&answer);
                is_error(&answer)
            }
            Step::Gather { keys } => gather(&mut batch.parts, &keys, out),
        };
        conn.metrics.observe(took, failed);
    }
    quit
}

fn is_error(reply: &[u8]) -> bool {
    reply.starts_with(b"SERVER_ERROR")
        || reply.starts_with(b"CLIENT_ERROR")
        || reply == b"ERROR\r\n"
}

/// Merge a split retrieval: each part's `VALUE` blocks walked in step with
/// the client's keys, then one `END`. A failed part fails the whole request.
fn gather(parts: &mut [Part], keys: &[(Bytes, usize)], out: &mut BytesMut) -> bool {
    let mut used: Vec<usize> = keys.iter().map(|k| k.1).collect();
    used.sort_unstable();
    used.dedup();
    let mut replies = Vec::with_capacity(used.len());
    let mut failure = None;
    for &p in &used {
        match next_reply(parts, p) {
            Ok(r) if r.starts_with(b"VALUE ") || r.as_ref() == b"END\r\n" => replies.push((p, r)),
            Ok(r) => failure = failure.or(Some(r)),
            Err(why) => failure = failure.or(Some(server_error(&why))),
        }
    }
    if let Some(f) = failure {
        out.extend_from_slice(&f);
        return true;
    }
    let mut walks: Vec<(usize, std::iter::Peekable<_>)> = replies
        .iter()
        .map(|(p, r)| (*p, memcached::values(r).peekable()))
        .collect();
    for (key, part) in keys {
        let Some((_, walk)) = walks.iter_mut().find(|(p, _)| p == part) else {
            continue;
        };
        if walk.peek().is_some_and(|v| v.key == key.as_ref())
            && let Some(v) = walk.next()
        {
            out.extend_from_slice(v.block);
        }
    }
    out.extend_from_slice(b"END\r\n");
    false
}

/// Serve one memcached client connection.
pub async fn serve(stream: Stream, mut buf: BytesMut, mut conn: Conn) {
    let l = conn.listener.clone();
    let limits = l.memcached;
    let (mut rd, mut wr) = stream.into_split();
    let mut decoder = RequestDecoder::new(limits);
    let mut upstreams = Upstreams::default();
    let mut out = BytesMut::new();
    'session: loop {
        let mut batch = Batch::default();
        let started = Instant::now();
        let mut closing = false;
        while batch.plan.len() < MAX_BATCH {
            let req = match decoder.decode(&mut buf) {
                Ok(Some(req)) => req,
                Ok(None) => break,
                Err(e) => {
                    batch.plan.push(Step::Local(client_error(&e.to_string())));
                    batch.plan.push(Step::Quit);
                    closing = true;
                    break;
                }
            };
            match req.verb() {
                Verb::Invalid(why) => {
                    batch.plan.push(Step::Local(client_error(why)));
                    continue;
                }
                Verb::Quit => {
                    batch.plan.push(Step::Quit);
                    closing = true;
                    break;
                }
                Verb::MetaNoop => {
                    batch.plan.push(Step::Local(Bytes::from_static(b"MN\r\n")));
                    continue;
                }
                _ => {}
            }
            let route = l.routes.route(Protocol::Memcached, &req);
            let size = Some(req.data().len() as u64);
            let target = target(route, &req);
            let admitted = match conn.admit(Protocol::Memcached, &req, route, size).await {
                Ok(mut permit) => match &target {
                    Target::Cluster(cluster, _) => cluster.enter(&mut permit).map(|()| permit),
                    Target::Reply(_) => Ok(permit),
                },
                Err(refusal) => Err(refusal),
            };
            match (admitted, target) {
                (Err(refusal), _) => {
                    batch.plan.push(Step::Local(server_error(&refusal.message)));
                    if refusal.close {
                        batch.plan.push(Step::Quit);
                        closing = true;
                        break;
                    }
                }
                (Ok(_), Target::Reply(reply)) => batch.plan.push(Step::Local(reply)),
                (Ok(permit), Target::Cluster(cluster, timeout)) => {
                    if !permit.is_empty() {
                        batch.permits.push(permit);
                    }
                    batch.plan(req, &cluster, timeout);
                }
            }
        }
        let full = batch.plan.len() >= MAX_BATCH;
        if !batch.plan.is_empty() {
            upstreams.exchange(&mut batch.parts, limits).await;
            let quit = write_plan(&mut batch, &mut out, &conn, started);
            drop(std::mem::take(&mut batch.permits));
            if !out.is_empty() {
                conn.metrics.bytes_out.increment(out.len() as u64);
                if wr.write_all(&out).await.is_err() {
                    break 'session;
                }
                out.clear();
            }
            if quit || closing {
                break 'session;
            }
            if full {
                continue;
            }
        }
        tokio::select! {
            r = read_more(&mut rd, &mut buf, &conn.metrics) => match r {
                Ok(0) | Err(_) => break 'session,
                Ok(_) => {}
            },
            () = tokio::time::sleep(l.idle_timeout) => break 'session,
            () = drained(&mut conn.drain) => break 'session,
        }
    }
    let _ = wr.shutdown().await;
}
