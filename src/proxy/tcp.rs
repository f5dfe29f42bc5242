//! Raw TCP passthrough (the session shape without a codec): the detection
//! fallback and protocols carried opaquely.

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use super::Conn;
use crate::stream::session::splice;
use crate::upstream::Cluster;

/// Connect to a host of `cluster`, replay the bytes already read, and splice.
pub async fn serve(
    down: crate::net::stream::Stream,
    prefix: BytesMut,
    cluster: &Cluster,
    conn: &Conn,
) {
    let started = std::time::Instant::now();
    let (host, mut up) = match cluster.connect_for(conn.client).await {
        Ok(x) => x,
        Err(e) => {
            tracing::debug!(error = %e, "tcp passthrough: no upstream");
            conn.metrics.observe(started.elapsed(), true);
            return;
        }
    };
    // The cluster's per-cluster series count a passthrough connection as one
    // request, from connect to close.
    let _request = cluster.begin(host);
    let ends = conn.endpoints(down.local_addr());
    if crate::upstream::send_proxy_header(&mut up, cluster, ends)
        .await
        .is_err()
        || up.write_all(&prefix).await.is_err()
    {
        conn.metrics.observe(started.elapsed(), true);
        return;
    }
    let result = splice(down, up, Some(conn.listener.idle_timeout)).await;
    if let Ok(c) = &result {
        conn.metrics
            .bytes_in
            .increment(c.downstream_to_upstream + prefix.len() as u64);
        conn.metrics.bytes_out.increment(c.upstream_to_downstream);
    }
    conn.metrics.observe(started.elapsed(), result.is_err());
}
