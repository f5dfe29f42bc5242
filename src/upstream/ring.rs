//! A consistent-hash ring (ketama: 160 points per unit of weight, placed by
//! MD5 as libketama and twemproxy do), so a key — an MQTT client id, a Redis
//! key — always lands on the same host while the host set is unchanged, and
//! only the keys of a removed host move.

use md5::{Digest, Md5};

/// Points per host per unit of weight.
const POINTS_PER_WEIGHT: u32 = 160;

/// A ring over host indices.
#[derive(Debug, Clone)]
pub struct Ring {
    /// (point, host index), sorted by point.
    points: Vec<(u32, usize)>,
}

impl Ring {
    /// Build a ring for hosts `names[i]` (their addresses) with `weights[i]`.
    pub fn new(names: &[String], weights: &[u32]) -> Self {
        let mut points = Vec::new();
        for (i, (name, weight)) in names.iter().zip(weights).enumerate() {
            let groups = (POINTS_PER_WEIGHT * (*weight).max(1)) / 4;
            for g in 0..groups {
                let digest = Md5::digest(format!("{name}-{g}").as_bytes());
                for k in 0..4 {
                    let b = |j: usize| u32::from(digest.get(k * 4 + j).copied().unwrap_or(0));
                    points.push(((b(3) << 24) | (b(2) << 16) | (b(1) << 8) | b(0), i));
                }
            }
        }
        points.sort_unstable();
        Self { points }
    }

    /// Hash a key onto the ring's space (the first four bytes of its MD5, as ketama).
    pub fn hash(key: &[u8]) -> u32 {
        let d = Md5::digest(key);
        let b = |j: usize| u32::from(d.get(j).copied().unwrap_or(0));
        (b(3) << 24) | (b(2) << 16) | (b(1) << 8) | b(0)
    }

    /// The hosts for `key`, owner first, then the next distinct hosts clockwise
    /// (the failover order).
    pub fn lookup(&self, key: &[u8]) -> RingWalk<'_> {
        let h = Self::hash(key);
        let start = self.points.partition_point(|(p, _)| *p < h);
        RingWalk {
            ring: self,
            start,
            step: 0,
            seen: Vec::new(),
        }
    }
}

/// Walks the ring clockwise from a key's point, yielding each host once.
pub struct RingWalk<'a> {
    ring: &'a Ring,
    start: usize,
    step: usize,
    seen: Vec<usize>,
}

impl Iterator for RingWalk<'_> {
    type Item = usize;
    fn next(&mut self) -> Option<usize> {
        let n = self.ring.points.len();
        while self.step < n {
            let (_, host) = *self.ring.points.get((self.start + self.step) % n)?;
            self.step += 1;
            if !self.seen.contains(&host) {
                self.seen.push(host);
                return Some(host);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("127.0.0.1:{}", 7000 + i)).collect()
    }

    #[test]
    fn same_key_same_host_and_balanced() {
        let ring = Ring::new(&names(3), &[1, 1, 1]);
        let mut counts = [0usize; 3];
        for i in 0..30_000 {
            let key = format!("device-{i}");
            let a = ring.lookup(key.as_bytes()).next().unwrap();
            assert_eq!(a, ring.lookup(key.as_bytes()).next().unwrap());
            counts[a] += 1;
        }
        for c in counts {
            assert!((8_000..12_000).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn removing_a_host_moves_only_its_keys() {
        let before = Ring::new(&names(3), &[1, 1, 1]);
        let after = Ring::new(&names(2), &[1, 1]);
        for i in 0..5_000 {
            let key = format!("k{i}");
            let b = before.lookup(key.as_bytes()).next().unwrap();
            if b < 2 {
                assert_eq!(
                    b,
                    after.lookup(key.as_bytes()).next().unwrap(),
                    "{key} moved"
                );
            }
        }
    }

    #[test]
    fn failover_order_lists_every_host_once() {
        let ring = Ring::new(&names(4), &[1, 2, 1, 1]);
        let order: Vec<_> = ring.lookup(b"x").collect();
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, [0, 1, 2, 3]);
    }
}
