//! Glue between one downstream connection and its upstreams, per protocol:
//! [`http1`] (ordered, exclusive upstream connections from a pool),
//! [`redis`] (ordered, pipelined upstream connections with in-order replies),
//! [`rtsp`] (ordered control, media sessions bound to the upstream that issued them),
//! [`tcp`] (session passthrough). Parsing is the codecs' job, routing the
//! router's, connecting the upstream's; this layer only moves frames and
//! turns failures into protocol-correct answers.

pub mod http1;
pub mod http2;
pub mod memcached;
pub mod mirror;
pub mod mqtt;
pub mod mysql;
pub mod redis;
pub mod registry;
pub mod rpc;
pub mod rtsp;
pub mod tcp;

use std::net::IpAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;

use switchyard_codecs::{Metadata, Protocol};

use crate::filters::chain::{Endpoints, Permit, Refusal, Request, admit};
use crate::gateway::ListenerRuntime;
use crate::net::overload::Overload;
use crate::observe::ConnMetrics;
use crate::router::Route;

/// What a protocol driver gets for one downstream connection.
pub struct Conn {
    pub listener: Arc<ListenerRuntime>,
    pub metrics: ConnMetrics,
    /// Becomes `true` when the gateway starts draining.
    pub drain: watch::Receiver<bool>,
    /// The client's address (from the PROXY header on listeners that accept one).
    pub client: IpAddr,
    /// The client's address and port (as `client`).
    pub source: std::net::SocketAddr,
    /// The address the client connected to, when a PROXY header named it
    /// (`None`: the downstream socket's local address).
    pub destination: Option<std::net::SocketAddr>,
    /// The downstream socket's local address.
    pub local: Option<std::net::SocketAddr>,
    /// The client's TLS identity (TLS listeners).
    pub tls: Option<Arc<crate::filters::chain::TlsPeer>>,
    /// The gateway's overload state: past its request threshold, every new
    /// request is answered "busy".
    pub overload: Arc<Overload>,
    /// The server name the client asked for in its TLS ClientHello (SNI).
    pub sni: Option<Arc<str>>,
}

impl Conn {
    pub fn draining(&self) -> bool {
        *self.drain.borrow()
    }

    /// The same connection seen by a driver serving another protocol inside
    /// it (MQTT inside a WebSocket upgrade).
    pub fn inner(&self, protocol: Protocol) -> Conn {
        Conn {
            listener: self.listener.clone(),
            metrics: self.listener.metrics_for(Some(protocol)),
            drain: self.drain.clone(),
            client: self.client,
            source: self.source,
            destination: self.destination,
            local: self.local,
            tls: self.tls.clone(),
            overload: self.overload.clone(),
            sni: self.sni.clone(),
        }
    }

    /// The endpoints a PROXY header sent upstream names: the client, and
    /// where it connected (`local`, the downstream socket's local address,
    /// unless a header said).
    pub fn endpoints(
        &self,
        local: Option<std::net::SocketAddr>,
    ) -> crate::net::proxy_protocol::Endpoints {
        crate::net::proxy_protocol::Endpoints {
            client: self.source,
            destination: self.destination.or(local).unwrap_or(self.source),
        }
    }

    /// The pipeline's one step between routing and forwarding, for every
    /// protocol: the overload manager's request shedding, then the
    /// listener's filters, then the route's. `size`: the body or payload
    /// size the request declares. `Ok`: forward it, holding the permit
    /// until its answer is back; `Err`: answer it locally with the refusal.
    pub async fn admit(
        &self,
        protocol: Protocol,
        meta: &(dyn Metadata + Sync),
        route: Option<&Route>,
        size: Option<u64>,
    ) -> Result<Permit, Refusal> {
        self.admit_packet(protocol, None, meta, route, size).await
    }

    /// [`Conn::admit`] for a request whose kind the metadata does not say
    /// (an MQTT packet type), for the access log.
    pub async fn admit_packet(
        &self,
        protocol: Protocol,
        packet: Option<&'static str>,
        meta: &(dyn Metadata + Sync),
        route: Option<&Route>,
        size: Option<u64>,
    ) -> Result<Permit, Refusal> {
        // The access log record (and the request's trace) starts here
        // (before any filter delay) and rides in the permit until the
        // request is done.
        let listener = &self.listener;
        if listener.access_log.is_none() && listener.tracer.is_none() {
            return self.filter(protocol, meta, route, size).await;
        }
        let mut record = crate::observe::access_log::Record::start(
            listener.access_log.clone(),
            protocol,
            meta,
            self.client,
            self.destination,
            size,
        );
        record.sni = self.sni.clone();
        record.packet = packet;
        if let Some(tracer) = &listener.tracer {
            record.set_trace(tracer.start(protocol, packet, meta, self.client, &listener.name));
        }
        match self.filter(protocol, meta, route, size).await {
            Ok(mut permit) => {
                permit.set_log(record);
                Ok(permit)
            }
            Err(refusal) => {
                record.refused(refusal.status);
                record.emit();
                Err(refusal)
            }
        }
    }

    async fn filter(
        &self,
        protocol: Protocol,
        meta: &(dyn Metadata + Sync),
        route: Option<&Route>,
        size: Option<u64>,
    ) -> Result<Permit, Refusal> {
        if self.overload.shedding_requests() {
            self.overload.count_shed_request(protocol);
            return Err(Refusal::busy());
        }
        let route_filters = route.map(|r| &r.filters).filter(|f| !f.is_empty());
        if self.listener.filters.is_empty() && route_filters.is_none() {
            return Ok(Permit::default());
        }
        let req = Request {
            protocol,
            meta,
            client: self.client,
            size,
            endpoints: Some(Endpoints {
                source: self.source,
                destination: self.destination.or(self.local),
                tls: self.tls.as_deref(),
            }),
        };
        admit([Some(&self.listener.filters), route_filters], &req).await
    }

    /// The shadow cluster a `mirror` filter chose for the request `permit`
    /// was given for, if any (taken out of the permit). A permit without a
    /// mirror costs one branch.
    pub fn mirror(&self, permit: &mut Permit) -> Option<&Arc<mirror::Mirror>> {
        let cluster = permit.take_mirror()?;
        self.listener.mirrors.get(&cluster)
    }
}

/// Read more bytes into `buf`, counting them; `Ok(0)` at EOF.
pub(crate) async fn read_more<R: tokio::io::AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    metrics: &ConnMetrics,
) -> std::io::Result<usize> {
    if buf.capacity() - buf.len() < 2048 {
        buf.reserve(16 * 1024);
    }
    let n = rd.read_buf(buf).await?;
    metrics.bytes_in.increment(n as u64);
    Ok(n)
}

/// Resolves when draining starts (never, if the sender is gone).
pub(crate) async fn drained(drain: &mut watch::Receiver<bool>) {
    if drain.wait_for(|d| *d).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The path HTTP routes match under the listener's path policy
/// (`http1.normalize_path`, `merge_slashes`; the same for HTTP/1.1 and
/// HTTP/2): `Ok(None)` when it is the path as sent, `Err` for a bad
/// percent-escape (answered `400`).
pub(crate) fn normalized_path(
    path: &[u8],
    policy: &crate::config::Http1Limits,
) -> Result<Option<Vec<u8>>, switchyard_codecs::http1::PathError> {
    if !policy.normalize_path {
        return Ok(None);
    }
    match switchyard_codecs::http1::normalize_path(path, policy.merge_slashes)? {
        std::borrow::Cow::Borrowed(_) => Ok(None),
        std::borrow::Cow::Owned(p) => Ok(Some(p)),
    }
}
