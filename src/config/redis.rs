//! Redis settings: a listener's client authentication (`listeners[].redis.users`)
//! and a cluster's sharding, health checks and backend credentials
//! (`clusters[].redis`).

use serde::{Deserialize, Serialize};
use serde_saphyr::{Location, Spanned};

use super::Duration;

/// A user the gateway itself authenticates (`AUTH [user] password`, `HELLO … AUTH`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RedisUser {
    /// User name; `AUTH password` (one argument) authenticates as `default`.
    #[serde(default = "default_user")]
    pub name: String,
    pub password: Spanned<String>,
}

fn default_user() -> String {
    "default".to_owned()
}

/// How a cluster spreads keys over its hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Sharding {
    /// Consistent hashing (ketama, MD5, 160 points per unit of weight), as
    /// twemproxy's `distribution: ketama`: removing a host moves only its keys.
    Ketama,
    /// Redis Cluster's CRC16 key slots (16384), dealt to the hosts in
    /// contiguous ranges by weight: a key's slot is the one `CLUSTER KEYSLOT` gives.
    Slots,
}

/// Where a sharded cluster sends read-only commands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadFrom {
    #[default]
    Primary,
    Replica,
}

/// The hash of a key's (tagged) bytes onto the ketama continuum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyHash {
    /// twemproxy's default `fnv1a_64` (32-bit): the same placement as a
    /// twemproxy pool over the same servers. Spelt as twemproxy spells it
    /// (`fnv1a_64`, as the docs always said; `fnv1a64` is still accepted).
    #[default]
    #[serde(rename = "fnv1a_64", alias = "fnv1a64")]
    Fnv1a64,
    /// The first four bytes of the key's MD5 (libketama's): spreads keys that
    /// differ only in their last characters (`user:1`, `user:2`) better.
    Md5,
}

/// A cluster's Redis settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterRedis {
    /// Shard keys across the hosts. Absent: the hosts are replicas of one
    /// data set and each session uses one host (picked by `lb`).
    #[serde(default)]
    pub sharding: Option<Spanned<Sharding>>,
    /// With `sharding: ketama`: the key hash.
    #[serde(default)]
    pub hash: KeyHash,
    /// The two characters that delimit a key's hash tag (`{user:1}.name`).
    #[serde(default = "default_hash_tag")]
    pub hash_tag: Spanned<String>,
    /// Take a host out of the shard map after `eject_after` failed health
    /// checks (its keys re-hash onto the others) and put it back when it answers
    /// again, as twemproxy's `auto_eject_hosts`. Off: commands for a dead
    /// host's keys answer `-ERR`.
    #[serde(default)]
    pub auto_eject: bool,
    /// Consecutive failed health checks before a host is ejected.
    #[serde(default = "default_eject_after")]
    pub eject_after: Spanned<u32>,
    /// How often each host is sent `PING` (sharded clusters).
    #[serde(default = "default_health_interval")]
    pub health_check_interval: Duration,
    /// Where read-only commands go: `primary`, or `replica` (a replica of the
    /// key's shard, listed in its host's `replicas`; the primary when it has
    /// none or none can be reached). Needs `sharding`.
    #[serde(default = "default_read_from")]
    pub read_from: Spanned<ReadFrom>,
    /// Sent as `AUTH [username] password` on every new backend connection.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// Sent as `SELECT database` on every new backend connection (when not 0).
    #[serde(default)]
    pub database: u32,
    /// Upstream connections per host shared by every client session that
    /// holds no connection state (unsharded clusters): their commands are
    /// written in batches across clients and the replies handed back in
    /// order. A session that changes connection state (`SELECT`, `MULTI`,
    /// `WATCH`, blocking pops, `CLIENT ...`, `HELLO`, `AUTH` ...) gets its own
    /// connection from then on. `0`: every session gets its own connection.
    #[serde(default = "default_shared_connections")]
    pub shared_connections: Spanned<u32>,
}

/// Shared connections per host when a cluster says nothing.
pub const DEFAULT_SHARED_CONNECTIONS: u32 = 1;

fn default_shared_connections() -> Spanned<u32> {
    Spanned::new(
        DEFAULT_SHARED_CONNECTIONS,
        Location::UNKNOWN,
        Location::UNKNOWN,
    )
}

fn default_hash_tag() -> Spanned<String> {
    Spanned::new("{}".to_owned(), Location::UNKNOWN, Location::UNKNOWN)
}
fn default_read_from() -> Spanned<ReadFrom> {
    Spanned::new(ReadFrom::Primary, Location::UNKNOWN, Location::UNKNOWN)
}
fn default_eject_after() -> Spanned<u32> {
    Spanned::new(3, Location::UNKNOWN, Location::UNKNOWN)
}
fn default_health_interval() -> Duration {
    Duration::from_secs(1)
}
