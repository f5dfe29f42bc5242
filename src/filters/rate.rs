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

impl SharedBucket {
    /// Take `tokens` now, or reserve them for when they are due, if that is
    /// within `max`: `Some(wait)` (zero when they were there), `None` when
    /// they are further away than `max` (nothing is taken then).
    pub fn take_within(&self, tokens: f64, max: Duration) -> Option<Duration> {
        let cost = (self.interval as f64 * tokens.max(0.0)) as u64;
        let now = Instant::now()
            .saturating_duration_since(self.origin)
            .as_nanos() as u64;
        let max = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let start = tat.max(now);
            let wait = (start + cost).saturating_sub(now + self.tolerance);
            if wait > max {
                return None;
            }
            match self.tat.compare_exchange_weak(
                tat,
                start + cost,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(Duration::from_nanos(wait)),
                Err(actual) => tat = actual,
            }
        }
    }
}

/// One token bucket per identity (a client address, a client id, a user
/// ...), in a table split into shards so concurrent requests of different
/// identities rarely meet on a lock. Each shard holds at most
/// `max_keys / SHARDS` identities: when one is full, identities whose bucket
/// has refilled (idle ones) are forgotten first.
pub struct KeyedBuckets {
    rate: f64,
    burst: f64,
    per_shard: usize,
    shards: Box<[Shard]>,
}

/// One shard of [`KeyedBuckets`]: buckets by identity.
type Shard = std::sync::Mutex<std::collections::HashMap<Box<[u8]>, Bucket>>;

const SHARDS: usize = 16;

impl KeyedBuckets {
    pub fn new(rate: f64, burst: f64, max_keys: usize) -> Self {
        Self {
            rate,
            burst: burst.max(1.0),
            per_shard: max_keys.div_ceil(SHARDS).max(1),
            shards: (0..SHARDS).map(|_| Default::default()).collect(),
        }
    }

    /// As [`SharedBucket::take_within`], for `key`'s own bucket.
    pub fn take_within(&self, key: &[u8], tokens: f64, max: Duration) -> Option<Duration> {
        use std::hash::{BuildHasher, BuildHasherDefault};
        let hash = BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
            .hash_one(key);
        let shard = self.shards.get(hash as usize % SHARDS)?;
        let mut table = shard
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !table.contains_key(key) && table.len() >= self.per_shard {
            let now = Instant::now();
            table.retain(|_, b| {
                b.refill(now);
                b.tokens < b.burst
            });
            if table.len() >= self.per_shard {
                table.clear();
            }
        }
        let bucket = match table.get_mut(key) {
            Some(b) => b,
            None => table
                .entry(key.into())
                .or_insert_with(|| Bucket::new(self.rate, self.burst)),
        };
        let wait = bucket.take_or_wait(tokens);
        if wait > max {
            bucket.tokens += tokens;
            return None;
        }
        Some(wait)
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
    async fn keyed_buckets_forget_idle_identities_when_full() {
        let k = KeyedBuckets::new(1.0, 1.0, SHARDS);
        // One identity per shard at most: a second identity in a full shard
        // evicts the first only once its bucket has refilled.
        assert_eq!(
            k.take_within(b"a", 1.0, Duration::ZERO),
            Some(Duration::ZERO)
        );
        assert_eq!(k.take_within(b"a", 1.0, Duration::ZERO), None);
        tokio::time::advance(Duration::from_secs(2)).await;
        for i in 0..100u32 {
            assert!(
                k.take_within(&i.to_be_bytes(), 1.0, Duration::ZERO)
                    .is_some()
            );
        }
        let held: usize = k.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert!(held <= SHARDS, "{held} identities kept");
    }

    #[tokio::test(start_paused = true)]
    async fn shared_bucket_reserves_within_max() {
        let b = SharedBucket::new(10.0, 1.0);
        assert_eq!(b.take_within(1.0, Duration::ZERO), Some(Duration::ZERO));
        assert_eq!(b.take_within(1.0, Duration::ZERO), None);
        assert_eq!(
            b.take_within(1.0, Duration::from_millis(150)),
            Some(Duration::from_millis(100))
        );
        assert_eq!(
            b.take_within(1.0, Duration::from_millis(150)),
            None,
            "200 ms away"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_bucket_of_bytes_takes_a_request_s_size() {
        // 1000 bytes/s, burst 1000: 600 + 400 pass, 1 more byte waits 1 ms.
        let b = SharedBucket::new(1000.0, 1000.0);
        assert_eq!(b.take_within(600.0, Duration::ZERO), Some(Duration::ZERO));
        assert_eq!(b.take_within(400.0, Duration::ZERO), Some(Duration::ZERO));
        assert_eq!(b.take_within(1.0, Duration::ZERO), None);
        assert_eq!(
            b.take_within(1.0, Duration::from_millis(5)),
            Some(Duration::from_millis(1))
        );
        let k = KeyedBuckets::new(1000.0, 1000.0, 64);
        assert_eq!(
            k.take_within(b"c", 900.0, Duration::ZERO),
            Some(Duration::ZERO)
        );
        assert_eq!(k.take_within(b"c", 200.0, Duration::ZERO), None, "100 left");
        assert_eq!(
            k.take_within(b"c", 100.0, Duration::ZERO),
            Some(Duration::ZERO)
        );
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
