//! Load balancers. Each is immutable after construction and picks with one
//! atomic operation (or a thread-local random number): no locks.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::config::LbPolicy;

/// Picks the index of a host for each request (or session).
#[derive(Debug)]
pub enum Balancer {
    /// Hosts in turn.
    RoundRobin { next: AtomicUsize, hosts: usize },
    /// A precomputed smooth weighted round-robin schedule walked with an atomic cursor.
    Schedule {
        next: AtomicUsize,
        order: Vec<usize>,
    },
    /// Weighted random: cumulative weights.
    Random { cumulative: Vec<u64> },
}

/// Longest precomputed weighted schedule; larger weight sums are scaled down.
const MAX_SCHEDULE: u64 = 4096;

impl Balancer {
    /// Build a balancer for hosts with these weights (all > 0).
    pub fn new(policy: LbPolicy, weights: &[u32]) -> Self {
        match policy {
            // Ring hashing picks by key in the cluster; without a key, hosts take turns.
            LbPolicy::RoundRobin | LbPolicy::RingHash => Balancer::RoundRobin {
                next: AtomicUsize::new(0),
                hosts: weights.len(),
            },
            LbPolicy::WeightedRoundRobin => Balancer::Schedule {
                next: AtomicUsize::new(0),
                order: smooth_schedule(weights),
            },
            LbPolicy::Random => {
                let mut total = 0u64;
                let cumulative = weights
                    .iter()
                    .map(|w| {
                        total += u64::from((*w).max(1));
                        total
                    })
                    .collect();
                Balancer::Random { cumulative }
            }
        }
    }

    /// The index of the host to try first, or `None` for an empty cluster.
    pub fn pick(&self) -> Option<usize> {
        match self {
            Balancer::RoundRobin { next, hosts } => {
                (*hosts > 0).then(|| next.fetch_add(1, Ordering::Relaxed) % hosts)
            }
            Balancer::Schedule { next, order } => {
                let i = next.fetch_add(1, Ordering::Relaxed);
                order.get(i % order.len().max(1)).copied()
            }
            Balancer::Random { cumulative } => {
                let total = *cumulative.last()?;
                let r = rand::random_range(0..total);
                Some(cumulative.partition_point(|c| *c <= r))
            }
        }
    }
}

/// nginx's smooth weighted round-robin, unrolled into one period: hosts are
/// spread out (weights 5,1,1 give a a b a c a a, not a a a a a b c).
fn smooth_schedule(weights: &[u32]) -> Vec<usize> {
    let sum: u64 = weights.iter().map(|w| u64::from(*w)).sum();
    let scale = sum.div_ceil(MAX_SCHEDULE).max(1);
    let weights: Vec<i64> = weights
        .iter()
        .map(|w| (u64::from(*w) / scale).max(1) as i64)
        .collect();
    let total: i64 = weights.iter().sum();
    let mut current = vec![0i64; weights.len()];
    let mut order = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, w) in weights.iter().enumerate() {
            current[i] += w;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        order.push(best);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(b: &Balancer, n: usize, hosts: usize) -> Vec<usize> {
        let mut c = vec![0; hosts];
        for _ in 0..n {
            c[b.pick().unwrap()] += 1;
        }
        c
    }

    #[test]
    fn round_robin_takes_turns() {
        let b = Balancer::new(LbPolicy::RoundRobin, &[1, 1, 1]);
        let picks: Vec<_> = (0..6).map(|_| b.pick().unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn weighted_round_robin_is_smooth_and_proportional() {
        let b = Balancer::new(LbPolicy::WeightedRoundRobin, &[5, 1, 1]);
        let picks: Vec<_> = (0..7).map(|_| b.pick().unwrap()).collect();
        assert_eq!(picks, [0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(counts(&b, 700, 3), [500, 100, 100]);
    }

    #[test]
    fn huge_weights_are_scaled_not_exploded() {
        let b = Balancer::new(LbPolicy::WeightedRoundRobin, &[1_000_000, 3_000_000]);
        if let Balancer::Schedule { order, .. } = &b {
            assert!(order.len() as u64 <= MAX_SCHEDULE + 2);
        }
        let c = counts(&b, 4000, 2);
        assert_eq!(c, [1000, 3000]);
    }

    #[test]
    fn random_follows_weights() {
        let b = Balancer::new(LbPolicy::Random, &[1, 9]);
        let c = counts(&b, 10_000, 2);
        assert!(c[1] > 8_500 && c[0] > 500, "{c:?}");
    }

    #[test]
    fn empty_cluster_picks_nothing() {
        assert_eq!(Balancer::new(LbPolicy::RoundRobin, &[]).pick(), None);
        assert_eq!(Balancer::new(LbPolicy::Random, &[]).pick(), None);
    }
}
