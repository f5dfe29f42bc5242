//! Bounded, timed detection: read the first bytes of a connection until the
//! enabled sniffers agree on a protocol, the byte limit is reached, or the
//! time runs out. The bytes read stay in the buffer and are replayed to the
//! chosen driver. A timeout is an outcome, not an error.

use std::time::Duration;

use bytes::BytesMut;
use switchyard_codecs::{Protocol, Verdict, sniff};
use tokio::io::{AsyncRead, AsyncReadExt};

/// How detection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Matched(Protocol),
    /// No enabled protocol can match these bytes.
    Rejected,
    /// `max_bytes` read without a verdict.
    TooManyBytes,
    /// No verdict within the timeout.
    TimedOut,
    /// The client closed before a verdict.
    Closed,
}

impl Outcome {
    /// Label for logs and metrics.
    pub fn reason(self) -> &'static str {
        match self {
            Outcome::Matched(_) => "matched",
            Outcome::Rejected => "rejected",
            Outcome::TooManyBytes => "too_many_bytes",
            Outcome::TimedOut => "timeout",
            Outcome::Closed => "closed",
        }
    }
}

/// Read from `io` into `buf` until the sniffers decide.
pub async fn detect<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut BytesMut,
    enabled: &[Protocol],
    timeout: Duration,
    max_bytes: usize,
) -> std::io::Result<Outcome> {
    let work = async {
        let mut scratch = [0u8; 1024];
        loop {
            match sniff(buf, enabled) {
                Verdict::Match(p) => return Ok(Outcome::Matched(p)),
                Verdict::Reject => return Ok(Outcome::Rejected),
                Verdict::NeedMore if buf.len() >= max_bytes => return Ok(Outcome::TooManyBytes),
                Verdict::NeedMore => {}
            }
            // Read into the future's own scratch, not a reserved buffer: a
            // connection waiting for its first bytes holds no heap buffer
            // (10,000 silent connections would otherwise pin 40 MiB).
            let want = max_bytes.saturating_sub(buf.len()).min(scratch.len());
            let n = io.read(scratch.get_mut(..want).unwrap_or_default()).await?;
            if n == 0 {
                return Ok(Outcome::Closed);
            }
            buf.extend_from_slice(scratch.get(..n).unwrap_or_default());
        }
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(result) => result,
        Err(_) => Ok(Outcome::TimedOut),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    const BOTH: [Protocol; 2] = [Protocol::Http1, Protocol::Redis];

    async fn run(chunks: &[&[u8]], close: bool) -> (Outcome, BytesMut) {
        let (mut client, mut server) = tokio::io::duplex(1024);
        for c in chunks {
            client.write_all(c).await.unwrap();
        }
        if close {
            drop(client);
        } else {
            std::mem::forget(client);
        }
        let mut buf = BytesMut::new();
        let out = detect(&mut server, &mut buf, &BOTH, Duration::from_secs(1), 64)
            .await
            .unwrap();
        (out, buf)
    }

    #[tokio::test]
    async fn keeps_the_bytes_it_read() {
        let (out, buf) = run(&[b"*1\r\n$4\r\nPING\r\n"], false).await;
        assert_eq!(out, Outcome::Matched(Protocol::Redis));
        assert_eq!(&buf[..], b"*1\r\n$4\r\nPING\r\n");
    }

    #[tokio::test]
    async fn rejects_garbage_and_reports_early_close() {
        assert_eq!(run(&[b"\x00\x01\x02"], false).await.0, Outcome::Rejected);
        assert_eq!(run(&[b"GET / HT"], true).await.0, Outcome::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn times_out_as_an_outcome() {
        assert_eq!(run(&[b"GET / HT"], false).await.0, Outcome::TimedOut);
    }

    #[tokio::test]
    async fn stops_at_the_byte_limit() {
        let long = [b'a'; 100];
        assert_eq!(
            run(&[b"GET /", &long], false).await.0,
            Outcome::TooManyBytes
        );
    }
}
