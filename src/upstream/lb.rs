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
    /// Power of two choices over weighted random draws: of two draws the
    /// host with fewer requests in flight wins; with unequal weights the one
    /// with the larger `weight / (active + 1)` (Envoy's formula, bias 1).
    LeastRequest {
        cumulative: Vec<u64>,
        weights: Vec<u32>,
    },
}

/// Longest precomputed weighted schedule; larger weight sums are scaled down.
const MAX_SCHEDULE: u64 = 4096;

impl Balancer {
    /// Build a balancer for hosts with these weights (all > 0).
    pub fn new(policy: LbPolicy, weights: &[u32]) -> Self {
        match policy {
            // Ring hashing picks by key in the cluster; without a key, hosts take turns.
            LbPolicy::RoundRobin | LbPolicy::RingHash | LbPolicy::Maglev => Balancer::RoundRobin {
                next: AtomicUsize::new(0),
                hosts: weights.len(),
            },
            LbPolicy::WeightedRoundRobin => Balancer::Schedule {
                next: AtomicUsize::new(0),
                order: smooth_schedule(weights),
            },
            LbPolicy::Random => Balancer::Random {
                cumulative: cumulative(weights),
            },
            LbPolicy::LeastRequest => Balancer::LeastRequest {
                cumulative: cumulative(weights),
                weights: weights.iter().map(|w| (*w).max(1)).collect(),
            },
        }
    }

    /// The index of the host to try first, or `None` for an empty cluster
    /// (least request: as if no request were in flight).
    pub fn pick(&self) -> Option<usize> {
        self.pick_with(|_| 0)
    }

    /// The index of the host to try first, given each host's requests in
    /// flight (read only by `least_request`).
    pub fn pick_with(&self, active: impl Fn(usize) -> u32) -> Option<usize> {
        match self {
            Balancer::RoundRobin { next, hosts } => {
                (*hosts > 0).then(|| next.fetch_add(1, Ordering::Relaxed) % hosts)
            }
            Balancer::Schedule { next, order } => {
                let i = next.fetch_add(1, Ordering::Relaxed);
                order.get(i % order.len().max(1)).copied()
            }
            Balancer::Random { cumulative } => draw(cumulative),
            Balancer::LeastRequest {
                cumulative,
                weights,
            } => {
                let a = draw(cumulative)?;
                if weights.len() < 2 {
                    return Some(a);
                }
                let mut b = draw(cumulative)?;
                if b == a {
                    // A second, distinct candidate (one retry keeps the
                    // weighted draw; then the next host).
                    b = draw(cumulative)?;
                    if b == a {
                        b = (a + 1) % weights.len();
                    }
                }
                let (load_a, load_b) = (u64::from(active(a)), u64::from(active(b)));
                if load_a == load_b {
                    return Some(a);
                }
                let (wa, wb) = (
                    u64::from(weights.get(a).copied().unwrap_or(1)),
                    u64::from(weights.get(b).copied().unwrap_or(1)),
                );
                // wa / (load_a + 1) >= wb / (load_b + 1), without division.
                Some(if wa * (load_b + 1) >= wb * (load_a + 1) {
                    a
                } else {
                    b
                })
            }
        }
    }
}

/// Running sums of the weights (a weight of 0 counts as 1).
fn cumulative(weights: &[u32]) -> Vec<u64> {
    let mut total = 0u64;
    weights
        .iter()
        .map(|w| {
            total += u64::from((*w).max(1));
            total
        })
        .collect()
}

/// A weighted random index over `cumulative` weights.
fn draw(cumulative: &[u64]) -> Option<usize> {
    let total = *cumulative.last()?;
    let r = rand::random_range(0..total);
    Some(cumulative.partition_point(|c| *c <= r))
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
        for p in [
            LbPolicy::RoundRobin,
            LbPolicy::WeightedRoundRobin,
            LbPolicy::Random,
            LbPolicy::LeastRequest,
        ] {
            assert_eq!(Balancer::new(p, &[]).pick(), None, "{p:?}");
        }
    }

    /// Every weighted policy splits 10k picks as the weights do, within ±5 %
    /// (random draws: within 4 standard deviations for the smallest share).
    #[test]
    fn weighted_split_within_five_percent_over_10k_picks() {
        let weights = [1, 3, 6];
        for p in [
            LbPolicy::WeightedRoundRobin,
            LbPolicy::Random,
            LbPolicy::LeastRequest,
        ] {
            let b = Balancer::new(p, &weights);
            let c = counts(&b, 10_000, 3);
            for (i, w) in weights.iter().enumerate() {
                let share = f64::from(*w) / 10.0;
                let want = 10_000.0 * share;
                let got = c[i] as f64;
                // ±5 %, or 4 standard deviations of a fair weighted draw
                // where 5 % of a small share is within chance.
                let sd = (10_000.0 * share * (1.0 - share)).sqrt();
                assert!(
                    (got - want).abs() <= (want * 0.05).max(4.0 * sd),
                    "{p:?}: {c:?}"
                );
            }
        }
        let c = counts(
            &Balancer::new(LbPolicy::RoundRobin, &[1, 1, 1, 1]),
            10_000,
            4,
        );
        assert_eq!(c, [2500; 4]);
    }

    #[test]
    fn least_request_prefers_the_less_loaded_host() {
        let b = Balancer::new(LbPolicy::LeastRequest, &[1, 1]);
        // Host 0 holds 10 requests, host 1 none: two distinct candidates are
        // always drawn, so host 1 always wins.
        let c = {
            let mut c = [0usize; 2];
            for _ in 0..1000 {
                c[b.pick_with(|i| if i == 0 { 10 } else { 0 }).unwrap()] += 1;
            }
            c
        };
        assert_eq!(c, [0, 1000]);
        // Of ten hosts, the one loaded host is chosen only when both draws
        // hit it, i.e. never (draws are distinct): it gets nothing.
        let b = Balancer::new(LbPolicy::LeastRequest, &[1; 10]);
        let mut c = [0usize; 10];
        for _ in 0..10_000 {
            c[b.pick_with(|i| u32::from(i == 3) * 5).unwrap()] += 1;
        }
        assert_eq!(c[3], 0, "{c:?}");
        assert!(c.iter().filter(|x| **x > 900).count() == 9, "{c:?}");
    }

    #[test]
    fn least_request_weighs_load_by_weight() {
        // Weight 4 with 3 in flight (4/4 = 1) beats weight 1 with 1 in flight (1/2).
        let b = Balancer::new(LbPolicy::LeastRequest, &[4, 1]);
        for _ in 0..200 {
            assert_eq!(b.pick_with(|i| if i == 0 { 3 } else { 1 }), Some(0));
        }
        // Weight 4 with 9 in flight (0.4) loses to weight 1 with 1 (0.5).
        for _ in 0..200 {
            assert_eq!(b.pick_with(|i| if i == 0 { 9 } else { 1 }), Some(1));
        }
    }
}
