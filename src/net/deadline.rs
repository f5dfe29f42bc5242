//! The slowloris bound of every driver: a request begun (an HTTP head, a Redis
//! command, an MQTT packet, a Dubbo/Bolt frame, a MySQL packet, an RTSP head)
//! must end within the listener's `request_head_timeout`, counted from the
//! read that brought its first byte, however the bytes trickle in — as nginx's
//! `client_header_timeout` and HAProxy's `timeout http-request`. An idle
//! connection with nothing buffered is the idle timeout's business, not this.

use std::time::Duration;

use tokio::time::Instant;

/// When the request being read began, if one is.
#[derive(Debug, Clone, Copy)]
pub struct HeadDeadline {
    limit: Duration,
    since: Option<Instant>,
}

impl HeadDeadline {
    pub fn new(limit: Duration) -> Self {
        Self { limit, since: None }
    }

    /// After a decode round: `progress` says whether it decoded a whole
    /// request, `pending` whether bytes of an unfinished one stay buffered.
    /// Costs a clock read only when a request is left unfinished.
    #[inline]
    pub fn update(&mut self, progress: bool, pending: bool) {
        if !pending {
            self.since = None;
        } else if progress || self.since.is_none() {
            self.since = Some(Instant::now());
        }
    }

    /// Whether an unfinished request is being timed.
    pub fn armed(&self) -> bool {
        self.since.is_some()
    }

    /// Resolves when the unfinished request's time is up; never while none is.
    pub async fn expired(&self) {
        match self.since {
            Some(t) => tokio::time::sleep_until(t + self.limit).await,
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn times_an_unfinished_request_from_its_first_read() {
        let mut d = HeadDeadline::new(Duration::from_secs(10));
        d.update(false, false);
        assert!(!d.armed());
        d.update(false, true);
        let start = Instant::now();
        tokio::time::advance(Duration::from_secs(6)).await;
        // More bytes of the same request: the clock keeps running.
        d.update(false, true);
        d.expired().await;
        assert_eq!(Instant::now() - start, Duration::from_secs(10));
        // A whole request decoded with the next one begun: a fresh clock.
        d.update(true, true);
        let restart = Instant::now();
        d.expired().await;
        assert_eq!(Instant::now() - restart, Duration::from_secs(10));
        d.update(true, false);
        assert!(!d.armed());
    }
}
