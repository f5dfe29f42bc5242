//! The `mirror` filter's sender: copies of requests go to a shadow cluster,
//! fire and forget. The filter chain decides which requests are copied and
//! where (the permit names the cluster); a driver hands the copy's bytes to
//! the cluster's [`Mirror`], which sends it from a task of its own on an
//! exclusive connection of the shadow cluster's idle pool, reads the answer
//! to its end (so the connection can go back to the pool) and drops it.
//!
//! A copy never delays or fails the original: the driver only clones a
//! `Bytes` and spawns; over `max_in_flight` copies (default 64) in flight
//! to one cluster, more are dropped; connect, write, read and timeout errors are
//! only counted (`switchyard_mirror_requests_total{cluster, result}`:
//! `sent` when the shadow answered, `failed`, `dropped`).

use std::collections::HashMap;
use std::sync::Arc;

use crate::upstream::UpstreamConn;
use bytes::{Bytes, BytesMut};
use metrics::Counter;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use switchyard_codecs::http1::{self, BodyLength};
use switchyard_codecs::redis::ReplyDecoder;
use switchyard_codecs::{Decoder, Part, WireHead};

use crate::config::Config;
use crate::config::filters::Filter;
use crate::filters::chain::{Limit, Permit};
use crate::stream::multiplex::{MuxKind, MuxProtocol};
use crate::upstream::Cluster;

/// Largest HTTP request body copied: a request is mirrored only when its
/// whole body (`Content-Length`, at most this) came in with its head.
pub const MAX_HTTP_BODY: u64 = 64 * 1024;

/// What `Host` (HTTP/1) and `:authority` get appended on a copy, as Envoy does.
pub const SHADOW_SUFFIX: &[u8] = b"-shadow";

/// The mirrors of one config snapshot, by cluster name: one per cluster any
/// `mirror` filter names.
#[derive(Default)]
pub struct Mirrors {
    by_cluster: HashMap<String, Arc<Mirror>>,
}

impl Mirrors {
    /// One [`Mirror`] for each cluster a listener's or a route's `mirror`
    /// filter names (validation made sure they exist).
    pub fn new(config: &Config, clusters: &HashMap<String, Arc<Cluster>>) -> Self {
        let listener_filters = config.listeners.iter().flat_map(|l| &l.filters);
        let route_filters = config
            .route_tables
            .iter()
            .flat_map(|t| &t.virtual_hosts)
            .flat_map(|v| &v.routes)
            .flat_map(|r| &r.filters);
        let mut bounds: HashMap<&str, usize> = HashMap::new();
        for f in listener_filters.chain(route_filters) {
            if let Filter::Mirror(m) = &f.value {
                let bound = bounds.entry(m.cluster.as_str()).or_insert(m.max_in_flight);
                *bound = (*bound).min(m.max_in_flight);
            }
        }
        let by_cluster = bounds
            .into_iter()
            .filter_map(|(name, bound)| {
                let cluster = clusters.get(name)?.clone();
                Some((name.to_owned(), Arc::new(Mirror::new(cluster, bound))))
            })
            .collect();
        Self { by_cluster }
    }

    /// The mirror of cluster `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Mirror>> {
        self.by_cluster.get(name)
    }
}

/// Copies to one shadow cluster.
pub struct Mirror {
    cluster: Arc<Cluster>,
    in_flight: Limit,
    sent: Counter,
    failed: Counter,
    dropped: Counter,
    /// The request ids of RPC copies (the copies' own, not the clients').
    next_id: std::sync::atomic::AtomicU64,
}

/// How a copy's answer is framed.
#[derive(Clone, Copy)]
enum Answer {
    /// One HTTP/1 response to a request with this method's framing
    /// (`HEAD` answers carry no body).
    Http1 { head_request: bool },
    /// This many Redis replies (the cluster's login commands', then the copy's).
    Redis { replies: usize },
}

impl Mirror {
    /// Copies to `cluster`, at most `max_in_flight` at once.
    pub fn new(cluster: Arc<Cluster>, max_in_flight: usize) -> Self {
        let counter = |result: &'static str| {
            metrics::counter!(
                "switchyard_mirror_requests_total",
                "cluster" => cluster.name.clone(),
                "result" => result
            )
        };
        Self {
            sent: counter("sent"),
            failed: counter("failed"),
            dropped: counter("dropped"),
            in_flight: Limit::new(max_in_flight),
            next_id: std::sync::atomic::AtomicU64::new(1),
            cluster,
        }
    }

    /// Count a request that was to be copied but could not be (its body was
    /// not all in, or too large).
    pub fn skip(&self) {
        self.dropped.increment(1);
    }

    /// A place for one more copy, or `None` (counted as dropped) when
    /// `max_in_flight` are out already.
    fn place(&self) -> Option<Permit> {
        let mut permit = Permit::default();
        if self.in_flight.enter(&mut permit) {
            Some(permit)
        } else {
            self.dropped.increment(1);
            None
        }
    }

    /// Send a copy of an HTTP/1 request: `head` as [`http1::RequestHead::shadowed`]
    /// writes it, then its whole `body`.
    pub fn http1(self: &Arc<Self>, head: Bytes, body: Bytes, head_request: bool) {
        let Some(place) = self.place() else { return };
        let this = self.clone();
        tokio::spawn(async move {
            let host = this.cluster.pick().next();
            let ok = this
                .send(host, &[head, body], Answer::Http1 { head_request })
                .await;
            this.finish(ok);
            drop(place);
        });
    }

    /// Send a copy of a read-only Redis command (its wire bytes). New
    /// connections log in first as the cluster's `redis` block says; a
    /// sharded cluster gets it on the shard of its first key.
    pub fn redis(self: &Arc<Self>, command: Bytes, first_key: Option<&[u8]>) {
        let Some(place) = self.place() else { return };
        let this = self.clone();
        let host = match (self.cluster.shards(), first_key) {
            (Some(shards), Some(key)) => Some(shards.map().host_for(key)),
            _ => None,
        };
        tokio::spawn(async move {
            let host = host.or_else(|| this.cluster.pick().next());
            let ok = this
                .send(host, &[command], Answer::Redis { replies: 1 })
                .await;
            this.finish(ok);
            drop(place);
        });
    }

    /// Send a copy of a Dubbo or Bolt request under a request id of the
    /// mirror's own, on an exclusive connection (one copy at a time on it),
    /// and read frames until its response (none for a one-way request).
    pub fn rpc<P: MuxProtocol>(self: &Arc<Self>, frame: &P::Frame, client: std::net::IpAddr) {
        let Some(place) = self.place() else { return };
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            % P::MAX_ID.max(1);
        let bytes = P::with_id(frame, id);
        let one_way = P::kind(frame) == MuxKind::OneWay;
        let host = self.cluster.hosts_for(frame, client).next();
        let this = self.clone();
        tokio::spawn(async move {
            let ok = match host {
                Some(host) => this.send_rpc::<P>(host, &bytes, id, one_way).await,
                None => false,
            };
            this.finish(ok);
            drop(place);
        });
    }

    async fn send_rpc<P: MuxProtocol>(
        &self,
        host: usize,
        bytes: &Bytes,
        id: u64,
        one_way: bool,
    ) -> bool {
        self.exchange(host, |stream, _| {
            rpc_exchange::<P>(stream, bytes, id, one_way)
        })
        .await
    }

    fn finish(&self, ok: bool) {
        if ok {
            self.sent.increment(1);
        } else {
            self.failed.increment(1);
        }
    }

    /// Write `parts` on a pooled or new connection to `host` and read its
    /// answer, within the cluster's request timeout; the connection goes
    /// back to the pool when the answer ended cleanly and it may be reused.
    async fn send(&self, host: Option<usize>, parts: &[Bytes], answer: Answer) -> bool {
        let Some(host) = host else { return false };
        let login = match answer {
            Answer::Redis { .. } => self
                .cluster
                .redis
                .as_ref()
                .map_or(&[][..], |r| &r.login[..]),
            Answer::Http1 { .. } => &[][..],
        };
        self.exchange(host, |stream, reused| {
            // A new Redis connection logs in first (those replies dropped too).
            let (login, answer) = match answer {
                Answer::Redis { replies } if !reused => (
                    login,
                    Answer::Redis {
                        replies: replies + login.len(),
                    },
                ),
                other => (&[][..], other),
            };
            ordered_exchange(stream, login, parts, answer)
        })
        .await
    }

    /// Run `talk` on an idle pooled connection to `host`, or on a new one
    /// (once more on a new one when a pooled connection fails: the server
    /// may have closed it while idle), all within the cluster's request
    /// timeout. `talk` gives back the connection and whether it may be
    /// pooled again; `true` when the shadow answered.
    async fn exchange<F, Fut>(&self, host: usize, mut talk: F) -> bool
    where
        F: FnMut(UpstreamConn, bool) -> Fut,
        Fut: std::future::Future<Output = Option<(UpstreamConn, bool)>>,
    {
        let cluster = &self.cluster;
        let attempts = async {
            let _active = cluster.begin(host);
            if let Some(stream) = cluster.pool.take(host)
                && let Some(done) = talk(stream, true).await
            {
                return Some(done);
            }
            let stream = cluster.connect(host).await.ok()?;
            talk(stream, false).await
        };
        match tokio::time::timeout(cluster.request_timeout, attempts).await {
            Ok(Some((stream, keep))) => {
                if keep {
                    cluster.pool.put(host, stream);
                }
                true
            }
            _ => false,
        }
    }
}

/// Write `login` then `parts` and read the answer: the connection back and
/// whether it may be reused.
async fn ordered_exchange(
    mut stream: UpstreamConn,
    login: &[Bytes],
    parts: &[Bytes],
    answer: Answer,
) -> Option<(UpstreamConn, bool)> {
    for part in login.iter().chain(parts).filter(|p| !p.is_empty()) {
        stream.write_all(part).await.ok()?;
    }
    let keep = read_answer(&mut stream, answer).await?;
    Some((stream, keep))
}

/// Write an RPC copy (`bytes`, with request id `id`) and read frames until
/// its response, answering the server's heartbeats meanwhile.
async fn rpc_exchange<P: MuxProtocol>(
    mut stream: UpstreamConn,
    bytes: &Bytes,
    id: u64,
    one_way: bool,
) -> Option<(UpstreamConn, bool)> {
    stream.write_all(bytes).await.ok()?;
    if one_way {
        return Some((stream, true));
    }
    let mut decoder = P::decoder();
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        match decoder.decode(&mut buf).ok()? {
            Some(f) => match P::kind(&f) {
                MuxKind::Response if P::request_id(&f) == id => {
                    let keep = buf.is_empty();
                    return Some((stream, keep));
                }
                MuxKind::HeartbeatRequest => {
                    stream.write_all(&P::heartbeat_reply(&f)).await.ok()?;
                }
                _ => {}
            },
            None => {
                if stream.read_buf(&mut buf).await.ok()? == 0 {
                    return None;
                }
            }
        }
    }
}

/// Read one answer framed as `answer` and drop it: `Some(reusable)` when it
/// ended cleanly, `None` on a broken or cut answer.
async fn read_answer(stream: &mut UpstreamConn, answer: Answer) -> Option<bool> {
    let mut buf = BytesMut::with_capacity(4096);
    match answer {
        Answer::Http1 { head_request } => {
            let mut decoder = http1::ResponseDecoder::new(http1::Limits::default());
            decoder.expect_response_to(if head_request { b"HEAD" } else { b"GET" });
            let mut keep = false;
            loop {
                let part = decoder.decode(&mut buf).ok()?;
                match part {
                    Some(Part::Head(h)) if h.is_interim() => {}
                    Some(Part::Head(h)) => {
                        keep = h.keep_alive() && h.body() != BodyLength::UntilClose;
                        if !h.has_body() {
                            return Some(keep && buf.is_empty());
                        }
                    }
                    Some(Part::Body(_)) => {}
                    Some(Part::End) => return Some(keep && buf.is_empty()),
                    None => {
                        if stream.read_buf(&mut buf).await.ok()? == 0 {
                            // Close-delimited body: its end is the close.
                            return match decoder.decode_eof(&mut buf).ok()? {
                                Some(Part::End) => Some(false),
                                _ => None,
                            };
                        }
                    }
                }
            }
        }
        Answer::Redis { replies } => {
            let mut decoder = ReplyDecoder::default();
            let mut left = replies;
            while left > 0 {
                match decoder.decode(&mut buf).ok()? {
                    Some(_) => left -= 1,
                    None => {
                        if stream.read_buf(&mut buf).await.ok()? == 0 {
                            return None;
                        }
                    }
                }
            }
            Some(buf.is_empty())
        }
    }
}
