//! Key sharding over a cluster's hosts (Redis): which host owns a key, by
//! ketama consistent hashing or by Redis Cluster CRC16 slots, both honouring
//! hash tags; and which hosts are in the map (health checks eject and restore
//! hosts when `auto_eject` is on).
//!
//! Ketama is twemproxy's (`distribution: ketama`, `hash: fnv1a_64`): the same
//! continuum (MD5 points of `"ip:port-N"`, 160 per server scaled by weight
//! share) and the same key hash, so a key lands on the server twemproxy would
//! put it on, and a twemproxy pool can be moved behind Switchyard with its data.
//!
//! The map is rebuilt only when a host is ejected or restored and swapped in
//! whole (`ArcSwap`), so a lookup is lock-free: load, hash, index.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use arc_swap::ArcSwap;
use switchyard_codecs::redis::{SLOTS, crc16, hash_tag};

use md5::{Digest, Md5};

use crate::config::memcached::ClusterMemcached;
use crate::config::redis::{ClusterRedis, KeyHash, Sharding};

/// Which host owns each key, for the hosts currently in the map.
pub struct ShardMap {
    owner: Owner,
    hash: KeyHash,
    tag: (u8, u8),
    /// The hosts in the map, in host order: the first is the session's "home"
    /// (keyless commands, pub/sub).
    live: Vec<usize>,
}

enum Owner {
    /// (point, host), sorted by point.
    Ketama(Vec<(u32, usize)>),
    /// Host index per slot.
    Slots(Box<[u16]>),
}

impl ShardMap {
    /// The host owning `key`.
    pub fn host_for(&self, key: &[u8]) -> usize {
        let hashed = hash_tag(key, self.tag.0, self.tag.1);
        match &self.owner {
            Owner::Ketama(points) => {
                let h = match self.hash {
                    KeyHash::Fnv1a64 => fnv1a_64(hashed),
                    KeyHash::Md5 => super::Ring::hash(hashed),
                };
                let at = points.partition_point(|(p, _)| *p < h);
                points
                    .get(at)
                    .or_else(|| points.first())
                    .map_or(0, |&(_, host)| host)
            }
            Owner::Slots(slots) => {
                let slot = usize::from(crc16(hashed) % SLOTS);
                slots.get(slot).map_or(0, |&h| usize::from(h))
            }
        }
    }

    /// The first host in the map: where keyless commands and pub/sub go.
    pub fn home(&self) -> usize {
        self.live.first().copied().unwrap_or(0)
    }

    /// Every host in the map (broadcast commands: `SELECT`, `SCRIPT LOAD`, ...).
    pub fn hosts(&self) -> &[usize] {
        &self.live
    }
}

/// Per-host health as the checker sees it.
struct Health {
    failures: AtomicU32,
    ejected: AtomicBool,
}

/// A sharded cluster's map and the state that rebuilds it.
pub struct Shards {
    sharding: Sharding,
    hash: KeyHash,
    tag: (u8, u8),
    names: Vec<String>,
    weights: Vec<u32>,
    auto_eject: bool,
    eject_after: u32,
    pub interval: std::time::Duration,
    health: Vec<Health>,
    map: ArcSwap<ShardMap>,
}

impl Shards {
    /// Shards over hosts `names[i]` (their addresses, which place them on the
    /// ketama ring) with `weights[i]`, as a cluster's `redis` block says;
    /// `None` when it does not shard.
    pub fn new(r: &ClusterRedis, names: Vec<String>, weights: Vec<u32>) -> Option<Self> {
        let sharding = r.sharding.as_ref()?.value;
        let hash = r.hash;
        let tag = match r.hash_tag.value.as_bytes() {
            [open, close] => (*open, *close),
            _ => (b'{', b'}'),
        };
        let (auto_eject, eject_after) = (r.auto_eject, r.eject_after.value);
        let interval = r.health_check_interval.get();
        let all: Vec<usize> = (0..names.len()).collect();
        let map = build(sharding, hash, tag, &names, &weights, all);
        Some(Self {
            health: (0..names.len())
                .map(|_| Health {
                    failures: AtomicU32::new(0),
                    ejected: AtomicBool::new(false),
                })
                .collect(),
            sharding,
            hash,
            tag,
            names,
            weights,
            auto_eject,
            eject_after,
            interval,
            map: ArcSwap::from_pointee(map),
        })
    }

    /// A memcached pool's shards: ketama over `names[i]` with `weights[i]`,
    /// as a twemproxy memcached pool (`distribution: ketama`); no ejection.
    pub fn memcached(m: &ClusterMemcached, names: Vec<String>, weights: Vec<u32>) -> Self {
        // No tag: a byte no key holds (memcached keys have no control characters).
        let tag = match m.hash_tag.as_ref().map(|t| t.value.as_bytes()) {
            Some([open, close]) => (*open, *close),
            _ => (0, 0),
        };
        let all: Vec<usize> = (0..names.len()).collect();
        let map = build(Sharding::Ketama, m.hash, tag, &names, &weights, all);
        Self {
            health: (0..names.len())
                .map(|_| Health {
                    failures: AtomicU32::new(0),
                    ejected: AtomicBool::new(false),
                })
                .collect(),
            sharding: Sharding::Ketama,
            hash: m.hash,
            tag,
            names,
            weights,
            auto_eject: false,
            eject_after: u32::MAX,
            interval: std::time::Duration::from_secs(1),
            map: ArcSwap::from_pointee(map),
        }
    }

    /// The current map (hold it for one command, not across awaits).
    pub fn map(&self) -> arc_swap::Guard<Arc<ShardMap>> {
        self.map.load()
    }

    /// Record one health check of `host`; ejects or restores it (rebuilding
    /// the map) when `auto_eject` is on. Returns whether the map changed.
    pub fn record(&self, host: usize, healthy: bool) -> bool {
        let Some(h) = self.health.get(host) else {
            return false;
        };
        let failures = if healthy {
            h.failures.store(0, Ordering::Relaxed);
            0
        } else {
            h.failures.fetch_add(1, Ordering::Relaxed) + 1
        };
        if !self.auto_eject {
            return false;
        }
        let eject = failures >= self.eject_after;
        if h.ejected.swap(eject, Ordering::Relaxed) == eject {
            return false;
        }
        let live: Vec<usize> = (0..self.names.len())
            .filter(|&i| {
                !self
                    .health
                    .get(i)
                    .is_some_and(|h| h.ejected.load(Ordering::Relaxed))
            })
            .collect();
        // With every host ejected, keep them all: errors name the dead hosts
        // rather than every key landing nowhere.
        let live = if live.is_empty() {
            (0..self.names.len()).collect()
        } else {
            live
        };
        let address = self.names.get(host).map_or("?", String::as_str);
        if eject {
            tracing::warn!(
                host = address,
                failures,
                "redis shard ejected: its keys move to the other hosts"
            );
        } else {
            tracing::info!(host = address, "redis shard restored to the shard map");
        }
        self.map.store(Arc::new(build(
            self.sharding,
            self.hash,
            self.tag,
            &self.names,
            &self.weights,
            live,
        )));
        true
    }
}

fn build(
    sharding: Sharding,
    hash: KeyHash,
    tag: (u8, u8),
    names: &[String],
    weights: &[u32],
    live: Vec<usize>,
) -> ShardMap {
    let owner = match sharding {
        Sharding::Ketama => Owner::Ketama(continuum(names, weights, &live)),
        Sharding::Slots => Owner::Slots(deal_slots(weights, &live)),
    };
    ShardMap {
        owner,
        hash,
        tag,
        live,
    }
}

/// twemproxy's ketama continuum over the `live` hosts: each gets
/// `floor(weight share × 40 × live hosts) × 4` points, four per MD5 of
/// `"name-N"` (the float arithmetic as twemproxy's, so the counts match).
fn continuum(names: &[String], weights: &[u32], live: &[usize]) -> Vec<(u32, usize)> {
    let total: u32 = live
        .iter()
        .map(|&i| weights.get(i).copied().unwrap_or(1).max(1))
        .sum();
    let mut points = Vec::new();
    for &host in live {
        let weight = weights.get(host).copied().unwrap_or(1).max(1);
        let pct = weight as f32 / total.max(1) as f32;
        let share = f64::from(pct * 160.0 / 4.0 * live.len() as f32) + 0.000_000_000_1;
        let groups = (share as f32).floor() as u32;
        let name = names.get(host).map_or("", String::as_str);
        for g in 0..groups {
            let digest = Md5::digest(format!("{name}-{g}").as_bytes());
            for k in 0..4 {
                let b = |j: usize| u32::from(digest.get(k * 4 + j).copied().unwrap_or(0));
                points.push(((b(3) << 24) | (b(2) << 16) | (b(1) << 8) | b(0), host));
            }
        }
    }
    points.sort_by_key(|&(p, _)| p);
    points
}

/// twemproxy's `fnv1a_64`: FNV-1a with the 64-bit constants truncated to 32
/// bits, each byte sign-extended as a C `char`.
fn fnv1a_64(key: &[u8]) -> u32 {
    let mut hash: u32 = 0xcbf2_9ce4_8422_2325_u64 as u32;
    for &b in key {
        hash ^= b as i8 as i32 as u32;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3_u64 as u32);
    }
    hash
}

/// Slots dealt to every host in contiguous ranges by weight; then the slots of
/// hosts not in `live` dealt round-robin to the live ones, so only those move.
fn deal_slots(weights: &[u32], live: &[usize]) -> Box<[u16]> {
    let total: u64 = weights
        .iter()
        .map(|&w| u64::from(w.max(1)))
        .sum::<u64>()
        .max(1);
    let mut slots = vec![0u16; usize::from(SLOTS)];
    let mut start = 0u64;
    for (host, &w) in weights.iter().enumerate() {
        let end = start + u64::from(w.max(1));
        let (a, b) = (
            start * u64::from(SLOTS) / total,
            end * u64::from(SLOTS) / total,
        );
        for s in a..b {
            if let Some(slot) = slots.get_mut(s as usize) {
                *slot = u16::try_from(host).unwrap_or(0);
            }
        }
        start = end;
    }
    if !live.is_empty() && live.len() < weights.len() {
        let mut next = 0;
        for slot in &mut slots {
            if !live.contains(&usize::from(*slot)) {
                *slot =
                    u16::try_from(live.get(next % live.len()).copied().unwrap_or(0)).unwrap_or(0);
                next += 1;
            }
        }
    }
    slots.into_boxed_slice()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shards(sharding: &str, n: usize, auto_eject: bool) -> Shards {
        let yaml = format!(
            "{{sharding: {sharding}, hash: md5, auto_eject: {auto_eject}, eject_after: 2}}"
        );
        let r: ClusterRedis = serde_saphyr::from_str(&yaml).unwrap();
        let names = (0..n).map(|i| format!("127.0.0.1:{}", 7000 + i)).collect();
        Shards::new(&r, names, vec![1; n]).unwrap()
    }

    #[test]
    fn fnv1a_64_as_twemproxy() {
        // Truncated FNV-1a: the empty key is the truncated offset basis.
        assert_eq!(fnv1a_64(b""), 0x8422_2325);
        assert_eq!(fnv1a_64(b"a"), (0x8422_2325u32 ^ 0x61).wrapping_mul(0x1b3));
        // Bytes over 0x7f are sign-extended, as a C `char`.
        assert_eq!(
            fnv1a_64(&[0xff]),
            (0x8422_2325u32 ^ 0xffff_ffff).wrapping_mul(0x1b3)
        );
    }

    #[test]
    fn continuum_sizes_follow_weight_shares() {
        let names: Vec<String> = (0..3).map(|i| format!("127.0.0.1:{}", 7000 + i)).collect();
        let count = |p: &[(u32, usize)], h| p.iter().filter(|&&(_, x)| x == h).count();
        let equal = continuum(&names, &[1, 1, 1], &[0, 1, 2]);
        assert_eq!(
            [count(&equal, 0), count(&equal, 1), count(&equal, 2)],
            [160, 160, 160]
        );
        // 1:2:1 over 3 live hosts: floor(0.25 × 40 × 3) × 4 = 120, floor(0.5 × 120) × 4 = 240.
        let weighted = continuum(&names, &[1, 2, 1], &[0, 1, 2]);
        assert_eq!(
            [
                count(&weighted, 0),
                count(&weighted, 1),
                count(&weighted, 2)
            ],
            [120, 240, 120]
        );
    }

    #[test]
    fn slots_are_dealt_in_ranges_as_redis_cluster_would() {
        let s = shards("slots", 3, false);
        let m = s.map();
        // 16384 / 3: 0..5461 → 0, 5461..10922 → 1, 10922.. → 2.
        assert_eq!(m.host_for(b"hello"), 0); // slot 866
        assert_eq!(m.host_for(b"foo"), 2); // slot 12182
        assert_eq!(m.host_for(b"{foo}.bar"), 2);
    }

    #[test]
    fn hash_tags_keep_keys_together_in_both_modes() {
        for mode in ["ketama", "slots"] {
            let s = shards(mode, 5, false);
            let m = s.map();
            for i in 0..200 {
                let a = format!("{{user:{i}}}.name");
                let b = format!("{{user:{i}}}.mail");
                assert_eq!(m.host_for(a.as_bytes()), m.host_for(b.as_bytes()));
            }
        }
    }

    #[test]
    fn ejection_moves_only_the_dead_hosts_keys_and_restores_them() {
        for mode in ["ketama", "slots"] {
            let s = shards(mode, 3, true);
            let before: Vec<usize> = (0..3000)
                .map(|i| s.map().host_for(format!("k{i}").as_bytes()))
                .collect();
            assert!(!s.record(1, false), "one failure is under eject_after");
            assert!(s.record(1, false), "two failures eject");
            let m = s.map();
            assert_eq!(m.hosts(), [0, 2]);
            for (i, &b) in before.iter().enumerate() {
                let now = m.host_for(format!("k{i}").as_bytes());
                assert_ne!(now, 1);
                if b != 1 {
                    assert_eq!(now, b, "{mode:?}: key k{i} moved off a live host");
                }
            }
            assert!(s.record(1, true), "a good check restores the host");
            let again: Vec<usize> = (0..3000)
                .map(|i| s.map().host_for(format!("k{i}").as_bytes()))
                .collect();
            assert_eq!(before, again);
        }
    }

    #[test]
    fn without_auto_eject_the_map_never_changes() {
        let s = shards("ketama", 3, false);
        for _ in 0..10 {
            assert!(!s.record(0, false));
        }
        assert_eq!(s.map().hosts(), [0, 1, 2]);
    }
}
