//! Listeners: the accept loop, connection limits, and the hand-off of each
//! connection to detection and then to its protocol's driver.

use std::sync::Arc;

use bytes::BytesMut;
use switchyard_codecs::Protocol;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::detect::{Outcome, detect};
use crate::gateway::{Gateway, ListenerRuntime};
use crate::observe::detect_failed;
use crate::proxy::{self, Conn};

/// Accept connections on `socket` forever (until the task is aborted).
pub async fn accept_loop(
    socket: TcpListener,
    name: String,
    max_connections: usize,
    gateway: Arc<Gateway>,
) {
    let limit = Arc::new(Semaphore::new(max_connections.max(1)));
    loop {
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return;
        };
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
        let drain = gateway.drain.subscribe();
        gateway.connections.spawn(async move {
            tracing::trace!(%peer, "accepted");
            handle(stream, listener, drain).await;
            drop(permit);
        });
    }
}

/// Detect the protocol of one connection and run its driver.
async fn handle(
    mut stream: TcpStream,
    listener: Arc<ListenerRuntime>,
    drain: tokio::sync::watch::Receiver<bool>,
) {
    let mut buf = BytesMut::with_capacity(1024);
    let protocol = if listener.fixed {
        listener.protocols.first().copied()
    } else {
        match detect(
            &mut stream,
            &mut buf,
            &listener.protocols,
            listener.detect_timeout,
            listener.detect_max_bytes,
        )
        .await
        {
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
    let metrics = listener.metrics_for(protocol);
    let _active = metrics.connection();
    metrics.bytes_in.increment(buf.len() as u64);
    let conn = Conn {
        listener: listener.clone(),
        metrics,
        drain,
    };
    match protocol {
        Some(Protocol::Http1) => proxy::http1::serve(stream, buf, conn).await,
        Some(Protocol::Redis) => proxy::redis::serve(stream, buf, conn).await,
        _ => match &listener.fallback {
            Some(cluster) => proxy::tcp::serve(stream, buf, cluster, &conn).await,
            None => drop(stream),
        },
    }
}
