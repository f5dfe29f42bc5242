//! Listeners: the accept loop, connection limits, and the hand-off of each
//! connection to detection and then to its protocol's driver.

pub mod deadline;
pub mod listeners;
pub mod memory;
pub mod overload;
pub mod proxy_protocol;
pub mod stream;
pub mod takeover;
pub mod tls;

use std::sync::Arc;

use bytes::BytesMut;
use switchyard_codecs::Protocol;
use tokio::net::{TcpListener, TcpStream};

use crate::detect::{Outcome, detect};
use crate::gateway::{Gateway, ListenerRuntime};
use crate::observe::detect_failed;
use crate::proxy::{self, Conn};
use stream::Stream;

/// The kernel's largest accept queue (`net.core.somaxconn`), or 4096 when
/// it cannot be read.
pub fn max_backlog() -> u32 {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(4096)
}

/// Bind a listening socket with `SO_REUSEADDR` and an accept queue of
/// `backlog` (default: the system's maximum, as HAProxy and nginx do).
/// Must be called inside a tokio runtime.
pub fn bind(addr: std::net::SocketAddr, backlog: Option<u32>) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    let backlog = backlog.unwrap_or_else(max_backlog);
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    TcpListener::from_std(socket.into())
}

/// Accept connections on `socket` forever (until the task is aborted).
/// `ctl` holds the listener's connection limit and the signals its
/// connections drain and are cut on ([`listeners::ListenerCtl`]).
pub async fn accept_loop(
    socket: Arc<TcpListener>,
    name: String,
    ctl: listeners::ListenerCtl,
    gateway: Arc<Gateway>,
) {
    loop {
        let Ok(permit) = ctl.limit.clone().acquire_owned().await else {
            return;
        };
        gateway.overload.accept_allowed().await;
        let (stream, peer) = match socket.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(listener = %name, error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let snapshot = gateway.snapshot.load_full();
        let Some(listener) = snapshot.listeners.get(&name).cloned() else {
            continue;
        };
        let drain = ctl.drain.subscribe();
        let cut = ctl.cut.clone();
        let admission = gateway.overload.admit();
        gateway.connections.spawn(async move {
            tracing::trace!(%peer, "accepted");
            // Cut: the listener was removed and its drain timeout ran out.
            tokio::select! {
                () = handle(stream, peer, listener, drain, &admission) => {}
                () = cut.cancelled() => {}
            }
            drop(admission);
            drop(permit);
        });
    }
}

/// Detect the protocol of one connection (inside TLS when the listener
/// terminates it) and run its driver.
async fn handle(
    stream: TcpStream,
    peer: std::net::SocketAddr,
    listener: Arc<ListenerRuntime>,
    drain: tokio::sync::watch::Receiver<bool>,
    admission: &overload::Admission,
) {
    let mut stream = stream;
    let (mut client, mut destination) = (peer, None);
    if listener.transparent {
        destination = original_destination(&stream);
    }
    if let Some(settings) = &listener.proxy_protocol {
        let real = proxy_protocol::Endpoints {
            client: peer,
            destination: stream.local_addr().unwrap_or(peer),
        };
        match proxy_protocol::accept(&mut stream, real, settings, &listener.name).await {
            Some(ends) => (client, destination) = (ends.client, Some(ends.destination)),
            None => return,
        }
    }
    let mut buf = BytesMut::new();
    let mut stream = Stream::Tcp(stream);
    // Server-first protocols (MySQL) upgrade to TLS inside their own handshake.
    let server_first = listener.fixed
        && listener
            .protocols
            .first()
            .is_some_and(|p| p.server_speaks_first());
    if let (Some(terminator), Stream::Tcp(tcp), false) = (&listener.tls, &stream, server_first)
        && starts_with_tls(tcp, listener.detect_timeout).await
    {
        let Stream::Tcp(tcp) = stream else { return };
        match tokio::time::timeout(listener.detect_timeout, terminator.accept(tcp)).await {
            Ok(Ok(tls)) => stream = Stream::Tls(Box::new(tls)),
            _ => {
                detect_failed(&listener.name, "tls_handshake");
                return;
            }
        }
    }
    let alpn = stream.alpn().and_then(|p| Protocol::from_alpn(&p));
    let protocol = if listener.fixed {
        listener.protocols.first().copied()
    } else if let Some(p) = alpn.filter(|p| listener.protocols.contains(p)) {
        Some(p)
    } else {
        let outcome = detect(
            &mut stream,
            &mut buf,
            &listener.protocols,
            listener.detect_timeout,
            listener.detect_max_bytes,
        )
        .await;
        match outcome {
            Ok(Outcome::Matched(p)) if p != Protocol::Tls => Some(p),
            Ok(outcome) => {
                let reason = match outcome {
                    Outcome::Matched(_) => "tls_not_terminated",
                    other => other.reason(),
                };
                detect_failed(&listener.name, reason);
                tracing::debug!(listener = %listener.name, reason, "no protocol detected");
                None
            }
            Err(_) => return,
        }
    };
    if admission.shed {
        Box::pin(overload::shed(
            stream,
            buf,
            protocol,
            listener.request_head_timeout,
        ))
        .await;
        return;
    }
    let metrics = listener.metrics_for(protocol);
    let _active = metrics.connection();
    metrics.bytes_in.increment(buf.len() as u64);
    let conn = Conn {
        listener: listener.clone(),
        metrics,
        drain,
        client: client.ip(),
        source: client,
        destination,
        local: stream.local_addr(),
        tls: stream.tls_peer().map(Arc::new),
        overload: admission.overload().clone(),
        sni: stream.server_name().map(Arc::from),
    };
    // The registry's driver for the protocol (its future boxed once
    // detection chose it); no protocol: the fallback, if any.
    match protocol.and_then(proxy::registry::driver) {
        Some(driver) => (driver.serve)(stream, buf, conn).await,
        None => match &listener.fallback {
            Some(cluster) => {
                let cluster = cluster.for_destination(conn.destination);
                Box::pin(proxy::tcp::serve(stream, buf, &cluster, &conn)).await
            }
            None => drop(stream),
        },
    }
}

/// Where a connection the firewall redirected here was going
/// (`SO_ORIGINAL_DST` / `IP6T_SO_ORIGINAL_DST`, from conntrack's NAT entry).
/// `None` when the connection was not redirected (it was addressed to the
/// listener itself, or conntrack has no entry): a `type: original_dst`
/// cluster then has nowhere to go, rather than connecting back to the
/// gateway.
fn original_destination(tcp: &TcpStream) -> Option<std::net::SocketAddr> {
    let local = tcp.local_addr().ok()?;
    let sock = socket2::SockRef::from(tcp);
    let original = match local {
        std::net::SocketAddr::V4(_) => sock.original_dst_v4(),
        std::net::SocketAddr::V6(_) => sock.original_dst_v6(),
    };
    let found = proxy_protocol::canonical(original.ok()?.as_socket()?);
    (found != proxy_protocol::canonical(local)).then_some(found)
}

/// Whether the client's first bytes are a TLS record, without consuming them.
async fn starts_with_tls(tcp: &TcpStream, timeout: std::time::Duration) -> bool {
    let peek = async {
        let mut head = [0u8; 3];
        loop {
            let n = tcp.peek(&mut head).await.ok()?;
            if n == 0 {
                return None;
            }
            match switchyard_codecs::tls::sniff(head.get(..n)?) {
                switchyard_codecs::Verdict::Match(_) => return Some(true),
                switchyard_codecs::Verdict::Reject => return Some(false),
                switchyard_codecs::Verdict::NeedMore => {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await
                }
            }
        }
    };
    matches!(tokio::time::timeout(timeout, peek).await, Ok(Some(true)))
}
