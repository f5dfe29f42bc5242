//! The PROXY protocol on both sides of the gateway.
//!
//! Downstream ([`accept`]): on listeners with `proxy_protocol`, before TLS
//! and detection, read the header the proxy in front sent (peeked first, so
//! exactly the header's bytes are consumed and the client's own bytes stay
//! in the socket for TLS and detection), and take its source address as the
//! client's. Upstream ([`send`]): write a header naming the client first on
//! a new connection to a host of a cluster with `proxy_protocol`.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use switchyard_codecs::proxy_protocol::{
    self as pp, Addresses, Command, Limits, Start, Transport, V1_MAX, V2_HEAD, Version,
};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::filters::Cidr;
use crate::config::proxy_protocol::{self as cfg, Mode};

/// A listener's compiled `proxy_protocol`.
#[derive(Debug, Clone)]
pub struct Accept {
    pub required: bool,
    pub limits: Limits,
    pub timeout: Duration,
    pub trusted: Vec<Cidr>,
}

impl Accept {
    pub fn new(c: &cfg::Accept) -> Self {
        Self {
            required: c.accept == Mode::Required,
            limits: Limits {
                v1: c.versions.contains(&1),
                v2: c.versions.contains(&2),
                ..Limits::default()
            },
            timeout: c.timeout.get(),
            trusted: c.trusted.clone(),
        }
    }
}

/// The two ends of a downstream connection as the gateway uses them: the
/// client (from the PROXY header when one was accepted) and the address it
/// connected to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoints {
    pub client: SocketAddr,
    pub destination: SocketAddr,
}

/// Why a connection was refused, for logs and the
/// `switchyard_proxy_protocol_total{outcome}` counter.
fn refuse(listener: &str, peer: SocketAddr, outcome: &'static str) -> Option<Endpoints> {
    metrics::counter!("switchyard_proxy_protocol_total", "listener" => listener.to_owned(), "outcome" => outcome)
        .increment(1);
    tracing::debug!(listener, %peer, outcome, "PROXY protocol: connection refused");
    None
}

/// Read the PROXY header of a new connection. `Some`: serve it with these
/// endpoints; `None`: close it (counted by reason).
pub async fn accept(
    tcp: &mut TcpStream,
    real: Endpoints,
    settings: &Accept,
    listener: &str,
) -> Option<Endpoints> {
    let peer = real.client;
    let trusted = settings.trusted.iter().any(|c| c.contains(peer.ip()));
    if !trusted && settings.required {
        return refuse(listener, peer, "untrusted");
    }
    let read = read_header(tcp, settings, trusted);
    let header = match tokio::time::timeout(settings.timeout, read).await {
        Ok(Ok(h)) => h,
        Ok(Err(outcome)) => return refuse(listener, peer, outcome),
        Err(_) => return refuse(listener, peer, "timeout"),
    };
    let Some(header) = header else {
        // `optional` and no header: the connection as it is.
        return Some(real);
    };
    metrics::counter!("switchyard_proxy_protocol_total", "listener" => listener.to_owned(), "outcome" => "accepted")
        .increment(1);
    match (header.command, &header.addresses) {
        (
            Command::Proxy,
            Addresses::Inet {
                source,
                destination,
            },
        ) => Some(Endpoints {
            client: canonical(*source),
            destination: canonical(*destination),
        }),
        // LOCAL (the proxy's own health check), UNKNOWN, UNIX: the real endpoints.
        _ => Some(real),
    }
}

/// IPv4-mapped IPv6 addresses as IPv4, so `ip_access` rules and logs see
/// one form of an address.
pub(crate) fn canonical(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => a,
        },
        v4 => v4,
    }
}

/// Peek until a whole header is there, then consume exactly its bytes.
/// `Ok(None)`: no header and it is optional. `Err`: the refusal's reason.
async fn read_header(
    tcp: &mut TcpStream,
    settings: &Accept,
    trusted: bool,
) -> Result<Option<pp::Header>, &'static str> {
    let mut head = vec![0u8; V1_MAX];
    let mut seen = 0;
    loop {
        let n = tcp.peek(&mut head).await.map_err(|_| "closed")?;
        if n == 0 {
            return Err("closed");
        }
        let bytes = head.get(..n).unwrap_or_default();
        match pp::start(bytes) {
            Start::Absent if settings.required => return Err("missing"),
            Start::Absent => return Ok(None),
            Start::Header(_) if !trusted => return Err("untrusted"),
            Start::NeedMore | Start::Header(_) => {}
        }
        let mut buf = BytesMut::from(bytes);
        match pp::decode(&mut buf, &settings.limits) {
            Ok(Some(h)) => {
                let mut consumed = vec![0u8; h.wire.len()];
                tcp.read_exact(&mut consumed).await.map_err(|_| "closed")?;
                return Ok(Some(h));
            }
            Ok(None) => {}
            Err(_) => return Err("invalid"),
        }
        // A v2 header longer than the peek window: widen it (the decoder
        // checked the length against the limit already).
        if pp::start(bytes) == Start::Header(Version::V2) && n >= V2_HEAD {
            let len = u16::from_be_bytes([
                bytes.get(14).copied().unwrap_or(0),
                bytes.get(15).copied().unwrap_or(0),
            ]);
            let total = V2_HEAD + usize::from(len);
            if total > head.len() {
                head.resize(total, 0);
                seen = n;
                continue;
            }
        }
        if n == seen {
            // Nothing new since the last peek: the rest is in flight.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        seen = n;
    }
}

/// Write the PROXY header of `version` naming `ends` on a new upstream
/// connection.
pub async fn send<W: AsyncWrite + Unpin>(
    up: &mut W,
    version: cfg::Send,
    ends: Endpoints,
) -> std::io::Result<()> {
    let mut out = BytesMut::with_capacity(V1_MAX);
    let addresses = Addresses::Inet {
        source: ends.client,
        destination: ends.destination,
    };
    match version {
        cfg::Send::V1 => pp::write_v1(&mut out, &addresses),
        cfg::Send::V2 => pp::write_v2(&mut out, Command::Proxy, Transport::Stream, &addresses, &[])
            .map_err(std::io::Error::other)?,
    }
    up.write_all(&out).await
}
