//! A MySQL listener's compiled front-end policy: users and their stored
//! password hashes, the auth plugin offered, query rules and the digest table.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::Counter;
use regex::bytes::Regex;
use switchyard_codecs::mysql::{Limits, auth};

use crate::config::{self, MysqlAuthPlugin, Problem};
use crate::upstream::Cluster;

/// One user of the gateway, with what is needed to check each auth plugin.
pub struct User {
    /// `SHA1(SHA1(pw))`; `None` with an empty password.
    pub native: Option<[u8; 20]>,
    /// `SHA256(SHA256(pw))` (only when the password is configured in plain
    /// text); `None` with an empty password or a native hash only.
    pub sha2: Option<[u8; 32]>,
    /// The password is empty.
    pub empty: bool,
    pub default_schema: Option<Vec<u8>>,
    /// Allowed schemas; empty: any.
    pub schemas: Vec<Vec<u8>>,
}

impl User {
    /// Whether this user may use `schema`.
    pub fn may_use(&self, schema: &[u8]) -> bool {
        self.schemas.is_empty() || self.schemas.iter().any(|s| s == schema)
    }
    /// Whether caching_sha2's fast path can be checked for this user.
    pub fn has_sha2(&self) -> bool {
        self.sha2.is_some() || self.empty
    }
}

/// Metric handles of one MySQL listener.
pub struct FrontMetrics {
    pub to_primary: Counter,
    pub to_replica: Counter,
    pub to_rule: Counter,
    pub login_failures: Counter,
    pub backend_errors: Counter,
}

/// The greeting's version when none is configured and no backend could be
/// reached to learn theirs (that client then gets the backend's error).
pub const FALLBACK_VERSION: &[u8] = b"5.5.5-10.11.0-switchyard";

/// The compiled `mysql:` block of a listener.
pub struct Front {
    /// The configured version; `None`: the backends' own.
    pub server_version: Option<Vec<u8>>,
    /// Every cluster with MySQL credentials: the greeting offers what all
    /// of their backends support.
    pub backends: Vec<Arc<Cluster>>,
    pub plugin: &'static [u8],
    pub users: HashMap<Vec<u8>, User>,
    pub limits: Limits,
    pub login_timeout: Duration,
    pub rules: Vec<(Regex, Arc<Cluster>)>,
    pub max_digests: usize,
    /// Queries per digest (bounded by `max_digests`).
    pub digests: Mutex<HashMap<String, u64>>,
    pub metrics: FrontMetrics,
}

impl Front {
    /// Compile a validated `mysql:` block.
    pub fn new(
        listener: &str,
        m: &config::Mysql,
        clusters: &HashMap<String, Arc<Cluster>>,
    ) -> Result<Self, Vec<Problem>> {
        let mut users = HashMap::new();
        for u in &m.users {
            let (native, sha2, empty) = match (&u.password, &u.password_hash) {
                (Some(pw), _) if pw.is_empty() => (None, None, true),
                (Some(pw), _) => (
                    Some(auth::native_hash(pw.as_bytes())),
                    Some(auth::sha2_hash(pw.as_bytes())),
                    false,
                ),
                (None, Some(h)) => (auth::parse_native_hash(&h.value), None, false),
                (None, None) => (None, None, true),
            };
            users.insert(
                u.username.value.as_bytes().to_vec(),
                User {
                    native,
                    sha2,
                    empty,
                    default_schema: u.default_schema.as_ref().map(|s| s.as_bytes().to_vec()),
                    schemas: u.schemas.iter().map(|s| s.as_bytes().to_vec()).collect(),
                },
            );
        }
        let rules = m
            .query_rules
            .iter()
            .filter_map(|q| {
                Some((
                    Regex::new(&q.pattern.value).ok()?,
                    clusters.get(&q.cluster.value)?.clone(),
                ))
            })
            .collect();
        let l = listener.to_owned();
        let target = |t: &'static str| metrics::counter!("switchyard_mysql_queries_total", "listener" => l.clone(), "target" => t);
        Ok(Self {
            server_version: m.server_version.as_ref().map(|v| v.as_bytes().to_vec()),
            backends: {
                let mut b: Vec<Arc<Cluster>> = clusters
                    .values()
                    .filter(|c| c.mysql.is_some())
                    .cloned()
                    .collect();
                b.sort_by(|x, y| x.name.cmp(&y.name));
                b
            },
            plugin: match m.auth_plugin {
                MysqlAuthPlugin::MysqlNativePassword => auth::NATIVE,
                MysqlAuthPlugin::CachingSha2Password => auth::CACHING_SHA2,
            },
            users,
            limits: Limits {
                max_message: m.max_message_size,
            },
            login_timeout: m.login_timeout.get(),
            rules,
            max_digests: m.max_digests,
            digests: Mutex::new(HashMap::new()),
            metrics: FrontMetrics {
                to_primary: target("primary"),
                to_replica: target("replica"),
                to_rule: target("rule"),
                login_failures: metrics::counter!("switchyard_mysql_login_failures_total", "listener" => l.clone()),
                backend_errors: metrics::counter!("switchyard_mysql_backend_errors_total", "listener" => l.clone()),
            },
        })
    }

    /// Add a session's digest counts to the listener's table (sessions
    /// count locally and merge now and then, so queries take no shared lock).
    pub fn merge_digests(&self, local: &mut HashMap<String, u64>) {
        if local.is_empty() {
            return;
        }
        if let Ok(mut map) = self.digests.lock() {
            for (digest, n) in local.drain() {
                if let Some(total) = map.get_mut(&digest) {
                    *total += n;
                } else if map.len() < self.max_digests {
                    map.insert(digest, n);
                }
            }
        }
        local.clear();
    }

    /// The digest table as text, busiest first: `count<TAB>digest` lines.
    pub fn digest_report(&self) -> String {
        let Ok(map) = self.digests.lock() else {
            return String::new();
        };
        let mut rows: Vec<(&String, &u64)> = map.iter().collect();
        rows.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        rows.iter().map(|(d, n)| format!("{n}\t{d}\n")).collect()
    }
}
