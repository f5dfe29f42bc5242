//! The session shape's data path: bytes copied both ways between a downstream
//! and an upstream connection, with half-close and an idle timeout.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bytes carried by a session, each way.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Carried {
    pub downstream_to_upstream: u64,
    pub upstream_to_downstream: u64,
}

/// Copy both ways until both sides have closed, an error occurs, or neither
/// side has sent a byte for `idle` (`None`: no idle limit).
pub async fn splice<D, U>(down: D, up: U, idle: Option<Duration>) -> std::io::Result<Carried>
where
    D: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let start = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let (mut dr, mut dw) = tokio::io::split(down);
    let (mut ur, mut uw) = tokio::io::split(up);
    let a = copy(&mut dr, &mut uw, &last, start);
    let b = copy(&mut ur, &mut dw, &last, start);
    let watchdog = async {
        let Some(idle) = idle else {
            return std::future::pending().await;
        };
        loop {
            let since = Duration::from_millis(last.load(Ordering::Relaxed));
            let idle_for = start.elapsed().saturating_sub(since);
            if idle_for >= idle {
                return;
            }
            tokio::time::sleep(idle - idle_for).await;
        }
    };
    tokio::select! {
        (a, b) = async { tokio::join!(a, b) } => Ok(Carried { downstream_to_upstream: a?, upstream_to_downstream: b? }),
        () = watchdog => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "session idle timeout")),
    }
}

async fn copy<R, W>(r: &mut R, w: &mut W, last: &AtomicU64, start: Instant) -> std::io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            // Half-close: pass the EOF on and keep the other direction going.
            let _ = w.shutdown().await;
            return Ok(total);
        }
        w.write_all(buf.get(..n).unwrap_or_default()).await?;
        total += n as u64;
        last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    #[tokio::test]
    async fn copies_both_ways_with_half_close() {
        let (client, down) = duplex(64);
        let (up, server) = duplex(64);
        let task = tokio::spawn(splice(down, up, Some(Duration::from_secs(5))));
        let (mut cr, mut cw) = tokio::io::split(client);
        let (mut sr, mut sw) = tokio::io::split(server);
        cw.write_all(b"hello").await.unwrap();
        cw.shutdown().await.unwrap();
        let mut got = Vec::new();
        sr.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hello");
        sw.write_all(b"world!").await.unwrap();
        sw.shutdown().await.unwrap();
        let mut got = Vec::new();
        cr.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"world!");
        let carried = task.await.unwrap().unwrap();
        assert_eq!(
            carried,
            Carried {
                downstream_to_upstream: 5,
                upstream_to_downstream: 6
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn idle_sessions_time_out() {
        let (_client, down) = duplex(64);
        let (up, _server) = duplex(64);
        let err = splice(down, up, Some(Duration::from_secs(30)))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    }
}
