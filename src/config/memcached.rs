//! memcached settings: a cluster's key sharding (`clusters[].memcached`) and
//! a listener's request limits (`listeners[].memcached`).

use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use super::redis::KeyHash;

/// A cluster's memcached settings: with this block the hosts are a pool
/// whose keys are sharded by ketama, as a twemproxy memcached pool with
/// `distribution: ketama`; without it they are copies of one cache and each
/// session uses one host (picked by `lb`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterMemcached {
    /// The key hash onto the ketama continuum (`fnv1a_64`, twemproxy's
    /// default, or `md5`).
    #[serde(default)]
    pub hash: KeyHash,
    /// The two characters delimiting a key's hash tag (`{user:1}.name`);
    /// none by default, as twemproxy's memcached pools.
    #[serde(default)]
    pub hash_tag: Option<Spanned<String>>,
}

/// A listener's memcached limits.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MemcachedLimits {
    /// Largest data block of a storage command (memcached's `-I`), bytes.
    #[serde(default = "default_max_value")]
    pub max_value: usize,
    /// Longest command line, bytes.
    #[serde(default = "default_max_line")]
    pub max_line: usize,
    /// Most keys in one `get`/`gets`/`gat`/`gats`.
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
}

impl Default for MemcachedLimits {
    fn default() -> Self {
        MemcachedLimits {
            max_value: default_max_value(),
            max_line: default_max_line(),
            max_keys: default_max_keys(),
        }
    }
}

impl MemcachedLimits {
    /// The codec's limits (replies may carry `max_keys` values of `max_value`).
    pub fn codec(&self) -> switchyard_codecs::memcached::Limits {
        switchyard_codecs::memcached::Limits {
            max_value: self.max_value,
            max_line: self.max_line,
            max_keys: self.max_keys,
        }
    }
}

fn default_max_value() -> usize {
    switchyard_codecs::memcached::Limits::default().max_value
}
fn default_max_line() -> usize {
    switchyard_codecs::memcached::Limits::default().max_line
}
fn default_max_keys() -> usize {
    switchyard_codecs::memcached::Limits::default().max_keys
}
