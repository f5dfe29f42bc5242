//! Token buckets. [`Bucket`] is per connection (no sharing, no atomics);
//! [`SharedBucket`] is shared by a listener's connections and lock-free.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// A token bucket refilled at `rate` per second up to `burst`.
#[derive(Debug, Clone)]
pub struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: f64) -> Self {
        let burst = burst.max(1.0);
        Self {
            rate,
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        self.last = now;
    }

    /// Take `n` tokens if there are enough.
    pub fn try_take(&mut self, n: f64) -> bool {
        self.refill(Instant::now());
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }

    /// Take `n` tokens, going into debt if needed; returns how long to wait
    /// until the debt is paid (zero when there were enough).
    pub fn take_or_wait(&mut self, n: f64) -> Duration {
        self.refill(Instant::now());
        self.tokens -= n;
        if self.tokens >= 0.0 || self.rate <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

/// A token bucket shared by many connections: one atomic "theoretical
/// arrival time" (GCRA), so taking a token is a compare-and-swap.
#[derive(Debug)]
pub struct SharedBucket {
    /// Nanoseconds between tokens.
    interval: u64,
    /// How far ahead of now the arrival time may run (burst × interval).
    tolerance: u64,
    tat: AtomicU64,
    origin: Instant,
}

impl SharedBucket {
    pub fn new(rate: f64, burst: f64) -> Self {
        let interval = (1e9 / rate.max(1e-9)) as u64;
        Self {
            interval,
            tolerance: (interval as f64 * burst.max(1.0)) as u64,
            tat: AtomicU64::new(0),
            origin: Instant::now(),
        }
    }

    /// Take one token if allowed now.
    pub fn try_take(&self) -> bool {
        let now = Instant::now()
            .saturating_duration_since(self.origin)
            .as_nanos() as u64;
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let start = tat.max(now);
            if start + self.interval > now + self.tolerance {
                return false;
            }
            match self.tat.compare_exchange_weak(
                tat,
                start + self.interval,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => tat = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bucket_allows_burst_then_rate() {
        let mut b = Bucket::new(10.0, 5.0);
        assert!((0..5).all(|_| b.try_take(1.0)));
        assert!(!b.try_take(1.0));
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(b.try_take(1.0));
        assert!(!b.try_take(1.0));
    }

    #[tokio::test(start_paused = true)]
    async fn bucket_reports_the_wait_for_debt() {
        let mut b = Bucket::new(100.0, 1.0);
        assert_eq!(b.take_or_wait(1.0), Duration::ZERO);
        let wait = b.take_or_wait(1.0);
        assert!((wait.as_secs_f64() - 0.01).abs() < 1e-6, "{wait:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn shared_bucket_limits_across_callers() {
        let b = SharedBucket::new(10.0, 3.0);
        let allowed = (0..10).filter(|_| b.try_take()).count();
        assert_eq!(allowed, 3);
        tokio::time::advance(Duration::from_millis(200)).await;
        let allowed = (0..10).filter(|_| b.try_take()).count();
        assert_eq!(allowed, 2);
    }
}
